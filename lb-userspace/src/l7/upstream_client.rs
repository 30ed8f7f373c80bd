//! Connections to one upstream's nodes, as its [`UpstreamOptions`] say:
//! plain HTTP/1.1, h2c with prior knowledge, or TLS (ALPN `h2`+`http/1.1`,
//! HTTP/1.1 only, HTTP/2 only).
//!
//! This is a small pool over hyper's connection-level client rather than
//! hyper-util's pooled `Client`, because the proxy needs three things that
//! one hides: the TLS server name chosen per request (the `Host` sent
//! upstream can be the SNI, so connections are keyed by node *and* name);
//! knowing whether a failed request was written at all (hyper's
//! `try_send_request` gives an unsent request back, which is what makes a
//! retry of a POST safe); and HTTP/1.1 connections that can be upgraded
//! (WebSocket).
//!
//! HTTP/1.1 connections are kept per (node, name), newest first, up to
//! `max_idle_per_node`, and dropped after `idle_timeout` or, sooner, when
//! the node's `Keep-Alive: timeout=N` is near (see [`upstream_keepalive`]
//! for the race this avoids); an idle one that the node closed meanwhile
//! is noticed when its request comes back unsent (hyper reads the socket
//! before writing), and the request goes out on another connection.
//! HTTP/2 keeps one shared connection per (node, name), replaced when it
//! closes.
//!
//! [`upstream_keepalive`]: super::upstream_keepalive
//!
//! A connection goes back to its list as soon as its response head is in,
//! while the body may still be streaming: checkout takes the newest one
//! that is ready and steps over busy ones. Waiting for readiness instead
//! (a task per request awaiting `SendRequest::ready`) cost a task spawn,
//! a wake-up and a lock per proxied request.
//!
//! HTTP/1.1 (plain, `https1`, an `https` node that chose `http/1.1` by
//! ALPN, and every upgrade) goes through xlb's own client,
//! [`super::h1_client`], with its per-worker pool; the hyper HTTP/1.1 path
//! described above is kept behind `XLB_UPSTREAM_H1=hyper` (read once at
//! start) as a fallback while the new client is young.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant, SystemTime},
};

use http::{header, uri::PathAndQuery, HeaderValue, Request, Response, Uri};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use super::body::{BoxError, UpBody};
use super::{
    error::ErrorKind,
    h1_client::{self, Checkin, PoolKey},
    lane::Lane,
    options::{UpstreamOptions, UpstreamProtocol, UpstreamTls},
    tls::{crypto_provider, upstream_server_name, ALPN_H2, ALPN_HTTP11},
    upstream_head::UpstreamHead,
    upstream_keepalive::{announced_timeout, reuse_limit},
};

/// Why an upstream's client could not be built (bad TLS material).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: invalid CA certificate: {source}", path.display())]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "upstream TLS: no `ca` is configured and no system trust roots could be loaded{0}; set `tls.ca`"
    )]
    NoRoots(String),
    #[error("upstream TLS client certificate {}: {source}", path.display())]
    ClientCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("upstream TLS server_name {0:?} is not a DNS name or an IP address")]
    BadServerName(String),
    #[error("upstream TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// Why a request did not get a response head from a node.
#[derive(Debug)]
pub enum SendError {
    /// TCP connect, TLS or the HTTP/2 handshake failed: nothing was sent,
    /// and the body is given back (the head was only borrowed).
    Connect {
        body: UpBody,
        timed_out: bool,
        error: BoxError,
    },
    /// The connection failed before the request was written; the body is
    /// given back.
    NotSent { body: UpBody, error: BoxError },
    /// The connection failed after the request was (maybe partly) written.
    Sent {
        error: BoxError,
        /// The connection had served a request before (it came from the
        /// pool): a failure may be the node closing it as idle.
        reused: bool,
    },
    /// This upstream cannot carry the request (an upgrade over HTTP/2).
    Unsupported { body: UpBody, reason: ErrorKind },
}

