//! Key templates (`$src_ip/$uri`): parsed once into parts, then turned into
//! one keyed 64-bit hash per request from the request's [`RequestFacts`].
use std::{
    fmt,
    hash::{BuildHasher, Hasher},
    net::{IpAddr, SocketAddr},
};

use http::{header::HeaderName, HeaderMap};

use super::Side;

/// What a rule knows about one request: enough to build any key.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The client's address (the TCP peer, or the address a trusted proxy
    /// header named, as the proxy decides).
    pub client: IpAddr,
    /// The request's host, without port, as the router matched it.
    pub host: &'a str,
    /// Path and query, as received (`$uri`; `$path` stops at `?`).
    pub path_and_query: &'a str,
    /// The request's headers (for `$header_NAME` and `$cookie_NAME`).
    pub headers: &'a HeaderMap,
    /// The upstream's id: known on [`Side::Upstream`] only.
    pub upstream: Option<&'a str>,
    /// The picked node's address: known on [`Side::Upstream`] only.
    pub node: Option<SocketAddr>,
}

impl<'a> RequestFacts<'a> {
    /// Downstream facts (no upstream or node yet).
    pub fn new(
        client: IpAddr,
        host: &'a str,
        path_and_query: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            client,
            host,
            path_and_query,
            headers,
            upstream: None,
            node: None,
        }
    }

    /// The same facts once the upstream and its node are chosen.
    pub fn with_upstream(self, upstream: &'a str, node: SocketAddr) -> RequestFacts<'a> {
        RequestFacts {
            upstream: Some(upstream),
            node: Some(node),
            ..self
        }
    }
}

/// One variable of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVar {
    /// `$src_ip`: the client address.
    SrcIp,
    /// `$uri`: path and query.
    Uri,
    /// `$path`: the path without the query.
    Path,
    /// `$host`: the host, compared case-insensitively.
    Host,
    /// `$header_NAME`: every value of that header (`_` in NAME means `-`).
    Header(HeaderName),
    /// `$cookie_NAME`: the value of that cookie (NAME exact).
    Cookie(String),
    /// `$upstream`: the upstream's id (upstream side only).
    Upstream,
    /// `$node`: the picked node's address (upstream side only).
    Node,
}

impl KeyVar {
    /// Whether the variable is known only after a node is picked.
    pub fn needs_upstream(&self) -> bool {
        matches!(self, KeyVar::Upstream | KeyVar::Node)
    }

    fn tag(&self) -> u8 {
        match self {
            KeyVar::SrcIp => 1,
            KeyVar::Uri => 2,
            KeyVar::Path => 3,
            KeyVar::Host => 4,
            KeyVar::Header(_) => 5,
            KeyVar::Cookie(_) => 6,
            KeyVar::Upstream => 7,
            KeyVar::Node => 8,
        }
    }
}

impl fmt::Display for KeyVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyVar::SrcIp => f.write_str("$src_ip"),
            KeyVar::Uri => f.write_str("$uri"),
            KeyVar::Path => f.write_str("$path"),
            KeyVar::Host => f.write_str("$host"),
            KeyVar::Header(name) => write!(f, "$header_{}", name.as_str().replace('-', "_")),
            KeyVar::Cookie(name) => write!(f, "$cookie_{name}"),
            KeyVar::Upstream => f.write_str("$upstream"),
            KeyVar::Node => f.write_str("$node"),
        }
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// Text between variables (`/` in `$src_ip/$uri`): kept for display
    /// only, since it is the same in every key of the rule.
    Literal(String),
    /// A variable.
    Var(KeyVar),
}

