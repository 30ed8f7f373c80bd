//! An HTTP/1.x request whose target is in absolute form
//! (`GET http://victim.test/p HTTP/1.1`): RFC 9112 §3.2.2 says the
//! target's authority wins and the received `Host` is ignored. xlb already
//! routes and keys the cache by the target's authority; [`adopt_authority`]
//! makes `Host` agree, so that the node sees the same host
//! (`pass_host: pass`) and a client cannot route by one host while a
//! virtual-hosting backend (or the cache behind it) serves another.
//!
//! What is refused, and with which status:
//! - a scheme xlb does not serve (anything but `http`/`https`, on any
//!   version): `400 unsupported-scheme`. xlb is a gateway, not a forward
//!   proxy; such a target is malformed for it.
//! - an absolute-form target whose authority no route serves:
//!   `421 misdirected-request` (RFC 9110 §15.5.20: this server is not
//!   authoritative for that URI), where an origin-form request for an
//!   unknown `Host` gets `404 no-route`. The authority was not the
//!   connection's; a client that sends absolute form is usually speaking
//!   to xlb as if it were a forward proxy.
//!
//! `https://` on a cleartext listener (or `http://` over TLS) is served:
//! the scheme is not part of routing, and `X-Forwarded-Proto` tells the
//! node what xlb actually saw, as nginx and HAProxy do.
use http::{header, request::Parts, HeaderValue, Uri, Version};

/// Whether the target's scheme, if it has one, is `http` or `https`.
pub fn scheme_served(uri: &Uri) -> bool {
    match uri.scheme_str() {
        None => true,
        Some(s) => s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"),
    }
}

/// Whether the request is HTTP/1.x with an absolute-form target (HTTP/2
/// always carries `:authority` in its target; it is checked against
/// `Host` by the router).
pub fn is_absolute_form(parts: &Parts) -> bool {
    parts.version < Version::HTTP_2 && parts.uri.authority().is_some()
}

/// For an absolute-form request, sets `Host` to the target's authority
/// (as written, port included) and returns the `Host` that was received
/// when it differed (for a log line); `None` otherwise.
pub fn adopt_authority(parts: &mut Parts) -> Option<HeaderValue> {
    if !is_absolute_form(parts) {
        return None;
    }
    let authority = parts.uri.authority()?;
    let value = HeaderValue::from_str(authority.as_str()).ok()?;
    let old = parts.headers.insert(header::HOST, value.clone());
    old.filter(|o| !o.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(target: &str, host: Option<&str>, version: Version) -> Parts {
        let mut b = Request::get(target).version(version);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_targets_authority_replaces_host() {
        let mut p = parts(
            "http://victim.test:8080/p",
            Some("attacker.test"),
            Version::HTTP_11,
        );
        assert_eq!(adopt_authority(&mut p).unwrap(), "attacker.test");
        assert_eq!(p.headers[header::HOST], "victim.test:8080");
        assert_eq!(p.headers.get_all(header::HOST).iter().count(), 1);
        let mut same = parts(
            "http://Victim.test/p",
            Some("victim.TEST"),
            Version::HTTP_11,
        );
        assert_eq!(adopt_authority(&mut same), None);
        assert_eq!(same.headers[header::HOST], "Victim.test");
        let mut origin = parts("/p", Some("a.test"), Version::HTTP_11);
        assert_eq!(adopt_authority(&mut origin), None);
        assert_eq!(origin.headers[header::HOST], "a.test");
        let mut h2 = parts("https://a.test/p", None, Version::HTTP_2);
        assert_eq!(adopt_authority(&mut h2), None);
        assert!(h2.headers.get(header::HOST).is_none());
    }

    #[test]
    fn only_http_schemes_are_served() {
        for ok in ["/p", "http://a/p", "HTTPS://a/p"] {
            assert!(scheme_served(&ok.parse().unwrap()), "{ok}");
        }
        for bad in ["ftp://a/p", "gopher://a/p", "ws://a/p"] {
            assert!(!scheme_served(&bad.parse().unwrap()), "{bad}");
        }
    }
}
