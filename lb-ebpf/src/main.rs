//! xlb's eBPF programs. Entry points only; the work lives in the modules.
#![no_std]
#![no_main]

mod hdr;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The XDP program attached to every interface named in the config.
///
/// Today it classifies and counts every frame and passes it to the stack.
#[xdp]
pub fn xlb_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let class = parse::classify(&ctx);
    maps::count(class, len);
    xdp_action::XDP_PASS
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
