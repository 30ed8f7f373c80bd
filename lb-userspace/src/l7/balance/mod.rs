//! Upstream node selection for the L7 proxy: pure logic, no I/O.
//!
//! An [`Upstream`] holds the configured [`Node`]s and their shared live
//! state ([`NodeState`]: in-flight requests, latency EWMA, health, slow
//! start), all atomics. A [`Balancer`] picks a node for one request from a
//! [`PickContext`]; [`build`] makes one for an [`Algorithm`], optionally
//! wrapped in [`Sticky`] cookie sessions. The proxy's loop is:
//!
//! ```text
//! let node = balancer.pick(&ctx)?;            // None → 503, reason: upstream.unavailable(ctx.exclude)
//! let guard = upstream.begin(node);           // in flight (least-conn, P2C)
//! ... forward ...
//! guard.finish(latency, ok);                  // EWMA sample (P2C), in flight − 1
//! // retry: push `node` onto the exclude list and pick again
//! // sticky: if the cookie did not name `node`, Set-Cookie: NAME=upstream.cookie_value(node)
//! ```
//!
//! Every algorithm skips unhealthy nodes, nodes of weight 0 and the nodes
//! in `exclude`, and returns `None` when no node is left.
//!
//! | algorithm | file | state on the hot path |
//! |---|---|---|
//! | smooth weighted round robin (nginx) | `swrr.rs` | one mutex around an O(n) loop |
//! | weighted random | `random.rs` | none (per-thread RNG) |
//! | weighted least connections | `least_conn.rs` | none |
//! | power of two choices on latency EWMA | `p2c.rs` | none |
//! | consistent hash (Maglev) | `chash.rs` | none (immutable table) |
//! | sticky cookie, over any of these | `sticky.rs` | none |
//!
//! Slow start (see [`UpstreamConfig::slow_start`]) scales the weights the
//! first four algorithms use; consistent hash and sticky cookies ignore it,
//! because their point is that a key keeps its node.
//!
//! Randomness comes from a [`RandomSource`]: [`ThreadRandom`] in production,
//! [`SeededRandom`] in tests. Time comes from [`PickContext::now`] (and
//! [`InFlight::finish_at`]), so tests never sleep.
//!
//! **Sticky cookie values.** A cookie names its node by 16 hex digits of a
//! 64-bit MurmurHash3 of the node's address and port
//! ([`Upstream::cookie_value`]), not by the address itself and not by the
//! node's index: the address would tell every client the internal topology
//! (addresses, ports, how many backends) and would need quoting (IPv6); the
//! index would change meaning when a reload reorders the list. The hash is
//! stable across reloads, restarts and every node of a fleet (fixed seeds),
//! and a value that names no node of the upstream is ignored. It is *not* a
//! secret or a MAC: whoever can guess a backend's address can compute its
//! value, and a client can choose its node by forging the cookie. That is
//! accepted: a forged value can only select one of the upstream's own
//! nodes, and only one that is healthy, not drained and not excluded — the
//! same choice a genuine cookie gives — so an HMAC, and a key to distribute
//! across a fleet and rotate, would buy nothing but secrecy of the
//! backends' addresses against guessing. (Do not use sticky sessions where
//! clients must not choose their node.)
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Instant,
};

use lb_common::maglev::MaglevError;

mod chash;
mod least_conn;
mod p2c;
mod random;
mod rng;
mod sticky;
mod swrr;
mod upstream;

pub use chash::{default_table_size, ConsistentHash, CHASH_SEED};
pub use least_conn::LeastConn;
pub use p2c::PowerOfTwo;
pub use random::WeightedRandom;
pub use rng::{RandomSource, SeededRandom, ThreadRandom};
pub use sticky::Sticky;
pub use swrr::SmoothRoundRobin;
pub use upstream::{
    EwmaConfig, InFlight, Node, NodeState, Unavailable, Upstream, UpstreamConfig,
    SLOW_START_FLOOR_PERMILLE, WEIGHT_SCALE,
};

/// What a balancer knows about one request.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    /// The client's address (the consistent-hash key when `hash_key` is
    /// `None`).
    pub client_ip: IpAddr,
    /// The consistent-hash key the caller extracted as configured (a
    /// header's value, a cookie's value, the URI); `None` when the
    /// configured source is absent from the request, and then the client
    /// address is hashed. Other algorithms ignore it.
    pub hash_key: Option<&'a [u8]>,
    /// The value of the upstream's sticky cookie in the request, if any
    /// (only [`Sticky`] reads it).
    pub sticky: Option<&'a [u8]>,
    /// Nodes already tried for this request (retries): never picked.
    pub exclude: &'a [usize],
    /// The time of the pick (slow-start ramps, EWMA decay).
    pub now: Instant,
}

