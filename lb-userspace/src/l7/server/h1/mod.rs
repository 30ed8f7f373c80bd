//! The own HTTP/1.1 server path: a connection's plain requests (see
//! [`request_head`]: no body or a small `Content-Length` one, read whole)
//! read, handed to the handler and answered by this loop, with no
//! dispatcher, no buffered-I/O layer and no per-request allocation of its
//! own. The first request that is not plain hands the
//! connection, with every byte read and not yet served, to hyper, which
//! serves it from there on exactly as it served every request before this
//! path existed (bodies, upgrades, `Expect`, HTTP/1.0, every refusal).
//!
//! Written here because hyper's server is one generic state machine for
//! every case: in a profile of an HTTP/1.1 request through xlb it spent
//! about 10 000 instructions of 31 000 (`docs/bench/l7.md`), where the
//! plain case needs a parse, a map of the fields sharing the read buffer,
//! and one write. nginx and HAProxy serve this case on a dedicated path
//! too.
//!
//! What it keeps from hyper's behaviour: the response framing
//! ([`response_head`]), `Date`, `Connection: close` when closing, and the
//! client's EOF while a request is in flight cancelling it (hyper's
//! `half_close(false)` default). Pipelined requests are served in order
//! from the buffer.
mod date;
mod request_head;
mod response_head;

use std::{
    future::{poll_fn, Future},
    io,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
};

use bytes::{Buf as _, BytesMut};
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

pub use self::request_head::MAX_FIELDS;
use self::{
    request_head::{Head, Spans},
    response_head::{Asked, Framing},
};
use super::{activity::Activity, handler::Handler, ConnInfo};
use crate::l7::{
    body::{ClientBody, ProxyBody},
    lane::Plain,
    recycled_maps,
};

/// How a connection left the own path.
pub enum Outcome<I> {
    /// Closed (by either side, an error, or a graceful close).
    Done,
    /// A request for hyper: the connection and the bytes read from it
    /// that were not served.
    HandOff { io: I, read: Vec<u8> },
}

/// The head limits (`ServerLimits::max_headers`, `max_header_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_fields: usize,
    pub max_head_bytes: usize,
}

/// Read buffer growth step; the order of one request head.
const READ_CHUNK: usize = 8192;

/// Body data smaller than this is copied behind the head (or the pending
/// bytes) so that a small response leaves in one write; larger data goes
/// out in a vectored write of its own, uncopied.
const COPY_BELOW: usize = 16 * 1024;

/// Serves `io` (whose first bytes, already read, are `first`) until it
/// closes or a request is not plain. `closing` is the graceful close: no
/// new request is read once it is set, and the response in flight says
/// `Connection: close`.
pub async fn serve<I, H>(
    mut io: I,
    first: Vec<u8>,
    info: &ConnInfo,
    handler: &H,
    activity: &Arc<Activity>,
    closing: &AtomicBool,
    limits: Limits,
) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK.max(first.len()));
    buf.extend_from_slice(&first);
    let mut out = Vec::with_capacity(READ_CHUNK);
    let mut spans = Spans::default();
    loop {
        let plain = loop {
            let awaiting_body = match request_head::parse(
                &mut buf,
                limits.max_fields,
                limits.max_head_bytes,
                &mut spans,
            ) {
                Head::Plain(p) => break p,
                Head::Unusual => {
                    return Outcome::HandOff {
                        io,
                        read: buf.to_vec(),
                    }
                }
                Head::Partial => false,
                Head::Body(whole) => {
                    buf.reserve(whole - buf.len());
                    true
                }
            };
            let read = poll_fn(|cx| {
                if buf.is_empty() && closing.load(Ordering::Relaxed) {
                    // Between requests: a graceful close ends here.
                    return Poll::Ready(Ok(0));
                }
                poll_read_into(&mut io, &mut buf, cx)
            })
            .await;
            match read {
                // A body cut short: hyper answers it, as it did before the
                // own path read bodies (it reads the same end).
                Ok(0) if awaiting_body => {
                    return Outcome::HandOff {
                        io,
                        read: buf.to_vec(),
                    }
                }
                Ok(0) => return Outcome::Done,
                Ok(_) => activity.head_started(),
                Err(e) => {
                    log::debug!("connection from {}: {e}", info.peer);
                    return Outcome::Done;
                }
            }
        };
        let method = plain.parts.method.clone();
        let req = Request::from_parts(plain.parts, ClientBody::Buffered(Full::new(plain.body)));
        let mut in_flight = activity.begin();
        let resp = {
            let mut answer = pin!(handler.call::<Plain>(req, info.clone()));
            // While the handler runs, the client's EOF (or a reset)
            // cancels the request, as hyper does; bytes of a pipelined
            // head are kept (up to the head limit, then no longer read).
            let gone = poll_fn(|cx| {
                if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
                    return Poll::Ready(Some(resp));
                }
                loop {
                    if buf.len() >= limits.max_head_bytes {
                        return Poll::Pending;
                    }
                    match poll_read_into(&mut io, &mut buf, cx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            });
            match gone.await {
                Some(resp) => resp,
                None => {
                    log::debug!("connection from {}: closed by the client", info.peer);
                    return Outcome::Done;
                }
            }
        };
        in_flight.answered = true;
        let (head, body) = resp.into_parts();
        let asked = Asked {
            method: &method,
            close: plain.close || closing.load(Ordering::Relaxed),
        };
        out.clear();
        let (framing, close) = response_head::encode(
            &head,
            body.is_end_stream(),
            &body.size_hint(),
            asked,
            &mut out,
        );
        // The head is written: its map serves a later request.
        recycled_maps::give(head.headers);
        if let Err(e) = send(&mut io, &mut out, body, framing).await {
            log::debug!("connection from {}: response: {e}", info.peer);
            return Outcome::Done;
        }
        drop(in_flight);
        if close {
            let _ = io.shutdown().await;
            return Outcome::Done;
        }
    }
}

