//! One request and its response on an HTTP/1.1 connection, driven in the
//! caller's task: no connection task, no channel. The request (head, then
//! body) is written while the response is read, as hyper's dispatcher
//! does, so a node may answer before it has read the whole body (a 413, a
//! streaming echo) and a node that never reads it cannot wedge the
//! exchange; writing goes on while the response body is read.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Version};
use hyper::body::{Body as _, Frame};
use tokio::io::AsyncWrite;

use super::{
    super::body::UpBody,
    decoder::{BodyDecoder, Decoded},
    error::H1Error,
    framing::{self, Disposition, Framing},
    head::{self, ResponseHead},
    pool_key::Checkin,
    stream::Stream,
};
use crate::l7::{
    upstream_head::UpstreamHead,
    upstream_keepalive::{announced_timeout, reuse_limit},
};

/// Read-buffer growth step.
const READ_CHUNK: usize = 8 * 1024;

/// An HTTP/1.1 connection to a node with its buffers, which live as long
/// as the connection (reused by every exchange on it).
pub struct Conn {
    pub(super) stream: Stream,
    pub(super) buf: BytesMut,
    out: Vec<u8>,
}

impl Conn {
    /// A fresh connection over `stream`.
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
        }
    }
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// Head or body bytes still to go.
    Open,
    /// Everything written and flushed.
    Done,
    /// The write side failed; the error is kept for when the read side
    /// has nothing better to say.
    Failed,
}

/// A request on its way and its response being read.
pub struct Exchange {
    conn: Conn,
    /// Bytes of `conn.out` already written.
    pos: usize,
    body: Option<UpBody>,
    encoding: Encoding,
    /// Declared trailer fields (`Trailer`), the only ones sent.
    trailer_names: Vec<header::HeaderName>,
    trailers: Option<HeaderMap>,
    writing: Writing,
    write_error: Option<io::Error>,
    /// Any byte of the request reached the socket.
    pub(super) wrote_any: bool,
    /// The node closed its side.
    eof: bool,
    head_request: bool,
    /// The request said `Connection: close`.
    close_requested: bool,
    decoder: BodyDecoder,
    keep_alive: bool,
    keep: Option<std::time::Duration>,
    checkin: Option<Checkin>,
    /// The body was asked for once before the head was written.
    primed: bool,
    /// A frame was taken from the body (it cannot be given back).
    body_polled: bool,
    /// The task has yielded once before the first write.
    yielded: bool,
}

/// Why an exchange did not produce a response head; the body comes back
/// when not one byte of the request was written (the head was only
/// borrowed).
pub struct Failed {
    pub error: H1Error,
    pub body: Option<UpBody>,
}

