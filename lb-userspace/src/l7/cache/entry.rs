//! One stored response: whether a response may be stored at all (RFC 9111
//! §3), its freshness lifetime (§4.2.1–4.2.2), its age (§4.2.3), how it is
//! freshened by a 304 (§4.3.4), and how it answers a request (with a 304
//! when the client's own conditional matches, RFC 9110 §13.2).
use std::{
    sync::atomic::AtomicBool,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::{
    directives::{
        date_header, etag_list, opaque_tag, vary_names, RequestDirectives, ResponseDirectives,
    },
    CacheConfig, X_CACHE,
};
use crate::l7::{
    body::{empty_body, text_body, ProxyBody},
    error::ERROR_HEADER,
};

/// Status codes that are "heuristically cacheable" (RFC 9110 §15.1), less
/// 206: partial responses are never stored (storing ranges and combining
/// them, RFC 9111 §3.3–3.4, is not done; range requests bypass the cache).
pub const CACHEABLE_BY_DEFAULT: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Status codes whose caching rules xlb implements (for `must-understand`).
fn understood(status: StatusCode) -> bool {
    CACHEABLE_BY_DEFAULT.contains(&status.as_u16())
        || matches!(
            status.as_u16(),
            302 | 303 | 307 | 400 | 403 | 500 | 502 | 503 | 504
        )
}

/// Never stored, never copied from a 304 into a stored response.
const NOT_STORED: [HeaderName; 10] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::SET_COOKIE,
    header::AGE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Request `no-store`.
    RequestNoStore,
    /// Response `no-store`.
    NoStore,
    /// Response `private`.
    Private,
    /// 206, 304, 1xx, or an unknown status under `must-understand`.
    Status,
    /// A response xlb made itself (`x-xlb-error`).
    OwnError,
    /// `Vary: *` (or a `Vary` that cannot be read).
    VaryAny,
    /// The request had `Authorization` and the response no `public`,
    /// `s-maxage` or `must-revalidate`.
    Authorization,
    /// `Set-Cookie` without `public`.
    SetCookie,
    /// No explicit freshness for a status that needs it.
    NoFreshness,
    /// Zero lifetime, no validator and no stale window: useless.
    Useless,
    /// A method other than GET.
    Method,
    /// An `Age` whose (first) value is not a non-negative integer (RFC
    /// 9111 §5.1: the cache SHOULD ignore such a response).
    InvalidAge,
}

impl NotStored {
    /// Whether the resource itself says "do not cache" (as opposed to this
    /// one request or an error): such keys skip request coalescing for a
    /// while ("hit-for-pass").
    pub fn is_resource_policy(self) -> bool {
        !matches!(
            self,
            NotStored::RequestNoStore
                | NotStored::OwnError
                | NotStored::Method
                | NotStored::Status
                | NotStored::Authorization
                | NotStored::InvalidAge
        )
    }
}

/// What the cache knows about a storable response before its body.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: StatusCode,
    /// Without hop-by-hop fields, `Set-Cookie` and `Age`.
    pub headers: HeaderMap,
    pub cc: ResponseDirectives,
    pub response_time: SystemTime,
    pub corrected_initial_age: Duration,
    pub lifetime: Duration,
    /// Sorted, lower case; empty when the response does not vary.
    pub vary: Vec<HeaderName>,
}

