//! Passive health (outlier detection): request outcomes reported by the
//! proxy eject a failing node for a while, then readmit it on probation.
//!
//! The request path ([`PassiveTracker::record`]) touches only the node's
//! atomics: a consecutive-failure counter and a ring of time buckets that
//! hold request and failure counts, each bucket one `AtomicU64` (so a
//! bucket is reset and counted in one compare-and-swap, never torn). A
//! mutex is taken only to decide an ejection or a readmission, which is
//! rare, and then with `try_lock` on the request path: if another thread is
//! deciding, this failure does not wait (the next one tries again).
//!
//! Rules, per node (each can be turned off):
//! - `consecutive_failures` failures in a row eject it;
//! - an error rate above `percent` over the sliding `window`, with at least
//!   `min_requests` requests in it, ejects it.
//!
//! An ejection lasts `base_ejection × k` ([`Backoff::Linear`], Envoy's rule)
//! or `base_ejection × 2^(k−1)` ([`Backoff::Exponential`]), capped at
//! `max_ejection`, where `k` counts this node's ejections; `k` starts over
//! once the node has stayed admitted for `max_ejection`. When it ends, the
//! node is readmitted on *probation* (half-open): it is eligible again, the
//! first outcome reported decides — a success admits it for good, a failure
//! ejects it again at once, for longer.
//!
//! Max-ejection guard: at most `max_ejection_percent` of the pool's nodes
//! are ejected at a time, but always at least one (as Envoy does, so that
//! small pools can eject at all) — and, unless `max_ejection_percent` is
//! 100, never a node whose ejection would leave no node serving (not ejected
//! and not marked down by the active checker, see
//! [`PassiveTracker::set_active_healthy`]). Reason: passive signals are
//! indirect (a bad deploy of one endpoint, a client sending requests that
//! fail everywhere) and ejecting the last node turns degraded service into
//! none; an active check, which probes the node itself, is the tool that
//! may take a whole pool down.
use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering},
        Arc, Mutex, MutexGuard, TryLockError, Weak,
    },
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::{
    sync::{mpsc, Notify},
    task::JoinHandle,
};

use super::{EventSource, HealthEvent};

/// Time buckets of the error-rate window: the window slides by a tenth.
pub const WINDOW_BUCKETS: usize = 10;

/// The longest the driver task sleeps between two looks at the nodes (it
/// also ends within this long once its tracker is dropped).
const DRIVER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// How an ejection grows with the number of ejections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backoff {
    /// `base × k` (Envoy's outlier detection).
    #[default]
    Linear,
    /// `base × 2^(k−1)`.
    Exponential,
}

/// The error-rate rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRateRule {
    /// Eject when failures exceed this percentage of the window's requests
    /// (default 50; 0–99).
    pub percent: u8,
    /// … and the window holds at least this many requests (default 20), so
    /// that one failure out of two requests does not eject.
    pub min_requests: u32,
    /// Sliding window (default 10 s), counted in [`WINDOW_BUCKETS`] buckets:
    /// the requests of the last 9–10 tenths of it count.
    pub window: Duration,
}

impl Default for ErrorRateRule {
    fn default() -> Self {
        ErrorRateRule {
            percent: 50,
            min_requests: 20,
            window: Duration::from_secs(10),
        }
    }
}

/// Settings of a [`PassiveTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Failures in a row that eject a node (default 5, Envoy's
    /// `consecutive_5xx`); `None`: rule off.
    pub consecutive_failures: Option<u32>,
    /// The error-rate rule (default on: 50 % of ≥ 20 requests in 10 s);
    /// `None`: rule off. It catches nodes that fail every other request,
    /// which never fail five times in a row.
    pub error_rate: Option<ErrorRateRule>,
    /// First ejection's length (default 30 s, Envoy's).
    pub base_ejection: Duration,
    /// Longest ejection (default 300 s, Envoy's).
    pub max_ejection: Duration,
    /// Growth of successive ejections (default linear).
    pub backoff: Backoff,
    /// Most nodes ejected at once, in percent of the pool (default 50; see
    /// the module documentation for the guard).
    pub max_ejection_percent: u8,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            consecutive_failures: Some(5),
            error_rate: Some(ErrorRateRule::default()),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            backoff: Backoff::Linear,
            max_ejection_percent: 50,
        }
    }
}

