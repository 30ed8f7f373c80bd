//! Reading the XDP program's per-CPU global counters (protocol classes and
//! outcomes), summed over CPUs.
use std::path::Path;

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::{
    counters::{GlobalCounters, PacketCounter, ProtoClass},
    maps,
    reasons::Reason,
};

/// The counters summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals(pub GlobalCounters);

impl Totals {
    /// Packets and bytes of one protocol class.
    pub fn class(&self, class: ProtoClass) -> PacketCounter {
        self.0.classes[class as usize]
    }

    /// Packets and bytes of one outcome.
    pub fn reason(&self, reason: Reason) -> PacketCounter {
        self.0.reasons[reason as usize]
    }
}

/// Sums the per-CPU `COUNTERS` values.
pub fn read_totals<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, GlobalCounters>,
) -> anyhow::Result<Totals> {
    let mut total = GlobalCounters::default();
    for c in map.get(&0, 0).context("reading COUNTERS")?.iter() {
        total.add(c);
    }
    Ok(Totals(total))
}

/// Opens the pinned `COUNTERS` map of a running instance and sums it.
pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<Totals> {
    let path = pin_dir.join(maps::COUNTERS);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is an xlb instance running with this name?)",
            path.display()
        )
    })?;
    let map = PerCpuArray::try_from(Map::PerCpuArray(data))?;
    read_totals(&map)
}

/// Opens a pinned per-CPU `PacketCounter` array (`VIP_STATS`, `BACKEND_STATS`).
pub fn open_per_cpu(
    pin_dir: &Path,
    name: &str,
) -> anyhow::Result<PerCpuArray<MapData, PacketCounter>> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (is an xlb instance running with this name?)",
            path.display()
        )
    })?;
    Ok(PerCpuArray::try_from(Map::PerCpuArray(data))?)
}

/// Row `index` of a per-CPU counter array, summed over CPUs.
pub fn sum_row(
    map: &PerCpuArray<MapData, PacketCounter>,
    index: u32,
) -> anyhow::Result<PacketCounter> {
    let mut total = PacketCounter::default();
    for c in map.get(&index, 0)?.iter() {
        total.add(c);
    }
    Ok(total)
}
