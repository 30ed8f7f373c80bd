//! The active checker: one timer per target, probes bounded by a shared
//! concurrency limit, thresholds turning probe results into health, and a
//! [`HealthEvent`] on every change of a target's eligibility.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::{
    runtime::Handle,
    sync::{broadcast, mpsc, Semaphore},
    task::JoinHandle,
};

use super::{
    probe::{self, Plan},
    spec::{CheckSpec, InitialState, SpecError},
    EventSource, HealthEvent,
};

/// Default bound on probes running at once, over all targets: enough for
/// thousands of targets at 2 s intervals (a probe on a LAN takes
/// milliseconds), few enough that a burst of timeouts cannot eat the file
/// descriptors.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 128;

/// How many probe results [`HealthChecker::subscribe_probes`] buffers per
/// subscriber before the oldest are dropped (the subscriber then sees
/// `RecvError::Lagged`).
pub const PROBE_LOG_CAPACITY: usize = 4096;

/// One thing to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The target's identity: its state is kept across
    /// [`HealthChecker::set_targets`] calls under this id. Put the address
    /// in it if a new address should start a new history (e.g.
    /// `l4/web/192.0.2.11:80`, `l7/api/10.0.0.1:8080`).
    pub id: String,
    /// Where to probe.
    pub addr: SocketAddr,
    /// Local address to bind the probe's socket to (port chosen by the
    /// kernel); `None`: the kernel's choice.
    pub source: Option<IpAddr>,
    /// What to probe and how to judge it.
    pub spec: CheckSpec,
}

impl Target {
    /// A target with no source address.
    pub fn new(id: impl Into<String>, addr: SocketAddr, spec: CheckSpec) -> Target {
        Target {
            id: id.into(),
            addr,
            source: None,
            spec,
        }
    }
}

/// A target's health as the active checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Eligible for traffic.
    Healthy,
    /// Not eligible.
    Unhealthy,
}

impl Health {
    /// Whether the target should receive traffic.
    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }
}

/// The state of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// Current health (before the first probe: from
    /// [`CheckSpec::initial`]).
    pub health: Health,
    /// Whether the first probe, when it comes, decides alone
    /// ([`InitialState::HealthyUntilFirstCheck`],
    /// [`InitialState::UnknownUntilFirstCheck`]).
    pub pending_first_check: bool,
    /// Successes in a row, up to the latest probe.
    pub consecutive_successes: u32,
    /// Failures in a row, up to the latest probe.
    pub consecutive_failures: u32,
    /// Probes completed since the target was added.
    pub probes: u64,
    /// When the latest probe completed.
    pub last_probe: Option<Instant>,
    /// Why the latest failed probe failed.
    pub last_error: Option<String>,
    /// When `health` last changed (or the target was added).
    pub since: Instant,
}

/// One completed probe, for metrics and logs
/// ([`HealthChecker::subscribe_probes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The target's id.
    pub target: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub error: String,
    /// From the start of the connect to the verdict.
    pub latency: Duration,
    /// When it completed; equal to the `at` of the [`HealthEvent`] it
    /// caused, if any.
    pub at: Instant,
}

/// Checker-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckerConfig {
    /// Probes running at once, over all targets (default
    /// [`DEFAULT_MAX_CONCURRENT_PROBES`]); a probe due while all slots are
    /// taken waits for one, and its timeout starts once it has one.
    pub max_concurrent_probes: usize,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        CheckerConfig {
            max_concurrent_probes: DEFAULT_MAX_CONCURRENT_PROBES,
        }
    }
}

/// Runs the active health checks of a changing set of targets.
///
/// Cloning gives another handle to the same checker; when the last handle
/// is dropped, every probe task stops. Must be created inside a tokio
/// runtime (its tasks run on that runtime).
#[derive(Clone)]
pub struct HealthChecker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("targets", &lock(&self.inner.targets).len())
            .finish()
    }
}

struct Inner {
    targets: Mutex<HashMap<String, Entry>>,
    ctx: Ctx,
    runtime: Handle,
}

/// What every probe task needs.
#[derive(Clone)]
struct Ctx {
    events: mpsc::UnboundedSender<HealthEvent>,
    probes: broadcast::Sender<ProbeResult>,
    permits: Arc<Semaphore>,
}

struct Entry {
    target: Target,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// A target's state, shared between the checker and the target's task.
struct Shared {
    id: String,
    state: Mutex<State>,
}

struct State {
    status: TargetStatus,
    /// Bumped when the task is replaced or the target removed: a result of
    /// an older task (which may still finish after its `abort`) is ignored.
    generation: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for entry in lock(&self.targets).values() {
            entry.task.abort();
        }
    }
}

