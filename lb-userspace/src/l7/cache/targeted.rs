//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control`, and
//! optionally a field aimed at xlb alone (`l7.cache.targeted_field`, e.g.
//! `Xlb-Cache-Control`), which govern xlb's cache ahead of
//! `Cache-Control` and `Expires`.
//!
//! The target list is [xlb's own field, `CDN-Cache-Control`]: the first
//! one present with a valid, non-empty value decides, and then
//! `Cache-Control` and `Expires` are ignored for storing and freshness
//! (RFC 9213 §2.2). A targeted field is a Structured Fields dictionary
//! (RFC 8941), parsed with `sfv`; one that is empty or fails to parse is
//! as if absent (§2.1). Its members mean what the `Cache-Control`
//! directives of the same name mean: `max-age=60` (an integer),
//! `no-store` (a boolean true), `private="set-cookie"` (any value).
//!
//! `CDN-Cache-Control` is passed on to the client: it is aimed at every
//! CDN cache, and a CDN in front of xlb may rely on it. xlb's own field is
//! removed from what the client gets on a caching route (nobody after xlb
//! is its target, and it tells clients about the origin's cache policy),
//! though it stays in the stored response so that a revalidation that
//! does not repeat it keeps the same policy.
use http::{HeaderMap, HeaderName};

use super::directives::ResponseDirectives;

/// `CDN-Cache-Control` (RFC 9213 §3), aimed at every CDN cache.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives that decide whether and how long xlb stores a response,
/// and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub directives: ResponseDirectives,
    /// From a targeted field: `Expires` is ignored as well.
    pub targeted: bool,
}

/// The policy of a response: from the first targeted field in
/// [`own`, `CDN-Cache-Control`] with a valid non-empty value, else from
/// `Cache-Control`.
pub fn response_policy(headers: &HeaderMap, own: Option<&HeaderName>) -> Policy {
    for name in own.into_iter().chain([&CDN_CACHE_CONTROL]) {
        if let Some(directives) = parse_targeted(headers, name) {
            return Policy {
                directives,
                targeted: true,
            };
        }
    }
    Policy {
        directives: ResponseDirectives::parse(headers),
        targeted: false,
    }
}

/// The directives of targeted field `name`, or `None` when it is absent,
/// empty or not a valid dictionary. Several field lines are one list,
/// joined with commas (RFC 8941 §4.2).
fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    let mut joined = String::new();
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(v);
    }
    if joined.trim().is_empty() {
        return None;
    }
    let dict: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let pairs = dict.iter().filter_map(|(key, entry)| {
        let name = key.as_str().to_string();
        let value = match entry {
            sfv::ListEntry::Item(item) => match &item.bare_item {
                sfv::BareItem::Boolean(true) => None,
                // `no-store=?0`: the directive is off.
                sfv::BareItem::Boolean(false) => return None,
                sfv::BareItem::Integer(n) => Some(n.to_string()),
                sfv::BareItem::Token(t) => Some(t.as_str().to_string()),
                sfv::BareItem::String(s) => Some(s.as_str().to_string()),
                // A decimal, a byte sequence...: no directive takes one,
                // so a `max-age` of that kind is malformed (stale).
                _ => Some(String::new()),
            },
            sfv::ListEntry::InnerList(_) => Some(String::new()),
        };
        Some((name, value))
    });
    Some(ResponseDirectives::from_pairs(pairs))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn own() -> HeaderName {
        HeaderName::from_static("xlb-cache-control")
    }

    #[test]
    fn cdn_cache_control_wins_over_cache_control() {
        let h = hm(&[
            ("cache-control", "private, max-age=5"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let p = response_policy(&h, None);
        assert!(p.targeted);
        assert!(!p.directives.private);
        assert_eq!(p.directives.max_age, Some(Duration::from_secs(600)));
        // The control: without it, Cache-Control decides.
        let h = hm(&[("cache-control", "private, max-age=5")]);
        let p = response_policy(&h, None);
        assert!(!p.targeted && p.directives.private);
    }

    #[test]
    fn the_configured_field_wins_over_cdn_cache_control() {
        let h = hm(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=600"),
            ("xlb-cache-control", "no-store"),
        ]);
        let p = response_policy(&h, Some(&own()));
        assert!(p.targeted && p.directives.no_store);
        // Not configured: xlb-cache-control is just another header.
        let p = response_policy(&h, None);
        assert!(!p.directives.no_store);
        assert_eq!(p.directives.max_age, Some(Duration::from_secs(600)));
    }

    #[test]
    fn dictionary_members_mean_their_cache_control_directives() {
        let h = hm(&[(
            "cdn-cache-control",
            "s-maxage=60, stale-while-revalidate=30, must-revalidate, private=\"set-cookie\", no-cache=?0",
        )]);
        let d = response_policy(&h, None).directives;
        assert_eq!(d.s_maxage, Some(Duration::from_secs(60)));
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert!(d.must_revalidate && d.private && !d.no_cache);
        // Several lines are one dictionary.
        let h = hm(&[
            ("cdn-cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ]);
        let d = response_policy(&h, None).directives;
        assert!(d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        // A max-age that is no integer is malformed: stale.
        let h = hm(&[("cdn-cache-control", "max-age=1.5")]);
        assert_eq!(
            response_policy(&h, None).directives.max_age,
            Some(Duration::ZERO)
        );
        let h = hm(&[("cdn-cache-control", "max-age=-3")]);
        assert_eq!(
            response_policy(&h, None).directives.max_age,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn an_empty_or_invalid_targeted_field_is_ignored() {
        for bad in [
            "",
            "  ",
            "max-age=60,",
            "Max-Age=60",
            "max-age=\"60",
            "max-age=60;;",
        ] {
            let mut h = hm(&[("cache-control", "max-age=5")]);
            h.insert("cdn-cache-control", HeaderValue::from_static(bad));
            let p = response_policy(&h, None);
            assert!(!p.targeted, "{bad:?}");
            assert_eq!(
                p.directives.max_age,
                Some(Duration::from_secs(5)),
                "{bad:?}"
            );
        }
        // An invalid own field falls back to CDN-Cache-Control.
        let h = hm(&[
            ("xlb-cache-control", "max-age=="),
            ("cdn-cache-control", "max-age=600"),
        ]);
        let p = response_policy(&h, Some(&own()));
        assert_eq!(p.directives.max_age, Some(Duration::from_secs(600)));
    }
}
