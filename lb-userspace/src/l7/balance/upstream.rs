//! The nodes of an upstream and their live, shared state.
//!
//! [`Upstream`] is immutable configuration (the [`Node`] list, the
//! [`UpstreamConfig`]) plus one [`NodeState`] per node made of atomics: the
//! requests in flight, the latency EWMA, the health flag and the slow-start
//! ramp. Every algorithm reads that state; only the proxy (through
//! [`Upstream::begin`] / [`InFlight`]) and the health checker (through
//! [`Upstream::set_healthy`]) write it. Nothing here locks.
//!
//! A reload builds a new `Upstream` with [`Upstream::with_previous`]: a node
//! whose address was already in the previous upstream keeps its very
//! `NodeState` (the same `Arc`), so requests still in flight against the old
//! configuration are counted against the node in the new one, and health,
//! latency and an unfinished ramp carry over. A node new to the upstream
//! starts healthy and, with slow start configured, ramps.
//!
//! Weights: algorithms compare *effective* weights, the node's configured
//! weight times [`WEIGHT_SCALE`] (times the slow-start fraction while it
//! ramps), so that a ramp is smooth even for weight 1 and all arithmetic
//! stays integral (`u32::MAX · 1000 < 2⁴²`, sums of 2²⁰ nodes fit a `u64`).
use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lb_common::maglev::murmur3_32;

use super::BalanceError;

/// Effective weight of a node at its full configured weight 1.
pub const WEIGHT_SCALE: u64 = 1000;

/// Fraction of its weight (per mille of [`WEIGHT_SCALE`]) a node gets at the
/// instant it is readmitted with slow start: 10 %, then linearly up to
/// 100 % at the end of the window (Envoy's default `min_weight_percent`).
/// Not zero, so that a readmitted node gets some traffic at once (and with
/// it latency samples) instead of none for the first ticks.
pub const SLOW_START_FLOOR_PERMILLE: u64 = 100;

/// Seeds of the two 32-bit halves of a node's sticky-cookie id.
const COOKIE_SEED_HI: u32 = 0x786c_6263; // "xlbc"
const COOKIE_SEED_LO: u32 = 0x6f6f_6b69; // "ooki"

/// `NodeState::ramp_from` when the node is not ramping.
const NO_RAMP: u64 = u64::MAX;

/// One upstream node, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// Index of the node in its upstream (`Upstream::nodes()[id].id == id`).
    pub id: usize,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight; 0 drains the node: no algorithm picks it (sticky
    /// cookies naming it included).
    pub weight: u32,
}

impl Node {
    /// The node's identity bytes: address octets then port, big-endian (6
    /// bytes for IPv4, 18 for IPv6; an IPv4-mapped IPv6 address counts as
    /// IPv4). The Maglev table and the sticky-cookie id hash these, so both
    /// depend on the address only, never on the node's position in the list.
    pub fn identity(&self) -> Vec<u8> {
        let mut key = match self.addr.ip().to_canonical() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        key.extend_from_slice(&self.addr.port().to_be_bytes());
        key
    }
}

/// Latency-EWMA parameters: the peak EWMA of Finagle and tower/Linkerd
/// (whose 10 s decay is the default here).
///
/// A node without a sample (new, or readmitted after being unhealthy: its
/// old estimate described the node before it went down) has no estimate;
/// P2C then compares it on in-flight requests alone (see `p2c.rs`), rather
/// than with a made-up initial value that would either starve it (too high)
/// or flood it (too low) until its first response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EwmaConfig {
    /// Time constant τ: a sample `Δt` after the previous one weighs
    /// `1 − e^(−Δt/τ)`; and when it is *read*, the estimate decays towards 0
    /// by `e^(−idle/τ)` since its last sample, so that a node that was slow
    /// and then starved of traffic is eventually probed again. Zero: the
    /// estimate is the last sample, with no decay.
    pub decay: Duration,
    /// A failed request counts as at least this slow, so that a node that
    /// fails fast (connection refused) does not look like the fastest one.
    pub failure_penalty: Duration,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
        }
    }
}

