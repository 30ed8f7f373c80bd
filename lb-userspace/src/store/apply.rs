//! Applies what the store holds to the running proxy, one change at a
//! time: a full read at start (and after a compaction gap), then a watch
//! from the next revision. A route change re-plans the host slots the
//! route was and is in — only the routes of those slots — and swaps their
//! tables; an upstream change rebuilds that pool; nothing else is touched.
//! An L4 VIP change goes to the daemon, which rewrites that VIP's Maglev
//! table in the XDP maps ([`VipChange`]). Each batch is applied — VIPs
//! included — before the applied revision advances, which is what
//! read-your-writes waits for.
//!
//! While the store is unreachable nothing is removed: the proxy keeps
//! serving what it last applied, and the watch is resumed from the last
//! applied revision once the store answers again.
use smallvec::SmallVec;
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    keys::{KeyOf, Layout},
    slot_plan::{plan_slot, Catalog},
    Event, KeyValue, Store, StoreError, WatchBatch,
};
use crate::config::{
    l4::VipConfig,
    l7::{RouteConfig, UpstreamYaml},
    middleware::RateLimitYaml,
    resource::{self, Context, Kind},
};
use crate::l7::{dynamic::DynamicRoutes, lazy::LazyHosts, router::HostSlot};

/// Wait between attempts while the store is unreachable.
const RETRY: Duration = Duration::from_millis(500);

/// How long after a change the snapshot is written (changes in between
/// share one write: a snapshot costs O(resources), so it is not written
/// per change).
const SNAPSHOT_DELAY: Duration = Duration::from_secs(1);

/// This node's applied revision and whether its watch is connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub revision: i64,
    pub connected: bool,
    /// The revision of the last applied change to resources (what this
    /// node announces to its fleet; changes to node keys alone do not move
    /// it, so announcements do not answer each other for ever).
    pub resources: i64,
    /// The last revision whose VIPs this node's datapath could not write
    /// (the tables stayed as they were; the reason is in the log): the
    /// admin API answers that write with an error instead of 200.
    pub vip_failed: Option<i64>,
}

/// L4 VIPs the store changed, for the daemon to write into the XDP
/// tables; the applier waits for `done` before its applied revision
/// advances (read-your-writes).
#[derive(Debug)]
pub struct VipChange {
    /// The store revision of the change.
    pub revision: i64,
    /// `true`: `vips` is every stored VIP (a first read, a re-read after a
    /// compaction); `false`: only the VIPs that changed.
    pub full: bool,
    /// By name: `Some` created or replaced, `None` deleted.
    pub vips: BTreeMap<String, Option<VipConfig>>,
    /// Answered once the tables say what `vips` says, or with why they
    /// could not (then they are unchanged).
    pub done: oneshot::Sender<Result<(), String>>,
}

/// A VIP about to be written through the admin API, for the daemon to
/// check against its datapath (next hops of the backends, free VIP rows
/// and backend slots, a clash with the file's VIPs) before it is stored:
/// a VIP this node cannot serve is refused instead of stored and logged.
#[derive(Debug)]
pub struct VipCheck {
    pub vip: VipConfig,
    /// `Err`: why this node cannot serve it.
    pub answer: oneshot::Sender<Result<(), String>>,
}

/// What the daemon's L4 half is asked through a [`VipSink`].
#[derive(Debug)]
pub enum VipRequest {
    Change(VipChange),
    /// Boxed: a whole VIP config is six times the size of a change, and
    /// checks are rare (one per VIP written through the admin API).
    Check(Box<VipCheck>),
}

/// Where the applier sends VIP changes and the admin API VIP checks (the
/// daemon's L4 half).
pub type VipSink = mpsc::UnboundedSender<VipRequest>;

/// The resources this node has applied, and where each route sits.
#[derive(Default)]
struct State {
    upstreams: HashMap<String, UpstreamYaml>,
    rules: HashMap<String, RateLimitYaml>,
    /// Route ids of each host slot, sorted (most hosts have one route:
    /// it is held inline, where a `Vec` costs an allocation and a
    /// one-entry B-tree node ~300 bytes).
    slots: HashMap<HostSlot, SmallVec<[Box<str>; 1]>>,
    /// Routes by the upstream or rule they name, so that a change to one
    /// finds its routes without a scan.
    refs: HashMap<(Kind, String), BTreeSet<Box<str>>>,
    /// The resources as stored, for the snapshot. The only copy of a
    /// route kept here: its slots and references are parsed again from it
    /// when it changes, and it is parsed again when its host is planned
    /// (keeping routes parsed, or their slots and references in maps of
    /// their own, cost some 1.5 KB and 350 bytes per route).
    raw: BTreeMap<String, Vec<u8>>,
    /// The L4 VIPs applied, by name.
    vips: BTreeMap<String, VipConfig>,
}

