//! The daemon's resource side when a store holds them: open the store,
//! switch the proxy to per-host tables, load and follow the store, and
//! serve the admin API.
use std::{net::SocketAddr, sync::Arc};

use crate::{
    admin::{self, Admin, Token},
    config::{
        node::{RouteLoading, StoreKind},
        resource::Context,
        Config,
    },
    l7::{service::L7Service, Inherited},
    store::{
        apply::{Applied, Applier, VipSink},
        keys::Layout,
        lazy::{SharedSlots, StoreSlots},
        resources::Resources,
        verdicts::SharedVerdicts,
        Store,
    },
};

/// The handover kind of the admin API's socket.
pub(super) const ADMIN: &str = "admin";

/// The tasks that keep resources applied and the admin API served.
pub(super) struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) admin_addr: Option<std::net::SocketAddr>,
    /// Shared health verdicts (`health.shared_verdicts`), for the daemon
    /// to take.
    pub(super) verdicts: Option<SharedVerdicts>,
    /// With shared verdicts: the node's announcement task, its store and
    /// its lease, so that a stop or handover can leave the fleet at once
    /// ([`Running::leave_fleet`]).
    leaving: Option<(
        tokio::task::JoinHandle<()>,
        crate::store::etcd::EtcdStore,
        tokio::sync::watch::Receiver<i64>,
    )>,
    /// The admin API's socket (a second handle, for a handover):
    /// configured address, bound address, socket.
    admin_socket: Option<(SocketAddr, SocketAddr, std::net::TcpListener)>,
    /// Pauses the admin API (handover).
    admin_paused: tokio::sync::watch::Sender<bool>,
    /// Admin requests being answered.
    admin_inflight: Arc<std::sync::atomic::AtomicUsize>,
    /// The store (a handover releases an embedded one).
    store: Store,
}

impl Running {
    /// Takes this node out of the fleet now (stop or handover, with shared
    /// verdicts): ends the announcement and revokes its lease, which
    /// deletes the node key and every vote in one revision. Without this
    /// the votes of a node that stopped would count for the lease's TTL
    /// (10 s), and after a handover old and new process would both vote.
    /// The caller stops the vote publisher first.
    pub(super) async fn leave_fleet(&mut self) {
        let Some((announce, etcd, lease)) = self.leaving.take() else {
            return;
        };
        announce.abort();
        let id = *lease.borrow();
        if id == 0 {
            return;
        }
        match etcd.revoke(id).await {
            Ok(()) => log::info!("shared verdicts: left the fleet (node key and votes removed)"),
            Err(e) => log::warn!(
                "shared verdicts: could not leave the fleet ({e}); this node's votes expire with its lease"
            ),
        }
    }
}

impl Running {
    /// The admin API's socket for a successor: configured address, bound
    /// address, socket.
    pub(super) fn admin_socket(&self) -> Option<(SocketAddr, SocketAddr, &std::net::TcpListener)> {
        self.admin_socket.as_ref().map(|(c, l, s)| (*c, *l, s))
    }

    /// Stops (`true`) or resumes the admin API: paused, it accepts no
    /// connection, and requests on open ones get 503 + `Retry-After`.
    pub(super) fn pause_admin(&self, paused: bool) {
        self.admin_paused.send_replace(paused);
    }

    /// Before this process exits (handed over, or stopped): pauses the
    /// admin API and waits (bounded) until the requests it is answering
    /// have their answers, so that no request it took is dropped
    /// unanswered. A connection accepted just before the pause gets a
    /// moment to send its request (answered 503, `Retry-After`).
    pub(super) async fn drain_admin(&self) {
        use std::sync::atomic::Ordering;
        self.pause_admin(true);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let deadline =
            tokio::time::Instant::now() + admin::APPLY_WAIT + std::time::Duration::from_secs(1);
        while self.admin_inflight.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Handover with an embedded store: pauses the admin API, waits for
    /// the write in progress (if any) to commit, and closes the database
    /// file so that the successor can open it. Returns the revision at
    /// release; `None` for etcd (nothing to release: both processes may
    /// use it).
    pub(super) async fn release_store(&self) -> Option<anyhow::Result<i64>> {
        let Store::Embedded(s) = &self.store else {
            return None;
        };
        self.pause_admin(true);
        let s = s.clone();
        Some(
            tokio::task::spawn_blocking(move || s.release())
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r.map_err(anyhow::Error::from)),
        )
    }