/// Decides whether a response to a GET may be stored, and if so its
/// freshness (RFC 9111 §3, §4.2).
pub fn evaluate(
    req_headers: &HeaderMap,
    rcc: &RequestDirectives,
    status: StatusCode,
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    config: &CacheConfig,
) -> Result<Head, NotStored> {
    if rcc.no_store {
        return Err(NotStored::RequestNoStore);
    }
    if headers.contains_key(ERROR_HEADER) {
        return Err(NotStored::OwnError);
    }
    if status.is_informational()
        || matches!(
            status,
            StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return Err(NotStored::Status);
    }
    // CDN-Cache-Control or xlb's own targeted field, when present, rules
    // out Cache-Control and Expires (RFC 9213 §2.2).
    let policy = super::targeted::response_policy(headers, config.targeted_field.as_ref());
    let cc = policy.directives;
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if cc.must_understand && !understood(status) {
        return Err(NotStored::Status);
    }
    let Some(vary) = vary_names(headers) else {
        return Err(NotStored::VaryAny);
    };
    if req_headers.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if headers.contains_key(header::SET_COOKIE) && !cc.public {
        return Err(NotStored::SetCookie);
    }
    let by_default = CACHEABLE_BY_DEFAULT.contains(&status.as_u16());

    let date = date_header(headers, &header::DATE).unwrap_or(response_time);
    let expires = headers.get(header::EXPIRES).filter(|_| !policy.targeted);
    let explicit = cc.s_maxage.or(cc.max_age).or_else(|| {
        expires.map(|v| {
            // An invalid Expires (e.g. "0") means "already expired".
            super::directives::http_date(v)
                .and_then(|exp| exp.duration_since(date).ok())
                .unwrap_or(Duration::ZERO)
        })
    });
    if explicit.is_none() && !by_default && !cc.public {
        return Err(NotStored::NoFreshness);
    }
    let lifetime = explicit.unwrap_or_else(|| heuristic(headers, date, config));

    let has_validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let stale_window =
        !cc.forbids_stale() && (cc.stale_if_error.is_some() || cc.stale_while_revalidate.is_some());
    if cc.no_cache && !has_validator {
        // Stored but revalidated every time: without a validator each
        // revalidation is a full fetch, so storing buys nothing.
        return Err(NotStored::Useless);
    }
    if lifetime.is_zero() && !has_validator && !stale_window {
        return Err(NotStored::Useless);
    }

    // Age (RFC 9111 §4.2.3).
    let Ok(age_value) = super::directives::age(headers) else {
        return Err(NotStored::InvalidAge);
    };
    let apparent_age = response_time.duration_since(date).unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    let corrected_initial_age = apparent_age.max(age_value + response_delay);

    let mut stored = headers.clone();
    for name in &NOT_STORED {
        stored.remove(name);
    }
    stored.remove(X_CACHE);
    Ok(Head {
        status,
        headers: stored,
        cc,
        response_time,
        corrected_initial_age,
        lifetime,
        vary,
    })
}

/// Heuristic freshness (RFC 9111 §4.2.2): a fraction of the time since
/// `Last-Modified`, capped; nothing without `Last-Modified`.
fn heuristic(headers: &HeaderMap, date: SystemTime, config: &CacheConfig) -> Duration {
    if config.heuristic_fraction <= 0.0 {
        return Duration::ZERO;
    }
    let Some(lm) = date_header(headers, &header::LAST_MODIFIED) else {
        return Duration::ZERO;
    };
    let since = date.duration_since(lm).unwrap_or(Duration::ZERO);
    since
        .mul_f64(config.heuristic_fraction.min(1.0))
        .min(config.heuristic_max)
}

/// A stored response.
#[derive(Debug)]
pub struct Stored {
    pub head: Head,
    pub body: Bytes,
    /// Memory charged to the store (bytes, with an estimate for the
    /// headers and bookkeeping).
    pub weight: u32,
    /// A `stale-while-revalidate` refresh is under way (one at a time).
    pub refreshing: AtomicBool,
}

/// Per-entry bookkeeping charged on top of the key, headers and body.
const OVERHEAD: usize = 256;

impl Stored {
    pub fn new(head: Head, body: Bytes, key_len: usize) -> Stored {
        let headers: usize = head
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let weight = (body.len() + headers + key_len + OVERHEAD).min(u32::MAX as usize) as u32;
        Stored {
            head,
            body,
            weight,
            refreshing: AtomicBool::new(false),
        }
    }

