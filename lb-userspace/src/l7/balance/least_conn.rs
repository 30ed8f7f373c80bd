//! Weighted least connections: the eligible node with the fewest requests
//! in flight per unit of (effective) weight, `in_flight / w`, compared
//! exactly by cross-multiplication. Ties — among them the common case of an
//! idle upstream, where every node has 0 in flight — are broken at random in
//! proportion to weight (weighted reservoir sampling), so that a lightly
//! loaded upstream still sees its weights honoured instead of always the
//! first node (nginx breaks ties by round robin; `(in_flight + 1) / w`, as
//! Envoy does, would send every sequential request to the heaviest node).
//!
//! The in-flight counts are the ones [`Upstream::begin`] maintains; they are
//! read without a lock, so two workers picking at the same instant may both
//! choose the same least-loaded node: the usual, bounded herd effect of
//! least connections.
use std::{fmt, sync::Arc};

use super::{rng::below, Algorithm, Balancer, PickContext, RandomSource, ThreadRandom, Upstream};

/// Weighted least connections (see the module documentation).
pub struct LeastConn {
    upstream: Arc<Upstream>,
    rand: Arc<dyn RandomSource>,
}

impl fmt::Debug for LeastConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastConn")
            .field("nodes", &self.upstream.len())
            .field("rand", &self.rand)
            .finish()
    }
}

impl LeastConn {
    /// Over `upstream`, with [`ThreadRandom`] for ties.
    pub fn new(upstream: Arc<Upstream>) -> LeastConn {
        LeastConn::with_random(upstream, Arc::new(ThreadRandom))
    }

    /// Over `upstream`, breaking ties with `rand`.
    pub fn with_random(upstream: Arc<Upstream>, rand: Arc<dyn RandomSource>) -> LeastConn {
        LeastConn { upstream, rand }
    }
}

impl Balancer for LeastConn {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let up = &*self.upstream;
        // (node, in flight, weight) of the best so far, and the total weight
        // of the nodes tied with it.
        let mut best: Option<(usize, u128, u128)> = None;
        let mut tied_weight: u64 = 0;
        for i in 0..up.len() {
            if !up.is_eligible(i, ctx.exclude) {
                continue;
            }
            let w = up.effective_weight(i, ctx.now);
            let n = u128::from(up.state(i).in_flight());
            let Some((_, bn, bw)) = best else {
                best = Some((i, n, u128::from(w)));
                tied_weight = w;
                continue;
            };
            // n / w vs bn / bw; weights are positive for eligible nodes.
            let (lhs, rhs) = (n * bw, bn * u128::from(w));
            if lhs < rhs {
                best = Some((i, n, u128::from(w)));
                tied_weight = w;
            } else if lhs == rhs {
                tied_weight += w;
                if below(&*self.rand, tied_weight) < w {
                    best = Some((i, n, u128::from(w)));
                }
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::LeastConn
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}
