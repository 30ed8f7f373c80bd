//! Writes the L4 configuration into the XDP maps, and changes it at run
//! time without any packet seeing a half-written state.
//!
//! Each VIP owns two Maglev table halves. A change writes the half that is
//! not live, then replaces the VIP's `VipMeta` (one hash-map update, atomic
//! for readers of a `BPF_F_NO_PREALLOC` map) so packets switch tables at
//! once. Backend slots are allocated in rotation and reused last, so a
//! connection-table entry left by a removed backend cannot point at a new
//! backend that happened to take the same index soon after.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData},
    Ebpf,
};
use lb_common::{
    backend::{BackendMeta, BACKEND_F_ACTIVE, BACKEND_F_REDIRECT, BACKEND_F_V6},
    consts::NO_BACKEND,
    flow::{wire_addr_v4, wire_addr_v6},
    maps,
    settings::{Settings, SETTINGS_F_IPIP_SRC_FROM_FLOW, SETTINGS_F_NO_PORT_WILDCARDS},
    vip::{
        VipKey, VipMeta, ECHO_PORT, FAMILY_FRAGMENTS, FAMILY_V4, FAMILY_V6, VIP_F_HASH_NO_PORTS,
        VIP_F_NO_CONNTRACK, VIP_F_TOO_BIG_DROP, VIP_MODE_DSR, VIP_MODE_IPIP,
    },
};

use super::{map_writer::MapWriter, predict, tx_ports};
use crate::config::l4::{ForwardMode, HashFields, IpipSourceMode, L4Config, TooBig, VipConfig};

/// What userspace knows about one VIP row.
#[derive(Debug, Clone)]
struct VipRow {
    row: u32,
    meta: VipMeta,
    key: VipKey,
    /// Both halves as written, to write only the slots that change.
    halves: [Vec<u32>; 2],
}

#[derive(Debug, Clone, Copy)]
struct BackendSlot {
    index: u32,
    mac: [u8; 6],
    /// `TX_PORTS` slot when the backend is behind another interface.
    tx: Option<u8>,
}

/// What [`L4Tables::apply`] decided before writing anything.
struct Plan {
    /// Each VIP's Maglev positions, in `l4.vips` order.
    tables: Vec<Arc<Vec<u32>>>,
    /// Whether each VIP keeps the table it has.
    unchanged: Vec<bool>,
    /// Every backend address named, once.
    wanted: Vec<IpAddr>,
    ports: tx_ports::TxPorts,
    backend_tx: HashMap<IpAddr, Option<u8>>,
}

/// The userspace mirror of the L4 maps.
#[derive(Debug)]
pub struct L4Tables {
    m: u32,
    vips: BTreeMap<String, VipRow>,
    free_rows: Vec<u32>,
    backends: HashMap<IpAddr, BackendSlot>,
    free_backends: VecDeque<u32>,
    fragment_aliases: HashMap<VipKey, String>,
    /// Echo entries (see `lb_common::vip::ECHO_PORT`) → the VIP whose row
    /// they count under.
    echo_aliases: HashMap<VipKey, String>,
    /// The `TX_PORTS` slots as last written.
    tx_ports: tx_ports::TxPorts,
    /// Per VIP, the digest of its live table (see [`table_digest`]).
    digests: BTreeMap<String, u64>,
    /// Per VIP, the config its table was last built from, the table (as
    /// backend positions) and its digest: a VIP whose config did not
    /// change is neither rebuilt nor compared slot by slot, so a change to
    /// one VIP costs one Maglev build, whatever the number of VIPs.
    built: HashMap<String, Built>,
}

#[derive(Debug)]
struct Built {
    config: VipConfig,
    positions: Arc<Vec<u32>>,
    digest: u64,
}

/// What one `apply` changed, for the log and the admin reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: Vec<String>,
    pub vips_changed: Vec<String>,
    pub vips_removed: Vec<String>,
    pub backends_added: Vec<IpAddr>,
    pub backends_removed: Vec<IpAddr>,
    /// Table slots written (both halves count).
    pub slots_written: usize,
}

