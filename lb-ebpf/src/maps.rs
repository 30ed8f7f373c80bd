//! The maps this object declares. Names match `lb_common::maps`; sizes are
//! defaults the loader may override.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    backend::BackendMeta,
    conntrack::ConnValue,
    consts::{CONNTRACK_SIZE, DEFAULT_MAGLEV_SIZE, MAX_BACKENDS, MAX_VIPS},
    counters::{PacketCounter, ProtoClass, PROTO_CLASSES},
    flow::FlowKey,
    reasons::{Reason, REASONS as REASON_COUNT},
    settings::{FloodWindow, Settings},
    vip::{VipKey, VipMeta},
};

/// `BPF_F_NO_PREALLOC`: updates allocate a new element and free the old one
/// after an RCU grace period, so a reader never sees a half-replaced
/// `VipMeta` (a preallocated map recycles the old element at once).
const BPF_F_NO_PREALLOC: u32 = 1;

/// Packets and bytes per protocol class, one slot per CPU so the hot path
/// never contends on a cache line.
#[map(name = "PROTO_COUNTERS")]
static PROTO_COUNTERS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(PROTO_CLASSES, 0);

/// Packets and bytes per outcome (`Reason`).
#[map(name = "REASONS")]
static REASONS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Per-VIP-row traffic.
#[map(name = "VIP_STATS")]
static VIP_STATS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// Per-backend traffic.
#[map(name = "BACKEND_STATS")]
static BACKEND_STATS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// L4 VIPs.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> =
    HashMap::with_max_entries(MAX_VIPS * 2, BPF_F_NO_PREALLOC);

/// Maglev tables: two halves per VIP row, `M` slots each.
#[map(name = "MAGLEV")]
pub static MAGLEV: Array<u32> = Array::with_max_entries(MAX_VIPS * 2 * DEFAULT_MAGLEV_SIZE, 0);

/// Backends by index.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<BackendMeta> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Established flows → backend.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, ConnValue> =
    LruHashMap::with_max_entries(CONNTRACK_SIZE, 0);

/// Instance settings (one entry).
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// New-flow budget window per CPU.
#[map(name = "FLOOD_GUARD")]
pub static FLOOD_GUARD: PerCpuArray<FloodWindow> = PerCpuArray::with_max_entries(1, 0);

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

/// Counts one frame of `len` bytes in its protocol class.
#[inline(always)]
pub fn count_class(class: ProtoClass, len: u64) {
    bump(&PROTO_COUNTERS, class as u32, len);
}

/// Counts one frame of `len` bytes under its outcome.
#[inline(always)]
pub fn count_reason(reason: Reason, len: u64) {
    bump(&REASONS, reason as u32, len);
}

/// Counts one frame for a VIP row.
#[inline(always)]
pub fn count_vip(index: u32, len: u64) {
    bump(&VIP_STATS, index, len);
}

/// Counts one frame for a backend.
#[inline(always)]
pub fn count_backend(index: u32, len: u64) {
    bump(&BACKEND_STATS, index, len);
}
