//! The body types of the two legs and xlb's own short bodies. A leaf of
//! `l7`: the cache, the forwarder, the upstream client and the server all
//! use these without importing each other.
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};

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