/// Why a key template was refused. Positions are byte offsets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is empty.
    #[error("empty key template; use e.g. `$src_ip` or `$src_ip/$uri`")]
    Empty,
    /// No `$variable` at all (probably a missing `$`).
    #[error("key template `{0}` has no variable; variables start with `$`, e.g. `$src_ip`")]
    NoVariable(String),
    /// `$` not followed by a name.
    #[error("`$` at {at} is not followed by a variable name")]
    DanglingDollar {
        /// Offset of the `$`.
        at: usize,
    },
    /// `${` without `}`.
    #[error("`${{` at {at} is not closed by `}}`")]
    Unclosed {
        /// Offset of the `$`.
        at: usize,
    },
    /// A name that is not a known variable.
    #[error(
        "unknown variable `${name}` at {at}; known: $src_ip, $uri, $path, $host, \
         $header_NAME, $cookie_NAME, $upstream, $node"
    )]
    UnknownVariable {
        /// The name after `$`.
        name: String,
        /// Offset of the `$`.
        at: usize,
    },
    /// `$header_` or `$cookie_` without a name.
    #[error("`${prefix}` at {at} needs a name, e.g. `${prefix}x_api_key`")]
    MissingName {
        /// `header_` or `cookie_`.
        prefix: &'static str,
        /// Offset of the `$`.
        at: usize,
    },
    /// A header name that HTTP does not allow.
    #[error("`$header_{name}` at {at}: `{name}` is not a valid header name")]
    BadHeaderName {
        /// The name as written.
        name: String,
        /// Offset of the `$`.
        at: usize,
    },
    /// `$upstream`/`$node` in a downstream rule, where no node is picked yet.
    #[error("`{var}` is only known on side `upstream` (after the node is picked)")]
    NeedsUpstream {
        /// The variable.
        var: String,
    },
}

/// A parsed key template such as `$src_ip/$uri`.
///
/// Requests whose variables are all empty or absent (say, a missing header
/// in `$header_x_api_key`) are not counted by the rule, as with nginx's
/// `limit_req_zone` ("requests with an empty key value are not accounted").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<KeyPart>,
}