/// One read into the spare room of `buf` (grown by [`READ_CHUNK`] when
/// full).
fn poll_read_into<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == buf.len() {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Sends the head in `out` and the body, framed; an error (the client
/// went away, the body failed or broke its declared length) leaves the
/// connection unusable, so the caller closes it.
async fn send<I>(
    io: &mut I,
    out: &mut Vec<u8>,
    mut body: ProxyBody,
    framing: Framing,
) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    if framing != Framing::None {
        while !body.is_end_stream() {
            // Polled once with the task's waker; while it has nothing, the
            // bytes so far go out (a slow or streamed body's head is not
            // held back).
            let ready = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(f) => Poll::Ready(Some(f)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let frame = match ready {
                Some(f) => f,
                None => {
                    write_all(io, out, &[]).await?;
                    body.frame().await
                }
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(io::Error::other)?;
            // Trailers are dropped: the own path serves no request that
            // asked for them (`TE: trailers` goes to hyper).
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            match framing {
                Framing::Length(_) => {
                    let n = data.len() as u64;
                    if n > left {
                        return Err(io::Error::other("body longer than its Content-Length"));
                    }
                    left -= n;
                    put(io, out, &data).await?;
                }
                Framing::Chunked => {
                    let mut hex = [0u8; 16];
                    out.extend_from_slice(hex_len(data.len(), &mut hex));
                    out.extend_from_slice(b"\r\n");
                    put(io, out, &data).await?;
                    out.extend_from_slice(b"\r\n");
                }
                Framing::UntilClose => put(io, out, &data).await?,
                Framing::None => {}
            }
        }
        match framing {
            Framing::Length(_) if left != 0 => {
                return Err(io::Error::other("body shorter than its Content-Length"));
            }
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            _ => {}
        }
    }
    drop(body);
    write_all(io, out, &[]).await?;
    io.flush().await
}

/// Appends small `data` to `out`; writes `out` and large `data` together.
async fn put<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>, data: &[u8]) -> io::Result<()> {
    if data.len() < COPY_BELOW {
        out.extend_from_slice(data);
        if out.len() < COPY_BELOW {
            return Ok(());
        }
        return write_all(io, out, &[]).await;
    }
    write_all(io, out, data).await
}

/// Writes `out` then `data` (vectored where the stream supports it) and
/// empties `out`.
async fn write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    data: &[u8],
) -> io::Result<()> {
    if out.is_empty() && data.is_empty() {
        return Ok(());
    }
    let mut both = out.as_slice().chain(data);
    io.write_all_buf(&mut both).await?;
    out.clear();
    Ok(())
}

/// `n` in upper-case hex (as hyper writes it), the chunk-size of RFC 9112
/// §7.1.
fn hex_len(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_sizes_are_upper_case_hex() {
        let mut b = [0; 16];
        assert_eq!(super::hex_len(0, &mut b), b"0");
        assert_eq!(super::hex_len(255, &mut b), b"FF");
        assert_eq!(super::hex_len(0x1a2b3, &mut b), b"1A2B3");
    }
}