enum Conn {
    H1(http1::SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
    /// A connection of xlb's own HTTP/1.1 client.
    Own(h1_client::Conn),
}

/// A response body from a node: hyper's (HTTP/2, or HTTP/1.1 with the
/// fallback) or xlb's HTTP/1.1 client's.
pub enum UpstreamBody {
    Hyper(Incoming),
    H1(h1_client::ResponseBody),
}

impl hyper::body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpstreamBody::H1(b) => match std::pin::Pin::new(b).poll_frame(cx) {
                // The proxy's bodies carry hyper's error type; a broken
                // upstream body only has to fail the client's response.
                std::task::Poll::Ready(Some(Err(e))) => {
                    log::debug!("upstream response body: {e}");
                    std::task::Poll::Ready(Some(Err(super::body::cut_off())))
                }
                std::task::Poll::Ready(Some(Ok(f))) => std::task::Poll::Ready(Some(Ok(f))),
                std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
        }
    }
}

/// The upstream side of an upgrade (`101`): a future of the raw stream.
pub fn upgraded(resp: &mut Response<UpstreamBody>) -> super::upgrade::UpstreamTunnel {
    match resp.body_mut() {
        UpstreamBody::H1(b) => {
            let up = b.take_upgraded();
            Box::pin(async move {
                up.map(|u| Box::new(u) as Box<dyn super::upgrade::TunnelIo>)
                    .ok_or_else(|| BoxError::from("upgraded connection already taken"))
            })
        }
        UpstreamBody::Hyper(_) => {
            let on = hyper::upgrade::on(resp);
            Box::pin(async move {
                let up = on.await?;
                Ok(Box::new(TokioIo::new(up)) as Box<dyn super::upgrade::TunnelIo>)
            })
        }
    }
}

/// Whether HTTP/1.1 goes through hyper's client instead of xlb's own:
/// `XLB_UPSTREAM_H1=hyper` or `=own`, else [`HYPER_H1_DEFAULT`].
fn hyper_h1() -> bool {
    static HYPER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HYPER.get_or_init(|| match std::env::var("XLB_UPSTREAM_H1").as_deref() {
        Ok("hyper") => true,
        Ok("own") => false,
        _ => HYPER_H1_DEFAULT,
    })
}

/// The HTTP/1.1 client used when `XLB_UPSTREAM_H1` does not say: xlb's
/// own (it passes every test hyper's passed, and the differential test).
const HYPER_H1_DEFAULT: bool = false;

/// Distinguishes clients in the per-worker HTTP/1.1 pools.
static NEXT_CLIENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

type Key = (SocketAddr, Option<ServerName<'static>>);

/// A pooled HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<UpBody>,
    /// When its last response head came in.
    at: Instant,
    /// When the node's announced keep-alive time (less a margin) runs out.
    until: Option<Instant>,
}

#[derive(Default)]
struct NodeConns {
    /// Idle HTTP/1.1 connections, oldest first.
    idle: Vec<Idle>,
    h2: Option<http2::SendRequest<UpBody>>,
}

struct TlsSetup {
    /// ALPN as the protocol says.
    main: TlsConnector,
    /// ALPN `http/1.1` only: for upgrades on an `https` upstream.
    http1: TlsConnector,
    /// The configured server name, if any.
    server_name: Option<ServerName<'static>>,
    /// Modification stamps of the CA and client-certificate files, so that
    /// a reload with the same paths but rotated files builds a new client.
    stamps: Vec<Option<(SystemTime, u64)>>,
}

struct Inner {
    /// This client's id in the per-worker HTTP/1.1 pools.
    id: u64,
    protocol: UpstreamProtocol,
    tls: Option<TlsSetup>,
    max_idle: usize,
    idle_timeout: Duration,
    conns: Mutex<HashMap<Key, NodeConns>>,
    /// Whether the idle sweeper task runs.
    sweeper: std::sync::atomic::AtomicBool,
}

