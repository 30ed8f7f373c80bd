//! What a route and an upstream say about *how* a request is forwarded, as
//! the proxy uses it (already validated and parsed; the YAML side is in
//! `config::l7`). A route's [`RouteOptions`] travels in its
//! `RouteSpec::extensions`; an upstream's [`UpstreamOptions`] sits in its
//! pool.
use std::{path::PathBuf, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue};

pub use super::headers::HeaderEdits;

use crate::net::Prefix;

/// Per-route timeouts. Long-lived exchanges (WebSocket, gRPC streams, SSE)
/// are bounded by `idle`, never by a whole-request deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (and TLS) connect to a node.
    pub connect: Duration,
    /// Sending the request head and body to the node: the longest pause
    /// allowed while the body is being written.
    pub send: Duration,
    /// From the request being sent to the response head arriving.
    pub read: Duration,
    /// Longest silence in either direction once the response streams (and
    /// on an upgraded connection).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            send: Duration::from_secs(60),
            read: Duration::from_secs(60),
            idle: Duration::from_secs(300),
        }
    }
}

/// Which `Host` (or `:authority`) the upstream request carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PassHost {
    /// The client's, unchanged (default).
    #[default]
    Pass,
    /// The node's address (`ip:port`), or its DNS name when it has one.
    Node,
    /// A fixed name (`upstream_host`).
    Rewrite(HeaderValue),
}

/// A path rewrite: when the request path starts with `strip_prefix`, that
/// prefix is replaced by `replace_with` (so `/api/v1/x` with `/api` → `` is
/// `/v1/x`; an empty result becomes `/`). The query is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRewrite {
    /// The prefix taken off.
    pub strip_prefix: String,
    /// What is put in its place (may be empty).
    pub replace_with: String,
}

/// When and how a failed attempt is tried again on another node.
///
/// A request is retried only when it certainly never reached a node
/// (connect refused or timed out), or when its method is idempotent and it
/// has no body left to resend. A POST that was sent is never replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first (0: no retry).
    pub attempts: usize,
    /// Wait before the first retry; doubled for each further one, with
    /// jitter, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(250),
        }
    }
}

/// How much retrying an upstream tolerates (Finagle/Linkerd retry budget):
/// retries may add at most `ratio` of the requests of the last `window`,
/// plus `min_per_sec` always allowed, so that a failing upstream is not
/// hit by a retry storm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries as a fraction of requests (0.2: 20 %).
    pub ratio: f64,
    /// Retries per second allowed whatever the ratio.
    pub min_per_sec: u32,
    /// The window requests are counted over.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Everything a route says about forwarding, besides where to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteOptions {
    pub timeouts: Timeouts,
    pub pass_host: PassHost,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub path_rewrite: Option<PathRewrite>,
    pub retry: RetryPolicy,
    /// Answer every request with `308 Permanent Redirect` to the same host
    /// and target over `https` on this port (443 is left out of the URL),
    /// instead of forwarding.
    pub redirect_https: Option<u16>,
    /// Largest request body accepted (bytes): larger gets 413. `None`: no
    /// limit (the body streams).
    pub max_body_bytes: Option<u64>,
    /// The names of the route's rate-limit rules, as configured
    /// (`l7.routes[].rate_limits`); the runtime builds [`Self::rate_limit`]
    /// from them.
    pub rate_limit_rules: Vec<String>,
    /// The route's rate limiter (downstream rules checked after routing,
    /// upstream ones after the node pick); `None` when it names no rules.
    pub rate_limit: Option<SharedLimiter>,
    /// `cache: true` as configured; the runtime attaches the generation's
    /// store as [`Self::cache`].
    pub cached: bool,
    /// Hold requests while the backend is starting (cold start).
    pub cold_start: Option<ColdStart>,
    /// The response cache this route's requests go through (GET/HEAD
    /// answered from it; other methods pass and invalidate), and who may
    /// `PURGE` it. `None`: the route does not cache.
    pub cache: Option<SharedCache>,
    /// The `Upgrade` protocols forwarded (default `websocket`); others are
    /// dropped from the request (see [`super::upgrade`]).
    pub upgrades: super::upgrade::AllowedUpgrades,
    /// The route's plugins, as configured (global `l7.plugins` merged in);
    /// the runtime builds [`Self::plugins`] from them.
    pub plugins_config: Option<Arc<super::plugins::PluginsConfig>>,
    /// The route's plugin chain, in priority order (empty: none).
    pub plugins: super::plugin::PluginChain,
}

