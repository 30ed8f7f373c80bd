//! The proxy's resources changed one at a time (routes by host slot,
//! upstreams, rate-limit rules), for configuration that comes from a
//! store rather than the file: [`DynamicRoutes`].
//!
//! Each listener's proxy resolves through its own [`HostTables`], which
//! stays the same object for the life of the service: a route change
//! replaces one host slot's table in it and nothing else. An upstream
//! change builds that one pool (keeping the node state, connections and
//! passive-health verdicts of the pool it replaces, as a file reload does)
//! and swaps each listener's `Proxy` for one with the new pool map; the
//! map holds `Arc`s, so that costs one pointer per upstream and no route.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::{
    assemble::{attach_route_options, build_pool},
    lazy::{LazyHosts, LazyResolver, SlotTables},
    options::SharedCache,
    plan::UpstreamPlan,
    plugins::consumers::Consumers,
    proxy::{Pool, Proxy},
    ratelimit::{EscalationSink, Rule, RuleConfig},
    resolve,
    router::{HostSlot, HostTables, Resolver, RouteError, RouteSpec, RouteTable},
};
use crate::health::HealthEvent;
use crate::net::Prefix;

/// One listener's router and the pointer its workers load a proxy from.
pub(super) struct ListenerSlot {
    pub(super) name: String,
    pub(super) proxy: Arc<ArcSwap<Proxy>>,
    pub(super) tables: Arc<HostTables>,
}

/// What a change needs besides the resources themselves.
pub(super) struct Shared {
    pub(super) listeners: Vec<ListenerSlot>,
    pub(super) pools: HashMap<String, Arc<Pool>>,
    pub(super) rules: HashMap<String, (RuleConfig, Arc<Rule>)>,
    pub(super) sink: EscalationSink,
    pub(super) cache: Option<SharedCache>,
    pub(super) trusted: Vec<Prefix>,
    pub(super) health_events: mpsc::UnboundedSender<HealthEvent>,
    /// The node's consumers (`l7.consumers`), for routes' auth plugins.
    pub(super) consumers: Arc<Consumers>,
    /// Lazy routing: host tables live in this cache, not in `listeners`'
    /// `tables` (which then hold only the any-host routes).
    pub(super) lazy: Option<Arc<LazyHosts>>,
}

/// Why a host slot's routes could not be swapped in.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{0}")]
    Table(Box<RouteError>),
    #[error("{0:#}")]
    Options(anyhow::Error),
}

impl From<RouteError> for SlotError {
    fn from(e: RouteError) -> Self {
        SlotError::Table(Box::new(e))
    }
}

/// The handle through which a store applies changes to the running proxy.
pub struct DynamicRoutes {
    shared: Mutex<Shared>,
}

impl std::fmt::Debug for DynamicRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicRoutes").finish_non_exhaustive()
    }
}

impl DynamicRoutes {
    pub(super) fn new(shared: Shared) -> DynamicRoutes {
        let d = DynamicRoutes {
            shared: Mutex::new(shared),
        };
        d.lock().publish();
        d
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Every mutation below completes before it can panic (or leaves
        // the previous value in place), so a poisoned lock holds a
        // consistent state.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the routes of `slot`: `per_listener` holds, by listener
    /// name, the slot's routes that listener serves (a listener not named
    /// serves none of them any more). The tables are all built before any
    /// is swapped in, so an error changes nothing.
    pub fn set_slot(
        &self,
        slot: &HostSlot,
        per_listener: &[(String, Vec<RouteSpec>)],
    ) -> Result<(), SlotError> {
        let shared = self.lock();
        let built = shared.build(per_listener)?;
        for (l, table) in shared.listeners.iter().zip(built.iter()) {
            l.tables.set_shared(slot, table.clone());
        }
        Ok(())
    }

    /// Builds one slot's tables, by listener index, without installing
    /// them (lazy routing caches them itself).
    pub fn build_slot(
        &self,
        per_listener: &[(String, Vec<RouteSpec>)],
    ) -> Result<SlotTables, SlotError> {
        self.lock().build(per_listener).map(Into::into)
    }

    /// The lazy routing cache, when routes are lazy.
    pub fn lazy(&self) -> Option<Arc<LazyHosts>> {
        self.lock().lazy.clone()
    }

    /// Creates or replaces (`Some`) or removes (`None`) upstream `id`.
    /// Resolves the nodes' names first, outside the lock.
    pub async fn set_upstream(&self, id: &str, plan: Option<&UpstreamPlan>) -> anyhow::Result<()> {
        let addrs = match plan {
            Some(p) => Some(resolve::resolve(p).await?),
            None => None,
        };
        let mut shared = self.lock();
        match (plan, addrs) {
            (Some(p), Some(addrs)) => {
                let previous = shared.pools.get(id).cloned();
                let pool = build_pool(p, &addrs, previous.as_deref(), &shared.health_events)?;
                shared.pools.insert(id.to_string(), Arc::new(pool));
            }
            _ => {
                shared.pools.remove(id);
            }
        }
        shared.publish();
        Ok(())
    }

    /// Creates or replaces (`Some`) or removes (`None`) rate-limit rule
    /// `name`; a rule whose settings did not change keeps its buckets.
    /// Routes that name it pick it up when their slot is set again.
    pub fn set_rate_rule(&self, name: &str, config: Option<RuleConfig>) -> anyhow::Result<()> {
        let mut shared = self.lock();
        match config {
            Some(cfg) => {
                if matches!(shared.rules.get(name), Some((old, _)) if *old == cfg) {
                    return Ok(());
                }
                let rule = Arc::new(Rule::new(cfg.clone())?);
                shared.rules.insert(name.to_string(), (cfg, rule));
            }
            None => {
                shared.rules.remove(name);
            }
        }
        Ok(())
    }

    /// How many upstream pools are live.
    pub fn pools(&self) -> usize {
        self.lock().pools.len()
    }
}

impl Shared {
    /// Gives every listener a proxy over its host tables (or its view of
    /// the lazy cache) and the current pools.
    fn publish(&self) {
        for (i, l) in self.listeners.iter().enumerate() {
            let routes: Arc<dyn Resolver> = match &self.lazy {
                Some(lazy) => Arc::new(LazyResolver::new(lazy.clone(), i, l.tables.clone())),
                None => l.tables.clone(),
            };
            let proxy =
                Proxy::new(routes, self.pools.clone()).with_trusted_proxies(self.trusted.clone());
            l.proxy.store(Arc::new(proxy));
        }
    }

    /// The tables of one slot, by listener index.
    fn build(
        &self,
        per_listener: &[(String, Vec<RouteSpec>)],
    ) -> Result<Vec<Option<Arc<RouteTable>>>, SlotError> {
        let mut built = Vec::with_capacity(self.listeners.len());
        for l in &self.listeners {
            let mine = per_listener
                .iter()
                .find(|(name, _)| *name == l.name)
                .map(|(_, specs)| specs.clone())
                .unwrap_or_default();
            let table = if mine.is_empty() {
                None
            } else {
                let specs = attach_route_options(
                    mine,
                    &self.rules,
                    &self.sink,
                    self.cache.as_ref(),
                    &self.consumers,
                    &|u| self.pools.contains_key(u),
                )
                .map_err(SlotError::Options)?;
                Some(RouteTable::build(specs).map_err(SlotError::from)?)
                    .filter(|t| !t.is_empty())
                    .map(Arc::new)
            };
            built.push(table);
        }
        Ok(built)
    }
}
