//! The `l7:` section: listeners, certificates, routes and upstreams of the
//! proxy (reference: docs/l7-config.md). Fields whose syntax serde cannot
//! check (addresses that may be DNS names, header names, path patterns)
//! are kept as strings here and checked, with their position, when the
//! section is planned (`l7_plan.rs`).
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::middleware::{ColdStartYaml, HealthCheckYaml, PassiveYaml, RateLimitYaml};
pub use super::units::{Dur, Size};
pub use crate::l7::plugins::{consumers::ConsumerConfig, PluginsConfig};

/// The proxy half of the config. Absent: no proxy.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct L7Config {
    /// Worker threads, each with one SO_REUSEPORT socket per listener.
    /// Default: the number of CPUs.
    #[serde(default)]
    pub workers: Option<usize>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamYaml>,
    /// Named rate-limit rules, referenced by routes.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitYaml>,
    /// The response cache's store (one, shared by the routes with
    /// `cache: true`). Absent: defaults, when a route caches.
    #[serde(default)]
    pub cache: Option<CacheYaml>,
    /// Sources (`ADDR/LEN` or `ADDR`) trusted to have written the
    /// forwarding headers of their requests: proxies and CDNs in front of
    /// xlb. Their X-Forwarded-For chain is kept and the peer appended;
    /// from any other source the chain (and `Forwarded`, `X-Real-IP`) is
    /// dropped and X-Forwarded-For is the peer alone, so a client cannot
    /// choose the address a backend reads first. Empty (the default): no
    /// source is trusted, as befits an edge.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Plugins of every route (a route's own entry for a plugin replaces
    /// this one); reference: docs/plugins.md.
    #[serde(default)]
    pub plugins: Option<PluginsConfig>,
    /// Who may call routes with an auth plugin, with hashed secrets.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
}

/// `l7.cache`: the shared response store and who may purge it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheYaml {
    /// Bound of the store (bodies + headers + keys).
    pub max_bytes: Size,
    /// Larger responses stream through uncached.
    pub max_object_bytes: Size,
    /// Source prefixes (`ADDR/LEN` or `ADDR`) whose `PURGE` requests are
    /// honoured; empty: `PURGE` is refused on caching routes.
    pub purge_from: Vec<String>,
    /// A targeted cache-control field aimed at xlb (RFC 9213), e.g.
    /// `Xlb-Cache-Control`; it rules over `CDN-Cache-Control`.
    pub targeted_field: Option<String>,
}

impl Default for CacheYaml {
    fn default() -> Self {
        CacheYaml {
            max_bytes: Size(256 << 20),
            max_object_bytes: Size(8 << 20),
            purge_from: Vec::new(),
            targeted_field: None,
        }
    }
}

/// Protocol limits every listener applies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub header_read_timeout: Dur,
    pub max_header_bytes: Size,
    pub max_headers: usize,
    /// 0: unlimited.
    pub max_body_bytes: Size,
    pub idle_timeout: Dur,
    pub max_connections: usize,
    /// 0: no cap (see `ServerLimits::max_connections_per_source`).
    pub max_connections_per_source: u32,
    pub max_concurrent_streams: u32,
    pub max_pending_reset_streams: usize,
    pub tls_handshake_timeout: Dur,
    pub drain_timeout: Dur,
    /// Serve plain HTTP/1.1 requests on xlb's own path (see
    /// `ServerLimits::own_http1`); false: hyper serves every request.
    pub own_http1: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_read_timeout: Dur(Duration::from_secs(10)),
            max_header_bytes: Size(64 * 1024),
            max_headers: 100,
            max_body_bytes: Size(0),
            idle_timeout: Dur(Duration::from_secs(60)),
            max_connections: 10_000,
            max_connections_per_source: 0,
            max_concurrent_streams: 256,
            max_pending_reset_streams: 20,
            tls_handshake_timeout: Dur(Duration::from_secs(10)),
            drain_timeout: Dur(Duration::from_secs(30)),
            own_http1: true,
        }
    }
}