/// An invalid [`PassiveConfig`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PassiveError {
    /// `consecutive_failures` is `Some(0)`.
    #[error("consecutive_failures must be at least 1")]
    ZeroConsecutive,
    /// `base_ejection` is zero or `max_ejection` is below it.
    #[error("base_ejection must be positive and max_ejection at least base_ejection")]
    Ejection,
    /// `max_ejection_percent` above 100.
    #[error("max_ejection_percent {0} is above 100")]
    MaxPercent(u8),
    /// The error-rate rule's percent is 100 or more, `min_requests` is 0, or
    /// the window is shorter than one nanosecond per bucket.
    #[error("error_rate: percent must be below 100, min_requests at least 1, window positive")]
    ErrorRate,
    /// Two nodes share an id.
    #[error("two nodes have the id {0:?}")]
    DuplicateNode(String),
}

impl PassiveConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), PassiveError> {
        if self.consecutive_failures == Some(0) {
            return Err(PassiveError::ZeroConsecutive);
        }
        if self.base_ejection.is_zero() || self.max_ejection < self.base_ejection {
            return Err(PassiveError::Ejection);
        }
        if self.max_ejection_percent > 100 {
            return Err(PassiveError::MaxPercent(self.max_ejection_percent));
        }
        if let Some(rule) = &self.error_rate {
            if rule.percent >= 100
                || rule.min_requests == 0
                || rule.window.as_nanos() < WINDOW_BUCKETS as u128
            {
                return Err(PassiveError::ErrorRate);
            }
        }
        Ok(())
    }

    /// How long the `k`-th ejection (from 1) lasts.
    pub fn ejection_for(&self, k: u32) -> Duration {
        let k = k.max(1);
        let d = match self.backoff {
            Backoff::Linear => self.base_ejection.saturating_mul(k),
            Backoff::Exponential => self
                .base_ejection
                .saturating_mul(1u32.checked_shl(k - 1).unwrap_or(u32::MAX)),
        };
        d.min(self.max_ejection)
    }
}

/// Why a request failed, for the ejection's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection could not be made (refused, unreachable, TLS).
    Connect,
    /// No (complete) response in time.
    Timeout,
    /// The connection broke mid-request.
    Reset,
    /// The node answered with this status (a 5xx, normally).
    Status(u16),
    /// Anything else the proxy counts as the node's fault.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Connect => f.write_str("connect failure"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Reset => f.write_str("connection reset"),
            FailureKind::Status(s) => write!(f, "HTTP {s}"),
            FailureKind::Other => f.write_str("failure"),
        }
    }
}

/// One request's outcome on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The node served it.
    Success,
    /// The node failed it.
    Failure(FailureKind),
}

/// Where a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PassiveState {
    /// Serving.
    Admitted,
    /// Ejected until this instant.
    Ejected { until: Instant },
    /// Readmitted, serving; its next outcome decides.
    Probation,
}

/// A node's passive state and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveStatus {
    /// Where it stands.
    pub state: PassiveState,
    /// Ejections counted for the backoff.
    pub times_ejected: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Requests and failures in the error-rate window (zero when the rule
    /// is off).
    pub window_requests: u64,
    pub window_failures: u64,
    /// Ejections prevented by the max-ejection guard.
    pub blocked_ejections: u64,
}

const ADMITTED: u8 = 0;
const EJECTED: u8 = 1;
const PROBATION: u8 = 2;

/// Bucket layout: epoch (the bucket's slot number, mod 2²⁴) | requests (20
/// bits) | failures (20 bits). Counts saturate at 2²⁰ − 1 per bucket, far
/// above what one node serves in a tenth of a window.
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << 24) - 1;