impl State {
    fn route_refs(r: &RouteConfig) -> Vec<(Kind, String)> {
        let mut out: Vec<(Kind, String)> = r
            .rate_limits
            .iter()
            .map(|n| (Kind::RateLimits, n.clone()))
            .collect();
        out.extend(r.upstream.iter().map(|u| (Kind::Upstreams, u.clone())));
        out
    }
}

/// What one batch touched.
#[derive(Default)]
struct Touched {
    /// The revision of the changes (for lazy invalidations).
    revision: i64,
    /// Lazy routing: every cached host must be read again.
    all_lazy: bool,
    slots: HashSet<HostSlot>,
    upstreams: BTreeSet<String>,
    rules: BTreeSet<String>,
    /// VIPs changed (`None`: deleted), and whether the whole set is new.
    vips: BTreeMap<String, Option<VipConfig>>,
    all_vips: bool,
}

/// Feeds the store into the proxy.
pub struct Applier {
    store: Store,
    layout: Layout,
    node: Context,
    /// The proxy's routes (`None`: no proxy on this node, only VIPs).
    dynamic: Option<Arc<DynamicRoutes>>,
    applied: watch::Sender<Applied>,
    state: State,
    /// Where what was applied is kept for a restart while the store is
    /// down (`None`: not kept).
    snapshot: Option<PathBuf>,
    /// Changes applied since the last snapshot.
    dirty: bool,
    /// Lazy routing: host slots live in this cache; the applier keeps and
    /// applies only the any-host routes and invalidates the rest.
    lazy: Option<Arc<LazyHosts>>,
    /// The upstreams and rules applied, for lazy loads to plan against.
    catalog: Arc<RwLock<Catalog>>,
    /// Where VIP changes go (`None`: no XDP datapath here; VIPs are
    /// stored and listed only).
    vip_sink: Option<VipSink>,
    /// Whether to wait for the daemon to write each VIP change (not
    /// during the first read: the daemon applies that one itself before
    /// it reports ready, as its loop does not run yet).
    vip_wait: bool,
    /// See [`Applied::vip_failed`].
    vip_failed: Option<i64>,
}

fn parse_value<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    parse_bytes(&kv.value)
}

fn parse_bytes<T: serde::de::DeserializeOwned>(value: &[u8]) -> Option<T> {
    let v: Value = serde_json::from_slice(value).ok()?;
    resource::parse(&v).ok()
}

impl Applier {
    /// An applier of the resources under `layout` in `store`; `node` is
    /// the node's own part of the file (listeners, certificates, cache).
    pub fn new(
        store: Store,
        layout: Layout,
        node: Context,
        dynamic: Arc<DynamicRoutes>,
    ) -> (Applier, watch::Receiver<Applied>) {
        Applier::with(store, layout, node, Some(dynamic))
    }

    /// An applier for a node without a proxy: only VIPs are applied
    /// (through `sink`); routes and upstreams are followed but not served.
    pub fn vips_only(
        store: Store,
        layout: Layout,
        node: Context,
        sink: VipSink,
    ) -> (Applier, watch::Receiver<Applied>) {
        let (applier, rx) = Applier::with(store, layout, node, None);
        (applier.with_vips(sink), rx)
    }

    fn with(
        store: Store,
        layout: Layout,
        node: Context,
        dynamic: Option<Arc<DynamicRoutes>>,
    ) -> (Applier, watch::Receiver<Applied>) {
        let (applied, rx) = watch::channel(Applied::default());
        (
            Applier {
                store,
                layout,
                node,
                dynamic,
                applied,
                state: State::default(),
                snapshot: None,
                dirty: false,
                lazy: None,
                catalog: Arc::default(),
                vip_sink: None,
                vip_wait: false,
                vip_failed: None,
            },
            rx,
        )
    }

