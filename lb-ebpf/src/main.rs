//! xlb's eBPF programs. Entry points only; the work lives in the modules.
#![no_std]
#![no_main]

mod balancer;
mod bench;
mod csum;
mod deny;
mod encap;
mod hdr;
mod icmp;
mod maps;
mod parse;
mod reuseport;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::reasons::Reason;

/// The XDP balancer, attached to every interface named in the config.
///
/// `#[inline(always)]` here and on the other XDP entry points: aya's macro
/// wraps this function in the exported one, and without the hint LLVM keeps
/// a function this large out of line, so every packet paid a BPF-to-BPF
/// call (the JIT's frame setup and teardown) before any work (`cargo xtask
/// bench l4`, docs/bench/l4.md).
#[xdp]
#[inline(always)]
pub fn xlb_xdp(ctx: XdpContext) -> u32 {
    balancer::process(&ctx)
}

/// The backend-side decapsulation program (`xlb decap --iface IF`): strips
/// the outer header of IP-in-IP packets and passes the inner packet up, as
/// this kernel has no IPIP device.
#[xdp]
#[inline(always)]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match encap::decap(&ctx) {
        encap::Decap::Done => {
            maps::count(None, Reason::PassDecapsulated, len);
            xdp_action::XDP_PASS
        }
        encap::Decap::NotIpip => {
            maps::count(None, Reason::PassNotVip, len);
            xdp_action::XDP_PASS
        }
        encap::Decap::Broken => {
            maps::count(None, Reason::DropEncapFailed, len);
            xdp_action::XDP_DROP
        }
    }
}

/// L7 worker steering, attached to each L7 listener's `SO_REUSEPORT`
/// group: picks the worker socket for every new connection.
#[aya_ebpf::macros::sk_reuseport]
pub fn xlb_reuseport(ctx: aya_ebpf::programs::SkReuseportContext) -> u32 {
    reuseport::select(&ctx)
}

/// Benchmark baseline only (never attached by xlb): MAC swap + `XDP_TX`.
#[xdp]
pub fn xlb_bench_swap(ctx: XdpContext) -> u32 {
    bench::mac_swap_tx(&ctx)
}

/// Benchmark only (never attached by xlb): drops everything.
#[xdp]
pub fn xlb_bench_sink(ctx: XdpContext) -> u32 {
    bench::sink(&ctx)
}

/// Benchmark only (never attached by xlb): the balancer, after restoring
/// the timed frame's Ethernet header (see `bench::restore_eth`).
#[xdp]
#[inline(always)]
pub fn xlb_bench_balancer(ctx: XdpContext) -> u32 {
    bench::restore_eth(&ctx);
    balancer::process(&ctx)
}

/// Benchmark only (never attached by xlb): the baseline for program-only
/// timing, [`xlb_bench_swap`] plus the same head undo (one
/// `bpf_xdp_adjust_head`, here by 0) that [`xlb_bench_balancer_undo`] and
/// Katran's `katran_bench_undo` pay, so the undo's cost can be measured
/// and taken out of both sides.
#[xdp]
#[inline(always)]
pub fn xlb_bench_swap_undo(ctx: XdpContext) -> u32 {
    let len = bench::frame_len(&ctx);
    let v = bench::mac_swap_tx(&ctx);
    bench::undo_growth(&ctx, len);
    v
}

/// Benchmark only (never attached by xlb): [`xlb_bench_balancer`] for
/// program-only timing (kernels that refuse live frames), which also gives
/// back the head room an encapsulation took (see `bench::undo_growth`), so
/// that each repetition processes the intended frame. A separate program
/// so that the live-frames path stays exactly as it was.
#[xdp]
#[inline(always)]
pub fn xlb_bench_balancer_undo(ctx: XdpContext) -> u32 {
    bench::restore_eth(&ctx);
    let len = bench::frame_len(&ctx);
    let v = balancer::process(&ctx);
    bench::undo_growth(&ctx, len);
    v
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists only
    // because `no_std` binaries must name a panic handler.
    loop {}
}

/// Tells the kernel which license the helpers are used under: several
/// helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
