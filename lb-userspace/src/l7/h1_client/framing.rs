//! How a response's body is delimited (RFC 9112 §6.3), decided from its
//! head and the request's method. The order of the rules, and what is
//! refused, follow RFC 9112 and agree with hyper's client:
//!
//! 1. `1xx` but `101`: an interim response, no body; the final one follows.
//! 2. `101`, `204`, `304`, and any answer to `HEAD`: no body.
//! 3. `Transfer-Encoding` in an HTTP/1.0 response: refused (§6.1: a
//!    message downgraded on the way cannot be framed safely).
//! 4. `Transfer-Encoding` ending in `chunked`: chunked, whatever
//!    `Content-Length` says (§6.3 item 3; the length is ignored);
//!    `Transfer-Encoding` not ending in `chunked`: the body runs to the
//!    close (§6.3 item 4, responses).
//! 5. `Content-Length`: one decimal number, or a list of equal ones
//!    (§6.3 item 5); anything else (signs, spaces inside, two different
//!    values, overflow) is refused, not guessed.
//! 6. Otherwise the body runs to the close.
use http::{header, HeaderMap, Method, StatusCode, Version};

use super::error::H1Error;

/// The body's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (with an optional trailer section).
    Chunked,
    /// Everything until the node closes the connection.
    Close,
}

/// What a response head means for reading on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// An interim `1xx`: skip it, a final response follows.
    Interim,
    /// The final response, with its body framed so.
    Final(Framing),
}

/// Decides the framing of a response with `status`, `version` and
/// `headers` to a request with `method`.
pub fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Disposition, H1Error> {
    match status.as_u16() {
        101 => return Ok(Disposition::Final(Framing::Empty)),
        100..=199 => return Ok(Disposition::Interim),
        204 | 304 => return Ok(Disposition::Final(Framing::Empty)),
        _ => {}
    }
    if method == Method::HEAD {
        return Ok(Disposition::Final(Framing::Empty));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(H1Error::TransferEncodingInHttp10);
        }
        return Ok(Disposition::Final(match last_coding_is_chunked(headers) {
            true => Framing::Chunked,
            false => Framing::Close,
        }));
    }
    // One hashed lookup for both "is there one" and "what does it say".
    let lengths = headers.get_all(header::CONTENT_LENGTH);
    if lengths.iter().next().is_some() {
        return agreed_length(lengths)
            .map(|n| Disposition::Final(Framing::Length(n)))
            .ok_or(H1Error::BadContentLength);
    }
    Ok(Disposition::Final(Framing::Close))
}

/// Whether the last transfer coding (of the last field line) is `chunked`.
pub fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// The one length every `Content-Length` line and list element agrees on.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    agreed_length(headers.get_all(header::CONTENT_LENGTH))
}

/// [`content_length`] of the `Content-Length` lines `lines`.
fn agreed_length(lines: http::header::GetAll<'_, http::HeaderValue>) -> Option<u64> {
    let mut found: Option<u64> = None;
    for line in lines {
        for item in line.to_str().ok()?.split(',') {
            let n = decimal(item.trim().as_bytes())?;
            match found {
                Some(m) if m != n => return None,
                _ => found = Some(n),
            }
        }
    }
    // A length that cannot be counted down to (hyper reserves the top two
    // values of u64 as markers) is refused as well.
    found.filter(|&n| n < u64::MAX - 1)
}

/// `1*DIGIT` as a u64 (no sign, no spaces, no overflow).
fn decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(status: u16, version: Version, fields: &[(&str, &str)], method: Method) -> String {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match framing(StatusCode::from_u16(status).unwrap(), version, &h, &method) {
            Ok(d) => format!("{d:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn the_rules_apply_in_rfc_9112_order() {
        const V10: Version = Version::HTTP_10;
        const V11: Version = Version::HTTP_11;
        let te = ("transfer-encoding", "chunked");
        let cl = |v: &'static str| ("content-length", v);
        // (status, version, fields, request method, expected framing)
        type Case<'a> = (u16, Version, &'a [(&'a str, &'a str)], Method, &'a str);
        let cases: &[Case] = &[
            (100, V11, &[cl("5")], Method::GET, "Interim"),
            (103, V11, &[], Method::GET, "Interim"),
            (101, V11, &[cl("5")], Method::GET, "Final(Empty)"),
            (204, V11, &[cl("5")], Method::GET, "Final(Empty)"),
            (304, V11, &[te], Method::GET, "Final(Empty)"),
            (200, V11, &[cl("5")], Method::HEAD, "Final(Empty)"),
            (200, V11, &[te, cl("5")], Method::GET, "Final(Chunked)"),
            (
                200,
                V11,
                &[("transfer-encoding", "chunked, gzip")],
                Method::GET,
                "Final(Close)",
            ),
            (
                200,
                V11,
                &[("transfer-encoding", "gzip, Chunked")],
                Method::GET,
                "Final(Chunked)",
            ),
            (200, V10, &[te], Method::GET, "error"),
            (200, V11, &[cl("5")], Method::GET, "Final(Length(5))"),
            (
                200,
                V11,
                &[cl("5, 5"), cl("5")],
                Method::GET,
                "Final(Length(5))",
            ),
            (200, V11, &[cl("5"), cl("6")], Method::GET, "error"),
            (200, V11, &[cl("+5")], Method::GET, "error"),
            (200, V11, &[cl("5 5")], Method::GET, "error"),
            (200, V11, &[cl("")], Method::GET, "error"),
            (
                200,
                V11,
                &[cl("99999999999999999999")],
                Method::GET,
                "error",
            ),
            (200, V11, &[], Method::GET, "Final(Close)"),
            (200, V10, &[], Method::POST, "Final(Close)"),
        ];
        for (status, version, fields, method, want) in cases {
            let got = decide(*status, *version, fields, method.clone());
            assert!(got.starts_with(want), "{status} {fields:?} {method}: {got}");
        }
    }
}
