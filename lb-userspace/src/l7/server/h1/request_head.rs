//! A client's HTTP/1.1 request head, read for the own path: parsed once
//! with `httparse`, its fields kept as slices of the read buffer (no copy
//! of a value), and sorted into what the own path serves and what it
//! leaves to hyper.
//!
//! The own path serves the requests a proxy sees most: HTTP/1.1, no body
//! or a `Content-Length` body of at most [`MAX_BODY`] bytes (read whole
//! before the handler runs), no `Transfer-Encoding`, no `Upgrade`, no
//! `Expect`, no `TE`, not `CONNECT`. Everything else, and every head hyper
//! would refuse (a syntax error, too many fields, too large, a target
//! `http::Uri` does not take, a `Content-Length` hyper does not take or
//! two that disagree), is [`Head::Unusual`]: the connection goes to hyper
//! with its bytes unread, so the answer (the request served, or the
//! 400/431) is hyper's, exactly as before the own path existed. The
//! smuggling table's cases all carry `Transfer-Encoding`, a broken or
//! doubled `Content-Length`, or a broken head, so they all stay with
//! hyper.
use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{header::HeaderName, request, HeaderValue, Method, Request, Uri, Version};

use crate::l7::recycled_maps;

/// Most fields the own path parses (their slots are on the stack); a
/// listener whose `max_headers` is higher is served by hyper alone.
pub const MAX_FIELDS: usize = 128;

/// Fields the proxy may add to a request on its way upstream.
const FORWARDING_ROOM: usize = 8;

/// Largest `Content-Length` body the own path reads whole before the
/// handler runs (the request is then forwarded with its length known, as
/// nginx's request buffering does). A larger one is hyper's, streamed as
/// it arrives, so the own path never holds more than this per connection
/// beyond the head. 64 KiB covers the JSON and form bodies of API
/// traffic; a body this size arrives in a few reads. It must arrive with
/// its head, within `header_read_timeout` (HAProxy's `http-buffer-request`
/// waits within `timeout http-request` the same way): a client trickling
/// it is closed before the request starts, where a streamed body would
/// have held an upstream connection for as long.
pub const MAX_BODY: u64 = 64 * 1024;

/// What the buffered bytes hold.
// `Plain` is large, and not boxed: it is made once per request and taken
// apart at once; a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// The head is not complete yet: read more.
    Partial,
    /// The head is complete and plain, its body is not all here yet: read
    /// until the buffer holds this many bytes (head and body). If the
    /// client stops before, the request is hyper's after all.
    Body(usize),
    /// A request the own path serves; its bytes are gone from the buffer.
    Plain(Plain),
    /// A request (or an error) for hyper; nothing was taken from the
    /// buffer.
    Unusual,
}

/// A request head the own path serves.
pub struct Plain {
    /// Method, target, version and fields; the values share the head's
    /// bytes.
    pub parts: request::Parts,
    /// The client asked to close after this response (`Connection: close`).
    pub close: bool,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: Bytes,
}

/// Where a field's name and value sit in the head.
#[derive(Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Where a head's fields sit, kept by the connection between requests.
#[derive(Default)]
pub struct Spans(Vec<Span>);

