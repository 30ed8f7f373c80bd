//! The baseline that `cargo xtask bench l4` divides by: the least an XDP
//! forwarder can do (swap the MACs, `XDP_TX`), measured on the same veth in
//! the same run.
use aya_ebpf::{bindings::xdp_action, macros::map, maps::Array, programs::XdpContext};

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

/// The Ethernet header of the frame `xlb_bench_balancer` is timed with,
/// written by the benchmark before each case (an array lookup with a
/// constant key, which the verifier inlines).
///
/// BPF_PROG_TEST_RUN's live-frames mode recycles its pages without copying
/// the input again; it only resets the data pointers. An encapsulating
/// program overwrites the 14 bytes before the IP header (the original
/// Ethernet header) with its outer header, so from the second use of a page
/// on, the frame would start with garbage. Restoring these 14 bytes first
/// makes every repetition process exactly the intended frame (the IP packet
/// behind them is never written by the balancer). The copy is counted
/// against xlb, not against the baseline.
#[map(name = "BENCH_ETH_HEADER")]
static BENCH_ETH_HEADER: Array<[u8; 16]> = Array::with_max_entries(1, 0);

/// Restores the frame's Ethernet header from [`BENCH_ETH_HEADER`].
#[inline(always)]
pub fn restore_eth(ctx: &XdpContext) {
    let Some(head) = BENCH_ETH_HEADER.get(0) else {
        return;
    };
    if let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) {
        let mut h = [0u8; 14];
        h.copy_from_slice(&head[..14]);
        // SAFETY: bounds checked by ptr_at.
        unsafe { core::ptr::write_unaligned(eth, h) };
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
