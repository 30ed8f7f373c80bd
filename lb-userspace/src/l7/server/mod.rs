//! Serving HTTP/1.1 and HTTP/2 (prior knowledge over cleartext, ALPN over
//! TLS; which one a connection may speak is [`super::preface`]'s rule) on
//! one worker's listener: hyper's auto server with protocol limits, a handler
//! per request, a cap on open connections, an idle watchdog per connection,
//! and graceful shutdown (stop accepting, let in-flight requests finish, up
//! to a deadline).
//!
//! Who enforces what (hyper 1.12, hyper-util 0.1.21, h2 0.4):
//! - hyper's own HTTP/1 header timer is off: it starts as soon as the
//!   connection is ready for the next head, so it would close keep-alive
//!   connections after `header_read_timeout` (10 s) instead of
//!   `idle_timeout`, and a proxy or load balancer in front of xlb that
//!   keeps connections longer (60 s is common) would race the close and
//!   fail requests. Here the header clock starts with a head's first byte
//!   ([`HeadClock`]) and the watchdog cuts the connection when the head is
//!   not complete in time (it looks every half header timeout, so within
//!   1.5 × the limit); between requests, `idle_timeout` applies;
//! - the first up to 24 bytes are read here ([`super::preface`]) to tell
//!   HTTP/2's preface from HTTP/1.1 and check it against ALPN, within
//!   `header_read_timeout` (a client that connects and sends nothing, or
//!   trickles the preface, is closed); the watchdog then closes a
//!   connection whose first request has not started within the same
//!   deadline, counted from the same start;
//! - HTTP/2 has no idle close in hyper: the watchdog sends GOAWAY once no
//!   request has been in flight for `idle_timeout` (checked lazily while
//!   requests are in flight, so the close comes within 1.25 × the limit);
//! - hyper's graceful HTTP/2 close waits for the client to answer a PING:
//!   a close that stalls with nothing in flight is forced after
//!   `CLOSE_GRACE`;
//! - h2 closes a connection that resets too many streams before hyper
//!   accepted them (`max_pending_reset_streams`); streams reset *after*
//!   acceptance (so after the request may have been forwarded) are counted
//!   here, per connection (`max_cancelled_requests`).
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use http::Request;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::{mpsc, watch, Semaphore},
};
use tokio_rustls::TlsAcceptor;

mod activity;
mod h1;
mod handler;
mod stream_executor;

pub use self::handler::Handler;

use self::{
    activity::{Activity, HeadClock, Policy, TrackedBody, HEAD_TIMEOUT},
    stream_executor::StreamExecutor,
};
use super::{
    body::ClientBody,
    lane::General,
    preface::{self, Allowed, Rewind, Verdict, PREFACE},
    record,
    source_cap::SourceCap,
    wake_gate::{Either, Gate},
};

