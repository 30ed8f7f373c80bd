//! `xlb flow`: which backend a flow goes to. From the config's Maglev
//! table, and from the connection table when the instance is running and
//! already knows the flow.
use std::{net::SocketAddr, path::Path};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{
    conntrack::{is_v4_shaped, ConnValue, FlowKeyV4},
    flow::FlowKey,
    maps,
};
use serde_json::{json, Value};

use crate::{
    config::{
        l4::{HashFields, L4Protocol},
        Config,
    },
    datapath::{instance_pin_dir, predict, state_file::InstanceState},
};

/// The answer as JSON: `{"vip", "predicted", "conntrack", "backend", "source"}`.
pub fn query(
    config: &Config,
    src: SocketAddr,
    dst: SocketAddr,
    proto: L4Protocol,
) -> anyhow::Result<Value> {
    let Some(p) = predict::predict(&config.l4, src, dst, proto)? else {
        anyhow::bail!("{dst} ({proto:?}) is not an L4 VIP of this config");
    };
    let vip = predict::find_vip(&config.l4, dst, proto).expect("predict found it");
    let mut key = predict::flow_key(src, dst, proto);
    if vip.hash == HashFields::ThreeTuple {
        key = key.three_tuple();
    }
    let tracked = conntrack_backend(&config.bpffs, config.instance.as_str(), &key);
    let backend = tracked
        .map(|a| a.to_string())
        .or(p.backend.map(|a| a.to_string()));
    Ok(json!({
        "vip": p.vip,
        "hash": p.hash,
        "slot": p.slot,
        "predicted": p.backend.map(|a| a.to_string()),
        "conntrack": tracked.map(|a| a.to_string()),
        "backend": backend,
        "source": if tracked.is_some() { "conntrack" } else { "maglev" },
    }))
}

/// The backend the running instance's connection table holds for `key`.
fn conntrack_backend(bpffs: &Path, instance: &str, key: &FlowKey) -> Option<std::net::IpAddr> {
    let dir = instance_pin_dir(bpffs, instance);
    let value = if is_v4_shaped(key) {
        let data = MapData::from_pin(dir.join(maps::CONNTRACK_V4)).ok()?;
        let map: BpfHashMap<MapData, FlowKeyV4, ConnValue> =
            BpfHashMap::try_from(Map::LruHashMap(data)).ok()?;
        map.get(&FlowKeyV4::of(key), 0).ok()?
    } else {
        let data = MapData::from_pin(dir.join(maps::CONNTRACK)).ok()?;
        let map: BpfHashMap<MapData, FlowKey, ConnValue> =
            BpfHashMap::try_from(Map::LruHashMap(data)).ok()?;
        map.get(key, 0).ok()?
    };
    InstanceState::read(instance)?
        .backends
        .get(&value.backend)
        .copied()
}
