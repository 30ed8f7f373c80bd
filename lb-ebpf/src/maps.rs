//! The maps this object declares. Names match `lb_common::maps`.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::counters::{PacketCounter, ProtoClass, PROTO_CLASSES};

/// Packets and bytes per protocol class, one slot per CPU so the hot path
/// never contends on a cache line.
#[map(name = "PROTO_COUNTERS")]
static PROTO_COUNTERS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(PROTO_CLASSES, 0);

/// Adds one frame of `len` bytes to its class's counter on this CPU.
#[inline(always)]
pub fn count(class: ProtoClass, len: u64) {
    if let Some(c) = PROTO_COUNTERS.get_ptr_mut(class as u32) {
        // SAFETY: per-CPU slot, so no other program instance writes it
        // concurrently; the pointer came from a successful map lookup.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
