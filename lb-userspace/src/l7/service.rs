//! The running proxy: worker threads, each serving its SO_REUSEPORT socket
//! of every listener, and the state they share — per listener a proxy
//! (routes + pools) behind an atomic pointer and a certificate store — that
//! a reload replaces.
//!
//! Workers are OS threads with a single-threaded tokio runtime each (the
//! nginx/Pingora model): a connection lives on the worker the kernel (or
//! the `sk_reuseport` program) gave it to, so its tasks never migrate and
//! share no run queue with other workers.
//!
//! Reload builds everything new first (DNS lookups, balancers, route
//! tables, certificates loaded from disk); only when all of it succeeded is
//! each listener's proxy swapped and its certificates replaced. A request
//! keeps the proxy it started with, so in-flight requests finish on the old
//! configuration and new ones see the new one, with no request lost.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::net::Prefix;

use super::box_in_place::box_in_place;
use super::plan::{CachePlan, L7Plan, ListenerPlan};
use super::plugins::consumers::Consumers;
use super::{
    body::{ClientBody, ProxyBody},
    cache::{Cache, CacheConfig},
    dynamic::{DynamicRoutes, ListenerSlot, Shared},
    lane::Lane,
    lazy::{LazyHosts, LazySettings},
    options::SharedCache,
    proxy::{Pool, Proxy},
    ratelimit::{self, Escalation, EscalationSink, Rule, RuleConfig},
    recording, resolve,
    router::{HostTables, RouteTable},
    server::{serve, ConnInfo, Handler},
    tls::{self, CertStore},
    Inherited, Listeners, Steering,
};
use crate::health::{EventSource, HealthEvent, HealthView, Target};

/// How often certificate files are checked for changes.
const CERT_WATCH_INTERVAL: Duration = tls::DEFAULT_WATCH_INTERVAL;

/// One listener's live state.
struct RunningListener {
    plan: ListenerPlan,
    addr: SocketAddr,
    proxy: Arc<ArcSwap<Proxy>>,
    certs: Option<Arc<CertStore>>,
    cert_watch: Option<tokio::task::JoinHandle<()>>,
    /// Kept so that workers can be drained; `None`: kernel hashing.
    steering: Option<Steering>,
    /// Copies of the group's listening sockets, to hand to a successor
    /// process (`lifecycle::handover`); closed when shutdown begins.
    handover: Vec<std::net::TcpListener>,
}

/// The proxy half of the daemon.
pub struct L7Service {
    plan: L7Plan,
    listeners: Vec<RunningListener>,
    pools: HashMap<String, Arc<Pool>>,
    /// Resolved addresses of each upstream, to see whether a DNS refresh
    /// changed anything.
    resolved: HashMap<String, Vec<(SocketAddr, u32)>>,
    shutdown: watch::Sender<bool>,
    /// Workers accept once this is true ([`L7Service::start_held`]).
    open: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    /// Rate-limit rules by name with the config they were built from: a
    /// rule whose config did not change keeps its buckets across reloads.
    rules: HashMap<String, (RuleConfig, Arc<Rule>)>,
    escalation_sink: EscalationSink,
    escalations: Option<tokio::sync::mpsc::UnboundedReceiver<Escalation>>,
    /// Active and passive verdicts of the L7 nodes (ids `l7/<upstream>/<addr>`).
    health: HealthView,
    /// Where passive trackers report.
    health_events: mpsc::UnboundedSender<HealthEvent>,
    /// The response cache and the settings its store was built with (kept
    /// across reloads while they do not change).
    cache: Option<(CachePlan, Cache)>,
    /// Set once resources come from a store (`config_store` other than
    /// `file`): then routes and upstreams change through this handle, and
    /// a file reload may not replace them.
    dynamic: Option<Arc<DynamicRoutes>>,
}

pub use super::assemble::health_id;
use super::assemble::{attach_route_options, build_pool};

impl std::fmt::Debug for L7Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L7Service")
            .field("listeners", &self.addresses())
            .field("workers", &self.plan.workers)
            .finish()
    }
}

