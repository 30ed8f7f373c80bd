//! Adopting a connection table pinned by a version that kept IPv4 flows in
//! `CONNTRACK` (one 40-byte-key table for both families) when this one
//! keeps them in `CONNTRACK_V4` (see `lb_common::conntrack`).
//!
//! The pinned `CONNTRACK` has the same shape as before, so it is adopted
//! as the IPv6 table; its IPv4 entries are moved to the new IPv4 table, so
//! an upgrade keeps every established IPv4 flow on its backend even when
//! the backend set changed since the flow began. Moved twice: once before
//! the new program replaces the old one, and once after, for the flows the
//! old program added in between (the second pass never overwrites what the
//! new program already placed).
use aya::{
    maps::{HashMap as BpfHashMap, MapData, MapError},
    Ebpf,
};
use lb_common::{
    conntrack::{is_v4_shaped, ConnValue, FlowKeyV4},
    flow::FlowKey,
    maps,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Moves every IPv4-shaped entry of `CONNTRACK` into `CONNTRACK_V4`;
/// returns how many moved. An entry already in `CONNTRACK_V4` wins (the
/// running program placed it).
pub fn move_v4_flows(ebpf: &mut Ebpf) -> Result<usize, MapError> {
    let v4_entries: Vec<(FlowKey, ConnValue)> = {
        let old: BpfHashMap<&MapData, FlowKey, ConnValue> = BpfHashMap::try_from(
            ebpf.map(maps::CONNTRACK)
                .ok_or_else(|| missing(maps::CONNTRACK))?,
        )?;
        // Keys first, then values: an LRU table can evict while we walk it;
        // an entry gone in between is simply not moved.
        let keys: Vec<FlowKey> = old.keys().filter_map(Result::ok).collect();
        keys.into_iter()
            .filter(is_v4_shaped)
            .filter_map(|k| old.get(&k, 0).ok().map(|v| (k, v)))
            .collect()
    };
    {
        let mut new: BpfHashMap<&mut MapData, FlowKeyV4, ConnValue> = BpfHashMap::try_from(
            ebpf.map_mut(maps::CONNTRACK_V4)
                .ok_or_else(|| missing(maps::CONNTRACK_V4))?,
        )?;
        for (k, v) in &v4_entries {
            match new.insert(FlowKeyV4::of(k), *v, BPF_NOEXIST) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut old: BpfHashMap<&mut MapData, FlowKey, ConnValue> = BpfHashMap::try_from(
        ebpf.map_mut(maps::CONNTRACK)
            .ok_or_else(|| missing(maps::CONNTRACK))?,
    )?;
    for (k, _) in &v4_entries {
        let _ = old.remove(k);
    }
    Ok(v4_entries.len())
}

fn missing(name: &str) -> MapError {
    MapError::InvalidName {
        name: name.to_string(),
    }
}
