//! xlb's own HTTP/1.1 upstream client, on `httparse` (the approach Pingora
//! took): the request is written and the response read in the proxy's own
//! task, on connections the worker owns (`pool`), with no connection task
//! and no channel hop per request; the response head is parsed out of the
//! connection's reused read buffer (`head`) and framed per RFC 9112
//! (`framing`, `decoder`). A `101` hands the raw connection, with any
//! bytes already read past the head, to the WebSocket splice.
//!
//! Why not hyper's client, which xlb used before: hyper's HTTP/1.1 client
//! runs each connection as a task and talks to it through a channel, so
//! every proxied request paid a message, a wake-up of the connection task
//! and one back, and its pool needed a lock; on the one-core bench that was
//! a large share of xlb's user time per request against nginx. hyper stays
//! for HTTP/2 upstreams (multiplexing needs a connection task) and for
//! xlb's server side.
//!
//! What it refuses is what hyper's client refuses (the differential test
//! in `differential.rs` feeds both the same random and mutated responses):
//! malformed heads, obs-fold, more than 100 fields or a head over
//! 417 792 bytes, invalid or conflicting `Content-Length`,
//! `Transfer-Encoding` in HTTP/1.0, bad chunk sizes, lines and trailers.
//! Such a response never reaches the client: the attempt fails as an
//! `upstream-reset` (502), or the response body is cut off.
mod conn;
mod decoder;
#[cfg(test)]
mod differential;
mod error;
mod framing;
mod head;
mod pool;
mod pool_key;
mod stream;

use std::{
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::Response;
use hyper::body::{Body, Frame, SizeHint};

use self::conn::Exchange;
pub use self::{
    conn::{default_host, Conn, Failed},
    error::H1Error,
    pool::{checkout, clear, idle_count},
    pool_key::{Checkin, PoolKey},
    stream::{Stream, Upgraded},
};
use super::{body::UpBody, lane::Lane, upstream_head::UpstreamHead};

/// Sends the request of `head` (its path is the target; without a `Host`,
/// `node` is) and `body` on `conn` and reads the response head. The head
/// is only read: a retry sends it again without a copy. The connection
/// goes back to the pool named by `checkin` when the response body is
/// complete and the node keeps it.
pub async fn send<L: Lane>(
    conn: Conn,
    head: UpstreamHead<'_>,
    body: UpBody,
    node: SocketAddr,
    checkin: Option<Checkin>,
) -> Result<Response<ResponseBody>, Failed> {
    let (mut ex, has_body) = Exchange::start(conn, head, &body, node, checkin);
    // Without a body to send the body is left here, so that a request
    // that never left can be given back whole.
    let mut kept = None;
    match has_body {
        true => ex.attach_body(body),
        false => kept = Some(body),
    }
    let head = std::future::poll_fn(|cx| ex.poll_head(cx)).await;
    let head = match head {
        Ok(h) => h,
        Err(error) => {
            let body = match ex.wrote_any {
                true => None,
                false => kept.or_else(|| ex.take_body()),
            };
            return Err(Failed { error, body });
        }
    };
    let body = if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        Inner::Upgrade(Some(ex.into_upgraded()))
    } else if let Some(data) = ex.body_at_once() {
        release(ex);
        Inner::Whole(Some(data).filter(|d| !d.is_empty()))
    } else {
        Inner::Streaming(Box::new(ex))
    };
    let mut resp = Response::new(ResponseBody { inner: body });
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// Ends an exchange, its connection back to this worker's pool if it may
/// carry another request.
fn release(ex: Exchange) {
    if let Some((conn, to, keep)) = ex.release() {
        pool::checkin(&to, conn, keep);
    }
}

/// A response body read from an upstream HTTP/1.1 connection.
pub struct ResponseBody {
    inner: Inner,
}

enum Inner {
    /// The whole body was in with the head; the connection is back.
    Whole(Option<Bytes>),
    /// The body broke; the error is reported on the next poll.
    Broken(Option<H1Error>),
    Streaming(Box<Exchange>),
    /// A `101`: no body; the connection is for the upgraded protocol.
    Upgrade(Option<Upgraded>),
}

impl ResponseBody {
    /// The upgraded connection of a `101` response (once).
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        match &mut self.inner {
            Inner::Upgrade(u) => u.take(),
            _ => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Broken(e) => Poll::Ready(e.take().map(Err)),
            Inner::Upgrade(_) => Poll::Ready(None),
            Inner::Streaming(ex) => match ex.poll_body(cx) {
                // A broken body is reported one turn later: the server
                // writing the client's response then flushes what it
                // already has (the head, the bytes that came), so the
                // client sees a response cut off rather than none at all,
                // as it did with hyper's client, whose body channel
                // usually had nothing ready between the data and the
                // error.
                Poll::Ready(Some(Err(e))) => {
                    this.inner = Inner::Broken(Some(e));
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                polled => {
                    if ex.is_done() {
                        if let Inner::Streaming(ex) =
                            std::mem::replace(&mut this.inner, Inner::Whole(None))
                        {
                            release(*ex);
                        }
                    }
                    polled
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Whole(d) => d.is_none(),
            Inner::Upgrade(_) => true,
            Inner::Streaming(_) | Inner::Broken(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Whole(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upgrade(_) => SizeHint::with_exact(0),
            Inner::Broken(_) => SizeHint::default(),
            Inner::Streaming(ex) => match ex.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
