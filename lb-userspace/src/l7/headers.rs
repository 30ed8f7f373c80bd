//! The header rewrites every proxied request and response gets: hop-by-hop
//! headers removed (RFC 9110 §7.6.1) and the usual proxy headers added
//! (X-Forwarded-For/-Proto/-Host, Via, RFC 9110 §7.6.3); a route's own
//! header edits; reading and setting cookies.
use std::net::IpAddr;

use http::{
    header::{self, HeaderName, HeaderValue},
    HeaderMap,
};

use super::upstream_head::AddedFields;

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1, plus the non-standard but common `Proxy-Connection` and
/// `Keep-Alive`). `TE` is handled apart: `TE: trailers` must reach gRPC
/// backends over HTTP/2.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `Keep-Alive` and `Proxy-Connection` have no constants in `http`. Names,
/// not strings: comparing a standard name with one of these is a tag
/// check, where `as_str() ==` looked the name's text up for every field of
/// every message.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The settings of an `h2c` upgrade (RFC 7540 §3.2.1): connection-specific,
/// and meaningless once the upgrade is dropped (xlb never forwards `h2c`,
/// see `upgrade`), so removed even when `Connection` does not name it.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2): a field name, a
/// protocol or cookie name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether [`strip_hop_by_hop`] has anything to do about `name`.
fn connection_specific(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == HTTP2_SETTINGS
}

/// Removes hop-by-hop headers, including every header the `Connection`
/// header names. `TE` is kept only as `TE: trailers` (the one value that
/// may cross a proxy to an HTTP/2 peer, RFC 9113 §8.2.2).
///
/// Upgrades (WebSocket) are re-added by the caller for the upstream leg:
/// `Upgrade` and `Connection: upgrade` belong to each hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at the names first: most messages carry none of these, and
    // a dozen hashed removals per message showed in profiles.
    let (mut connection, mut others) = (false, false);
    for name in headers.keys().filter(|n| connection_specific(n)) {
        if name == header::CONNECTION {
            connection = true;
        } else {
            others = true;
            break;
        }
    }
    if !connection && !others {
        return;
    }
    // The next most usual case: `Connection: keep-alive` (or `close`) and
    // no other connection-specific field (most HTTP/1.1 clients; a node's
    // response through hyper's client, the own one leaves it out): one
    // removal. Neither token names a
    // field present here (`Keep-Alive` would have been one of `others`).
    if !others
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .all(|v| connection_options(v.as_bytes()).is_some())
    {
        headers.remove(header::CONNECTION);
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // Never let `Connection: host` (or similar) strip end-to-end
        // essentials the proxy relies on.
        if name != header::HOST {
            headers.remove(&name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(HTTP2_SETTINGS);
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `keep-alive` and `close` options of one `Connection` field value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    pub keep_alive: bool,
    pub close: bool,
}

/// The options of a `Connection` value made only of `keep-alive` and
/// `close` tokens (empty list elements allowed, RFC 9110 §5.6.1); `None`
/// when it holds any other token (one naming a field to remove, or
/// `upgrade`).
pub fn connection_options(value: &[u8]) -> Option<ConnectionOptions> {
    let mut options = ConnectionOptions::default();
    for t in value.split(|b| *b == b',') {
        let t = t.trim_ascii();
        if t.eq_ignore_ascii_case(b"keep-alive") {
            options.keep_alive = true;
        } else if t.eq_ignore_ascii_case(b"close") {
            options.close = true;
        } else if !t.is_empty() {
            return None;
        }
    }
    Some(options)
}

/// What the proxy knows about the downstream leg of a request.
#[derive(Debug, Clone)]
pub struct Downstream<'a> {
    /// The client's address as seen by the proxy, as text (made once per
    /// connection by [`address_value`]).
    pub client: &'a HeaderValue,
    /// `https` when the client connection is TLS, else `http`.
    pub proto: &'a str,
    /// The host the client asked for (`Host` or the target's authority;
    /// the proxy passes it normalised, as routed), if any.
    pub host: Option<&'a str>,
    /// `host` as the client's own field value, when it is that (shared
    /// bytes: `X-Forwarded-Host` is then a reference count, not a copy).
    pub host_field: Option<&'a HeaderValue>,
    /// The HTTP version of the downstream request, for `Via`.
    pub version: http::Version,
    /// Whether the client is a trusted proxy (`l7.trusted_proxies`),
    /// whose X-Forwarded-For chain is kept.
    pub trusted: bool,
}

impl Downstream<'_> {
    /// `host` as a header value (`X-Forwarded-Host`).
    pub fn host_value(&self) -> Option<HeaderValue> {
        match self.host_field {
            Some(v) => Some(v.clone()),
            None => self.host.and_then(|h| HeaderValue::from_str(h).ok()),
        }
    }
}