/// Reads the head at the start of `buf` (`max_fields` ≤ [`MAX_FIELDS`]
/// fields, `max_bytes` in all). A complete plain head is split off the
/// buffer; anything else leaves the buffer as it was.
///
/// `spans` is scratch room the connection keeps between requests (a
/// zeroed array on the stack cost a 4 KiB memset per request).
pub fn parse(buf: &mut BytesMut, max_fields: usize, max_bytes: usize, spans: &mut Spans) -> Head {
    if buf.is_empty() {
        return Head::Partial;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let spans = &mut spans.0;
    spans.clear();
    let mut req = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let len = match req.parse_with_uninit_headers(buf, &mut slots[..max_fields.min(MAX_FIELDS)]) {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Head::Partial,
        _ => return Head::Unusual,
    };
    if req.version != Some(1) {
        return Head::Unusual;
    }
    let method = match req.method.map(str::as_bytes).map(Method::from_bytes) {
        Some(Ok(m)) if m != Method::CONNECT => m,
        _ => return Head::Unusual,
    };
    let Some(path) = req.path else {
        return Head::Unusual;
    };
    let offset = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        (at, at + s.len())
    };
    let target = offset(path.as_bytes());
    let mut close = false;
    let mut length = None;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        match classify(name, field.value) {
            Field::Ordinary => {}
            Field::Close => close = true,
            // A repeated `Content-Length` of the same value is kept once,
            // as hyper does; two values are hyper's (its 400).
            Field::Length(n) => match length {
                Some(seen) if seen == n => continue,
                Some(_) => return Head::Unusual,
                None => length = Some(n),
            },
            Field::Unusual => return Head::Unusual,
        }
        spans.push(Span {
            name: offset(name),
            value: offset(field.value),
        });
    }
    let body_len = match length {
        Some(n) if n > MAX_BODY => return Head::Unusual,
        // At most `MAX_BODY`: fits.
        Some(n) => n as usize,
        None => 0,
    };
    if buf.len() < len + body_len {
        return Head::Body(len + body_len);
    }
    let head: Bytes = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.1)) else {
        unsplit(buf, head);
        return Head::Unusual;
    };
    // Room for the fields the proxy adds (X-Forwarded-*, Via, a request
    // id): growing the map mid-request cost ~1 600 instructions.
    let mut headers = recycled_maps::take(spans.len() + FORWARDING_ROOM);
    for span in spans.iter() {
        // `httparse` takes the tokens `http` does; a refusal here (a name
        // over 64 KiB) is rare enough to put the head back.
        let Ok(name) = HeaderName::from_bytes(&head[span.name.0..span.name.1]) else {
            unsplit(buf, head);
            return Head::Unusual;
        };
        let value = head.slice(span.value.0..span.value.1);
        // SAFETY: httparse let only HTAB, SP, VCHAR and obs-text into the
        // value, all of which `HeaderValue` takes (checked for every byte
        // by `every_value_httparse_takes_is_a_header_value`); checking
        // again cost ~2 instructions per byte of every value.
        headers.append(name, unsafe {
            HeaderValue::from_maybe_shared_unchecked(value)
        });
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    let body = buf.split_to(body_len).freeze();
    Head::Plain(Plain { parts, close, body })
}

/// Puts a head that turned out unusual back in front of the buffer (rare:
/// a target or value `http` refuses after `httparse` took it).
fn unsplit(buf: &mut BytesMut, head: Bytes) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// What one field means for the own path.
enum Field {
    Ordinary,
    /// `Connection` with the `close` option.
    Close,
    /// `Content-Length` with this value.
    Length(u64),
    /// A field that makes the request hyper's.
    Unusual,
}

fn classify(name: &[u8], value: &[u8]) -> Field {
    // Only the names the own path cares about are compared (by length
    // first, so most fields cost one comparison).
    let is = |n: &str| name.len() == n.len() && name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 if is("te") => Field::Unusual,
        6 if is("expect") => Field::Unusual,
        7 if is("upgrade") => Field::Unusual,
        10 if is("connection") => connection(value),
        14 if is("content-length") => match digits(value.trim_ascii()) {
            Some(n) => Field::Length(n),
            None => Field::Unusual,
        },
        17 if is("transfer-encoding") => Field::Unusual,
        _ => Field::Ordinary,
    }
}

/// `Connection`'s options: `close` noted, `upgrade` for hyper. A value
/// with other than visible ASCII has no options (hyper reads it as text).
fn connection(value: &[u8]) -> Field {
    if !is_text(value) {
        return Field::Ordinary;
    }
    let mut close = false;
    for option in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if option.eq_ignore_ascii_case(b"upgrade") {
            return Field::Unusual;
        }
    }
    if close {
        Field::Close
    } else {
        Field::Ordinary
    }
}

