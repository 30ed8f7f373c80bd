//! Phase "response filters": what comes after forwarding, outside the
//! cache — the route's response header edits (on a node's response or one
//! from the store, not on xlb's own errors) and the sticky cookie (only
//! when a node was picked for this request).
use std::sync::Arc;

use http::{header, Response};

use super::{
    super::{
        forward::{ProxyBody, ERROR_HEADER},
        headers,
        router::Route,
    },
    context::RequestCtx,
    pool::Pool,
};

/// The node a response came from: set by the upstream response phase on a
/// node's response, carried through the cache with it, taken off here.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServedBy(pub usize);

/// What the response filters need of the request, kept aside before the
/// context moves into the upstream phases.
pub(super) struct After {
    route: Arc<Route>,
    pool: Arc<Pool>,
    sticky_in: Option<Vec<u8>>,
}

impl After {
    pub fn of(ctx: &RequestCtx) -> After {
        After {
            route: ctx.route.clone(),
            pool: ctx.pool.clone(),
            sticky_in: ctx.sticky_in.clone(),
        }
    }

    /// Applies the filters; `through_cache`: the response came through
    /// the route's cache (a stored response carries no [`ServedBy`]).
    pub fn apply(self, mut resp: Response<ProxyBody>, through_cache: bool) -> Response<ProxyBody> {
        let node = resp.extensions_mut().remove::<ServedBy>();
        let content =
            node.is_some() || (through_cache && !resp.headers().contains_key(ERROR_HEADER));
        if content {
            headers::apply_edits(
                resp.headers_mut(),
                &self.route.spec().options.response_headers,
            );
        }
        if let (Some(name), Some(ServedBy(node))) = (&self.pool.options.sticky_cookie, node) {
            let value = self.pool.upstream.cookie_value(node);
            if self.sticky_in.as_deref() != Some(value.as_bytes()) {
                if let Some(c) = headers::session_cookie(name, value) {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
            }
        }
        resp
    }
}
