//! The body types of the two legs and xlb's own short bodies. A leaf of
//! `l7`: the cache, the forwarder, the upstream client and the server all
//! use these without importing each other.
use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;

/// The error type of upstream-bound bodies and the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to a node.
pub type UpBody = BoxBody<Bytes, BoxError>;

/// The body type the proxy answers with: the upstream's streamed body, or a
/// short text of xlb's own. (Its error is hyper's because the server's
/// body wrappers are written for it.)
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A body of xlb's own.
pub fn text_body(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty response body.
pub fn empty_body() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// An empty request body (for a replay, or an upgrade).
pub fn empty_up_body() -> UpBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The client's request body as the proxy forwards it: streamed as it
/// arrives, or whole, when a plugin's body phase has read it first (see
/// [`super::plugin::Plugin::request_body`]).
#[derive(Debug)]
pub enum ClientBody {
    /// Straight from the client.
    Streaming(Incoming),
    /// Read whole (trailers, if any, are not kept).
    Buffered(Full<Bytes>),
}

impl ClientBody {
    /// The bytes of a body read whole (`Buffered`), taken out: the body is
    /// left ended. `None` for a streaming body.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        let ClientBody::Buffered(full) = self else {
            return None;
        };
        // A `Full` yields its one frame on the first poll, without I/O.
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(full).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            _ => Some(Bytes::new()),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Streaming(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Buffered(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Streaming(b) => b.is_end_stream(),
            ClientBody::Buffered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Streaming(b) => b.size_hint(),
            ClientBody::Buffered(b) => b.size_hint(),
        }
    }
}

/// A genuine `hyper::Error` for a response body xlb cuts off (idle
/// timeout): the body must fail, not end, or an HTTP/1.1 client would take
/// a chunked response cut short for a complete one. hyper has no public
/// constructor, so one is obtained by asking a connection that is already
/// gone to send; both steps complete on their first poll, without I/O.
/// (With `ProxyBody`'s error a boxed error, this would be a plain value.)
pub fn cut_off() -> hyper::Error {
    let mut cx = Context::from_waker(Waker::noop());
    let (io, _peer) = tokio::io::duplex(1);
    let mut handshake = std::pin::pin!(hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<Bytes>,
    >(TokioIo::new(io)));
    let Poll::Ready(Ok((mut sender, conn))) = handshake.as_mut().poll(&mut cx) else {
        unreachable!("an HTTP/1.1 client handshake does no I/O");
    };
    drop(conn);
    let mut send = std::pin::pin!(sender.send_request(Request::new(http_body_util::Empty::new())));
    match send.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => e,
        _ => unreachable!("a request to a dropped connection fails at once"),
    }
}