fn pack(epoch: u64, requests: u64, failures: u64) -> u64 {
    (epoch & EPOCH_MASK) << (2 * COUNT_BITS) | requests << COUNT_BITS | failures
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (
        v >> (2 * COUNT_BITS),
        (v >> COUNT_BITS) & COUNT_MAX,
        v & COUNT_MAX,
    )
}

/// The live state of one node; shared by `Arc` between the trackers of
/// successive reloads (as the L7 `NodeState` is).
struct Cell {
    state: AtomicU8,
    consecutive: AtomicU32,
    times_ejected: AtomicU32,
    /// ns since the shared base.
    ejected_until: AtomicU64,
    admitted_since: AtomicU64,
    active_down: AtomicBool,
    blocked: AtomicU64,
    window: [AtomicU64; WINDOW_BUCKETS],
}

impl Cell {
    fn new() -> Cell {
        Cell {
            state: AtomicU8::new(ADMITTED),
            consecutive: AtomicU32::new(0),
            times_ejected: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            admitted_since: AtomicU64::new(0),
            active_down: AtomicBool::new(false),
            blocked: AtomicU64::new(0),
            window: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn count(&self, slot: u64, failed: bool) {
        let bucket = &self.window[(slot % WINDOW_BUCKETS as u64) as usize];
        let epoch = slot & EPOCH_MASK;
        let _ = bucket.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            let (e, r, f) = unpack(v);
            Some(if e != epoch {
                pack(epoch, 1, u64::from(failed))
            } else {
                pack(
                    e,
                    (r + 1).min(COUNT_MAX),
                    (f + u64::from(failed)).min(COUNT_MAX),
                )
            })
        });
    }

    /// (requests, failures) of the buckets of the window ending at `slot`.
    fn window_sum(&self, slot: u64) -> (u64, u64) {
        let epoch = slot & EPOCH_MASK;
        self.window.iter().fold((0, 0), |(rs, fs), b| {
            let (e, r, f) = unpack(b.load(Ordering::Relaxed));
            if epoch.wrapping_sub(e) & EPOCH_MASK < WINDOW_BUCKETS as u64 {
                (rs + r, fs + f)
            } else {
                (rs, fs)
            }
        })
    }

    fn clear_window(&self) {
        for b in &self.window {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// What [`PassiveTracker`]s of one pool share across reloads.
struct Shared {
    /// Origin of every cell's timestamps.
    base: Instant,
    /// Held to decide ejections and readmissions (never per request).
    decide: Mutex<()>,
}

/// Passive health of one pool (an L7 upstream's nodes), fed by the proxy.
///
/// Nodes are addressed by index on the request path (the same index as the
/// L7 `Upstream`'s node ids) and by id in events; give a node the same id as
/// its active-check target so that [`super::HealthView`] can combine them.
pub struct PassiveTracker {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    cells: Vec<Arc<Cell>>,
    config: PassiveConfig,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<HealthEvent>,
    notify: Arc<Notify>,
}

impl fmt::Debug for PassiveTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveTracker")
            .field("ids", &self.ids)
            .field("config", &self.config)
            .finish()
    }
}

/// Why an ejection is attempted.
enum Cause {
    Consecutive(u32),
    Rate { requests: u64, failures: u64 },
    Probation,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PassiveTracker {
    /// A tracker of nodes `ids` (node `i` is `ids[i]`), all admitted,
    /// reporting on `events`.
    pub fn new(
        ids: Vec<String>,
        config: PassiveConfig,
        events: mpsc::UnboundedSender<HealthEvent>,
    ) -> Result<PassiveTracker, PassiveError> {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            decide: Mutex::new(()),
        });
        PassiveTracker::assemble(ids, config, events, shared, &HashMap::new())
    }