/// The client of one upstream; cheap to clone (one shared pool).
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
    options: Arc<UpstreamOptions>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("protocol", &self.inner.protocol)
            .field("idle", &self.idle_connections())
            .finish()
    }
}

impl UpstreamClient {
    /// A client for `options` (reads the TLS files now).
    pub fn new(options: &UpstreamOptions) -> Result<UpstreamClient, ClientError> {
        let tls = match options.protocol.is_tls() {
            false => None,
            true => Some(tls_setup(options.protocol, &options.tls)?),
        };
        Ok(UpstreamClient {
            inner: Arc::new(Inner {
                id: NEXT_CLIENT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                protocol: options.protocol,
                tls,
                max_idle: options.max_idle_per_node,
                idle_timeout: options.idle_timeout,
                conns: Mutex::new(HashMap::new()),
                sweeper: std::sync::atomic::AtomicBool::new(false),
            }),
            options: Arc::new(options.clone()),
        })
    }

    /// This client if it serves `options` just as well (so its warm
    /// connections survive a reload), else a new one.
    pub fn reuse_or_new(
        previous: Option<&UpstreamClient>,
        options: &UpstreamOptions,
    ) -> Result<UpstreamClient, ClientError> {
        match previous {
            Some(p) if p.serves(options) => Ok(p.clone()),
            _ => UpstreamClient::new(options),
        }
    }

    /// Whether this client connects as `options` say: same protocol, TLS
    /// settings and files, and pool settings.
    pub fn serves(&self, options: &UpstreamOptions) -> bool {
        let o = &self.options;
        o.protocol == options.protocol
            && o.tls == options.tls
            && o.max_idle_per_node == options.max_idle_per_node
            && o.idle_timeout == options.idle_timeout
            && self
                .inner
                .tls
                .as_ref()
                .is_none_or(|t| t.stamps == file_stamps(&options.tls))
    }