    /// Current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.head.response_time)
            .unwrap_or(Duration::ZERO);
        self.head.corrected_initial_age + resident
    }

    /// How long past its freshness lifetime the entry is (zero if fresh).
    fn staleness(&self, age: Duration) -> Duration {
        age.saturating_sub(self.head.lifetime)
    }

    /// Fresh enough for this request without contacting the origin.
    pub fn fresh_for(&self, age: Duration, rcc: &RequestDirectives) -> bool {
        if self.head.cc.no_cache || rcc.no_cache {
            return false;
        }
        if rcc.max_age.is_some_and(|m| age > m) {
            return false;
        }
        let Some(remaining) = self.head.lifetime.checked_sub(age).filter(|r| !r.is_zero()) else {
            return false;
        };
        rcc.min_fresh.is_none_or(|m| remaining >= m)
    }

    /// Whether this stale entry may be served while it is refreshed in the
    /// background (RFC 5861 §3); never when the request asks for a fresher
    /// or validated response.
    pub fn while_revalidate_ok(&self, age: Duration, rcc: &RequestDirectives) -> bool {
        let cc = &self.head.cc;
        if cc.forbids_stale() || rcc.no_cache || rcc.max_age.is_some() || rcc.min_fresh.is_some() {
            return false;
        }
        cc.stale_while_revalidate
            .is_some_and(|w| self.staleness(age) < w)
    }

    /// Whether this entry may stand in for an upstream error (RFC 5861 §4).
    pub fn if_error_ok(&self, age: Duration) -> bool {
        let cc = &self.head.cc;
        !cc.forbids_stale() && cc.stale_if_error.is_some_and(|w| self.staleness(age) < w)
    }

    pub fn etag(&self) -> Option<&HeaderValue> {
        self.head.headers.get(header::ETAG)
    }

    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.head.headers.get(header::LAST_MODIFIED)
    }

    pub fn has_validator(&self) -> bool {
        self.etag().is_some() || self.last_modified().is_some()
    }

    /// The headers that make the upstream request conditional.
    pub fn conditional_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(e) = self.etag() {
            h.insert(header::IF_NONE_MATCH, e.clone());
        }
        if let Some(lm) = self.last_modified() {
            h.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
        h
    }

    /// How long the store keeps the entry: while it is fresh, then while
    /// it may still be served stale, or (with a validator) `retention` for
    /// a conditional revalidation.
    pub fn keep_for(&self, retention: Duration) -> Duration {
        let fresh = self
            .head
            .lifetime
            .saturating_sub(self.head.corrected_initial_age);
        let cc = &self.head.cc;
        let mut extra = Duration::ZERO;
        if !cc.forbids_stale() {
            extra = extra
                .max(cc.stale_while_revalidate.unwrap_or_default())
                .max(cc.stale_if_error.unwrap_or_default());
        }
        if self.has_validator() {
            extra = extra.max(retention);
        }
        (fresh + extra).min(Duration::from_secs(365 * 86400))
    }

    /// The stored response freshened by a 304 (RFC 9111 §4.3.4): its
    /// fields replace the stored ones (not `Content-Length`), and freshness
    /// is computed again from the merged fields.
    pub fn freshened(
        &self,
        not_modified: &HeaderMap,
        req_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        config: &CacheConfig,
    ) -> Result<Head, NotStored> {
        let mut merged = self.head.headers.clone();
        let mut seen: Vec<&HeaderName> = Vec::new();
        for (name, _) in not_modified {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if NOT_STORED.contains(name) && name != header::AGE
                || name == header::CONTENT_LENGTH
                || name == ERROR_HEADER
                || name == X_CACHE
            {
                continue;
            }
            merged.remove(name);
            for v in not_modified.get_all(name) {
                merged.append(name.clone(), v.clone());
            }
        }
        evaluate(
            req_headers,
            &RequestDirectives::default(),
            self.head.status,
            &merged,
            request_time,
            response_time,
            config,
        )
    }

    /// Whether the client's own conditional headers match this entry, so
    /// that it gets a 304 (If-None-Match, else If-Modified-Since; only for
    /// a stored 200, RFC 9110 §13.2.1).
    pub fn not_modified_for(&self, req_headers: &HeaderMap) -> bool {
        if self.head.status != StatusCode::OK {
            return false;
        }
        if req_headers.contains_key(header::IF_NONE_MATCH) {
            return match etag_list(req_headers, &header::IF_NONE_MATCH) {
                None => true,
                Some(tags) => self
                    .etag()
                    .and_then(opaque_tag)
                    .is_some_and(|t| tags.iter().any(|c| c == t)),
            };
        }
        let Some(ims) = date_header(req_headers, &header::IF_MODIFIED_SINCE) else {
            return false;
        };
        let lm = date_header(&self.head.headers, &header::LAST_MODIFIED)
            .or_else(|| date_header(&self.head.headers, &header::DATE))
            .unwrap_or(self.head.response_time);
        lm <= ims
    }

    /// The response for a client: the whole stored response (no body for
    /// HEAD), or a 304 when the client's conditional matches; with `Age`
    /// and `X-Cache`.
    pub fn respond(
        &self,
        method: &Method,
        req_headers: &HeaderMap,
        age: Duration,
        x_cache: &'static str,
    ) -> Response<ProxyBody> {
        let mut resp;
        if self.not_modified_for(req_headers) {
            resp = Response::new(empty_body());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            // RFC 9110 §15.4.5: the fields a 200 would have carried that
            // describe the representation's metadata.
            for name in [
                header::CACHE_CONTROL,
                header::CONTENT_LOCATION,
                header::DATE,
                header::ETAG,
                header::EXPIRES,
                header::VARY,
                header::LAST_MODIFIED,
            ] {
                for v in self.head.headers.get_all(&name) {
                    resp.headers_mut().append(name.clone(), v.clone());
                }
            }
        } else {
            let body = if *method == Method::HEAD || self.body.is_empty() {
                empty_body()
            } else {
                text_body(self.body.clone())
            };
            resp = Response::new(body);
            *resp.status_mut() = self.head.status;
            *resp.headers_mut() = self.head.headers.clone();
        }
        let h = resp.headers_mut();
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
        h.insert(X_CACHE, HeaderValue::from_static(x_cache));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn corrected_initial_age_takes_the_larger_of_apparent_and_age_header() {
        let cfg = CacheConfig::default();
        // Dated 10 s before it arrived, Age: 3, 2 s in flight: 10 wins.
        let h = hm(&[
            ("cache-control", "max-age=60".into()),
            ("date", httpdate::fmt_http_date(at(90))),
            ("age", "3".into()),
        ]);
        let rq = HeaderMap::new();
        let rcc = RequestDirectives::default();
        let head = evaluate(&rq, &rcc, StatusCode::OK, &h, at(98), at(100), &cfg).unwrap();
        assert_eq!(head.corrected_initial_age, Duration::from_secs(10));
        assert!(!head.headers.contains_key(header::AGE));
        // Age: 30 beats the apparent age.
        let h = hm(&[
            ("cache-control", "max-age=60".into()),
            ("date", httpdate::fmt_http_date(at(100))),
            ("age", "30".into()),
        ]);
        let head = evaluate(&rq, &rcc, StatusCode::OK, &h, at(98), at(100), &cfg).unwrap();
        assert_eq!(head.corrected_initial_age, Duration::from_secs(32));
        let e = Stored::new(head, Bytes::from_static(b"abc"), 10);
        assert_eq!(e.age(at(110)), Duration::from_secs(42));
        assert!(e.fresh_for(e.age(at(110)), &rcc));
        assert!(!e.fresh_for(e.age(at(128)), &rcc));
        let strict = RequestDirectives {
            max_age: Some(Duration::from_secs(40)),
            ..Default::default()
        };
        assert!(!e.fresh_for(e.age(at(110)), &strict));
    }

    #[test]
    fn statuses_and_directives_that_block_storing() {
        let cfg = CacheConfig::default();
        let rq = HeaderMap::new();
        let rcc = RequestDirectives::default();
        let ev = |status: u16, cc: &str| {
            evaluate(
                &rq,
                &rcc,
                StatusCode::from_u16(status).unwrap(),
                &hm(&[("cache-control", cc.into())]),
                at(0),
                at(0),
                &cfg,
            )
            .map(|h| h.lifetime)
        };
        assert_eq!(ev(206, "max-age=60").unwrap_err(), NotStored::Status);
        assert_eq!(ev(200, "no-store").unwrap_err(), NotStored::NoStore);
        assert_eq!(ev(200, "").unwrap_err(), NotStored::Useless);
        assert_eq!(ev(302, "public").unwrap_err(), NotStored::Useless);
        assert_eq!(ev(302, "max-age=5").unwrap(), Duration::from_secs(5));
        assert_eq!(
            ev(299, "must-understand, max-age=5").unwrap_err(),
            NotStored::Status
        );
        assert_eq!(ev(404, "max-age=5").unwrap(), Duration::from_secs(5));
    }

    fn ev_with(h: &HeaderMap, cfg: &CacheConfig) -> Result<Head, NotStored> {
        let rcc = RequestDirectives::default();
        evaluate(
            &HeaderMap::new(),
            &rcc,
            StatusCode::OK,
            h,
            at(100),
            at(100),
            cfg,
        )
    }

    #[test]
    fn a_list_valued_age_is_read_by_its_first_member_and_an_invalid_one_not_stored() {
        let cfg = CacheConfig::default();
        let dated = |age: &str| {
            hm(&[
                ("cache-control", "max-age=3600".into()),
                ("date", httpdate::fmt_http_date(at(100))),
                ("age", age.into()),
            ])
        };
        // `Age: 7200, 0` was read as 0 (fresh for an hour); it is 7200,
        // past the hour of max-age: stale at once.
        let head = ev_with(&dated("7200, 0"), &cfg).unwrap();
        assert_eq!(head.corrected_initial_age, Duration::from_secs(7200));
        let e = Stored::new(head, Bytes::from_static(b"x"), 1);
        assert!(!e.fresh_for(e.age(at(100)), &RequestDirectives::default()));
        // The control: a single small Age is fresh.
        let e = Stored::new(ev_with(&dated("0"), &cfg).unwrap(), Bytes::new(), 1);
        assert!(e.fresh_for(e.age(at(100)), &RequestDirectives::default()));
        assert_eq!(
            ev_with(&dated("soon, 0"), &cfg).unwrap_err(),
            NotStored::InvalidAge
        );
    }

    #[test]
    fn expires_in_the_forms_recipients_accept() {
        let cfg = CacheConfig::default();
        let with_expires = |expires: &str| {
            hm(&[
                ("date", "Tue, 14 Nov 2023 22:15:00 GMT".into()),
                ("expires", expires.into()),
            ])
        };
        // at(100) is Tue, 14 Nov 2023 22:15:00 GMT; each says an hour on.
        assert_eq!(
            httpdate::fmt_http_date(at(100)),
            "Tue, 14 Nov 2023 22:15:00 GMT"
        );
        for v in [
            "Tue, 14 Nov 2023 23:15:00 GMT",
            "Tuesday, 14-Nov-23 23:15:00 GMT",
            "Tue Nov 14 23:15:00 2023",
            // A wrong weekday (httpdate refused it: "already expired").
            "Wed, 14 Nov 2023 23:15:00 GMT",
            "Sun Nov 14 23:15:00 2023",
            "Tue, 14 Nov 2023 23:15:00 +0000",
        ] {
            let head = ev_with(&with_expires(v), &cfg).unwrap();
            assert_eq!(head.lifetime, Duration::from_secs(3600), "{v}");
        }
        // Invalid: already expired (RFC 9111 §5.3), so useless without a
        // validator.
        for v in ["0", "-1", "tomorrow"] {
            assert_eq!(
                ev_with(&with_expires(v), &cfg).unwrap_err(),
                NotStored::Useless,
                "{v}"
            );
        }
    }

    #[test]
    fn targeted_fields_rule_over_cache_control_and_expires() {
        let mut cfg = CacheConfig::default();
        let h = hm(&[
            ("cache-control", "private".into()),
            ("expires", httpdate::fmt_http_date(at(100 + 99_999))),
            ("cdn-cache-control", "max-age=60".into()),
        ]);
        assert_eq!(ev_with(&h, &cfg).unwrap().lifetime, Duration::from_secs(60));
        let mut only_cc = h.clone();
        only_cc.remove("cdn-cache-control");
        assert_eq!(ev_with(&only_cc, &cfg).unwrap_err(), NotStored::Private);
        // Expires is ignored under a targeted field, even with no max-age.
        let h = hm(&[
            ("expires", httpdate::fmt_http_date(at(100 + 600))),
            ("cdn-cache-control", "must-revalidate".into()),
            ("etag", "\"v1\"".into()),
        ]);
        assert_eq!(ev_with(&h, &cfg).unwrap().lifetime, Duration::ZERO);
        // The configured field rules over CDN-Cache-Control.
        cfg.targeted_field = Some(HeaderName::from_static("xlb-cache-control"));
        let h = hm(&[
            ("cdn-cache-control", "max-age=60".into()),
            ("xlb-cache-control", "no-store".into()),
        ]);
        assert_eq!(ev_with(&h, &cfg).unwrap_err(), NotStored::NoStore);
    }
}
