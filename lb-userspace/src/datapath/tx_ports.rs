//! Second NICs: the interfaces backends are reached by when that is not
//! the interface packets arrive on. Each gets a slot in `TX_PORTS` (its
//! MAC, the redirected frame's source) and in `TX_DEVMAP` (its ifindex,
//! for `bpf_redirect_map`).
use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use lb_common::backend::{TxPort, MAX_TX_PORTS};

use crate::config::l4::L4Config;

/// Interface name → (slot, port), in name order so that the same config
/// always gives the same slots.
pub type TxPorts = BTreeMap<String, (u8, TxPort)>;

/// The interfaces `l4`'s backends name, with their index and MAC read from
/// the kernel. Fails, naming the interface, when one does not exist.
pub fn resolve(l4: &L4Config) -> anyhow::Result<TxPorts> {
    let mut names: Vec<&str> = l4
        .vips
        .iter()
        .flat_map(|v| v.backends.iter().filter_map(|b| b.interface(l4)))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_TX_PORTS as usize {
        bail!(
            "{} backend interfaces exceed the {MAX_TX_PORTS} the datapath has slots for",
            names.len()
        );
    }
    let mut out = TxPorts::new();
    for (slot, name) in names.into_iter().enumerate() {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .with_context(|| format!("backend interface `{name}`"))?;
        let mac = read_mac(name)?;
        let port = TxPort {
            ifindex,
            mac,
            _pad: [0; 2],
        };
        out.insert(name.to_string(), (slot as u8, port));
    }
    Ok(out)
}

/// The interface's MAC, from `getifaddrs(3)` (netlink, so it sees the
/// daemon's own network namespace; `/sys/class/net` may belong to another
/// when the daemon was started with `nsenter --net`).
fn read_mac(name: &str) -> anyhow::Result<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs().context("getifaddrs")?;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        if let Some(mac) = a
            .address
            .as_ref()
            .and_then(|s| s.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    bail!("backend interface `{name}` has no Ethernet MAC")
}