    /// A failed handover after [`Running::release_store`]: opens the file
    /// again (waiting for the failed successor to let go of it) and
    /// resumes the admin API.
    pub(super) async fn reopen_store(&self, released_at: i64) {
        if let Store::Embedded(s) = &self.store {
            let s = s.clone();
            let wait = std::time::Duration::from_secs(30);
            match tokio::task::spawn_blocking(move || s.reopen(released_at, wait)).await {
                Ok(Ok(())) => log::info!("config store: reopened after the failed handover"),
                Ok(Err(e)) => log::error!(
                    "config store: cannot reopen after the failed handover ({e:#}); the admin API answers 503 until xlb restarts"
                ),
                Err(e) => log::error!("config store: reopening: {e}"),
            }
        }
        self.pause_admin(false);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((a, _, _)) = &self.leaving {
            a.abort();
        }
    }
}

/// How long a successor waits for the embedded store file when its
/// predecessor said it released it (normally it opens at once) ...
const STORE_RELEASED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// ... and when the predecessor did not say so (an older xlb, or none).
const STORE_UNRELEASED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the store `config` names (`None` for `config_store: file`). A
/// successor (`takeover`) waits a bounded time for its predecessor to
/// release an embedded store's file.
pub(super) async fn open(
    config: &Config,
    takeover: Option<&Inherited>,
) -> anyhow::Result<Option<Store>> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    if kind == StoreKind::File {
        return Ok(None);
    }
    let wait = match takeover {
        None => std::time::Duration::ZERO,
        Some(i) if i.store_released => STORE_RELEASED_WAIT,
        Some(_) => STORE_UNRELEASED_WAIT,
    };
    let opened =
        Store::open_waiting(&config.config_store, kind, config.instance.as_str(), wait).await;
    match (opened, takeover) {
        (Err(e), Some(i)) if kind == StoreKind::Embedded && !i.store_released => Err(e.context(
            "the running xlb did not release the embedded store (an xlb from before store handover?): stop it and start this one, or upgrade from a stop",
        )),
        (other, _) => other,
    }
}