/// Per-upstream settings of the shared state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Slow-start window: a node readmitted by [`Upstream::set_healthy`],
    /// or added to a running upstream by [`Upstream::with_previous`], goes
    /// from 10 % of its weight to 100 % linearly over this long. Zero: off.
    /// Weighted algorithms (round robin, random, least connections, P2C)
    /// honour it; consistent hash and sticky cookies do not (affinity wins).
    pub slow_start: Duration,
    /// The P2C latency estimate.
    pub ewma: EwmaConfig,
}

/// The live state of one node; shared between the proxy's workers and, by
/// `Arc`, between successive [`Upstream`]s of a reload.
pub struct NodeState {
    /// Origin of the nanosecond timestamps below.
    base: Instant,
    /// Read on every pick, written only by health changes.
    healthy: AtomicBool,
    /// Start of the slow-start ramp, ns since `base`, or `NO_RAMP`. Read on
    /// every pick, written on readmission and once when the ramp ends.
    ramp_from: AtomicU64,
    /// Written on every request: on cache lines of their own, so that
    /// round robin and random, which only read the fields above, do not
    /// miss on lines that other cores keep writing.
    hot: Hot,
}

/// The per-request counters of a [`NodeState`]. 128-byte aligned: x86
/// prefetches cache lines in pairs (the size crossbeam's `CachePadded`
/// uses there).
#[repr(align(128))]
struct Hot {
    in_flight: AtomicU64,
    /// Latency estimate in microseconds (`f64` bits).
    ewma_us: AtomicU64,
    /// Time of the last sample, ns since `base`.
    ewma_at: AtomicU64,
    /// Whether there is an estimate (set by the first sample, cleared on
    /// readmission).
    sampled: AtomicBool,
}