    /// The protocol.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.inner.protocol
    }

    /// Idle HTTP/1.1 connections (those of xlb's own client: in this
    /// worker's pool) plus open HTTP/2 connections.
    pub fn idle_connections(&self) -> usize {
        let conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        let shared: usize = conns
            .values()
            .map(|c| {
                let ready = c.idle.iter().filter(|i| i.sender.is_ready()).count();
                ready + usize::from(c.h2.is_some())
            })
            .sum();
        shared + h1_client::idle_count(self.inner.id)
    }

    /// Closes every idle connection (this worker's, for HTTP/1.1).
    pub fn close_idle(&self) {
        drop(
            self.inner
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(),
        );
        h1_client::clear(self.inner.id);
    }

    /// The TLS server name for a request to `node` carrying `host` (the
    /// `Host` sent upstream): the configured name, else that host without
    /// its port, else the node's IP address. `None` without TLS.
    pub fn server_name(&self, node: SocketAddr, host: Option<&str>) -> Option<ServerName<'static>> {
        let tls = self.inner.tls.as_ref()?;
        if let Some(name) = &tls.server_name {
            return Some(name.clone());
        }
        host.map(strip_port)
            .and_then(|h| upstream_server_name(h).ok())
            .or_else(|| Some(ServerName::IpAddress(node.ip().into())))
    }

    /// Sends the request of `head` (origin-form target, `Host` header) and
    /// `body` to `node`; an upgrade request goes over HTTP/1.1 with
    /// upgrades enabled. xlb's HTTP/1.1 client writes from the borrowed
    /// head; hyper's connections get a copy converted to the form they
    /// need (absolute target and no `Host` for HTTP/2). Borrowed, because
    /// a retry sends the same head again: a copy per attempt was ~1 000
    /// instructions per request. `on_send` is called when a connection is
    /// in hand and the request is about to be written (the request
    /// timeouts start there; the connect has its own).
    pub async fn send<L: Lane>(
        &self,
        node: SocketAddr,
        head: UpstreamHead<'_>,
        mut body: UpBody,
        upgrade: bool,
        connect_timeout: Duration,
        on_send: impl Fn(),
    ) -> Result<Response<UpstreamBody>, SendError> {
        if upgrade
            && matches!(
                self.inner.protocol,
                UpstreamProtocol::H2c | UpstreamProtocol::Https2
            )
        {
            return Err(SendError::Unsupported {
                body,
                reason: ErrorKind::UpgradeUnsupported,
            });
        }
        // The `Host` matters only for the TLS server name: no copy of it
        // otherwise.
        let name = match self.inner.tls.is_some() {
            true => {
                let host = head
                    .parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                self.server_name(node, host)
            }
            false => None,
        };
        let key: Key = (node, name);
        let own = !hyper_h1();
        let checkin = own.then(|| Checkin {
            key: PoolKey {
                client: self.inner.id,
                node,
                name: key.1.clone(),
            },
            max_idle: self.inner.max_idle,
            idle_timeout: self.inner.idle_timeout,
        });
        // The shared map holds HTTP/2 connections (and hyper's HTTP/1.1
        // ones): with xlb's HTTP/1.1 client and a node that never speaks
        // HTTP/2 here, its lock and lookup are skipped.
        let shared = !own
            || (!upgrade
                && matches!(
                    self.inner.protocol,
                    UpstreamProtocol::H2c | UpstreamProtocol::Https | UpstreamProtocol::Https2
                ));
        // Pooled connections first (a shared HTTP/2 one, else an idle
        // HTTP/1.1 one of this worker); one the node closed gives the
        // request back and the next is tried.
        while let Some(conn) = shared
            .then(|| self.checkout(&key, upgrade))
            .flatten()
            .or_else(|| {
                checkin
                    .as_ref()
                    .and_then(|c| h1_client::checkout(&c.key))
                    .map(Conn::Own)
            })
        {
            on_send();
            match self
                .try_send::<L>(&key, conn, head, body, true, checkin.as_ref())
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(SendError::NotSent { body: back, error }) => {
                    log::debug!("{node}: pooled connection unusable ({error}); reconnecting");
                    body = back;
                }
                Err(e) => return Err(e),
            }
        }
        // Boxed: a connect (TLS, HTTP/2 handshake) is a large future that
        // most requests, on pooled connections, never run; inline it would
        // be copied with every request's future.
        let connecting = Box::pin(tokio::time::timeout(
            connect_timeout,
            self.connect(&key, upgrade, own),
        ));
        let conn = match connecting.await {
            Ok(Ok(c)) => c,
            Ok(Err(error)) => {
                return Err(SendError::Connect {
                    body,
                    timed_out: false,
                    error,
                })
            }
            Err(_) => {
                return Err(SendError::Connect {
                    body,
                    timed_out: true,
                    error: format!("connect timed out after {connect_timeout:?}").into(),
                })
            }
        };
        on_send();
        self.try_send::<L>(&key, conn, head, body, false, checkin.as_ref())
            .await
    }

    async fn try_send<L: Lane>(
        &self,
        key: &Key,
        conn: Conn,
        head: UpstreamHead<'_>,
        body: UpBody,
        reused: bool,
        checkin: Option<&Checkin>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let tls = self.inner.tls.is_some();
        match conn {
            Conn::Own(c) => {
                match h1_client::send::<L>(c, head, body, key.0, checkin.cloned()).await {
                    Ok(resp) => Ok(resp.map(UpstreamBody::H1)),
                    Err(h1_client::Failed {
                        error,
                        body: Some(body),
                    }) => Err(SendError::NotSent {
                        body,
                        error: error.into(),
                    }),
                    Err(h1_client::Failed { error, .. }) => Err(SendError::Sent {
                        error: error.into(),
                        reused,
                    }),
                }
            }
            Conn::H1(mut s) => {
                let req = to_http1(Request::from_parts(head.to_parts(), body), key.0);
                match s.try_send_request(req).await {
                    Ok(resp) => {
                        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                            let until = announced_timeout(resp.headers()).map(reuse_limit);
                            match until {
                                // `timeout=0`: the node will not keep it.
                                Some(limit) if limit.is_zero() => {}
                                _ => self.recycle(key.clone(), s, until),
                            }
                        }
                        Ok(resp.map(UpstreamBody::Hyper))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(request) => Err(SendError::NotSent {
                            body: request.into_body(),
                            error: e.into_error().into(),
                        }),
                        None => Err(SendError::Sent {
                            error: e.into_error().into(),
                            reused,
                        }),
                    },
                }
            }
            Conn::H2(mut s) => {
                let req = match to_http2(Request::from_parts(head.to_parts(), body), key.0, tls) {
                    Ok(r) => r,
                    Err(request) => {
                        return Err(SendError::Unsupported {
                            body: request.into_body(),
                            reason: ErrorKind::BadTarget,
                        })
                    }
                };
                match s.try_send_request(req).await {
                    Ok(resp) => Ok(resp.map(UpstreamBody::Hyper)),
                    Err(mut e) => match e.take_message() {
                        Some(request) => Err(SendError::NotSent {
                            body: request.into_body(),
                            error: e.into_error().into(),
                        }),
                        None => Err(SendError::Sent {
                            error: e.into_error().into(),
                            reused,
                        }),
                    },
                }
            }
        }
    }

    fn checkout(&self, key: &Key, http1_only: bool) -> Option<Conn> {
        let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = conns.get_mut(key)?;
        if !http1_only {
            match &entry.h2 {
                Some(h2) if !h2.is_closed() => return Some(Conn::H2(h2.clone())),
                Some(_) => entry.h2 = None,
                None => {}
            }
        }
        let timeout = self.inner.idle_timeout;
        let mut now: Option<Instant> = None;
        // Newest first; busy ones (a body still streaming) stay. Their
        // stamp is when the head came in, so a connection's idle time is
        // never underestimated.
        let mut i = entry.idle.len();
        while i > 0 {
            i -= 1;
            let c = &entry.idle[i].sender;
            if c.is_closed() {
                entry.idle.remove(i);
                continue;
            }
            if !c.is_ready() {
                continue;
            }
            let now = *now.get_or_insert_with(Instant::now);
            let idle = entry.idle.remove(i);
            if idle.reusable(now, timeout) {
                return Some(Conn::H1(idle.sender));
            }
        }
        None
    }

    /// Puts an HTTP/1.1 connection back when its response head is in (see
    /// the module doc); one upgraded never comes back, and one closed or
    /// abandoned mid-body is dropped when checkout or the sweeper sees it
    /// closed. Dropping a busy connection's sender (the list is full) lets
    /// its response finish, then closes it.
    ///
    /// Idle expiry is lazy (checked at checkout, newest first) plus one
    /// sweeper per client: a timer per pooled request would keep
    /// `rate × idle_timeout` sleeping tasks alive under load.
    fn recycle(&self, key: Key, sender: http1::SendRequest<UpBody>, keep: Option<Duration>) {
        if self.inner.max_idle == 0 {
            return;
        }
        self.ensure_sweeper();
        let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = conns.entry(key).or_default();
        if entry.idle.len() >= self.inner.max_idle {
            // The oldest is the likeliest to be closed by the node.
            entry.idle.remove(0);
        }
        let at = Instant::now();
        // Only ever shorter than `idle_timeout` (which also keeps a
        // node's `timeout=<huge>` from overflowing the clock).
        let keep = keep.filter(|k| *k < self.inner.idle_timeout);
        entry.idle.push(Idle {
            sender,
            at,
            until: keep.map(|k| at + k),
        });
    }

    /// Starts this client's idle sweeper once: every `idle_timeout / 2`
    /// (at most 10 s) it closes connections idle longer than
    /// `idle_timeout` or closed by their node. It ends with the client.
    fn ensure_sweeper(&self) {
        if self
            .inner
            .sweeper
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = (self.inner.idle_timeout / 2)
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let timeout = inner.idle_timeout;
                let mut conns = inner.conns.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                conns.retain(|_, entry| {
                    for i in entry.idle.iter_mut() {
                        // Busy means not idle: its idle time starts later.
                        // (The node's announced deadline is not moved: it
                        // may have finished writing long before xlb's
                        // client read the body, so that stays on the safe
                        // side.)
                        if !i.sender.is_ready() {
                            i.at = now;
                        }
                    }
                    entry
                        .idle
                        .retain(|i| i.reusable(now, timeout) && !i.sender.is_closed());
                    if entry.h2.as_ref().is_some_and(|h| h.is_closed()) {
                        entry.h2 = None;
                    }
                    !(entry.idle.is_empty() && entry.h2.is_none())
                });
            }
        });
    }

    async fn connect(&self, key: &Key, http1_only: bool, own: bool) -> Result<Conn, BoxError> {
        let (node, name) = key;
        let tcp = TcpStream::connect(node).await?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.inner.tls else {
            let h2 = self.inner.protocol == UpstreamProtocol::H2c && !http1_only;
            if own && !h2 {
                return Ok(Conn::Own(h1_client::Conn::new(h1_client::Stream::Tcp(tcp))));
            }
            return self.handshake(key, TokioIo::new(tcp), h2).await;
        };
        let connector = if http1_only { &tls.http1 } else { &tls.main };
        let name = name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(node.ip().into()));
        let stream = connector.connect(name, tcp).await?;
        let h2 = !http1_only
            && match self.inner.protocol {
                UpstreamProtocol::Https2 => true,
                UpstreamProtocol::Https1 => false,
                _ => stream.get_ref().1.alpn_protocol() == Some(ALPN_H2),
            };
        if own && !h2 {
            return Ok(Conn::Own(h1_client::Conn::new(h1_client::Stream::Tls(
                Box::new(stream),
            ))));
        }
        self.handshake(key, TokioIo::new(stream), h2).await
    }

    async fn handshake<I>(&self, key: &Key, io: I, h2: bool) -> Result<Conn, BoxError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let node = key.0;
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    log::debug!("{node}: HTTP/2 connection: {e}");
                }
            });
            let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.entry(key.clone()).or_default().h2 = Some(sender.clone());
            return Ok(Conn::H2(sender));
        }
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                log::debug!("{node}: HTTP/1.1 connection: {e}");
            }
        });
        Ok(Conn::H1(sender))
    }
}