/// Limits every connection gets; the defaults are the edge-safe ones.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must send a request's whole header within this of its
    /// first byte (slowloris); also the deadline for a new connection's
    /// first request to start (HTTP/1.1 and HTTP/2). Default 10 s: a real
    /// client sends its head in one round trip; 10 s leaves room for lossy
    /// mobile links while a slowloris holds a socket for at most that long.
    pub header_read_timeout: Duration,
    /// Largest HTTP/1.1 request head (bytes); over it the client gets 431.
    /// Default 64 KiB, the order of nginx's `large_client_header_buffers`
    /// (4 × 8 KiB) with room for big cookies.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request; over it the client gets
    /// 431. Default 100 (hyper's own default, and what real browsers stay
    /// far below); each field costs parser memory per request.
    pub max_headers: usize,
    /// Largest decoded HTTP/2 header list (SETTINGS_MAX_HEADER_LIST_SIZE:
    /// names + values + 32 bytes per field, RFC 9113 §6.5.2); over it the
    /// stream gets 431 and is reset. Default 64 KiB, like
    /// `max_header_bytes`, so that a request allowed over HTTP/1.1 is
    /// allowed over HTTP/2 (hyper's default is 16 KiB).
    pub max_header_list_size: u32,
    /// A keep-alive connection with no request in flight is closed after
    /// this (HTTP/1.1: closed; HTTP/2: GOAWAY, then close once open streams
    /// finish). Default 60 s.
    pub idle_timeout: Duration,
    /// Most open connections per `serve()` call (per worker); further
    /// connections wait in the kernel's accept queue until one closes.
    /// 0: no limit. Default 10 000: with ~20 KiB of kernel and proxy state
    /// per idle connection, about 200 MiB per worker at the cap, well under
    /// a typical `ulimit -n` of 65 536 for two workers.
    pub max_connections: usize,
    /// Most open connections per source (an IPv4 address or an IPv6 /64)
    /// per `serve()` call (per worker); a connection beyond it is closed
    /// at once (see [`super::source_cap`]). 0 (the default): no cap.
    /// Off by default because carrier-grade NAT and corporate proxies put
    /// thousands of users behind one address; abusive sources are the
    /// rate limiter's and the XDP deny list's to stop.
    pub max_connections_per_source: u32,
    /// Most concurrent HTTP/2 streams per connection; streams beyond it
    /// are refused (REFUSED_STREAM). Default 256.
    pub max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the connection is closed
    /// (rapid-reset protection, CVE-2023-44487). h2 counts only streams
    /// reset before hyper accepted them; see `max_cancelled_requests` for
    /// the rest.
    pub max_pending_reset_streams: usize,
    /// A connection whose client has cancelled this many requests before
    /// their response began (HTTP/2 RST_STREAM after the request was
    /// accepted, i.e. after it may have been forwarded), and more than half
    /// of all its requests, is dropped at once. 0: no limit. Default 100:
    /// a rapid-reset client that paces itself past h2's pending-reset count
    /// gets at most about this many requests to the backends, while a
    /// client that cancels now and then (a browser leaving a page, gRPC
    /// deadlines) never reaches half. In the spirit of Envoy's
    /// premature-reset check.
    pub max_cancelled_requests: usize,
    /// Response bytes buffered per HTTP/2 stream before the body is no
    /// longer polled (backpressure). Default 128 KiB: with 256 streams a
    /// slow reader can pin at most 32 MiB per connection (hyper's 400 KiB
    /// default would allow 100 MiB).
    pub max_send_buf_size: usize,
    /// HTTP/2 PING interval while the connection is open; `None` disables
    /// pings. Default 30 s: finds peers that vanished (half-open TCP) with
    /// streams still open, which the idle close does not (the streams are
    /// in flight).
    pub h2_keepalive_interval: Option<Duration>,
    /// A PING not acknowledged within this closes the connection. Default
    /// 20 s (hyper's default).
    pub h2_keepalive_timeout: Duration,
    /// TLS handshake deadline.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// Serve plain HTTP/1.1 requests on the own path ([`h1`]), leaving
    /// the rest to hyper. Default on; off serves every request with hyper
    /// (for comparison, and as a way back should the own path misbehave).
    /// A `max_headers` above [`h1::MAX_FIELDS`] also turns it off.
    pub own_http1: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_header_list_size: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_source: 0,
            max_concurrent_streams: 256,
            max_pending_reset_streams: 20,
            max_cancelled_requests: 100,
            max_send_buf_size: 128 * 1024,
            h2_keepalive_interval: Some(Duration::from_secs(30)),
            h2_keepalive_timeout: Duration::from_secs(20),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            own_http1: true,
        }
    }
}

/// What the handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP address as a header value (for X-Forwarded-For),
    /// made once per connection ([`super::headers::address_value`]).
    pub peer_ip: http::HeaderValue,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The negotiated TLS version (`TLSv1.3`), for the request record.
    pub tls_version: Option<&'static str>,
    /// The server name of the client's TLS hello, for the request record.
    pub sni: Option<Arc<str>>,
}