impl RouteOptions {
    /// One process-wide copy of the defaults (what a [`RouteSpec`] starts
    /// with).
    ///
    /// [`RouteSpec`]: super::router::RouteSpec
    pub fn shared_default() -> Arc<RouteOptions> {
        static DEFAULT: std::sync::OnceLock<Arc<RouteOptions>> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| Arc::new(RouteOptions::default()))
            .clone()
    }

    /// `options`, or an equal copy already in use by another route. Routes
    /// created in bulk (through the admin API, by a platform) nearly all
    /// say the same; without this each held its own ~500 bytes. The few
    /// most recent distinct option sets are remembered (weakly: a set no
    /// route uses any more is not kept alive), which is what catches bulk
    /// creation; an unlucky mix only costs the copy it would have had.
    pub fn dedup(options: Arc<RouteOptions>) -> Arc<RouteOptions> {
        use std::sync::{Mutex, Weak};
        const RECENT: usize = 8;
        static SEEN: Mutex<Vec<Weak<RouteOptions>>> = Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|w| w.strong_count() > 0);
        for (i, w) in seen.iter().enumerate() {
            let Some(known) = w.upgrade() else { continue };
            if Arc::ptr_eq(&known, &options) || *known == *options {
                // Most recently used last.
                let w = seen.remove(i);
                seen.push(w);
                return known;
            }
        }
        if seen.len() == RECENT {
            seen.remove(0);
        }
        seen.push(Arc::downgrade(&options));
        options
    }
}

/// A route's rate limiter, shared (compared by identity: two routes naming
/// the same rules share one limiter and its buckets).
#[derive(Clone)]
pub struct SharedLimiter(pub Arc<super::ratelimit::RateLimiter>);

impl PartialEq for SharedLimiter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimiter")
    }
}

/// A route's view of the response cache: the store (one per service,
/// shared by every caching route and kept across reloads) and the source
/// prefixes allowed to `PURGE` it. Compared by identity, like
/// [`SharedLimiter`].
#[derive(Clone)]
pub struct SharedCache(pub Arc<RouteCache>);

impl SharedCache {
    /// `cache`, purgeable from `purge_from` (empty: `PURGE` is refused).
    pub fn new(cache: super::cache::Cache, purge_from: Vec<Prefix>) -> SharedCache {
        SharedCache(Arc::new(RouteCache { cache, purge_from }))
    }
}

impl PartialEq for SharedCache {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCache")
    }
}

/// See [`SharedCache`].
#[derive(Debug)]
pub struct RouteCache {
    /// The store (cheap to clone; clones share it).
    pub cache: super::cache::Cache,
    /// Sources allowed to `PURGE`.
    pub purge_from: Vec<Prefix>,
}

impl RouteCache {
    /// Whether `ip` may purge.
    pub fn may_purge(&self, ip: std::net::IpAddr) -> bool {
        self.purge_from.iter().any(|p| p.contains(ip))
    }
}

