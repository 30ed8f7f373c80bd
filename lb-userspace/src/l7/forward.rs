//! One attempt at one node: send the request, bounded by the route's
//! timeouts, and bring the response head back; failures become the status
//! a client should see, each with a reason header.
//!
//! Timeouts watch progress, not totals: `send` is the longest stall while
//! the request body is written, `read` runs from the end of the request
//! body to the response head, and `idle` is the longest silence while the
//! response body streams ([`response_body`]). A gRPC stream or an SSE feed
//! that keeps talking lives as long as it likes.
//!
//! [`Forwarder`] is the same path for callers with one node and no route
//! (plain HTTP/1.1, default timeouts).
use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Body, Frame, SizeHint};
use tokio::{sync::Notify, time::Sleep};

pub use super::body::{cut_off, empty_body, empty_up_body, text_body, BoxError, ProxyBody, UpBody};
pub use super::error::ERROR_HEADER;
use super::{
    error::{respond, ErrorKind},
    headers::{self, Downstream},
    lane::{General, Lane},
    options::{Timeouts, UpstreamOptions},
    reused_timer::Deadline,
    upstream_client::{SendError, UpstreamBody, UpstreamClient},
    upstream_head::UpstreamHead,
};
use crate::health::FailureKind;

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The node stopped taking the request body.
    Send,
    /// No response head after the request was sent.
    Read,
}

/// Why a request did not get an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// TCP or TLS connect failed or timed out: nothing reached the node.
    #[error("upstream {node}: connect: {source}")]
    Connect {
        node: SocketAddr,
        timed_out: bool,
        /// The TLS handshake failed (e.g. certificate verification).
        tls: bool,
        #[source]
        source: BoxError,
    },
    /// The connection failed before a response head.
    #[error("upstream {node}: {source}")]
    Upstream {
        node: SocketAddr,
        /// Whether the request may have reached the node.
        sent: bool,
        /// The connection came from the pool (it had served a request).
        reused: bool,
        #[source]
        source: BoxError,
    },
    /// A timeout of the route ran out.
    #[error("upstream {node}: no progress for {timeout:?} ({phase:?})")]
    Timeout {
        node: SocketAddr,
        phase: Phase,
        timeout: Duration,
    },
    /// The client stopped sending its body for the `send` timeout.
    #[error("client sent no body data for {0:?}")]
    ClientStalled(Duration),
    /// The request could not be turned into an upstream request.
    #[error("bad request target: {0}")]
    BadTarget(String),
    /// The client's request body was malformed (e.g. a bad chunk size)
    /// while it was being streamed upstream: the client's fault.
    #[error("malformed request body: {0}")]
    BadRequestBody(String),
    /// The request body grew past the route's `max_body_bytes`.
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    /// The upstream cannot carry this request (e.g. an upgrade over h2).
    #[error("upstream cannot carry the request: {}", .0.reason())]
    Unsupported(ErrorKind),
}