impl KeyTemplate {
    /// Parses `$var` and `${var}` references and the literal text between them.
    pub fn parse(template: &str) -> Result<KeyTemplate, TemplateError> {
        if template.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let bytes = template.as_bytes();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                // Copy one whole UTF-8 character.
                let ch = template[i..].chars().next().unwrap_or('\u{fffd}');
                literal.push(ch);
                i += ch.len_utf8();
                continue;
            }
            let at = i;
            let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
                let close = template[i + 2..]
                    .find('}')
                    .ok_or(TemplateError::Unclosed { at })?;
                (&template[i + 2..i + 2 + close], i + 3 + close)
            } else {
                let len = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                (&template[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                return Err(TemplateError::DanglingDollar { at });
            }
            if !literal.is_empty() {
                parts.push(KeyPart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(KeyPart::Var(parse_var(name, at)?));
            i = next;
        }
        if !literal.is_empty() {
            parts.push(KeyPart::Literal(literal));
        }
        if !parts.iter().any(|p| matches!(p, KeyPart::Var(_))) {
            return Err(TemplateError::NoVariable(template.to_owned()));
        }
        Ok(KeyTemplate { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// The variables, in order.
    pub fn vars(&self) -> impl Iterator<Item = &KeyVar> {
        self.parts.iter().filter_map(|p| match p {
            KeyPart::Var(v) => Some(v),
            KeyPart::Literal(_) => None,
        })
    }

    /// Checks that every variable is known on `side`.
    pub fn check_side(&self, side: Side) -> Result<(), TemplateError> {
        match (side, self.vars().find(|v| v.needs_upstream())) {
            (Side::Downstream, Some(var)) => Err(TemplateError::NeedsUpstream {
                var: var.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The key of one request: a keyed hash of the variables' values (each
    /// length-prefixed, so distinct value tuples never concatenate to the
    /// same input), or `None` when every value is empty or absent.
    ///
    /// A 64-bit SipHash under a per-rule random key stands for the key: no
    /// allocation per request, 8 bytes per tracked key, and collisions
    /// (two keys sharing a bucket) are both improbable (about 10⁻¹⁰ among
    /// 100 000 live keys) and impossible to aim for without the secret key.
    pub(super) fn hash<S: BuildHasher>(&self, facts: &RequestFacts<'_>, state: &S) -> Option<u64> {
        let mut h = state.build_hasher();
        let mut any = false;
        for var in self.vars() {
            h.write_u8(var.tag());
            match var {
                KeyVar::SrcIp => {
                    any = true;
                    write_ip(&mut h, facts.client);
                }
                KeyVar::Uri => any |= write_value(&mut h, facts.path_and_query.as_bytes()),
                KeyVar::Path => {
                    let path = facts.path_and_query;
                    let path = path.split_once('?').map_or(path, |(p, _)| p);
                    any |= write_value(&mut h, path.as_bytes());
                }
                KeyVar::Host => {
                    let host = facts.host.as_bytes();
                    h.write_usize(host.len());
                    let mut buf = [0u8; 64];
                    for chunk in host.chunks(buf.len()) {
                        let buf = &mut buf[..chunk.len()];
                        buf.copy_from_slice(chunk);
                        buf.make_ascii_lowercase();
                        h.write(buf);
                    }
                    any |= !host.is_empty();
                }
                KeyVar::Header(name) => {
                    let mut count = 0usize;
                    for value in facts.headers.get_all(name) {
                        count += 1;
                        any |= write_value(&mut h, value.as_bytes());
                    }
                    h.write_usize(count);
                }
                KeyVar::Cookie(name) => match super::super::headers::cookie(facts.headers, name) {
                    Some(value) => {
                        h.write_u8(1);
                        any |= write_value(&mut h, value);
                    }
                    None => h.write_u8(0),
                },
                KeyVar::Upstream => match facts.upstream {
                    Some(id) => {
                        h.write_u8(1);
                        any |= write_value(&mut h, id.as_bytes());
                    }
                    None => h.write_u8(0),
                },
                KeyVar::Node => match facts.node {
                    Some(addr) => {
                        any = true;
                        h.write_u8(1);
                        write_ip(&mut h, addr.ip());
                        h.write_u16(addr.port());
                    }
                    None => h.write_u8(0),
                },
            }
        }
        any.then(|| h.finish())
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                KeyPart::Literal(text) => f.write_str(text)?,
                KeyPart::Var(var) => write!(f, "{var}")?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for KeyTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<KeyTemplate, TemplateError> {
        KeyTemplate::parse(s)
    }
}

fn parse_var(name: &str, at: usize) -> Result<KeyVar, TemplateError> {
    Ok(match name {
        "src_ip" => KeyVar::SrcIp,
        "uri" => KeyVar::Uri,
        "path" => KeyVar::Path,
        "host" => KeyVar::Host,
        "upstream" => KeyVar::Upstream,
        "node" => KeyVar::Node,
        _ => {
            if let Some(header) = name.strip_prefix("header_") {
                if header.is_empty() {
                    return Err(TemplateError::MissingName {
                        prefix: "header_",
                        at,
                    });
                }
                let wire = header.replace('_', "-").to_ascii_lowercase();
                let parsed = HeaderName::from_bytes(wire.as_bytes()).map_err(|_| {
                    TemplateError::BadHeaderName {
                        name: header.to_owned(),
                        at,
                    }
                })?;
                KeyVar::Header(parsed)
            } else if let Some(cookie) = name.strip_prefix("cookie_") {
                if cookie.is_empty() {
                    return Err(TemplateError::MissingName {
                        prefix: "cookie_",
                        at,
                    });
                }
                KeyVar::Cookie(cookie.to_owned())
            } else {
                return Err(TemplateError::UnknownVariable {
                    name: name.to_owned(),
                    at,
                });
            }
        }
    })
}

fn write_value<H: Hasher>(h: &mut H, value: &[u8]) -> bool {
    h.write_usize(value.len());
    h.write(value);
    !value.is_empty()
}

fn write_ip<H: Hasher>(h: &mut H, ip: IpAddr) {
    // IPv4-mapped IPv6 addresses are the same client as the IPv4 address
    // (a dual-stack listener reports them so).
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            h.write_u8(4);
            h.write(&v4.octets());
        }
        IpAddr::V6(v6) => {
            h.write_u8(6);
            h.write(&v6.octets());
        }
    }
}
