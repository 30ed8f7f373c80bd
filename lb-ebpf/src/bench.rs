//! The baseline that `cargo xtask bench l4` divides by: the least an XDP
//! forwarder can do (swap the MACs, `XDP_TX`), measured on the same veth in
//! the same run.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
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

/// What `xlb_bench_balancer` (and `xlb_bench_balancer_undo`) restores
/// before each repetition, written by
/// the benchmark before each case: words 0..8 the first 64 bytes of the
/// frame, word 8 `restore 64 bytes (else 14) | flows to cycle through
/// (0: none) << 32`, word 9 the first IPv4 source as a host-order u32.
/// One value, so the timed program does one (inlined) array lookup before
/// the balancer, as Katran's bench entry point does (`third_party/katran/
/// xlb_bench.c`): the harness costs both sides the same.
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
static BENCH_HEAD: Array<[u64; 10]> = Array::with_max_entries(1, 0);

/// Per-CPU position in the cycle of sources (`BENCH_HEAD` word 8).
#[map(name = "BENCH_SEQ")]
static BENCH_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Restores the frame's head from [`BENCH_HEAD`]; with a cycle configured,
/// also gives each repetition the next IPv4 source address (a different
/// flow per packet, for the cold connection-table case; the IPv4 header
/// checksum is left stale, which the balancer never checks).
#[inline(always)]
pub fn restore_eth(ctx: &XdpContext) {
    let Some(head) = BENCH_HEAD.get(0) else {
        return;
    };
    let ctrl = head[8];
    if ctrl as u32 != 0 {
        if let Some(p) = ptr_at::<[u64; 8]>(ctx, 0) {
            // SAFETY: bounds checked by ptr_at; head holds 10 words.
            unsafe {
                core::ptr::write_unaligned(p, core::ptr::read(head.as_ptr() as *const [u64; 8]))
            };
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
    let n = (ctrl >> 32) as u32;
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
        unsafe { *src = (head[9] as u32).wrapping_add(i).to_be_bytes() };
    }
}

/// The frame's length (`data_end - data`), read by the program-only entry
/// points on entry so that [`undo_growth`] knows what to give back.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Program-only timing (BPF_PROG_TEST_RUN without live frames) runs every
/// repetition on the previous one's buffer, data pointers included: an
/// encapsulation's `bpf_xdp_adjust_head(-20 or -40)` would move the frame
/// further into the headroom each time. This gives back what the balancer
/// took (`len_before` from [`frame_len`] on entry), so the next repetition
/// starts where the first did; [`restore_eth`] then rewrites the 14 bytes
/// the outer header's tail left over the old Ethernet header (the outer
/// IPv4/IPv6 header ends exactly where the inner IP header begins, so
/// nothing behind those 14 bytes changes). Called unconditionally (with 0
/// when nothing grew) so that every case, the bare `swap_undo` baseline
/// included, pays the same one helper call.
#[inline(always)]
pub fn undo_growth(ctx: &XdpContext, len_before: usize) {
    // Both lengths through black_box: otherwise LLVM folds the two
    // differences into pointer arithmetic with an unbounded offset, which
    // the verifier rejects.
    let len_before = core::hint::black_box(len_before);
    let grown = core::hint::black_box(frame_len(ctx)) as i32 - len_before as i32;
    // SAFETY: moves ctx->data only; nothing reads the packet afterwards.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, grown) };
}

/// Drops every frame: attached to the receiving end of the benchmark veth,
/// so a transmitted frame is really handed over (veth only accepts XDP
/// frames when its peer runs XDP) but costs the receiver almost nothing
/// that would inflate the baseline.
#[inline(always)]
pub fn sink(_ctx: &XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