impl ForwardError {
    /// What the client is told: the entry of the error table
    /// ([`ErrorKind`]) this failure maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ForwardError::Connect { tls: true, .. } => ErrorKind::UpstreamTls,
            ForwardError::Connect {
                timed_out: true, ..
            } => ErrorKind::UpstreamConnectTimeout,
            ForwardError::Connect { .. } | ForwardError::Upstream { sent: false, .. } => {
                ErrorKind::UpstreamUnreachable
            }
            ForwardError::Upstream { .. } => ErrorKind::UpstreamReset,
            ForwardError::Timeout {
                phase: Phase::Read, ..
            } => ErrorKind::UpstreamTimeout,
            ForwardError::Timeout { .. } => ErrorKind::UpstreamSendTimeout,
            ForwardError::ClientStalled(_) => ErrorKind::RequestBodyTimeout,
            ForwardError::BadTarget(_) => ErrorKind::BadTarget,
            ForwardError::BadRequestBody(_) => ErrorKind::BadRequestBody,
            ForwardError::BodyTooLarge(_) => ErrorKind::BodyTooLarge,
            ForwardError::Unsupported(kind) => *kind,
        }
    }

    /// The response a client gets for this failure.
    pub fn into_response(self) -> Response<ProxyBody> {
        respond(self.kind())
    }

    /// True when the request certainly never reached the node, so any
    /// request (even a POST) may be tried elsewhere.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            ForwardError::Connect { .. } | ForwardError::Upstream { sent: false, .. }
        )
    }

    /// True when the node refused the connection (or was unreachable):
    /// the TCP connect failed at once, without timing out and before any
    /// TLS. Nothing reached the node; it is most likely not listening yet
    /// (starting) or gone. Cold-start holding waits on exactly this.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ForwardError::Connect {
                timed_out: false,
                tls: false,
                ..
            }
        )
    }

    /// The node's share of this failure, for passive health: `None` when
    /// the client (its body, its target) or xlb (an upgrade the upstream
    /// cannot carry) is at fault, which says nothing about the node.
    pub fn node_failure(&self) -> Option<FailureKind> {
        match self {
            ForwardError::Connect {
                timed_out: true, ..
            } => Some(FailureKind::Timeout),
            ForwardError::Connect { .. } => Some(FailureKind::Connect),
            ForwardError::Upstream { .. } => Some(FailureKind::Reset),
            ForwardError::Timeout { .. } => Some(FailureKind::Timeout),
            ForwardError::ClientStalled(_)
            | ForwardError::BadTarget(_)
            | ForwardError::BadRequestBody(_)
            | ForwardError::BodyTooLarge(_)
            | ForwardError::Unsupported(_) => None,
        }
    }

    /// True when a pooled connection ended (closed or reset, no response
    /// byte) after the request was written: most likely the node closing
    /// it as idle while the request was on its way, which is no sign of a
    /// sick node. The request may still have been read, so only an
    /// idempotent one may be sent again (once, on another connection).
    pub fn closed_on_reuse(&self) -> bool {
        let ForwardError::Upstream {
            sent: true,
            reused: true,
            source,
            ..
        } = self
        else {
            return false;
        };
        let mut err: Option<&(dyn std::error::Error + 'static)> = Some(&**source);
        while let Some(e) = err {
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_incomplete_message)
            {
                return true;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                );
            }
            err = e.source();
        }
        false
    }

    /// Whether another node may get this request: always when it never
    /// reached this one; after it did, only if `replayable` (idempotent and
    /// without body) and the node, not the client, failed.
    pub fn retryable(&self, replayable: bool) -> bool {
        self.never_sent()
            || (replayable
                && matches!(
                    self,
                    ForwardError::Upstream { .. } | ForwardError::Timeout { .. }
                ))
    }
}

/// Progress of one request body on its way upstream, shared between the
/// body (which stamps it) and the attempt (which watches it).
#[derive(Debug)]
pub struct BodyWatch {
    base: Instant,
    /// Nanoseconds from `base` of the last progress (attempt start, a
    /// frame, the end of the body).
    last: AtomicU64,
    done: AtomicBool,
    waiting_on_client: AtomicBool,
    armed: AtomicBool,
    arm: Notify,
    /// Body bytes passed on (for the request record).
    bytes: AtomicU64,
    /// Nanoseconds from `base` when the last attempt had a connection in
    /// hand (for the record's connect time).
    sending: AtomicU64,
}

impl BodyWatch {
    fn new(done: bool) -> BodyWatch {
        BodyWatch {
            base: Instant::now(),
            last: AtomicU64::new(0),
            done: AtomicBool::new(done),
            waiting_on_client: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            arm: Notify::new(),
            bytes: AtomicU64::new(0),
            sending: AtomicU64::new(0),
        }
    }

