//! L4 VIPs kept in a config store (`config_store: embedded | etcd`): read
//! before the first table write, so that a restarted daemon adopts their
//! pinned rows like the file's; then each stored change — a PUT or DELETE
//! through the admin API, or a watch event from another node — rewrites
//! the tables of the VIPs it names, and the applier's revision advances
//! only once they are written (read-your-writes).
use std::collections::BTreeMap;

use super::{log_report, Daemon};
use crate::{
    config::{l4::VipConfig, resource, Config},
    datapath::next_hops,
    store::{
        apply::{VipChange, VipCheck, VipRequest},
        keys::Layout,
        Store,
    },
};

/// The VIPs the tables serve: the file's, then the stored ones that do
/// not clash with one of the file's (same name, or same address, port and
/// protocol: the file's wins, the stored one is logged and left out).
pub(super) fn merged(file: &[VipConfig], stored: &BTreeMap<String, VipConfig>) -> Vec<VipConfig> {
    let mut out = file.to_vec();
    for v in stored.values() {
        match file_clash(file, v) {
            Some(f) => log::error!(
                "config store: VIP {} not applied: it clashes with l4.vips `{}` of the file",
                v.name,
                f.name
            ),
            None => out.push(v.clone()),
        }
    }
    out
}

/// The file's VIP that stored VIP `v` clashes with: the same name, or the
/// same address, port and protocol.
fn file_clash<'f>(file: &'f [VipConfig], v: &VipConfig) -> Option<&'f VipConfig> {
    file.iter().find(|f| {
        f.name == v.name || (f.address == v.address && f.port == v.port && f.protocol == v.protocol)
    })
}

/// The VIPs stored under `config`'s prefix, checked as `xlb check` checks
/// them; an invalid one (written through another path) is left out and
/// logged.
pub(super) async fn stored_vips(
    store: &Store,
    config: &Config,
) -> anyhow::Result<BTreeMap<String, VipConfig>> {
    let layout = Layout::new(&config.config_store.prefix);
    let (kvs, _) = store
        .range(&layout.kind(resource::Kind::Vips), None, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = BTreeMap::new();
    for kv in kvs {
        let name = Layout::last_segment(&kv.key).to_string();
        let parsed = serde_json::from_slice::<serde_json::Value>(&kv.value)
            .ok()
            .and_then(|v| resource::parse::<VipConfig>(&v).ok());
        let Some(mut vip) = parsed else {
            log::error!("config store: VIP {name} does not parse, not applied");
            continue;
        };
        vip.name = name;
        match resource::check_vip(&vip) {
            Ok(()) => {
                out.insert(vip.name.clone(), vip);
            }
            Err(issues) => {
                log::error!(
                    "config store: VIP {} is invalid, not applied: {issues:?}",
                    vip.name
                )
            }
        }
    }
    Ok(out)
}

impl Daemon {
    /// Answers what the applier or the admin API asks of the L4 half.
    pub(super) async fn vip_request(&mut self, request: VipRequest) {
        match request {
            VipRequest::Change(change) => self.apply_vip_change(change).await,
            VipRequest::Check(check) => {
                let VipCheck { vip, answer } = *check;
                let verdict = self.check_stored_vip(&vip).await;
                if let Err(e) = &verdict {
                    log::info!("admin API: VIP {} refused: {e}", vip.name);
                }
                let _ = answer.send(verdict);
            }
        }
    }

    /// Whether the tables could take `vip` as a stored VIP (created or
    /// replaced), without writing anything: the same merge, next-hop
    /// resolution and table plan as [`Daemon::write_stored_vips`].
    async fn check_stored_vip(&self, vip: &VipConfig) -> Result<(), String> {
        let Some(h) = &self.l4 else {
            return Ok(());
        };
        if let Some(f) = file_clash(&self.file_vips, vip) {
            return Err(format!(
                "this node's file already has VIP `{}` at that name or address, port and protocol",
                f.name
            ));
        }
        let mut stored = self.store_vips.clone();
        stored.insert(vip.name.clone(), vip.clone());
        let mut new_l4 = self.config.l4.clone();
        new_l4.vips = merged(&self.file_vips, &stored);
        let mut macs = h.macs.clone();
        let mut ask = self.config.l4.clone();
        ask.vips = vec![vip.clone()];
        let resolved = next_hops::resolve_all(&ask)
            .await
            .map_err(|e| format!("{e:#}"))?;
        macs.extend(resolved);
        h.tables
            .check(&self.effective_l4(&new_l4), &macs)
            .map_err(|e| format!("{e:#}"))
    }

    /// Writes a stored VIP change into the XDP tables, then answers it.
    async fn apply_vip_change(&mut self, change: VipChange) {
        let VipChange {
            revision,
            full,
            vips,
            done,
        } = change;
        let written = self.write_stored_vips(revision, full, vips).await;
        let _ = done.send(written);
    }

    /// Makes the running VIP set say what `changes` says (all of it when
    /// `full`). Only the tables of the VIPs that differ are rebuilt and
    /// written (see `L4Tables::apply`); a change that cannot be applied
    /// (a backend without a next hop, the maps full) is logged, leaves
    /// the tables as they were and is returned.
    async fn write_stored_vips(
        &mut self,
        revision: i64,
        full: bool,
        changes: BTreeMap<String, Option<VipConfig>>,
    ) -> Result<(), String> {
        let Some(h) = &self.l4 else {
            log::warn!("config store: VIPs at revision {revision} not applied: this node runs no XDP datapath");
            return Ok(());
        };
        let mut stored = if full {
            BTreeMap::new()
        } else {
            self.store_vips.clone()
        };
        for (name, v) in &changes {
            match v {
                Some(v) => stored.insert(name.clone(), v.clone()),
                None => stored.remove(name),
            };
        }
        let mut new_l4 = self.config.l4.clone();
        new_l4.vips = merged(&self.file_vips, &stored);
        // Next hops: of the VIPs this change names (a `mac:` may have
        // changed), and of any backend not resolved yet.
        let mut macs = h.macs.clone();
        let mut ask = self.config.l4.clone();
        ask.vips = new_l4
            .vips
            .iter()
            .filter(|v| {
                (!full && changes.contains_key(&v.name))
                    || v.backends.iter().any(|b| !macs.contains_key(&b.address))
            })
            .cloned()
            .collect();
        if !ask.vips.is_empty() {
            match next_hops::resolve_all(&ask).await {
                Ok(m) => macs.extend(m),
                Err(e) => {
                    log::error!("config store: VIPs at revision {revision} not applied: {e:#}");
                    return Err(format!("{e:#}"));
                }
            }
        }
        let effective = self.effective_l4(&new_l4);
        let Some(h) = &mut self.l4 else {
            return Ok(());
        };
        match h.tables.apply(h.dp.ebpf_mut(), &effective, &macs) {
            Ok(r) => {
                log::info!("config store: VIPs at revision {revision} written");
                log_report(&r);
                h.macs = macs;
            }
            Err(e) => {
                log::error!("config store: VIPs at revision {revision} not applied, the tables are unchanged: {e:#}");
                return Err(format!("{e:#}"));
            }
        }
        self.config.l4 = new_l4;
        self.store_vips = stored;
        if let Err(e) = self.update_health_targets() {
            log::error!("health checks not updated: {e:#}");
        }
        self.excluded = self.excluded_now();
        self.publish_local_verdicts();
        self.write_state();
        Ok(())
    }
}
