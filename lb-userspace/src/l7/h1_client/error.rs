//! Why an exchange on an HTTP/1.1 upstream connection failed. The proxy
//! turns these into its one error model (`l7/error.rs`) through
//! `forward::ForwardError`: a failure before a response head is an
//! `upstream-reset` (502) or, when nothing was written, a reason to try
//! another connection; a failure mid-body cuts the client's response off.
use std::io;

/// A failed read, write or parse on an upstream HTTP/1.1 connection.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// A socket error. `UnexpectedEof` when the node closed the connection
    /// before a complete response head (how a keep-alive race shows).
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The response head is not HTTP/1.x as RFC 9112 §4 writes it
    /// (httparse refused it: bad status line, bad field, obs-fold, bare CR).
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// The response head is longer than [`super::head::MAX_HEAD_BYTES`].
    #[error("response head over {0} bytes")]
    HeadTooLarge(usize),
    /// `Content-Length` is not one decimal number (or several that agree).
    #[error("invalid or conflicting Content-Length")]
    BadContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 response (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    /// The chunked framing is broken (RFC 9112 §7.1).
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    /// The trailer section is malformed or too large.
    #[error("malformed trailer section: {0}")]
    Trailers(&'static str),
    /// The node closed the connection before the announced body was in.
    #[error("connection closed before the end of the response body")]
    IncompleteBody,
    /// The client's request body failed while it was being sent.
    #[error("request body: {0}")]
    RequestBody(#[source] super::super::body::BoxError),
    /// More request body than its `Content-Length` announced.
    #[error("request body longer than its Content-Length")]
    RequestBodyTooLong,
}

impl H1Error {
    /// The node closed (or reset) the connection with no response byte.
    pub(crate) fn closed() -> H1Error {
        H1Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response head",
        ))
    }
}
