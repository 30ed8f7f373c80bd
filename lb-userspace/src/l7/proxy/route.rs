//! Phases "request received" and "route resolved": the request target is
//! checked, the router picks the route, and an absolute-form target's
//! authority becomes the `Host` the node sees.
use std::sync::Arc;

use http::{request, HeaderValue};

use super::super::{
    error::{ErrorKind, ProxyError},
    router::{path_hazard, RequestInfo, Resolver, Route, Unresolved},
    server::ConnInfo,
    target,
};

/// What routing found.
pub(super) struct Routed {
    /// The request's host (without port, lowercased), as routed.
    pub host: Option<RoutedHost>,
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
            host: info.host().map(|h| RoutedHost::new(h, info.host_field())),
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

/// The routed host (normalised: without port, lowercased), read as text
/// by rate limits, plugins and redirects and written upstream as
/// `X-Forwarded-Host`.
///
/// When the request's `Host` field is the normalised host already (a
/// client on a default port sends `Host: example.com`), this is that
/// field's value: shared bytes, so the request costs no copy and no
/// allocation for it, where it cost two before (a `String` here and the
/// `X-Forwarded-Host` value). Otherwise (a port, capitals, an
/// authority-form target) it is a `String`, as before: `http` gives no
/// access to a value's bytes as `Bytes`, so `example.com` of
/// `example.com:8080` cannot be shared, and one copied value used for
/// both cost more than two copies (+113 instructions per GET in
/// callgrind: the first clone of a copied `Bytes` allocates its shared
/// header).
#[derive(Clone, Debug)]
pub(super) enum RoutedHost {
    /// The request's own `Host` field, which is the normalised host.
    Field(HeaderValue),
    /// A normalised copy.
    Text(String),
}

impl RoutedHost {
    /// `host` (the text routing normalised), shared with `field` when it
    /// is that field's whole text.
    fn new(host: &str, field: Option<&HeaderValue>) -> RoutedHost {
        match field {
            Some(f) if f.as_bytes() == host.as_bytes() => RoutedHost::Field(f.clone()),
            _ => RoutedHost::Text(host.to_owned()),
        }
    }

    /// The host as text.
    pub fn as_str(&self) -> &str {
        match self {
            // SAFETY: the bytes equal those of a `&str` (`new`), which are
            // UTF-8.
            RoutedHost::Field(v) => unsafe { std::str::from_utf8_unchecked(v.as_bytes()) },
            RoutedHost::Text(t) => t,
        }
    }

    /// The request's own `Host` value, when it is the host.
    pub fn field(&self) -> Option<&HeaderValue> {
        match self {
            RoutedHost::Field(v) => Some(v),
            RoutedHost::Text(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_shares_the_field_only_when_it_is_the_whole_field() {
        let field = HeaderValue::from_static("example.com");
        let shared = RoutedHost::new("example.com", Some(&field));
        assert_eq!(shared.as_str(), "example.com");
        assert_eq!(shared.field(), Some(&field));

        let with_port = HeaderValue::from_static("example.com:8080");
        let copied = RoutedHost::new("example.com", Some(&with_port));
        assert_eq!(copied.as_str(), "example.com");
        assert_eq!(copied.field(), None);

        let from_authority = RoutedHost::new("example.com", None);
        assert_eq!(from_authority.as_str(), "example.com");
        assert_eq!(from_authority.field(), None);
    }
}
