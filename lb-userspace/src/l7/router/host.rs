//! Host names: route hosts are validated and normalised once, request
//! hosts are normalised the same way on every request.
use std::{
    borrow::Cow,
    net::{Ipv4Addr, Ipv6Addr},
};

/// A route's host, normalised: lowercase, no trailing dot, IPv6 literals
/// canonical and in brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum HostKey {
    /// One name (or IP literal).
    Exact(Box<str>),
    /// `*.suffix`: the suffix, without `*.`.
    Wildcard(Box<str>),
    /// Any host, and requests without one.
    Any,
}

impl HostKey {
    /// How the host group is named in errors.
    pub(super) fn label(&self) -> String {
        match self {
            HostKey::Exact(h) => format!("{h:?}"),
            HostKey::Wildcard(s) => format!("\"*.{s}\""),
            HostKey::Any => "\"*\" (any)".to_owned(),
        }
    }
}

/// Parses a route's host.
pub(super) fn parse_host_pattern(raw: &str) -> Result<HostKey, &'static str> {
    if raw.is_empty() {
        return Err("empty host (leave `hosts` empty, or write \"*\", for any host)");
    }
    if raw == "*" {
        return Ok(HostKey::Any);
    }
    let lower = raw.to_ascii_lowercase();
    if let Some(inner) = lower.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("an IPv6 literal is written [address], without a port")?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| "not an IPv6 address")?;
        return Ok(HostKey::Exact(format!("[{ip}]").into()));
    }
    if lower.contains(':') {
        if let Ok(ip) = lower.parse::<Ipv6Addr>() {
            return Ok(HostKey::Exact(format!("[{ip}]").into()));
        }
        return Err("hosts are matched without the port: remove \":port\"");
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(suffix) = name.strip_prefix("*.") {
        check_dns_name(suffix)?;
        return Ok(HostKey::Wildcard(suffix.into()));
    }
    if name.contains('*') {
        return Err("a wildcard is only allowed as the whole first label, as in *.example.com");
    }
    check_dns_name(name)?;
    Ok(HostKey::Exact(name.into()))
}

fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty host name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' may make a host name (write international names in punycode, xn--...)");
        }
    }
    Ok(())
}

/// Splits `host[:port]` / `[v6][:port]` into the host and what follows it
/// (`""`, or `":port"` when well-formed). A bare IPv6 address (several
/// colons, no brackets) is all host.
pub(super) fn split_port(raw: &str) -> (&str, &str) {
    // Byte searches: `str::find` with a pattern costs ten times more on
    // these short texts, and this runs for every request.
    let b = raw.as_bytes();
    if b.first() == Some(&b'[') {
        return match b.iter().position(|c| *c == b']') {
            Some(i) => raw.split_at(i + 1),
            None => (raw, ""),
        };
    }
    match b.iter().position(|c| *c == b':') {
        Some(i) if !b[i + 1..].contains(&b':') => raw.split_at(i),
        _ => (raw, ""),
    }
}

/// Whether what [`split_port`] left after the host is nothing or `:digits`
/// (an empty port is allowed by RFC 3986).
pub(super) fn valid_port_part(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Normalises a request's host (`Host` value or authority without
/// userinfo): strips the port, lowercases, removes one trailing dot, writes
/// IPv6 literals canonically in brackets. `None` when nothing is left.
pub(super) fn normalize_request_host(raw: &str) -> Option<Cow<'_, str>> {
    let (host, _) = split_port(raw);
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return Some(match inner.parse::<Ipv6Addr>() {
            Ok(ip) => Cow::Owned(format!("[{ip}]")),
            Err(_) => lowercase(host),
        });
    }
    if host.contains(':') {
        if let Ok(ip) = host.parse::<Ipv6Addr>() {
            return Some(Cow::Owned(format!("[{ip}]")));
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some(lowercase(host))
}

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The suffix a one-label wildcard would need to match this normalised
/// host: `a.b.example.com` → `b.example.com`. IP literals have none.
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None;
    }
    if host.ends_with(|c: char| c.is_ascii_digit()) && host.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    host.split_once('.')
        .map(|(_, suffix)| suffix)
        .filter(|s| !s.is_empty())
}