impl Idle {
    /// Whether the connection may carry another request at `now`: idle
    /// for less than `timeout` and before the node's announced deadline.
    fn reusable(&self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.at) < timeout && self.until.is_none_or(|u| now < u)
    }
}

/// Origin-form target and a `Host` header (from the target's authority
/// when it has one and no `Host` was set).
fn to_http1(req: Request<UpBody>, node: SocketAddr) -> Request<UpBody> {
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&h1_client::default_host(&parts.uri, node)) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = http::Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Absolute target whose authority is the `Host` header (which HTTP/2
/// carries as `:authority`, never beside it). A `Host` that is no valid
/// authority gives the request back whole, unsent.
#[allow(clippy::result_large_err)]
fn to_http2(
    req: Request<UpBody>,
    node: SocketAddr,
    tls: bool,
) -> Result<Request<UpBody>, Request<UpBody>> {
    let (mut parts, body) = req.into_parts();
    let authority = match parts.headers.remove(header::HOST) {
        Some(h) => h.to_str().map(str::to_string).ok(),
        None => parts.uri.authority().map(|a| a.as_str().to_string()),
    }
    .unwrap_or_else(|| node.to_string());
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(authority)
        .path_and_query(path)
        .build();
    match uri {
        Ok(uri) => {
            parts.uri = uri;
            parts.version = http::Version::HTTP_2;
            Ok(Request::from_parts(parts, body))
        }
        Err(_) => Err(Request::from_parts(parts, body)),
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn tls_setup(protocol: UpstreamProtocol, tls: &UpstreamTls) -> Result<TlsSetup, ClientError> {
    let alpn = match protocol {
        UpstreamProtocol::Https1 => vec![ALPN_HTTP11.to_vec()],
        UpstreamProtocol::Https2 => vec![ALPN_H2.to_vec()],
        _ => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
    };
    let server_name = match &tls.server_name {
        None => None,
        Some(n) => {
            Some(upstream_server_name(n).map_err(|_| ClientError::BadServerName(n.clone()))?)
        }
    };
    if !tls.verify {
        log::warn!(
            "upstream TLS certificate verification is off{}: use this in labs and tests only",
            tls.server_name
                .as_deref()
                .map(|n| format!(" (server_name {n})"))
                .unwrap_or_default()
        );
    }
    Ok(TlsSetup {
        main: TlsConnector::from(client_config(tls, alpn)?),
        http1: TlsConnector::from(client_config(tls, vec![ALPN_HTTP11.to_vec()])?),
        server_name,
        stamps: file_stamps(tls),
    })
}

fn client_config(tls: &UpstreamTls, alpn: Vec<Vec<u8>>) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?;
    let builder = match tls.verify {
        true => builder.with_root_certificates(roots(tls.ca.as_deref())?),
        false => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                crate::l7::tls::unverified::AnyCertificate(provider),
            )),
    };
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| ClientError::Pem {
                path: key.clone(),
                source,
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| ClientError::ClientCert {
                    path: cert.clone(),
                    source,
                })?
        }
    };
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ClientError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The CA bundle at `ca`, else the system's roots.
fn roots(ca: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|source| ClientError::BadCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(ClientError::NoRoots(why));
            }
        }
    }
    Ok(roots)
}

