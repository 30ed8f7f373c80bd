//! The baseline that `cargo xtask bench l4` divides by: the least an XDP
//! forwarder can do (swap the MACs, `XDP_TX`), measured on the same veth in
//! the same run.
use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

use crate::{hdr::EthHdr, parse::ptr_at};

/// Swaps source and destination MAC and transmits the frame back.
#[inline(always)]
pub fn mac_swap_tx(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let src = (*eth).src;
        (*eth).src = (*eth).dst;
        (*eth).dst = src;
    }
    xdp_action::XDP_TX
}

/// The first bytes of the frame `xlb_bench_balancer` is timed with,
/// written by the benchmark before each case (an array lookup with a
/// constant key, which the verifier inlines).
///
/// BPF_PROG_TEST_RUN's live-frames mode recycles its pages without copying
/// the input again; it only resets the data pointers. An encapsulating
/// program overwrites the 14 bytes before the IP header (the original
/// Ethernet header) with its outer header, so from the second use of a page
/// on, the frame would start with garbage. Restoring these bytes first
/// makes every repetition process exactly the intended frame. Most cases
/// restore the Ethernet header only (the IP packet behind it is never
/// written by the balancer); the echo-reply case, which rewrites the IP and
/// ICMP headers in place, restores 64 bytes. The copy is counted against
/// xlb, not against the baseline.
#[map(name = "BENCH_HEAD")]
static BENCH_HEAD: Array<[u64; 8]> = Array::with_max_entries(1, 0);

/// How `restore_eth` prepares each repetition (`lb_common`-free: bench
/// only): `[restore 64 bytes (else 14), flows to cycle through (0: none),
/// first IPv4 source as a host-order u32, unused]`.
#[map(name = "BENCH_CTRL")]
static BENCH_CTRL: Array<[u32; 4]> = Array::with_max_entries(1, 0);

/// Per-CPU position in the cycle of sources (`BENCH_CTRL[1]`).
#[map(name = "BENCH_SEQ")]
static BENCH_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Restores the frame's head from [`BENCH_HEAD`]; with a cycle configured,
/// also gives each repetition the next IPv4 source address (a different
/// flow per packet, for the cold connection-table case; the IPv4 header
/// checksum is left stale, which the balancer never checks).
#[inline(always)]
pub fn restore_eth(ctx: &XdpContext) {
    let (Some(head), Some(ctrl)) = (BENCH_HEAD.get(0), BENCH_CTRL.get(0)) else {
        return;
    };
    if ctrl[0] != 0 {
        if let Some(p) = ptr_at::<[u64; 8]>(ctx, 0) {
            // SAFETY: bounds checked by ptr_at.
            unsafe { core::ptr::write_unaligned(p, *head) };
        }
    } else if let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) {
        // 8 + 4 + 2 bytes, little-endian words of the stored head.
        let p = eth as *mut u8;
        // SAFETY: bounds checked by ptr_at (14 bytes at p).
        unsafe {
            core::ptr::write_unaligned(p as *mut u64, head[0]);
            core::ptr::write_unaligned(p.add(8) as *mut u32, head[1] as u32);
            core::ptr::write_unaligned(p.add(12) as *mut u16, (head[1] >> 32) as u16);
        }
    }
    let n = ctrl[1];
    if n == 0 {
        return;
    }
    let Some(seq) = BENCH_SEQ.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot from a successful lookup.
    let i = unsafe {
        let i = *seq;
        *seq = if i + 1 >= n { 0 } else { i + 1 };
        i
    };
    if let Some(src) = ptr_at::<[u8; 4]>(ctx, 26) {
        // SAFETY: bounds checked by ptr_at.
        unsafe { *src = ctrl[2].wrapping_add(i).to_be_bytes() };
    }
}

/// Drops every frame: attached to the receiving end of the benchmark veth,
/// so a transmitted frame is really handed over (veth only accepts XDP
/// frames when its peer runs XDP) but costs the receiver almost nothing
/// that would inflate the baseline.
#[inline(always)]
pub fn sink(_ctx: &XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
