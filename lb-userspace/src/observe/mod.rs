//! Observability: Prometheus metrics (L7 from the request records, XDP
//! from the pinned per-CPU maps at scrape time), the JSON access log, and
//! the status page, served on the observe listener (`observe.listen`).
//!
//! The proxy (`l7`, a lower layer) hands each finished request to
//! [`Observe`] through `l7::record::RecordSink`; the daemon installs it and
//! publishes the topology (VIPs, listeners, routes, nodes and their
//! health, denied sources) at start, after reloads and on health changes.
pub mod access_log;
pub mod exposition;
pub mod log_line;
pub mod metrics;
mod series_cache;
pub mod server;
pub mod status;
pub mod status_page;
pub mod xdp;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use arc_swap::ArcSwap;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
    registry::Registry,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    config::observe::ObserveConfig,
    l7::record::{RecordSink, RequestRecord},
};
use access_log::{AccessLog, LogCounters};
use metrics::{AddressLabel, Metrics, OutcomeLabel, TlsFailureLabels, TlsLabels};
use status::{Live, Status, Topology};

/// The metrics, the access log and the status of one daemon.
pub struct Observe {
    registry: Registry,
    metrics: Metrics,
    live: Live,
    topology: Arc<ArcSwap<Topology>>,
    log: Option<AccessLog>,
    sample: f64,
}

impl std::fmt::Debug for Observe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observe").finish_non_exhaustive()
    }
}

/// Health of L7 nodes and L4 backends from the last published topology,
/// read at scrape time.
#[derive(Debug)]
struct HealthCollector(Arc<ArcSwap<Topology>>);

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0.load();
        let mut rows: Vec<(Vec<(&'static str, String)>, i64)> = Vec::new();
        for u in &t.upstreams {
            for n in &u.nodes {
                rows.push((
                    vec![
                        ("kind", "l7".into()),
                        ("pool", u.id.clone()),
                        ("node", n.address.clone()),
                    ],
                    i64::from(n.healthy),
                ));
            }
        }
        for v in &t.vips {
            for b in &v.backends {
                rows.push((
                    vec![
                        ("kind", "l4".into()),
                        ("pool", v.name.clone()),
                        ("node", b.address.clone()),
                    ],
                    i64::from(b.healthy),
                ));
            }
        }
        if !rows.is_empty() {
            let g = ConstGauge::new(0i64);
            let mut fam = encoder.encode_descriptor(
                "xlb_health_up",
                "1 when a node (l7) or backend (l4) is in its pool, by kind, pool (upstream or VIP) and node.",
                None,
                g.metric_type(),
            )?;
            for (labels, v) in &rows {
                ConstGauge::new(*v).encode(fam.encode_family(labels)?)?;
            }
        }
        let g = ConstGauge::new(i64::try_from(t.denied.len()).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "xlb_denied_sources",
            "Source prefixes in the XDP deny list now.",
            None,
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

/// What [`Observe::start`] started: stop it with [`ObserveTasks::stop`].
pub struct ObserveTasks {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The address `/metrics` is served on.
    pub addr: SocketAddr,
}

impl ObserveTasks {
    /// Stops the listener and the timers.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Observe {
    /// Builds the metrics and opens the access log of `cfg`; `xdp` is the
    /// instance's pin directory and name when the datapath runs.
    pub fn new(cfg: &ObserveConfig, xdp: Option<(PathBuf, String)>) -> anyhow::Result<Observe> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let topology = Arc::new(ArcSwap::from_pointee(Topology::default()));
        registry.register_collector(Box::new(HealthCollector(topology.clone())));
        if let Some((pin_dir, instance)) = xdp {
            registry.register_collector(Box::new(xdp::XdpCollector::new(pin_dir, instance)));
        }
        let (log, sample) = match &cfg.access_log {
            Some(l) => {
                let counters = LogCounters {
                    lines: metrics.log_lines.clone(),
                    dropped: metrics.log_dropped.clone(),
                    reopens: metrics.log_reopens.clone(),
                };
                let log = AccessLog::open(&l.path, l.queue, counters).map_err(|e| {
                    anyhow::anyhow!("observe.access_log.path {}: {e}", l.path.display())
                })?;
                (Some(log), l.sample)
            }
            None => (None, 1.0),
        };
        Ok(Observe {
            registry,
            metrics,
            live: Live::default(),
            topology,
            log,
            sample,
        })
    }

    /// Binds `cfg.listen` and starts serving, the rate ticker and the
    /// SIGUSR1 handler (access-log reopen).
    pub async fn start(self: &Arc<Self>, cfg: &ObserveConfig) -> anyhow::Result<ObserveTasks> {
        let listener = server::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let mut usr1 = signal(SignalKind::user_defined1())
            .map_err(|e| anyhow::anyhow!("installing the SIGUSR1 handler: {e}"))?;
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::serve(listener, self.clone(), rx))];
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                me.live.tick();
            }
        }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                match &me.log {
                    Some(l) => {
                        log::info!("SIGUSR1: reopening the access log");
                        l.reopen();
                    }
                    None => log::info!("SIGUSR1: no access log to reopen"),
                }
            }
        }));
        Ok(ObserveTasks {
            shutdown,
            tasks,
            addr,
        })
    }

    /// Replaces the topology the status page and health metrics show.
    pub fn publish(&self, t: Topology) {
        self.metrics
            .config_generation
            .set(i64::try_from(t.generation).unwrap_or(i64::MAX));
        self.topology.store(Arc::new(t));
    }

    /// Counts a configuration reload's outcome.
    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.metrics
            .reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// What the status page shows now.
    pub fn status(&self) -> Status {
        self.live.status(&self.topology.load())
    }
}