fn file_stamps(tls: &UpstreamTls) -> Vec<Option<(SystemTime, u64)>> {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut files: Vec<&Path> = tls.ca.iter().map(PathBuf::as_path).collect();
    if let Some((c, k)) = &tls.client_cert {
        files.push(c);
        files.push(k);
    }
    files.into_iter().map(stamp).collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::l7::lane::General;

    /// A backend on loopback counting the connections it accepted: `/slow`
    /// answers a head at once and its body when `release` is sent, any
    /// other path a whole 200.
    async fn counting_backend() -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::mpsc::unbounded_channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(released));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let released = released.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let released = released.clone();
                    async move {
                        let body: UpBody = if req.uri().path() == "/slow" {
                            let (tx, rx) = tokio::sync::mpsc::channel::<
                                Result<hyper::body::Frame<Bytes>, BoxError>,
                            >(1);
                            tokio::spawn(async move {
                                let _ = tx.send(Ok(hyper::body::Frame::data("a".into()))).await;
                                released.lock().await.recv().await;
                                let _ = tx.send(Ok(hyper::body::Frame::data("b".into()))).await;
                            });
                            http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed()
                        } else {
                            http_body_util::Full::new(Bytes::from_static(b"ok"))
                                .map_err(|n| match n {})
                                .boxed()
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (addr, accepted, release)
    }

    /// The frames of a channel as a stream.
    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    async fn get(client: &UpstreamClient, node: SocketAddr, path: &str) -> Response<UpstreamBody> {
        let req = Request::get(path)
            .header("host", "backend")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|n| match n {})
                    .boxed(),
            )
            .unwrap()
            .into_parts();
        match client
            .send::<General>(
                node,
                (&req.0).into(),
                req.1,
                false,
                Duration::from_secs(2),
                || (),
            )
            .await
        {
            Ok(r) => r,
            Err(_) => panic!("{path}: not sent"),
        }
    }

    /// A connection goes back to the pool with its head, but is not used
    /// again while its body streams; once the body is done it is.
    #[tokio::test]
    async fn busy_connections_are_stepped_over_and_reused_when_done() {
        use std::sync::atomic::Ordering;
        let (node, accepted, release) = counting_backend().await;
        let options = UpstreamOptions::default();
        let client = UpstreamClient::new(&options).unwrap();
        let mut slow = get(&client, node, "/slow").await.into_body();
        let first = slow.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"a");
        // The slow connection is pooled but busy: a new one is opened.
        for _ in 0..3 {
            let fast = get(&client, node, "/fast").await;
            assert_eq!(fast.into_body().collect().await.unwrap().to_bytes(), "ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "one extra connection, reused"
        );
        release.send(()).unwrap();
        let rest = slow.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"b");
        // Both connections are idle now and serve two requests at once.
        let mut ready = 0;
        for _ in 0..100 {
            ready = client.idle_connections();
            if ready == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ready, 2);
        let (a, b) = tokio::join!(get(&client, node, "/x"), get(&client, node, "/y"));
        assert_eq!(a.status(), 200);
        assert_eq!(b.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "no third connection");
    }

    /// A backend answering every request with `keep_alive` as its
    /// `Keep-Alive` header; counts accepted connections.
    async fn announcing_backend(
        keep_alive: &'static str,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service =
                    hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        let mut resp =
                            Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
                        resp.headers_mut()
                            .insert("keep-alive", HeaderValue::from_static(keep_alive));
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (addr, accepted)
    }

    /// `Keep-Alive: timeout=` shortens reuse: `timeout=0` is never
    /// reused, `timeout=1` is reused at once but not after 750 ms, and a
    /// huge one is just `idle_timeout`.
    #[tokio::test]
    async fn the_announced_keep_alive_bounds_reuse() {
        use std::sync::atomic::Ordering;
        let options = UpstreamOptions::default();
        for (header, reused_at_once, reused_after_800ms) in [
            ("timeout=0", false, false),
            ("timeout=1", true, false),
            ("timeout=99999999999, max=100", true, true),
        ] {
            let (node, accepted) = announcing_backend(header).await;
            let client = UpstreamClient::new(&options).unwrap();
            let mut expected = 1;
            for (pause, reused) in [(0, reused_at_once), (800, reused_after_800ms)] {
                let r = get(&client, node, "/").await;
                r.into_body().collect().await.unwrap();
                // Until hyper has the connection idle (bounded).
                for _ in 0..100 {
                    if client.idle_connections() > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let r = get(&client, node, "/").await;
                r.into_body().collect().await.unwrap();
                expected += usize::from(!reused);
                assert_eq!(
                    accepted.load(Ordering::SeqCst),
                    expected,
                    "{header}, {pause} ms"
                );
                // The next round starts on a connection of its own.
                expected += 1;
                client.close_idle();
            }
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.example:8443"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("10.0.0.1:80"), "10.0.0.1");
    }

    #[test]
    fn requests_take_the_form_of_their_connection() {
        let node: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let empty = || {
            http_body_util::Empty::<Bytes>::new()
                .map_err(|n| match n {})
                .boxed()
        };
        let req = Request::get("/a?b=1")
            .header("host", "www.example.com")
            .body(empty())
            .unwrap();
        let h2 = to_http2(req, node, true).unwrap();
        assert_eq!(h2.uri(), "https://www.example.com/a?b=1");
        assert!(h2.headers().get("host").is_none());
        let h1 = to_http1(h2, node);
        assert_eq!(h1.uri(), "/a?b=1");
        assert_eq!(h1.headers().get("host").unwrap(), "www.example.com");
        let bare = Request::get("/").body(empty()).unwrap();
        assert_eq!(
            to_http2(bare, node, false).unwrap().uri(),
            "http://10.0.0.1:80/"
        );
    }
}
