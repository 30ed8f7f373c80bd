//! The peer `cargo xtask bench l4` measures xlb against: Katran's XDP
//! balancer (third_party/katran, GPL-2.0, used only by this bench), compiled
//! with clang at bench time, loaded with aya and configured through its own
//! maps for the same VIPs, backends, Maglev tables and connection-table
//! entries as xlb's cases, so both programs see the same frames in the same
//! trial loop.
//!
//! Katran's source cannot be fetched here at bench time (the machines that
//! run the bench have no route to its repository), so the BPF sources are
//! vendored, unmodified, with Katran's license; `xlb_bench.c` beside them is
//! the only xlb-written C (the entry point that restores the frame head,
//! as xlb's timed program does).
//!
//! Katran's layout (from its balancer_maps.h / balancer_structs.h):
//! `vip_map` (hash: address, port, protocol → flags, VIP number),
//! `ch_rings` (array: VIP number × ring size + hash % ring size → real
//! number; 0 is "no real"), `reals` (array: real number → address, flags),
//! `lru_mapping` (array of per-CPU LRU hash maps: flow → real number),
//! `ctl_array` (index 0: the next hop's MAC), `stats` (per-CPU counters,
//! among them the new-connection rate limit's state).
use std::{net::IpAddr, process::Command};

use anyhow::Context as _;
use aya::{
    maps::{
        of_maps::ArrayOfMaps, Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues,
    },
    programs::Xdp,
    Ebpf, EbpfLoader, Pod,
};