fn family(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

fn wire_words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [wire_addr_v4(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => wire_addr_v6(a.octets()),
    }
}

/// A digest of a VIP's Maglev table by what each slot means — the backend
/// address, not the node-local slot index — so that it is comparable
/// between nodes. FNV-1a (64 bit), written out because it must not change
/// between builds or Rust versions (std's hasher may) and nothing here
/// needs a cryptographic hash.
pub fn table_digest(v: &VipConfig, positions: &[u32]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for &p in positions {
        match v.backends.get(p as usize) {
            Some(b) => match b.address {
                IpAddr::V4(a) => eat(&a.octets()),
                IpAddr::V6(a) => eat(&a.octets()),
            },
            None => eat(&[0xff]),
        }
    }
    h
}

/// The address of a `BACKENDS` entry (inverse of [`wire_words`]).
fn backend_addr(meta: &BackendMeta) -> IpAddr {
    let w = meta.addr;
    if meta.flags & BACKEND_F_V6 != 0 {
        let mut o = [0u8; 16];
        for (i, word) in w.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::from(o)
    } else {
        IpAddr::from(w[0].to_ne_bytes())
    }
}

fn vip_key(v: &VipConfig) -> VipKey {
    VipKey {
        addr: wire_words(&v.address),
        port: v.port.to_be(),
        proto: v.protocol.number(),
        family: family(&v.address),
    }
}

fn vip_flags(v: &VipConfig, l4: &L4Config) -> u32 {
    let mut f = 0;
    if v.too_big(l4) == TooBig::Drop {
        f |= VIP_F_TOO_BIG_DROP;
    }
    if v.hash == HashFields::ThreeTuple {
        f |= VIP_F_HASH_NO_PORTS;
    }
    if !v.conntrack {
        f |= VIP_F_NO_CONNTRACK;
    }
    f
}

/// The instance settings for `SETTINGS[0]`.
pub fn settings(l4: &L4Config) -> Settings {
    Settings {
        maglev_size: l4.maglev_table_size,
        flags: match l4.ipip_source.mode {
            IpipSourceMode::Flow => SETTINGS_F_IPIP_SRC_FROM_FLOW,
            IpipSourceMode::Fixed => 0,
        } | if l4.vips.iter().any(|v| v.port == 0) {
            0
        } else {
            SETTINGS_F_NO_PORT_WILDCARDS
        },
        ipip_src_v4: wire_addr_v4(l4.ipip_source.v4.octets()),
        backend_mtu: l4.backend_mtu,
        ipip_src_v6: wire_addr_v6(l4.ipip_source.v6.octets()),
        new_flows_per_cpu_sec: l4.new_flows_per_cpu_sec,
        _pad: 0,
    }
}

impl L4Tables {
    /// An empty mirror for maps sized by `l4` (rows and backend slots).
    pub fn new(l4: &L4Config) -> L4Tables {
        L4Tables {
            m: l4.maglev_table_size,
            vips: BTreeMap::new(),
            free_rows: (0..l4.max_vips).rev().collect(),
            backends: HashMap::new(),
            free_backends: (0..l4.max_backends).collect(),
            fragment_aliases: HashMap::new(),
            echo_aliases: HashMap::new(),
            tx_ports: tx_ports::TxPorts::new(),
            digests: BTreeMap::new(),
            built: HashMap::new(),
        }
    }

    /// The mirror of maps an earlier run filled (adopted pins): backend
    /// slots keep their indices, so connection-table entries still name
    /// the same backends, and VIPs keep their rows, so their counters go
    /// on. VIP rows whose key no VIP of `l4` has are named
    /// `(adopted row N)`, so the next `apply` removes them. Both table
    /// halves are taken as unknown: the first `apply` writes the idle half
    /// in full and flips to it, which costs one table write per VIP and
    /// never shows a packet a half-written table.
    pub fn adopt(ebpf: &mut Ebpf, l4: &L4Config) -> anyhow::Result<L4Tables> {
        let mut t = L4Tables::new(l4);
        let backends_map: Array<&MapData, BackendMeta> =
            Array::try_from(ebpf.map(maps::BACKENDS).context("BACKENDS map")?)?;
        for index in 0..l4.max_backends {
            let meta = backends_map.get(&index, 0)?;
            if meta.flags & BACKEND_F_ACTIVE == 0 {
                continue;
            }
            let addr = backend_addr(&meta);
            t.backends.insert(
                addr,
                BackendSlot {
                    index,
                    mac: meta.next_hop_mac,
                    tx: (meta.flags & BACKEND_F_REDIRECT != 0).then_some(meta.tx_port),
                },
            );
            t.free_backends.retain(|i| *i != index);
        }
        let vips_map: BpfHashMap<&MapData, VipKey, VipMeta> =
            BpfHashMap::try_from(ebpf.map(maps::VIPS).context("VIPS map")?)?;
        let mut fragment_keys = Vec::new();
        let mut echo_keys = Vec::new();
        for entry in vips_map.iter() {
            let (key, meta) = entry?;
            if key.family & FAMILY_FRAGMENTS != 0 {
                fragment_keys.push((key, meta.index));
                continue;
            }
            // Echo entries share their VIP's row: aliases, not VIPs.
            if key.port == ECHO_PORT && matches!(key.proto, 1 | 58) {
                echo_keys.push((key, meta.index));
                continue;
            }
            let name = l4.vips.iter().find(|v| vip_key(v) == key).map_or_else(
                || format!("(adopted row {})", meta.index),
                |v| v.name.clone(),
            );
            t.free_rows.retain(|r| *r != meta.index);
            t.vips.insert(
                name,
                VipRow {
                    row: meta.index,
                    meta,
                    key,
                    halves: [Vec::new(), Vec::new()],
                },
            );
        }
        for (key, row) in fragment_keys {
            if let Some((name, _)) = t.vips.iter().find(|(_, r)| r.row == row) {
                t.fragment_aliases.insert(key, name.clone());
            }
        }
        for (key, row) in echo_keys {
            if let Some((name, _)) = t.vips.iter().find(|(_, r)| r.row == row) {
                t.echo_aliases.insert(key, name.clone());
            }
        }
        Ok(t)
    }

    /// Backend index → address, for stats and `xlb flow`.
    pub fn backend_names(&self) -> BTreeMap<u32, IpAddr> {
        self.backends.iter().map(|(a, s)| (s.index, *a)).collect()
    }

    /// VIP name → digest of its live Maglev table, as 16 hex digits.
    /// Nodes of a fleet with the same backend set show the same digest
    /// (see [`table_digest`]); a difference means some flows would land
    /// on another backend when ECMP moves them between nodes.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.digests
            .iter()
            .map(|(n, d)| (n.clone(), format!("{d:016x}")))
            .collect()
    }

    /// VIP row → name.
    pub fn vip_names(&self) -> BTreeMap<u32, String> {
        self.vips.iter().map(|(n, r)| (r.row, n.clone())).collect()
    }

    /// Whether [`L4Tables::apply`] of `l4` would succeed, without writing
    /// anything (a VIP written through the admin API is checked with this
    /// before it is stored).
    pub fn check(&self, l4: &L4Config, macs: &HashMap<IpAddr, [u8; 6]>) -> anyhow::Result<()> {
        self.plan(l4, macs).map(|_| ())
    }

    /// Step 1 of [`L4Tables::apply`]: everything that can fail without
    /// touching the maps (table builds, capacity, next hops, ports).
    fn plan(&self, l4: &L4Config, macs: &HashMap<IpAddr, [u8; 6]>) -> anyhow::Result<Plan> {
        if l4.maglev_table_size != self.m {
            bail!(
                "maglev_table_size changed from {} to {}: the maps are sized at start, restart xlb to change it",
                self.m,
                l4.maglev_table_size
            );
        }
        // 1. Plan without side effects. A VIP whose config is the one its
        // table was built from keeps that table (`unchanged`).
        let mut tables: Vec<Arc<Vec<u32>>> = Vec::with_capacity(l4.vips.len());
        let mut unchanged = Vec::with_capacity(l4.vips.len());
        for v in &l4.vips {
            match self.built.get(&v.name) {
                Some(b) if b.config == *v => {
                    tables.push(b.positions.clone());
                    unchanged.push(true);
                }
                _ => {
                    let t = predict::table(v, self.m).with_context(|| {
                        format!("building the Maglev table of VIP `{}`", v.name)
                    })?;
                    tables.push(Arc::new(t));
                    unchanged.push(false);
                }
            }
        }
        let new_vips = l4
            .vips
            .iter()
            .filter(|v| !self.vips.contains_key(&v.name))
            .count();
        let removed_vips = self
            .vips
            .keys()
            .filter(|n| !l4.vips.iter().any(|v| &v.name == *n))
            .count();
        if new_vips > self.free_rows.len() + removed_vips {
            bail!(
                "not enough VIP rows: {new_vips} new VIPs, {} free",
                self.free_rows.len()
            );
        }
        let mut wanted: Vec<IpAddr> = Vec::new();
        for v in &l4.vips {
            for b in &v.backends {
                if !wanted.contains(&b.address) {
                    wanted.push(b.address);
                }
            }
        }
        for a in &wanted {
            if !macs.contains_key(a) {
                bail!("no next-hop MAC for backend {a}");
            }
        }
        let ports = tx_ports::resolve(l4)?;
        let mut backend_tx: HashMap<IpAddr, Option<u8>> = HashMap::new();
        for v in &l4.vips {
            for b in &v.backends {
                let slot = b.interface(l4).map(|name| ports[name].0);
                backend_tx.entry(b.address).or_insert(slot);
            }
        }
        let new_backends = wanted
            .iter()
            .filter(|a| !self.backends.contains_key(a))
            .count();
        if new_backends > self.free_backends.len() {
            bail!(
                "not enough backend slots: {new_backends} new backends, {} free",
                self.free_backends.len()
            );
        }

        Ok(Plan {
            tables,
            unchanged,
            wanted,
            ports,
            backend_tx,
        })
    }

    /// Makes the maps say what `l4` says. `macs` holds the next-hop MAC of
    /// every backend address in `l4` (resolved by the caller).
    ///
    /// Everything that can fail without touching the maps (table builds,
    /// capacity) is checked first, so an error leaves the running state
    /// unchanged.
    pub fn apply<W: MapWriter>(
        &mut self,
        ebpf: &mut W,
        l4: &L4Config,
        macs: &HashMap<IpAddr, [u8; 6]>,
    ) -> anyhow::Result<ApplyReport> {
        let Plan {
            tables,
            unchanged,
            wanted,
            ports,
            backend_tx,
        } = self.plan(l4, macs)?;
        let mut report = ApplyReport::default();

        // 2. Egress ports before any backend names them, then settings,
        // then backends that are new or whose MAC or port changed.
        if ports != self.tx_ports {
            for (name, (slot, port)) in &ports {
                ebpf.tx_port(*slot as u32, port)
                    .with_context(|| format!("egress port `{name}`"))?;
            }
            self.tx_ports = ports;
        }
        ebpf.settings(settings(l4))?;
        for a in &wanted {
            let mac = macs[a];
            let tx = backend_tx.get(a).copied().flatten();
            let slot = match self.backends.get(a) {
                Some(s) if s.mac == mac && s.tx == tx => continue,
                Some(s) => BackendSlot {
                    index: s.index,
                    mac,
                    tx,
                },
                None => {
                    let index = self.free_backends.pop_front().expect("capacity checked");
                    report.backends_added.push(*a);
                    BackendSlot { index, mac, tx }
                }
            };
            let meta = BackendMeta {
                addr: wire_words(a),
                flags: BACKEND_F_ACTIVE
                    | if a.is_ipv6() { BACKEND_F_V6 } else { 0 }
                    | if tx.is_some() { BACKEND_F_REDIRECT } else { 0 },
                next_hop_mac: mac,
                tx_port: tx.unwrap_or(0),
                _pad: 0,
            };
            ebpf.backend(slot.index, meta)
                .with_context(|| format!("writing backend {a}"))?;
            self.backends.insert(*a, slot);
        }

        let mut built = HashMap::with_capacity(l4.vips.len());
        for ((v, t), same) in l4.vips.iter().zip(&tables).zip(&unchanged) {
            let digest = match (same, self.built.get(&v.name)) {
                (true, Some(b)) => b.digest,
                _ => table_digest(v, t),
            };
            built.insert(
                v.name.clone(),
                Built {
                    config: v.clone(),
                    positions: t.clone(),
                    digest,
                },
            );
        }
        self.digests = built.iter().map(|(n, b)| (n.clone(), b.digest)).collect();
        // A VIP's table in slot indices changes only with its positions
        // or when one of its backends got a new slot (never: a backend
        // keeps its slot while any VIP names it), so an unchanged VIP
        // whose halves are known is skipped below without a comparison.

        // 3. VIPs: write the idle half, then flip.
        // (key, Some(meta)) to write, (key, None) to remove.
        let mut pending_meta: Vec<(VipKey, Option<VipMeta>)> = Vec::new();
        for ((v, positions), same) in l4.vips.iter().zip(&tables).zip(&unchanged) {
            let key = vip_key(v);
            let mode = match v.mode {
                ForwardMode::Dsr => VIP_MODE_DSR,
                ForwardMode::Ipip => VIP_MODE_IPIP,
            };
            let flags = vip_flags(v, l4);
            if let (true, Some(row)) = (*same, self.vips.get(&v.name)) {
                let live = (row.meta.table & 1) as usize;
                if !row.halves[live].is_empty()
                    && row.meta.mode == mode
                    && row.meta.flags == flags
                    && row.key == key
                {
                    continue;
                }
            }
            let table: Vec<u32> = positions
                .iter()
                .map(|&p| match p {
                    NO_BACKEND => NO_BACKEND,
                    p => self.backends[&v.backends[p as usize].address].index,
                })
                .collect();
            match self.vips.get_mut(&v.name) {
                Some(row) => {
                    let live = (row.meta.table & 1) as usize;
                    let table_same = row.halves[live] == table;
                    let meta_same =
                        row.meta.mode == mode && row.meta.flags == flags && row.key == key;
                    if table_same && meta_same {
                        continue;
                    }
                    let mut meta = row.meta;
                    meta.mode = mode;
                    meta.flags = flags;
                    if !table_same {
                        let idle = 1 - live;
                        report.slots_written += write_half(
                            ebpf,
                            self.m,
                            row.row,
                            idle as u32,
                            &row.halves[idle],
                            &table,
                        )?;
                        row.halves[idle] = table;
                        meta.table = idle as u32;
                    }
                    if row.key != key {
                        pending_meta.push((row.key, None));
                        row.key = key;
                    }
                    row.meta = meta;
                    pending_meta.push((key, Some(meta)));
                    report.vips_changed.push(v.name.clone());
                }
                None => {
                    let row = self.take_row(l4)?;
                    let empty = Vec::new();
                    report.slots_written += write_half(ebpf, self.m, row, 0, &empty, &table)?;
                    let meta = VipMeta {
                        index: row,
                        table: 0,
                        mode,
                        flags,
                    };
                    self.vips.insert(
                        v.name.clone(),
                        VipRow {
                            row,
                            meta,
                            key,
                            halves: [table, Vec::new()],
                        },
                    );
                    pending_meta.push((key, Some(meta)));
                    report.vips_added.push(v.name.clone());
                }
            }
        }

        for (key, meta) in &pending_meta {
            match meta {
                Some(meta) => ebpf.vip_insert(*key, *meta)?,
                // A VIP whose address/port/protocol changed: drop the old key.
                None => ebpf.vip_remove(key),
            }
        }
        // Removed VIPs.
        let gone: Vec<String> = self
            .vips
            .keys()
            .filter(|n| !l4.vips.iter().any(|v| &v.name == *n))
            .cloned()
            .collect();
        for name in gone {
            let row = self.vips.remove(&name).expect("listed above");
            ebpf.vip_remove(&row.key);
            self.free_rows.push(row.row);
            report.vips_removed.push(name);
        }
        // Fragment aliases: the first VIP (in file order) on each address
        // and protocol answers its fragments.
        let mut aliases: HashMap<VipKey, String> = HashMap::new();
        for v in &l4.vips {
            let mut k = vip_key(v);
            k.port = 0;
            k.family |= FAMILY_FRAGMENTS;
            aliases.entry(k).or_insert_with(|| v.name.clone());
        }
        // Alias entries are written when new, moved to another VIP, or
        // when their VIP's entry changed: nothing for untouched VIPs.
        let touched: HashSet<&String> = report
            .vips_added
            .iter()
            .chain(&report.vips_changed)
            .collect();
        for (k, name) in &aliases {
            if self.fragment_aliases.get(k) == Some(name) && !touched.contains(name) {
                continue;
            }
            let meta = self.vips[name].meta;
            ebpf.vip_insert(*k, meta)?;
        }
        for k in self.fragment_aliases.keys() {
            if !aliases.contains_key(k) {
                ebpf.vip_remove(k);
            }
        }
        self.fragment_aliases = aliases;
        // Echo entries: an address answers ping when any of its VIPs says
        // so; the first such VIP (file order) counts the traffic.
        let mut echo: HashMap<VipKey, String> = HashMap::new();
        for v in l4.vips.iter().filter(|v| v.ping) {
            let mut k = vip_key(v);
            k.port = ECHO_PORT;
            k.proto = if v.address.is_ipv4() { 1 } else { 58 };
            echo.entry(k).or_insert_with(|| v.name.clone());
        }
        for (k, name) in &echo {
            if self.echo_aliases.get(k) == Some(name) && !touched.contains(name) {
                continue;
            }
            let meta = self.vips[name].meta;
            ebpf.vip_insert(*k, meta)?;
        }
        for k in self.echo_aliases.keys() {
            if !echo.contains_key(k) {
                ebpf.vip_remove(k);
            }
        }
        self.echo_aliases = echo;

        // 4. Backends no table references any more: deactivate, reuse last.
        let gone: Vec<IpAddr> = self
            .backends
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for a in gone {
            let slot = self.backends.remove(&a).expect("listed above");
            ebpf.backend(slot.index, BackendMeta::default())?;
            self.free_backends.push_back(slot.index);
            report.backends_removed.push(a);
        }
        self.built = built;
        Ok(report)
    }

    fn take_row(&mut self, l4: &L4Config) -> anyhow::Result<u32> {
        self.free_rows
            .pop()
            .with_context(|| format!("more than max_vips = {} VIPs", l4.max_vips))
    }
}