/// A `Content-Length` value as hyper reads it: decimal digits only (no
/// sign, no list), not overflowing.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Visible ASCII and tabs only (`HeaderValue::to_str`'s rule).
pub fn is_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> (Plain, BytesMut) {
        let mut buf = BytesMut::from(text);
        match parse(&mut buf, 100, 65536, &mut Spans::default()) {
            Head::Plain(p) => (p, buf),
            _ => panic!("{text:?} is not plain"),
        }
    }

    fn unusual(text: &str) {
        let mut buf = BytesMut::from(text);
        assert!(
            matches!(
                parse(&mut buf, 100, 65536, &mut Spans::default()),
                Head::Unusual
            ),
            "{text:?} should be hyper's"
        );
        assert_eq!(
            &buf[..],
            text.as_bytes(),
            "an unusual head stays in the buffer"
        );
    }

    #[test]
    fn every_value_httparse_takes_is_a_header_value() {
        // The SAFETY of the unchecked values in `parse`: any byte httparse
        // lets into a value, `HeaderValue` takes too.
        let mut taken = 0;
        for b in 0..=255u8 {
            let mut text = b"GET / HTTP/1.1\r\nA: x".to_vec();
            text.extend_from_slice(&[b, b'y']);
            text.extend_from_slice(b"\r\n\r\n");
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut req = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(_)) = req.parse(&text) {
                let value = req.headers[0].value;
                let mut buf = BytesMut::from(&text[..]);
                assert!(HeaderValue::from_bytes(value).is_ok(), "byte {b:#x}");
                taken += 1;
                if let Head::Plain(p) = parse(&mut buf, 100, 65536, &mut Spans::default()) {
                    assert_eq!(p.parts.headers["a"].as_bytes(), value, "byte {b:#x}");
                }
            }
        }
        // HTAB, SP, VCHAR and obs-text: 1 + 1 + 94 + 128.
        assert_eq!(taken, 224);
    }

    #[test]
    fn a_get_is_split_off_with_its_fields_and_the_next_head_stays() {
        let (p, rest) = plain(
            "GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next",
        );
        assert_eq!(p.parts.method, Method::GET);
        assert_eq!(p.parts.uri, "/a?b=1");
        assert_eq!(p.parts.headers["host"], "x.test");
        let two: Vec<_> = p.parts.headers.get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert!(!p.close);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_and_a_zero_length_are_plain() {
        let (p, _) =
            plain("HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        assert!(p.close);
        assert_eq!(p.parts.method, Method::HEAD);
    }

    #[test]
    fn a_length_body_is_split_off_with_its_head_once_it_is_all_here() {
        let text = "POST /p HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 05\r\n\r\nhello";
        let mut buf = BytesMut::from(&text[..text.len() - 2]);
        let want = text.len();
        assert!(matches!(
            parse(&mut buf, 100, 65536, &mut Spans::default()),
            Head::Body(n) if n == want
        ));
        assert_eq!(
            buf.len(),
            text.len() - 2,
            "nothing taken while the body is partial"
        );
        let (p, rest) = plain(&format!("{text}GET /next"));
        assert_eq!(&p.body[..], b"hello");
        let lengths: Vec<_> = p.parts.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["5"], "a repeated equal length is kept once");
        assert_eq!(&rest[..], b"GET /next");
        let (p, _) = plain("GET / HTTP/1.1\r\n\r\n");
        assert!(p.body.is_empty());
    }

    #[test]
    fn bodies_upgrades_old_versions_and_errors_are_hyper_s() {
        unusual("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello");
        unusual("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello");
        unusual("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
        unusual(&format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        ));
        unusual("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nTE: trailers\r\n\r\n");
        unusual("GET / HTTP/1.0\r\n\r\n");
        unusual("CONNECT x.test:443 HTTP/1.1\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
        unusual("GET /\x7f HTTP/1.1\r\n\r\n");
        unusual("GET http://[::1 HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_partial_head_waits_and_a_large_or_crowded_one_is_hyper_s() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: x");
        assert!(matches!(
            parse(&mut buf, 100, 65536, &mut Spans::default()),
            Head::Partial
        ));
        assert!(matches!(
            parse(&mut buf, 100, 20, &mut Spans::default()),
            Head::Unusual
        ));
        let crowded = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(5));
        let mut buf = BytesMut::from(crowded.as_str());
        assert!(matches!(
            parse(&mut buf, 4, 65536, &mut Spans::default()),
            Head::Unusual
        ));
        let mut buf = BytesMut::from(crowded.as_str());
        assert!(matches!(
            parse(&mut buf, 5, 65536, &mut Spans::default()),
            Head::Plain(_)
        ));
    }
}
