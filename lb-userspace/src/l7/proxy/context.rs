//! The per-request context: what the phases after "upstream selected"
//! read. Owned, so that the upstream phases can run as a `'static` future
//! (the cache runs them after the client has its answer when it refreshes
//! in the background).
use std::{sync::Arc, time::Instant};

use http::request;

use super::{
    super::{headers, options::RouteOptions, record::Note, router::Route, server::ConnInfo},
    pool::Pool,
    request_filters::UpstreamFacts,
    route::RoutedHost,
};

/// One request, once its route and upstream are known.
pub(super) struct RequestCtx {
    /// The route's upstream.
    pub pool: Arc<Pool>,
    /// The route that matched.
    pub route: Arc<Route>,
    /// The client connection.
    pub conn: ConnInfo,
    /// Whether the client is a trusted proxy (its forwarding headers are
    /// kept).
    pub trusted: bool,
    /// The request's host (without port), as routed.
    pub host: Option<RoutedHost>,
    /// When a cold-start hold's deadline counts from (routes that hold).
    pub arrived: Option<Instant>,
    /// What upstream-side rate-limit rules key on.
    pub up_facts: UpstreamFacts,
    /// The sticky cookie's value the client sent.
    pub sticky_in: Option<Vec<u8>>,
    /// The request record's facts (`l7::record`), filled by the phases.
    pub note: Note,
}

impl RequestCtx {
    /// The route's settings.
    pub fn opts(&self) -> &RouteOptions {
        &self.route.spec().options
    }
}

/// The value of the pool's sticky cookie in the request, if the pool has
/// one and the client sent it.
pub(super) fn sticky_cookie(pool: &Pool, parts: &request::Parts) -> Option<Vec<u8>> {
    pool.options
        .sticky_cookie
        .as_deref()
        .and_then(|name| headers::cookie(&parts.headers, name))
        .map(<[u8]>::to_vec)
}