impl L7Service {
    /// Builds the proxy of `plan`, binds its listeners and starts its
    /// workers. Must be called inside a tokio runtime (DNS lookups and
    /// the certificate watchers run on it).
    pub async fn start(
        plan: L7Plan,
        health_events: mpsc::UnboundedSender<HealthEvent>,
    ) -> anyhow::Result<L7Service> {
        L7Service::start_inheriting(plan, health_events, &mut Inherited::default()).await
    }

    /// As [`L7Service::start`], serving the listening sockets a predecessor
    /// handed over (`inherited`) instead of binding new ones where the
    /// addresses match.
    pub async fn start_inheriting(
        plan: L7Plan,
        health_events: mpsc::UnboundedSender<HealthEvent>,
        inherited: &mut Inherited,
    ) -> anyhow::Result<L7Service> {
        let svc = L7Service::start_held(plan, health_events, inherited).await?;
        svc.open();
        Ok(svc)
    }

    /// As [`L7Service::start_inheriting`], but the workers accept nothing
    /// until [`L7Service::open`]: a daemon whose routes come from a store
    /// loads them first, so that a successor in a handover never answers
    /// from an empty table (connections wait in the listeners' queues,
    /// which the predecessor still serves meanwhile).
    pub async fn start_held(
        plan: L7Plan,
        health_events: mpsc::UnboundedSender<HealthEvent>,
        inherited: &mut Inherited,
    ) -> anyhow::Result<L7Service> {
        let (resolved, pools) = build_pools(&plan, &HashMap::new(), &health_events).await?;
        let (escalation_sink, escalations) = ratelimit::escalation_channel();
        let rules = build_rules(&plan, &HashMap::new())?;
        let cache = build_cache(&plan, None);
        let shared = shared_cache(&cache);
        let mut listeners = Vec::new();
        let mut sockets = Vec::new();
        for lp in &plan.listeners {
            let proxy = Arc::new(ArcSwap::from_pointee(build_proxy(
                lp,
                &pools,
                &rules,
                &escalation_sink,
                shared.as_ref(),
                &plan.trusted_proxies,
                &plan.consumers,
            )?));
            let certs = match &lp.tls {
                Some(t) => Some(Arc::new(
                    CertStore::load(t.certs.clone())
                        .with_context(|| format!("listener {}: certificates", lp.name))?,
                )),
                None => None,
            };
            let acceptor = match (&lp.tls, &certs) {
                (Some(t), Some(store)) => Some(TlsAcceptor::from(
                    tls::build_server_config(t, store.clone())
                        .with_context(|| format!("listener {}: TLS", lp.name))?,
                )),
                _ => None,
            };
            let mut group = match inherited.take(lp.addr) {
                Some((local, socks)) => {
                    log::info!(
                        "listener {} on {local}: serving {} sockets handed over by the previous process",
                        lp.name,
                        socks.len()
                    );
                    Listeners::adopt(local, socks, plan.workers)
                }
                None => Listeners::bind(lp.addr, plan.workers),
            }
            .with_context(|| format!("listener {} on {}", lp.name, lp.addr))?;
            let extra = group.take_extra();
            let steering = Steering::attach(&group).ok();
            let addr = group.local_addr();
            let handover = group
                .iter()
                .chain(extra.iter())
                .map(|s| s.try_clone())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("listener {}: keeping a copy for handover", lp.name))?;
            let mut per_worker: Vec<Vec<std::net::TcpListener>> =
                group.into_vec().into_iter().map(|s| vec![s]).collect();
            for (i, s) in extra.into_iter().enumerate() {
                per_worker[i % plan.workers].push(s);
            }
            sockets.push((
                per_worker,
                acceptor,
                proxy.clone(),
                Arc::<str>::from(lp.name.as_str()),
            ));
            let cert_watch = certs.as_ref().map(|s| tls::watch(s, CERT_WATCH_INTERVAL));
            listeners.push(RunningListener {
                plan: lp.clone(),
                addr,
                proxy,
                certs,
                cert_watch,
                steering,
                handover,
            });
        }
        let (shutdown, _) = watch::channel(false);
        let (open, _) = watch::channel(false);
        let mut workers = Vec::with_capacity(plan.workers);
        for w in 0..plan.workers {
            let mine: Vec<_> = sockets
                .iter_mut()
                .flat_map(|(socks, acceptor, proxy, name)| {
                    std::mem::take(&mut socks[w])
                        .into_iter()
                        .map(|s| (s, acceptor.clone(), proxy.clone(), name.clone()))
                })
                .collect();
            let limits = plan.limits.clone();
            let rx = shutdown.subscribe();
            let opened = open.subscribe();
            let handle = std::thread::Builder::new()
                .name(format!("xlb-worker-{w}"))
                .spawn(move || worker(w, mine, limits, rx, opened))
                .context("starting a worker thread")?;
            workers.push(handle);
        }
        Ok(L7Service {
            plan,
            listeners,
            pools,
            resolved,
            shutdown,
            open,
            workers,
            rules,
            escalation_sink,
            escalations: Some(escalations),
            health: HealthView::default(),
            health_events,
            cache,
            dynamic: None,
        })
    }

    /// Switches the listeners to routers that change one host at a time
    /// and returns the handle that changes them (the same handle on every
    /// call). The routes and upstreams of the plan are dropped: from now
    /// on resources come through the handle.
    pub fn dynamic(&mut self) -> Arc<DynamicRoutes> {
        self.dynamic_with(None)
    }

    /// [`L7Service::dynamic`], with host routes kept in a lazy cache when
    /// `lazy` is given (the first call decides).
    pub fn dynamic_with(&mut self, lazy: Option<LazySettings>) -> Arc<DynamicRoutes> {
        if let Some(d) = &self.dynamic {
            return d.clone();
        }
        let d = Arc::new(DynamicRoutes::new(Shared {
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerSlot {
                    name: l.plan.name.clone(),
                    proxy: l.proxy.clone(),
                    tables: Arc::new(HostTables::new()),
                })
                .collect(),
            pools: HashMap::new(),
            rules: HashMap::new(),
            sink: self.escalation_sink.clone(),
            cache: shared_cache(&self.cache),
            trusted: self.plan.trusted_proxies.clone(),
            health_events: self.health_events.clone(),
            consumers: self.plan.consumers.clone(),
            lazy: lazy.map(|settings| Arc::new(LazyHosts::new(settings))),
        }));
        self.dynamic = Some(d.clone());
        d
    }

    /// The response cache (`None`: no route caches).
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref().map(|(_, c)| c)
    }

    /// The stream of sources that went over a rule's hard limit (taken
    /// once, by the daemon, which denies them at the NIC).
    pub fn take_escalations(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Escalation>> {
        self.escalations.take()
    }

    /// The active health checks of every upstream node that has one.
    pub fn health_targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for up in &self.plan.upstreams {
            let (Some(spec), Some(addrs)) = (&up.health, self.resolved.get(&up.id)) else {
                continue;
            };
            for (addr, _) in addrs {
                out.push(Target::new(health_id(&up.id, *addr), *addr, spec.clone()));
            }
        }
        out
    }

    /// Applies a health verdict about an L7 node (`l7/…` ids): the node
    /// leaves or rejoins its pool. Returns whether eligibility changed.
    pub fn apply_health(&mut self, ev: &HealthEvent) -> bool {
        if ev.source == EventSource::Active {
            // The passive side's max-ejection guard counts nodes the
            // active checks hold down.
            for pool in self.pools.values() {
                if let Some(t) = pool.passive() {
                    t.set_active_healthy(&ev.target, ev.healthy);
                }
            }
        }
        let Some(changed) = self.health.apply(ev) else {
            return false;
        };
        let Some((up, addr)) = ev
            .target
            .strip_prefix("l7/")
            .and_then(|rest| rest.rsplit_once('/'))
            .and_then(|(up, a)| Some((up, a.parse::<SocketAddr>().ok()?)))
        else {
            return false;
        };
        if let Some(pool) = self.pools.get(up) {
            if let Some(i) = pool.upstream.nodes().iter().position(|n| n.addr == addr) {
                pool.upstream.set_healthy(i, changed, Instant::now());
                log::info!(
                    "upstream {up}: node {addr} {} ({})",
                    if changed {
                        "back in the pool"
                    } else {
                        "out of the pool"
                    },
                    ev.reason
                );
            }
        }
        true
    }

    /// `(listener, route id, hosts, upstream)` of every route, for the
    /// status page.
    pub fn route_list(&self) -> Vec<(String, String, Vec<String>, String)> {
        let mut out = Vec::new();
        for l in &self.listeners {
            for r in &l.plan.routes {
                out.push((
                    l.plan.name.clone(),
                    r.id.clone(),
                    r.hosts.clone(),
                    r.upstream.clone(),
                ));
            }
        }
        out
    }

    /// `(upstream, node address, weight, in its pool)` of every node, for
    /// the status page and the health metrics.
    pub fn node_list(&self) -> Vec<(String, SocketAddr, u32, bool)> {
        let mut out = Vec::new();
        let mut ids: Vec<&String> = self.pools.keys().collect();
        ids.sort();
        for id in ids {
            let pool = &self.pools[id];
            for (i, n) in pool.upstream.nodes().iter().enumerate() {
                out.push((id.clone(), n.addr, n.weight, pool.upstream.is_healthy(i)));
            }
        }
        out
    }

    /// Whether listener `name` terminates TLS.
    pub fn listener_tls(&self, name: &str) -> bool {
        self.listeners
            .iter()
            .any(|l| l.plan.name == name && l.plan.tls.is_some())
    }

    /// `(listener name, bound address)` of every listener.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|l| (l.plan.name.clone(), l.addr))
            .collect()
    }

    /// Whether `name`'s connections are steered by the eBPF program.
    pub fn steered(&self, name: &str) -> bool {
        self.listeners
            .iter()
            .any(|l| l.plan.name == name && l.steering.is_some())
    }

    /// What in `new` cannot be applied without a restart (empty: all can).
    pub fn restart_only(&self, new: &L7Plan) -> Vec<String> {
        let mut out = Vec::new();
        if new.workers != self.plan.workers {
            out.push("l7.workers".to_string());
        }
        if format!("{:?}", new.limits) != format!("{:?}", self.plan.limits) {
            out.push("l7.limits".to_string());
        }
        let old: Vec<_> = self
            .plan
            .listeners
            .iter()
            .map(|l| (&l.name, l.addr, l.tls.as_ref().map(tls_shape)))
            .collect();
        let now: Vec<_> = new
            .listeners
            .iter()
            .map(|l| (&l.name, l.addr, l.tls.as_ref().map(tls_shape)))
            .collect();
        if old != now {
            out.push(
                "l7.listeners (names, addresses, TLS on/off, ALPN, versions, client CA)"
                    .to_string(),
            );
        }
        out
    }

    /// Applies `new` (a plan that passed validation). On error nothing has
    /// changed.
    pub async fn reload(&mut self, new: L7Plan) -> anyhow::Result<()> {
        if self.dynamic.is_some() {
            anyhow::bail!(
                "routes and upstreams come from the config store; change them through the admin API (nothing was changed)"
            );
        }
        let restart = self.restart_only(&new);
        if !restart.is_empty() {
            anyhow::bail!(
                "{} cannot change while running (restart xlb); nothing was changed",
                restart.join(", ")
            );
        }
        let (resolved, pools) = build_pools(&new, &self.pools, &self.health_events).await?;
        let rules = build_rules(&new, &self.rules)?;
        let cache = build_cache(&new, self.cache.as_ref());
        let shared = shared_cache(&cache);
        let mut proxies = Vec::with_capacity(new.listeners.len());
        for lp in &new.listeners {
            proxies.push(build_proxy(
                lp,
                &pools,
                &rules,
                &self.escalation_sink,
                shared.as_ref(),
                &new.trusted_proxies,
                &new.consumers,
            )?);
        }
        // Certificates: load the new sets on the side first, so that a bad
        // file fails the reload before anything is swapped.
        let mut cert_changes = Vec::new();
        for (running, lp) in self.listeners.iter().zip(&new.listeners) {
            if let (Some(store), Some(t)) = (&running.certs, &lp.tls) {
                if store.specs() != t.certs {
                    CertStore::load(t.certs.clone())
                        .with_context(|| format!("listener {}: certificates", lp.name))?;
                    cert_changes.push((store.clone(), t.certs.clone()));
                }
            }
        }
        for (running, (lp, proxy)) in self
            .listeners
            .iter_mut()
            .zip(new.listeners.iter().zip(proxies))
        {
            running.proxy.store(Arc::new(proxy));
            running.plan = lp.clone();
        }
        for (store, specs) in cert_changes {
            // Loaded fine a moment ago; a file replaced in between is the
            // only way this fails, and then the old certificates stay.
            if let Err(e) = store.replace(specs) {
                log::error!("certificates changed on disk during the reload: {e}");
            }
        }
        self.pools = pools;
        self.resolved = resolved;
        self.rules = rules;
        self.cache = cache;
        self.plan = new;
        Ok(())
    }

    /// Re-resolves DNS node names; rebuilds the pools whose addresses
    /// changed (keeping the state of nodes that stayed). Returns the ids of
    /// the upstreams that changed.
    pub async fn refresh_dns(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        for up in &self.plan.upstreams {
            if !resolve::has_names(up) {
                continue;
            }
            match resolve::resolve(up).await {
                Ok(addrs) if self.resolved.get(&up.id) != Some(&addrs) => {
                    changed.push(up.id.clone())
                }
                Ok(_) => {}
                Err(e) => log::warn!("{e:#}; keeping the previous addresses"),
            }
        }
        if changed.is_empty() {
            return changed;
        }
        let plan = self.plan.clone();
        match self.reload(plan).await {
            Ok(()) => log::info!("DNS refresh: upstreams {changed:?} have new addresses"),
            Err(e) => {
                log::warn!("DNS refresh: {e:#}");
                changed.clear();
            }
        }
        changed
    }

    /// The shortest DNS refresh period among upstreams with names.
    pub fn dns_refresh_every(&self) -> Option<Duration> {
        self.plan
            .upstreams
            .iter()
            .filter(|u| resolve::has_names(u))
            .map(|u| u.dns_refresh)
            .min()
    }

    /// Each listener group for a successor process: the address its config
    /// names, the address it is bound to, and its sockets.
    pub fn handover_sockets(&self) -> Vec<(SocketAddr, SocketAddr, &[std::net::TcpListener])> {
        self.listeners
            .iter()
            .map(|l| (l.plan.addr, l.addr, l.handover.as_slice()))
            .collect()
    }

    /// Lets the workers accept (after [`L7Service::start_held`]; a no-op
    /// once open).
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout) and joins the workers.
    pub async fn shutdown(mut self) {
        // The copies kept for a handover would keep the sockets listening
        // (connections queued and never accepted) after the workers stop.
        for l in &mut self.listeners {
            l.handover.clear();
        }
        let _ = self.shutdown.send(true);
        for l in &mut self.listeners {
            if let Some(t) = l.cert_watch.take() {
                t.abort();
            }
        }
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

/// The parts of a listener's TLS that are fixed while it runs.
fn tls_shape(t: &tls::ListenerTls) -> String {
    format!("{:?} {:?} {:?}", t.alpn, t.min_version, t.client_auth)
}

/// A worker's socket of one listener: its TLS, its proxy and its name
/// (for the request record).
type WorkerSocket = (
    std::net::TcpListener,
    Option<TlsAcceptor>,
    Arc<ArcSwap<Proxy>>,
    Arc<str>,
);

/// A listener's handler in a worker: the proxy as the configuration has
/// it now, a copy of its request path per lane (`l7::lane`).
struct Serving {
    proxy: Arc<ArcSwap<Proxy>>,
    name: Arc<str>,
}

impl Handler for Serving {
    fn call<L: Lane>(
        &self,
        req: http::Request<ClientBody>,
        conn: ConnInfo,
    ) -> impl Future<Output = http::Response<ProxyBody>> + Send + 'static {
        let p = self.proxy.load_full();
        let name = self.name.clone();
        // Boxed: hyper moves the service's future around (into its
        // dispatcher, or a task per HTTP/2 stream); a pointer moves
        // cheaper than the future itself.
        box_in_place(move || {
            recording::observe(name, req, conn, move |r, c| p.handle_in::<L>(r, c))
        })
    }
}

