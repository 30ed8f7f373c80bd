//! What the proxy knows of one finished request ([`RequestRecord`]) and of
//! its connections, handed to a [`RecordSink`].
//!
//! `l7` sits below `observe` in the layer table, so it cannot call the
//! metrics or the access log: it defines this contract and `observe`
//! implements the sink; the daemon installs it with [`install`]. The sink
//! is process-wide, like the `log` crate's logger, so that neither the
//! server's nor the proxy's signatures change to carry it (both are being
//! restructured); with no sink installed the proxy skips all of this
//! (one atomic load per request).
//!
//! How a record is filled: [`observe`] wraps the proxy's handler. It
//! stamps the arrival, takes (or makes) the request id and `traceparent`,
//! puts a [`Note`] in the request's extensions and awaits the proxy. The
//! proxy writes into the note what only it knows (route, upstream node,
//! retries and why, connect and first-byte times, the rate-limit verdict).
//! The response's status, `x-xlb-error` reason and `X-Cache` are read off
//! the response head; the record is handed to the sink when the response
//! body ends or is dropped, with the bytes sent and the total duration.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header::HeaderName, request, HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::{
    body::ProxyBody,
    cache::{x_cache, X_CACHE},
    error::ERROR_HEADER,
    ratelimit::Admission,
    server::ConnInfo,
};

/// The request id header: kept when the client sent a sane one, else
/// made here; passed to the node and returned to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C Trace Context header (Trace Context Level 1, §3.2).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The rate-limit verdict a request got (the strongest of its rules' and
/// of both sides').
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum RateLimitVerdict {
    /// The route has no rate-limit rules.
    #[default]
    None,
    /// Every rule let it through at once.
    Forward,
    /// A rule held it in its queue for a while.
    Delay,
    /// A rule refused it (429/503).
    Reject,
}

impl RateLimitVerdict {
    /// The verdict of one [`super::ratelimit::RateLimiter::admit`].
    pub fn of<E>(admitted: &Result<Admission, E>) -> RateLimitVerdict {
        match admitted {
            Ok(Admission::Now) => RateLimitVerdict::Forward,
            Ok(Admission::Delayed) => RateLimitVerdict::Delay,
            Err(_) => RateLimitVerdict::Reject,
        }
    }

    /// The name in the access log and the metrics' `verdict` label.
    pub fn name(self) -> &'static str {
        match self {
            RateLimitVerdict::None => "none",
            RateLimitVerdict::Forward => "forward",
            RateLimitVerdict::Delay => "delay",
            RateLimitVerdict::Reject => "reject",
        }
    }
}

/// Everything known of one finished request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When the request head was handed to the proxy.
    pub time: SystemTime,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: String,
    /// The host asked for (`Host` or the target's authority), port included.
    pub host: String,
    /// The path, without the query (queries can carry secrets).
    pub path: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The status sent to the client.
    pub status: u16,
    /// Request body bytes sent on to the node.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request head to the end (or abandonment) of the response body.
    pub total: Duration,
    /// TCP/TLS connect to the node of the answering attempt (zero on a
    /// pooled connection); `None` when no node answered.
    pub connect: Option<Duration>,
    /// From the answering attempt's start to the node's response head.
    pub first_byte: Option<Duration>,
    /// The matched route's id.
    pub route: Option<Arc<str>>,
    /// The route's upstream id.
    pub upstream: Option<Arc<str>>,
    /// The node that answered (the last one tried).
    pub node: Option<SocketAddr>,
    /// Retries of the route's policy, one reason each (an `l7::error` reason).
    pub retries: Vec<&'static str>,
    /// `X-Cache` of the response (`HIT`, `MISS`, …); `None` without a cache.
    pub cache: Option<&'static str>,
    /// The rate-limit verdict.
    pub rate_limit: RateLimitVerdict,
    /// xlb's error reason (`x-xlb-error`), when xlb answered with an error.
    pub error: Option<String>,
    /// The request id (as sent to the node).
    pub request_id: String,
    /// The TLS version of the connection (`TLSv1.3`), `None` for plain text.
    pub tls_version: Option<&'static str>,
    /// The server name the client asked for in its TLS hello.
    pub sni: Option<Arc<str>>,
    /// Whether the whole response body was sent (false: the client left or
    /// the node broke the body).
    pub complete: bool,
}

/// Where records and connection events go (implemented by `observe`).
pub trait RecordSink: Send + Sync + 'static {
    /// One finished request; called on a worker thread, so it must not block.
    fn request(&self, record: RequestRecord);
    /// A TLS handshake: `Ok(version)` or `Err(why)` (`error`, `timeout`).
    fn tls_handshake(&self, listener: SocketAddr, outcome: Result<&'static str, &'static str>);
    /// A client connection opened (`true`) or closed (`false`).
    fn connection(&self, listener: SocketAddr, opened: bool);
}

