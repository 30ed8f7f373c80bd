//! The daemon's side of observability: installs [`Observe`] as the
//! proxy's record sink, starts its listener, and publishes what the
//! status page shows (the daemon is the only part that sees the L4
//! tables, the health verdicts, the proxy's pools and the deny list
//! together).
use std::sync::Arc;

use crate::{
    config::Config,
    datapath::{deny::monotonic_now_ns, instance_pin_dir},
    l7::record,
    observe::{
        status::{DeniedView, ListenerView, NodeView, RouteView, Topology, UpstreamView, VipView},
        Observe, ObserveTasks,
    },
};

use super::{wants_l4, Daemon};

/// Builds the metrics and the access log of `config.observe` and installs
/// them as the proxy's record sink; `None` without an `observe:` section.
pub(super) fn install(config: &Config) -> anyhow::Result<Option<Arc<Observe>>> {
    let Some(cfg) = &config.observe else {
        return Ok(None);
    };
    let instance = config.instance.as_str().to_string();
    let xdp = wants_l4(config).then(|| (instance_pin_dir(&config.bpffs, &instance), instance));
    let obs = Arc::new(Observe::new(cfg, xdp)?);
    if !record::install(obs.clone()) {
        // One daemon per process is the rule; a second one (tests) keeps
        // recording into the first one's sink.
        log::warn!("a request-record sink was installed already; this daemon's requests go there");
    }
    Ok(Some(obs))
}

/// Publishes the started daemon's topology and starts serving.
pub(super) async fn start(obs: &Arc<Observe>, daemon: &Daemon) -> anyhow::Result<ObserveTasks> {
    obs.publish(topology(daemon));
    let cfg = daemon
        .config
        .observe
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("observe: no section"))?;
    let tasks = obs.start(cfg).await?;
    log::info!("observe: /metrics and /status on http://{}", tasks.addr);
    Ok(tasks)
}

/// Publishes the daemon's topology as it is now.
pub(super) fn publish(obs: &Option<Arc<Observe>>, daemon: &Daemon) {
    if let Some(obs) = obs {
        obs.publish(topology(daemon));
    }
}

/// What the status page shows of `d`.
fn topology(d: &Daemon) -> Topology {
    let mut t = Topology {
        instance: d.config.instance.as_str().to_string(),
        generation: d.generation,
        ..Topology::default()
    };
    if d.l4.is_some() {
        for v in &d.config.l4.vips {
            t.vips.push(VipView {
                name: v.name.clone(),
                address: format!("{}:{}/{:?}", v.address, v.port, v.protocol).to_lowercase(),
                mode: format!("{:?}", v.mode).to_lowercase(),
                backends: v
                    .backends
                    .iter()
                    .map(|b| NodeView {
                        address: b.address.to_string(),
                        weight: b.weight,
                        // In the table: this node's check, or with
                        // `health.shared_verdicts` the fleet's decision,
                        // which is what the node forwards by.
                        healthy: !d.backend_excluded(&v.name, b.address),
                        ..NodeView::default()
                    })
                    .collect(),
            });
        }
    }
    if let Some(l7) = &d.l7 {
        for (name, addr) in l7.addresses() {
            t.listeners.push(ListenerView {
                tls: l7.listener_tls(&name),
                name,
                address: addr.to_string(),
            });
        }
        for (listener, id, hosts, upstream) in l7.route_list() {
            t.routes.push(RouteView {
                listener,
                id,
                hosts,
                upstream,
                ..RouteView::default()
            });
        }
        for (upstream, addr, weight, healthy) in l7.node_list() {
            if t.upstreams.last().is_none_or(|u| u.id != upstream) {
                t.upstreams.push(UpstreamView {
                    id: upstream.clone(),
                    nodes: Vec::new(),
                });
            }
            if let Some(u) = t.upstreams.last_mut() {
                u.nodes.push(NodeView {
                    address: addr.to_string(),
                    weight,
                    healthy,
                    ..NodeView::default()
                });
            }
        }
    }
    if let Some(deny) = d.l4.as_ref().and_then(|h| h.deny.as_ref()) {
        let now = monotonic_now_ns();
        for e in deny.list().unwrap_or_default() {
            t.denied.push(DeniedView {
                prefix: e.prefix.to_string(),
                expires_in_s: (e.expires_ns != lb_common::deny::DENY_FOREVER)
                    .then(|| e.expires_ns.saturating_sub(now) / 1_000_000_000),
            });
        }
    }
    t
}
