//! The maps this object declares. Names match `lb_common::maps`; sizes are
//! defaults the loader may override.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::{
    backend::{BackendMeta, TxPort, MAX_TX_PORTS},
    conntrack::{ConnValue, FlowKeyV4, FragKey, FragValue},
    consts::{CONNTRACK_SIZE, DEFAULT_MAGLEV_SIZE, FRAGMENTS_SIZE, MAX_BACKENDS, MAX_VIPS},
    counters::{GlobalCounters, PacketCounter, ProtoClass},
    deny::{DenyValue, DENY_MAX_ENTRIES},
    flow::FlowKey,
    reasons::Reason,
    settings::{FloodBudget, Settings},
    vip::{VipKey, VipMeta},
};

/// `BPF_F_NO_PREALLOC`: updates allocate a new element and free the old one
/// after an RCU grace period, so a reader never sees a half-replaced
/// `VipMeta` (a preallocated map recycles the old element at once).
const BPF_F_NO_PREALLOC: u32 = 1;

/// Packets and bytes per protocol class and per outcome, one value per
/// CPU so the hot path never contends on a cache line.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

/// Per-VIP-row traffic.
#[map(name = "VIP_STATS")]
static VIP_STATS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Per-backend traffic.
#[map(name = "BACKEND_STATS")]
static BACKEND_STATS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per VIP row: packets of TCP flows that missed the connection table
/// without being a SYN (see `lb_common::maps::MIDFLOW_MISSES`).
#[map(name = "MIDFLOW_MISSES")]
static MIDFLOW_MISSES: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// L4 VIPs.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> =
    HashMap::with_max_entries(MAX_VIPS * 3, BPF_F_NO_PREALLOC);

/// Maglev tables: two halves per VIP row, `M` slots each.
#[map(name = "MAGLEV")]
pub static MAGLEV: Array<u32> = Array::with_max_entries(MAX_VIPS * 2 * DEFAULT_MAGLEV_SIZE, 0);

/// Backends by index.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<BackendMeta> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Established IPv4 flows → backend (16-byte key: see
/// `lb_common::conntrack`).
#[map(name = "CONNTRACK_V4")]
pub static CONNTRACK_V4: LruHashMap<FlowKeyV4, ConnValue> =
    LruHashMap::with_max_entries(CONNTRACK_SIZE, 0);

/// Established IPv6 flows → backend.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, ConnValue> =
    LruHashMap::with_max_entries(CONNTRACK_SIZE, 0);

/// Fragmented datagrams → where their first fragment went.
#[map(name = "FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(FRAGMENTS_SIZE, 0);

/// Egress interfaces other than the receiving one: their MACs.
#[map(name = "TX_PORTS")]
pub static TX_PORTS: Array<TxPort> = Array::with_max_entries(MAX_TX_PORTS, 0);

/// The same slots as `TX_PORTS`, as the device map `bpf_redirect_map`
/// needs.
#[map(name = "TX_DEVMAP")]
pub static TX_DEVMAP: DevMap = DevMap::with_max_entries(MAX_TX_PORTS, 0);

/// Instance settings (one entry).
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// New-flow budget window per CPU.
#[map(name = "FLOOD_GUARD")]
pub static FLOOD_GUARD: PerCpuArray<FloodBudget> = PerCpuArray::with_max_entries(1, 0);

/// Denied IPv4 source prefixes (`lb_common::deny`). LPM tries are always
/// `BPF_F_NO_PREALLOC` (aya-ebpf adds the flag).
#[map(name = "DENY_V4")]
pub static DENY_V4: LpmTrie<u32, DenyValue> = LpmTrie::with_max_entries(DENY_MAX_ENTRIES, 0);

/// Denied IPv6 source prefixes.
#[map(name = "DENY_V6")]
pub static DENY_V6: LpmTrie<[u32; 4], DenyValue> = LpmTrie::with_max_entries(DENY_MAX_ENTRIES, 0);

/// Which deny trie holds entries (`DENY_*_PRESENT` bits), so an empty deny
/// list costs no trie lookup.
#[map(name = "DENY_STATE")]
pub static DENY_STATE: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn bump(map: &PerCpuArray<PacketCounter>, index: u32, len: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other program instance writes it
        // concurrently; the pointer came from a successful lookup.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Counts one frame of `len` bytes in its protocol class and, if given,
/// under its outcome: one map lookup for both.
#[inline(always)]
pub fn count(class: Option<ProtoClass>, reason: Reason, len: u64) {
    let Some(c) = COUNTERS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU value: no other program instance writes it
    // concurrently; the pointer came from a successful lookup. The indices
    // are enum discriminants, in bounds by construction (checked again so
    // the verifier sees it).
    unsafe {
        if let Some(k) = class {
            if let Some(e) = (*c).classes.get_mut(k as usize) {
                e.packets += 1;
                e.bytes += len;
            }
        }
        if let Some(e) = (*c).reasons.get_mut(reason as usize) {
            e.packets += 1;
            e.bytes += len;
        }
    }
}

/// Counts one frame for a VIP row.
#[inline(always)]
pub fn count_vip(index: u32, len: u64) {
    bump(&VIP_STATS, index, len);
}

/// Counts one mid-flow TCP packet that missed the connection table.
#[inline(always)]
pub fn count_midflow_miss(index: u32, len: u64) {
    bump(&MIDFLOW_MISSES, index, len);
}

/// Counts one frame for a backend.
#[inline(always)]
pub fn count_backend(index: u32, len: u64) {
    bump(&BACKEND_STATS, index, len);
}

// L7 worker steering (the `sk_reuseport` program in `reuseport.rs`). Sized
// by `lb_common::reuseport::MAX_WORKERS`; indexed by worker id.

/// Worker id → that worker's listening socket in the `SO_REUSEPORT` group.
#[map(name = "REUSEPORT_SOCKARRAY")]
pub static REUSEPORT_SOCKARRAY: aya_ebpf::maps::ReusePortSockArray =
    aya_ebpf::maps::ReusePortSockArray::with_max_entries(lb_common::reuseport::MAX_WORKERS, 0);

/// Per worker: `WORKER_ACTIVE` or `WORKER_DRAINING` (written by the daemon).
#[map(name = "WORKER_STATE")]
pub static WORKER_STATE: Array<u32> = Array::with_max_entries(lb_common::reuseport::MAX_WORKERS, 0);

/// The active workers, one value replaced whole (`BPF_F_NO_PREALLOC`, so a
/// replacement is an RCU swap, as for `VIPS`).
#[map(name = "ACTIVE_WORKERS")]
pub static ACTIVE_WORKERS: HashMap<u32, lb_common::reuseport::ActiveWorkers> =
    HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// Connections steered to each worker.
#[map(name = "WORKER_ACCEPTS")]
pub static WORKER_ACCEPTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(lb_common::reuseport::MAX_WORKERS, 0);

/// Connections left to the kernel's reuseport hash, per `Fallback` reason.
#[map(name = "REUSEPORT_FALLBACKS")]
pub static REUSEPORT_FALLBACKS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(lb_common::reuseport::FALLBACK_REASONS, 0);

/// Adds one to a per-CPU `u64` counter.
#[inline(always)]
pub fn bump_u64(map: &PerCpuArray<u64>, index: u32) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other program instance writes it
        // concurrently; the pointer came from a successful lookup.
        unsafe { *c += 1 };
    }
}
