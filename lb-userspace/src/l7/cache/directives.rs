//! `Cache-Control` (RFC 9111 §5.2), `Pragma`, HTTP dates and entity-tag
//! lists, parsed leniently: what cannot be understood is ignored, except a
//! malformed `max-age`/`s-maxage`, which makes the response stale (§4.2.1
//! allows that, and it is the safe reading).
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderName, HeaderValue};

/// Delta-seconds beyond this are this (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 1 << 31;

/// One `Cache-Control` directive: name (lower case) and value (unquoted).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_directives)
}

/// Splits one field value at commas that are outside quoted strings.
fn split_directives(value: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let rest_trim = rest.trim_start_matches([' ', '\t', ',']);
        if rest_trim.is_empty() {
            break;
        }
        let name_end = rest_trim.find(['=', ',']).unwrap_or(rest_trim.len());
        let name = rest_trim[..name_end].trim().to_ascii_lowercase();
        rest = &rest_trim[name_end..];
        let mut val = None;
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(q) = after.strip_prefix('"') {
                // Quoted string with backslash escapes.
                let mut s = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                s.push(e);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => s.push(c),
                    }
                }
                val = Some(s);
                rest = &q[end.min(q.len())..];
                // Skip anything up to the next comma.
                rest = rest.find(',').map_or("", |i| &rest[i..]);
            } else {
                let end = after.find(',').unwrap_or(after.len());
                val = Some(after[..end].trim().to_string());
                rest = &after[end..];
            }
        }
        if !name.is_empty() {
            out.push((name, val));
        }
    }
    out
}

/// `delta-seconds`: `None` when malformed.
fn delta(v: Option<&str>) -> Option<Duration> {
    let v = v?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64 is still a valid (huge) number.
    let n = v.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA);
    Some(Duration::from_secs(n))
}

/// The response directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub no_store: bool,
    /// `no-cache`, qualified or not (a qualified one is treated as
    /// unqualified, which RFC 9111 §5.2.2.4 allows).
    pub no_cache: bool,
    /// `private`, qualified or not: a shared cache does not store it.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    /// `Some(0)` when present but malformed.
    pub max_age: Option<Duration>,
    /// `Some(0)` when present but malformed.
    pub s_maxage: Option<Duration>,
    /// RFC 5861.
    pub stale_while_revalidate: Option<Duration>,
    /// RFC 5861.
    pub stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    /// Parses every `Cache-Control` line; the first occurrence of a
    /// directive with a value wins (RFC 9111 §4.2.1).
    pub fn parse(headers: &HeaderMap) -> ResponseDirectives {
        ResponseDirectives::from_pairs(directives(headers))
    }

    /// The directives of `(name, value)` pairs (names lower case, values
    /// unquoted), read as in `Cache-Control`.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, Option<String>)>,
    ) -> ResponseDirectives {
        let mut d = ResponseDirectives::default();
        for (name, value) in pairs {
            let value = value.as_deref();
            match name.as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "must-revalidate" => d.must_revalidate = true,
                "proxy-revalidate" => d.proxy_revalidate = true,
                "must-understand" => d.must_understand = true,
                "max-age" if d.max_age.is_none() => {
                    d.max_age = Some(delta(value).unwrap_or(Duration::ZERO));
                }
                "s-maxage" if d.s_maxage.is_none() => {
                    d.s_maxage = Some(delta(value).unwrap_or(Duration::ZERO));
                }
                "stale-while-revalidate" if d.stale_while_revalidate.is_none() => {
                    d.stale_while_revalidate = delta(value);
                }
                "stale-if-error" if d.stale_if_error.is_none() => {
                    d.stale_if_error = delta(value);
                }
                _ => {}
            }
        }
        d
    }

    /// Whether the origin forbids serving this response stale without
    /// revalidation (RFC 9111 §4.2.4): `no-cache`, `must-revalidate`,
    /// `proxy-revalidate`. (`s-maxage` implies `proxy-revalidate` too, but
    /// xlb serves stale only under an explicit `stale-while-revalidate` /
    /// `stale-if-error` in the same response, which is taken to win.)
    pub fn forbids_stale(&self) -> bool {
        self.no_cache || self.must_revalidate || self.proxy_revalidate
    }
}

/// The request directives the cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    pub no_store: bool,
    /// `no-cache`, or `Pragma: no-cache` without any `Cache-Control`.
    pub no_cache: bool,
    pub max_age: Option<Duration>,
    pub min_fresh: Option<Duration>,
    pub only_if_cached: bool,
}

impl RequestDirectives {
    pub fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        let mut any = false;
        for (name, value) in directives(headers) {
            any = true;
            let value = value.as_deref();
            match name.as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "only-if-cached" => d.only_if_cached = true,
                "max-age" if d.max_age.is_none() => {
                    d.max_age = Some(delta(value).unwrap_or(Duration::ZERO));
                }
                "min-fresh" if d.min_fresh.is_none() => d.min_fresh = delta(value),
                _ => {}
            }
        }
        if !any {
            // RFC 9111 §5.4: Pragma: no-cache only counts without Cache-Control.
            d.no_cache = headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("no-cache"));
        }
        d
    }
}

/// An HTTP date (IMF-fixdate, or the obsolete forms), read as leniently
/// as RFC 9110 §5.6.7 asks of recipients (see [`super::http_date`]).
pub fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    super::http_date::parse(v.to_str().ok()?)
}

