//! What `/status.json` (and so `/status` and `xlb status`) shows: the
//! daemon's topology as last published, request and error rates per route
//! and per upstream node over the last seconds, and the latest errors.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::l7::record::RequestRecord;

/// The configured pieces and their health, published by the daemon at
/// start, after each reload and on each health change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Topology {
    pub instance: String,
    pub generation: u64,
    pub vips: Vec<VipView>,
    pub listeners: Vec<ListenerView>,
    pub routes: Vec<RouteView>,
    pub upstreams: Vec<UpstreamView>,
    pub denied: Vec<DeniedView>,
}

/// An L4 VIP and its backends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VipView {
    pub name: String,
    /// `203.0.113.10:80/tcp`.
    pub address: String,
    pub mode: String,
    pub backends: Vec<NodeView>,
}

/// An L7 listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListenerView {
    pub name: String,
    pub address: String,
    pub tls: bool,
}

/// An L7 route, with its live rates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteView {
    pub listener: String,
    pub id: String,
    pub hosts: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub requests_per_s: f64,
    #[serde(default)]
    pub errors_per_s: f64,
}

/// An upstream and its nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamView {
    pub id: String,
    pub nodes: Vec<NodeView>,
}

/// An L7 node or an L4 backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeView {
    pub address: String,
    pub weight: u32,
    /// In its pool (L7) or in the Maglev table (L4): health checks say up.
    pub healthy: bool,
    #[serde(default)]
    pub requests_per_s: f64,
    #[serde(default)]
    pub errors_per_s: f64,
}

/// A source denied at the NIC.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeniedView {
    pub prefix: String,
    /// Seconds left, `None` for never.
    pub expires_in_s: Option<u64>,
}

/// One recent error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentError {
    pub time: String,
    pub request_id: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    /// xlb's reason, or `upstream-status` for a node's own 5xx.
    pub reason: String,
    pub route: Option<String>,
    pub node: Option<String>,
}

/// Everything the status page shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_s: u64,
    /// The window the rates are averaged over.
    pub rate_window_s: f64,
    #[serde(flatten)]
    pub topology: Topology,
    pub recent_errors: Vec<RecentError>,
}

/// How many recent errors are kept.
const RECENT_ERRORS: usize = 50;
/// Rates are averaged over up to this many one-second snapshots.
const WINDOW: usize = 10;

/// What the rates are kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Route(Arc<str>),
    Node(Arc<str>, SocketAddr),
}

/// Requests and errors per key, as read at one moment.
type Counts = HashMap<Key, (u64, u64)>;

/// The live requests and errors of one key. A request adds to it through
/// a handle cached per thread (`series_cache`), so counting takes no lock;
/// the lock below is taken only to make a key's first handle and once a
/// second for the snapshot.
#[derive(Debug, Default)]
pub(super) struct LiveCount {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl LiveCount {
    /// Counts one request.
    pub(super) fn add(&self, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The live part: counts, their snapshots and the recent errors.
pub struct Live {
    started: Instant,
    counts: Mutex<HashMap<Key, Arc<LiveCount>>>,
    snapshots: Mutex<VecDeque<(Instant, Counts)>>,
    errors: Mutex<VecDeque<RecentError>>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            started: Instant::now(),
            counts: Mutex::default(),
            snapshots: Mutex::default(),
            errors: Mutex::default(),
        }
    }
}

/// Whether a record counts as an error on the status page: xlb's own
/// error answers and every 5xx.
pub fn is_error(r: &RequestRecord) -> bool {
    r.error.is_some() || r.status >= 500
}

impl Live {
    /// The counter of `key`, made on first use.
    pub(super) fn count(&self, key: Key) -> Arc<LiveCount> {
        match self.counts.lock() {
            Ok(mut c) => c.entry(key).or_default().clone(),
            // A poisoned map: count into a detached counter rather than
            // fail the request.
            Err(_) => Arc::default(),
        }
    }

    /// The counts now.
    fn read(&self) -> Counts {
        let Ok(c) = self.counts.lock() else {
            return Counts::new();
        };
        c.iter()
            .map(|(k, v)| {
                let n = (
                    v.requests.load(Ordering::Relaxed),
                    v.errors.load(Ordering::Relaxed),
                );
                (k.clone(), n)
            })
            .collect()
    }

    /// Keeps one request's error for the page (its counts go through
    /// [`Live::count`]'s handles).
    pub fn request(&self, r: &RequestRecord) {
        let error = is_error(r);
        if error {
            let time = jiff::Timestamp::try_from(r.time)
                .map(|t| format!("{t:.3}"))
                .unwrap_or_default();
            let e = RecentError {
                time,
                request_id: r.request_id_str().to_string(),
                client: r.client.to_string(),
                method: r.method.to_string(),
                host: r.host_str().to_string(),
                path: r.path().to_string(),
                status: r.status,
                reason: r.error.clone().unwrap_or_else(|| "upstream-status".into()),
                route: r.route.as_deref().map(str::to_string),
                node: r.node.map(|n| n.to_string()),
            };
            if let Ok(mut q) = self.errors.lock() {
                q.push_front(e);
                q.truncate(RECENT_ERRORS);
            }
        }
    }

    /// Takes a snapshot for the rates (called every second).
    pub fn tick(&self) {
        let now = self.read();
        if let Ok(mut s) = self.snapshots.lock() {
            s.push_back((Instant::now(), now));
            while s.len() > WINDOW {
                s.pop_front();
            }
        }
    }

    /// The status of `topology` with the rates and errors filled in.
    pub fn status(&self, topology: &Topology) -> Status {
        let now = self.read();
        let (window, base) = match self.snapshots.lock().ok().and_then(|s| s.front().cloned()) {
            Some((at, base)) => (at.elapsed().as_secs_f64(), base),
            None => (0.0, Counts::new()),
        };
        let rate = |key: Key| -> (f64, f64) {
            if window < 0.5 {
                return (0.0, 0.0);
            }
            let (r1, e1) = now.get(&key).copied().unwrap_or_default();
            let (r0, e0) = base.get(&key).copied().unwrap_or_default();
            let per_s = |d: u64| (d as f64 / window * 100.0).round() / 100.0;
            (per_s(r1.saturating_sub(r0)), per_s(e1.saturating_sub(e0)))
        };
        let mut t = topology.clone();
        for r in &mut t.routes {
            (r.requests_per_s, r.errors_per_s) = rate(Key::Route(r.id.as_str().into()));
        }
        for u in &mut t.upstreams {
            let id: Arc<str> = u.id.as_str().into();
            for n in &mut u.nodes {
                if let Ok(addr) = n.address.parse() {
                    (n.requests_per_s, n.errors_per_s) = rate(Key::Node(id.clone(), addr));
                }
            }
        }
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs(),
            rate_window_s: (window * 10.0).round() / 10.0,
            topology: t,
            recent_errors: self
                .errors
                .lock()
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// Seconds since the Unix epoch, for the page's "as of" line.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
