//! Reading a response body out of the connection's buffer as its framing
//! says: a length counted down, chunked transfer coding (RFC 9112 §7.1)
//! with its trailer section, or everything until the close. Pure: bytes
//! in, data out, no I/O, so that it is tested (and compared with hyper's
//! decoder in `super::differential`) without sockets.
//!
//! The chunked grammar is read byte by byte as hyper's decoder reads it,
//! so that both accept and refuse the same streams: a size of hex digits
//! (leading zeros allowed, overflow refused), optional spaces or tabs, an
//! extension (skipped, at most 16 KiB per body, no bare LF), CRLF; the
//! data, CRLF; after the last chunk a trailer section of at most 100
//! fields and 16 KiB, parsed by httparse.
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{error::H1Error, framing::Framing, head::MAX_FIELDS};

/// The most bytes of chunk extensions in one body (as hyper).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// The most bytes of a trailer section (as hyper).
const TRAILER_LIMIT: usize = 16 * 1024;

/// One step of decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete, with its trailer fields if it had any.
    End(Option<HeaderMap>),
    /// Nothing more until more bytes arrive.
    NeedMore,
}

/// The decoding state of one response body.
#[derive(Debug)]
pub struct BodyDecoder {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

#[derive(Debug)]
struct Chunked {
    state: State,
    size: u64,
    extensions: u64,
    trailers: Option<Vec<u8>>,
    trailer_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

impl BodyDecoder {
    /// A decoder for a body framed so.
    pub fn new(framing: Framing) -> BodyDecoder {
        let kind = match framing {
            Framing::Empty | Framing::Length(0) => Kind::Done,
            Framing::Length(n) => Kind::Length(n),
            Framing::Close => Kind::Close,
            Framing::Chunked => Kind::Chunked(Chunked {
                state: State::Start,
                size: 0,
                extensions: 0,
                trailers: None,
                trailer_lines: 0,
            }),
        };
        BodyDecoder { kind }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    /// Whether the body ends with the connection (it cannot be reused).
    pub fn is_close_delimited(&self) -> bool {
        matches!(self.kind, Kind::Close)
    }

    /// The body bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            Kind::Length(n) => Some(n),
            Kind::Done => Some(0),
            _ => None,
        }
    }

    /// Takes what it can from `buf`; `eof` says the node has closed the
    /// connection (no more bytes will come).
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, H1Error> {
        match &mut self.kind {
            Kind::Done => Ok(Decoded::End(None)),
            Kind::Length(rem) => {
                if buf.is_empty() {
                    return match eof {
                        true => Err(H1Error::IncompleteBody),
                        false => Ok(Decoded::NeedMore),
                    };
                }
                let n = usize::try_from(*rem).unwrap_or(usize::MAX).min(buf.len());
                *rem -= n as u64;
                let data = buf.split_to(n).freeze();
                if *rem == 0 {
                    self.kind = Kind::Done;
                }
                Ok(Decoded::Data(data))
            }
            Kind::Close => {
                if !buf.is_empty() {
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                match eof {
                    true => {
                        self.kind = Kind::Done;
                        Ok(Decoded::End(None))
                    }
                    false => Ok(Decoded::NeedMore),
                }
            }
            Kind::Chunked(c) => {
                let step = c.step(buf)?;
                match step {
                    Decoded::End(_) => self.kind = Kind::Done,
                    Decoded::NeedMore if eof => return Err(H1Error::IncompleteBody),
                    _ => {}
                }
                Ok(step)
            }
        }
    }
}

impl Chunked {
    fn step(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        let mut i = 0;
        let bad = H1Error::Chunked;
        loop {
            if self.state == State::Data {
                // Bytes consumed so far are framing: drop them, then hand
                // out what there is of the chunk.
                let _ = buf.split_to(i);
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.get(i) else {
                let _ = buf.split_to(i);
                return Ok(Decoded::NeedMore);
            };
            i += 1;
            self.state = match self.state {
                State::Start | State::Size => match hex(b) {
                    Some(d) => {
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .ok_or(bad("chunk size overflows"))?;
                        State::Size
                    }
                    None if self.state == State::Start => {
                        return Err(bad("chunk size line without a digit"))
                    }
                    None => match b {
                        b'\t' | b' ' => State::SizeLws,
                        b';' => State::Extension,
                        b'\r' => State::SizeLf,
                        _ => return Err(bad("invalid byte in the chunk size")),
                    },
                },
                State::SizeLws => match b {
                    b'\t' | b' ' => State::SizeLws,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(bad("invalid byte after the chunk size")),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(bad("bare LF in a chunk extension")),
                    _ => {
                        self.extensions += 1;
                        if self.extensions >= EXTENSIONS_LIMIT {
                            return Err(bad("chunk extensions over 16 KiB"));
                        }
                        State::Extension
                    }
                },
                State::SizeLf => match (b, self.size) {
                    (b'\n', 0) => State::EndCr,
                    (b'\n', _) => State::Data,
                    _ => return Err(bad("chunk size line without LF after CR")),
                },
                State::Data => unreachable!("handled above"),
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(bad("chunk data not followed by CRLF")),
                },
                State::DataLf => match b {
                    b'\n' => State::Start,
                    _ => return Err(bad("chunk data not followed by CRLF")),
                },
                State::EndCr => match b {
                    b'\r' => {
                        self.push_trailer(b)?;
                        State::EndLf
                    }
                    _ => {
                        self.trailers.get_or_insert_with(Vec::new);
                        self.push_trailer(b)?;
                        State::Trailer
                    }
                },
                State::Trailer => {
                    self.push_trailer(b)?;
                    match b {
                        b'\r' => State::TrailerLf,
                        _ => State::Trailer,
                    }
                }
                State::TrailerLf => match b {
                    b'\n' => {
                        if self.trailer_lines >= MAX_FIELDS {
                            return Err(H1Error::Trailers("over 100 trailer fields"));
                        }
                        self.trailer_lines += 1;
                        self.push_trailer(b)?;
                        State::EndCr
                    }
                    _ => return Err(H1Error::Trailers("CR without LF")),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.push_trailer(b)?;
                        let _ = buf.split_to(i);
                        let trailers = match self.trailers.take() {
                            Some(raw) => Some(parse_trailers(&raw, self.trailer_lines)?),
                            None => None,
                        };
                        return Ok(Decoded::End(trailers));
                    }
                    _ => return Err(bad("last chunk not ended by CRLF")),
                },
            };
        }
    }