    /// Sends VIP changes to `sink` (the daemon's L4 half), which writes
    /// them into the XDP tables.
    pub fn with_vips(mut self, sink: VipSink) -> Applier {
        self.vip_sink = Some(sink);
        self
    }

    /// Lazy routing through `lazy`: only routes without a host are loaded
    /// and applied; changes to other hosts invalidate their cache entries.
    pub fn with_lazy(mut self, lazy: Arc<LazyHosts>) -> Applier {
        self.lazy = Some(lazy);
        self
    }

    /// The upstreams and rules applied (kept up to date).
    pub fn catalog(&self) -> Arc<RwLock<Catalog>> {
        self.catalog.clone()
    }

    /// Keeps a snapshot of what was applied at `path`.
    pub fn with_snapshot(mut self, path: PathBuf) -> Applier {
        self.snapshot = Some(path);
        self
    }

    /// Applies the snapshot left by an earlier run (when the store cannot
    /// be read at start); the watch then resumes from its revision.
    pub async fn load_snapshot(&mut self) -> anyhow::Result<i64> {
        let Some(path) = self.snapshot.clone() else {
            anyhow::bail!("no snapshot is kept");
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("snapshot {}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("snapshot {}: {e}", path.display()))?;
        let rev = doc["revision"].as_i64().unwrap_or(0);
        let kvs: Vec<KeyValue> = doc["kvs"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some(KeyValue {
                    key: k.clone(),
                    value: v.as_str()?.as_bytes().to_vec(),
                    mod_revision: rev,
                })
            })
            .collect();
        self.replace_all(kvs, rev).await;
        self.publish(rev, false);
        Ok(rev)
    }

    /// Writes the snapshot (to a new file renamed over the old one, so a
    /// crash leaves the old or the new one whole).
    fn write_snapshot(&mut self) {
        let Some(path) = &self.snapshot else { return };
        let kvs: serde_json::Map<String, Value> = self
            .state
            .raw
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let doc = serde_json::json!({
            "revision": self.applied.borrow().revision,
            "kvs": kvs,
        });
        if let Err(e) = write_atomically(path, &serde_json::to_vec(&doc).unwrap_or_default()) {
            log::warn!("config store: snapshot {}: {e}", path.display());
        }
        self.dirty = false;
    }

    /// Reads everything and applies it (the first load, and after a
    /// compaction gap). Returns the revision read at.
    pub async fn load(&mut self) -> Result<i64, StoreError> {
        let (kvs, rev) = match self.lazy {
            None => self.store.range(&self.layout.all(), None, None).await?,
            Some(_) => self.read_eager_part().await?,
        };
        self.replace_all(kvs, rev).await;
        self.publish_with(rev, true, true);
        self.write_snapshot();
        Ok(rev)
    }

    /// Lazy routing's start: every resource but the routes with a host,
    /// at one revision (the any-host routes through their index entries,
    /// which carry the route).
    async fn read_eager_part(&self) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let kinds = [
            Kind::Upstreams,
            Kind::RateLimits,
            Kind::Certificates,
            Kind::Vips,
        ];
        let mut prefixes: Vec<String> = kinds.iter().map(|k| self.layout.kind(*k)).collect();
        prefixes.push(self.layout.slot(&HostSlot::Any));
        let (ranges, rev) = self.store.ranges(&prefixes).await?;
        let mut kvs = Vec::new();
        for (i, range) in ranges.into_iter().enumerate() {
            if i < kinds.len() {
                kvs.extend(range);
                continue;
            }
            for e in range {
                let key = self
                    .layout
                    .resource(Kind::Routes, Layout::last_segment(&e.key));
                let value = if e.value.is_empty() {
                    match self.store.get(&key).await? {
                        Some(kv) => kv.value,
                        None => continue,
                    }
                } else {
                    e.value
                };
                kvs.push(KeyValue {
                    key,
                    value,
                    mod_revision: e.mod_revision,
                });
            }
        }
        Ok((kvs, rev))
    }

    /// Makes `kvs` the whole state, applying the difference.
    async fn replace_all(&mut self, kvs: Vec<KeyValue>, revision: i64) {
        let old_slots: Vec<HostSlot> = self.state.slots.keys().cloned().collect();
        let old_upstreams: Vec<String> = self.state.upstreams.keys().cloned().collect();
        let old_rules: Vec<String> = self.state.rules.keys().cloned().collect();
        self.state = State::default();
        let mut touched = Touched {
            revision,
            all_lazy: true,
            all_vips: true,
            ..Touched::default()
        };
        touched.slots.extend(old_slots);
        touched.upstreams.extend(old_upstreams);
        touched.rules.extend(old_rules);
        for kv in kvs {
            self.event(Event::Put(kv), &mut touched);
        }
        self.apply(touched).await;
    }

