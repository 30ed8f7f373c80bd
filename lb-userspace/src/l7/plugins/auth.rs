//! What the auth plugins share: the 401 answer, and the consumer header
//! passed to the node (removed from the client's request first, so a
//! client cannot claim to be a consumer).
use http::{header, request, HeaderName, HeaderValue, Response};

use super::super::{
    body::ProxyBody,
    error::{respond, ErrorKind},
};

/// The header that tells the node which consumer called.
pub const CONSUMER_HEADER: HeaderName = HeaderName::from_static("x-consumer-username");

/// `401 unauthorized` with a `WWW-Authenticate` challenge.
pub fn unauthorized(challenge: &'static str) -> Response<ProxyBody> {
    let mut resp = respond(ErrorKind::Unauthorized);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// Records `consumer` on the request for the node.
pub fn identify(req: &mut request::Parts, consumer: &str) {
    if let Ok(v) = HeaderValue::from_str(consumer) {
        req.headers.insert(CONSUMER_HEADER, v);
    }
}
