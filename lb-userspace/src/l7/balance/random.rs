//! Weighted random: each pick is independent, node `i` with probability
//! `w_i / Σ w` over the eligible nodes (effective weights, so slow start
//! applies), by rejection sampling over the cumulative configured weights
//! (O(log n) per pick while most of the weight is eligible; an exact O(n)
//! scan otherwise, see `weighted_random` in `mod.rs`). No shared mutable
//! state, so no contention between workers.
use std::{fmt, sync::Arc};

use super::{
    weighted_random, Algorithm, Balancer, PickContext, RandomSource, ThreadRandom, Upstream,
};

/// Weighted random (see the module documentation).
pub struct WeightedRandom {
    upstream: Arc<Upstream>,
    rand: Arc<dyn RandomSource>,
}

impl fmt::Debug for WeightedRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedRandom")
            .field("nodes", &self.upstream.len())
            .field("rand", &self.rand)
            .finish()
    }
}

impl WeightedRandom {
    /// Over `upstream`, with [`ThreadRandom`].
    pub fn new(upstream: Arc<Upstream>) -> WeightedRandom {
        WeightedRandom::with_random(upstream, Arc::new(ThreadRandom))
    }

    /// Over `upstream`, drawing from `rand`.
    pub fn with_random(upstream: Arc<Upstream>, rand: Arc<dyn RandomSource>) -> WeightedRandom {
        WeightedRandom { upstream, rand }
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        weighted_random(&self.upstream, ctx, &*self.rand, None)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::Random
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}
