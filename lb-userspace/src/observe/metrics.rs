//! The L7 and process metrics (prometheus-client families) and the
//! registry that `/metrics` encodes, XDP counters included.
use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use std::sync::atomic::AtomicI64;

use super::{
    series_cache::{self, Key, Series},
    status::{is_error, Key as LiveKey, Live},
};
use crate::l7::record::RequestRecord;

/// A socket address as a label value (encoded only when scraped, so a
/// request allocates no string for it).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl EncodeLabelValue for Addr {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        write!(encoder, "{}", self.0)
    }
}

// Label values are `Arc<str>` (cloned from the request record: a
// reference count, no copy) or `&'static str`: a request's metrics
// allocate nothing once their series exist.

/// Requests by where they came and went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    /// `1xx` … `5xx`.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub upstream: Arc<str>,
    pub node: Addr,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub upstream: Arc<str>,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub route: Arc<str>,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: Arc<str>,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabel {
    pub address: Addr,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub address: Addr,
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    pub address: Addr,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Latency buckets: 0.5 ms doubling to ~16 s (16 buckets), wide enough
/// for a cache hit and a cold start alike.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

// prometheus-client ends each help text with a period itself.

/// Every metric xlb updates itself (the XDP ones are read at scrape time).
#[derive(Debug)]
pub struct Metrics {
    /// This instance's key in [`series_cache`].
    id: u64,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ListenerLabel, Histogram, fn() -> Histogram>,
    pub connect_duration: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    pub first_byte_duration: Family<UpstreamLabel, Histogram, fn() -> Histogram>,
    pub request_bytes: Family<ListenerLabel, Counter>,
    pub response_bytes: Family<ListenerLabel, Counter>,
    pub node_responses: Family<NodeLabels, Counter>,
    pub errors: Family<ReasonLabel, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub rate_limit: Family<VerdictLabels, Counter>,
    pub cache: Family<CacheLabels, Counter>,
    pub cache_bytes: Family<CacheLabels, Counter>,
    pub connections_active: Family<AddressLabel, Gauge>,
    pub connections: Family<AddressLabel, Counter>,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub tls_failures: Family<TlsFailureLabels, Counter>,
    pub config_generation: Gauge,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub log_lines: Counter,
    pub log_dropped: Counter,
    pub log_reopens: Counter,
    pub log_sampled_out: Counter,
}

/// `1xx` … `5xx`.
pub fn code_class(status: u16) -> &'static str {
    ["1xx", "2xx", "3xx", "4xx", "5xx"][usize::from((status / 100).clamp(1, 5) - 1)]
}

/// The empty label value (no route matched), shared.
fn empty_ref() -> &'static Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(""))
}

