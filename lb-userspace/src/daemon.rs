//! `xlb run`: load the datapath, write the L4 tables, attach, then serve
//! until SIGINT/SIGTERM (a stop: withdraw, drain, detach); SIGHUP reloads
//! the config file; SIGUSR2 starts a successor that takes over (restart,
//! upgrade), and a successor started with `--takeover` takes over. With a
//! config store, resources come from the store (see `resources`).

mod ops;
pub use ops::{anycast_status, drain_flag};
mod resources;
mod store_vips;
mod verdicts;
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use anyhow::Context as _;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    // lifecycle/anycast wiring (ops owner)
    anycast::bird::Announcer,
    config::{Config, XdpModeSetting},
    datapath::deny::{monotonic_now_ns, DenyList, Prefix},
    datapath::{
        flood_refill::FloodRefill,
        l4_tables::{ApplyReport, L4Tables},
        next_hops,
        state_file::InstanceState,
        Datapath,
    },
    health::{fleet::BackendKey, CheckerConfig, HealthChecker, HealthEvent, HealthView, Target},
    l7::{plan::L7Plan, ratelimit::Escalation, service::L7Service, Inherited},
    lifecycle::{handover::Takeover, notify, successor::Origin},
};

mod observe_wiring;

/// The XDP half: the datapath and the tables written into it.
struct L4Half {
    dp: Datapath,
    flood_rate: Arc<AtomicU32>,
    flood_task: tokio::task::JoinHandle<()>,
    tables: L4Tables,
    /// Next-hop MACs of the last apply, for health-driven re-applies.
    macs: HashMap<IpAddr, [u8; 6]>,
    /// Sources denied at the NIC (rate-limit escalations).
    deny: Option<DenyList>,
}

/// The running daemon: the XDP datapath, the L7 proxy, or both, and what
/// they were configured with.
pub struct Daemon {
    l4: Option<L4Half>,
    l7: Option<L7Service>,
    /// Active health checks of L4 backends and L7 nodes (`None` until a
    /// config asks for one).
    checker: Option<HealthChecker>,
    health_tx: mpsc::UnboundedSender<HealthEvent>,
    health_rx: Option<mpsc::UnboundedReceiver<HealthEvent>>,
    /// Verdicts about L4 backends (ids `l4/<vip>/<ip>`).
    l4_health: HealthView,
    config: Config,
    config_path: PathBuf,
    generation: u64,
    /// The store, its applier and the admin API (`config_store` other
    /// than `file`).
    resources: Option<resources::Running>,
    /// Shared health verdicts (`health.shared_verdicts`): this node's
    /// votes out, the fleet's decision in.
    verdicts: Option<crate::store::verdicts::SharedVerdicts>,
    /// With shared verdicts, the backends left out of the tables at the
    /// last apply (so that a fleet decision that changes nothing for this
    /// node's tables writes nothing).
    excluded: BTreeSet<BackendKey>,
    /// Whether VIPs come from the store too (with a store and an XDP
    /// datapath): `config.l4.vips` is then `file_vips` and `store_vips`
    /// merged (`store_vips::merged`).
    stored_vips: bool,
    /// The file's VIPs.
    file_vips: Vec<crate::config::l4::VipConfig>,
    /// The store's VIPs, by name, as applied.
    store_vips: std::collections::BTreeMap<String, crate::config::l4::VipConfig>,
    /// Stored VIP changes for the XDP tables (with a store and an XDP
    /// datapath; the run loop takes it).
    vip_rx: Option<mpsc::UnboundedReceiver<crate::store::apply::VipRequest>>,
}

/// What a started daemon serves, for the ready line.
#[derive(Debug, Clone, Default)]
pub struct ReadyInfo {
    /// Where the L4 maps are pinned (no L4 half: `None`).
    pub pins: Option<PathBuf>,
    /// `iface:mode` of every XDP attachment.
    pub xdp: Vec<String>,
    /// `(name, address)` of every L7 listener.
    pub l7: Vec<(String, SocketAddr)>,
    /// The admin API's address, when it is on.
    pub admin: Option<SocketAddr>,
    /// Where `/metrics` and `/status` are served (`observe.listen`).
    pub observe: Option<SocketAddr>,
}

