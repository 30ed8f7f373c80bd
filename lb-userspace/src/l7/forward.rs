//! Sending a request to an upstream node and bringing its response back:
//! pooled hyper client, proxy header rewrites, and failures turned into the
//! status a client should see (502 when the node could not be reached, 504
//! when it did not answer in time), each with a reason header.
use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{header, uri::PathAndQuery, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use super::headers::{self, Downstream};

/// The body type the proxy answers with: the upstream's streamed body, or a
/// short error text.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The header that says why xlb itself answered (not the upstream).
pub const ERROR_HEADER: &str = "x-xlb-error";

/// Why a request did not get an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Connecting to or talking with the node failed before a response.
    #[error("upstream {node}: {source}")]
    Upstream {
        node: SocketAddr,
        /// Whether the request may have reached the node (retries of
        /// non-idempotent requests are only safe when it did not).
        sent: bool,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response headers within the read timeout.
    #[error("upstream {node} did not answer within {timeout:?}")]
    Timeout { node: SocketAddr, timeout: Duration },
    /// The request could not be turned into an upstream request.
    #[error("bad request target: {0}")]
    BadTarget(String),
    /// The client's request body was malformed (e.g. a bad chunk size)
    /// while it was being streamed upstream: the client's fault.
    #[error("malformed request body: {0}")]
    BadRequestBody(String),
}

impl ForwardError {
    /// The response a client gets for this failure.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, reason) = match &self {
            ForwardError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream-unreachable"),
            ForwardError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
            ForwardError::BadTarget(_) => (StatusCode::BAD_REQUEST, "bad-target"),
            ForwardError::BadRequestBody(_) => (StatusCode::BAD_REQUEST, "bad-request-body"),
        };
        error_response(status, reason)
    }

    /// True when the request certainly never reached the node, so any
    /// request (even a POST) may be retried elsewhere.
    pub fn never_sent(&self) -> bool {
        match self {
            ForwardError::Upstream { sent, .. } => !sent,
            ForwardError::Timeout { .. } | ForwardError::BadRequestBody(_) => false,
            ForwardError::BadTarget(_) => true,
        }
    }
}

/// A short response made by xlb itself, with the reason in
/// [`ERROR_HEADER`].
pub fn error_response(status: StatusCode, reason: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{} {reason}\n", status.as_u16())))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(reason));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An empty body, for requests replayed on another node.
pub fn empty_body() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for the response headers once the request is sent.
    pub read_timeout: Duration,
    /// Idle connections kept per node.
    pub max_idle_per_node: usize,
    /// How long an idle pooled connection is kept.
    pub idle_timeout: Duration,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(60),
            max_idle_per_node: 64,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Forwards requests to upstream nodes over pooled HTTP/1.1 connections.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, ProxyBody>,
    config: ForwarderConfig,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.config)
            .finish()
    }
}

impl Forwarder {
    /// A forwarder with its own connection pool.
    pub fn new(config: ForwarderConfig) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_node)
            .pool_idle_timeout(config.idle_timeout)
            .build(connector);
        Forwarder { client, config }
    }

    /// Sends `req` to `node` and returns the upstream's response with the
    /// proxy's header rewrites applied both ways. (A downstream body is
    /// passed as `incoming.boxed()`; see [`empty_body`] for replays.)
    pub async fn forward(
        &self,
        req: Request<ProxyBody>,
        node: SocketAddr,
        down: &Downstream<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(node.to_string())
            .path_and_query(path)
            .build()
            .map_err(|e| ForwardError::BadTarget(e.to_string()))?;
        // An HTTP/2 request has no Host header, only :authority: give the
        // upstream HTTP/1.1 request the name the client asked for.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = down.host.and_then(|h| HeaderValue::from_str(h).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_forwarded(&mut parts.headers, down);
        parts.version = http::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let timeout = self.config.read_timeout;
        let resp = match tokio::time::timeout(timeout, self.client.request(upstream_req)).await {
            Err(_) => return Err(ForwardError::Timeout { node, timeout }),
            Ok(Err(e)) if downstream_body_failed(&e) => {
                return Err(ForwardError::BadRequestBody(format!("{e:?}")))
            }
            Ok(Err(e)) => {
                return Err(ForwardError::Upstream {
                    node,
                    sent: !e.is_connect(),
                    source: e,
                })
            }
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::append_via(&mut parts.headers, http::Version::HTTP_11);
        Ok(Response::from_parts(parts, body.boxed()))
    }
}

/// True when the client's body, not the upstream, failed: hyper reports
/// it as a "user" error (the request body stream it was given) whose cause
/// is the downstream connection's own parse error.
fn downstream_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return true;
            }
        }
        source = s.source();
    }
    false
}
