//! Loads xlb's eBPF object with small maps, fills SETTINGS / VIPS /
//! BACKENDS / MAGLEV through aya's typed maps, and runs frames through
//! `BPF_PROG_TEST_RUN` (repeat 1: with repeat > 1 the kernel reruns the
//! program on the buffer the previous run rewrote).
use std::collections::HashMap as StdHashMap;

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{Array, DevMap, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::{
    backend::{BackendMeta, TxPort},
    conntrack::{is_v4_shaped, ConnValue, FlowKeyV4, FragKey, FragValue},
    consts::{MAX_VIPS, NO_BACKEND},
    counters::{GlobalCounters, PacketCounter},
    flow::{flow_hash, FlowKey},
    maglev, maps as names,
    reasons::Reason,
    settings::{FloodBudget, Settings},
    vip::{VipKey, VipMeta, FAMILY_FRAGMENTS},
};

/// `XDP_ABORTED` … `XDP_REDIRECT` (include/uapi/linux/bpf.h).
pub const XDP_ABORTED: u32 = 0;
/// See [`XDP_ABORTED`].
pub const XDP_DROP: u32 = 1;
/// See [`XDP_ABORTED`].
pub const XDP_PASS: u32 = 2;
/// See [`XDP_ABORTED`].
pub const XDP_TX: u32 = 3;
/// See [`XDP_ABORTED`].
pub const XDP_REDIRECT: u32 = 4;

/// The action's name, for messages.
pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}

/// Which of the object's two XDP programs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    /// `xlb_xdp`, the balancer.
    Balancer,
    /// `xlb_decap`, the backend-side decapsulation.
    Decap,
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug)]
pub struct Run {
    /// The XDP action.
    pub action: u32,
    /// The frame as the program left it (after any head/tail adjustment).
    pub out: Vec<u8>,
}

/// A backend to install: its `BACKENDS` index and value.
#[derive(Clone, Copy, Debug)]
pub struct BackendSpec {
    pub index: u32,
    pub meta: BackendMeta,
}

/// A VIP to install: its key and value, its backends (index, weight) for
/// the Maglev table, and whether it also gets the `FAMILY_FRAGMENTS` alias.
#[derive(Clone, Debug)]
pub struct VipSpec {
    pub key: VipKey,
    pub meta: VipMeta,
    pub backends: Vec<(u32, u32)>,
    pub fragments: bool,
}

/// The loaded object plus what the test installed, for predictions.
pub struct Harness {
    ebpf: Ebpf,
    /// Maglev table size (prime), also written to `SETTINGS.maglev_size`.
    pub m: u32,
    nr_cpus: usize,
    /// Live Maglev table per VIP row, as built by `lb_common::maglev::build`.
    pub tables: StdHashMap<u32, Vec<u32>>,
}

/// Pins the calling thread to the CPU it is on: the flood guard and the
/// per-CPU counters are per CPU, and `BPF_PROG_TEST_RUN` runs the program on
/// the caller's CPU, so a migrating test would see a fresh budget.
pub fn pin_to_current_cpu() -> anyhow::Result<usize> {
    use nix::sched::{sched_getcpu, sched_setaffinity, CpuSet};
    let cpu = sched_getcpu().context("sched_getcpu")?;
    let mut set = CpuSet::new();
    set.set(cpu).context("CpuSet::set")?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("sched_setaffinity")?;
    Ok(cpu)
}

