//! Phases "request received" and "route resolved": the request target is
//! checked, the router picks the route, and an absolute-form target's
//! authority becomes the `Host` the node sees.
use std::sync::Arc;

use http::request;

use super::super::{
    error::{ErrorKind, ProxyError},
    router::{path_hazard, RequestInfo, Resolver, Route, Unresolved},
    server::ConnInfo,
    target,
};

/// What routing found.
pub(super) struct Routed {
    /// The request's host (without port, lowercased), as routed.
    pub host: Option<String>,
    /// The route that matched.
    pub route: Arc<Route>,
}

/// Routes the request: 400 for a target xlb does not serve or cannot
/// read, or a path spelled to dodge a route; 404 when no route matches
/// (421 for an absolute-form target: the authority is not ours); 503
/// with `Retry-After` when a lazy resolver could not look the host up.
pub(super) async fn resolve(
    routes: &dyn Resolver,
    parts: &mut request::Parts,
    conn: &ConnInfo,
) -> Result<Routed, ProxyError> {
    if !target::scheme_served(&parts.uri) {
        return Err(ErrorKind::UnsupportedScheme.into());
    }
    let routed = {
        let info = RequestInfo::from_parts(parts).map_err(|e| {
            log::debug!("{}: bad request target: {e}", conn.peer);
            ProxyError::from(ErrorKind::BadRequestTarget)
        })?;
        // Routing matches the raw path: a path spelled to dodge a route
        // (dot segments, encoded slashes) is refused rather than guessed.
        if path_hazard(info.path()).is_some() {
            return Err(ErrorKind::AmbiguousPath.into());
        }
        let found = routes.lookup(&info).wait().await.map_err(|u| match u {
            Unresolved::Shed { retry_after_secs } => {
                ProxyError::new(ErrorKind::RouteLookupShed).with_retry_after(retry_after_secs)
            }
            Unresolved::StoreUnavailable { retry_after_secs } => {
                ProxyError::new(ErrorKind::RouteStoreUnavailable).with_retry_after(retry_after_secs)
            }
        })?;
        let Some(matched) = found else {
            if target::is_absolute_form(parts) {
                return Err(ErrorKind::MisdirectedRequest.into());
            }
            return Err(ErrorKind::NoRoute.into());
        };
        Routed {
            host: info.host().map(str::to_string),
            route: matched.route,
        }
    };
    // Routing and the cache key used the target's authority; the node gets
    // it as `Host` too (RFC 9112 §3.2.2).
    if let Some(received) = target::adopt_authority(parts) {
        log::debug!(
            "{}: absolute-form target {} with Host {received:?}: Host replaced",
            conn.peer,
            parts.uri
        );
    }
    Ok(routed)
}