    fn stamp(&self) -> u64 {
        let n = self.base.elapsed().as_nanos() as u64;
        self.last.fetch_max(n, Ordering::Relaxed);
        n
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Starts the clocks: the request is about to be written (the connect
    /// before it has its own timeout).
    fn start(&self) {
        // One clock read for both (a read per request showed in profiles).
        let now = self.stamp();
        self.sending.store(now, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
        self.arm.notify_one();
    }

    /// Body bytes passed on so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// How long the attempt started at `attempt` waited for a connection
    /// (connect and handshakes; about zero on a pooled one).
    pub fn connect_time(&self, attempt: Instant) -> Duration {
        let sending = self.base + Duration::from_nanos(self.sending.load(Ordering::Relaxed));
        sending.saturating_duration_since(attempt)
    }

    fn reset(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// Resolves when a timeout of `t` runs out for the current attempt.
    async fn expired(&self, t: &Timeouts) -> (Phase, bool, Duration) {
        while !self.armed.load(Ordering::Acquire) {
            self.arm.notified().await;
        }
        // One timer for the attempt, reused from earlier requests (see
        // `reused_timer`), moved as the body makes progress.
        let mut timer: Option<Deadline> = None;
        loop {
            let (phase, timeout) = match self.done.load(Ordering::Acquire) {
                true => (Phase::Read, t.read),
                false => (Phase::Send, t.send),
            };
            let deadline = self.last() + timeout;
            // Before the timer's first wait the deadline cannot have
            // passed (progress was stamped as the attempt started): the
            // clock is read only once a timer fired (a read per request).
            if timer.is_some() && Instant::now() >= deadline {
                return (
                    phase,
                    self.waiting_on_client.load(Ordering::Relaxed),
                    timeout,
                );
            }
            let t = match timer.as_mut() {
                Some(t) => {
                    t.reset(deadline.into());
                    t
                }
                None => timer.insert(Deadline::at(deadline.into())),
            };
            t.await;
        }
    }
}

/// Why the request body stopped (carried through hyper's error chain).
#[derive(Debug, thiserror::Error)]
enum RequestBodyError {
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    #[error("client body: {0}")]
    Client(BoxError),
}

/// The client's body on its way upstream: counted against `limit` and
/// stamping its progress.
struct RequestBody<B> {
    inner: B,
    limit: Option<u64>,
    seen: u64,
    watch: Arc<BodyWatch>,
}

/// Wraps a client body for sending upstream, cut off past `limit` bytes.
pub fn request_body<B>(body: B, limit: Option<u64>) -> (UpBody, Arc<BodyWatch>)
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let ended = body.is_end_stream();
    let watch = Arc::new(BodyWatch::new(ended));
    if ended {
        // Nothing to count, cut off or stamp (the watch starts done): an
        // empty body, whose box is zero-sized and so not allocated (a GET
        // paid an allocation and a free for the wrapper before).
        return (Empty::new().map_err(|never| match never {}).boxed(), watch);
    }
    let body = RequestBody {
        inner: body,
        limit,
        seen: 0,
        watch: watch.clone(),
    };
    (body.boxed(), watch)
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let watch = self.watch.clone();
        watch
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                watch.done.store(true, Ordering::Release);
                watch.stamp();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Box::new(RequestBodyError::Client(e.into())))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    watch.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(limit) = self.limit.filter(|&l| self.seen > l) {
                        return Poll::Ready(Some(Err(Box::new(RequestBodyError::TooLarge(limit)))));
                    }
                }
                if self.inner.is_end_stream() {
                    watch.done.store(true, Ordering::Release);
                }
                watch.stamp();
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What holds a response body (with the node's in-flight count) and is
/// told when the node fails the body after its head: the connection broke
/// or the node fell silent for the idle timeout.
pub trait OnBodyFailure {
    fn body_failed(&mut self, kind: FailureKind);
}

impl OnBodyFailure for () {
    fn body_failed(&mut self, _: FailureKind) {}
}

/// A response body that fails (so the client sees a broken, not a short
/// but complete, response) when the node is silent for `idle`, and keeps
/// `guard` until it ends, telling it when the node fails the body.
struct ResponseBody<G> {
    inner: UpstreamBody,
    idle: Duration,
    /// Made on the first wait: a body already buffered (most small
    /// responses) never costs a clock read or a timer registration.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    _guard: G,
}

/// Wraps an upstream body with the `idle` timeout; `guard` (the node's
/// in-flight count) is held until the body ends or is dropped.
pub fn response_body<G: OnBodyFailure + Send + Sync + Unpin + 'static>(
    body: UpstreamBody,
    idle: Duration,
    guard: G,
) -> ProxyBody {
    ResponseBody {
        inner: body,
        idle,
        timer: None,
        waiting: false,
        _guard: guard,
    }
    .boxed()
}

impl<G: OnBodyFailure + Unpin> Body for ResponseBody<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if let Some(Err(_)) = &frame {
                    this._guard.body_failed(FailureKind::Reset);
                }
                Poll::Ready(frame)
            }
            // The clock measures the node's silence only: it starts when
            // the client asked for more and the node had nothing, not
            // while the client is slow to read.
            Poll::Pending => {
                let idle = this.idle;
                let at = || tokio::time::Instant::now() + idle;
                let timer = match &mut this.timer {
                    Some(t) => {
                        if !this.waiting {
                            t.as_mut().reset(at());
                        }
                        t
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(at()))),
                };
                this.waiting = true;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        log::debug!(
                            "upstream sent nothing for {:?}: response cut off",
                            this.idle
                        );
                        this._guard.body_failed(FailureKind::Timeout);
                        Poll::Ready(Some(Err(cut_off())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A failed attempt: why, and the body when the request can be sent again
/// as is (it never left; the head stays with the caller).
pub type Failed = (ForwardError, Option<UpBody>);

/// Sends the request of `head` (origin-form target, final headers) and
/// `body` to `node` over `client`, within `timeouts`; `watch` is the one
/// [`request_body`] gave for the body.
pub async fn send<L: Lane>(
    client: &UpstreamClient,
    node: SocketAddr,
    head: UpstreamHead<'_>,
    body: UpBody,
    upgrade: bool,
    timeouts: &Timeouts,
    watch: &BodyWatch,
) -> Result<Response<UpstreamBody>, Failed> {
    watch.reset();
    // Pinned in place: `select!` on a future held by value would keep a
    // second copy of it in this future's state.
    let sending =
        std::pin::pin!(
            client.send::<L>(node, head, body, upgrade, timeouts.connect, || {
                watch.start()
            })
        );
    tokio::select! {
        // The send first: it arms the watch (`on_send`) before the
        // timeouts are looked at, so no wake-up is needed to start them.
        biased;
        sent = sending => sent.map_err(|e| classify(node, e)),
        (phase, on_client, timeout) = watch.expired(timeouts) => Err(match (phase, on_client) {
            (Phase::Send, true) => ForwardError::ClientStalled(timeout),
            _ => ForwardError::Timeout { node, phase, timeout },
        }).map_err(|e| (e, None)),
    }
}

fn classify(node: SocketAddr, e: SendError) -> Failed {
    match e {
        SendError::Connect {
            body,
            timed_out,
            error,
        } => {
            let tls = is_tls_error(&*error);
            (
                ForwardError::Connect {
                    node,
                    timed_out,
                    tls,
                    source: error,
                },
                Some(body),
            )
        }
        SendError::NotSent { body, error } => (
            ForwardError::Upstream {
                node,
                sent: false,
                // Pooled connections that fail unsent are replaced inside
                // the client; one that comes back here was fresh.
                reused: false,
                source: error,
            },
            Some(body),
        ),
        SendError::Unsupported { body, reason } => (ForwardError::Unsupported(reason), Some(body)),
        SendError::Sent { error, reused } => {
            let err = match body_error(&*error) {
                Some(RequestBodyError::TooLarge(limit)) => ForwardError::BodyTooLarge(*limit),
                Some(RequestBodyError::Client(e)) => ForwardError::BadRequestBody(e.to_string()),
                None => ForwardError::Upstream {
                    node,
                    sent: true,
                    reused,
                    source: error,
                },
            };
            (err, None)
        }
    }
}

/// What a failure of a [`request_body`] body, read by xlb itself (e.g.
/// to buffer it), means for the client: over `max_body_bytes` (413) or a
/// malformed or broken client body (400).
pub fn body_failure(e: BoxError) -> ForwardError {
    match e.downcast::<RequestBodyError>() {
        Ok(b) => match *b {
            RequestBodyError::TooLarge(limit) => ForwardError::BodyTooLarge(limit),
            RequestBodyError::Client(e) => ForwardError::BadRequestBody(e.to_string()),
        },
        Err(e) => ForwardError::BadRequestBody(e.to_string()),
    }
}

/// Our request body's own error, if that is what failed the exchange.
fn body_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RequestBodyError> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<RequestBodyError>() {
            return Some(b);
        }
        source = s.source();
    }
    None
}

fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Hop-by-hop headers out and this hop in `Via`, on a response head from
/// upstream.
pub fn response_head(parts: &mut http::response::Parts) {
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, parts.version);
    parts.version = http::Version::HTTP_11;
}

