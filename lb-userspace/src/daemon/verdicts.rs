//! Which L4 backends the daemon leaves out of its Maglev tables: its own
//! health verdicts, or — with `health.shared_verdicts` — the fleet's
//! (`health::fleet`), to which this node contributes its vote.
use std::{collections::BTreeSet, net::IpAddr};

use tokio::sync::watch;

use super::{l4_health_id, log_report, Daemon};
use crate::{
    config::{l4::L4Config, node::StoreKind, Config},
    datapath::state_file::{BackendVerdict, SharedVerdictsState},
    health::fleet::{BackendKey, Decision},
    store::{etcd::EtcdStore, keys::Layout, verdicts::LocalVerdicts},
};

/// With shared verdicts, the fleet's decision before the first table
/// write (see `store::verdicts::first_decision`); `None` without them.
/// A failed read starts from no decision (every backend in, as when etcd
/// is unreachable with nothing seen yet) and says so.
pub(super) async fn first_decision(config: &Config) -> anyhow::Result<Option<Decision>> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    if !config.health.shared_verdicts || kind != StoreKind::Etcd {
        return Ok(None);
    }
    let etcd = EtcdStore::connect(&config.config_store.endpoints).await?;
    let layout = Layout::new(&config.config_store.prefix);
    Ok(Some(
        match crate::store::verdicts::first_decision(&etcd, &layout).await {
            Ok(d) => {
                let out = d.tally.values().filter(|t| t.fleet_down()).count();
                log::info!(
                    "shared verdicts: {} live nodes, {out} backends fleet-down before the first table write",
                    d.live_nodes
                );
                d
            }
            Err(e) => {
                log::warn!("shared verdicts: no fleet decision before the first table write ({e}); starting with every backend in");
                Decision::default()
            }
        },
    ))
}

/// `l4` without the backends `decision` has fleet-down (at weight 0), and
/// those backends: a node's first tables, before any local verdict.
pub(super) fn without_fleet_down(
    l4: &L4Config,
    decision: &Decision,
) -> (L4Config, BTreeSet<BackendKey>) {
    let mut out = l4.clone();
    let mut excluded = BTreeSet::new();
    for vip in &mut out.vips {
        for b in &mut vip.backends {
            let key = (vip.name.clone(), b.address);
            if decision.excluded(&key, false) {
                b.weight = 0;
                excluded.insert(key);
            }
        }
    }
    (out, excluded)
}

impl Daemon {
    /// Whether this node's own check sees backend `addr` of `vip` down.
    fn locally_down(&self, vip: &str, addr: IpAddr) -> bool {
        !self.l4_health.is_eligible(&l4_health_id(vip, addr))
    }

    /// Whether backend `addr` of VIP `vip` is left out of its table.
    pub(super) fn backend_excluded(&self, vip: &str, addr: IpAddr) -> bool {
        let local_down = self.locally_down(vip, addr);
        match &self.verdicts {
            None => local_down,
            Some(v) => v
                .decisions
                .borrow()
                .excluded(&(vip.to_string(), addr), local_down),
        }
    }

    /// `l4` with every excluded backend at weight 0 (established flows
    /// stay through the connection table, as when draining).
    pub(super) fn effective_l4(&self, l4: &L4Config) -> L4Config {
        let mut out = l4.clone();
        for vip in &mut out.vips {
            for b in &mut vip.backends {
                if self.backend_excluded(&vip.name, b.address) {
                    b.weight = 0;
                }
            }
        }
        out
    }

    /// Every backend of the running config that is excluded now.
    pub(super) fn excluded_now(&self) -> BTreeSet<BackendKey> {
        let mut out = BTreeSet::new();
        for vip in &self.config.l4.vips {
            for b in &vip.backends {
                if self.backend_excluded(&vip.name, b.address) {
                    out.insert((vip.name.clone(), b.address));
                }
            }
        }
        out
    }

    /// Hands this node's verdict on every actively checked L4 backend to
    /// the vote publisher (which writes only what changed).
    pub(super) fn publish_local_verdicts(&self) {
        let Some(v) = &self.verdicts else { return };
        let mut out = LocalVerdicts::new();
        for vip in &self.config.l4.vips {
            if vip.health_check.is_none() {
                continue;
            }
            for b in &vip.backends {
                out.insert(
                    (vip.name.clone(), b.address),
                    self.locally_down(&vip.name, b.address),
                );
            }
        }
        v.set_local(out);
    }

    /// Re-applies the L4 tables when the set of excluded backends changed
    /// (a fleet decision, or a local verdict while etcd is unreachable);
    /// the state file is rewritten either way (it shows the verdicts).
    pub(super) fn sync_exclusions(&mut self) {
        let now = self.excluded_now();
        if now != self.excluded {
            for k in now.difference(&self.excluded) {
                log::info!("L4 backend {} of VIP {} out of its table", k.1, k.0);
            }
            for k in self.excluded.difference(&now) {
                log::info!("L4 backend {} of VIP {} back in its table", k.1, k.0);
            }
            let effective = self.effective_l4(&self.config.l4);
            if let Some(h) = &mut self.l4 {
                match h.tables.apply(h.dp.ebpf_mut(), &effective, &h.macs) {
                    Ok(r) => log_report(&r),
                    Err(e) => log::error!("re-applying the L4 tables after a verdict: {e:#}"),
                }
            }
            self.excluded = now;
        }
        self.write_state();
    }

    /// Leaves the fleet before a stop or handover: the vote publisher
    /// stops, then the node's lease is revoked (see
    /// `resources::Running::leave_fleet`). The tables stay as they are.
    pub(super) async fn leave_fleet(&mut self) {
        if self.verdicts.take().is_none() {
            return;
        }
        if let Some(r) = &mut self.resources {
            r.leave_fleet().await;
        }
    }

    /// The verdicts as `xlb stats` shows them (`None` without shared
    /// verdicts).
    pub(super) fn verdicts_state(&self) -> Option<SharedVerdictsState> {
        let v = self.verdicts.as_ref()?;
        let d = v.decisions.borrow();
        let mut out = SharedVerdictsState {
            node: v.node.clone(),
            connected: d.connected,
            live_nodes: d.live_nodes,
            backends: Default::default(),
        };
        let word = |down: bool| if down { "down" } else { "up" }.to_string();
        for vip in &self.config.l4.vips {
            if vip.health_check.is_none() {
                continue;
            }
            for b in &vip.backends {
                let key = (vip.name.clone(), b.address);
                let t = d.tally.get(&key).copied().unwrap_or_default();
                let local_down = self.locally_down(&vip.name, b.address);
                out.backends.entry(vip.name.clone()).or_default().insert(
                    b.address,
                    BackendVerdict {
                        local: word(local_down),
                        fleet: word(d.fleet_down(&key)),
                        down_votes: t.down,
                        voters: t.voters,
                        in_table: !d.excluded(&key, local_down),
                    },
                );
            }
        }
        Some(out)
    }
}

/// Resolves when the fleet's decision changes; never without shared
/// verdicts (or once their follower is gone).
pub(super) async fn decision_changed(rx: &mut Option<watch::Receiver<Decision>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