impl fmt::Debug for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeState")
            .field("in_flight", &self.in_flight())
            .field("healthy", &self.is_healthy())
            .field(
                "ramping",
                &(self.ramp_from.load(Ordering::Relaxed) != NO_RAMP),
            )
            .field("sampled", &self.hot.sampled.load(Ordering::Relaxed))
            .field(
                "ewma_us",
                &f64::from_bits(self.hot.ewma_us.load(Ordering::Relaxed)),
            )
            .finish()
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl NodeState {
    fn new() -> NodeState {
        NodeState {
            base: Instant::now(),
            healthy: AtomicBool::new(true),
            ramp_from: AtomicU64::new(NO_RAMP),
            hot: Hot {
                in_flight: AtomicU64::new(0),
                ewma_us: AtomicU64::new(0f64.to_bits()),
                ewma_at: AtomicU64::new(0),
                sampled: AtomicBool::new(false),
            },
        }
    }

    /// `t` in ns since `base` (0 for instants before it).
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Requests started and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.hot.in_flight.load(Ordering::Relaxed)
    }

    /// The health flag (true until a health check says otherwise).
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether a slow-start ramp is under way at `now` (given the window).
    pub fn is_ramping(&self, now: Instant, window: Duration) -> bool {
        let from = self.ramp_from.load(Ordering::Relaxed);
        from != NO_RAMP && u128::from(self.ns(now).saturating_sub(from)) < window.as_nanos()
    }

    /// `weight · WEIGHT_SCALE`, scaled down while ramping.
    #[inline]
    fn effective_weight(&self, weight: u32, now: Instant, window: Duration) -> u64 {
        let full = u64::from(weight) * WEIGHT_SCALE;
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == NO_RAMP || full == 0 {
            return full;
        }
        self.ramped_weight(weight, from, now, window)
    }

    /// [`NodeState::effective_weight`] of a node whose ramp started at
    /// `from`.
    #[cold]
    fn ramped_weight(&self, weight: u32, from: u64, now: Instant, window: Duration) -> u64 {
        let elapsed = u128::from(self.ns(now).saturating_sub(from));
        let window = window.as_nanos();
        if elapsed >= window {
            // The ramp is over: later picks take the fast path. (A lost race
            // with a new readmission only ends that one early.)
            let _ = self.ramp_from.compare_exchange(
                from,
                NO_RAMP,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return u64::from(weight) * WEIGHT_SCALE;
        }
        let span = u128::from(WEIGHT_SCALE - SLOW_START_FLOOR_PERMILLE);
        let permille = u128::from(SLOW_START_FLOOR_PERMILLE) + span * elapsed / window;
        // permille < 1000, so the product is below the full weight.
        (u128::from(weight) * permille) as u64
    }

    /// The latency estimate at `now`, decayed for the time since its last
    /// sample; `None` without a sample.
    pub fn ewma(&self, now: Instant, cfg: &EwmaConfig) -> Option<Duration> {
        self.ewma_us_at(now, cfg)
            .map(|us| Duration::from_secs_f64(us / 1e6))
    }

    /// [`NodeState::ewma`] in microseconds.
    pub(super) fn ewma_us_at(&self, now: Instant, cfg: &EwmaConfig) -> Option<f64> {
        if !self.hot.sampled.load(Ordering::Acquire) {
            return None;
        }
        let est = f64::from_bits(self.hot.ewma_us.load(Ordering::Relaxed));
        if cfg.decay.is_zero() {
            return Some(est);
        }
        let idle = self
            .ns(now)
            .saturating_sub(self.hot.ewma_at.load(Ordering::Relaxed));
        Some(est * (-(idle as f64) / cfg.decay.as_nanos() as f64).exp())
    }

    fn observe(&self, latency: Duration, ok: bool, now: Instant, cfg: &EwmaConfig) {
        let sample = if ok {
            micros(latency)
        } else {
            micros(latency.max(cfg.failure_penalty))
        };
        let now_ns = self.ns(now);
        let prev = self.hot.ewma_at.fetch_max(now_ns, Ordering::Relaxed);
        if !self.hot.sampled.load(Ordering::Relaxed) {
            // The first sample is the estimate. (Stored before the flag, so
            // that no reader sees the flag with an older value.)
            self.hot.ewma_us.store(sample.to_bits(), Ordering::Relaxed);
            self.hot.sampled.store(true, Ordering::Release);
            return;
        }
        let keep = if cfg.decay.is_zero() {
            0.0
        } else {
            let dt = now_ns.saturating_sub(prev) as f64;
            (-dt / cfg.decay.as_nanos() as f64).exp()
        };
        // Peak-sensitive: a slower sample is taken at once, a faster one is
        // blended in by the time since the previous sample.
        let _ = self
            .hot
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                let cur = f64::from_bits(cur);
                let next = if sample > cur {
                    sample
                } else {
                    cur * keep + sample * (1.0 - keep)
                };
                Some(next.to_bits())
            });
    }
}

/// An upstream: its nodes, settings and shared live state.
pub struct Upstream {
    nodes: Vec<Node>,
    states: Vec<Arc<NodeState>>,
    config: UpstreamConfig,
    /// Sticky-cookie value of each node (16 lowercase hex digits).
    cookies: Vec<String>,
    /// `(cookie id, node)`, sorted by id.
    cookie_index: Vec<(u64, usize)>,
    /// `cumulative[i]`: the sum of the configured weights of nodes `0..=i`.
    cumulative: Vec<u64>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("nodes", &self.nodes)
            .field("states", &self.states)
            .field("config", &self.config)
            .finish()
    }
}

/// Why no node can serve a request (the reason of the proxy's 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// The upstream has no node.
    NoNodes,
    /// Every node has weight 0 (drained).
    AllDrained,
    /// Every node with a positive weight is marked unhealthy.
    AllUnhealthy,
    /// Every healthy node with a positive weight was already tried.
    AllTried,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unavailable::NoNodes => "the upstream has no node",
            Unavailable::AllDrained => "every upstream node is drained (weight 0)",
            Unavailable::AllUnhealthy => "every upstream node is unhealthy",
            Unavailable::AllTried => "every healthy upstream node was already tried",
        })
    }
}

impl Upstream {
    /// An upstream of `nodes`, every node healthy and not ramping.
    ///
    /// Errors: a node whose `id` is not its index; two nodes with the same
    /// address.
    pub fn new(nodes: Vec<Node>, config: UpstreamConfig) -> Result<Upstream, BalanceError> {
        let states = nodes.iter().map(|_| Arc::new(NodeState::new())).collect();
        Upstream::assemble(nodes, config, states)
    }