    fn publish(&self, revision: i64, connected: bool) {
        self.publish_with(revision, connected, false);
    }

    fn publish_with(&self, revision: i64, connected: bool, resources_changed: bool) {
        self.applied.send_if_modified(|a| {
            let revision = revision.max(a.revision);
            let new = Applied {
                revision,
                connected,
                resources: if resources_changed {
                    revision
                } else {
                    a.resources
                },
                vip_failed: self.vip_failed,
            };
            let changed = *a != new;
            *a = new;
            changed
        });
    }

    /// Follows the watch for ever after a [`Applier::load`], reconnecting
    /// after outages.
    pub async fn run_from_loaded(mut self) {
        // From now on the daemon's loop answers VIP changes.
        self.vip_wait = true;
        let mut next = self.applied.borrow().revision + 1;
        // One warning per outage, not one per retry.
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            let mut stream = match self.store.watch(&self.layout.all(), next).await {
                Ok(s) => s,
                Err(StoreError::Compacted(_)) => {
                    next = self.reload_after_gap().await;
                    continue;
                }
                Err(e) => {
                    self.publish(0, false);
                    if down_since.is_none() {
                        log::warn!("config store: watch from revision {next}: {e}; retrying every {RETRY:?} (serving what was applied)");
                        down_since = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if let Some(t) = down_since.take() {
                log::warn!(
                    "config store: watching again from revision {next} after {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            let rev = self.applied.borrow().revision;
            self.publish(rev, true);
            loop {
                let msg = if self.dirty && self.snapshot.is_some() {
                    match tokio::time::timeout(SNAPSHOT_DELAY, stream.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            self.write_snapshot();
                            continue;
                        }
                    }
                } else {
                    stream.recv().await
                };
                match msg {
                    Some(Ok(batch)) => {
                        next = batch.revision + 1;
                        self.batch(batch).await;
                    }
                    Some(Err(StoreError::Compacted(_))) => {
                        next = self.reload_after_gap().await;
                        break;
                    }
                    Some(Err(e)) => {
                        log::warn!("config store: watch broken ({e}); serving what was applied, resuming from revision {next}");
                        self.publish(0, false);
                        break;
                    }
                    None => {
                        self.publish(0, false);
                        break;
                    }
                }
            }
            // The watch broke (the store went away, most likely): keep
            // what was applied for a restart during the outage.
            if self.dirty {
                self.write_snapshot();
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn reload_after_gap(&mut self) -> i64 {
        log::warn!("config store: the watch's revision was compacted; reading everything again");
        loop {
            match self.load().await {
                Ok(rev) => return rev + 1,
                Err(e) => {
                    log::warn!("config store: re-read failed ({e}); retrying");
                    self.publish(0, false);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Applies one watched transaction.
    pub async fn batch(&mut self, batch: WatchBatch) {
        let mut touched = Touched {
            revision: batch.revision,
            ..Touched::default()
        };
        let resources = batch
            .events
            .iter()
            .any(|e| matches!(self.layout.parse(e.key()), KeyOf::Resource(..)));
        for e in batch.events {
            self.event(e, &mut touched);
        }
        self.apply(touched).await;
        self.publish_with(batch.revision, true, resources);
        self.dirty |= resources;
    }

    /// Updates the state for one event and notes what it touched.
    fn event(&mut self, e: Event, t: &mut Touched) {
        if let Some(lazy) = &self.lazy {
            // Index entries are written with their route in one
            // transaction, a removed one included: they name every host
            // slot a change touches, also the ones a route left.
            if let Some(slot) = self.layout.parse_slot(e.key()) {
                if slot != HostSlot::Any {
                    lazy.invalidate(&slot, t.revision);
                }
            }
        }
        let KeyOf::Resource(kind, id) = self.layout.parse(e.key()) else {
            return;
        };
        let (kv, old) = match e {
            Event::Put(kv) => {
                let old = self.state.raw.insert(kv.key.clone(), kv.value.clone());
                (Some(kv), old)
            }
            Event::Delete { key, .. } => {
                let old = self.state.raw.remove(&key);
                (None, old)
            }
        };
        let s = &mut self.state;
        match kind {
            Kind::Routes => {
                // Undo what the route as it was added (the same parse as
                // when it was added, so the same slots and references).
                let was = old.and_then(|value| parse_bytes::<RouteConfig>(&value));
                if let Some(was) = was {
                    for slot in HostSlot::of_route(&was.hosts).unwrap_or_default() {
                        if let Some(set) = s.slots.get_mut(&slot) {
                            if let Ok(i) = set.binary_search_by(|x| (**x).cmp(id.as_str())) {
                                set.remove(i);
                            }
                            if set.is_empty() {
                                s.slots.remove(&slot);
                            }
                        }
                        t.slots.insert(slot);
                    }
                    for key in State::route_refs(&was) {
                        if let Some(set) = s.refs.get_mut(&key) {
                            set.remove(id.as_str());
                            if set.is_empty() {
                                s.refs.remove(&key);
                            }
                        }
                    }
                }
                let Some(route) = kv.as_ref().and_then(parse_value::<RouteConfig>) else {
                    return;
                };
                let mut slots = HostSlot::of_route(&route.hosts).unwrap_or_default();
                if self.lazy.is_some() {
                    // Lazy: only the any-host routes are kept here.
                    slots.retain(|s| *s == HostSlot::Any);
                    if slots.is_empty() {
                        s.raw.remove(&self.layout.resource(Kind::Routes, &id));
                        return;
                    }
                }
                for slot in &slots {
                    let set = s.slots.entry(slot.clone()).or_default();
                    if let Err(i) = set.binary_search_by(|x| (**x).cmp(id.as_str())) {
                        set.insert(i, id.as_str().into());
                    }
                    t.slots.insert(slot.clone());
                }
                for key in State::route_refs(&route) {
                    s.refs.entry(key).or_default().insert(id.as_str().into());
                }
            }
            Kind::Upstreams => {
                let was = s.upstreams.contains_key(&id);
                match kv.as_ref().and_then(parse_value::<UpstreamYaml>) {
                    Some(u) => {
                        s.upstreams.insert(id.clone(), u);
                    }
                    None => {
                        s.upstreams.remove(&id);
                    }
                }
                // Routes planned while their upstream was missing were
                // left out of their tables: plan them again now (lazy
                // hosts: read them again, as their references are not
                // kept).
                if !was {
                    self.slots_naming(Kind::Upstreams, &id, t);
                    t.all_lazy = true;
                }
                t.upstreams.insert(id);
            }
            Kind::RateLimits => {
                match kv.as_ref().and_then(parse_value::<RateLimitYaml>) {
                    Some(r) => {
                        s.rules.insert(id.clone(), r);
                    }
                    None => {
                        s.rules.remove(&id);
                    }
                }
                // Route limiters hold the rule itself: rebuild them.
                self.slots_naming(Kind::RateLimits, &id, t);
                t.all_lazy = true;
                t.rules.insert(id);
            }
            Kind::Vips => {
                let vip = match kv.as_ref().map(parse_value::<VipConfig>) {
                    Some(Some(v)) => match resource::check_vip(&v) {
                        Ok(()) => Some(v),
                        Err(issues) => {
                            // Written through another path: keep what runs.
                            log::error!(
                                "config store: VIP {id} is invalid, not applied: {issues:?}"
                            );
                            return;
                        }
                    },
                    Some(None) => {
                        log::error!("config store: VIP {id} does not parse, not applied");
                        return;
                    }
                    None => None,
                };
                // The store's id is the VIP's name (the admin API fills it).
                let vip = vip.map(|mut v| {
                    v.name = id.clone();
                    v
                });
                match &vip {
                    Some(v) => s.vips.insert(id.clone(), v.clone()),
                    None => s.vips.remove(&id),
                };
                t.vips.insert(id, vip);
            }
            // Certificates are stored and served by the admin API;
            // applying them to listeners is not wired yet.
            Kind::Certificates => {}
        }
    }

    /// Notes the slots of the routes that name `id` of `kind`.
    fn slots_naming(&self, kind: Kind, id: &str, t: &mut Touched) {
        /// A route's hosts alone (a route that did not parse whole is in
        /// no slot; re-planning a slot it names anyway changes nothing).
        #[derive(serde::Deserialize)]
        struct Hosts {
            #[serde(default)]
            hosts: Vec<String>,
        }
        for route in self
            .state
            .refs
            .get(&(kind, id.to_string()))
            .into_iter()
            .flatten()
        {
            let key = self.layout.resource(Kind::Routes, route);
            let Some(raw) = self.state.raw.get(&key) else {
                continue;
            };
            if let Ok(h) = serde_json::from_slice::<Hosts>(raw) {
                t.slots
                    .extend(HostSlot::of_route(&h.hosts).unwrap_or_default());
            }
        }
    }

    /// Applies VIPs (waiting for the daemon to write them), upstreams,
    /// then rules, then the touched slots.
    async fn apply(&mut self, t: Touched) {
        if let Some(sink) = &self.vip_sink {
            if t.all_vips || !t.vips.is_empty() {
                let vips = if t.all_vips {
                    self.state
                        .vips
                        .iter()
                        .map(|(n, v)| (n.clone(), Some(v.clone())))
                        .collect()
                } else {
                    t.vips.clone()
                };
                let (done, written) = oneshot::channel();
                let change = VipChange {
                    revision: t.revision,
                    full: t.all_vips,
                    vips,
                    done,
                };
                if sink.send(VipRequest::Change(change)).is_ok() && self.vip_wait {
                    // A closed channel: the daemon is stopping.
                    if let Ok(Err(_)) = written.await {
                        self.vip_failed = Some(t.revision);
                    }
                }
            }
        }
        let Some(dynamic) = self.dynamic.clone() else {
            return;
        };
        if !t.upstreams.is_empty() || !t.rules.is_empty() {
            let mut c = self.catalog.write().unwrap_or_else(|e| e.into_inner());
            for id in &t.upstreams {
                match self.state.upstreams.get(id) {
                    Some(u) => c.upstreams.insert(id.clone(), u.clone()),
                    None => c.upstreams.remove(id),
                };
            }
            for id in &t.rules {
                match self.state.rules.get(id) {
                    Some(r) => c.rules.insert(id.clone(), r.clone()),
                    None => c.rules.remove(id),
                };
            }
        }
        for id in &t.upstreams {
            let plan = match self.state.upstreams.get(id).map(resource::check_upstream) {
                Some(Ok(p)) => Some(p),
                Some(Err(issues)) => {
                    log::error!("config store: upstream {id} is invalid, not applied: {issues:?}");
                    continue;
                }
                None => None,
            };
            if let Err(e) = dynamic.set_upstream(id, plan.as_ref()).await {
                log::error!("config store: upstream {id}: {e:#}");
            }
        }
        for name in &t.rules {
            let cfg = match self.state.rules.get(name).map(resource::check_rate_limit) {
                Some(Ok(c)) => Some(c),
                Some(Err(issues)) => {
                    log::error!("config store: rate limit {name} is invalid: {issues:?}");
                    continue;
                }
                None => None,
            };
            if let Err(e) = dynamic.set_rate_rule(name, cfg) {
                log::error!("config store: rate limit {name}: {e:#}");
            }
        }
        for slot in &t.slots {
            self.apply_slot(&dynamic, slot);
        }
        if let (Some(lazy), true) = (&self.lazy, t.all_lazy) {
            // After the pools and rules are in place, so that a re-read
            // plans against them.
            lazy.invalidate_all(t.revision);
        }
    }

    /// Plans the routes of `slot` and swaps its tables. A route that does
    /// not plan (its upstream is missing, say, after writes through
    /// another path) is left out and logged; the others are served.
    fn apply_slot(&self, dynamic: &DynamicRoutes, slot: &HostSlot) {
        let routes: Vec<RouteConfig> = self
            .state
            .slots
            .get(slot)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let raw = self
                    .state
                    .raw
                    .get(&self.layout.resource(Kind::Routes, id))?;
                let v: Value = serde_json::from_slice(raw).ok()?;
                resource::parse::<RouteConfig>(&v).ok()
            })
            .collect();
        if let Some(per_listener) = plan_slot(
            slot,
            routes,
            &self.node,
            &self.state.upstreams,
            &self.state.rules,
        ) {
            if let Err(e) = dynamic.set_slot(slot, &per_listener) {
                log::error!("config store: host {slot:?}: {e}");
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
