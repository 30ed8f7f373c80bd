//! The L7 and process metrics (prometheus-client families) and the
//! registry that `/metrics` encodes, XDP counters included.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use std::sync::atomic::AtomicI64;

use crate::l7::record::RequestRecord;

/// Requests by where they came and went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: String,
    pub upstream: String,
    /// `1xx` … `5xx`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub upstream: String,
    pub node: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub upstream: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub route: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabel {
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub address: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    pub address: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// Latency buckets: 0.5 ms doubling to ~16 s (16 buckets), wide enough
/// for a cache hit and a cold start alike.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric xlb updates itself (the XDP ones are read at scrape time).
#[derive(Debug)]
pub struct Metrics {
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
pub fn code_class(status: u16) -> String {
    format!("{}xx", (status / 100).clamp(1, 5))
}

impl Metrics {
    /// The metrics, registered in `registry` (names documented in docs/metrics.md).
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
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
            "L7 requests answered, by listener, route, upstream and status class.",
            m.requests.clone(),
        );
        r.register_with_unit(
            "xlb_http_request_duration",
            "From the request head to the end of the response body, by listener.",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_upstream_connect_duration",
            "Time to get a connection to the node that answered (0 for a pooled one), by upstream.",
            Unit::Seconds,
            m.connect_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_upstream_first_byte_duration",
            "From an attempt's start to the node's response head, by upstream.",
            Unit::Seconds,
            m.first_byte_duration.clone(),
        );
        r.register_with_unit(
            "xlb_http_request_body",
            "Request body bytes sent on to nodes, by listener.",
            Unit::Bytes,
            m.request_bytes.clone(),
        );
        r.register_with_unit(
            "xlb_http_response_body",
            "Response body bytes sent to clients, by listener.",
            Unit::Bytes,
            m.response_bytes.clone(),
        );
        r.register(
            "xlb_http_upstream_responses",
            "Answers of requests that reached a node, by upstream, node and status class.",
            m.node_responses.clone(),
        );
        r.register(
            "xlb_http_errors",
            "xlb's own error answers, by reason (x-xlb-error).",
            m.errors.clone(),
        );
        r.register(
            "xlb_http_retries",
            "Retries of the route's policy, by upstream and the reason of the failed attempt.",
            m.retries.clone(),
        );
        r.register(
            "xlb_http_rate_limit_verdicts",
            "Rate-limit verdicts, by route and verdict (forward, delay, reject).",
            m.rate_limit.clone(),
        );
        r.register(
            "xlb_http_cache_responses",
            "Responses of routes with a cache, by route and X-Cache status.",
            m.cache.clone(),
        );
        r.register_with_unit(
            "xlb_http_cache_response_body",
            "Response body bytes of routes with a cache, by route and X-Cache status.",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        r.register(
            "xlb_http_connections_active",
            "Client connections open now, by listener address.",
            m.connections_active.clone(),
        );
        r.register(
            "xlb_http_connections",
            "Client connections accepted, by listener address.",
            m.connections.clone(),
        );
        r.register(
            "xlb_tls_handshakes",
            "TLS handshakes completed, by listener address and version.",
            m.tls_handshakes.clone(),
        );
        r.register(
            "xlb_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener address and reason.",
            m.tls_failures.clone(),
        );
        r.register(
            "xlb_config_generation",
            "The generation of the running configuration (1 at start, +1 per reload).",
            m.config_generation.clone(),
        );
        r.register(
            "xlb_config_reloads",
            "Configuration reloads, by outcome (ok, error).",
            m.reloads.clone(),
        );
        r.register(
            "xlb_access_log_lines",
            "Access-log lines written.",
            m.log_lines.clone(),
        );
        r.register(
            "xlb_access_log_dropped",
            "Access-log lines dropped because the queue was full.",
            m.log_dropped.clone(),
        );
        r.register(
            "xlb_access_log_reopens",
            "Access-log file reopens (SIGUSR1).",
            m.log_reopens.clone(),
        );
        r.register(
            "xlb_access_log_sampled_out",
            "Requests not logged because of access_log.sample.",
            m.log_sampled_out.clone(),
        );
        let build: Family<BuildLabels, Gauge<i64, AtomicI64>> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register(
            "xlb_build_info",
            "Always 1; the version of this xlb as a label.",
            build,
        );
        m
    }

    /// Counts one finished request.
    pub fn request(&self, r: &RequestRecord) {
        let route = r.route.as_deref().unwrap_or("").to_string();
        let upstream = r.upstream.as_deref().unwrap_or("").to_string();
        let listener = r.listener.to_string();
        let code = code_class(r.status);
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.clone(),
                route: route.clone(),
                upstream: upstream.clone(),
                code: code.clone(),
            })
            .inc();
        let l = ListenerLabel { listener };
        self.request_duration
            .get_or_create(&l)
            .observe(r.total.as_secs_f64());
        self.request_bytes.get_or_create(&l).inc_by(r.bytes_in);
        self.response_bytes.get_or_create(&l).inc_by(r.bytes_out);
        if let (Some(first), Some(node)) = (r.first_byte, r.node) {
            let u = UpstreamLabel {
                upstream: upstream.clone(),
            };
            self.first_byte_duration
                .get_or_create(&u)
                .observe(first.as_secs_f64());
            if let Some(c) = r.connect {
                self.connect_duration
                    .get_or_create(&u)
                    .observe(c.as_secs_f64());
            }
            if r.error.is_none() {
                self.node_responses
                    .get_or_create(&NodeLabels {
                        upstream: upstream.clone(),
                        node: node.to_string(),
                        code,
                    })
                    .inc();
            }
        }
        if let Some(e) = &r.error {
            self.errors
                .get_or_create(&ReasonLabel { reason: e.clone() })
                .inc();
        }
        for reason in &r.retries {
            self.retries
                .get_or_create(&RetryLabels {
                    upstream: upstream.clone(),
                    reason: reason.to_string(),
                })
                .inc();
        }
        if r.rate_limit != crate::l7::record::RateLimitVerdict::None {
            self.rate_limit
                .get_or_create(&VerdictLabels {
                    route: route.clone(),
                    verdict: r.rate_limit.name().to_string(),
                })
                .inc();
        }
        if let Some(c) = r.cache {
            let labels = CacheLabels {
                route,
                status: c.to_string(),
            };
            self.cache.get_or_create(&labels).inc();
            self.cache_bytes.get_or_create(&labels).inc_by(r.bytes_out);
        }
    }
}