impl<'a> PickContext<'a> {
    /// A context for a request from `client_ip` at `Instant::now()`, with no
    /// hash key, no sticky cookie and nothing excluded.
    pub fn new(client_ip: IpAddr) -> PickContext<'a> {
        PickContext::at(client_ip, Instant::now())
    }

    /// [`PickContext::new`] at an explicit time.
    pub fn at(client_ip: IpAddr, now: Instant) -> PickContext<'a> {
        PickContext {
            client_ip,
            hash_key: None,
            sticky: None,
            exclude: &[],
            now,
        }
    }

    /// With the consistent-hash key `key`.
    pub fn with_hash_key(mut self, key: Option<&'a [u8]>) -> PickContext<'a> {
        self.hash_key = key;
        self
    }

    /// With the sticky cookie's value `value`.
    pub fn with_sticky(mut self, value: Option<&'a [u8]>) -> PickContext<'a> {
        self.sticky = value;
        self
    }

    /// Excluding the nodes `exclude`.
    pub fn with_exclude(mut self, exclude: &'a [usize]) -> PickContext<'a> {
        self.exclude = exclude;
        self
    }
}

/// Picks upstream nodes. Implementations are thread-safe and cheap to call
/// from every worker at once.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// The node (index in [`Upstream::nodes`]) for one request, or `None`
    /// if every node is unhealthy, drained or excluded
    /// ([`Upstream::unavailable`] says which).
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize>;

    /// The algorithm (the fallback algorithm of a [`Sticky`] balancer).
    fn algorithm(&self) -> Algorithm;

    /// The upstream it picks from.
    fn upstream(&self) -> &Arc<Upstream>;
}

/// The load-balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx): `round_robin`.
    RoundRobin,
    /// Weighted random: `random`.
    Random,
    /// Weighted least connections (fewest in flight per weight): `least_conn`.
    LeastConn,
    /// Power of two choices on latency EWMA × (in flight + 1): `p2c_ewma`.
    P2cEwma,
    /// Consistent hash (Maglev) on a key or the client address:
    /// `consistent_hash`.
    ConsistentHash,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::Random,
        Algorithm::LeastConn,
        Algorithm::P2cEwma,
        Algorithm::ConsistentHash,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::Random => "random",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an [`Algorithm`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown load-balancing algorithm {0:?} (expected round_robin, random, least_conn, p2c_ewma or consistent_hash)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Algorithm, UnknownAlgorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// Why an upstream or a balancer could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// `nodes[index].id` is not `index`.
    #[error("node {index} has id {id}: a node's id must be its index")]
    NodeId {
        /// Position in the list.
        index: usize,
        /// The id it has.
        id: usize,
    },
    /// Two nodes have the same address.
    #[error("nodes {first} and {second} have the same address {addr}")]
    DuplicateAddr {
        /// The address.
        addr: SocketAddr,
        /// One node.
        first: usize,
        /// The other.
        second: usize,
    },
    /// The Maglev table could not be built (table size, or over 2³² nodes).
    #[error("consistent-hash table: {0}")]
    Maglev(#[from] MaglevError),
}

/// A balancer of `algorithm` over `upstream`, with [`ThreadRandom`] and the
/// default Maglev table size; wrapped in [`Sticky`] if `sticky`.
pub fn build(
    upstream: Arc<Upstream>,
    algorithm: Algorithm,
    sticky: bool,
) -> Result<Box<dyn Balancer>, BalanceError> {
    build_with(upstream, algorithm, sticky, Arc::new(ThreadRandom))
}

/// [`build`] with an explicit random source.
pub fn build_with(
    upstream: Arc<Upstream>,
    algorithm: Algorithm,
    sticky: bool,
    rand: Arc<dyn RandomSource>,
) -> Result<Box<dyn Balancer>, BalanceError> {
    let inner: Box<dyn Balancer> = match algorithm {
        Algorithm::RoundRobin => Box::new(SmoothRoundRobin::new(upstream)),
        Algorithm::Random => Box::new(WeightedRandom::with_random(upstream, rand)),
        Algorithm::LeastConn => Box::new(LeastConn::with_random(upstream, rand)),
        Algorithm::P2cEwma => Box::new(PowerOfTwo::with_random(upstream, rand)),
        Algorithm::ConsistentHash => Box::new(ConsistentHash::new(upstream)?),
    };
    Ok(if sticky {
        Box::new(Sticky::new(inner))
    } else {
        inner
    })
}

/// Draws [`weighted_random`] tries before it falls back to the exact scan.
const DRAWS: usize = 8;

/// An eligible node other than `skip`, at random in proportion to its
/// effective weight at `ctx.now`; `None` if there is none.
///
/// Rejection sampling, O(log n) per draw: draw a node by configured weight
/// (binary search in the cumulative weights), reject it if it may not be
/// picked or is `skip`, and accept a ramping node with probability
/// effective / full weight. Each accepted draw is exactly proportional to
/// the effective weights of the eligible nodes. After [`DRAWS`] rejections
/// (most of the weight is down, excluded or ramping), one exact O(n) scan,
/// which has the same distribution, so the mixture is exact too.
fn weighted_random(
    up: &Upstream,
    ctx: &PickContext<'_>,
    rand: &dyn RandomSource,
    skip: Option<usize>,
) -> Option<usize> {
    let total = up.total_weight();
    if total == 0 {
        return None;
    }
    for _ in 0..DRAWS {
        let i = up.node_at_weight(rng::below(rand, total));
        if Some(i) == skip || !up.is_eligible(i, ctx.exclude) {
            continue;
        }
        let full = u64::from(up.nodes()[i].weight) * WEIGHT_SCALE;
        let eff = up.effective_weight(i, ctx.now);
        if eff < full && rng::below(rand, full) >= eff {
            continue;
        }
        return Some(i);
    }
    weighted_scan(up, ctx, rand, skip)
}

/// [`weighted_random`] by a scan: two passes over the nodes and one random
/// draw; if health changes between the passes the last eligible node of
/// the second pass is taken.
fn weighted_scan(
    up: &Upstream,
    ctx: &PickContext<'_>,
    rand: &dyn RandomSource,
    skip: Option<usize>,
) -> Option<usize> {
    let ok = |i: usize| Some(i) != skip && up.is_eligible(i, ctx.exclude);
    let total: u64 = (0..up.len())
        .filter(|&i| ok(i))
        .map(|i| up.effective_weight(i, ctx.now))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng::below(rand, total);
    let mut last = None;
    for i in (0..up.len()).filter(|&i| ok(i)) {
        let w = up.effective_weight(i, ctx.now);
        if w == 0 {
            continue;
        }
        if r < w {
            return Some(i);
        }
        r -= w;
        last = Some(i);
    }
    last
}

#[cfg(test)]
mod tests;