/// Tells metrics instances apart in the per-thread [`series_cache`].
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Metrics {
    /// The metrics, registered in `registry` (names documented in docs/metrics.md).
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            connect_duration: Family::new_with_constructor(latency),
            first_byte_duration: Family::new_with_constructor(latency),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            node_responses: Family::default(),
            errors: Family::default(),
            retries: Family::default(),
            rate_limit: Family::default(),
            cache: Family::default(),
            cache_bytes: Family::default(),
            connections_active: Family::default(),
            connections: Family::default(),
            tls_handshakes: Family::default(),
            tls_failures: Family::default(),
            config_generation: Gauge::default(),
            reloads: Family::default(),
            log_lines: Counter::default(),
            log_dropped: Counter::default(),
            log_reopens: Counter::default(),
            log_sampled_out: Counter::default(),
        };
        let r = registry;
        r.register(
            "xlb_http_requests",
            "L7 requests answered, by listener, route, upstream and status class",
            m.requests.clone(),
        );
        r.register_with_unit(
            "xlb_http_request_duration",
            "From the request head to the end of the response body, by listener",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_upstream_connect_duration",
            "Time to get a connection to the node that answered (0 for a pooled one), by upstream",
            Unit::Seconds,
            m.connect_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_upstream_first_byte_duration",
            "From an attempt's start to the node's response head, by upstream",
            Unit::Seconds,
            m.first_byte_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_request_body",
            "Request body bytes sent on to nodes, by listener",
            Unit::Bytes,
            m.request_bytes.clone(),
        );
        r.register_with_unit(
            "xlb_http_response_body",
            "Response body bytes sent to clients, by listener",
            Unit::Bytes,
            m.response_bytes.clone(),
        );
        r.register(
            "xlb_http_upstream_responses",
            "Answers of requests that reached a node, by upstream, node and status class",
            m.node_responses.clone(),
        );
        r.register(
            "xlb_http_errors",
            "xlb's own error answers, by reason (x-xlb-error)",
            m.errors.clone(),
        );
        r.register(
            "xlb_http_retries",
            "Retries of the route's policy, by upstream and the reason of the failed attempt",
            m.retries.clone(),
        );
        r.register(
            "xlb_http_rate_limit_verdicts",
            "Rate-limit verdicts, by route and verdict (forward, delay, reject)",
            m.rate_limit.clone(),
        );
        r.register(
            "xlb_http_cache_responses",
            "Responses of routes with a cache, by route and X-Cache status",
            m.cache.clone(),
        );
        r.register_with_unit(
            "xlb_http_cache_response_body",
            "Response body bytes of routes with a cache, by route and X-Cache status",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        r.register(
            "xlb_http_connections_active",
            "Client connections open now, by listener address",
            m.connections_active.clone(),
        );
        r.register(
            "xlb_http_connections",
            "Client connections accepted, by listener address",
            m.connections.clone(),
        );
        r.register(
            "xlb_tls_handshakes",
            "TLS handshakes completed, by listener address and version",
            m.tls_handshakes.clone(),
        );
        r.register(
            "xlb_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener address and reason",
            m.tls_failures.clone(),
        );
        r.register(
            "xlb_config_generation",
            "The generation of the running configuration (1 at start, +1 per reload)",
            m.config_generation.clone(),
        );
        r.register(
            "xlb_config_reloads",
            "Configuration reloads, by outcome (ok, error)",
            m.reloads.clone(),
        );
        r.register(
            "xlb_access_log_lines",
            "Access-log lines written",
            m.log_lines.clone(),
        );
        r.register(
            "xlb_access_log_dropped",
            "Access-log lines dropped because the queue was full",
            m.log_dropped.clone(),
        );
        r.register(
            "xlb_access_log_reopens",
            "Access-log file reopens (SIGUSR1)",
            m.log_reopens.clone(),
        );
        r.register(
            "xlb_access_log_sampled_out",
            "Requests not logged because of access_log.sample",
            m.log_sampled_out.clone(),
        );
        let build: Family<BuildLabels, Gauge<i64, AtomicI64>> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register(
            "xlb_build_info",
            "Always 1; the version of this xlb as a label",
            build,
        );
        m
    }

    /// Counts one finished request (through this thread's
    /// [`series_cache`] for the series every request touches).
    /// `live` gets the status page's counts of the route and the node.
    pub fn request(&self, r: &RequestRecord, live: &Live) {
        let empty = empty_ref();
        let route = r.route.as_ref().unwrap_or(empty);
        let upstream = r.upstream.as_ref().unwrap_or(empty);
        let class = usize::from((r.status / 100).clamp(1, 5) - 1);
        let code = code_class(r.status);
        let node = r.node;
        let key = Key {
            metrics: self.id,
            listener: Key::addr(&r.listener),
            route: Key::addr(route),
            upstream: Key::addr(upstream),
            node,
        };
        let make = || {
            let l = ListenerLabel {
                listener: r.listener.clone(),
            };
            Series {
                _strings: [r.listener.clone(), route.clone(), upstream.clone()],
                requests: Default::default(),
                request_duration: self.request_duration.get_or_create(&l).clone(),
                response_bytes: self.response_bytes.get_or_create(&l).clone(),
                request_bytes: None,
                first_byte: None,
                connect: None,
                node_responses: Default::default(),
                live_route: None,
                live_node: None,
            }
        };
        series_cache::with(key, make, |s| {
            s.requests[class]
                .get_or_insert_with(|| {
                    self.requests
                        .get_or_create(&RequestLabels {
                            listener: r.listener.clone(),
                            route: route.clone(),
                            upstream: upstream.clone(),
                            code,
                        })
                        .clone()
                })
                .inc();
            s.request_duration.observe(r.total.as_secs_f64());
            if r.bytes_in > 0 {
                s.request_bytes
                    .get_or_insert_with(|| {
                        self.request_bytes
                            .get_or_create(&ListenerLabel {
                                listener: r.listener.clone(),
                            })
                            .clone()
                    })
                    .inc_by(r.bytes_in);
            }
            s.response_bytes.inc_by(r.bytes_out);
            let error = is_error(r);
            if r.route.is_some() {
                s.live_route
                    .get_or_insert_with(|| live.count(LiveKey::Route(route.clone())))
                    .add(error);
            }
            if let (Some(_), Some(node)) = (&r.upstream, node) {
                s.live_node
                    .get_or_insert_with(|| live.count(LiveKey::Node(upstream.clone(), node)))
                    .add(error);
            }
            if let (Some(first), Some(node)) = (r.first_byte, node) {
                let u = || UpstreamLabel {
                    upstream: upstream.clone(),
                };
                s.first_byte
                    .get_or_insert_with(|| self.first_byte_duration.get_or_create(&u()).clone())
                    .observe(first.as_secs_f64());
                if let Some(c) = r.connect {
                    s.connect
                        .get_or_insert_with(|| self.connect_duration.get_or_create(&u()).clone())
                        .observe(c.as_secs_f64());
                }
                if r.error.is_none() {
                    s.node_responses[class]
                        .get_or_insert_with(|| {
                            self.node_responses
                                .get_or_create(&NodeLabels {
                                    upstream: upstream.clone(),
                                    node: Addr(node),
                                    code,
                                })
                                .clone()
                        })
                        .inc();
                }
            }
        });
        // Rarer, or only on routes that have them: straight to the family.
        if let Some(e) = &r.error {
            self.errors
                .get_or_create(&ReasonLabel {
                    reason: Arc::from(e.as_str()),
                })
                .inc();
        }
        for &reason in &r.retries {
            self.retries
                .get_or_create(&RetryLabels {
                    upstream: upstream.clone(),
                    reason,
                })
                .inc();
        }
        if r.rate_limit != crate::l7::record::RateLimitVerdict::None {
            self.rate_limit
                .get_or_create(&VerdictLabels {
                    route: route.clone(),
                    verdict: r.rate_limit.name(),
                })
                .inc();
        }
        if let Some(status) = r.cache {
            let labels = CacheLabels {
                route: route.clone(),
                status,
            };
            self.cache.get_or_create(&labels).inc();
            self.cache_bytes.get_or_create(&labels).inc_by(r.bytes_out);
        }
    }
}