static SINK: OnceLock<Arc<dyn RecordSink>> = OnceLock::new();

/// Installs the process's sink; the first call wins (returns false after).
pub fn install(sink: Arc<dyn RecordSink>) -> bool {
    SINK.set(sink).is_ok()
}

fn sink() -> Option<&'static Arc<dyn RecordSink>> {
    SINK.get()
}

/// Reports a TLS handshake's outcome to the sink, if any.
pub fn tls_handshake(listener: SocketAddr, outcome: Result<&'static str, &'static str>) {
    if let Some(s) = sink() {
        s.tls_handshake(listener, outcome);
    }
}

/// Reports an open connection; the guard reports its close when dropped.
pub fn connection_opened(listener: SocketAddr) -> Option<ConnectionGuard> {
    sink().map(|s| {
        s.connection(listener, true);
        ConnectionGuard(listener)
    })
}

/// Reports a connection's close on drop (see [`connection_opened`]).
pub struct ConnectionGuard(SocketAddr);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(s) = sink() {
            s.connection(self.0, false);
        }
    }
}

/// The name of a rustls protocol version as logged.
pub fn tls_version_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}

/// What the proxy writes while it handles the request.
#[derive(Debug, Default)]
struct Facts {
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    node: Option<SocketAddr>,
    retries: Vec<&'static str>,
    connect: Option<Duration>,
    first_byte: Option<Duration>,
    bytes_in: u64,
    rate_limit: RateLimitVerdict,
}

/// The proxy's handle on the record of the request it is handling (a
/// request extension); every method does nothing when no sink is
/// installed.
#[derive(Debug, Clone, Default)]
pub struct Note(Option<Arc<Mutex<Facts>>>);

impl Note {
    /// The note of the request whose head is `parts` (a no-op note if none).
    pub fn of(parts: &request::Parts) -> Note {
        parts.extensions.get::<Note>().cloned().unwrap_or_default()
    }

    fn with(&self, f: impl FnOnce(&mut Facts)) {
        if let Some(m) = &self.0 {
            if let Ok(mut facts) = m.lock() {
                f(&mut facts);
            }
        }
    }

    /// The route matched and its upstream.
    pub fn route(&self, route: &str, upstream: &str) {
        self.with(|f| {
            f.route = Some(route.into());
            f.upstream = Some(upstream.into());
        });
    }

    /// A rate-limit verdict (the strongest one is kept).
    pub fn rate_limit(&self, verdict: RateLimitVerdict) {
        self.with(|f| f.rate_limit = f.rate_limit.max(verdict));
    }

    /// An attempt is going to `node`.
    pub fn attempt(&self, node: SocketAddr) {
        self.with(|f| f.node = Some(node));
    }

    /// A retry of the route's policy, for `reason` (an `l7::error` reason).
    pub fn retry(&self, reason: &'static str) {
        self.with(|f| f.retries.push(reason));
    }

    /// The node's response head came in: connect time of the attempt (if
    /// it made a connection), time to the head, body bytes sent so far.
    pub fn response_head(&self, connect: Option<Duration>, first_byte: Duration, bytes_in: u64) {
        self.with(|f| {
            f.connect = Some(connect.unwrap_or_default());
            f.first_byte = Some(first_byte);
            f.bytes_in = bytes_in;
        });
    }
}

