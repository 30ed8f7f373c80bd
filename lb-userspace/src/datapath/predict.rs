//! Which backend a flow goes to, computed from the configuration alone.
//!
//! The Maglev table depends only on the backends' identities (address
//! bytes) and weights, never on map indices or on the order of the list, so
//! userspace reproduces the datapath's choice for any flow without reading
//! the kernel's tables: `xlb flow`, the demo and the tests use this.
use std::net::{IpAddr, SocketAddr};

use lb_common::{
    flow::{flow_hash, slot, wire_addr_v4, wire_addr_v6, wire_port, FlowKey},
    maglev::{self, Backend, MaglevError, NO_BACKEND},
};

use crate::config::l4::{HashFields, L4Config, L4Protocol, VipConfig};

/// A backend's identity bytes in the Maglev table: its address octets.
pub fn backend_key(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The table of `vip` as backend positions in `vip.backends` (or
/// `NO_BACKEND`).
pub fn table(vip: &VipConfig, m: u32) -> Result<Vec<u32>, MaglevError> {
    let keys: Vec<Vec<u8>> = vip
        .backends
        .iter()
        .map(|b| backend_key(&b.address))
        .collect();
    let input: Vec<Backend<'_>> = vip
        .backends
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (b, k))| Backend {
            id: i as u32,
            key: k,
            weight: b.weight,
        })
        .collect();
    maglev::build(&input, m)
}

/// The flow key the datapath builds for a packet from `src` to `dst`.
pub fn flow_key(src: SocketAddr, dst: SocketAddr, proto: L4Protocol) -> FlowKey {
    let p = proto.number();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(
            wire_addr_v4(s.octets()),
            wire_addr_v4(d.octets()),
            wire_port(src.port()),
            wire_port(dst.port()),
            p,
        ),
        (s, d) => FlowKey::v6(
            wire_addr_v6(to_v6(s)),
            wire_addr_v6(to_v6(d)),
            wire_port(src.port()),
            wire_port(dst.port()),
            p,
        ),
    }
}

fn to_v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The VIP a packet to `dst` with `proto` matches: exact port first, then
/// the port wildcard, as the datapath looks it up.
pub fn find_vip(l4: &L4Config, dst: SocketAddr, proto: L4Protocol) -> Option<&VipConfig> {
    let matching = |port: u16| {
        l4.vips
            .iter()
            .find(|v| v.address == dst.ip() && v.protocol == proto && v.port == port)
    };
    matching(dst.port()).or_else(|| matching(0))
}

/// A prediction: the VIP matched and the backend the Maglev table picks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Prediction {
    /// The VIP's name.
    pub vip: String,
    /// The chosen backend, or None when the VIP has no backend with weight.
    pub backend: Option<IpAddr>,
    /// The flow hash and the table slot it selects.
    pub hash: u32,
    pub slot: u32,
}

/// Predicts the backend of a new flow (one not in the connection table).
pub fn predict(
    l4: &L4Config,
    src: SocketAddr,
    dst: SocketAddr,
    proto: L4Protocol,
) -> Result<Option<Prediction>, MaglevError> {
    let Some(vip) = find_vip(l4, dst, proto) else {
        return Ok(None);
    };
    let mut key = flow_key(src, dst, proto);
    if vip.hash == HashFields::ThreeTuple {
        key = key.three_tuple();
    }
    let hash = flow_hash(&key);
    let s = slot(hash, l4.maglev_table_size);
    let t = table(vip, l4.maglev_table_size)?;
    let backend = match t[s as usize] {
        NO_BACKEND => None,
        i => Some(vip.backends[i as usize].address),
    };
    Ok(Some(Prediction {
        vip: vip.name.clone(),
        backend,
        hash,
        slot: s,
    }))
}
