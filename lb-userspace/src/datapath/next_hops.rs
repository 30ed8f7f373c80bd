//! The next-hop MAC of every backend in an L4 config: configured, or
//! resolved from the kernel (route, then neighbour table).
use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{bail, Context as _};

use super::neighbour;
use crate::config::l4::{parse_mac, ForwardMode, L4Config};

/// How long one backend's MAC resolution may take before the config is
/// refused (ARP/ND normally answers in well under a millisecond on-link).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Resolves all backends' next-hop MACs, concurrently. Fails (naming the
/// backend and VIP) if any cannot be resolved, or if a DSR backend is not
/// on-link: DSR only rewrites the MAC, so the backend must share the link.
pub async fn resolve_all(l4: &L4Config) -> anyhow::Result<HashMap<IpAddr, [u8; 6]>> {
    let mut out = HashMap::new();
    let mut pending = tokio::task::JoinSet::new();
    let mut dsr_backends = HashMap::new();
    for v in &l4.vips {
        for b in &v.backends {
            if v.mode == ForwardMode::Dsr {
                dsr_backends.insert(b.address, v.name.clone());
            }
            if out.contains_key(&b.address) {
                continue;
            }
            if let Some(mac) = b.mac.as_deref().and_then(parse_mac) {
                out.insert(b.address, mac);
                continue;
            }
            out.insert(b.address, [0; 6]);
            let addr = b.address;
            let vip = v.name.clone();
            pending
                .spawn(async move { (addr, vip, neighbour::resolve(addr, RESOLVE_TIMEOUT).await) });
        }
    }
    while let Some(joined) = pending.join_next().await {
        let (addr, vip, result) = joined.context("resolver task")?;
        let hop = result.with_context(|| format!("backend {addr} of VIP `{vip}`"))?;
        if let (Some(gw), Some(dsr_vip)) = (hop.gateway, dsr_backends.get(&addr)) {
            bail!(
                "backend {addr} of DSR VIP `{dsr_vip}` is not on-link (its route goes via {gw}); \
                 DSR only rewrites the MAC, so use `mode: ipip` for routed backends"
            );
        }
        out.insert(addr, hop.mac);
    }
    Ok(out)
}
