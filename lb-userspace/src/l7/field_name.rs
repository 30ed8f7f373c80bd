//! A field name read off the wire, for the two HTTP/1.1 parsers of xlb's
//! own (the client's request head, a node's response head).
//!
//! `HeaderName::from_bytes` copies every name through a lower-casing table
//! into a buffer and then matches it against ~90 standard names: about
//! 100 instructions a name, ten names a request in profiles. The names
//! real traffic carries are few; they are compared here directly, by
//! length first and then case-insensitively, and everything else goes to
//! `from_bytes` as before.
use http::header::{self, HeaderName, InvalidHeaderName};

use super::headers::KEEP_ALIVE;

/// The common names, by length (statics: a `HeaderName` holds `Bytes`,
/// which a constant cannot lend out).
static FOUR: [HeaderName; 4] = [header::HOST, header::DATE, header::ETAG, header::VARY];
static SIX: [HeaderName; 4] = [
    header::ACCEPT,
    header::SERVER,
    header::COOKIE,
    header::ORIGIN,
];
static SEVEN: [HeaderName; 3] = [header::EXPIRES, header::REFERER, header::UPGRADE];
static TEN: [HeaderName; 4] = [
    header::USER_AGENT,
    header::CONNECTION,
    KEEP_ALIVE,
    header::SET_COOKIE,
];
static TWELVE: [HeaderName; 1] = [header::CONTENT_TYPE];
static THIRTEEN: [HeaderName; 5] = [
    header::CACHE_CONTROL,
    header::LAST_MODIFIED,
    header::ACCEPT_RANGES,
    header::AUTHORIZATION,
    header::IF_NONE_MATCH,
];
static FOURTEEN: [HeaderName; 1] = [header::CONTENT_LENGTH];
static FIFTEEN: [HeaderName; 2] = [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE];
static SIXTEEN: [HeaderName; 1] = [header::CONTENT_ENCODING];
static SEVENTEEN: [HeaderName; 2] = [header::TRANSFER_ENCODING, header::IF_MODIFIED_SINCE];

fn common(len: usize) -> &'static [HeaderName] {
    match len {
        4 => &FOUR,
        6 => &SIX,
        7 => &SEVEN,
        10 => &TEN,
        12 => &TWELVE,
        13 => &THIRTEEN,
        14 => &FOURTEEN,
        15 => &FIFTEEN,
        16 => &SIXTEEN,
        17 => &SEVENTEEN,
        _ => &[],
    }
}

/// The name `raw` spells (any case), as `HeaderName::from_bytes` would
/// answer.
pub fn parse(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    for name in common(raw.len()) {
        if raw.eq_ignore_ascii_case(name.as_str().as_bytes()) {
            return Ok(name.clone());
        }
    }
    HeaderName::from_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_what_from_bytes_makes_of_it() {
        let names = [
            "Host",
            "HOST",
            "date",
            "ETag",
            "vary",
            "Accept",
            "server",
            "Cookie",
            "origin",
            "Expires",
            "referer",
            "Upgrade",
            "User-Agent",
            "connection",
            "Keep-Alive",
            "set-cookie",
            "Content-Type",
            "cache-control",
            "Last-Modified",
            "accept-ranges",
            "Authorization",
            "If-None-Match",
            "Content-Length",
            "Accept-Encoding",
            "accept-language",
            "Content-Encoding",
            "Transfer-Encoding",
            "If-Modified-Since",
            "X-Custom",
            "hosts",
            "hozt",
            "x-request-id",
            "a",
        ];
        for n in names {
            let ours = parse(n.as_bytes()).unwrap();
            let theirs = HeaderName::from_bytes(n.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{n}");
            assert_eq!(ours.as_str(), n.to_ascii_lowercase());
        }
        for bad in ["", "a b", "a:b", "caf\u{e9}"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