/// The entry point in `xlb_bench.c`.
pub const PROGRAM: &str = "katran_bench";
/// The entry point for program-only timing: [`PROGRAM`] plus the head
/// undo (one `bpf_xdp_adjust_head`), as xlb's `xlb_bench_balancer_undo`.
pub const PROGRAM_UNDO: &str = "katran_bench_undo";
/// `stats` index of the encapsulation-failure counter (MAX_VIPS +
/// ENCAP_FAIL_CNTR; failures count in its second word).
const ENCAP_FAIL_KEY: u32 = MAX_VIPS + 7;
/// VIPs the Katran object is compiled for. Its `stats` map holds
/// 2 × MAX_VIPS counters and uses index MAX_VIPS + 21, so at least 22.
const MAX_VIPS: u32 = 32;
/// Katran's ring size (its default, the same prime as xlb's Maglev table).
pub const RING_SIZE: u32 = 65537;
/// Katran's per-CPU connection tables hold DEFAULT_LRU_SIZE entries (its
/// compiled-in default, 1000): map-in-map inner maps must match the
/// template's size, and only a handful of flows are measured.
const LRU_SIZE: u32 = 1000;
/// `stats` index of the new-connection rate limit (MAX_VIPS +
/// NEW_CONN_RATE_CNTR).
const NEW_CONN_RATE_KEY: u32 = MAX_VIPS + 2;
/// Katran's `F_IPV6` real flag.
const F_IPV6: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct VipDefinition {
    addr: [u32; 4],
    port: u16,
    proto: u8,
    _pad: u8,
}
// SAFETY: plain C struct, padding zeroed.
unsafe impl Pod for VipDefinition {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct VipMeta {
    flags: u32,
    vip_num: u32,
}
// SAFETY: plain C struct.
unsafe impl Pod for VipMeta {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RealDefinition {
    addr: [u32; 4],
    flags: u8,
    _pad: [u8; 3],
}
// SAFETY: plain C struct, padding zeroed.
unsafe impl Pod for RealDefinition {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlowKey {
    src: [u32; 4],
    dst: [u32; 4],
    /// Source then destination port, network order each.
    ports: [u16; 2],
    proto: u8,
    _pad: [u8; 3],
}
// SAFETY: plain C struct, padding zeroed (Katran zero-initialises its key).
unsafe impl Pod for FlowKey {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RealPosLru {
    pos: u32,
    _pad: u32,
    atime: u64,
}
// SAFETY: plain C struct.
unsafe impl Pod for RealPosLru {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LbStats {
    v1: u64,
    v2: u64,
}
// SAFETY: plain C struct.
unsafe impl Pod for LbStats {}

/// One VIP as Katran is given it.
pub struct Vip {
    pub addr: IpAddr,
    pub port: u16,
    /// Katran's VIP number (xlb's VIP row, so the rings line up).
    pub num: u32,
    /// Maglev table, entries are indices into the backend list.
    pub table: Vec<u32>,
    /// The primed flow: client address, source port, backend index.
    pub hit: (IpAddr, u16, u32),
}

pub struct Katran {
    ebpf: Ebpf,
    /// The per-CPU connection tables `lru_mapping` points at.
    _lru: Vec<BpfHashMap<MapData, FlowKey, RealPosLru>>,
}

fn words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(v) => [u32::from_ne_bytes(v.octets()), 0, 0, 0],
        IpAddr::V6(v) => {
            let o = v.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            w
        }
    }
}

/// Compiles `third_party/katran/xlb_bench.c` with clang (BPF target) and
/// returns the object's bytes.
fn compile() -> anyhow::Result<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../third_party/katran");
    let out = std::env::temp_dir().join(format!("xlb-bench-katran-{}.o", std::process::id()));
    // Katran's headers include <linux/*.h> and <string.h>; on a Debian host
    // the asm headers live under the multiarch directory, and glibc's
    // headers pick their word size from __x86_64__.
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wno-everything"])
        .arg(format!("-I{}", root.display()))
        .arg(format!("-I{multiarch}"))
        .arg(format!("-D__{}__", std::env::consts::ARCH))
        .arg(format!("-DMAX_VIPS={MAX_VIPS}"))
        .arg("-c")
        .arg(root.join("xlb_bench.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .context("running clang (cargo xtask bench installs it)")?;
    anyhow::ensure!(
        status.success(),
        "clang failed to compile Katran's balancer"
    );
    let bytes = std::fs::read(&out)?;
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

impl Katran {
    /// Compiles, loads and configures Katran for `vips` over `backends`
    /// (real number i + 1 is backend i: Katran reserves real 0), with
    /// `gateway` as the next hop's MAC, and its new-connection limit held
    /// exceeded (no insert on a new flow, like xlb's zero budget).
    pub fn load(backends: &[IpAddr], vips: &[Vip], gateway: [u8; 6]) -> anyhow::Result<Self> {
        let object = compile()?;
        let mut ebpf = EbpfLoader::new()
            // QUIC server-id routing is unused; its array would take 64 MiB.
            .map_max_entries("server_id_map", 1)
            .load(&object)
            .context("loading Katran's balancer")?;
        for name in [PROGRAM, PROGRAM_UNDO] {
            let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
            p.load().context("verifying Katran's balancer")?;
        }

        let mut ctl: Array<&mut MapData, u64> =
            Array::try_from(ebpf.map_mut("ctl_array").context("ctl_array")?)?;
        let mut mac = [0u8; 8];
        mac[..6].copy_from_slice(&gateway);
        ctl.set(0, u64::from_ne_bytes(mac), 0)?;

        let mut reals: Array<&mut MapData, RealDefinition> =
            Array::try_from(ebpf.map_mut("reals").context("reals")?)?;
        for (i, b) in backends.iter().enumerate() {
            reals.set(
                i as u32 + 1,
                RealDefinition {
                    addr: words(*b),
                    flags: if b.is_ipv6() { F_IPV6 } else { 0 },
                    _pad: [0; 3],
                },
                0,
            )?;
        }
        let mut rings: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut("ch_rings").context("ch_rings")?)?;
        for v in vips {
            anyhow::ensure!(v.table.len() == RING_SIZE as usize, "ring size");
            for (j, b) in v.table.iter().enumerate() {
                rings.set(v.num * RING_SIZE + j as u32, b + 1, 0)?;
            }
        }
        let mut vipmap: BpfHashMap<&mut MapData, VipDefinition, VipMeta> =
            BpfHashMap::try_from(ebpf.map_mut("vip_map").context("vip_map")?)?;
        for v in vips {
            vipmap.insert(
                VipDefinition {
                    addr: words(v.addr),
                    port: v.port.to_be(),
                    proto: 6,
                    _pad: 0,
                },
                VipMeta {
                    flags: 0,
                    vip_num: v.num,
                },
                0,
            )?;
        }
        // The rate limit: its window starts at time 0, which is also what
        // the bench build's clock reads, with far more new connections
        // already counted than allowed.
        let cpus = aya::util::nr_cpus().map_err(|(s, e)| anyhow::anyhow!("{s}: {e}"))?;
        let mut stats: PerCpuArray<&mut MapData, LbStats> =
            PerCpuArray::try_from(ebpf.map_mut("stats").context("stats")?)?;
        stats.set(
            NEW_CONN_RATE_KEY,
            PerCpuValues::try_from(vec![
                LbStats {
                    v1: u64::MAX / 2,
                    v2: 0
                };
                cpus
            ])?,
            0,
        )?;

        // One connection table per CPU, each primed with the hit flows.
        let mut lru = Vec::new();
        for _ in 0..cpus {
            let def = aya_obj::Map::new_from_params(
                aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
                size_of::<FlowKey>() as u32,
                size_of::<RealPosLru>() as u32,
                LRU_SIZE,
                0,
            );
            let data = MapData::create(def, "katran_lru", None)?;
            let mut m: BpfHashMap<MapData, FlowKey, RealPosLru> =
                BpfHashMap::try_from(Map::LruHashMap(data))?;
            for v in vips {
                let (client, sport, backend) = v.hit;
                m.insert(
                    FlowKey {
                        src: words(client),
                        dst: words(v.addr),
                        ports: [sport.to_be(), v.port.to_be()],
                        proto: 6,
                        _pad: [0; 3],
                    },
                    RealPosLru {
                        pos: backend + 1,
                        _pad: 0,
                        atime: 0,
                    },
                    0,
                )?;
            }
            lru.push(m);
        }
        let mut outer: ArrayOfMaps<&mut MapData, BpfHashMap<MapData, FlowKey, RealPosLru>> =
            ArrayOfMaps::try_from(ebpf.map_mut("lru_mapping").context("lru_mapping")?)?;
        for (cpu, m) in lru.iter().enumerate() {
            outer.set(cpu as u32, m, 0)?;
        }
        Ok(Self { ebpf, _lru: lru })
    }

    /// The frame head `katran_bench` restores before each repetition.
    pub fn set_head(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let mut b = [0u8; 16];
        b[..14].copy_from_slice(&frame[..14]);
        let w = [
            u64::from_le_bytes(b[..8].try_into()?),
            u64::from_le_bytes(b[8..].try_into()?),
        ];
        let mut head: Array<&mut MapData, [u64; 2]> = Array::try_from(
            self.ebpf
                .map_mut("xlb_bench_head")
                .context("xlb_bench_head")?,
        )?;
        head.set(0, w, 0)?;
        Ok(())
    }

    /// Katran's own count of packets forwarded for VIP number `vip` and of
    /// encapsulation failures, summed over CPUs: how the bench checks that
    /// every program-only repetition was forwarded.
    pub fn counters(&self, vip: u32) -> anyhow::Result<(u64, u64)> {
        let stats: PerCpuArray<&MapData, LbStats> =
            PerCpuArray::try_from(self.ebpf.map("stats").context("stats")?)?;
        let sum = |i, f: fn(&LbStats) -> u64| -> anyhow::Result<u64> {
            Ok(stats.get(&i, 0)?.iter().map(f).sum())
        };
        Ok((sum(vip, |s| s.v1)?, sum(ENCAP_FAIL_KEY, |s| s.v2)?))
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}