/// Whether `config` needs the XDP datapath: it has interfaces or VIPs, or
/// it has no proxy either (an empty config still pins the maps, which
/// `xlb stats` reads).
fn wants_l4(config: &Config) -> bool {
    !config.interfaces.is_empty() || !config.l4.vips.is_empty() || config.l7.listeners.is_empty()
}

/// The L7 plan of a checked config (made once, by `Config::check`); `None`
/// when there are no listeners. A config that was never checked is a bug,
/// reported rather than unwrapped.
fn plan_l7(config: &Config) -> anyhow::Result<Option<L7Plan>> {
    if config.l7.listeners.is_empty() {
        return Ok(None);
    }
    match config.l7_plan() {
        Some(plan) => Ok(Some(L7Plan::clone(plan))),
        None => anyhow::bail!("l7: the config was not checked (Config::check) before use"),
    }
}

impl Daemon {
    /// Starts the halves `config` asks for: loads the datapath, fills the
    /// L4 tables and attaches; binds the proxy's listeners and starts its
    /// workers.
    pub async fn start(
        mut config: Config,
        config_path: &Path,
        mode_override: Option<XdpModeSetting>,
        inherited: &mut Inherited,
    ) -> anyhow::Result<Daemon> {
        let l7_plan = plan_l7(&config)?;
        let l4_on = wants_l4(&config);
        // With a store, its VIPs join the file's (which has none) before
        // the first table write: a restarted daemon adopts their pinned
        // rows, and shared verdicts shape their first tables too.
        let store = resources::open(&config, inherited.takeover.then_some(&*inherited)).await?;
        let stored_vips = l4_on && store.is_some();
        let file_vips = config.l4.vips.clone();
        let mut store_vips = Default::default();
        if let (true, Some(store)) = (stored_vips, &store) {
            match store_vips::stored_vips(store, &config).await {
                Ok(vips) => {
                    log::info!("config store: {} L4 VIPs", vips.len());
                    config.l4.vips = store_vips::merged(&file_vips, &vips);
                    store_vips = vips;
                }
                Err(e) => log::warn!(
                    "config store: VIPs not read before the first table write ({e:#}); they follow with the store's first read"
                ),
            }
        }
        // Shared verdicts: the fleet's decision shapes the first tables.
        let first_decision = verdicts::first_decision(&config).await?;
        let (first_l4, excluded) = match &first_decision {
            Some(d) => verdicts::without_fleet_down(&config.l4, d),
            None => (config.l4.clone(), BTreeSet::new()),
        };
        let l4 = if l4_on {
            let mut dp = Datapath::load(&config)?;
            let refill = FloodRefill::new(dp.ebpf_mut(), config.l4.new_flows_per_cpu_sec)?;
            let flood_rate = refill.rate();
            let flood_task = tokio::spawn(refill.run());
            let macs = next_hops::resolve_all(&config.l4).await?;
            // lifecycle: a restarted or upgraded daemon adopts the tables
            // the last run left (same backend slots, same VIP rows).
            let mut tables = if dp.adopted() {
                L4Tables::adopt(dp.ebpf_mut(), &config.l4)?
            } else {
                L4Tables::new(&config.l4)
            };
            let report = tables.apply(dp.ebpf_mut(), &first_l4, &macs)?;
            log_report(&report);
            dp.attach(&config, mode_override)?;
            let deny = match DenyList::open(dp.pin_dir()) {
                Ok(d) => Some(d),
                Err(e) => {
                    log::warn!("deny list unavailable (rate-limit escalations only logged): {e:#}");
                    None
                }
            };
            Some(L4Half {
                dp,
                flood_rate,
                flood_task,
                tables,
                macs,
                deny,
            })
        } else {
            None
        };
        let (health_tx, health_rx) = mpsc::unbounded_channel();
        let mut l7 = match l7_plan {
            Some(plan) => {
                // Held until the store's resources are applied (below).
                Some(L7Service::start_held(plan, health_tx.clone(), inherited).await?)
            }
            None => None,
        };
        let (vip_tx, vip_rx) = match (&l4, stored_vips) {
            (Some(_), true) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let mut resources = resources::start(
            &config,
            l7.as_mut(),
            first_decision,
            store,
            vip_tx,
            inherited,
        )
        .await?;
        let verdicts = resources.as_mut().and_then(|r| r.verdicts.take());
        if let Some(svc) = &l7 {
            svc.open();
        }
        let mut d = Daemon {
            l4,
            l7,
            checker: None,
            health_tx,
            health_rx: Some(health_rx),
            l4_health: HealthView::default(),
            config,
            config_path: config_path.to_path_buf(),
            generation: 1,
            resources,
            verdicts,
            excluded,
            stored_vips,
            file_vips,
            store_vips,
            vip_rx: None,
        };
        // The store's first read, before ready (its VIPs were read above
        // already: normally this writes nothing).
        if let Some(mut rx) = vip_rx {
            while let Ok(request) = rx.try_recv() {
                d.vip_request(request).await;
            }
            d.vip_rx = Some(rx);
        }
        d.update_health_targets()?;
        // Votes go out at start (every checked backend, as seen so far).
        d.publish_local_verdicts();
        d.write_state();
        Ok(d)
    }

    /// The XDP datapath, when this daemon runs one.
    pub fn datapath(&self) -> Option<&Datapath> {
        self.l4.as_ref().map(|h| &h.dp)
    }

    /// The proxy, when this daemon runs one.
    pub fn l7(&self) -> Option<&L7Service> {
        self.l7.as_ref()
    }

    /// What is being served.
    pub fn ready_info(&self) -> ReadyInfo {
        ReadyInfo {
            pins: self.l4.as_ref().map(|h| h.dp.pin_dir().to_path_buf()),
            xdp: self
                .l4
                .as_ref()
                .map(|h| {
                    h.dp.attached()
                        .iter()
                        .map(|(i, m)| format!("{i}:{m}"))
                        .collect()
                })
                .unwrap_or_default(),
            l7: self.l7.as_ref().map(|s| s.addresses()).unwrap_or_default(),
            admin: self.resources.as_ref().and_then(|r| r.admin_addr),
            observe: None,
        }
    }

    /// Re-reads the config file and applies what changed. On any error the
    /// running configuration stays as it was: everything that can fail
    /// (parsing, validation, next-hop and DNS lookups, certificate files,
    /// balancer construction) happens before the first swap; the proxy is
    /// swapped before the L4 tables, whose writes do not fail short of a
    /// kernel error.
    pub async fn reload(&mut self) -> anyhow::Result<ApplyReport> {
        let mut new = Config::load(&self.config_path)?;
        let restart_only = [
            ("instance", new.instance != self.config.instance),
            ("bpffs", new.bpffs != self.config.bpffs),
            ("interfaces", new.interfaces != self.config.interfaces),
            (
                "l4.maglev_table_size",
                new.l4.maglev_table_size != self.config.l4.maglev_table_size,
            ),
            (
                "l4.conntrack_size",
                new.l4.conntrack_size != self.config.l4.conntrack_size,
            ),
            ("l4.max_vips", new.l4.max_vips != self.config.l4.max_vips),
            ("observe", new.observe != self.config.observe),
            (
                "l4.max_backends",
                new.l4.max_backends != self.config.l4.max_backends,
            ),
            ("the L4 half (on/off)", wants_l4(&new) != self.l4.is_some()),
            ("anycast", new.anycast != self.config.anycast),
            ("health", new.health != self.config.health),
            (
                "the L7 half (on/off)",
                new.l7.listeners.is_empty() != self.l7.is_none(),
            ),
        ];
        let changed: Vec<&str> = restart_only
            .iter()
            .filter(|(_, c)| *c)
            .map(|(f, _)| *f)
            .collect();
        if !changed.is_empty() {
            anyhow::bail!(
                "{}: {} cannot change while running (restart xlb); nothing was changed",
                self.config_path.display(),
                changed.join(", ")
            );
        }
        let file_vips = new.l4.vips.clone();
        if self.stored_vips {
            // The file's VIPs and the store's.
            new.l4.vips = store_vips::merged(&file_vips, &self.store_vips);
        }
        let macs = match &self.l4 {
            Some(_) => Some(next_hops::resolve_all(&new.l4).await?),
            None => None,
        };
        if let (Some(svc), Some(plan)) = (&mut self.l7, plan_l7(&new)?) {
            svc.reload(plan)
                .await
                .with_context(|| format!("{}: l7", self.config_path.display()))?;
        }
        let effective = self.effective_l4(&new.l4);
        let report = match (&mut self.l4, macs) {
            (Some(h), Some(macs)) => {
                let report = h.tables.apply(h.dp.ebpf_mut(), &effective, &macs)?;
                h.flood_rate
                    .store(new.l4.new_flows_per_cpu_sec, Ordering::Relaxed);
                h.macs = macs;
                report
            }
            _ => ApplyReport::default(),
        };
        self.config = new;
        self.file_vips = file_vips;
        self.generation += 1;
        if let Err(e) = self.update_health_targets() {
            log::error!("health checks not updated: {e:#}");
        }
        self.excluded = self.excluded_now();
        self.publish_local_verdicts();
        self.write_state();
        Ok(report)
    }

    /// Every active health check the running config asks for.
    fn health_targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if self.l4.is_some() {
            for vip in &self.config.l4.vips {
                let Some(hc) = &vip.health_check else {
                    continue;
                };
                let Ok(spec) = hc.to_spec() else { continue };
                let port = hc.port.unwrap_or(vip.port);
                for b in &vip.backends {
                    out.push(Target::new(
                        l4_health_id(&vip.name, b.address),
                        SocketAddr::new(b.address, port),
                        spec.clone(),
                    ));
                }
            }
        }
        if let Some(svc) = &self.l7 {
            out.extend(svc.health_targets());
        }
        out
    }

