//! Lazy routing's reads: a host's routes come from the store on its first
//! request ([`StoreSlots`], the [`SlotSource`] over a [`Store`]). One read
//! transaction ranges over the host's exact index and the index of the one
//! wildcard that can match it; each index entry carries its route, so no
//! second read is needed (entries written by older versions, which carry
//! nothing, are followed to the route with a get).
use std::sync::{Arc, RwLock};

use futures_util::future::{BoxFuture, FutureExt};
use serde_json::Value;

use super::{
    keys::Layout,
    slot_plan::{plan_slot, Catalog},
    KeyValue, Store,
};
use crate::config::{
    l7::RouteConfig,
    resource::{self, Context, Kind},
};
use crate::l7::{
    dynamic::DynamicRoutes,
    lazy::{Loaded, SlotSource, SlotTables, SourceUnavailable},
    router::HostSlot,
};

/// Reads host slots from the store and builds their tables.
pub struct StoreSlots {
    store: Store,
    layout: Layout,
    node: Context,
    catalog: Arc<RwLock<Catalog>>,
    dynamic: Arc<DynamicRoutes>,
}

impl StoreSlots {
    /// Slots of the configuration under `layout`, planned in the frame of
    /// `node` against the upstreams and rules the applier keeps in
    /// `catalog`, built by `dynamic`.
    pub fn new(
        store: Store,
        layout: Layout,
        node: Context,
        catalog: Arc<RwLock<Catalog>>,
        dynamic: Arc<DynamicRoutes>,
    ) -> StoreSlots {
        StoreSlots {
            store,
            layout,
            node,
            catalog,
            dynamic,
        }
    }

    /// The routes of one index range, in route-id order (the applier's
    /// order, so precedence ties fall the same way in both modes).
    async fn routes(&self, entries: Vec<KeyValue>) -> Result<Vec<RouteConfig>, SourceUnavailable> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let raw = if e.value.is_empty() {
                let id = Layout::last_segment(&e.key);
                match self
                    .store
                    .get(&self.layout.resource(Kind::Routes, id))
                    .await
                {
                    Ok(Some(kv)) => kv.value,
                    Ok(None) => continue,
                    Err(err) => return Err(SourceUnavailable(err.to_string())),
                }
            } else {
                e.value
            };
            match serde_json::from_slice::<Value>(&raw)
                .ok()
                .and_then(|v| resource::parse::<RouteConfig>(&v).ok())
            {
                Some(r) => out.push(r),
                None => log::error!("lazy routes: {} holds no valid route; left out", e.key),
            }
        }
        Ok(out)
    }

    /// The tables of `slot` for `routes` (all `None`: no route serves).
    fn tables(&self, slot: &HostSlot, routes: Vec<RouteConfig>) -> SlotTables {
        let planned = if routes.is_empty() {
            None
        } else {
            let catalog = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            plan_slot(slot, routes, &self.node, &catalog.upstreams, &catalog.rules)
        };
        let per_listener = planned.unwrap_or_default();
        match self.dynamic.build_slot(&per_listener) {
            Ok(t) => t,
            Err(e) => {
                log::error!("lazy routes: host {slot:?}: {e}");
                self.dynamic
                    .build_slot(&[])
                    .unwrap_or_else(|_| Arc::from(Vec::new()))
            }
        }
    }

    async fn load_slots(
        self: Arc<Self>,
        host: String,
        suffix: Option<String>,
    ) -> Result<Loaded, SourceUnavailable> {
        let exact = HostSlot::Exact(host);
        let wild = suffix.map(HostSlot::Wildcard);
        let mut prefixes = vec![self.layout.slot(&exact)];
        prefixes.extend(wild.as_ref().map(|w| self.layout.slot(w)));
        let (mut ranges, revision) = self
            .store
            .ranges(&prefixes)
            .await
            .map_err(|e| SourceUnavailable(e.to_string()))?;
        let wild_entries = if wild.is_some() { ranges.pop() } else { None };
        let exact_entries = ranges.pop().unwrap_or_default();
        let exact_routes = self.routes(exact_entries).await?;
        let exact_tables = self.tables(&exact, exact_routes);
        let wildcard = match (wild, wild_entries) {
            (Some(w), Some(entries)) => {
                let routes = self.routes(entries).await?;
                Some(self.tables(&w, routes))
            }
            _ => None,
        };
        Ok(Loaded {
            revision,
            exact: exact_tables,
            wildcard,
        })
    }
}

/// The source handed to the proxy: an `Arc` so that each load can own it.
pub struct SharedSlots(pub Arc<StoreSlots>);

impl SlotSource for SharedSlots {
    fn load(
        &self,
        host: String,
        suffix: Option<String>,
    ) -> BoxFuture<'static, Result<Loaded, SourceUnavailable>> {
        self.0.clone().load_slots(host, suffix).boxed()
    }
}