/// Starts the store side of `config` over `store` (from [`open`]; nothing
/// without one). Returns once the store's content is applied, so that
/// "ready" means the routes in the store are served. With `vips`, stored
/// VIP changes go there (the daemon's XDP tables) and count as applied
/// once written.
pub(super) async fn start(
    config: &Config,
    l7: Option<&mut L7Service>,
    first_decision: Option<crate::health::fleet::Decision>,
    store: Option<Store>,
    vips: Option<VipSink>,
    inherited: &mut Inherited,
) -> anyhow::Result<Option<Running>> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    let Some(store) = store else {
        return Ok(None);
    };
    let layout = Layout::new(&config.config_store.prefix);
    let node = Context::of_node(config);
    let mut tasks = Vec::new();
    let vip_checks = vips.clone();
    // This node's id in the fleet: its key under `<prefix>/nodes/` and the
    // last segment of its health votes. Random per run: a restarted node
    // is a new voter, and its predecessor's votes expire with its lease.
    let node_id = format!(
        "{}-{:016x}",
        config.instance.as_str(),
        rand::random::<u64>()
    );
    let (lease_tx, lease_rx) = tokio::sync::watch::channel(0i64);
    let mut announce = None;
    let mut lazy_hosts = None;
    let applied = match l7 {
        Some(svc) => {
            let lazy = (config.config_store.routes == RouteLoading::Lazy)
                .then(|| config.config_store.lazy.settings());
            let dynamic = svc.dynamic_with(lazy);
            let (mut applier, rx) =
                Applier::new(store.clone(), layout.clone(), node.clone(), dynamic.clone());
            if let Some(sink) = vips {
                applier = applier.with_vips(sink);
            }
            if let Some(hosts) = dynamic.lazy() {
                let slots = StoreSlots::new(
                    store.clone(),
                    layout.clone(),
                    node.clone(),
                    applier.catalog(),
                    dynamic.clone(),
                );
                hosts.set_source(Arc::new(SharedSlots(Arc::new(slots))));
                lazy_hosts = Some(hosts.clone());
                applier = applier.with_lazy(hosts);
            }
            if kind == StoreKind::Etcd {
                let path = config.config_store.snapshot.clone().unwrap_or_else(|| {
                    format!(
                        "/var/lib/xlb/{}/etcd-snapshot.json",
                        config.instance.as_str()
                    )
                    .into()
                });
                applier = applier.with_snapshot(path);
            }
            if let Err(e) = applier.load().await {
                // A node restarted while etcd is down serves what it
                // applied last; the watch resumes from there.
                match applier.load_snapshot().await {
                    Ok(rev) => log::warn!(
                        "config store: first read failed ({e}); serving the local snapshot at revision {rev} until the store answers"
                    ),
                    Err(s) => {
                        anyhow::bail!("config store: first read: {e} (and no snapshot: {s:#})")
                    }
                }
            }
            tasks.push(tokio::spawn(applier.run_from_loaded()));
            // Live nodes announce their applied revision under leased
            // keys, for writes that wait for the whole fleet.
            announce = announce_task(&store, &layout, &node_id, &rx, lease_tx);
            rx
        }
        None if vips.is_some() => {
            // No proxy, but XDP: the store's VIPs are applied (routes and
            // upstreams are followed, not served).
            let sink = vips.expect("matched");
            let (mut applier, rx) =
                Applier::vips_only(store.clone(), layout.clone(), node.clone(), sink);
            if let Err(e) = applier.load().await {
                // The VIPs read before the first table write (if any)
                // keep serving; the watch catches up once the store answers.
                log::warn!(
                    "config store: first read failed ({e}); following the store once it answers"
                );
            }
            tasks.push(tokio::spawn(applier.run_from_loaded()));
            // It applies VIPs: fleet-wide writes wait for it.
            announce = announce_task(&store, &layout, &node_id, &rx, lease_tx);
            rx
        }
        None => {
            // No proxy on this node: nothing to apply; writes count as
            // applied once committed (and so its announcement, if any,
            // says it applied every revision: fleet writes never wait
            // for it).
            let (tx, rx) = tokio::sync::watch::channel(Applied {
                revision: i64::MAX,
                connected: true,
                resources: i64::MAX,
                vip_failed: None,
            });
            std::mem::forget(tx);
            if config.health.shared_verdicts {
                // A node without a proxy registers too when it votes: the
                // votes are bound to its node key's lease.
                announce = announce_task(&store, &layout, &node_id, &rx, lease_tx);
            }
            rx
        }
    };
    let mut leaving = None;
    let verdicts = match (&store, config.health.shared_verdicts) {
        (Store::Etcd(etcd), true) => {
            if let Some(a) = announce.take() {
                leaving = Some((a, etcd.as_ref().clone(), lease_rx.clone()));
            }
            Some(SharedVerdicts::start(
                etcd.as_ref().clone(),
                layout.clone(),
                node_id,
                lease_rx,
                first_decision.unwrap_or_default(),
            ))
        }
        _ => None,
    };
    // Without shared verdicts the announcement simply runs with the
    // other tasks (its key expires with its lease).
    tasks.extend(announce);
    let mut admin_addr = None;
    let mut admin_socket = None;
    let (admin_paused, paused) = tokio::sync::watch::channel(false);
    let admin_inflight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(a) = &config.admin {
        let token = a
            .token()
            .map_err(|e| anyhow::anyhow!("admin.token_file: {e}"))?
            .and_then(Token::new);
        let configured = admin::address(&a.address, token.as_ref())?;
        // A successor adopts its predecessor's socket for the same address.
        let adopted = inherited.take_single(ADMIN, configured);
        if adopted.is_some() {
            log::info!("admin API: the previous process's socket for {configured} adopted");
        }
        let listener = admin::bind_or_adopt(&a.address, token.as_ref(), adopted).await?;
        let local = listener.local_addr()?;
        admin_addr = Some(local);
        // A second handle for a successor (close-on-exec, like every socket
        // here: a successor gets it only over the handover socket).
        let handle = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        admin_socket = Some((configured, local, std::net::TcpListener::from(handle)));
        let admin = Arc::new(Admin {
            resources: Resources {
                store: store.clone(),
                layout,
                node,
            },
            applied,
            token,
            lazy: lazy_hosts,
            paused,
            inflight: admin_inflight.clone(),
            vips: vip_checks,
        });
        tasks.push(tokio::spawn(admin::serve(listener, admin)));
    }
    Ok(Some(Running {
        tasks,
        admin_addr,
        verdicts,
        leaving,
        admin_socket,
        admin_paused,
        admin_inflight,
        store,
    }))
}

/// With etcd, the task that announces this node's applied revision under
/// its leased node key (and hands out the lease for its votes).
fn announce_task(
    store: &Store,
    layout: &Layout,
    node_id: &str,
    applied: &tokio::sync::watch::Receiver<Applied>,
    lease: tokio::sync::watch::Sender<i64>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Store::Etcd(etcd) = store else {
        return None;
    };
    let key = format!("{}{node_id}", layout.nodes());
    Some(tokio::spawn(etcd.as_ref().clone().announce(
        key,
        applied.clone(),
        lease,
    )))
}