/// A connection being closed gracefully (shutdown, idle, no first
/// request) that has had nothing in flight for this long is dropped: an
/// HTTP/2 client that does not answer the GOAWAY/PING exchange would
/// otherwise keep it open (hyper waits for the PING's ACK).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// At shutdown (a stop or a handover), how long a connection accepted
/// before it but without a request yet may take to send its first one: a
/// client that got its connection expects an answer, and no other process
/// can give it. Short, because an idle client may never send one.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// How often a connection waiting for its first request at shutdown looks
/// whether the request began.
const FIRST_REQUEST_POLL: Duration = Duration::from_millis(10);

/// Serves `listener` until `shutdown` turns true (or its sender is
/// dropped), then drains: in-flight requests get `drain_timeout`, after
/// which the connections still open are dropped.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ServerLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) {
    let handler = Arc::new(handler);
    let servers = Arc::new(Servers {
        hyper: builder(&limits),
        own_http1: (limits.own_http1 && limits.max_headers <= h1::MAX_FIELDS).then_some(
            h1::Limits {
                max_fields: limits.max_headers,
                max_head_bytes: limits.max_header_bytes,
            },
        ),
    });
    let policy = Policy {
        first_request: limits.header_read_timeout,
        idle: limits.idle_timeout,
        max_cancelled: limits.max_cancelled_requests,
    };
    // Taken before `accept`: at the cap, new connections stay in the
    // kernel's accept queue (and beyond its backlog, SYNs go unanswered
    // and are retried by the client) instead of being accepted and dropped.
    let permits =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let per_source = (limits.max_connections_per_source > 0)
        .then(|| SourceCap::new(limits.max_connections_per_source));
    // Every connection task holds a clone; `recv` answers `None` once the
    // last one has ended, which is when draining is over.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    // Turns true at the drain deadline: every connection still open drops.
    let (force, forced) = watch::channel(false);
    loop {
        let permit = match &permits {
            Some(permits) => tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break, // never closed
                },
                _ = shutdown_requested(&mut shutdown) => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown_requested(&mut shutdown) => break,
        };
        let slot = match &per_source {
            None => None,
            Some(cap) => match cap.try_open(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    log::debug!(
                        "connection from {peer} closed: its source is at max_connections_per_source"
                    );
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let servers = servers.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let alive = alive.clone();
        let mut forced = forced.clone();
        let handshake_timeout = limits.tls_handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let _alive = alive;
            let mut info = ConnInfo {
                peer,
                peer_ip: super::headers::address_value(peer.ip()),
                tls: tls.is_some(),
                tls_version: None,
                sni: None,
            };
            let local = stream.local_addr().unwrap_or(peer);
            let _open = record::connection_opened(local);
            let connection = async move {
                match tls {
                    None => {
                        let allowed = Allowed::Either;
                        serve_connection(stream, info, allowed, &servers, handler, policy, shutdown)
                            .await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    log::debug!("TLS handshake with {peer}: {e}");
                                    record::tls_handshake(local, Err("error"));
                                    return;
                                }
                                Err(_) => {
                                    log::debug!("TLS handshake with {peer} timed out");
                                    record::tls_handshake(local, Err("timeout"));
                                    return;
                                }
                            };
                        let session = stream.get_ref().1;
                        info.tls_version = session.protocol_version().map(record::tls_version_name);
                        info.sni = session.server_name().map(Arc::from);
                        record::tls_handshake(local, Ok(info.tls_version.unwrap_or("other")));
                        let allowed = Allowed::for_alpn(stream.get_ref().1.alpn_protocol());
                        serve_connection(stream, info, allowed, &servers, handler, policy, shutdown)
                            .await
                    }
                }
            };
            // Gated like the watchdog (see `wake_gate`): polling the drain
            // deadline's watch on every wake-up of the connection cost ~800
            // instructions per request.
            let forced = pin!(forced.wait_for(|f| *f));
            if let Either::Rare(_) = Gate::default().run(pin!(connection), forced).await {
                log::debug!("connection from {peer} dropped at the drain deadline");
            }
        });
    }
    drop(listener);
    drop(alive);
    tokio::select! {
        _ = all_closed.recv() => {}
        _ = tokio::time::sleep(limits.drain_timeout) => {
            log::warn!("drain deadline passed with requests still in flight");
            force.send_replace(true);
        }
    }
}

