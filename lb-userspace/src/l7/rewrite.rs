//! What a route changes in the request target before it goes upstream: the
//! path prefix, the `Host` the node sees, and the `https` URL of a
//! redirecting route.
use std::net::SocketAddr;

use http::{uri::PathAndQuery, HeaderValue, Uri};

use super::options::{PassHost, PathRewrite};

/// The target with `rw` applied to its raw path (the bytes the router
/// matched, no decoding), the query kept; `None` when the prefix does not
/// match (the target is left alone). An empty path becomes `/`, and a
/// replacement that would not start with `/` gets one.
pub fn rewrite_path(uri: &Uri, rw: &PathRewrite) -> Option<PathAndQuery> {
    let rest = uri.path().strip_prefix(rw.strip_prefix.as_str())?;
    let mut path = String::with_capacity(rw.replace_with.len() + rest.len() + 1);
    path.push_str(&rw.replace_with);
    path.push_str(rest);
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    PathAndQuery::try_from(path).ok()
}

/// The `Host` the upstream request carries: the client's (`client`, as it
/// sent it, port included), the node's address, or a fixed name.
pub fn upstream_host(
    pass: &PassHost,
    client: Option<&HeaderValue>,
    node: SocketAddr,
) -> Option<HeaderValue> {
    match pass {
        PassHost::Pass => client.cloned(),
        PassHost::Node => HeaderValue::from_str(&node.to_string()).ok(),
        PassHost::Rewrite(name) => Some(name.clone()),
    }
}

/// `https://host[:port]target` for a redirecting route (`host` normalised,
/// without port; 443 is left out).
pub fn https_location(host: &str, port: u16, target: &str) -> Option<HeaderValue> {
    let url = match port {
        443 => format!("https://{host}{target}"),
        p => format!("https://{host}:{p}{target}"),
    };
    HeaderValue::from_str(&url).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(strip: &str, with: &str) -> PathRewrite {
        PathRewrite {
            strip_prefix: strip.into(),
            replace_with: with.into(),
        }
    }

    fn apply(target: &str, r: &PathRewrite) -> Option<String> {
        let uri: Uri = target.parse().unwrap();
        rewrite_path(&uri, r).map(|p| p.to_string())
    }

    #[test]
    fn prefixes_are_replaced_and_queries_kept() {
        assert_eq!(
            apply("/api/v1/x?q=1", &rw("/api", "")).unwrap(),
            "/v1/x?q=1"
        );
        assert_eq!(apply("/api", &rw("/api", "")).unwrap(), "/");
        assert_eq!(apply("/api?x", &rw("/api", "")).unwrap(), "/?x");
        assert_eq!(
            apply("/api/users", &rw("/api/", "/internal/")).unwrap(),
            "/internal/users"
        );
        assert_eq!(apply("/apiary", &rw("/api", "")).unwrap(), "/ary");
        assert_eq!(apply("/other", &rw("/api", "")), None);
        // Matched on the raw bytes: an encoded spelling is not the prefix.
        assert_eq!(apply("/%61pi/x", &rw("/api", "")), None);
    }

    #[test]
    fn host_modes() {
        let node: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let client = HeaderValue::from_static("www.example.com:8443");
        assert_eq!(
            upstream_host(&PassHost::Pass, Some(&client), node).unwrap(),
            "www.example.com:8443"
        );
        assert_eq!(
            upstream_host(&PassHost::Node, Some(&client), node).unwrap(),
            "10.1.2.3:8080"
        );
        let fixed = PassHost::Rewrite(HeaderValue::from_static("internal"));
        assert_eq!(
            upstream_host(&fixed, Some(&client), node).unwrap(),
            "internal"
        );
    }

    #[test]
    fn redirect_urls() {
        assert_eq!(
            https_location("example.com", 443, "/a?b").unwrap(),
            "https://example.com/a?b"
        );
        assert_eq!(
            https_location("[::1]", 8443, "/").unwrap(),
            "https://[::1]:8443/"
        );
    }
}