impl RecordSink for Observe {
    fn request(&self, record: RequestRecord) {
        self.metrics.request(&record, &self.live);
        self.live.request(&record);
        if let Some(log) = &self.log {
            // Errors are always logged; the rest by the sample rate.
            if self.sample >= 1.0
                || status::is_error(&record)
                || rand::random::<f64>() < self.sample
            {
                log.push(&record);
            } else {
                self.metrics.log_sampled_out.inc();
            }
        }
    }

    fn tls_handshake(&self, listener: SocketAddr, outcome: Result<&'static str, &'static str>) {
        let address = metrics::Addr(listener);
        match outcome {
            Ok(version) => self
                .metrics
                .tls_handshakes
                .get_or_create(&TlsLabels { address, version })
                .inc(),
            Err(reason) => self
                .metrics
                .tls_failures
                .get_or_create(&TlsFailureLabels { address, reason })
                .inc(),
        };
    }

    fn connection(&self, listener: SocketAddr, opened: bool) {
        let l = AddressLabel {
            address: metrics::Addr(listener),
        };
        if opened {
            self.metrics.connections.get_or_create(&l).inc();
            self.metrics.connections_active.get_or_create(&l).inc();
        } else {
            self.metrics.connections_active.get_or_create(&l).dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::l7::record::RateLimitVerdict;

    const METRICS_MD: &str = include_str!("../../../docs/metrics.md");
    const DASHBOARD: &str = include_str!("../../../scripts/grafana-xlb.json");

    fn observe() -> Observe {
        let cfg = ObserveConfig {
            listen: crate::config::observe::DEFAULT_LISTEN.parse().unwrap(),
            access_log: None,
        };
        Observe::new(&cfg, None).unwrap()
    }

    fn record() -> RequestRecord {
        RequestRecord {
            time: SystemTime::now(),
            listener: "web".into(),
            client: "192.0.2.1:1000".parse().unwrap(),
            method: http::Method::GET,
            host: http::HeaderValue::from_static("a"),
            target: "/".parse().unwrap(),
            protocol: "HTTP/1.1",
            status: 502,
            bytes_in: 3,
            bytes_out: 7,
            total: Duration::from_millis(3),
            connect: Some(Duration::ZERO),
            first_byte: Some(Duration::from_millis(2)),
            route: Some("r".into()),
            upstream: Some("u".into()),
            node: Some("127.0.0.1:1".parse().unwrap()),
            retries: vec!["upstream-refused"],
            cache: Some("MISS"),
            rate_limit: RateLimitVerdict::Delay,
            error: Some("upstream-refused".into()),
            request_id: http::HeaderValue::from_static("x"),
            tls_version: None,
            sni: None,
            complete: true,
        }
    }

    /// Every metric xlb exposes (L7, health, process) is documented under
    /// its sample name, and every metric the dashboard queries is
    /// documented, so neither can drift from the code silently.
    #[test]
    fn every_metric_and_every_dashboard_query_is_documented() {
        let obs = observe();
        obs.request(record());
        let mut ok = record();
        (ok.status, ok.error) = (200, None);
        obs.request(ok);
        obs.tls_handshake("127.0.0.1:443".parse().unwrap(), Ok("TLSv1.3"));
        obs.tls_handshake("127.0.0.1:443".parse().unwrap(), Err("error"));
        obs.connection("127.0.0.1:443".parse().unwrap(), true);
        obs.reloaded(true);
        obs.publish(Topology {
            upstreams: vec![status::UpstreamView {
                id: "u".into(),
                nodes: vec![status::NodeView::default()],
            }],
            ..Topology::default()
        });
        let text = obs.encode_metrics().unwrap();
        let mut names = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                names.push(match kind {
                    "counter" => format!("{name}_total"),
                    _ => name.to_string(),
                });
            }
        }
        assert!(names.len() >= 25, "{names:?}");
        for n in &names {
            assert!(
                METRICS_MD.contains(&format!("`{n}`")),
                "{n} is not in docs/metrics.md"
            );
        }
        let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
        let mut queried = 0;
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("xlb_") {
                        continue;
                    }
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        METRICS_MD.contains(&format!("`{base}`")),
                        "the dashboard queries {word}, not in docs/metrics.md"
                    );
                    queried += 1;
                }
            }
        }
        assert!(queried >= 14);
    }

    #[test]
    fn a_record_moves_the_counters_it_names() {
        let obs = observe();
        obs.request(record());
        let text = obs.encode_metrics().unwrap();
        for line in [
            r#"xlb_http_requests_total{listener="web",route="r",upstream="u",code="5xx"} 1"#,
            r#"xlb_http_errors_total{reason="upstream-refused"} 1"#,
            r#"xlb_http_retries_total{upstream="u",reason="upstream-refused"} 1"#,
            r#"xlb_http_rate_limit_verdicts_total{route="r",verdict="delay"} 1"#,
            r#"xlb_http_cache_responses_total{route="r",status="MISS"} 1"#,
            r#"xlb_http_response_body_bytes_total{listener="web"} 7"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // xlb's own error is not a node response.
        assert!(!text.contains("xlb_http_upstream_responses_total{"));
        assert_eq!(obs.status().recent_errors.len(), 1);
    }
}