/// A certificate (chain + key) and the SNI names it answers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub default: bool,
}

/// One address the proxy accepts connections on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port` (`[v6]:port`).
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Answer every request with a 308 to `https://` on this port.
    #[serde(default)]
    pub redirect_https: Option<u16>,
}

/// TLS of a listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate ids; empty: every certificate.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Default `[h2, http/1.1]`.
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_cert_required: Option<bool>,
}

/// One route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub id: String,
    /// Listener names; empty: every listener.
    #[serde(default)]
    pub listeners: Vec<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/x*`: prefix; `/{p}`: matchit pattern; otherwise exact.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
    /// Required unless the route only redirects.
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub pass_host: PassHostConfig,
    #[serde(default)]
    pub upstream_host: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub replace_prefix: Option<String>,
    #[serde(default)]
    pub request_headers: HeaderEditsConfig,
    #[serde(default)]
    pub response_headers: HeaderEditsConfig,
    #[serde(default)]
    pub retries: Option<usize>,
    #[serde(default)]
    pub retry_backoff: Option<Dur>,
    #[serde(default)]
    pub max_body_bytes: Option<Size>,
    #[serde(default)]
    pub redirect_https: Option<u16>,
    /// Names of `l7.rate_limits` rules; all must pass.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    #[serde(default)]
    pub cold_start: Option<ColdStartYaml>,
    /// GET/HEAD answered from the shared response cache (`l7.cache`).
    #[serde(default)]
    pub cache: bool,
    /// `Upgrade` protocols forwarded; absent: `[websocket]`; `[]`: none.
    /// `h2c` is refused (see `l7::upgrade`).
    #[serde(default)]
    pub upgrades: Option<Vec<String>>,
    /// The route's plugins (docs/plugins.md).
    #[serde(default)]
    pub plugins: Option<PluginsConfig>,
}

/// A header condition: `value` (exact), `prefix`, or neither (present).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Per-route timeouts; absent ones take the defaults of
/// `l7::options::Timeouts`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default)]
    pub connect: Option<Dur>,
    #[serde(default)]
    pub send: Option<Dur>,
    #[serde(default)]
    pub read: Option<Dur>,
    #[serde(default)]
    pub idle: Option<Dur>,
}

/// See `l7::options::PassHost`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PassHostConfig {
    #[default]
    Pass,
    Node,
    Rewrite,
}

/// Header edits (names and values checked when planned).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsConfig {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// One upstream (pool of nodes).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamYaml {
    pub id: String,
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default)]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    #[serde(default)]
    pub tls: UpstreamTlsConfig,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub dns_refresh: Option<Dur>,
    #[serde(default)]
    pub slow_start: Option<Dur>,
    #[serde(default)]
    pub max_requests_per_node: u32,
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    #[serde(default)]
    pub retry_budget: RetryBudgetYaml,
    #[serde(default)]
    pub health_check: Option<HealthCheckYaml>,
    #[serde(default)]
    pub passive: Option<PassiveYaml>,
}

fn default_algorithm() -> String {
    "round_robin".into()
}

/// See `l7::options::UpstreamProtocol`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolConfig {
    #[default]
    Http1,
    H2c,
    Https,
    Https1,
    Https2,
}

/// TLS towards the nodes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    pub verify: bool,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        UpstreamTlsConfig {
            server_name: None,
            ca: None,
            verify: true,
            client_cert: None,
            client_key: None,
        }
    }
}

/// One node: `ip:port` or `dns-name:port`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Pooled upstream connections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub max_idle_per_node: usize,
    pub idle_timeout: Dur,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            max_idle_per_node: 64,
            idle_timeout: Dur(crate::l7::upstream_keepalive::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// See `l7::options::RetryBudgetConfig`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetYaml {
    pub ratio: f64,
    pub min_per_sec: u32,
    pub window: Dur,
}

impl Default for RetryBudgetYaml {
    fn default() -> Self {
        RetryBudgetYaml {
            ratio: 0.2,
            min_per_sec: 10,
            window: Dur(Duration::from_secs(10)),
        }
    }
}
