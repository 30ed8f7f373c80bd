//! Parsing a response head (RFC 9112 §4) with `httparse` out of the
//! connection's read buffer. The head's bytes are split off the buffer and
//! frozen once, and every field value is a slice of them (no copy per
//! field).
//!
//! Limits are hyper's client defaults, so that the two clients refuse the
//! same heads (the differential test in `super::differential` checks it):
//! 100 fields and a head of at most 8 KiB + 100 × 4 KiB. httparse's default
//! configuration refuses obs-fold, spaces before the colon and bare CRs.
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::error::H1Error;
use crate::l7::{
    headers::{connection_options, ConnectionOptions, KEEP_ALIVE},
    recycled_maps,
};

/// The most fields a head may have (hyper's `DEFAULT_MAX_HEADERS`).
pub const MAX_FIELDS: usize = 100;

/// The most bytes a head may take (hyper's `DEFAULT_MAX_BUFFER_SIZE`).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Where a field's name and value are in the head: name start, name end,
/// value start, value end.
type Span = (usize, usize, usize, usize);

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Connection-level fields seen while parsing.
    pub present: Present,
}

/// Which connection-level fields a head has, noted while its fields are
/// parsed (a compare of each name) so that the keep-alive decision needs
/// no hashed lookup for absent ones (~150 instructions per lookup, and
/// `Keep-Alive` is in almost no response).
///
/// A `Connection` field whose options are only `keep-alive` and `close`
/// (every response of an nginx node carries one) is read here and not
/// kept in the map: it concerns this connection alone, the proxy strips it
/// before the response goes on (RFC 9110 §7.6.1), and putting it in only to
/// take it out again cost ~400 instructions per response. Its options are
/// in [`Present::options`]; any other `Connection` field (`upgrade`, or
/// naming fields to remove) stays in the map for the strip and the upgrade
/// check, and sets [`Present::connection`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Present {
    /// A `Connection` field is in the map.
    pub connection: bool,
    pub keep_alive: bool,
    /// The options of the `Connection` fields read and left out.
    pub options: ConnectionOptions,
}

/// Parses one head at the start of `buf`: `Ok(None)` when more bytes are
/// needed; on success the head's bytes are removed from `buf`.
pub fn parse(buf: &mut BytesMut) -> Result<Option<ResponseHead>, H1Error> {
    // Left uninitialised: zeroing 100 fields (3.2 KiB) and as many spans
    // for every head was 7 % of a proxied request's instructions
    // (callgrind, docs/bench/l7.md); httparse writes the fields it
    // parses and only those are read.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    // Offsets rather than borrowed slices, so that the head can be split
    // off `buf` and shared by the values; on the stack like the fields.
    let mut spans = [const { std::mem::MaybeUninit::<Span>::uninit() }; MAX_FIELDS];
    let (len, code, version, count) = match parsed {
        Ok(httparse::Status::Complete(len)) => {
            let base = buf.as_ptr() as usize;
            for (slot, h) in spans.iter_mut().zip(resp.headers.iter()) {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                slot.write((name, name + h.name.len(), value, value + h.value.len()));
            }
            let version = match resp.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            (len, resp.code.unwrap_or(0), version, resp.headers.len())
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(H1Error::HeadTooLarge(MAX_HEAD_BYTES));
            }
            return Ok(None);
        }
        Err(e) => return Err(H1Error::Head(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(H1Error::HeadTooLarge(MAX_HEAD_BYTES));
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head(httparse::Error::Status))?;
    let head: Bytes = buf.split_to(len).freeze();
    // Room for what the proxy adds to a response (`Via`, a sticky cookie,
    // a route's edits) without growing the map, which copies it.
    let mut headers = recycled_maps::take(count + 4);
    let mut present = Present::default();
    for span in &spans[..count] {
        // SAFETY: the first `count` spans were written above (`count` is
        // the number of fields httparse parsed, at most `MAX_FIELDS`).
        let (ns, ne, vs, ve) = unsafe { span.assume_init() };
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| H1Error::Head(httparse::Error::HeaderName))?;
        if name == header::CONNECTION {
            if let Some(options) = connection_options(&head[vs..ve]) {
                present.options.close |= options.close;
                present.options.keep_alive |= options.keep_alive;
                continue;
            }
            present.connection = true;
        }
        present.keep_alive |= name == KEEP_ALIVE;
        // SAFETY: httparse let only HTAB, SP, VCHAR and obs-text into the
        // value, all of which `HeaderValue` takes (checked for every byte
        // by `every_value_httparse_takes_is_a_header_value`); checking
        // again cost ~2 instructions per byte of every value.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs..ve)) };
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        present,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Option<ResponseHead>, H1Error> {
        parse(&mut BytesMut::from(s.as_bytes()))
    }

    #[test]
    fn a_head_is_split_off_and_its_fields_kept_in_order() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nb: 2\r\na: 3\r\n\r\nbody"[..]);
        let head = parse(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.version, Version::HTTP_11);
        let a: Vec<_> = head.headers.get_all("a").iter().collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn a_plain_connection_field_is_read_and_left_out() {
        let head = parse_str("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nA: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.headers.contains_key(header::CONNECTION));
        assert!(!head.present.connection);
        assert!(head.present.options.close && head.present.options.keep_alive);
        // Options that name a field, or ask for an upgrade, stay for the
        // hop-by-hop strip and the upgrade check.
        for value in ["keep-alive, x-secret", "upgrade"] {
            let text = format!("HTTP/1.1 101 Switching\r\nConnection: {value}\r\n\r\n");
            let head = parse_str(&text).unwrap().unwrap();
            assert_eq!(head.headers[header::CONNECTION], value);
            assert!(head.present.connection);
            assert!(!head.present.options.close);
        }
    }

    #[test]
    fn every_value_httparse_takes_is_a_header_value() {
        // The SAFETY of the unchecked values in `parse`.
        let mut taken = 0;
        for b in 0..=255u8 {
            let mut text = b"HTTP/1.1 200 OK\r\nA: x".to_vec();
            text.extend_from_slice(&[b, b'y']);
            text.extend_from_slice(b"\r\n\r\n");
            if let Ok(Some(head)) = parse(&mut BytesMut::from(&text[..])) {
                let value = head.headers["a"].as_bytes();
                assert_eq!(value, &text[20..23], "byte {b:#x}");
                assert!(HeaderValue::from_bytes(value).is_ok(), "byte {b:#x}");
                taken += 1;
            }
        }
        // HTAB, SP, VCHAR and obs-text: 1 + 1 + 94 + 128.
        assert_eq!(taken, 224);
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_are_refused() {
        assert!(parse_str("HTTP/1.1 200 OK\r\nA: 1\r\n").unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA : 1\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA\r\n\r\n",
        ] {
            assert!(parse_str(bad).is_err(), "{bad:?}");
        }
        let many: String = (0..=MAX_FIELDS).map(|i| format!("f{i}: x\r\n")).collect();
        assert!(parse_str(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
        let long = format!("HTTP/1.1 200 OK\r\nA: {}\r\n", "x".repeat(MAX_HEAD_BYTES));
        assert!(matches!(parse_str(&long), Err(H1Error::HeadTooLarge(_))));
    }
}
