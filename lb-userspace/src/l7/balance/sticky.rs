//! Sticky sessions by cookie, over any other balancer. The proxy reads the
//! upstream's sticky cookie into [`PickContext::sticky`]; if its value names
//! a node of the upstream ([`Upstream::node_for_cookie`]) that may be picked
//! (healthy, weight > 0, not excluded), that node is the pick. Otherwise —
//! no cookie, a value naming no node (stale after a reload, forged), or a
//! node that is down, drained or already tried by a retry — the inner
//! balancer picks, and the proxy sets the cookie to the new node's
//! [`Upstream::cookie_value`], so the session moves once and then sticks to
//! its new node. Slow start does not apply to a session's own node.
//!
//! Cookie values are hashes of the node address, not the address: see the
//! `balance` module documentation.
use std::{fmt, sync::Arc};

use super::{Algorithm, Balancer, PickContext, Upstream};

/// Sticky cookie sessions over `inner` (see the module documentation).
pub struct Sticky {
    inner: Box<dyn Balancer>,
}

impl fmt::Debug for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sticky")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Sticky {
    /// Sticky sessions falling back to `inner` (and over its upstream).
    pub fn new(inner: Box<dyn Balancer>) -> Sticky {
        Sticky { inner }
    }

    /// The node the cookie value `value` names, if it may be picked with
    /// `exclude`.
    pub fn honoured(&self, value: &[u8], exclude: &[usize]) -> Option<usize> {
        let up = self.inner.upstream();
        up.node_for_cookie(value)
            .filter(|&node| up.is_eligible(node, exclude))
    }
}

impl Balancer for Sticky {
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        ctx.sticky
            .and_then(|value| self.honoured(value, ctx.exclude))
            .or_else(|| self.inner.pick(ctx))
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm()
    }

    fn upstream(&self) -> &Arc<Upstream> {
        self.inner.upstream()
    }
}
