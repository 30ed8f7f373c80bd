//! Reading the XDP program's per-CPU protocol counters.
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::counters::{PacketCounter, ProtoClass};

/// Totals over all CPUs, one entry per protocol class, in index order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProtoTotals(pub Vec<(&'static str, u64, u64)>);

impl ProtoTotals {
    /// Packets and bytes of one class.
    pub fn get(&self, class: ProtoClass) -> PacketCounter {
        let (_, packets, bytes) = self.0[class as usize];
        PacketCounter { packets, bytes }
    }
}

/// Sums a per-CPU counter array over CPUs.
pub fn read_totals(map: &PerCpuArray<MapData, PacketCounter>) -> anyhow::Result<ProtoTotals> {
    let mut out = Vec::with_capacity(ProtoClass::ALL.len());
    for class in ProtoClass::ALL {
        let per_cpu = map
            .get(&(class as u32), 0)
            .with_context(|| format!("reading counter {}", class.name()))?;
        let mut total = PacketCounter::default();
        for c in per_cpu.iter() {
            total.add(c);
        }
        out.push((class.name(), total.packets, total.bytes));
    }
    Ok(ProtoTotals(out))
}

/// Opens the pinned counter map of a running instance and sums it.
pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<ProtoTotals> {
    let path = pin_dir.join(lb_common::maps::PROTO_COUNTERS);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is an xlb instance running with this name?)",
            path.display()
        )
    })?;
    let map = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    read_totals(&map)
}