    /// Keeps a byte of the trailer section (none is kept without one).
    fn push_trailer(&mut self, b: u8) -> Result<(), H1Error> {
        if let Some(t) = &mut self.trailers {
            if t.len() >= TRAILER_LIMIT {
                return Err(H1Error::Trailers("trailer section over 16 KiB"));
            }
            t.push(b);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn parse_trailers(raw: &[u8], lines: usize) -> Result<HeaderMap, H1Error> {
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(raw, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| H1Error::Trailers("invalid field name"))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| H1Error::Trailers("invalid field value"))?;
                map.append(name, value);
            }
            Ok(map)
        }
        Ok(httparse::Status::Partial) => Err(H1Error::Trailers("incomplete")),
        Err(_) => Err(H1Error::Trailers("malformed field")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body, the trailers, and what is left after the body.
    type Run = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Feeds `input` one byte at a time; what it decodes (or the error).
    fn run(framing: Framing, input: &[u8], eof: bool) -> Result<Run, String> {
        let mut d = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            let last = fed == input.len();
            match d.decode(&mut buf, last && eof).map_err(|e| e.to_string())? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End(t) => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&input[fed..]);
                    return Ok((body, t, rest));
                }
                Decoded::NeedMore if last => return Err("stalled".into()),
                Decoded::NeedMore => {
                    buf.extend_from_slice(&input[fed..fed + 1]);
                    fed += 1;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let (body, t, rest) = run(
            Framing::Chunked,
            b"3;a=b\r\nabc\r\n0A \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT",
            false,
        )
        .unwrap();
        assert_eq!(body, b"abc0123456789");
        assert_eq!(t.unwrap()["x-t"], "1");
        assert_eq!(rest, b"NEXT");
        let (body, t, _) = run(Framing::Chunked, b"000\r\n\r\n", false).unwrap();
        assert!(body.is_empty() && t.is_none());
    }

    #[test]
    fn broken_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"3;a\nb\r\nabc\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"-1\r\n",
            b"3 4\r\nabc\r\n",
            b"0\r\nX-T: 1\r\nbad line\r\n\r\n",
            b"0\r\n\rx",
        ] {
            assert!(
                run(Framing::Chunked, bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            run(Framing::Chunked, b"3\r\nab", true).unwrap_err(),
            H1Error::IncompleteBody.to_string()
        );
    }

    #[test]
    fn lengths_count_down_and_close_delimited_bodies_end_at_eof() {
        let (body, _, rest) = run(Framing::Length(3), b"abcNEXT", false).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"abc"[..], &b"NEXT"[..])
        );
        assert!(run(Framing::Length(5), b"abc", true).is_err());
        let (body, _, _) = run(Framing::Close, b"all of it", true).unwrap();
        assert_eq!(body, b"all of it");
        let (body, _, rest) = run(Framing::Empty, b"NEXT", false).unwrap();
        assert!(body.is_empty());
        assert_eq!(rest, b"NEXT");
    }
}