/// Request buffering for cold starts (the Rivet Guard model): when the
/// picked node refuses the connection (or is marked starting), the request
/// — body included, up to `max_body_bytes` — is held and the connection
/// retried with backoff until `deadline`; then 503 with Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdStart {
    /// How long a request may be held in all.
    pub deadline: Duration,
    /// Largest body buffered to make the request replayable; a larger body
    /// is streamed and not held.
    pub max_body_bytes: u64,
    /// First wait between connection attempts (doubled up to
    /// `max_backoff`).
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ColdStart {
    fn default() -> Self {
        ColdStart {
            deadline: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// The scheme and HTTP version used towards an upstream's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// Plain HTTP/1.1 (default).
    #[default]
    Http1,
    /// Plain HTTP/2 with prior knowledge (h2c), e.g. gRPC backends.
    H2c,
    /// TLS, HTTP/2 or HTTP/1.1 as ALPN decides (h2 preferred).
    Https,
    /// TLS, HTTP/1.1 only.
    Https1,
    /// TLS, HTTP/2 only (ALPN `h2`).
    Https2,
}

impl UpstreamProtocol {
    /// Whether the nodes are reached over TLS.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            UpstreamProtocol::Https | UpstreamProtocol::Https1 | UpstreamProtocol::Https2
        )
    }
}

/// TLS towards an upstream's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the node's certificate;
    /// `None`: the `Host` sent upstream (see [`PassHost`]), else the node's
    /// DNS name, else its IP address.
    pub server_name: Option<String>,
    /// PEM bundle of trusted CAs; `None`: the system's roots (webpki-roots
    /// are not bundled: an edge host's CA set is its own).
    pub ca: Option<PathBuf>,
    /// `false` turns verification off (for tests and lab setups only; xlb
    /// logs a warning when a config does it).
    pub verify: bool,
    /// Client certificate and key presented to the nodes (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            server_name: None,
            ca: None,
            verify: true,
            client_cert: None,
        }
    }
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashOn {
    /// The client's IP address (default).
    #[default]
    ClientIp,
    /// A request header's value (client IP when absent).
    Header(HeaderName),
    /// A cookie's value (client IP when absent).
    Cookie(String),
    /// The request path and query.
    Uri,
}

/// Everything an upstream says about how its nodes are reached.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamOptions {
    pub protocol: UpstreamProtocol,
    pub tls: UpstreamTls,
    /// Most requests in flight to one node; a full node is skipped, and
    /// when all are full the client gets 503 `upstream-busy`. `None`: no
    /// limit.
    pub max_requests_per_node: Option<u32>,
    /// Idle pooled connections kept per node.
    pub max_idle_per_node: usize,
    /// How long an idle pooled connection is kept (default
    /// [`DEFAULT_IDLE_TIMEOUT`](super::upstream_keepalive::DEFAULT_IDLE_TIMEOUT);
    /// a node's `Keep-Alive: timeout=` shortens it per connection).
    pub idle_timeout: Duration,
    /// Consistent-hash key (only for `consistent_hash`).
    pub hash_on: HashOn,
    /// Sticky sessions: the cookie naming the node, set on responses.
    pub sticky_cookie: Option<String>,
    pub retry_budget: RetryBudgetConfig,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            protocol: UpstreamProtocol::default(),
            tls: UpstreamTls::default(),
            max_requests_per_node: None,
            max_idle_per_node: 64,
            idle_timeout: super::upstream_keepalive::DEFAULT_IDLE_TIMEOUT,
            hash_on: HashOn::default(),
            sticky_cookie: None,
            retry_budget: RetryBudgetConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_options_share_one_copy_and_unused_ones_are_not_kept() {
        let a = RouteOptions::dedup(Arc::new(RouteOptions {
            max_body_bytes: Some(7),
            ..RouteOptions::default()
        }));
        let b = RouteOptions::dedup(Arc::new(RouteOptions {
            max_body_bytes: Some(7),
            ..RouteOptions::default()
        }));
        assert!(Arc::ptr_eq(&a, &b), "equal options are one copy");
        let c = RouteOptions::dedup(Arc::new(RouteOptions {
            max_body_bytes: Some(8),
            ..RouteOptions::default()
        }));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(
            c.max_body_bytes,
            Some(8),
            "different options stay different"
        );
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(weak.upgrade().is_none(), "a set no route uses is freed");
        let d = RouteOptions::dedup(Arc::new(RouteOptions::default()));
        assert!(d.plugins.is_empty() && *d == RouteOptions::default());
    }
}