/// Upstream connection settings of a [`Forwarder`].
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
            idle_timeout: super::upstream_keepalive::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Forwards requests to given nodes over pooled HTTP/1.1 connections, with
/// the proxy headers and no route options.
#[derive(Clone, Debug)]
pub struct Forwarder {
    client: UpstreamClient,
    timeouts: Timeouts,
}

impl Forwarder {
    /// A forwarder with its own connection pool.
    pub fn new(config: ForwarderConfig) -> Forwarder {
        let options = UpstreamOptions {
            max_idle_per_node: config.max_idle_per_node,
            idle_timeout: config.idle_timeout,
            ..UpstreamOptions::default()
        };
        Forwarder {
            client: UpstreamClient::new(&options).expect("plain HTTP needs no TLS material"),
            timeouts: Timeouts {
                connect: config.connect_timeout,
                read: config.read_timeout,
                ..Timeouts::default()
            },
        }
    }

    /// Sends `req` to `node` and returns the upstream's response with the
    /// proxy's header rewrites applied both ways.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        node: SocketAddr,
        down: &Downstream<'_>,
    ) -> Result<Response<ProxyBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        // An HTTP/2 request has no Host header, only :authority.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = down.host_value() {
                parts.headers.insert(header::HOST, host);
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::add_forwarded(&mut parts.headers, down);
        parts.extensions = http::Extensions::new();
        let (body, watch) = request_body(body, None);
        let resp = send::<General>(
            &self.client,
            node,
            UpstreamHead::from(&parts),
            body,
            false,
            &self.timeouts,
            &watch,
        )
        .await
        .map_err(|(e, _)| e)?;
        let (mut parts, body) = resp.into_parts();
        response_head(&mut parts);
        Ok(Response::from_parts(
            parts,
            response_body(body, self.timeouts.idle, ()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_error_can_be_made_outside_a_runtime() {
        let e = cut_off();
        assert!(e.is_canceled(), "{e}");
    }
}