/// Writes `new` into half `half` of VIP row `row`, skipping slots that
/// already hold the same value; returns the number written.
fn write_half<W: MapWriter>(
    maglev: &mut W,
    m: u32,
    row: u32,
    half: u32,
    old: &[u32],
    new: &[u32],
) -> anyhow::Result<usize> {
    let base = (row * 2 + half) * m;
    let writes: Vec<(u32, u32)> = new
        .iter()
        .enumerate()
        .filter(|(i, v)| old.get(*i) != Some(v))
        .map(|(i, &v)| (base + i as u32, v))
        .collect();
    maglev
        .maglev(&writes)
        .with_context(|| format!("writing the Maglev table of row {row}"))?;
    Ok(writes.len())
}

#[cfg(test)]
mod adopt_tests {
    use super::*;

    fn vip(backends: &[&str]) -> VipConfig {
        let yaml = format!(
            "name: v\naddress: 10.0.0.1\nport: 80\nprotocol: tcp\nmode: dsr\nbackends: [{}]\n",
            backends
                .iter()
                .map(|b| format!("{{address: {b}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    #[test]
    fn digests_agree_on_equal_backend_sets_and_differ_otherwise() {
        let m = 251;
        let a = vip(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        let b = vip(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        let c = vip(&["10.1.0.1", "10.1.0.2"]);
        let d = |v: &VipConfig| table_digest(v, &predict::table(v, m).unwrap());
        assert_eq!(d(&a), d(&b));
        assert_ne!(d(&a), d(&c));
    }

    #[test]
    fn backend_addresses_read_back_as_written() {
        for a in ["10.1.2.3", "2001:db8::7"] {
            let a: IpAddr = a.parse().unwrap();
            let meta = BackendMeta {
                addr: wire_words(&a),
                flags: BACKEND_F_ACTIVE | if a.is_ipv6() { BACKEND_F_V6 } else { 0 },
                next_hop_mac: [0; 6],
                tx_port: 0,
                _pad: 0,
            };
            assert_eq!(backend_addr(&meta), a);
        }
    }
}

/// `apply` over a fake writer: the diff without root or a kernel.
#[cfg(test)]
mod apply_tests {
    use super::*;
    use lb_common::backend::TxPort;

    /// The maps as a fake writer keeps them, and every write in order.
    #[derive(Default)]
    struct FakeMaps {
        maglev: HashMap<u32, u32>,
        vips: HashMap<VipKey, VipMeta>,
        backends: HashMap<u32, BackendMeta>,
        settings: Option<Settings>,
        writes: usize,
    }

    impl MapWriter for FakeMaps {
        fn tx_port(&mut self, _slot: u32, _port: &TxPort) -> anyhow::Result<()> {
            self.writes += 1;
            Ok(())
        }
        fn settings(&mut self, s: Settings) -> anyhow::Result<()> {
            self.writes += 1;
            self.settings = Some(s);
            Ok(())
        }
        fn backend(&mut self, index: u32, meta: BackendMeta) -> anyhow::Result<()> {
            self.writes += 1;
            self.backends.insert(index, meta);
            Ok(())
        }
        fn maglev(&mut self, writes: &[(u32, u32)]) -> anyhow::Result<()> {
            self.writes += writes.len();
            self.maglev.extend(writes.iter().copied());
            Ok(())
        }
        fn vip_insert(&mut self, key: VipKey, meta: VipMeta) -> anyhow::Result<()> {
            self.writes += 1;
            self.vips.insert(key, meta);
            Ok(())
        }
        fn vip_remove(&mut self, key: &VipKey) {
            self.writes += 1;
            self.vips.remove(key);
        }
    }

    const M: u32 = 251;

    fn l4(backends: &[(&str, u32)], extra_vips: usize) -> L4Config {
        let bs: Vec<String> = backends
            .iter()
            .map(|(a, w)| format!("{{address: {a}, weight: {w}}}"))
            .collect();
        let mut yaml = format!(
            "maglev_table_size: {M}\nmax_vips: 2\nmax_backends: 4\nvips:\n  - {{name: web, address: 10.0.0.1, port: 80, protocol: tcp, mode: dsr, backends: [{}]}}\n",
            bs.join(", ")
        );
        for i in 0..extra_vips {
            yaml.push_str(&format!(
                "  - {{name: x{i}, address: 10.0.1.{i}, port: 80, protocol: tcp, mode: dsr, backends: [{}]}}\n",
                bs.join(", ")
            ));
        }
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn macs(l4: &L4Config) -> HashMap<IpAddr, [u8; 6]> {
        l4.vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.address, [2, 0, 0, 0, 0, 1])))
            .collect()
    }

    /// The live table of VIP `web` as backend addresses, from the fake maps.
    fn live(maps: &FakeMaps, t: &L4Tables) -> Vec<Option<IpAddr>> {
        let row = &t.vips["web"];
        let meta = maps.vips[&row.key];
        let names = t.backend_names();
        let base = (meta.index * 2 + meta.table) * M;
        (0..M)
            .map(|i| match maps.maglev[&(base + i)] {
                NO_BACKEND => None,
                b => names.get(&b).copied(),
            })
            .collect()
    }

    #[test]
    fn a_first_apply_writes_the_whole_table_and_the_vip() {
        let cfg = l4(&[("192.0.2.11", 1), ("192.0.2.12", 1)], 0);
        let mut t = L4Tables::new(&cfg);
        let mut maps = FakeMaps::default();
        let r = t.apply(&mut maps, &cfg, &macs(&cfg)).unwrap();
        assert_eq!(r.vips_added, ["web"]);
        assert_eq!(r.backends_added.len(), 2);
        assert_eq!(r.slots_written, M as usize);
        assert!(maps.settings.is_some());
        let table = live(&maps, &t);
        assert!(table.iter().all(Option::is_some));
        // The fragment alias and the echo entry count under the VIP's row.
        assert_eq!(maps.vips.len(), 3);
        assert!(maps.vips.values().all(|m| m.index == t.vips["web"].row));
    }

    #[test]
    fn a_drain_writes_only_the_changed_slots_into_the_idle_half_then_flips() {
        let cfg = l4(&[("192.0.2.11", 1), ("192.0.2.12", 1)], 0);
        let mut t = L4Tables::new(&cfg);
        let mut maps = FakeMaps::default();
        t.apply(&mut maps, &cfg, &macs(&cfg)).unwrap();
        let before = live(&maps, &t);
        let first_half = maps.vips[&t.vips["web"].key].table;

        let drained = l4(&[("192.0.2.11", 1), ("192.0.2.12", 0)], 0);
        let r = t.apply(&mut maps, &drained, &macs(&drained)).unwrap();
        assert_eq!(r.vips_changed, ["web"]);
        let meta = maps.vips[&t.vips["web"].key];
        assert_ne!(meta.table, first_half, "the VIP flips to the other half");
        let after = live(&maps, &t);
        let b12: IpAddr = "192.0.2.12".parse().unwrap();
        assert!(
            after.iter().all(|b| *b != Some(b12)),
            "a drained backend keeps no slot"
        );
        // Slots that stayed are the same backend (Maglev's minimal change).
        let kept = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert_eq!(kept, before.iter().filter(|b| **b != Some(b12)).count());
        // The drained backend stays active: its established flows go on.
        let slot = t.backends[&b12].index;
        assert_ne!(maps.backends[&slot].flags & BACKEND_F_ACTIVE, 0);
        // A second identical apply writes nothing.
        let writes = maps.writes;
        let r = t.apply(&mut maps, &drained, &macs(&drained)).unwrap();
        assert!(r.vips_changed.is_empty() && r.slots_written == 0);
        // Settings and the alias entries are rewritten each time, nothing
        // else.
        assert!(maps.writes - writes <= 3, "{} writes", maps.writes - writes);
    }

    #[test]
    fn a_change_to_one_vip_writes_that_vips_table_and_nothing_else() {
        let cfg = l4(&[("192.0.2.11", 1), ("192.0.2.12", 1)], 1);
        let mut t = L4Tables::new(&cfg);
        let mut maps = FakeMaps::default();
        t.apply(&mut maps, &cfg, &macs(&cfg)).unwrap();
        let x0 = t.vips["x0"].clone();
        let x0_meta = maps.vips[&x0.key];
        let x0_slots: Vec<Option<u32>> = (0..2 * M)
            .map(|i| maps.maglev.get(&(x0.row * 2 * M + i)).copied())
            .collect();
        let x0_digest = t.digests()["x0"].clone();
        // `web` alone drops a backend's weight to 0.
        let mut changed = cfg.clone();
        changed.vips[0].backends[1].weight = 0;
        let writes = maps.writes;
        let r = t.apply(&mut maps, &changed, &macs(&changed)).unwrap();
        assert_eq!(r.vips_changed, ["web"]);
        assert!(r.slots_written > 0 && r.slots_written <= M as usize);
        // Settings, web's entry and its two aliases, and web's slots.
        assert_eq!(maps.writes - writes, 1 + 3 + r.slots_written);
        assert_eq!(maps.vips[&x0.key], x0_meta);
        let after: Vec<Option<u32>> = (0..2 * M)
            .map(|i| maps.maglev.get(&(x0.row * 2 * M + i)).copied())
            .collect();
        assert_eq!(after, x0_slots, "x0's table was written");
        assert_eq!(t.digests()["x0"], x0_digest);
        // An unchanged VIP's table is not built again: the same allocation.
        let before = Arc::as_ptr(&t.built["x0"].positions);
        t.apply(&mut maps, &changed, &macs(&changed)).unwrap();
        assert_eq!(Arc::as_ptr(&t.built["x0"].positions), before);
    }

    #[test]
    fn a_removed_backend_is_deactivated_and_its_slot_reused_last() {
        let cfg = l4(&[("192.0.2.11", 1), ("192.0.2.12", 1)], 0);
        let mut t = L4Tables::new(&cfg);
        let mut maps = FakeMaps::default();
        t.apply(&mut maps, &cfg, &macs(&cfg)).unwrap();
        let b12: IpAddr = "192.0.2.12".parse().unwrap();
        let freed = t.backends[&b12].index;
        let gone = l4(&[("192.0.2.11", 1)], 0);
        let r = t.apply(&mut maps, &gone, &macs(&gone)).unwrap();
        assert_eq!(r.backends_removed, [b12]);
        assert_eq!(maps.backends[&freed], BackendMeta::default());
        // A new backend takes a slot never used before, not the freed one.
        let new = l4(&[("192.0.2.11", 1), ("192.0.2.13", 1)], 0);
        t.apply(&mut maps, &new, &macs(&new)).unwrap();
        assert_ne!(t.backends[&"192.0.2.13".parse().unwrap()].index, freed);
    }

    #[test]
    fn a_change_over_capacity_writes_nothing_and_keeps_the_state() {
        let cfg = l4(&[("192.0.2.11", 1)], 0);
        let mut t = L4Tables::new(&cfg);
        let mut maps = FakeMaps::default();
        t.apply(&mut maps, &cfg, &macs(&cfg)).unwrap();
        let writes = maps.writes;
        let too_many = l4(&[("192.0.2.11", 1)], 2); // 3 VIPs, max_vips 2
        let e = t.apply(&mut maps, &too_many, &macs(&too_many)).unwrap_err();
        assert!(e.to_string().contains("not enough VIP rows"), "{e}");
        assert_eq!(maps.writes, writes, "a refused change wrote to the maps");
        assert_eq!(t.vips.len(), 1);
        let also = l4(
            &[
                ("192.0.2.11", 1),
                ("192.0.2.12", 1),
                ("192.0.2.13", 1),
                ("192.0.2.14", 1),
                ("192.0.2.15", 1),
            ],
            0,
        );
        let e = t.apply(&mut maps, &also, &macs(&also)).unwrap_err();
        assert!(e.to_string().contains("not enough backend slots"), "{e}");
        assert_eq!(maps.writes, writes);
    }
}