/// Locks `m`, ignoring poisoning: every critical section here leaves the
/// data consistent at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HealthChecker {
    /// A checker with no target, reporting changes on `events`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(config: CheckerConfig, events: mpsc::UnboundedSender<HealthEvent>) -> HealthChecker {
        let (probes, _) = broadcast::channel(PROBE_LOG_CAPACITY);
        HealthChecker {
            inner: Arc::new(Inner {
                targets: Mutex::new(HashMap::new()),
                ctx: Ctx {
                    events,
                    probes,
                    permits: Arc::new(Semaphore::new(config.max_concurrent_probes.max(1))),
                },
                runtime: Handle::current(),
            }),
        }
    }

    /// Makes `targets` the set of checked targets.
    ///
    /// A target whose id was already checked keeps its state (health,
    /// counters); if its address, source or spec changed, its probing
    /// restarts with the new settings (a new random first delay) and the
    /// thresholds of the new spec apply to the counts so far. A target no
    /// longer listed stops at once (no event is sent for it afterwards). A
    /// new target starts in its spec's [`InitialState`]; if that state is not
    /// eligible, a `healthy: false` event announces it, so that a consumer
    /// that assumes "healthy until told otherwise" stays right.
    ///
    /// Everything is validated first (specs, duplicate ids, CA files): on
    /// error nothing changes.
    pub fn set_targets(&self, targets: Vec<Target>) -> Result<(), SpecError> {
        let mut ids = HashSet::new();
        let mut plans = Vec::with_capacity(targets.len());
        for t in &targets {
            if !ids.insert(t.id.as_str()) {
                return Err(SpecError::DuplicateTarget(t.id.clone()));
            }
            plans.push(Plan::new(&t.spec, t.addr)?);
        }
        let mut map = lock(&self.inner.targets);
        map.retain(|id, entry| {
            if ids.contains(id.as_str()) {
                return true;
            }
            lock(&entry.shared.state).generation += 1;
            entry.task.abort();
            false
        });
        let now = Instant::now();
        for (target, plan) in targets.into_iter().zip(plans) {
            if let Some(entry) = map.get_mut(&target.id) {
                if entry.target == target {
                    continue;
                }
                let generation = {
                    let mut state = lock(&entry.shared.state);
                    state.generation += 1;
                    state.generation
                };
                entry.task.abort();
                entry.task = self.spawn(&target, plan, Arc::clone(&entry.shared), generation);
                entry.target = target;
                continue;
            }
            let initial = target.spec.initial;
            let health = if initial.eligible() {
                Health::Healthy
            } else {
                Health::Unhealthy
            };
            let shared = Arc::new(Shared {
                id: target.id.clone(),
                state: Mutex::new(State {
                    status: TargetStatus {
                        health,
                        pending_first_check: initial.first_check_decides(),
                        consecutive_successes: 0,
                        consecutive_failures: 0,
                        probes: 0,
                        last_probe: None,
                        last_error: None,
                        since: now,
                    },
                    generation: 0,
                }),
            });
            if !initial.eligible() {
                let reason = match initial {
                    InitialState::Unhealthy => format!(
                        "new target: unhealthy until {} consecutive successful checks",
                        target.spec.healthy_threshold
                    ),
                    _ => "new target: not eligible until its first check".to_string(),
                };
                let _ = self.inner.ctx.events.send(HealthEvent {
                    target: target.id.clone(),
                    healthy: false,
                    reason,
                    at: now,
                    source: EventSource::Active,
                });
            }
            let task = self.spawn(&target, plan, Arc::clone(&shared), 0);
            map.insert(
                target.id.clone(),
                Entry {
                    target,
                    shared,
                    task,
                },
            );
        }
        Ok(())
    }

    fn spawn(
        &self,
        target: &Target,
        plan: Plan,
        shared: Arc<Shared>,
        generation: u64,
    ) -> JoinHandle<()> {
        let ctx = self.inner.ctx.clone();
        let (addr, source, spec) = (target.addr, target.source, target.spec.clone());
        self.inner.runtime.spawn(probe_loop(
            ctx, shared, generation, plan, addr, source, spec,
        ))
    }

    /// The state of target `id`; `None` if it is not checked.
    pub fn state(&self, id: &str) -> Option<TargetStatus> {
        let map = lock(&self.inner.targets);
        let entry = map.get(id)?;
        let status = lock(&entry.shared.state).status.clone();
        Some(status)
    }

    /// The active half of eligibility: false only for a checked target that
    /// is unhealthy (a target without an active check is eligible).
    pub fn is_eligible(&self, id: &str) -> bool {
        self.state(id).is_none_or(|s| s.health.is_healthy())
    }

    /// Every checked target with its state, sorted by id (for the admin API).
    pub fn statuses(&self) -> Vec<(Target, TargetStatus)> {
        let map = lock(&self.inner.targets);
        let mut all: Vec<(Target, TargetStatus)> = map
            .values()
            .map(|e| (e.target.clone(), lock(&e.shared.state).status.clone()))
            .collect();
        all.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        all
    }

    /// Every probe result from now on (for metrics and logs). A slow
    /// subscriber loses the oldest results beyond [`PROBE_LOG_CAPACITY`].
    pub fn subscribe_probes(&self) -> broadcast::Receiver<ProbeResult> {
        self.inner.ctx.probes.subscribe()
    }
}

