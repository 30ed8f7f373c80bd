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
//! How a record is filled: [`super::recording::observe`] wraps the proxy's handler. It
//! stamps the arrival, takes (or makes) the request id and `traceparent`,
//! puts a [`Note`] in the request's extensions and awaits the proxy. The
//! proxy writes into the note what only it knows (route, upstream node,
//! retries and why, connect and first-byte times, the rate-limit verdict).
//! The response's status, `x-xlb-error` reason and `X-Cache` are read off
//! the response head; the record is handed to the sink when the response
//! body ends or is dropped, with the bytes sent and the total duration.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use http::request;

use super::ratelimit::Admission;

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
    pub method: http::Method,
    /// The host asked for (`Host` or the target's authority), port included.
    pub host: http::HeaderValue,
    /// The request target as received (logged: its path only, see
    /// [`RequestRecord::path`]).
    pub target: http::Uri,
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
    pub request_id: http::HeaderValue,
    /// The TLS version of the connection (`TLSv1.3`), `None` for plain text.
    pub tls_version: Option<&'static str>,
    /// The server name the client asked for in its TLS hello.
    pub sni: Option<Arc<str>>,
    /// Whether the whole response body was sent (false: the client left or
    /// the node broke the body).
    pub complete: bool,
}

impl RequestRecord {
    /// The path, without the query (queries can carry secrets).
    pub fn path(&self) -> &str {
        self.target.path()
    }

    /// The host as text (empty when it is not visible ASCII).
    pub fn host_str(&self) -> &str {
        self.host.to_str().unwrap_or("")
    }

    /// The request id as text.
    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
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

/// The installed sink, if any.
pub(super) fn sink() -> Option<&'static Arc<dyn RecordSink>> {
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
pub(super) struct Facts {
    pub(super) route: Option<Arc<str>>,
    pub(super) upstream: Option<Arc<str>>,
    pub(super) node: Option<SocketAddr>,
    pub(super) retries: Vec<&'static str>,
    pub(super) connect: Option<Duration>,
    pub(super) first_byte: Option<Duration>,
    pub(super) bytes_in: u64,
    pub(super) rate_limit: RateLimitVerdict,
    /// What the recording did to the request's ids before the proxy saw it.
    pub(super) made: MadeIds,
    /// The request id a plugin (`request-id`) chose, and its header: it
    /// replaces the recording's in the record and on the response.
    pub(super) chosen_id: Option<(http::HeaderName, http::HeaderValue)>,
}

/// Which ids the recording made itself (the client sent none, or one it
/// did not keep), so that a `request-id` plugin knows what it may replace.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MadeIds {
    /// `X-Request-Id` was made by xlb.
    pub request_id: bool,
    /// `traceparent` was made by xlb, with the request id as its trace id.
    pub trace_is_request_id: bool,
}

/// The proxy's handle on the record of the request it is handling (a
/// request extension); every method does nothing when no sink is
/// installed.
#[derive(Debug, Clone, Default)]
pub struct Note(pub(super) Option<Arc<Mutex<Facts>>>);

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

    /// The route matched and its upstream (shared strings: a clone is a
    /// reference count, see `Route::labels`).
    pub fn route(&self, route: &Arc<str>, upstream: &Arc<str>) {
        self.with(|f| {
            f.route = Some(route.clone());
            f.upstream = Some(upstream.clone());
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

    /// Which ids the recording made (`None`: the request is not recorded).
    pub fn made_ids(&self) -> Option<MadeIds> {
        let m = self.0.as_ref()?;
        m.lock().ok().map(|f| f.made)
    }

    /// A plugin chose the request id: the record and the response carry
    /// `value` under `header` instead of the recording's own id.
    pub fn request_id(&self, header: http::HeaderName, value: http::HeaderValue) {
        self.with(|f| f.chosen_id = Some((header, value)));
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