    fn update_health_targets(&mut self) -> anyhow::Result<()> {
        let targets = self.health_targets();
        if targets.is_empty() && self.checker.is_none() {
            return Ok(());
        }
        let checker = self.checker.get_or_insert_with(|| {
            HealthChecker::new(CheckerConfig::default(), self.health_tx.clone())
        });
        checker
            .set_targets(targets)
            .map_err(|e| anyhow::anyhow!("health checks: {e}"))
    }

    /// A health verdict: an L7 node leaves or rejoins its pool; an L4
    /// backend leaves or rejoins its VIP's Maglev table (re-applied with
    /// the backend at weight 0: established flows stay through the
    /// connection table, as when draining).
    async fn apply_health(&mut self, ev: HealthEvent) {
        if ev.target.starts_with("l7/") {
            if let Some(svc) = &mut self.l7 {
                svc.apply_health(&ev);
            }
            return;
        }
        let Some(eligible) = self.l4_health.apply(&ev) else {
            return;
        };
        if self.verdicts.is_some() {
            // This node's verdict is one vote; the table follows the
            // fleet's decision (or, while etcd is unreachable, the rule
            // of `Decision::excluded`).
            log::info!(
                "L4 backend {} {} as seen from this node ({}); voting",
                ev.target,
                if eligible { "up" } else { "down" },
                ev.reason
            );
            self.publish_local_verdicts();
            self.sync_exclusions();
            return;
        }
        log::info!(
            "L4 backend {} {} ({})",
            ev.target,
            if eligible {
                "back in its VIP's table"
            } else {
                "out of its VIP's table"
            },
            ev.reason
        );
        let effective = self.effective_l4(&self.config.l4);
        if let Some(h) = &mut self.l4 {
            match h.tables.apply(h.dp.ebpf_mut(), &effective, &h.macs) {
                Ok(r) => log_report(&r),
                Err(e) => log::error!("re-applying the L4 tables after a health change: {e:#}"),
            }
        }
        // The table digests changed with the table.
        self.write_state();
    }

