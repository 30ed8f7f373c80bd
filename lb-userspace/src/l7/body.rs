//! The body types of the two legs and xlb's own short bodies. A leaf of
//! `l7`: the cache, the forwarder, the upstream client and the server all
//! use these without importing each other.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

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