/// The `Age` of a response (RFC 9111 §5.1): `Ok(zero)` without one; a
/// list (`Age: 7200, 0`, or several lines) counts by its first member, as
/// §5.1 says a cache SHOULD; `Err` when that member is not a non-negative
/// integer, and then §5.1 says the cache SHOULD ignore the response (it is
/// not stored). Values past 2^31 are 2^31 (§1.2.2).
pub fn age(headers: &HeaderMap) -> Result<Duration, InvalidAge> {
    let Some(first) = headers.get(header::AGE) else {
        return Ok(Duration::ZERO);
    };
    let first = first.to_str().map_err(|_| InvalidAge)?;
    let member = first
        .split(',')
        .next()
        .unwrap_or("")
        .trim_matches([' ', '\t']);
    delta(Some(member)).ok_or(InvalidAge)
}

/// An `Age` whose first member is not a non-negative integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Age is not a non-negative integer")]
pub struct InvalidAge;

/// The first value of `name` as an HTTP date.
pub fn date_header(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    headers.get(name).and_then(http_date)
}

/// Formats an HTTP date.
pub fn fmt_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .expect("an HTTP date is a valid header value")
}

/// The `Vary` field names, lower case; `None` for `Vary: *`.
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::VARY) {
        let Ok(s) = v.to_str() else {
            // Not understood: treat like `*`.
            return None;
        };
        for t in s.split(',') {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            if t == "*" {
                return None;
            }
            match HeaderName::from_bytes(t.as_bytes()) {
                Ok(n) if !names.contains(&n) => names.push(n),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The opaque tags of an entity-tag list (`If-None-Match`); `None` for
/// `*`. Weakness is dropped: `If-None-Match` uses weak comparison.
pub fn etag_list(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        if s.trim() == "*" {
            return None;
        }
        let mut rest = s;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let r = rest.strip_prefix("W/").unwrap_or(rest);
            let Some(q) = r.strip_prefix('"') else {
                // Malformed: skip to the next comma.
                rest = r.find(',').map_or("", |i| &r[i..]);
                continue;
            };
            let Some(end) = q.find('"') else { break };
            tags.push(q[..end].to_string());
            rest = &q[end + 1..];
        }
    }
    Some(tags)
}

/// The opaque tag of an `ETag` value (weakness dropped).
pub fn opaque_tag(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')?.strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn response_directives_parse() {
        let d = ResponseDirectives::parse(&hm(&[
            ("cache-control", "public, max-age=60, S-MAXAGE=\"120\""),
            (
                "cache-control",
                "stale-while-revalidate=30,stale-if-error=600, no-cache=\"Set-Cookie, X\"",
            ),
        ]));
        assert!(d.public && d.no_cache && !d.private && !d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(120)));
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(600)));
    }

    #[test]
    fn malformed_max_age_is_stale_and_first_wins() {
        let d = ResponseDirectives::parse(&hm(&[("cache-control", "max-age=abc, max-age=60")]));
        assert_eq!(d.max_age, Some(Duration::ZERO));
        let d = ResponseDirectives::parse(&hm(&[("cache-control", "max-age=5, max-age=60")]));
        assert_eq!(d.max_age, Some(Duration::from_secs(5)));
        let d =
            ResponseDirectives::parse(&hm(&[("cache-control", "max-age=99999999999999999999999")]));
        assert_eq!(d.max_age, Some(Duration::from_secs(MAX_DELTA)));
    }

    #[test]
    fn a_list_valued_age_counts_by_its_first_member() {
        let secs = |pairs: &[(&'static str, &'static str)]| age(&hm(pairs)).map(|d| d.as_secs());
        assert_eq!(secs(&[]), Ok(0));
        assert_eq!(secs(&[("age", "30")]), Ok(30));
        assert_eq!(secs(&[("age", "7200, 0")]), Ok(7200));
        assert_eq!(secs(&[("age", "7200"), ("age", "0")]), Ok(7200));
        assert_eq!(secs(&[("age", " 5 ,abc")]), Ok(5));
        assert_eq!(secs(&[("age", "99999999999999999999")]), Ok(MAX_DELTA));
        // Invalid first member: the response is to be ignored.
        assert_eq!(secs(&[("age", "abc, 0")]), Err(InvalidAge));
        assert_eq!(secs(&[("age", "-1")]), Err(InvalidAge));
        assert_eq!(secs(&[("age", "1.5")]), Err(InvalidAge));
        assert_eq!(secs(&[("age", "")]), Err(InvalidAge));
    }

    #[test]
    fn request_directives_and_pragma() {
        let d = RequestDirectives::parse(&hm(&[("pragma", "no-cache")]));
        assert!(d.no_cache);
        let d = RequestDirectives::parse(&hm(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!d.no_cache);
        assert_eq!(d.max_age, Some(Duration::from_secs(5)));
        let d = RequestDirectives::parse(&hm(&[(
            "cache-control",
            "no-store, only-if-cached, min-fresh=3",
        )]));
        assert!(d.no_store && d.only_if_cached);
        assert_eq!(d.min_fresh, Some(Duration::from_secs(3)));
    }

    #[test]
    fn vary_and_etags() {
        let v = vary_names(&hm(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "Accept-Encoding"),
        ]))
        .unwrap();
        assert_eq!(
            v,
            vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language")
            ]
        );
        assert!(vary_names(&hm(&[("vary", "Accept, *")])).is_none());
        let tags = etag_list(
            &hm(&[("if-none-match", "W/\"a,b\", \"c\"")]),
            &header::IF_NONE_MATCH,
        )
        .unwrap();
        assert_eq!(tags, vec!["a,b".to_string(), "c".to_string()]);
        assert!(etag_list(&hm(&[("if-none-match", "*")]), &header::IF_NONE_MATCH).is_none());
        assert_eq!(opaque_tag(&HeaderValue::from_static("W/\"x\"")), Some("x"));
    }
}
