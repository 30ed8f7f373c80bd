//! The daemon's resource side when a store holds them: open the store,
//! switch the proxy to per-host tables, load and follow the store, and
//! serve the admin API.
use std::sync::Arc;

use crate::{
    admin::{self, Admin, Token},
    config::{
        node::{RouteLoading, StoreKind},
        resource::Context,
        Config,
    },
    l7::service::L7Service,
    store::{
        apply::{Applied, Applier, VipSink},
        keys::Layout,
        lazy::{SharedSlots, StoreSlots},
        resources::Resources,
        verdicts::SharedVerdicts,
        Store,
    },
};

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

/// Opens the store `config` names (`None` for `config_store: file`).
pub(super) async fn open(config: &Config) -> anyhow::Result<Option<Store>> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    if kind == StoreKind::File {
        return Ok(None);
    }
    Store::open(&config.config_store, kind, config.instance.as_str()).await
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
) -> anyhow::Result<Option<Running>> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    let Some(store) = store else {
        return Ok(None);
    };
    let layout = Layout::new(&config.config_store.prefix);
    let node = Context::of_node(config);
    let mut tasks = Vec::new();
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
    if let Some(a) = &config.admin {
        let token = a
            .token()
            .map_err(|e| anyhow::anyhow!("admin.token_file: {e}"))?
            .and_then(Token::new);
        let listener = admin::bind(&a.address, token.as_ref()).await?;
        admin_addr = listener.local_addr().ok();
        let admin = Arc::new(Admin {
            resources: Resources {
                store,
                layout,
                node,
            },
            applied,
            token,
            lazy: lazy_hosts,
        });
        tasks.push(tokio::spawn(admin::serve(listener, admin)));
    }
    Ok(Some(Running {
        tasks,
        admin_addr,
        verdicts,
        leaving,
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