    /// The upstream that replaces `previous` on a reload (or a DNS change)
    /// at `now`. A node whose address was in `previous` shares its state
    /// (in-flight count, health, EWMA, ramp); a new one starts healthy and,
    /// if `config.slow_start` is set, ramps from `now`.
    pub fn with_previous(
        nodes: Vec<Node>,
        config: UpstreamConfig,
        previous: &Upstream,
        now: Instant,
    ) -> Result<Upstream, BalanceError> {
        let old: HashMap<SocketAddr, &Arc<NodeState>> = previous
            .nodes
            .iter()
            .map(|p| p.addr)
            .zip(&previous.states)
            .collect();
        let states = nodes
            .iter()
            .map(|n| match old.get(&n.addr) {
                Some(&state) => Arc::clone(state),
                None => {
                    let s = NodeState::new();
                    if !config.slow_start.is_zero() {
                        let t = s.ns(now);
                        s.ramp_from.store(t, Ordering::Relaxed);
                    }
                    Arc::new(s)
                }
            })
            .collect();
        Upstream::assemble(nodes, config, states)
    }

    fn assemble(
        nodes: Vec<Node>,
        config: UpstreamConfig,
        states: Vec<Arc<NodeState>>,
    ) -> Result<Upstream, BalanceError> {
        for (index, n) in nodes.iter().enumerate() {
            if n.id != index {
                return Err(BalanceError::NodeId { index, id: n.id });
            }
        }
        // Same identity, same address (`10.0.0.1:80` and
        // `[::ffff:10.0.0.1]:80` included).
        let mut by_identity: Vec<(Vec<u8>, usize)> =
            nodes.iter().map(|n| (n.identity(), n.id)).collect();
        by_identity.sort_unstable();
        for pair in by_identity.windows(2) {
            if pair[0].0 == pair[1].0 {
                let (first, second) = (pair[0].1, pair[1].1);
                return Err(BalanceError::DuplicateAddr {
                    addr: nodes[first].addr,
                    first,
                    second,
                });
            }
        }
        let mut ids: Vec<u64> = vec![0; nodes.len()];
        for (identity, node) in &by_identity {
            ids[*node] = cookie_id(identity);
        }
        let cookies = ids.iter().map(|id| format!("{id:016x}")).collect();
        let mut cookie_index: Vec<(u64, usize)> = ids.into_iter().zip(0..).collect();
        cookie_index.sort_unstable();
        let cumulative = nodes
            .iter()
            .scan(0u64, |sum, n| {
                *sum += u64::from(n.weight);
                Some(*sum)
            })
            .collect();
        Ok(Upstream {
            nodes,
            states,
            config,
            cookies,
            cookie_index,
            cumulative,
        })
    }

    /// The nodes, in configuration order (`nodes()[i].id == i`).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the upstream has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The sum of the configured weights.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The node that a uniform `r` in `0..total_weight()` falls on when each
    /// node owns a range as wide as its configured weight (binary search).
    pub fn node_at_weight(&self, r: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// The settings.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Node `node`'s live state.
    ///
    /// # Panics
    ///
    /// If `node` is out of range (as do the other per-node methods).
    pub fn state(&self, node: usize) -> &NodeState {
        &self.states[node]
    }

    /// Marks node `node` healthy or not at `now`; returns whether that
    /// changed it. Unhealthy → healthy starts the slow-start ramp and
    /// forgets the latency estimate.
    pub fn set_healthy(&self, node: usize, healthy: bool, now: Instant) -> bool {
        let s = &self.states[node];
        let was = s.healthy.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            s.hot.sampled.store(false, Ordering::Relaxed);
            if !self.config.slow_start.is_zero() {
                // Stored after the flag: a pick in between sees the node
                // healthy at full weight for an instant, which is harmless.
                s.ramp_from.store(s.ns(now), Ordering::Relaxed);
            }
        }
        was != healthy
    }

    /// Whether node `node` is marked healthy.
    pub fn is_healthy(&self, node: usize) -> bool {
        self.states[node].is_healthy()
    }

