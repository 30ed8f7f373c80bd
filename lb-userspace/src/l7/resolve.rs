//! Turning an upstream's configured nodes (IP addresses and DNS names) into
//! the addresses its balancer picks from.
//!
//! Names go through the system resolver (`getaddrinfo` via tokio), which
//! honours /etc/hosts and nsswitch as every other program on the host does
//! — but does not tell the TTL. So names are re-resolved every
//! `dns_refresh` (default 30 s) rather than on their TTL; a failed lookup
//! keeps the previous addresses (a resolver hiccup must not empty a pool).
use std::net::SocketAddr;

use super::plan::{NodeTarget, UpstreamPlan};

/// Every address of every node of `plan`, each with its node's weight, in
/// configuration order, without duplicates (the first weight wins). A name
/// with several addresses yields one node per address, each with the full
/// weight (as nginx does).
pub async fn resolve(plan: &UpstreamPlan) -> anyhow::Result<Vec<(SocketAddr, u32)>> {
    let mut out: Vec<(SocketAddr, u32)> = Vec::new();
    for node in &plan.nodes {
        let addrs: Vec<SocketAddr> = match &node.target {
            NodeTarget::Addr(a) => vec![*a],
            NodeTarget::Dns { host, port } => {
                let mut found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| anyhow::anyhow!("upstream {}: resolving {host}: {e}", plan.id))?
                    .collect();
                // Stable order, so that a refresh with the same answer
                // changes nothing.
                found.sort();
                if found.is_empty() {
                    anyhow::bail!("upstream {}: {host} has no address", plan.id);
                }
                found
            }
        };
        for a in addrs {
            if !out.iter().any(|(b, _)| *b == a) {
                out.push((a, node.weight));
            }
        }
    }
    Ok(out)
}

/// True when some node of `plan` is a DNS name.
pub fn has_names(plan: &UpstreamPlan) -> bool {
    plan.nodes
        .iter()
        .any(|n| matches!(n.target, NodeTarget::Dns { .. }))
}