/// One worker: its sockets of every listener, served until shutdown.
fn worker(
    id: usize,
    sockets: Vec<WorkerSocket>,
    limits: super::server::ServerLimits,
    shutdown: watch::Receiver<bool>,
    mut open: watch::Receiver<bool>,
) {
    // Started by a control-plane thread, whose policy it inherited.
    crate::sched::data_plane_thread();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("worker {id}: cannot start its runtime: {e}");
            return;
        }
    };
    let limits_drain = limits.drain_timeout;
    rt.block_on(async move {
        // Held until the daemon opens the service (or stops it first).
        let mut stop = shutdown.clone();
        tokio::select! {
            r = open.wait_for(|o| *o) => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut serving = Vec::new();
        for (sock, acceptor, proxy, name) in sockets {
            let listener = match tokio::net::TcpListener::from_std(sock) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("worker {id}: listener: {e}");
                    continue;
                }
            };
            let handler = Serving { proxy, name };
            serving.push(tokio::spawn(serve(
                listener,
                acceptor,
                limits.clone(),
                handler,
                shutdown.clone(),
            )));
        }
        for s in serving {
            let _ = s.await;
        }
        // Upgraded connections (WebSockets) run in tasks of this runtime
        // and die with it: give them the drain time to finish.
        let deadline = tokio::time::Instant::now() + limits_drain;
        while super::upgrade::open_tunnels() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Resolves and builds every upstream's pool of `plan`, reusing the node
/// state and connections of `previous` pools of the same id.
async fn build_pools(
    plan: &L7Plan,
    previous: &HashMap<String, Arc<Pool>>,
    events: &mpsc::UnboundedSender<HealthEvent>,
) -> anyhow::Result<(
    HashMap<String, Vec<(SocketAddr, u32)>>,
    HashMap<String, Arc<Pool>>,
)> {
    let mut resolved = HashMap::new();
    let mut pools = HashMap::new();
    for up in &plan.upstreams {
        let addrs = resolve::resolve(up).await?;
        let pool = build_pool(up, &addrs, previous.get(&up.id).map(|p| &**p), events)?;
        resolved.insert(up.id.clone(), addrs);
        pools.insert(up.id.clone(), Arc::new(pool));
    }
    Ok((resolved, pools))
}

/// The rules of `plan`, reusing `previous` ones whose config is unchanged.
fn build_rules(
    plan: &L7Plan,
    previous: &HashMap<String, (RuleConfig, Arc<Rule>)>,
) -> anyhow::Result<HashMap<String, (RuleConfig, Arc<Rule>)>> {
    let mut out = HashMap::new();
    for cfg in &plan.rate_rules {
        let rule = match previous.get(&cfg.name) {
            Some((old, rule)) if old == cfg => rule.clone(),
            _ => Arc::new(
                Rule::new(cfg.clone()).with_context(|| format!("rate limit {}", cfg.name))?,
            ),
        };
        out.insert(cfg.name.clone(), (cfg.clone(), rule));
    }
    Ok(out)
}

/// The response cache of `plan`: `previous` when its store was built
/// with the same settings (entries and counters survive the reload), else
/// a new one.
fn build_cache(plan: &L7Plan, previous: Option<&(CachePlan, Cache)>) -> Option<(CachePlan, Cache)> {
    let cp = plan.cache.as_ref()?;
    let cache = match previous {
        Some((old, cache)) if old.same_store(cp) => cache.clone(),
        _ => Cache::new(CacheConfig {
            max_bytes: cp.max_bytes,
            max_object_bytes: cp.max_object_bytes,
            targeted_field: cp.targeted_field.clone(),
            ..CacheConfig::default()
        }),
    };
    Some((cp.clone(), cache))
}

/// What every caching route of one generation holds: the store and the
/// purge list.
fn shared_cache(cache: &Option<(CachePlan, Cache)>) -> Option<SharedCache> {
    cache
        .as_ref()
        .map(|(cp, c)| SharedCache::new(c.clone(), cp.purge_from.clone()))
}

fn build_proxy(
    lp: &ListenerPlan,
    pools: &HashMap<String, Arc<Pool>>,
    rules: &HashMap<String, (RuleConfig, Arc<Rule>)>,
    sink: &EscalationSink,
    cache: Option<&SharedCache>,
    trusted: &[Prefix],
    consumers: &Arc<Consumers>,
) -> anyhow::Result<Proxy> {
    let routes = attach_route_options(lp.routes.clone(), rules, sink, cache, consumers, &|u| {
        pools.contains_key(u)
    })?;
    let table =
        RouteTable::build(routes).map_err(|e| anyhow::anyhow!("listener {}: {e}", lp.name))?;
    Ok(Proxy::new(Arc::new(table), pools.clone()).with_trusted_proxies(trusted.to_vec()))
}
