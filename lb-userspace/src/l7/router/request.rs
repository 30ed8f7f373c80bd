//! What the router looks at in a request ([`RequestInfo`]), and the path
//! spellings a guarding route cannot see through ([`path_hazard`]).
use std::borrow::Cow;

use http::{header::HOST, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::host::{normalize_request_host, split_port, valid_port_part};

/// The parts of a request that routing looks at. The host is normalised
/// (see [`RequestInfo::new`]); the path is the raw path without the query.
#[derive(Debug, Clone)]
pub struct RequestInfo<'a> {
    host: Option<Cow<'a, str>>,
    /// The request's `Host` field ([`RequestInfo::from_parts`] only).
    host_field: Option<&'a HeaderValue>,
    path: &'a str,
    method: &'a Method,
    headers: &'a HeaderMap,
}

/// Why a request cannot be routed at all; every case is a 400 Bad Request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request target is not origin-form (`/path`): authority form
    /// (`CONNECT host:port`) or something else.
    #[error("request target {0:?} is not a path starting with '/'")]
    NotOriginForm(String),
    /// `*` is only the target of `OPTIONS`.
    #[error("request target \"*\" with method {0} (only OPTIONS may use it)")]
    AsteriskNotOptions(Method),
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// More than one `Host` field line.
    #[error("more than one Host header")]
    MultipleHosts,
    /// A `Host` or authority that is not `host[:port]`.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// HTTP/2 `:authority` and `Host` name different hosts.
    #[error(":authority {authority:?} and Host {host:?} name different hosts")]
    HostMismatch {
        /// The `:authority` pseudo-header.
        authority: String,
        /// The `Host` header.
        host: String,
    },
}

impl RequestError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl<'a> RequestInfo<'a> {
    /// A request with this host (`Host` value or authority, possibly with a
    /// port), path, method and headers. The host is normalised: port
    /// stripped, lowercased, one trailing dot removed, IPv6 literals
    /// canonical in brackets (`[0:0::1]:8080` → `[::1]`); it is not
    /// validated (use [`RequestInfo::from_parts`] for requests off the
    /// wire). Anything from a `?` on is cut off the path.
    pub fn new(
        host: Option<&'a str>,
        path: &'a str,
        method: &'a Method,
        headers: &'a HeaderMap,
    ) -> Self {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        Self {
            host: host.and_then(normalize_request_host),
            host_field: None,
            path,
            method,
            headers,
        }
    }

    /// The routing view of a request received by the proxy. The host comes
    /// from the target's authority (HTTP/2 `:authority`, HTTP/1.1 absolute
    /// form), else from `Host`; see [`RequestError`] for what is refused.
    pub fn from_parts(parts: &'a Parts) -> Result<Self, RequestError> {
        let path = parts.uri.path();
        if path == "*" {
            if parts.method != Method::OPTIONS {
                return Err(RequestError::AsteriskNotOptions(parts.method.clone()));
            }
        } else if !path.starts_with('/') {
            return Err(RequestError::NotOriginForm(parts.uri.to_string()));
        }
        let (host, host_field) = request_host(parts)?;
        Ok(Self {
            host,
            host_field,
            path,
            method: &parts.method,
            headers: &parts.headers,
        })
    }

    /// The normalised host, if the request named one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The request's `Host` field value, as received (requests made by
    /// [`RequestInfo::from_parts`] that have one).
    pub fn host_field(&self) -> Option<&'a HeaderValue> {
        self.host_field
    }

    /// The path as received, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

/// The normalised host, and the `Host` field line (if any).
type HostAndField<'a> = (Option<Cow<'a, str>>, Option<&'a HeaderValue>);

/// Checks `Host` and the target's authority (one `Host` line, required
/// in HTTP/1.1, naming the same host as HTTP/2's `:authority`); returns
/// the host routing uses and the `Host` field line.
fn request_host(parts: &Parts) -> Result<HostAndField<'_>, RequestError> {
    let mut host_lines = parts.headers.get_all(HOST).iter();
    let field = host_lines.next();
    if host_lines.next().is_some() {
        return Err(RequestError::MultipleHosts);
    }
    let header = match field {
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                RequestError::InvalidHost(String::from_utf8_lossy(value.as_bytes()).into_owned())
            })?;
            Some(checked_host(text, false)?)
        }
        None => None,
    };
    if header.is_none() && parts.version == Version::HTTP_11 {
        return Err(RequestError::MissingHost);
    }
    let Some(authority) = parts.uri.authority() else {
        return Ok((header.and_then(normalize_request_host), field));
    };
    let from_target = checked_host(authority.as_str(), true)?;
    let normalized = normalize_request_host(from_target);
    if parts.version == Version::HTTP_2 {
        if let Some(header) = header {
            if normalize_request_host(header) != normalized {
                return Err(RequestError::HostMismatch {
                    authority: authority.as_str().to_owned(),
                    host: header.to_owned(),
                });
            }
        }
    }
    Ok((normalized, field))
}