/// `ip` as a header value (X-Forwarded-For's usual content). Made once per
/// connection: formatting an address cost ~500 instructions, once per
/// request before.
pub fn address_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Forwarding claims only a trusted proxy may pass on: a client could
/// otherwise pick the address a backend takes for its own.
const CLIENT_CLAIMS: [HeaderName; 2] = [header::FORWARDED, X_REAL_IP];

/// Names as constants: a `&str` key is parsed and hashed into a
/// `HeaderName` on every map call, which showed in profiles.
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The pseudonym this proxy uses in `Via` (RFC 9110 §7.6.3 allows one
/// instead of a host name, which would leak internal names).
pub const VIA_NAME: &str = "xlb";

/// Adds X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Via to
/// an upstream request.
///
/// From a trusted proxy ([`Downstream::trusted`]) the X-Forwarded-For
/// chain gets the peer appended, and its X-Forwarded-Proto and -Host, when
/// present, are kept (it terminated the client's connection). From anyone
/// else, X-Forwarded-For is the peer alone, -Proto and -Host describe
/// xlb's own connection, and `Forwarded` and `X-Real-IP` are removed:
/// what a client writes there would let it pick the address a backend
/// logs and rate-limits, or pretend it came over TLS.
pub fn add_forwarded(headers: &mut HeaderMap, down: &Downstream<'_>) {
    let prior: Vec<&str> = match down.trusted {
        true => headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
        false => Vec::new(),
    };
    // The usual value, the client's address alone, is the connection's
    // (shared bytes: no formatting and no copy per request).
    let xff = match prior.is_empty() {
        true => Ok(down.client.clone()),
        false => {
            let client = down.client.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {client}", prior.join(", ")))
        }
    };
    // One look at the names instead of a hashed removal per claim: most
    // requests carry neither.
    if !down.trusted && headers.keys().any(|n| CLIENT_CLAIMS.contains(n)) {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
    // `insert` replaces every earlier value of the name.
    match xff {
        Ok(v) => headers.insert(X_FORWARDED_FOR, v),
        Err(_) => headers.remove(X_FORWARDED_FOR),
    };
    let keep_proto = down.trusted && headers.contains_key(X_FORWARDED_PROTO);
    let keep_host = down.trusted && headers.contains_key(X_FORWARDED_HOST);
    if !keep_proto {
        if let Some(v) = proto_value(down.proto) {
            headers.insert(X_FORWARDED_PROTO, v);
        }
    }
    if !keep_host {
        match down.host_value() {
            Some(host) => headers.insert(X_FORWARDED_HOST, host),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    append_via(headers, down.version);
}

/// What [`add_forwarded`] would add to `headers`, as fields to write after
/// the head's own ([`super::upstream_head`]), when that is all it would do:
/// none of the names it replaces, extends or removes (`X-Forwarded-*`,
/// `Via`, `Forwarded`, `X-Real-IP`) is in the head, so each would be a new
/// field at the end, in this order. `None` when one is (a chain from a
/// proxy, a client's claim): the caller then edits the map with
/// `add_forwarded`. One look at the names either way.
pub fn forwarded_fields(headers: &HeaderMap, down: &Downstream<'_>) -> Option<AddedFields> {
    if headers.keys().any(|n| FORWARDING.contains(n)) {
        return None;
    }
    let mut added = AddedFields::new();
    added.push((X_FORWARDED_FOR, down.client.clone()));
    if let Some(proto) = proto_value(down.proto) {
        added.push((X_FORWARDED_PROTO, proto));
    }
    if let Some(host) = down.host_value() {
        added.push((X_FORWARDED_HOST, host));
    }
    if let Some(via) = via_value(None, down.version) {
        added.push((header::VIA, via));
    }
    Some(added)
}

/// Every name [`add_forwarded`] reads, replaces or removes.
const FORWARDING: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::VIA,
    header::FORWARDED,
    X_REAL_IP,
];

/// `X-Forwarded-Proto`'s value for a downstream protocol.
fn proto_value(proto: &str) -> Option<HeaderValue> {
    match proto {
        "http" => Some(HeaderValue::from_static("http")),
        "https" => Some(HeaderValue::from_static("https")),
        other => HeaderValue::from_str(other).ok(),
    }
}

/// Appends this hop to `Via` (requests and responses alike).
pub fn append_via(headers: &mut HeaderMap, version: http::Version) {
    // The usual case in one hashed lookup.
    if let http::header::Entry::Vacant(v) = headers.entry(header::VIA) {
        if let Some(via) = via_value(None, version) {
            v.insert(via);
        }
        return;
    }
    let prior = headers.get(header::VIA).and_then(|v| v.to_str().ok());
    if let Some(via) = via_value(prior, version) {
        headers.insert(header::VIA, via);
    }
}

/// `Via` with this hop after `prior`'s; the usual values without
/// formatting or copying (every proxied request and response has one).
fn via_value(prior: Option<&str>, version: http::Version) -> Option<HeaderValue> {
    let hop = match version {
        http::Version::HTTP_2 => "2 xlb",
        http::Version::HTTP_10 => "1.0 xlb",
        http::Version::HTTP_11 => "1.1 xlb",
        _ => "",
    };
    if prior.is_none() && !hop.is_empty() {
        return Some(HeaderValue::from_static(hop));
    }
    let hop = format!("{} {VIA_NAME}", via_protocol(version));
    let via = match prior {
        Some(prior) => format!("{prior}, {hop}"),
        None => hop,
    };
    HeaderValue::from_str(&via).ok()
}

fn via_protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Applies a route's edits: removals, then replacements, then additions.
pub fn apply_edits(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &edits.add {
        headers.append(name.clone(), value.clone());
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first
/// one; surrounding double quotes removed).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            if pair[..eq].trim_ascii() != name.as_bytes() {
                return None;
            }
            let value = pair[eq + 1..].trim_ascii();
            Some(
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value),
            )
        })
}

