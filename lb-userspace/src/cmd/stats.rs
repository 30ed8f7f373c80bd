//! `xlb stats`: a running instance's XDP counters, read from its pinned
//! maps and labelled with the names in its state file.
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::{
    counters::{PacketCounter, ProtoClass},
    maps,
    reasons::Reason,
};
use serde_json::{json, Map as JsonMap, Value};

use crate::datapath::{counters, instance_pin_dir, state_file::InstanceState};

fn per_cpu(pin_dir: &Path, name: &str) -> anyhow::Result<PerCpuArray<MapData, PacketCounter>> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is an xlb instance running with this name?)",
            path.display()
        )
    })?;
    Ok(PerCpuArray::try_from(Map::PerCpuArray(data))?)
}

fn sum(map: &PerCpuArray<MapData, PacketCounter>, index: u32) -> anyhow::Result<PacketCounter> {
    let mut total = PacketCounter::default();
    for c in map.get(&index, 0)?.iter() {
        total.add(c);
    }
    Ok(total)
}

fn entry(c: PacketCounter) -> Value {
    json!({"packets": c.packets, "bytes": c.bytes})
}

/// Everything `xlb stats` shows, as JSON:
/// `{"classes": {..}, "reasons": {..}, "vips": {name: ..}, "backends": {addr: ..},
/// "digests": {vip: hex}, "midflow_misses": {vip: ..}, "shared_verdicts":
/// {"node", "connected", "live_nodes", "backends": {vip: {addr: {"local",
/// "fleet", "down_votes", "voters", "in_table"}}}}}` (the last only with
/// `health.shared_verdicts`).
pub fn collect(bpffs: &Path, instance: &str) -> anyhow::Result<Value> {
    let pin_dir = instance_pin_dir(bpffs, instance);
    let totals = counters::read_pinned(&pin_dir)?;
    let mut class_obj = JsonMap::new();
    for c in ProtoClass::ALL {
        class_obj.insert(c.name().into(), entry(totals.class(c)));
    }
    let mut reason_obj = JsonMap::new();
    for r in Reason::ALL {
        reason_obj.insert(r.name().into(), entry(totals.reason(r)));
    }
    let state = InstanceState::read(instance).unwrap_or_default();
    let vip_stats = per_cpu(&pin_dir, maps::VIP_STATS)?;
    let mut vip_obj = JsonMap::new();
    for (row, name) in &state.vips {
        vip_obj.insert(name.clone(), entry(sum(&vip_stats, *row)?));
    }
    // Pins of a build before this counter have no such map: none shown.
    let mut midflow_obj = JsonMap::new();
    if let Ok(misses) = per_cpu(&pin_dir, maps::MIDFLOW_MISSES) {
        for (row, name) in &state.vips {
            midflow_obj.insert(name.clone(), entry(sum(&misses, *row)?));
        }
    }
    let backend_stats = per_cpu(&pin_dir, maps::BACKEND_STATS)?;
    let mut backend_obj = JsonMap::new();
    for (index, addr) in &state.backends {
        backend_obj.insert(addr.to_string(), entry(sum(&backend_stats, *index)?));
    }
    Ok(json!({
        "classes": class_obj,
        "reasons": reason_obj,
        "vips": vip_obj,
        "backends": backend_obj,
        "digests": state.digests,
        "midflow_misses": midflow_obj,
        "shared_verdicts": state.shared_verdicts,
    }))
}

/// Prints the counters as tables; zero rows of reasons are left out.
pub fn print_table(v: &Value) {
    let section = |title: &str, obj: &Value, skip_zero: bool| {
        println!("{title:<24} {:>14} {:>16}", "packets", "bytes");
        if let Some(o) = obj.as_object() {
            for (k, c) in o {
                let p = c["packets"].as_u64().unwrap_or(0);
                if skip_zero && p == 0 {
                    continue;
                }
                println!("  {k:<22} {p:>14} {:>16}", c["bytes"].as_u64().unwrap_or(0));
            }
        }
    };
    section("protocol", &v["classes"], false);
    section("outcome", &v["reasons"], true);
    section("vip", &v["vips"], false);
    section("backend", &v["backends"], false);
    let sv = &v["shared_verdicts"];
    if let Some(vips) = sv["backends"].as_object() {
        println!(
            "shared verdicts (node {}, {} live nodes, etcd {})",
            sv["node"].as_str().unwrap_or("?"),
            sv["live_nodes"],
            if sv["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "unreachable: last decision kept"
            }
        );
        println!(
            "  {:<22} {:>6} {:>6} {:>10} {:>9}",
            "vip/backend", "local", "fleet", "down/vote", "in table"
        );
        for (vip, backends) in vips {
            for (addr, b) in backends.as_object().into_iter().flatten() {
                println!(
                    "  {:<22} {:>6} {:>6} {:>10} {:>9}",
                    format!("{vip}/{addr}"),
                    b["local"].as_str().unwrap_or("?"),
                    b["fleet"].as_str().unwrap_or("?"),
                    format!("{}/{}", b["down_votes"], b["voters"]),
                    b["in_table"]
                );
            }
        }
    }
}
