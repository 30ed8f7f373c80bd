//! Power of two choices on latency (Mitzenmacher; the load metric of
//! Finagle's and Linkerd's "peak EWMA" balancers): draw two distinct
//! eligible nodes at random in proportion to their effective weights, and
//! take the one with the lower cost `ewma × (in_flight + 1)`, where `ewma`
//! is the node's latency estimate ([`super::EwmaConfig`]) decayed for the
//! time since its last sample. The first draw wins a tie. With one eligible
//! node, that node. A node without an estimate (new, or just readmitted) is
//! given the other candidate's, so the two are compared on in-flight
//! requests alone; two such nodes likewise.
//!
//! Why it works: the cost is an estimate of how long a new request would
//! wait on that node, so a slow node loses nearly every comparison until
//! the fast ones are loaded enough to be as slow; comparing two random nodes
//! instead of all of them avoids the herd that "always the best node"
//! causes when every worker reads the same stale numbers at once. Weights
//! act through the draws: a node of weight 2 takes part in twice as many
//! comparisons. The decay towards 0 of an idle node's estimate means a node
//! that was slow and then got no traffic is eventually tried again and its
//! estimate refreshed (a probe, not a flood: its first slow sample pushes
//! the estimate straight back up, the EWMA being peak-sensitive).
use std::{fmt, sync::Arc};

use super::{
    weighted_random, Algorithm, Balancer, PickContext, RandomSource, ThreadRandom, Upstream,
};

/// Power of two choices on latency EWMA (see the module documentation).
pub struct PowerOfTwo {
    upstream: Arc<Upstream>,
    rand: Arc<dyn RandomSource>,
}

impl fmt::Debug for PowerOfTwo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerOfTwo")
            .field("nodes", &self.upstream.len())
            .field("rand", &self.rand)
            .finish()
    }
}

impl PowerOfTwo {
    /// Over `upstream`, with [`ThreadRandom`].
    pub fn new(upstream: Arc<Upstream>) -> PowerOfTwo {
        PowerOfTwo::with_random(upstream, Arc::new(ThreadRandom))
    }

    /// Over `upstream`, drawing from `rand`.
    pub fn with_random(upstream: Arc<Upstream>, rand: Arc<dyn RandomSource>) -> PowerOfTwo {
        PowerOfTwo { upstream, rand }
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let up = &*self.upstream;
        let a = weighted_random(up, ctx, &*self.rand, None)?;
        let Some(b) = weighted_random(up, ctx, &*self.rand, Some(a)) else {
            return Some(a);
        };
        let cfg = &up.config().ewma;
        let (sa, sb) = (up.state(a), up.state(b));
        let (ea, eb) = match (sa.ewma_us_at(ctx.now, cfg), sb.ewma_us_at(ctx.now, cfg)) {
            (Some(ea), Some(eb)) => (ea, eb),
            (Some(e), None) | (None, Some(e)) => (e, e),
            (None, None) => (1.0, 1.0),
        };
        let ca = ea * (sa.in_flight() as f64 + 1.0);
        let cb = eb * (sb.in_flight() as f64 + 1.0);
        Some(if cb < ca { b } else { a })
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::P2cEwma
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}