/// `Set-Cookie: name=value; Path=/; HttpOnly` (a session cookie).
pub fn session_cookie(name: &str, value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly")).ok()
}

/// Header edits, applied in the order remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Headers removed.
    pub remove: Vec<HeaderName>,
    /// Headers replaced (every earlier value removed).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers appended (earlier values kept).
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_fields_are_what_add_forwarded_would_append() {
        // Every field as written: the map's own, then the added ones.
        fn written(h: &HeaderMap, added: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
            h.iter()
                .chain(added.iter().map(|(n, v)| (n, v)))
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        }
        let client = address_value("192.0.2.7".parse().unwrap());
        let heads: [&[(&str, &str)]; 8] = [
            &[("host", "example.com"), ("accept", "*/*")],
            &[],
            &[("x-forwarded-for", "10.0.0.1"), ("host", "a")],
            &[("x-forwarded-proto", "https")],
            &[("x-forwarded-host", "elsewhere")],
            &[("via", "1.0 cdn")],
            &[("forwarded", "for=10.0.0.1"), ("accept", "*/*")],
            &[("x-real-ip", "10.0.0.1")],
        ];
        let mut deferred = 0;
        for fields in heads {
            for trusted in [false, true] {
                for (version, proto, host) in [
                    (http::Version::HTTP_11, "http", Some("example.com")),
                    (http::Version::HTTP_2, "https", None),
                    (http::Version::HTTP_3, "https", Some("b")),
                ] {
                    let down = Downstream {
                        client: &client,
                        proto,
                        host,
                        host_field: None,
                        version,
                        trusted,
                    };
                    let h = map(fields);
                    let mut edited = h.clone();
                    add_forwarded(&mut edited, &down);
                    match forwarded_fields(&h, &down) {
                        Some(added) => {
                            deferred += 1;
                            assert_eq!(written(&h, &added), written(&edited, &[]), "{fields:?}");
                        }
                        // Only a head holding one of the names is left
                        // to `add_forwarded`.
                        None => assert!(
                            fields
                                .iter()
                                .any(|(n, _)| FORWARDING.iter().any(|f| f == n)),
                            "{fields:?}"
                        ),
                    }
                }
            }
        }
        // The two heads without forwarding names, both ways, three versions.
        assert_eq!(deferred, 12);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, Upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ("x-kept", "yes"),
            ("host", "example.com"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept", "host"]);
    }

    #[test]
    fn connection_with_only_keep_alive_or_close_takes_the_short_path_and_the_rest_does_not() {
        /// The names left after stripping `fields`.
        fn left(fields: &[(&str, &str)]) -> Vec<String> {
            let mut h = map(fields);
            strip_hop_by_hop(&mut h);
            h.keys().map(|k| k.as_str().to_string()).collect()
        }
        // The short path: every `Connection` field removed, nothing else.
        assert_eq!(
            left(&[
                ("connection", "Keep-Alive"),
                ("connection", " close ,keep-alive"),
                ("x-kept", "yes"),
            ]),
            ["x-kept"]
        );
        // A named field after `close` still goes, with the usual ones.
        assert_eq!(
            left(&[
                ("connection", "close, x-secret"),
                ("x-secret", "1"),
                ("x-kept", "yes"),
            ]),
            ["x-kept"]
        );
        // `Connection: keep-alive` beside a `Keep-Alive` field: both go.
        assert_eq!(
            left(&[
                ("connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ]),
            ["x-kept"]
        );
    }

    #[test]
    fn te_trailers_survives_alone() {
        let mut h = map(&[("te", "gzip, trailers;q=1"), ("te", "deflate")]);
        // "trailers;q=1" is not the bare token: dropped like the rest.
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
        let mut h = map(&[("te", "trailers, gzip")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn connection_cannot_strip_host() {
        let mut h = map(&[("connection", "host"), ("host", "a.example")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("host").unwrap(), "a.example");
    }

    fn claims() -> HeaderMap {
        map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "cdn.example"),
            ("forwarded", "for=198.51.100.1"),
            ("x-real-ip", "198.51.100.1"),
            ("via", "1.1 edge-cdn"),
        ])
    }

    fn from(trusted: bool) -> Downstream<'static> {
        static CLIENT: HeaderValue = HeaderValue::from_static("203.0.113.9");
        Downstream {
            client: &CLIENT,
            proto: "http",
            host: Some("www.example.com"),
            host_field: None,
            version: http::Version::HTTP_2,
            trusted,
        }
    }

    #[test]
    fn a_trusted_proxy_chain_is_appended_to_and_its_claims_kept() {
        let mut h = claims();
        add_forwarded(&mut h, &from(true));
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "198.51.100.1, 198.51.100.2, 203.0.113.9"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "cdn.example");
        assert_eq!(h.get("forwarded").unwrap(), "for=198.51.100.1");
        assert_eq!(h.get("x-real-ip").unwrap(), "198.51.100.1");
        assert_eq!(h.get("via").unwrap(), "1.1 edge-cdn, 2 xlb");
    }

    #[test]
    fn a_client_cannot_choose_its_forwarded_address_or_protocol() {
        let mut h = claims();
        add_forwarded(&mut h, &from(false));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "www.example.com");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(h.get("via").unwrap(), "1.1 edge-cdn, 2 xlb");
    }

    #[test]
    fn first_hop_gets_fresh_headers() {
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            &Downstream {
                client: &address_value("2001:db8::7".parse().unwrap()),
                proto: "https",
                host: None,
                host_field: None,
                version: http::Version::HTTP_11,
                trusted: false,
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "2001:db8::7");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h.get("via").unwrap(), "1.1 xlb");
    }

    #[test]
    fn edits_remove_then_set_then_add() {
        let mut h = map(&[("server", "nginx"), ("x-env", "dev"), ("x-tag", "a")]);
        apply_edits(
            &mut h,
            &HeaderEdits {
                remove: vec![HeaderName::from_static("server")],
                set: vec![(
                    HeaderName::from_static("x-env"),
                    HeaderValue::from_static("prod"),
                )],
                add: vec![(
                    HeaderName::from_static("x-tag"),
                    HeaderValue::from_static("b"),
                )],
            },
        );
        assert!(h.get("server").is_none());
        assert_eq!(h.get("x-env").unwrap(), "prod");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, vec!["a", "b"]);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = map(&[
            ("cookie", "a=1; xlb_node=\"abc\"; b=2"),
            ("cookie", "xlb_node=later"),
        ]);
        assert_eq!(cookie(&h, "xlb_node").unwrap(), b"abc");
        assert_eq!(cookie(&h, "b").unwrap(), b"2");
        assert!(cookie(&h, "xlb").is_none());
        assert!(cookie(&HeaderMap::new(), "a").is_none());
    }
}