/// The identity bytes of a backend for the Maglev permutation: its address
/// and its index (so two test backends never collide).
fn backend_identity(index: u32, meta: &BackendMeta) -> Vec<u8> {
    let mut k = Vec::with_capacity(20);
    for w in meta.addr {
        k.extend_from_slice(&w.to_ne_bytes());
    }
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl Harness {
    /// Loads the embedded object with `MAGLEV` sized `MAX_VIPS * 2 * m` and
    /// `CONNTRACK` holding `conntrack` entries, and loads both programs.
    /// `FRAGMENTS` gets as many entries as `CONNTRACK`.
    pub fn load(m: u32, conntrack: u32) -> anyhow::Result<Harness> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::MAGLEV, MAX_VIPS * 2 * m)
            .map_max_entries(names::CONNTRACK, conntrack)
            .map_max_entries(names::CONNTRACK_V4, conntrack)
            .map_max_entries(names::FRAGMENTS, conntrack)
            .load(xlb::datapath::EBPF_OBJECT)
            .context("loading the eBPF object")?;
        for name in [names::XDP_PROGRAM, names::XDP_DECAP_PROGRAM] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let nr_cpus = aya::util::nr_cpus().map_err(|(p, e)| anyhow!("{p}: {e}"))?;
        let mut h = Harness {
            ebpf,
            m,
            nr_cpus,
            tables: StdHashMap::new(),
        };
        h.set_settings(&h.default_settings())?;
        Ok(h)
    }

    /// Settings with this harness's table size and the crate defaults.
    pub fn default_settings(&self) -> Settings {
        Settings {
            maglev_size: self.m,
            ..Settings::default()
        }
    }

    /// Runs `frame` through a program once.
    pub fn run(&self, prog: Prog, frame: &[u8]) -> Result<Run, ProgramError> {
        let name = match prog {
            Prog::Balancer => names::XDP_PROGRAM,
            Prog::Decap => names::XDP_DECAP_PROGRAM,
        };
        let p: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        // Room for the largest growth the programs make (a 40-byte outer
        // header) and then some.
        let mut out = vec![0u8; frame.len() + 512];
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(Run {
            action: r.return_value,
            out,
        })
    }

    /// Writes `SETTINGS[0]`, and refills every CPU's new-flow budget to
    /// `s.new_flows_per_cpu_sec`, as the daemon does when it applies a
    /// config (the model counts inserts from here).
    pub fn set_settings(&mut self, s: &Settings) -> anyhow::Result<()> {
        let mut a: Array<&mut MapData, Settings> =
            Array::try_from(self.ebpf.map_mut(names::SETTINGS).context("SETTINGS")?)?;
        a.set(0, s, 0)?;
        let n = self.nr_cpus;
        let mut f: PerCpuArray<&mut MapData, FloodBudget> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::FLOOD_GUARD)
                .context("FLOOD_GUARD")?,
        )?;
        let budget = FloodBudget {
            remaining: s.new_flows_per_cpu_sec,
            _pad: 0,
        };
        f.set(0, PerCpuValues::try_from(vec![budget; n])?, 0)?;
        Ok(())
    }

    fn vips(&mut self) -> anyhow::Result<HashMap<&mut MapData, VipKey, VipMeta>> {
        Ok(HashMap::try_from(
            self.ebpf.map_mut(names::VIPS).context("VIPS")?,
        )?)
    }

    /// Writes `BACKENDS[index]`.
    pub fn set_backend(&mut self, index: u32, meta: &BackendMeta) -> anyhow::Result<()> {
        let mut a: Array<&mut MapData, BackendMeta> =
            Array::try_from(self.ebpf.map_mut(names::BACKENDS).context("BACKENDS")?)?;
        a.set(index, meta, 0)?;
        Ok(())
    }

    /// Writes one Maglev table half of a VIP row.
    pub fn set_table(&mut self, vip_index: u32, half: u32, table: &[u32]) -> anyhow::Result<()> {
        let m = self.m;
        let mut a: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(names::MAGLEV).context("MAGLEV")?)?;
        let base = (vip_index * 2 + half) * m;
        for (i, v) in table.iter().enumerate() {
            a.set(base + i as u32, v, 0)?;
        }
        Ok(())
    }

    /// Installs backends and VIPs: the live Maglev half gets the table built
    /// by `lb_common::maglev::build`; the other half is left full of
    /// `NO_BACKEND`, so reading the wrong half shows as a drop.
    pub fn install(&mut self, backends: &[BackendSpec], vips: &[VipSpec]) -> anyhow::Result<()> {
        for b in backends {
            self.set_backend(b.index, &b.meta)?;
        }
        for v in vips {
            let ids: Vec<(u32, Vec<u8>, u32)> = v
                .backends
                .iter()
                .map(|&(idx, w)| {
                    let meta = backends
                        .iter()
                        .find(|b| b.index == idx)
                        .map(|b| b.meta)
                        .unwrap_or_default();
                    (idx, backend_identity(idx, &meta), w)
                })
                .collect();
            let list: Vec<maglev::Backend<'_>> = ids
                .iter()
                .map(|(id, key, weight)| maglev::Backend {
                    id: *id,
                    key,
                    weight: *weight,
                })
                .collect();
            let table = maglev::build(&list, self.m).map_err(|e| anyhow!("maglev: {e}"))?;
            let live = v.meta.table & 1;
            self.set_table(v.meta.index, live, &table)?;
            self.set_table(v.meta.index, live ^ 1, &vec![NO_BACKEND; self.m as usize])?;
            self.tables.insert(v.meta.index, table);
            let mut map = self.vips()?;
            map.insert(v.key, v.meta, 0)?;
            if v.fragments {
                let alias = VipKey {
                    port: 0,
                    family: v.key.family | FAMILY_FRAGMENTS,
                    ..v.key
                };
                map.insert(alias, v.meta, 0)?;
            }
        }
        Ok(())
    }

    /// Writes one `VIPS` entry as is (echo entries).
    pub fn insert_vip(&mut self, key: VipKey, meta: VipMeta) -> anyhow::Result<()> {
        self.vips()?.insert(key, meta, 0)?;
        Ok(())
    }

    /// Writes `TX_PORTS[slot]` and `TX_DEVMAP[slot]`.
    pub fn set_tx_port(&mut self, slot: u32, port: TxPort) -> anyhow::Result<()> {
        let mut a: Array<&mut MapData, TxPort> =
            Array::try_from(self.ebpf.map_mut(names::TX_PORTS).context("TX_PORTS")?)?;
        a.set(slot, port, 0)?;
        let mut d: DevMap<&mut MapData> =
            DevMap::try_from(self.ebpf.map_mut(names::TX_DEVMAP).context("TX_DEVMAP")?)?;
        d.set(slot, port.ifindex, None, 0)?;
        Ok(())
    }

    /// `FRAGMENTS[key]`.
    pub fn frag_get(&self, key: &FragKey) -> Option<FragValue> {
        let map: HashMap<&MapData, FragKey, FragValue> =
            HashMap::try_from(self.ebpf.map(names::FRAGMENTS)?).ok()?;
        map.get(key, 0).ok()
    }

    /// Every `FRAGMENTS` entry.
    pub fn frags_dump(&self) -> anyhow::Result<Vec<(FragKey, FragValue)>> {
        let map: HashMap<&MapData, FragKey, FragValue> =
            HashMap::try_from(self.ebpf.map(names::FRAGMENTS).context("FRAGMENTS")?)?;
        Ok(map.iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Empties `FRAGMENTS`.
    pub fn frags_clear(&mut self) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, FragKey, FragValue> =
            HashMap::try_from(self.ebpf.map_mut(names::FRAGMENTS).context("FRAGMENTS")?)?;
        let keys: Vec<FragKey> = map.keys().collect::<Result<_, _>>()?;
        for k in keys {
            map.remove(&k)?;
        }
        Ok(())
    }

    /// The backend the live Maglev table of VIP row `vip_index` names for
    /// `key`, as `lb_common::flow` documents the lookup.
    pub fn maglev_pick(&self, vip_index: u32, key: &FlowKey) -> u32 {
        let t = &self.tables[&vip_index];
        t[lb_common::flow::slot(flow_hash(key), self.m) as usize]
    }

    /// The IPv4 connection table, writable.
    fn ct4_mut(&mut self) -> anyhow::Result<HashMap<&mut MapData, FlowKeyV4, ConnValue>> {
        let map = self
            .ebpf
            .map_mut(names::CONNTRACK_V4)
            .context("CONNTRACK_V4")?;
        Ok(HashMap::try_from(map)?)
    }

    /// The IPv6 connection table, writable.
    fn ct6_mut(&mut self) -> anyhow::Result<HashMap<&mut MapData, FlowKey, ConnValue>> {
        let map = self.ebpf.map_mut(names::CONNTRACK).context("CONNTRACK")?;
        Ok(HashMap::try_from(map)?)
    }

    /// Inserts a connection-table entry (into the IPv4 or the IPv6 table,
    /// by the key's shape: `lb_common::conntrack::is_v4_shaped`).
    pub fn ct_insert(&mut self, key: FlowKey, value: ConnValue) -> anyhow::Result<()> {
        match is_v4_shaped(&key) {
            true => self.ct4_mut()?.insert(FlowKeyV4::of(&key), value, 0)?,
            false => self.ct6_mut()?.insert(key, value, 0)?,
        }
        Ok(())
    }

    /// Looks a connection-table entry up.
    pub fn ct_get(&self, key: &FlowKey) -> Option<ConnValue> {
        if is_v4_shaped(key) {
            let m: HashMap<&MapData, FlowKeyV4, ConnValue> =
                HashMap::try_from(self.ebpf.map(names::CONNTRACK_V4)?).ok()?;
            m.get(&FlowKeyV4::of(key), 0).ok()
        } else {
            let m: HashMap<&MapData, FlowKey, ConnValue> =
                HashMap::try_from(self.ebpf.map(names::CONNTRACK)?).ok()?;
            m.get(key, 0).ok()
        }
    }

    /// Every connection-table entry of both tables, IPv4 keys widened.
    pub fn ct_dump(&self) -> anyhow::Result<Vec<(FlowKey, ConnValue)>> {
        let v4: HashMap<&MapData, FlowKeyV4, ConnValue> =
            HashMap::try_from(self.ebpf.map(names::CONNTRACK_V4).context("CONNTRACK_V4")?)?;
        let v6: HashMap<&MapData, FlowKey, ConnValue> =
            HashMap::try_from(self.ebpf.map(names::CONNTRACK).context("CONNTRACK")?)?;
        let mut all: Vec<(FlowKey, ConnValue)> = v4
            .iter()
            .map(|e| e.map(|(k, v)| (k.widen(), v)))
            .collect::<Result<_, _>>()?;
        for e in v6.iter() {
            all.push(e?);
        }
        Ok(all)
    }

    /// Empties both connection tables.
    pub fn ct_clear(&mut self) -> anyhow::Result<()> {
        let keys: Vec<FlowKey> = self.ct_dump()?.into_iter().map(|(k, _)| k).collect();
        for k in keys {
            match is_v4_shaped(&k) {
                true => self.ct4_mut()?.remove(&FlowKeyV4::of(&k))?,
                false => self.ct6_mut()?.remove(&k)?,
            }
        }
        Ok(())
    }

    /// Empties every CPU's new-flow budget (`set_settings` refills it).
    pub fn reset_flood_guard(&mut self) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut a: PerCpuArray<&mut MapData, FloodBudget> = PerCpuArray::try_from(
            self.ebpf
                .map_mut(names::FLOOD_GUARD)
                .context("FLOOD_GUARD")?,
        )?;
        a.set(
            0,
            PerCpuValues::try_from(vec![FloodBudget::default(); n])?,
            0,
        )?;
        Ok(())
    }

    /// The outcome counters summed over CPUs, in `Reason` order.
    pub fn reasons(&self) -> anyhow::Result<Vec<PacketCounter>> {
        let a: PerCpuArray<&MapData, GlobalCounters> =
            PerCpuArray::try_from(self.ebpf.map(names::COUNTERS).context("COUNTERS")?)?;
        let totals = xlb::datapath::counters::read_totals(&a)?;
        Ok(Reason::ALL.iter().map(|r| totals.reason(*r)).collect())
    }
}
