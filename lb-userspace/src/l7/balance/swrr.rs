//! Smooth weighted round robin, nginx's algorithm
//! (`ngx_http_upstream_get_peer`): on each pick every eligible node adds its
//! effective weight to its `current` weight, the node with the largest
//! `current` wins (the first one on a tie) and the sum of the effective
//! weights is subtracted from the winner's `current`. Weights 5, 1, 1 give
//! `a a b a c a a`, repeating: each node gets exactly its share in every
//! period and the heavy node's picks are spread out, not bunched.
//!
//! Concurrency: the `current` weights are one vector that every pick reads
//! and writes as a whole, so a pick runs under a `std::sync::Mutex`. The
//! critical section is one pass over the nodes with no allocation, no I/O
//! and nothing that can panic (≈ tens of ns for tens of nodes); std's mutex
//! is a futex that spins briefly before sleeping. A per-pick atomic CAS
//! cannot do the same (the update touches every node), and a precomputed
//! sequence behind an atomic counter would break as soon as one node is
//! excluded, unhealthy or ramping. If the lock ever shows up in profiles,
//! the next step is one `SmoothRoundRobin` per worker thread (each is
//! smooth on its own, the sum is still exact per period).
//!
//! Weights are the effective ones (`weight · WEIGHT_SCALE`, lower while a
//! node ramps up after slow start); multiplying every weight by the same
//! factor does not change the sequence. Unlike nginx, a node's weight is not
//! lowered after failures: health checks and retries handle failing nodes.
use std::{
    fmt,
    sync::{Arc, Mutex},
};

use super::{Algorithm, Balancer, PickContext, Upstream};

/// Smooth weighted round robin (see the module documentation).
pub struct SmoothRoundRobin {
    upstream: Arc<Upstream>,
    /// nginx's `current_weight` of each node.
    current: Mutex<Vec<i64>>,
}

impl fmt::Debug for SmoothRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmoothRoundRobin")
            .field("nodes", &self.upstream.len())
            .finish()
    }
}

impl SmoothRoundRobin {
    /// A round robin over `upstream`, starting with every `current` at 0.
    pub fn new(upstream: Arc<Upstream>) -> SmoothRoundRobin {
        let current = Mutex::new(vec![0; upstream.len()]);
        SmoothRoundRobin { upstream, current }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let up = &*self.upstream;
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut total: i64 = 0;
        // (node, its current weight) of the largest current weight so far.
        let mut best: Option<(usize, i64)> = None;
        for (i, cur) in current.iter_mut().enumerate() {
            if !up.is_eligible(i, ctx.exclude) {
                continue;
            }
            // ≤ 2⁴² per node (u32 weight × 1000), so sums of up to 2²⁰
            // nodes fit an i64 with room to spare.
            let w = up.effective_weight(i, ctx.now) as i64;
            *cur += w;
            total += w;
            if best.is_none_or(|(_, c)| *cur > c) {
                best = Some((i, *cur));
            }
        }
        let (b, _) = best?;
        current[b] -= total;
        Some(b)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::RoundRobin
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}
