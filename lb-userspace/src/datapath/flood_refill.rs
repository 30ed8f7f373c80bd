//! Refills the datapath's per-CPU new-flow budget (`FLOOD_GUARD`) on a
//! timer, so the XDP program never reads the clock (see
//! `lb_common::settings::FloodBudget`).
use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    maps::{Map, MapData, PerCpuArray, PerCpuValues},
    Ebpf,
};
use lb_common::{
    maps,
    settings::{FloodBudget, FLOOD_REFILLS_PER_SEC},
};

/// Owns the `FLOOD_GUARD` map and the configured rate.
pub struct FloodRefill {
    map: PerCpuArray<MapData, FloodBudget>,
    cpus: usize,
    rate: Arc<AtomicU32>,
}

impl FloodRefill {
    /// Takes `FLOOD_GUARD` out of `ebpf` and fills it once at `per_cpu_sec`.
    pub fn new(ebpf: &mut Ebpf, per_cpu_sec: u32) -> anyhow::Result<FloodRefill> {
        let map = ebpf
            .take_map(maps::FLOOD_GUARD)
            .context("FLOOD_GUARD map")?;
        let Map::PerCpuArray(data) = map else {
            anyhow::bail!("FLOOD_GUARD is not a per-CPU array");
        };
        let mut r = FloodRefill {
            map: PerCpuArray::try_from(Map::PerCpuArray(data))?,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e)?,
            rate: Arc::new(AtomicU32::new(per_cpu_sec)),
        };
        r.refill()?;
        Ok(r)
    }

    /// A handle to change the rate (on reload).
    pub fn rate(&self) -> Arc<AtomicU32> {
        self.rate.clone()
    }

    fn refill(&mut self) -> anyhow::Result<()> {
        let rate = self.rate.load(Ordering::Relaxed);
        // Never round a positive rate down to "no inserts at all".
        let per_tick = match rate {
            0 => 0,
            r => (r / FLOOD_REFILLS_PER_SEC).max(1),
        };
        let budget = FloodBudget {
            remaining: per_tick,
            _pad: 0,
        };
        self.map
            .set(0, PerCpuValues::try_from(vec![budget; self.cpus])?, 0)?;
        Ok(())
    }

    /// Refills every `1 / FLOOD_REFILLS_PER_SEC` seconds, forever.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / FLOOD_REFILLS_PER_SEC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Err(e) = self.refill() {
                log::warn!("refilling the new-flow budget: {e:#}");
            }
        }
    }
}