/// `interval ± jitter_percent %`, uniformly.
fn jittered(interval: Duration, jitter_percent: u8) -> Duration {
    if jitter_percent == 0 {
        return interval;
    }
    let spread = f64::from(jitter_percent) / 100.0;
    interval.mul_f64(1.0 + rand::random_range(-spread..=spread))
}

/// The life of one target's checks: a random first delay, then probes
/// `interval` (jittered) apart, start to start, one at a time.
async fn probe_loop(
    ctx: Ctx,
    shared: Arc<Shared>,
    generation: u64,
    plan: Plan,
    addr: SocketAddr,
    source: Option<IpAddr>,
    spec: CheckSpec,
) {
    let interval_ns = u64::try_from(spec.interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let first = Duration::from_nanos(rand::random_range(0..interval_ns));
    let mut next = tokio::time::Instant::now() + first;
    // Ends when the task is aborted (target removed or replaced, checker
    // dropped) or its generation is outdated.
    loop {
        tokio::time::sleep_until(next).await;
        let Ok(permit) = ctx.permits.acquire().await else {
            return;
        };
        let started = tokio::time::Instant::now();
        let result = probe::run(&plan, addr, source, spec.timeout).await;
        drop(permit);
        let latency = started.elapsed();
        if !record(&ctx, &shared, generation, &spec, result, latency) {
            return;
        }
        next = (started + jittered(spec.interval, spec.jitter_percent))
            .max(tokio::time::Instant::now());
    }
}

/// Applies one probe result to the target's state; sends the probe result
/// and, on a change, the event. False if this task is outdated.
fn record(
    ctx: &Ctx,
    shared: &Shared,
    generation: u64,
    spec: &CheckSpec,
    result: Result<(), String>,
    latency: Duration,
) -> bool {
    let mut state = lock(&shared.state);
    if state.generation != generation {
        return false;
    }
    let at = Instant::now();
    let s = &mut state.status;
    s.probes += 1;
    s.last_probe = Some(at);
    let ok = result.is_ok();
    let error = match result {
        Ok(()) => {
            s.consecutive_successes = s.consecutive_successes.saturating_add(1);
            s.consecutive_failures = 0;
            String::new()
        }
        Err(why) => {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.consecutive_successes = 0;
            s.last_error = Some(why.clone());
            why
        }
    };
    let was = s.health;
    let (now, reason) = if s.pending_first_check {
        s.pending_first_check = false;
        match ok {
            true => (Health::Healthy, "first check passed".to_string()),
            false => (Health::Unhealthy, format!("first check failed: {error}")),
        }
    } else if was.is_healthy() && s.consecutive_failures >= spec.unhealthy_threshold {
        let reason = format!(
            "{} consecutive failed checks, last: {error}",
            s.consecutive_failures
        );
        (Health::Unhealthy, reason)
    } else if !was.is_healthy() && s.consecutive_successes >= spec.healthy_threshold {
        let reason = format!("{} consecutive successful checks", s.consecutive_successes);
        (Health::Healthy, reason)
    } else {
        (was, String::new())
    };
    let _ = ctx.probes.send(ProbeResult {
        target: shared.id.clone(),
        ok,
        error,
        latency,
        at,
    });
    if now != was {
        s.health = now;
        s.since = at;
        // Sent under the target's lock: the events of one target are in
        // the order of its changes.
        let _ = ctx.events.send(HealthEvent {
            target: shared.id.clone(),
            healthy: now.is_healthy(),
            reason,
            at,
            source: EventSource::Active,
        });
    }
    true
}