    /// A source over a rate limit's hard limit: denied at the NIC.
    fn escalate(&mut self, esc: Escalation) {
        let ttl = esc
            .until
            .saturating_duration_since(std::time::Instant::now());
        match self.l4.as_mut().and_then(|h| h.deny.as_mut()) {
            Some(deny) => match deny.deny(Prefix::host(esc.source), ttl, ESCALATION_REASON) {
                Ok(outcome) => log::warn!(
                    "rate limit {}: {} over the hard limit, dropped at the NIC for {ttl:?} ({outcome:?})",
                    esc.rule,
                    esc.source
                ),
                Err(e) => log::error!("denying {}: {e:#}", esc.source),
            },
            None => log::warn!(
                "rate limit {}: {} over the hard limit; no XDP datapath, rejected by the proxy only",
                esc.rule,
                esc.source
            ),
        }
    }

    /// Releases deny-list entries whose time passed.
    fn expire_denials(&mut self) {
        if let Some(deny) = self.l4.as_mut().and_then(|h| h.deny.as_mut()) {
            match deny.expire(monotonic_now_ns()) {
                Ok(released) => {
                    for e in released {
                        log::info!("deny of {} expired: let back in", e.prefix);
                    }
                }
                Err(e) => log::warn!("expiring the deny list: {e:#}"),
            }
        }
    }

