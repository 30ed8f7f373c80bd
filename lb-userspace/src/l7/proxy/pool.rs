//! An upstream as the proxy uses it: its nodes, how one is picked, how
//! they are reached, its retry budget and passive health.
use std::sync::Arc;

use super::super::{
    balance::{Balancer, Upstream},
    options::UpstreamOptions,
    retry_budget::RetryBudget,
    upstream_client::{ClientError, UpstreamClient},
};
use crate::health::{Outcome, PassiveTracker};

/// One named upstream: its nodes' shared state, its picking algorithm, how
/// its nodes are reached, and its connections and retry budget.
pub struct Pool {
    /// The upstream's id (for logs).
    pub id: String,
    /// Nodes and their live state.
    pub upstream: Arc<Upstream>,
    /// How a node is picked. With `options.sticky_cookie` set it should be
    /// a sticky balancer (`balance::build(.., sticky: true)`): the proxy
    /// only passes the cookie in and sets it on responses.
    pub balancer: Box<dyn Balancer>,
    /// How nodes are reached.
    pub options: UpstreamOptions,
    pub(super) client: UpstreamClient,
    pub(super) budget: Arc<RetryBudget>,
    pub(super) passive: Option<Arc<PassiveTracker>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id)
            .field("upstream", &self.upstream)
            .field("options", &self.options)
            .field("passive", &self.passive.is_some())
            .finish()
    }
}

impl Pool {
    /// A pool; `previous` is the pool this one replaces on a reload: its
    /// client (and so its warm connections) is kept when the options that
    /// shape connections are unchanged (and the TLS files too), and its
    /// retry budget when the budget settings are.
    ///
    /// Errors: TLS material that cannot be loaded (CA, client certificate,
    /// no trust roots at all).
    pub fn new(
        id: impl Into<String>,
        upstream: Arc<Upstream>,
        balancer: Box<dyn Balancer>,
        options: UpstreamOptions,
        previous: Option<&Pool>,
    ) -> Result<Pool, ClientError> {
        let client = UpstreamClient::reuse_or_new(previous.map(|p| &p.client), &options)?;
        let budget = match previous {
            Some(p) if p.options.retry_budget == options.retry_budget => p.budget.clone(),
            _ => Arc::new(RetryBudget::new(options.retry_budget)),
        };
        Ok(Pool {
            id: id.into(),
            upstream,
            balancer,
            options,
            client,
            budget,
            passive: None,
        })
    }

    /// The same pool reporting every attempt's outcome to `tracker`
    /// (passive health). The tracker's node `i` must be the upstream's
    /// node `i` (outcomes of nodes beyond the tracker's are dropped). A
    /// pool built on a reload does not inherit its predecessor's tracker:
    /// give it one built with `PassiveTracker::with_previous`.
    pub fn with_passive(mut self, tracker: Arc<PassiveTracker>) -> Pool {
        if tracker.ids().len() != self.upstream.len() {
            log::warn!(
                "upstream {}: passive tracker has {} nodes, the upstream {}",
                self.id,
                tracker.ids().len(),
                self.upstream.len()
            );
        }
        self.passive = Some(tracker);
        self
    }

    /// The passive health tracker, if any.
    pub fn passive(&self) -> Option<&Arc<PassiveTracker>> {
        self.passive.as_ref()
    }

    /// Reports one attempt's outcome on `node` to the passive tracker.
    #[inline]
    pub(super) fn record(&self, node: usize, outcome: Outcome) {
        if let Some(p) = &self.passive {
            if node < p.ids().len() {
                p.record(node, outcome);
            }
        }
    }

    /// The connections to the nodes.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The retry budget.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }
}
