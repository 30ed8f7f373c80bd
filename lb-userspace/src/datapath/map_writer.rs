//! Where [`super::l4_tables::L4Tables::apply`] writes: the XDP maps of a
//! loaded object, or a fake in unit tests. `apply` decides what changes
//! (the diff, pure logic); a writer only carries the writes out, so the
//! diff is tested without root or a kernel.
use anyhow::Context as _;
use aya::{
    maps::{Array, DevMap, HashMap as BpfHashMap, MapData},
    Ebpf,
};
use lb_common::{
    backend::{BackendMeta, TxPort},
    maps,
    settings::Settings,
    vip::{VipKey, VipMeta},
};

/// The map writes of an L4 change.
pub trait MapWriter {
    /// Egress port `slot` (`TX_PORTS` and its `TX_DEVMAP` entry).
    fn tx_port(&mut self, slot: u32, port: &TxPort) -> anyhow::Result<()>;
    /// `SETTINGS[0]`.
    fn settings(&mut self, s: Settings) -> anyhow::Result<()>;
    /// `BACKENDS[index]` (a zeroed meta deactivates the slot).
    fn backend(&mut self, index: u32, meta: BackendMeta) -> anyhow::Result<()>;
    /// `MAGLEV` slots, as (index, backend index) pairs.
    fn maglev(&mut self, writes: &[(u32, u32)]) -> anyhow::Result<()>;
    /// `VIPS[key] = meta`.
    fn vip_insert(&mut self, key: VipKey, meta: VipMeta) -> anyhow::Result<()>;
    /// Removes `VIPS[key]` (absent is fine).
    fn vip_remove(&mut self, key: &VipKey);
}

impl MapWriter for Ebpf {
    fn tx_port(&mut self, slot: u32, port: &TxPort) -> anyhow::Result<()> {
        let mut ports: Array<&mut MapData, TxPort> =
            Array::try_from(self.map_mut(maps::TX_PORTS).context("TX_PORTS map")?)?;
        ports.set(slot, port, 0).context("writing TX_PORTS")?;
        let mut devmap: DevMap<&mut MapData> =
            DevMap::try_from(self.map_mut(maps::TX_DEVMAP).context("TX_DEVMAP map")?)?;
        devmap
            .set(slot, port.ifindex, None, 0)
            .context("writing TX_DEVMAP")?;
        Ok(())
    }

    fn settings(&mut self, s: Settings) -> anyhow::Result<()> {
        let mut m: Array<&mut MapData, Settings> =
            Array::try_from(self.map_mut(maps::SETTINGS).context("SETTINGS map")?)?;
        m.set(0, s, 0)?;
        Ok(())
    }

    fn backend(&mut self, index: u32, meta: BackendMeta) -> anyhow::Result<()> {
        let mut m: Array<&mut MapData, BackendMeta> =
            Array::try_from(self.map_mut(maps::BACKENDS).context("BACKENDS map")?)?;
        m.set(index, meta, 0)
            .with_context(|| format!("writing backend slot {index}"))?;
        Ok(())
    }

    fn maglev(&mut self, writes: &[(u32, u32)]) -> anyhow::Result<()> {
        let mut m: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(maps::MAGLEV).context("MAGLEV map")?)?;
        for &(i, v) in writes {
            m.set(i, v, 0)
                .with_context(|| format!("writing Maglev slot {i}"))?;
        }
        Ok(())
    }

    fn vip_insert(&mut self, key: VipKey, meta: VipMeta) -> anyhow::Result<()> {
        let mut m: BpfHashMap<&mut MapData, VipKey, VipMeta> =
            BpfHashMap::try_from(self.map_mut(maps::VIPS).context("VIPS map")?)?;
        m.insert(key, meta, 0)?;
        Ok(())
    }

    fn vip_remove(&mut self, key: &VipKey) {
        if let Some(map) = self.map_mut(maps::VIPS) {
            if let Ok(mut m) = BpfHashMap::<&mut MapData, VipKey, VipMeta>::try_from(map) {
                let _ = m.remove(key);
            }
        }
    }
}