    fn write_state(&self) {
        let Some(h) = &self.l4 else {
            return;
        };
        let state = InstanceState {
            vips: h.tables.vip_names(),
            backends: h.tables.backend_names(),
            config: self.config_path.clone(),
            digests: h.tables.digests(),
            shared_verdicts: self.verdicts_state(),
        };
        if let Err(e) = state.write(self.config.instance.as_str()) {
            log::warn!("writing the instance state file: {e}");
        }
    }
}

/// The handover kind of the observe listener's socket.
const OBSERVE: &str = "observe";

/// The `deny` reason recorded for rate-limit escalations.
const ESCALATION_REASON: u32 = 1;

/// The health-check id of backend `addr` of VIP `vip`.
fn l4_health_id(vip: &str, addr: IpAddr) -> String {
    format!("l4/{vip}/{addr}")
}

fn log_report(r: &ApplyReport) {
    log::info!(
        "L4 tables: +vips {:?} ~vips {:?} -vips {:?} +backends {:?} -backends {:?}, {} slots written",
        r.vips_added,
        r.vips_changed,
        r.vips_removed,
        r.backends_added,
        r.backends_removed,
        r.slots_written
    );
}

/// Runs the daemon until a termination signal arrives.
///
/// `ready` is called once the datapath is attached, so callers (and tests)
/// know when traffic is being handled; `reloaded` after each SIGHUP.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: Config,
    config_path: &Path,
    mode_override: Option<XdpModeSetting>,
    takeover: bool,
    ready: impl FnOnce(&ReadyInfo),
    mut reloaded: impl FnMut(u64, &anyhow::Result<ApplyReport>),
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).context("installing SIGUSR2 handler")?;

    let instance = config.instance.as_str().to_string();
    // Metrics and access log first, so that the first request is recorded.
    let observe = observe_wiring::install(&config)?;
    // --- lifecycle: take over from a running process (ops) ---
    let origin = Origin::current().ok();
    let mut inherited = Inherited::default();
    let predecessor = if takeover {
        let timeout = config.lifecycle.takeover_timeout.0;
        match Takeover::begin(&instance, timeout) {
            Ok((t, got)) => {
                log::info!("taking over instance {instance} from the running process");
                inherited = got;
                Some(t)
            }
            Err(crate::lifecycle::handover::HandoverError::NoPredecessor { path }) => {
                log::warn!(
                    "--takeover: nothing listens on {}; starting fresh",
                    path.display()
                );
                None
            }
            Err(e) => return Err(e).context("taking over the running instance"),
        }
    } else {
        None
    };
    // The observe socket of the same address is adopted by its bind.
    if let Some(listen) = config.observe.as_ref().map(|o| o.listen) {
        if let Some(socket) = inherited.take_single(OBSERVE, listen) {
            let local = socket.local_addr().unwrap_or(listen);
            crate::observe::server::inherit(listen, local, socket);
        }
    }
    let mut daemon = Daemon::start(config, config_path, mode_override, &mut inherited).await?;
    if !inherited.is_empty() {
        log::info!(
            "{} listener groups of the previous process are not in this config: closed",
            inherited.len()
        );
    }
    drop(inherited);
    let (handover_listener, mut successors) = ops::listen_for_successors(&instance)?;
    let mut announcer = daemon.config.anycast.clone().map(Announcer::new);
    daemon.sync_announcements(&mut announcer);
    // --- end lifecycle ---
    let observe_tasks = match &observe {
        Some(obs) => Some(observe_wiring::start(obs, &daemon).await?),
        None => None,
    };
    let log_task = daemon
        .l4
        .as_mut()
        .and_then(|h| h.dp.take_logger())
        .map(|logger| {
            tokio::spawn(async move {
                // SAFETY: the logger owns its ring-buffer fd and never closes or
                // replaces it while the AsyncFd holds it.
                let registered =
                    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
                let Ok(mut fd) = registered else {
                    log::warn!("cannot poll the eBPF log ring; eBPF logs are off");
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else {
                        return;
                    };
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            })
        });
    let mut info = daemon.ready_info();
    info.observe = observe_tasks.as_ref().map(|t| t.addr);
    log::info!(
        "instance {instance} running; L4 maps: {}; L7 listeners: {:?}",
        info.pins
            .as_ref()
            .map_or("none".to_string(), |p| format!("pinned in {}", p.display())),
        info.l7
    );
    ready(&info);
    // lifecycle: the predecessor may stop accepting now; systemd learns
    // the new main PID.
    if let Some(p) = predecessor {
        if let Err(e) = p.finish() {
            log::warn!("telling the previous process that this one is ready: {e}");
        }
    }
    notify::ready();
    let mut handed_over = false;

    let mut watch = ConfigWatch::new(&daemon.config_path, daemon.config.watch);
    let mut health_rx = daemon.health_rx.take();
    let mut vip_rx = daemon.vip_rx.take();
    let mut escalations = daemon.l7.as_mut().and_then(|s| s.take_escalations());
    let mut decisions = daemon.verdicts.as_ref().map(|v| v.decisions.clone());
    let mut expire_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut dns_tick = daemon
        .l7
        .as_ref()
        .and_then(|s| s.dns_refresh_every())
        .map(tokio::time::interval);
    loop {
        let reason = tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => "SIGHUP",
            // lifecycle: restart/upgrade and the successor's arrival (ops)
            _ = sigusr2.recv() => {
                match origin.as_ref().map(|o| o.spawn_successor()) {
                    Some(Ok(pid)) => log::info!("SIGUSR2: started successor {pid}"),
                    Some(Err(e)) => log::error!("SIGUSR2: starting a successor: {e}"),
                    None => log::error!("SIGUSR2: this process does not know its executable"),
                }
                continue;
            }
            Some(conn) = successors.recv() => {
                if daemon.hand_over(conn).await {
                    handed_over = true;
                    break;
                }
                continue;
            }
            true = watch.changed() => "config file changed",
            Some(request) = recv_opt(&mut vip_rx) => {
                daemon.vip_request(request).await;
                daemon.sync_announcements(&mut announcer);
                observe_wiring::publish(&observe, &daemon);
                continue;
            }
            Some(ev) = recv_opt(&mut health_rx) => {
                daemon.apply_health(ev).await;
                daemon.sync_announcements(&mut announcer);
                observe_wiring::publish(&observe, &daemon);
                continue;
            }
            _ = verdicts::decision_changed(&mut decisions) => {
                daemon.sync_exclusions();
                daemon.sync_announcements(&mut announcer);
                observe_wiring::publish(&observe, &daemon);
                continue;
            }
            Some(esc) = recv_opt(&mut escalations) => {
                daemon.escalate(esc);
                observe_wiring::publish(&observe, &daemon);
                continue;
            }
            _ = expire_tick.tick() => {
                daemon.expire_denials();
                daemon.sync_announcements(&mut announcer);
                observe_wiring::publish(&observe, &daemon);
                continue;
            }
            _ = async { match &mut dns_tick { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                if let Some(svc) = &mut daemon.l7 {
                    svc.refresh_dns().await;
                }
                continue;
            }
        };
        {
            let result = daemon.reload().await;
            match &result {
                Ok(r) => {
                    log::info!(
                        "{reason}: config reloaded (generation {})",
                        daemon.generation
                    );
                    if daemon.l4.is_some() {
                        log_report(r);
                    }
                }
                Err(e) => log::error!("{reason}: reload failed, running config unchanged: {e:#}"),
            }
            if let Some(obs) = &observe {
                obs.reloaded(result.is_ok());
            }
            observe_wiring::publish(&observe, &daemon);
            reloaded(daemon.generation, &result);
            watch.seen();
            dns_tick = daemon
                .l7
                .as_ref()
                .and_then(|s| s.dns_refresh_every())
                .map(tokio::time::interval);
        }
    }
    // lifecycle: a stop withdraws the routes and waits before it drains
    // and detaches; after a handover the successor owns the routes, the
    // pins and the files, and only the draining is left.
    // Shared verdicts: this node's votes go now, not after its lease's TTL.
    daemon.leave_fleet().await;
    if !handed_over {
        daemon.withdraw_before_stop(&mut announcer).await;
        notify::stopping("draining");
    }
    if let Some(t) = log_task {
        t.abort();
        let _ = t.await;
    }
    let mut observe_tasks = observe_tasks;
    if handed_over {
        // The successor serves /metrics and the admin API on the same
        // sockets: this process stops accepting there now, not after the
        // drain.
        if let Some(t) = observe_tasks.take() {
            t.stop().await;
        }
        if let Some(r) = &daemon.resources {
            r.pause_admin(true);
        }
    }
    if let Some(svc) = daemon.l7.take() {
        svc.shutdown().await;
    }
    // Admin requests this process took get their answers before it exits.
    if let Some(r) = &daemon.resources {
        r.drain_admin().await;
    }
    if let Some(t) = observe_tasks {
        t.stop().await;
    }
    if let Some(h) = &daemon.l4 {
        h.flood_task.abort();
    }
    if handed_over {
        drop(daemon);
        log::info!("handed over and drained; bye");
        return Ok(());
    }
    if let Some(h) = daemon.l4.take() {
        h.dp.detach();
    }
    drop(daemon);
    handover_listener.remove();
    ops::remove_status(&instance);
    InstanceState::remove(&instance);
    log::info!("detached; bye");
    Ok(())
}

/// Receives from `rx`, or waits forever when there is none.
async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Notices changes of the config file by content (every second), for
/// `watch: true`. Comparing bytes, not mtimes, catches editors that write
/// a new file and rename it over the old one within the same second.
struct ConfigWatch {
    path: PathBuf,
    enabled: bool,
    last: Option<Vec<u8>>,
    tick: tokio::time::Interval,
}

impl ConfigWatch {
    fn new(path: &Path, enabled: bool) -> ConfigWatch {
        ConfigWatch {
            path: path.to_path_buf(),
            enabled,
            last: std::fs::read(path).ok(),
            tick: tokio::time::interval(std::time::Duration::from_secs(1)),
        }
    }

    /// Takes the file as it is now as seen (after a reload by signal).
    fn seen(&mut self) {
        self.last = std::fs::read(&self.path).ok();
    }

    /// Resolves to `true` once the file differs from what was last seen.
    async fn changed(&mut self) -> bool {
        if !self.enabled {
            return std::future::pending().await;
        }
        loop {
            self.tick.tick().await;
            let now = std::fs::read(&self.path).ok();
            if now.is_some() && now != self.last {
                self.last = now;
                return true;
            }
        }
    }
}
