//! The own path's response head and how its body is framed (RFC 9112
//! §6), as hyper frames a server's response: the handler's
//! `Content-Length` or `Transfer-Encoding` kept, else a length from an
//! exactly known body size, else chunked; none for HEAD, 1xx, 204, 304;
//! `Date` added when absent; `Connection: close` added when the
//! connection closes after this response.
use http::{header, response, Method, StatusCode};
use hyper::body::SizeHint;

use super::{date, request_head::is_text};

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304): whatever the body yields is dropped.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (a `Transfer-Encoding` without chunked
    /// last).
    UntilClose,
}

/// What the request asked that shapes the response head.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub method: &'a Method,
    /// The connection closes after this response (the client's `close`, or
    /// the server is closing).
    pub close: bool,
}

/// Writes the head into `out`; answers the framing and whether the
/// connection must close after the body.
pub fn encode(
    head: &response::Parts,
    body_ended: bool,
    hint: &SizeHint,
    asked: Asked<'_>,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = head.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = *asked.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // 1xx and 204 carry no framing fields at all (RFC 9110 §8.6, RFC 9112
    // §6.1); a HEAD or 304 answer keeps the ones the full answer would have.
    let framing_allowed = !(status.is_informational() || status == StatusCode::NO_CONTENT);
    let mut length: Option<u64> = None;
    let mut coded: Option<bool> = None; // Some(chunked last)
    let mut has_date = false;
    let mut close = asked.close;
    let mut said_close = false;
    for (name, value) in &head.headers {
        if *name == header::CONTENT_LENGTH {
            if !framing_allowed {
                continue;
            }
            // A length that does not parse is left out; the body's own
            // size then frames the response.
            match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
                Some(n) if length.is_none() => length = Some(n),
                _ => continue,
            }
        } else if *name == header::TRANSFER_ENCODING {
            if !framing_allowed {
                continue;
            }
            let last = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or(b"");
            coded = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if *name == header::DATE {
            has_date = true;
        } else if *name == header::CONNECTION {
            // Read as text, as hyper does: other bytes mean no options.
            if is_text(value.as_bytes())
                && value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .any(|o| o.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                close = true;
                said_close = true;
            }
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // As hyper: a close it announces goes after the handler's fields,
    // then the framing field it adds, then `Date`.
    if close && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let framing = if !framing_allowed {
        Framing::None
    } else if let Some(chunked) = coded {
        // With a transfer coding, a Content-Length is ignored (RFC 9112
        // §6.3); the handler's responses never carry both.
        match (bodiless, chunked) {
            (true, _) => Framing::None,
            (false, true) => Framing::Chunked,
            (false, false) => {
                close = true;
                Framing::UntilClose
            }
        }
    } else if let Some(n) = length {
        if bodiless {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else {
        // A HEAD or 304 answer announces the length the full answer
        // would have, when the body's size says it (an empty body says
        // nothing there, as with hyper).
        let n = match (body_ended, bodiless) {
            (true, true) => None,
            (true, false) => Some(0),
            (false, _) => hint.exact(),
        };
        match n {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
                if bodiless {
                    Framing::None
                } else {
                    Framing::Length(n)
                }
            }
            None if bodiless => Framing::None,
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        }
    };
    if !has_date {
        date::append(out);
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn head(status: u16, fields: &[(&str, &str)]) -> response::Parts {
        let mut b = Response::builder().status(status);
        for (n, v) in fields {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn run(
        h: &response::Parts,
        ended: bool,
        hint: SizeHint,
        method: Method,
        close: bool,
    ) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let asked = Asked {
            method: &method,
            close,
        };
        let (f, c) = encode(h, ended, &hint, asked, &mut out);
        (String::from_utf8(out).unwrap(), f, c)
    }

    #[test]
    fn a_known_size_is_a_length_an_unknown_one_chunked() {
        let (text, f, close) = run(
            &head(200, &[("x-a", "1")]),
            false,
            SizeHint::with_exact(5),
            Method::GET,
            false,
        );
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("GMT\r\n\r\n"), "{text}");
        assert_eq!((f, close), (Framing::Length(5), false));
        let (text, f, _) = run(&head(200, &[]), false, SizeHint::new(), Method::GET, false);
        assert!(text.contains("transfer-encoding: chunked\r\n"));
        assert_eq!(f, Framing::Chunked);
        let (text, f, _) = run(&head(200, &[]), true, SizeHint::new(), Method::GET, false);
        assert!(text.contains("content-length: 0\r\n"));
        assert_eq!(f, Framing::Length(0));
    }

    #[test]
    fn the_handler_s_framing_and_date_are_kept() {
        let h = head(
            502,
            &[
                ("content-length", "3"),
                ("date", "Mon, 07 Dec 2026 00:00:00 GMT"),
            ],
        );
        let (text, f, _) = run(&h, false, SizeHint::with_exact(9), Method::GET, false);
        assert_eq!(f, Framing::Length(3));
        assert_eq!(text.matches("date:").count(), 1);
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        let h = head(200, &[("transfer-encoding", "gzip, chunked")]);
        assert_eq!(
            run(&h, false, SizeHint::new(), Method::GET, false).1,
            Framing::Chunked
        );
        let h = head(200, &[("transfer-encoding", "gzip")]);
        let (_, f, close) = run(&h, false, SizeHint::new(), Method::GET, false);
        assert_eq!((f, close), (Framing::UntilClose, true));
    }

    #[test]
    fn head_204_and_304_have_no_body_and_204_no_framing_fields() {
        let h = head(200, &[("content-length", "10")]);
        let (text, f, _) = run(&h, false, SizeHint::with_exact(10), Method::HEAD, false);
        assert_eq!(f, Framing::None);
        assert!(text.contains("content-length: 10\r\n"));
        let h = head(204, &[("content-length", "0")]);
        let (text, f, _) = run(&h, true, SizeHint::with_exact(0), Method::GET, false);
        assert_eq!(f, Framing::None);
        assert!(!text.contains("content-length"), "{text}");
        let (_, f, _) = run(
            &head(304, &[]),
            true,
            SizeHint::with_exact(0),
            Method::GET,
            false,
        );
        assert_eq!(f, Framing::None);
    }

    #[test]
    fn a_close_is_announced_once() {
        let (text, _, close) = run(&head(200, &[]), true, SizeHint::new(), Method::GET, true);
        assert!(close);
        assert!(text.contains("connection: close\r\n"));
        let h = head(200, &[("connection", "close")]);
        let (text, _, close) = run(&h, true, SizeHint::new(), Method::GET, false);
        assert!(close);
        assert_eq!(text.matches("close").count(), 1);
    }
}