impl Exchange {
    /// Encodes the request head into the connection's write buffer, with
    /// the body framing RFC 9112 §6 asks (as hyper's client frames it):
    /// no body → nothing (and no `Transfer-Encoding`); `Transfer-Encoding`
    /// → chunked, ending in `chunked`, without `Content-Length`; else the
    /// given `Content-Length`; else a known size as `Content-Length`; else
    /// chunked, except for GET/HEAD/CONNECT, which get no body.
    ///
    /// The head is borrowed and left as it is (another attempt may send it
    /// again): the framing's edits are made while it is encoded. `node`
    /// is the `Host` of a head without one (as hyper's client does).
    pub fn start(
        mut conn: Conn,
        head: UpstreamHead<'_>,
        body: &UpBody,
        node: std::net::SocketAddr,
        checkin: Option<Checkin>,
    ) -> (Exchange, bool) {
        let parts = head.parts;
        let headers = &parts.headers;
        let mut has_body = !body.is_end_stream();
        let mut edits = FramingEdits::default();
        // A bodiless request's `Transfer-Encoding` is left out while the
        // head is encoded (no lookup for the usual request).
        let encoding = if !has_body {
            edits.drop_transfer_encoding = true;
            Encoding::Length(0)
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            edits.drop_content_length = true;
            if !framing::last_coding_is_chunked(headers) {
                edits.add = Some((
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                ));
            }
            Encoding::Chunked
        } else if let Some(n) = framing::content_length(headers) {
            Encoding::Length(n)
        } else if let Some(n) = body.size_hint().exact() {
            // Replaces any unusable `Content-Length`.
            edits.drop_content_length = true;
            edits.add = Some((header::CONTENT_LENGTH, HeaderValue::from(n)));
            Encoding::Length(n)
        } else if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
            has_body = false;
            Encoding::Length(0)
        } else {
            edits.add = Some((
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            ));
            Encoding::Chunked
        };
        let trailer_names = match encoding {
            Encoding::Chunked => headers
                .get_all(header::TRAILER)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .filter_map(|s| header::HeaderName::from_bytes(s.trim().as_bytes()).ok())
                .collect(),
            Encoding::Length(_) => Vec::new(),
        };
        let close_requested = encode_head(&mut conn.out, head, &edits, node);
        let exchange = Exchange {
            conn,
            pos: 0,
            body: None,
            encoding,
            trailer_names,
            trailers: None,
            writing: Writing::Open,
            write_error: None,
            wrote_any: false,
            eof: false,
            head_request: parts.method == Method::HEAD,
            close_requested,
            decoder: BodyDecoder::new(Framing::Empty),
            keep_alive: false,
            keep: None,
            checkin,
            primed: false,
            body_polled: false,
            yielded: false,
        };
        (exchange, has_body)
    }

    /// Hands the body over (after `start`, once the request may no longer
    /// be given back).
    pub fn attach_body(&mut self, body: UpBody) {
        self.body = Some(body);
    }

    /// The request body, if it was never polled (the request can be sent
    /// again elsewhere).
    pub fn take_body(&mut self) -> Option<UpBody> {
        match self.wrote_any || self.body_polled {
            false => self.body.take(),
            true => None,
        }
    }

    /// Writes what can be written; `Ok(true)` when something moved. A
    /// write error is kept (the node may still have answered); a failing
    /// request body is returned.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> Result<bool, H1Error> {
        let mut moved = false;
        if !self.primed {
            // The body is asked once before the head goes out, as hyper
            // does: a first chunk that is already there leaves with the
            // head (one write), and a client body that is broken from the
            // start (a bad chunk size behind the head) fails the request
            // before the node has seen any of it.
            self.primed = true;
            if let Some(body) = self.body.as_mut() {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Some(Err(e))) => {
                        self.body_polled = true;
                        return Err(H1Error::RequestBody(e));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        self.body_polled = true;
                        self.encode_frame(frame)?;
                    }
                    Poll::Ready(None) => {
                        self.body_polled = true;
                        self.body = None;
                        self.encode_end()?;
                    }
                }
            }
        }
        if !self.yielded && self.pos == 0 && !self.conn.out.is_empty() {
            // One turn of the scheduler before the request's first write:
            // the other requests that came in with the same readiness
            // event get parsed and routed meanwhile, and then the writes
            // to the node go out back to back. Written one by one between
            // the other work, each woke the node's process on its own: in
            // `cargo xtask bench l7` (nginx node on the other CPU) xlb's
            // kernel time per request rose from 10.5 µs (hyper's client)
            // to 14.1, with the same system calls and TCP segments per
            // request, and `perf` put the difference in waking another
            // CPU's process; with this yield it is 9.9 (docs/bench/l7.md).
            // hyper's client batched the same way by accident: its
            // connection tasks ran after the request tasks.
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Ok(moved);
        }
        while self.writing == Writing::Open {
            if self.pos < self.conn.out.len() {
                match Pin::new(&mut self.conn.stream).poll_write(cx, &self.conn.out[self.pos..]) {
                    Poll::Ready(Ok(0)) => {
                        self.fail_write(io::ErrorKind::WriteZero.into());
                    }
                    Poll::Ready(Ok(n)) => {
                        self.pos += n;
                        self.wrote_any = true;
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => self.fail_write(e),
                    Poll::Pending => return Ok(moved),
                }
                continue;
            }
            self.conn.out.clear();
            self.pos = 0;
            let Some(body) = self.body.as_mut() else {
                match Pin::new(&mut self.conn.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        self.writing = Writing::Done;
                        moved = true;
                    }
                    Poll::Ready(Err(e)) => self.fail_write(e),
                    Poll::Pending => return Ok(moved),
                }
                continue;
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(moved),
                Poll::Ready(Some(Err(e))) => return Err(H1Error::RequestBody(e)),
                Poll::Ready(Some(Ok(frame))) => {
                    moved = true;
                    self.encode_frame(frame)?;
                }
                Poll::Ready(None) => {
                    moved = true;
                    self.body = None;
                    self.encode_end()?;
                }
            }
        }
        Ok(moved)
    }

    fn fail_write(&mut self, e: io::Error) {
        self.writing = Writing::Failed;
        self.write_error = Some(e);
        self.body = None;
    }

    fn encode_frame(&mut self, frame: Frame<Bytes>) -> Result<(), H1Error> {
        let frame = match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                match &mut self.encoding {
                    Encoding::Length(rem) => {
                        if data.len() as u64 > *rem {
                            return Err(H1Error::RequestBodyTooLong);
                        }
                        *rem -= data.len() as u64;
                        self.conn.out.extend_from_slice(&data);
                    }
                    Encoding::Chunked => {
                        let out = &mut self.conn.out;
                        out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                return Ok(());
            }
            Err(frame) => frame,
        };
        if let Ok(t) = frame.into_trailers() {
            self.trailers = Some(t);
        }
        Ok(())
    }

    fn encode_end(&mut self) -> Result<(), H1Error> {
        match self.encoding {
            Encoding::Length(0) => Ok(()),
            Encoding::Length(_) => Err(H1Error::RequestBody(
                "request body shorter than its Content-Length".into(),
            )),
            Encoding::Chunked => {
                let out = &mut self.conn.out;
                out.extend_from_slice(b"0\r\n");
                if let Some(t) = self.trailers.take() {
                    for name in &self.trailer_names {
                        for v in t.get_all(name) {
                            out.extend_from_slice(name.as_str().as_bytes());
                            out.extend_from_slice(b": ");
                            out.extend_from_slice(v.as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                }
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
        }
    }

    /// Reads into the buffer; `Ready(Ok(()))` when bytes came or the node
    /// closed (`eof` set).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        if self.conn.buf.capacity() - self.conn.buf.len() < 1024 {
            self.conn.buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.conn.stream), cx, &mut self.conn.buf)
        {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(H1Error::Io(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Drives the exchange to the final response head (interim `1xx`
    /// heads are read and dropped). Returns its head and body framing.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<ResponseHead, H1Error>> {
        loop {
            let wrote = self.poll_write_side(cx)?;
            if !self.conn.buf.is_empty() {
                if let Some(head) = head::parse(&mut self.conn.buf)? {
                    let method = if self.head_request {
                        Method::HEAD
                    } else {
                        Method::GET
                    };
                    match framing::framing(head.status, head.version, &head.headers, &method)? {
                        Disposition::Interim => continue,
                        Disposition::Final(f) => {
                            self.decoder = BodyDecoder::new(f);
                            self.keep_alive = keep_alive(&head) && !self.close_requested;
                            self.keep = match head.present.keep_alive {
                                true => announced_timeout(&head.headers).map(reuse_limit),
                                false => None,
                            };
                            if self.keep.is_some_and(|k| k.is_zero()) {
                                self.keep_alive = false;
                            }
                            return Poll::Ready(Ok(head));
                        }
                    }
                }
            }
            if self.eof {
                return Poll::Ready(Err(match self.write_error.take() {
                    Some(e) if !self.wrote_any => H1Error::Io(e),
                    _ => H1Error::closed(),
                }));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if wrote => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next piece of the response body: data, then the trailers if
    /// any, then `None`. The connection goes back to the pool when the
    /// body is complete and the connection may carry another request.
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            if self.decoder.is_done() {
                return Poll::Ready(None);
            }
            let wrote = match self.poll_write_side(cx) {
                Ok(w) => w,
                // The node has answered; a client body that breaks now
                // only means the connection is not reused.
                Err(_) => {
                    self.keep_alive = false;
                    self.body = None;
                    self.writing = Writing::Failed;
                    true
                }
            };
            match self.decoder.decode(&mut self.conn.buf, self.eof) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Decoded::End(trailers)) => {
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                Ok(Decoded::NeedMore) => {}
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending if wrote => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Takes the whole body if it is already in the buffer (most small
    /// responses): `Some(data)` and the exchange is finished.
    pub fn body_at_once(&mut self) -> Option<Bytes> {
        if self.decoder.is_close_delimited() {
            return None;
        }
        if self.decoder.is_done() {
            return Some(Bytes::new());
        }
        let len = self.decoder.remaining()?;
        if (self.conn.buf.len() as u64) < len {
            return None;
        }
        match self.decoder.decode(&mut self.conn.buf, false) {
            Ok(Decoded::Data(d)) if self.decoder.is_done() => Some(d),
            _ => None,
        }
    }

    /// The exact body length still to come, if known.
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// Whether the response body is complete.
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The connection handed to an upgraded protocol (after a `101`).
    pub fn into_upgraded(self) -> super::stream::Upgraded {
        super::stream::Upgraded {
            stream: self.conn.stream,
            read_ahead: self.conn.buf,
        }
    }

    /// Ends the exchange: the connection, where it goes and for how long
    /// the node keeps it, if it may carry another request: the body is
    /// complete, the node keeps the connection, the request was written
    /// whole, and nothing unasked followed the response. Else `None` (and
    /// the connection is closed).
    pub fn release(self) -> Option<(Conn, Checkin, Option<std::time::Duration>)> {
        let to = self.checkin?;
        let reusable = self.decoder.is_done()
            && self.keep_alive
            && self.writing == Writing::Done
            && self.conn.buf.is_empty();
        reusable.then_some((self.conn, to, self.keep))
    }
}

/// Whether the node keeps the connection open after this response
/// (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`, HTTP/1.0 only
/// with `Connection: keep-alive`.
fn keep_alive(head: &ResponseHead) -> bool {
    // The options of a plain `Connection: keep-alive` / `close`, read by
    // the parser (which left that field out of the map).
    let mut close = head.present.options.close;
    let mut keep = head.present.options.keep_alive;
    if head.present.connection {
        for v in head.headers.get_all(header::CONNECTION) {
            for t in v.to_str().unwrap_or("").split(',') {
                let t = t.trim();
                close |= t.eq_ignore_ascii_case("close");
                keep |= t.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    match head.version {
        Version::HTTP_11 => !close,
        _ => keep && !close,
    }
}

/// The `Host` of a request without one (as hyper's client makes it): the
/// target's authority, else the node's address.
pub fn default_host(uri: &http::Uri, node: std::net::SocketAddr) -> String {
    match uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => node.to_string(),
    }
}

/// What the body's framing changes in a request head as it is encoded.
#[derive(Default)]
struct FramingEdits {
    /// Leave out the `Transfer-Encoding` lines (a bodiless request).
    drop_transfer_encoding: bool,
    /// Leave out the `Content-Length` lines.
    drop_content_length: bool,
    /// A field line written after the head's own.
    add: Option<(header::HeaderName, HeaderValue)>,
}

/// `METHOD target HTTP/1.1`, the fields with the framing's `edits`, a
/// `Host` of `node` when the head has none, the blank line. Returns
/// whether `Connection` asks to close (found on the way: one pass over the
/// fields instead of lookups).
fn encode_head(
    out: &mut Vec<u8>,
    head: UpstreamHead<'_>,
    edits: &FramingEdits,
    node: std::net::SocketAddr,
) -> bool {
    let parts = head.parts;
    let mut close = false;
    let mut host = false;
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &header::HeaderName, value: &[u8]| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in head.fields() {
        if (edits.drop_transfer_encoding && name == header::TRANSFER_ENCODING)
            || (edits.drop_content_length && name == header::CONTENT_LENGTH)
        {
            continue;
        }
        host |= name == header::HOST;
        if name == header::CONNECTION {
            close |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        line(name, value.as_bytes());
    }
    if let Some((name, value)) = &edits.add {
        line(name, value.as_bytes());
    }
    if !host {
        line(&header::HOST, default_host(&parts.uri, node).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    close
}
