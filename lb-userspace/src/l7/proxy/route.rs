//! Phases "request received" and "route resolved": the request target is
//! checked, the router picks the route, and an absolute-form target's
//! authority becomes the `Host` the node sees.
use std::sync::Arc;

use http::request;

use super::super::{
    error::ErrorKind,
    router::{path_hazard, RequestInfo, Resolver, Route},
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
/// (421 for an absolute-form target: the authority is not ours).
pub(super) fn resolve(
    routes: &dyn Resolver,
    parts: &mut request::Parts,
    conn: &ConnInfo,
) -> Result<Routed, ErrorKind> {
    if !target::scheme_served(&parts.uri) {
        return Err(ErrorKind::UnsupportedScheme);
    }
    let routed = {
        let info = RequestInfo::from_parts(parts).map_err(|e| {
            log::debug!("{}: bad request target: {e}", conn.peer);
            ErrorKind::BadRequestTarget
        })?;
        // Routing matches the raw path: a path spelled to dodge a route
        // (dot segments, encoded slashes) is refused rather than guessed.
        if path_hazard(info.path()).is_some() {
            return Err(ErrorKind::AmbiguousPath);
        }
        let Some(matched) = routes.resolve(&info) else {
            if target::is_absolute_form(parts) {
                return Err(ErrorKind::MisdirectedRequest);
            }
            return Err(ErrorKind::NoRoute);
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
