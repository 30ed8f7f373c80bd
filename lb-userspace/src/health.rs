//! Health of backends, one model for both halves of the load balancer: the
//! L4 backends behind XDP (an unhealthy one leaves its VIP's Maglev table)
//! and the L7 upstream nodes (`Upstream::set_healthy`).
//!
//! Two sources, one event type:
//! - **active** ([`HealthChecker`]): probes each [`Target`] (TCP connect,
//!   HTTP or HTTPS `GET`, see [`CheckSpec`]) on its own jittered timer, under
//!   one concurrency limit, and turns results into health with the
//!   `healthy_threshold` / `unhealthy_threshold` hysteresis;
//! - **passive** ([`PassiveTracker`]): the proxy reports each request's
//!   outcome per node; failing nodes are ejected for a growing time, then
//!   readmitted on probation.
//!
//! Both send a [`HealthEvent`] whenever a target's eligibility changes, as
//! seen by a consumer that assumes every target eligible until told
//! otherwise (so a target that starts unhealthy is announced). Give both
//! channels the same sender and feed the events to a [`HealthView`], which
//! combines them: a node is eligible when the active check says healthy (or
//! there is none) and passive health has not ejected it.
//!
//! With `health: { shared_verdicts: true }` (and `config_store: etcd`),
//! L4 backends leave the Maglev tables on the fleet's verdict rather than
//! this node's alone: see [`fleet`] (the quorum rule) and
//! `store::verdicts` (votes and their watch).
//!
//! Wiring, in the daemon:
//!
//! ```text
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let checker = HealthChecker::new(CheckerConfig::default(), tx.clone());
//! checker.set_targets(l4_and_l7_targets)?;          // again on every reload
//! let tracker = Arc::new(PassiveTracker::new(node_ids, PassiveConfig::default(), tx)?);
//! tracker.spawn_driver();                            // readmissions
//! // proxy: tracker.record(node_index, Outcome::Failure(FailureKind::Status(503)))
//! let mut view = HealthView::default();
//! while let Some(ev) = rx.recv().await {
//!     if ev.source == EventSource::Active { tracker.set_active_healthy(&ev.target, ev.healthy); }
//!     if let Some(eligible) = view.apply(&ev) {
//!         // L4: rebuild the VIP's Maglev table from its backends with view.is_eligible(id)
//!         // L7: upstream.set_healthy(node_index, eligible, Instant::now())
//!     }
//! }
//! ```
mod checker;
pub mod fleet;
mod passive;
mod probe;
mod spec;

use std::{collections::HashMap, time::Instant};

pub use checker::{
    CheckerConfig, Health, HealthChecker, ProbeResult, Target, TargetStatus,
    DEFAULT_MAX_CONCURRENT_PROBES, PROBE_LOG_CAPACITY,
};
pub use passive::{
    Backoff, ErrorRateRule, FailureKind, Outcome, PassiveConfig, PassiveError, PassiveState,
    PassiveStatus, PassiveTracker, WINDOW_BUCKETS,
};
pub use spec::{
    CheckKind, CheckSpec, HttpCheck, InitialState, SpecError, StatusSet, TlsCheck,
    DEFAULT_HEALTHY_THRESHOLD, DEFAULT_INTERVAL, DEFAULT_JITTER_PERCENT, DEFAULT_TIMEOUT,
    DEFAULT_UNHEALTHY_THRESHOLD, MAX_BODY_BYTES, MAX_JITTER_PERCENT,
};

/// Which half of health made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// The active checker ([`HealthChecker`]).
    Active,
    /// Passive health ([`PassiveTracker`]).
    Passive,
}

/// A change of one target's eligibility, according to one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// The target's (or node's) id.
    pub target: String,
    /// Its new state according to `source`: true healthy / readmitted,
    /// false unhealthy / ejected.
    pub healthy: bool,
    /// Why, for logs (e.g. "3 consecutive failed checks, last: connect:
    /// Connection refused (os error 111)").
    pub reason: String,
    /// When the change happened.
    pub at: Instant,
    /// Which source changed.
    pub source: EventSource,
}

/// Whether a node may receive traffic: its active check (`None`: it has
/// none) says healthy and passive health has not ejected it.
pub fn eligible(active: Option<Health>, passive_ejected: bool) -> bool {
    active.is_none_or(Health::is_healthy) && !passive_ejected
}

/// The combined view of both sources, kept from their events.
///
/// A target it has no event about is eligible, which is what the sources
/// assume too: a target that starts ineligible is announced by an event.
#[derive(Clone, Debug, Default)]
pub struct HealthView {
    /// Targets with at least one source against them: (active down,
    /// passively ejected).
    down: HashMap<String, (bool, bool)>,
}

impl HealthView {
    /// Applies `event`; returns the target's new combined eligibility if it
    /// changed.
    pub fn apply(&mut self, event: &HealthEvent) -> Option<bool> {
        let before = self.is_eligible(&event.target);
        let entry = self.down.entry(event.target.clone()).or_default();
        match event.source {
            EventSource::Active => entry.0 = !event.healthy,
            EventSource::Passive => entry.1 = !event.healthy,
        }
        if *entry == (false, false) {
            self.down.remove(&event.target);
        }
        let after = self.is_eligible(&event.target);
        (before != after).then_some(after)
    }

    /// Whether target `id` may receive traffic.
    pub fn is_eligible(&self, id: &str) -> bool {
        !self.down.contains_key(id)
    }

    /// The active and passive verdicts against `id`: (active says
    /// unhealthy, passively ejected).
    pub fn verdicts(&self, id: &str) -> (bool, bool) {
        self.down.get(id).copied().unwrap_or_default()
    }

    /// Forgets targets that `keep` rejects (removed from the configuration).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.down.retain(|id, _| keep(id));
    }
}