/// What serves a listener's connections.
struct Servers {
    /// hyper's, for HTTP/2 and for what the own path hands over.
    hyper: auto::Builder<StreamExecutor>,
    /// The own HTTP/1.1 path's limits; `None`: off.
    own_http1: Option<h1::Limits>,
}

/// hyper's builder with every protocol limit applied.
fn builder(limits: &ServerLimits) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(StreamExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Off: the watchdog keeps the header clock (see the module doc).
        .header_read_timeout(None)
        // A head that does not fit the read buffer is a 431 (hyper's
        // minimum buffer is 8 KiB).
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        .max_header_list_size(limits.max_header_list_size)
        // hyper panics above u32::MAX.
        .max_send_buf_size(limits.max_send_buf_size.min(u32::MAX as usize))
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    builder
}

/// Resolves once shutdown is asked for (the value turns true, or the
/// sender is gone).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves one connection until it ends, under the watchdog
/// ([`supervise`]): HTTP/1.1 on the own path ([`h1`]) while its requests
/// are plain, else (HTTP/2, or from the first request that is not plain)
/// on hyper.
async fn serve_connection<I, H>(
    mut io: I,
    info: ConnInfo,
    allowed: Allowed,
    servers: &Servers,
    handler: Arc<H>,
    policy: Policy,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let activity = Arc::new(Activity::new(policy.max_cancelled));
    // The protocol is chosen here, not by hyper-util's sniffing (see
    // `preface`); the first request's deadline covers this read too.
    let mut first = Vec::with_capacity(PREFACE.len());
    let sniffed = {
        let sniff = tokio::time::timeout(
            policy.first_request,
            preface::sniff(&mut io, allowed, &mut first),
        );
        tokio::pin!(sniff);
        tokio::select! {
            s = &mut sniff => s,
            _ = shutdown_requested(&mut shutdown) => {
                // Accepted before the drain began: its client has sent, or
                // is sending, a request it expects an answer to (after a
                // handover the successor cannot answer it). Give it a
                // moment to arrive, then serve it.
                match tokio::time::timeout(FIRST_REQUEST_GRACE, &mut sniff).await {
                    Ok(s) => s,
                    Err(_) => return,
                }
            }
        }
    };
    let http2 = match sniffed {
        Err(_) => {
            log::debug!("connection from {}: no request in time, closing", info.peer);
            return;
        }
        Ok(Err(e)) => {
            log::debug!("connection from {}: {e}", info.peer);
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(Verdict::Refuse(code)))) => {
            log::debug!(
                "connection from {}: {:?} connection sent {:?}: GOAWAY({code:#x})",
                info.peer,
                allowed,
                String::from_utf8_lossy(&first)
            );
            let _ = tokio::time::timeout(CLOSE_GRACE, preface::refuse(&mut io, code)).await;
            return;
        }
        Ok(Ok(Some(verdict))) => verdict == Verdict::Http2,
    };
    let (io, first) = match servers.own_http1 {
        Some(h1_limits) if !http2 => {
            let closing = AtomicBool::new(false);
            let own = pin!(h1::serve(
                io, first, &info, &*handler, &activity, &closing, h1_limits
            ));
            let graceful = |_: Pin<&mut _>| closing.store(true, Ordering::Relaxed);
            match supervise(own, graceful, &activity, policy, &mut shutdown, info.peer).await {
                None | Some(h1::Outcome::Done) => return,
                Some(h1::Outcome::HandOff { io, read }) => (io, read),
            }
        }
        _ => (io, first),
    };
    let act = activity.clone();
    let peer = info.peer;
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let mut in_flight = act.begin();
        let info = info.clone();
        async move {
            let resp = handler
                .call::<General>(req.map(ClientBody::Streaming), info)
                .await;
            in_flight.answered = true;
            Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let io = HeadClock::new(Rewind::new(first, io), activity.clone(), http2);
    let conn = pin!(servers
        .hyper
        .serve_connection_with_upgrades(TokioIo::new(io), service));
    let ended = supervise(
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        policy,
        &mut shutdown,
        peer,
    )
    .await;
    if let Some(Err(e)) = ended {
        log::debug!("connection from {}: {e}", peer);
    }
}