    /// The tracker that replaces `previous` on a reload: a node whose id
    /// was in `previous` keeps its state (ejection, backoff, counters); a
    /// new one starts admitted. Both trackers may run side by side while
    /// requests on the old configuration finish: they decide under one lock.
    pub fn with_previous(
        ids: Vec<String>,
        config: PassiveConfig,
        events: mpsc::UnboundedSender<HealthEvent>,
        previous: &PassiveTracker,
    ) -> Result<PassiveTracker, PassiveError> {
        let old: HashMap<&str, &Arc<Cell>> = previous
            .ids
            .iter()
            .map(String::as_str)
            .zip(&previous.cells)
            .collect();
        PassiveTracker::assemble(ids, config, events, Arc::clone(&previous.shared), &old)
    }

    fn assemble(
        ids: Vec<String>,
        config: PassiveConfig,
        events: mpsc::UnboundedSender<HealthEvent>,
        shared: Arc<Shared>,
        old: &HashMap<&str, &Arc<Cell>>,
    ) -> Result<PassiveTracker, PassiveError> {
        config.validate()?;
        let mut index = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if index.insert(id.clone(), i).is_some() {
                return Err(PassiveError::DuplicateNode(id.clone()));
            }
        }
        let cells = ids
            .iter()
            .map(|id| match old.get(id.as_str()) {
                Some(&cell) => Arc::clone(cell),
                None => Arc::new(Cell::new()),
            })
            .collect();
        Ok(PassiveTracker {
            ids,
            index,
            cells,
            config,
            shared,
            events,
            notify: Arc::new(Notify::new()),
        })
    }

    /// The node ids, by index.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The index of node `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The settings.
    pub fn config(&self) -> &PassiveConfig {
        &self.config
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.shared.base).as_nanos())
            .unwrap_or(u64::MAX / 2)
    }

    fn instant(&self, ns: u64) -> Instant {
        self.shared.base + Duration::from_nanos(ns)
    }

    fn slot(&self, ns: u64) -> u64 {
        match &self.config.error_rate {
            Some(rule) => {
                let width = (rule.window.as_nanos() / WINDOW_BUCKETS as u128).max(1);
                (u128::from(ns) / width) as u64
            }
            None => 0,
        }
    }

    /// Records one request's outcome on node `node`, now. Lock-free unless
    /// it ejects the node.
    ///
    /// # Panics
    ///
    /// If `node` is out of range.
    #[inline]
    pub fn record(&self, node: usize, outcome: Outcome) {
        self.record_at(node, outcome, Instant::now());
    }

    /// [`PassiveTracker::record`] at an explicit time (tests, simulations).
    pub fn record_at(&self, node: usize, outcome: Outcome, now: Instant) {
        let cell = &self.cells[node];
        let state = cell.state.load(Ordering::Acquire);
        if state == EJECTED {
            // Requests that started before the ejection: their outcome says
            // nothing new, and the counters restart at readmission anyway.
            return;
        }
        let ns = self.ns(now);
        let failure = match outcome {
            Outcome::Success => None,
            Outcome::Failure(kind) => Some(kind),
        };
        if self.config.error_rate.is_some() {
            cell.count(self.slot(ns), failure.is_some());
        }
        let Some(kind) = failure else {
            if cell.consecutive.load(Ordering::Relaxed) != 0 {
                cell.consecutive.store(0, Ordering::Relaxed);
            }
            if state == PROBATION
                && cell
                    .state
                    .compare_exchange(PROBATION, ADMITTED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                cell.admitted_since.store(ns, Ordering::Relaxed);
            }
            return;
        };
        let n = cell
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let cause = if state == PROBATION {
            Some(Cause::Probation)
        } else if self.config.consecutive_failures.is_some_and(|c| n >= c) {
            Some(Cause::Consecutive(n))
        } else {
            self.config.error_rate.and_then(|rule| {
                let (requests, failures) = cell.window_sum(self.slot(ns));
                (requests >= u64::from(rule.min_requests)
                    && failures * 100 > u64::from(rule.percent) * requests)
                    .then_some(Cause::Rate { requests, failures })
            })
        };
        if let Some(cause) = cause {
            let guard = match self.shared.decide.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                // Another thread is deciding; the next failure retries.
                Err(TryLockError::WouldBlock) => return,
            };
            self.eject(node, cause, kind, now);
            drop(guard);
        }
    }

    /// Ejects node `node` if it is not already and the guard allows it.
    /// Called with the decision lock held.
    fn eject(&self, node: usize, cause: Cause, kind: FailureKind, now: Instant) {
        let cell = &self.cells[node];
        let current = cell.state.load(Ordering::Acquire);
        if current == EJECTED {
            return;
        }
        if !self.may_eject(node) {
            cell.blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ns = self.ns(now);
        let mut k = cell.times_ejected.load(Ordering::Relaxed);
        let max_ns = u64::try_from(self.config.max_ejection.as_nanos()).unwrap_or(u64::MAX);
        if current == ADMITTED
            && ns.saturating_sub(cell.admitted_since.load(Ordering::Relaxed)) >= max_ns
        {
            // Well-behaved for a whole max_ejection: the backoff starts over.
            k = 0;
        }
        k = k.saturating_add(1);
        let length = self.config.ejection_for(k);
        let until = ns.saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX / 2));
        if cell
            .state
            .compare_exchange(current, EJECTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // A probation node admitted by a concurrent success: one success
            // keeps it.
            return;
        }
        cell.times_ejected.store(k, Ordering::Relaxed);
        cell.ejected_until.store(until, Ordering::Relaxed);
        let why = match cause {
            Cause::Consecutive(n) => format!("{n} consecutive failures (last: {kind})"),
            Cause::Rate { requests, failures } => format!(
                "{failures} of {requests} requests failed in the last {} (above {}%; last: {kind})",
                humantime::format_duration(
                    self.config.error_rate.map_or(Duration::ZERO, |r| r.window)
                ),
                self.config.error_rate.map_or(0, |r| r.percent),
            ),
            Cause::Probation => format!("failed on probation ({kind})"),
        };
        // Sent under the decision lock: one node's events are in order.
        let _ = self.events.send(HealthEvent {
            target: self.ids[node].clone(),
            healthy: false,
            reason: format!(
                "ejected for {} (ejection {k}): {why}",
                humantime::format_duration(length)
            ),
            at: now,
            source: EventSource::Passive,
        });
        self.notify.notify_one();
    }

    /// The max-ejection guard (see the module documentation).
    fn may_eject(&self, node: usize) -> bool {
        let pct = usize::from(self.config.max_ejection_percent);
        if pct >= 100 {
            return true;
        }
        let n = self.cells.len();
        let ejected = self
            .cells
            .iter()
            .filter(|c| c.state.load(Ordering::Acquire) == EJECTED)
            .count();
        let limit = (n * pct / 100).max(1);
        if ejected + 1 > limit {
            return false;
        }
        self.cells.iter().enumerate().any(|(i, c)| {
            i != node
                && c.state.load(Ordering::Acquire) != EJECTED
                && !c.active_down.load(Ordering::Relaxed)
        })
    }

    /// Readmits, on probation, every node whose ejection is over at `now`;
    /// returns how many. The driver task calls it; tests may call it
    /// directly.
    pub fn tick(&self, now: Instant) -> usize {
        let ns = self.ns(now);
        let _guard = lock(&self.shared.decide);
        let mut readmitted = 0;
        for (node, cell) in self.cells.iter().enumerate() {
            if cell.state.load(Ordering::Acquire) != EJECTED {
                continue;
            }
            let until = cell.ejected_until.load(Ordering::Relaxed);
            if until > ns {
                continue;
            }
            cell.consecutive.store(0, Ordering::Relaxed);
            cell.clear_window();
            cell.state.store(PROBATION, Ordering::Release);
            readmitted += 1;
            let k = cell.times_ejected.load(Ordering::Relaxed);
            let _ = self.events.send(HealthEvent {
                target: self.ids[node].clone(),
                healthy: true,
                reason: format!(
                    "readmitted on probation after {} (ejection {k})",
                    humantime::format_duration(self.config.ejection_for(k))
                ),
                at: now,
                source: EventSource::Passive,
            });
        }
        readmitted
    }

    /// When the earliest ejection ends, if any node is ejected.
    pub fn next_readmission(&self) -> Option<Instant> {
        self.cells
            .iter()
            .filter(|c| c.state.load(Ordering::Acquire) == EJECTED)
            .map(|c| c.ejected_until.load(Ordering::Relaxed))
            .min()
            .map(|ns| self.instant(ns))
    }

    /// Starts the task that readmits nodes when their ejection ends. It
    /// holds the tracker weakly and ends within a second of the tracker's
    /// drop.
    pub fn spawn_driver(self: &Arc<Self>) -> JoinHandle<()> {
        let weak: Weak<PassiveTracker> = Arc::downgrade(self);
        let notify = Arc::clone(&self.notify);
        tokio::spawn(async move {
            // Ends when the tracker is gone.
            loop {
                let sleep = {
                    let Some(tracker) = weak.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    tracker.tick(now);
                    tracker
                        .next_readmission()
                        .map_or(DRIVER_MAX_SLEEP, |t| t.saturating_duration_since(now))
                        .min(DRIVER_MAX_SLEEP)
                };
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = notify.notified() => {}
                }
            }
        })
    }

    /// Tells the guard whether node `id` is otherwise able to serve (its
    /// active check says healthy; also false for a drained node): nodes
    /// down for other reasons count against "never eject the last serving
    /// node". Returns false if `id` is not a node here.
    pub fn set_active_healthy(&self, id: &str, healthy: bool) -> bool {
        match self.index.get(id) {
            Some(&i) => {
                self.cells[i].active_down.store(!healthy, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether node `node` is ejected (probation counts as not ejected).
    pub fn is_ejected(&self, node: usize) -> bool {
        self.cells[node].state.load(Ordering::Acquire) == EJECTED
    }

    /// Node `node`'s passive state at `now`.
    pub fn status(&self, node: usize, now: Instant) -> PassiveStatus {
        let cell = &self.cells[node];
        let state = match cell.state.load(Ordering::Acquire) {
            EJECTED => PassiveState::Ejected {
                until: self.instant(cell.ejected_until.load(Ordering::Relaxed)),
            },
            PROBATION => PassiveState::Probation,
            _ => PassiveState::Admitted,
        };
        let (window_requests, window_failures) = match self.config.error_rate {
            Some(_) => cell.window_sum(self.slot(self.ns(now))),
            None => (0, 0),
        };
        PassiveStatus {
            state,
            times_ejected: cell.times_ejected.load(Ordering::Relaxed),
            consecutive_failures: cell.consecutive.load(Ordering::Relaxed),
            window_requests,
            window_failures,
            blocked_ejections: cell.blocked.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_pack_and_slide() {
        let cell = Cell::new();
        for _ in 0..3 {
            cell.count(5, true);
        }
        cell.count(5, false);
        cell.count(14, false);
        // Slots 5..=14 are the window ending at 14.
        assert_eq!(cell.window_sum(14), (5, 3));
        // At slot 15, slot 5 has left the window (and bucket 5 is reused).
        assert_eq!(cell.window_sum(15), (1, 0));
        cell.count(15, true);
        assert_eq!(cell.window_sum(15), (2, 1));
    }

    #[test]
    fn ejection_lengths() {
        let mut c = PassiveConfig {
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            ..PassiveConfig::default()
        };
        let secs = |c: &PassiveConfig, k| c.ejection_for(k).as_secs();
        assert_eq!([1, 2, 3, 4].map(|k| secs(&c, k)), [10, 20, 30, 35]);
        c.backoff = Backoff::Exponential;
        assert_eq!([1, 2, 3, 40].map(|k| secs(&c, k)), [10, 20, 35, 35]);
    }
}