/// `text` when it is `host[:port]` (empty allowed for `Host`); userinfo is
/// refused (`Host` never has it, and RFC 9110 forbids it in `http(s)` URIs).
fn checked_host(text: &str, is_authority: bool) -> Result<&str, RequestError> {
    let invalid = || RequestError::InvalidHost(text.to_owned());
    if text.is_empty() {
        return if is_authority {
            Err(invalid())
        } else {
            Ok(text)
        };
    }
    if plain_host_port(text.as_bytes()) {
        return Ok(text);
    }
    if text.contains('@') {
        return Err(invalid());
    }
    let authority = http::uri::Authority::try_from(text.as_bytes()).map_err(|_| invalid())?;
    let (_, port) = split_port(authority.as_str());
    if !valid_port_part(port) {
        return Err(invalid());
    }
    Ok(text)
}

/// The usual `Host`: letters, digits, `.` and `-` (a registered name or an
/// IPv4 address), then nothing or `:` and one to five digits. Every such
/// text passes http's authority parser and the port check in
/// [`checked_host`], which this answers without: the parser copies the
/// text into a new buffer, and this runs for every request.
fn plain_host_port(text: &[u8]) -> bool {
    let name_end = text
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-'))
        .unwrap_or(text.len());
    if name_end == 0 {
        return false;
    }
    match &text[name_end..] {
        [] => true,
        [b':', port @ ..] => (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A spelling of a path that a backend may read as another path than the
/// router did (the router matches raw bytes; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathHazard {
    /// A `.` or `..` segment (`/a/../admin`).
    DotSegment,
    /// An empty segment before the end (`//admin`, `/a//b`); some servers
    /// merge slashes.
    EmptySegment,
    /// A backslash, a path separator for some servers.
    Backslash,
    /// `%2F` or `%5C`: an encoded separator.
    EncodedSeparator,
    /// A percent-encoded unreserved character (`%61` for `a`, `%2E` for
    /// `.`): decoders make it the plain character.
    EncodedUnreserved,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
}

/// The first spelling in `path` that could make a backend see another path
/// than the router matched, or `None` for a plain path. `*` is plain.
/// The router does not call this; the proxy decides whether to refuse.
pub fn path_hazard(path: &str) -> Option<PathHazard> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Some(PathHazard::Backslash),
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Some(PathHazard::BadPercentEncoding);
                };
                let decoded = (hi * 16 + lo) as u8;
                if decoded == b'/' || decoded == b'\\' {
                    return Some(PathHazard::EncodedSeparator);
                }
                if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) {
                    return Some(PathHazard::EncodedUnreserved);
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(rest) = path.strip_prefix('/') {
        let mut segments = rest.split('/').peekable();
        while let Some(segment) = segments.next() {
            if segment == "." || segment == ".." {
                return Some(PathHazard::DotSegment);
            }
            if segment.is_empty() && segments.peek().is_some() {
                return Some(PathHazard::EmptySegment);
            }
        }
    }
    None
}

impl RequestInfo<'_> {
    /// [`path_hazard`] of this request's path.
    pub fn path_hazard(&self) -> Option<PathHazard> {
        path_hazard(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow path of [`checked_host`]: http's parser and the port check.
    fn parser_accepts(text: &str) -> bool {
        !text.contains('@')
            && http::uri::Authority::try_from(text.as_bytes())
                .is_ok_and(|a| valid_port_part(split_port(a.as_str()).1))
    }

    #[test]
    fn the_plain_host_shortcut_accepts_only_what_the_parser_accepts() {
        let alphabet = b"aZ09.-:[]@%/?# _\x7f\xc3";
        let mut accepted = 0;
        for _ in 0..200_000 {
            let len = rand::random_range(0..12);
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rand::random_range(0..alphabet.len())])
                .collect();
            let Ok(text) = std::str::from_utf8(&text) else {
                continue;
            };
            if plain_host_port(text.as_bytes()) {
                accepted += 1;
                assert!(parser_accepts(text), "{text:?}");
            }
        }
        // The shortcut must also take the usual hosts.
        assert!(accepted > 1000, "{accepted}");
        for usual in [
            "example.com",
            "127.0.0.1:18080",
            "a-b.c:1",
            "xn--bcher-kva.ch:443",
        ] {
            assert!(plain_host_port(usual.as_bytes()), "{usual}");
        }
        for other in [":80", "a:", "a:123456", "[::1]:80", "a b", "a@b", "a:1:2"] {
            assert!(!plain_host_port(other.as_bytes()), "{other}");
        }
    }
}