/// A request id the client sent is kept when it is 1–128 visible ASCII
/// characters; anything else is replaced (it goes into logs and to nodes).
fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Whether `v` is a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`
/// with non-zero ids (Trace Context Level 1, §3.2.2).
fn valid_traceparent(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let not_zero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    b.len() == 55
        && &b[0..3] == b"00-"
        && b[35] == b'-'
        && b[52] == b'-'
        && lower_hex(&b[3..35])
        && not_zero(&b[3..35])
        && lower_hex(&b[36..52])
        && not_zero(&b[36..52])
        && lower_hex(&b[53..55])
}

fn random_hex(bytes: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
    }
    s
}

/// Makes sure the request carries a request id and a `traceparent`; returns
/// the request id. A generated request id is the trace id, so that a log
/// line and a trace meet on one value. A valid `traceparent` is passed on
/// as received (xlb records no spans of its own, so it is not a parent);
/// an invalid or missing one is replaced by a new trace, not sampled.
pub fn ensure_ids(headers: &mut HeaderMap) -> String {
    let trace = match headers.get(&TRACEPARENT) {
        Some(v) if valid_traceparent(v) => None,
        _ => {
            let trace_id = random_hex(16);
            let tp = format!("00-{trace_id}-{}-00", random_hex(8));
            if let Ok(v) = HeaderValue::from_str(&tp) {
                headers.insert(TRACEPARENT, v);
            }
            Some(trace_id)
        }
    };
    match headers.get(&REQUEST_ID) {
        Some(v) if sane_request_id(v) => v.to_str().unwrap_or_default().to_string(),
        _ => {
            let id = trace.unwrap_or_else(|| random_hex(16));
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert(REQUEST_ID, v);
            }
            id
        }
    }
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn cache_status(v: Option<&HeaderValue>) -> Option<&'static str> {
    let v = v?.as_bytes();
    [
        x_cache::HIT,
        x_cache::MISS,
        x_cache::STALE,
        x_cache::BYPASS,
        x_cache::REVALIDATED,
    ]
    .into_iter()
    .find(|s| s.as_bytes() == v)
}

/// Runs `handle` on `req`, recording the request when a sink is installed
/// (see the module comment); without one, just runs it.
pub async fn observe<F, Fut>(
    listener: Arc<str>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
    handle: F,
) -> Response<ProxyBody>
where
    F: FnOnce(Request<Incoming>, ConnInfo) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    let Some(sink) = sink() else {
        return handle(req, conn).await;
    };
    let started = Instant::now();
    let time = SystemTime::now();
    let request_id = ensure_ids(req.headers_mut());
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let protocol = protocol_name(req.version());
    let facts = Arc::new(Mutex::new(Facts::default()));
    req.extensions_mut().insert(Note(Some(facts.clone())));
    let (client, tls_version, sni) = (conn.peer, conn.tls_version, conn.sni.clone());
    let mut resp = handle(req, conn).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let record = RequestRecord {
        time,
        listener,
        client,
        method,
        host,
        path,
        protocol,
        status: resp.status().as_u16(),
        bytes_in: 0,
        bytes_out: 0,
        total: Duration::ZERO,
        connect: None,
        first_byte: None,
        route: None,
        upstream: None,
        node: None,
        retries: Vec::new(),
        cache: cache_status(resp.headers().get(X_CACHE)),
        rate_limit: RateLimitVerdict::None,
        error: resp
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        request_id,
        tls_version,
        sni,
        complete: false,
    };
    let pending = Pending {
        sink: sink.clone(),
        record,
        facts,
        started,
    };
    resp.map(|inner| {
        RecordedBody {
            inner,
            pending: Some(pending),
        }
        .boxed()
    })
}

/// A record waiting for its response body to end.
struct Pending {
    sink: Arc<dyn RecordSink>,
    record: RequestRecord,
    facts: Arc<Mutex<Facts>>,
    started: Instant,
}

impl Pending {
    fn finish(mut self, complete: bool) {
        let mut r = self.record;
        r.total = self.started.elapsed();
        r.complete = complete;
        if let Ok(mut f) = self.facts.lock() {
            r.route = f.route.take();
            r.upstream = f.upstream.take();
            r.node = f.node;
            r.retries = std::mem::take(&mut f.retries);
            r.connect = f.connect;
            r.first_byte = f.first_byte;
            r.bytes_in = f.bytes_in;
            r.rate_limit = f.rate_limit;
        }
        if r.error
            .as_deref()
            .is_some_and(|e| matches!(e, "rate-limited" | "denied" | "rate-limit-table-full"))
        {
            r.rate_limit = RateLimitVerdict::Reject;
        }
        self.sink.request(r);
        // `facts` and `record` are moved out above; nothing else to do.
        let _ = &mut self.started;
    }
}

/// The response body, counting bytes and reporting the record at its end.
struct RecordedBody {
    inner: ProxyBody,
    pending: Option<Pending>,
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(p)) = (frame.data_ref(), &mut self.pending) {
                    p.record.bytes_out += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    if let Some(p) = self.pending.take() {
                        p.finish(true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = self.pending.take() {
                    p.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(p) = self.pending.take() {
                    p.finish(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            // A body hyper never polled (HEAD, 204, 304) is complete when
            // it was empty.
            let complete = self.inner.is_end_stream();
            p.finish(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_request_id_is_the_new_trace_id() {
        let mut h = HeaderMap::new();
        let id = ensure_ids(&mut h);
        assert_eq!(id.len(), 32);
        let tp = h[&TRACEPARENT].to_str().unwrap().to_string();
        assert!(valid_traceparent(&h[&TRACEPARENT]), "{tp}");
        assert_eq!(&tp[3..35], id);
        assert_eq!(h[&REQUEST_ID], id.as_str());
    }

    #[test]
    fn a_sane_request_id_and_a_valid_traceparent_are_kept() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(tp));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure_ids(&mut h), "abc-123");
        assert_eq!(h[&TRACEPARENT], tp);
    }

    #[test]
    fn bad_ids_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let id = ensure_ids(&mut h);
        assert_ne!(id, "has space");
        assert!(valid_traceparent(&h[&TRACEPARENT]));
        assert!(!h[&TRACEPARENT]
            .to_str()
            .unwrap()
            .contains("0000000000000000000000000000000"));
    }
}
