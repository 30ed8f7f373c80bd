//! Phase "response filters": what comes after forwarding, outside the
//! cache — the route's response header edits (on a node's response or one
//! from the store, not on xlb's own errors) and the sticky cookie (only
//! when a node was picked for this request), then the response phase of
//! the route's plugins (on every response after routing, xlb's own
//! answers included).
use std::sync::Arc;

use http::{header, request, Response};

use super::{
    super::{
        forward::{ProxyBody, ERROR_HEADER},
        headers,
        plugin::ResponseCx,
        router::Route,
    },
    context::RequestCtx,
    pool::Pool,
};

/// The node a response came from: handed from the upstream phases to the
/// response filters beside the response, or, through the cache, in the
/// response's extensions (taken off here).
#[derive(Debug, Clone, Copy)]
pub(super) struct ServedBy(pub usize);

/// What the response filters need of the request, gathered as the phases
/// go (the route at once, the pool once it is selected) and kept aside
/// before the context moves into the upstream phases.
pub(super) struct After {
    route: Arc<Route>,
    /// The plugins' view of the request, when the route has plugins.
    plugins: Option<ResponseCx>,
    pool: Option<Arc<Pool>>,
    sticky_in: Option<Vec<u8>>,
}

impl After {
    pub fn new(route: Arc<Route>, parts: &request::Parts) -> After {
        let chain = &route.spec().options.plugins;
        let plugins = (!chain.is_empty()).then(|| chain.response_cx(parts));
        After {
            route,
            plugins,
            pool: None,
            sticky_in: None,
        }
    }

    pub fn upstream_selected(&mut self, ctx: &RequestCtx) {
        self.pool = Some(ctx.pool.clone());
        self.sticky_in = ctx.sticky_in.clone();
    }

    /// Applies the filters; `through_cache`: the response came through
    /// the route's cache (a stored response carries no [`ServedBy`]).
    pub fn apply(self, resp: Response<ProxyBody>, through_cache: bool) -> Response<ProxyBody> {
        self.apply_served(resp, through_cache, None)
    }

    /// [`After::apply`], told which node served the response when the
    /// caller knows; else the node is looked for in the response's
    /// extensions (a response that came back through the cache).
    pub fn apply_served(
        self,
        mut resp: Response<ProxyBody>,
        through_cache: bool,
        served: Option<ServedBy>,
    ) -> Response<ProxyBody> {
        let node = served.or_else(|| resp.extensions_mut().remove::<ServedBy>());
        let content =
            node.is_some() || (through_cache && !resp.headers().contains_key(ERROR_HEADER));
        if content {
            headers::apply_edits(
                resp.headers_mut(),
                &self.route.spec().options.response_headers,
            );
        }
        let sticky = self.pool.as_ref().and_then(|p| {
            let name = p.options.sticky_cookie.as_ref()?;
            Some((p, name))
        });
        if let (Some((pool, name)), Some(ServedBy(node))) = (sticky, node) {
            let value = pool.upstream.cookie_value(node);
            if self.sticky_in.as_deref() != Some(value.as_bytes()) {
                if let Some(c) = headers::session_cookie(name, value) {
                    resp.headers_mut().append(header::SET_COOKIE, c);
                }
            }
        }
        if let Some(cx) = &self.plugins {
            self.route.spec().options.plugins.response(&mut resp, cx);
        }
        resp
    }
}