    /// Node `node`'s weight at `now` in units of 1/[`WEIGHT_SCALE`]:
    /// `weight · WEIGHT_SCALE`, less while it ramps. Health is not
    /// considered.
    #[inline]
    pub fn effective_weight(&self, node: usize, now: Instant) -> u64 {
        self.states[node].effective_weight(self.nodes[node].weight, now, self.config.slow_start)
    }

    /// Whether node `node` may be picked: healthy, positive weight, not in
    /// `exclude`.
    #[inline]
    pub fn is_eligible(&self, node: usize, exclude: &[usize]) -> bool {
        self.nodes[node].weight > 0 && self.states[node].is_healthy() && !exclude.contains(&node)
    }

    /// Whether any node may be picked.
    pub fn any_eligible(&self, exclude: &[usize]) -> bool {
        (0..self.nodes.len()).any(|i| self.is_eligible(i, exclude))
    }

    /// Why no node may be picked, or `None` if one may.
    pub fn unavailable(&self, exclude: &[usize]) -> Option<Unavailable> {
        if self.nodes.is_empty() {
            return Some(Unavailable::NoNodes);
        }
        let weighted = || self.nodes.iter().filter(|n| n.weight > 0);
        if weighted().next().is_none() {
            return Some(Unavailable::AllDrained);
        }
        if !weighted().any(|n| self.is_healthy(n.id)) {
            return Some(Unavailable::AllUnhealthy);
        }
        if !self.any_eligible(exclude) {
            return Some(Unavailable::AllTried);
        }
        None
    }

    /// Records one request's outcome on node `node` without touching the
    /// in-flight count (which [`InFlight`] does).
    pub fn observe(&self, node: usize, latency: Duration, ok: bool, now: Instant) {
        self.states[node].observe(latency, ok, now, &self.config.ewma);
    }

    /// Starts a request on node `node`: counts it in flight until the
    /// returned guard is finished or dropped (a cancelled request is
    /// uncounted and leaves no latency sample).
    pub fn begin(self: &Arc<Self>, node: usize) -> InFlight {
        self.states[node]
            .hot
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        InFlight {
            upstream: Arc::clone(self),
            node,
        }
    }

    /// The value of the sticky cookie that names node `node`: 16 lowercase
    /// hex digits of a 64-bit hash of its address (see the module
    /// documentation of `balance` for why not the address itself).
    pub fn cookie_value(&self, node: usize) -> &str {
        &self.cookies[node]
    }

    /// The node a sticky-cookie value names, if it names one of this
    /// upstream's nodes (whatever their state).
    pub fn node_for_cookie(&self, value: &[u8]) -> Option<usize> {
        if value.len() != 16 {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = u64::from_str_radix(text, 16).ok()?;
        let at = self.cookie_index.partition_point(|&(k, _)| k < id);
        match self.cookie_index.get(at) {
            Some(&(k, node)) if k == id => Some(node),
            _ => None,
        }
    }
}

/// A node's 64-bit cookie id: two MurmurHash3 halves of its identity.
fn cookie_id(identity: &[u8]) -> u64 {
    (u64::from(murmur3_32(identity, COOKIE_SEED_HI)) << 32)
        | u64::from(murmur3_32(identity, COOKIE_SEED_LO))
}

/// A request in flight on one node (see [`Upstream::begin`]).
#[must_use = "dropping the guard ends the request at once"]
pub struct InFlight {
    upstream: Arc<Upstream>,
    node: usize,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("node", &self.node)
            .finish()
    }
}

impl InFlight {
    /// The node.
    pub fn node(&self) -> usize {
        self.node
    }

    /// Ends the request now with its latency and outcome (`ok` false: the
    /// node failed it, e.g. a connect error, a reset, a 5xx the retry policy
    /// counts, a timeout).
    pub fn finish(self, latency: Duration, ok: bool) {
        self.finish_at(latency, ok, Instant::now());
    }

    /// [`InFlight::finish`] at an explicit time (for tests and simulations).
    pub fn finish_at(self, latency: Duration, ok: bool, now: Instant) {
        self.upstream.observe(self.node, latency, ok, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.states[self.node]
            .hot
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}