/// Runs `conn` under the connection's watchdog until it ends (its output)
/// or the watchdog drops it (`None`): closes it gracefully (`graceful`)
/// when shutdown begins or it overstays (no first request in time, idle
/// too long), drops it when a graceful close stalls with nothing in
/// flight, or at once when its client cancels too many requests.
async fn supervise<C: Future>(
    mut conn: Pin<&mut C>,
    mut graceful: impl FnMut(Pin<&mut C>),
    activity: &Activity,
    policy: Policy,
    shutdown: &mut watch::Receiver<bool>,
    peer: SocketAddr,
) -> Option<C::Output> {
    let mut closing = false;
    // Shutdown came before the first request began: close once it has
    // begun (then it is answered first) or at this deadline.
    let mut close_by: Option<tokio::time::Instant> = None;
    // The watchdog's branches are polled only when one of them woke the
    // task, not on every wake-up of the connection (see `wake_gate`).
    let gate = Gate::default();
    loop {
        let watchdog = pin!(watchdog_event(
            activity, policy, shutdown, closing, close_by
        ));
        let event = match gate.run(conn.as_mut(), watchdog).await {
            Either::Busy(done) => return Some(done),
            Either::Rare(event) => event,
        };
        match event {
            Watch::Abused => {
                log::info!(
                    "connection from {}: {} requests cancelled by the client, dropped",
                    peer,
                    activity.cancelled.load(Ordering::SeqCst)
                );
                return None;
            }
            Watch::Shutdown => {
                if activity.requests.load(Ordering::SeqCst) == 0
                    && !activity.http2.load(Ordering::SeqCst)
                {
                    close_by = Some(tokio::time::Instant::now() + FIRST_REQUEST_GRACE);
                } else {
                    closing = true;
                    graceful(conn.as_mut());
                }
            }
            Watch::FirstRequestPoll => {
                let begun = activity.requests.load(Ordering::SeqCst) > 0;
                if begun || close_by.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    closing = true;
                    graceful(conn.as_mut());
                }
            }
            Watch::Expired(why) => {
                log::debug!("connection from {}: {why}, closing", peer);
                if why == HEAD_TIMEOUT || !activity.http2.load(Ordering::SeqCst) {
                    // HTTP/1.1 (or not known yet) with nothing in flight,
                    // maybe half a head: nothing to finish, and hyper's
                    // graceful close would wait for the head.
                    return None;
                }
                closing = true;
                // HTTP/2: GOAWAY, then close when open streams finish.
                graceful(conn.as_mut());
            }
            Watch::Stalled => {
                log::debug!("connection from {}: graceful close stalled, dropped", peer);
                return None;
            }
        }
    }
}

/// What woke a connection's watchdog.
enum Watch {
    /// The client cancelled too many requests.
    Abused,
    /// Shutdown began.
    Shutdown,
    /// Time to look whether the first request has begun (shutdown came
    /// before it).
    FirstRequestPoll,
    /// The connection overstayed (`Activity::expired`).
    Expired(&'static str),
    /// A graceful close made no progress for `CLOSE_GRACE`.
    Stalled,
}

/// The watchdog's branches for the connection's state (`closing`,
/// `close_by`); resolves with the first event.
async fn watchdog_event(
    activity: &Activity,
    policy: Policy,
    shutdown: &mut watch::Receiver<bool>,
    closing: bool,
    close_by: Option<tokio::time::Instant>,
) -> Watch {
    tokio::select! {
        _ = activity.abused.notified() => Watch::Abused,
        _ = shutdown_requested(shutdown), if !closing && close_by.is_none() => Watch::Shutdown,
        _ = tokio::time::sleep(FIRST_REQUEST_POLL), if !closing && close_by.is_some() => {
            Watch::FirstRequestPoll
        }
        why = activity.expired(policy), if !closing => Watch::Expired(why),
        _ = activity.quiet_for(CLOSE_GRACE), if closing => Watch::Stalled,
    }
}
