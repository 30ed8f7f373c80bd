//! L7 worker steering: the `sk_reuseport` program that picks which worker's
//! listening socket gets each new connection of an `SO_REUSEPORT` group.
//!
//! The kernel runs it for every TCP segment that finds no established,
//! SYN-received or TIME_WAIT socket and so reaches the listener lookup: a
//! SYN, a SYN-cookie's ACK, and stray segments of connections already gone
//! (a late FIN, answered with a reset: 1 to 6 per 1 000 connections in the
//! loopback test, where both ends close at once). The kernel uses the
//! socket the program selects instead of its own hash. Returning `SK_PASS`
//! without selecting lets the kernel pick by its own hash (kernel
//! `reuseport_select_sock()`: "no bpf or invalid bpf result: fall back to
//! hash usage"), which is how every problem here degrades: the connection
//! is still served, just not steered.
use aya_ebpf::{bindings::sk_action, programs::SkReuseportContext};
use lb_common::reuseport::{Fallback, ACTIVE_WORKERS_KEY, WORKER_ACTIVE};

use crate::{
    hdr::IPPROTO_TCP,
    maps::{
        bump_u64, ACTIVE_WORKERS, REUSEPORT_FALLBACKS, REUSEPORT_SOCKARRAY, WORKER_ACCEPTS,
        WORKER_STATE,
    },
};

/// Offset of the flags byte in the TCP header (RFC 9293 §3.1).
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// Whether the segment opens a connection (SYN without ACK), or is not
/// TCP (a UDP group: every datagram is a selection). The program's `data`
/// starts at the transport header (kernel `bpf_init_reuseport_kern`).
#[inline(always)]
fn opens_connection(ctx: &SkReuseportContext) -> bool {
    if ctx.ip_protocol() != u32::from(IPPROTO_TCP) {
        return true;
    }
    let flags = ctx.data() + TCP_FLAGS_OFFSET;
    if flags + 1 > ctx.data_end() {
        return false;
    }
    // SAFETY: bounds-checked against data_end just above.
    let flags = unsafe { *(flags as *const u8) };
    flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
}

#[inline(always)]
fn fallback(ctx: &SkReuseportContext, reason: Fallback) -> u32 {
    // Counted per connection, like the selections.
    if opens_connection(ctx) {
        bump_u64(&REUSEPORT_FALLBACKS, reason as u32);
    }
    sk_action::SK_PASS
}

/// Selects the worker socket for one new connection; always `SK_PASS`.
#[inline(always)]
pub fn select(ctx: &SkReuseportContext) -> u32 {
    // The kernel's hash of the 4-tuple (`inet_ehashfn`/`inet6_ehashfn`:
    // jhash keyed with a per-boot secret), already computed for its own
    // fallback. Per-connection deterministic, so a retransmitted SYN or a
    // SYN-cookie ACK lands on the same worker as the first SYN, and keyed,
    // so clients cannot aim their connections at one worker; evenly spread
    // over all 32 bits, which `ActiveWorkers::pick` relies on.
    let hash = ctx.hash();
    // SAFETY: a `BPF_F_NO_PREALLOC` hash map: the element the pointer
    // refers to stays valid (RCU) until the program returns, even if the
    // daemon replaces it meanwhile; we only read it.
    let Some(list) = (unsafe { ACTIVE_WORKERS.get(ACTIVE_WORKERS_KEY) }) else {
        return fallback(ctx, Fallback::NoActiveWorker);
    };
    let Some(worker) = list.pick(hash) else {
        return fallback(ctx, Fallback::NoActiveWorker);
    };
    // The daemon removes a worker from the list before flagging it
    // draining, so this only trips when the flag was written behind its
    // back; then the kernel's hash is the best we can do without a loop.
    if WORKER_STATE.get(worker).copied() != Some(WORKER_ACTIVE) {
        return fallback(ctx, Fallback::StaleList);
    }
    if REUSEPORT_SOCKARRAY.select_reuseport(ctx, worker).is_err() {
        return fallback(ctx, Fallback::SelectFailed);
    }
    // Every segment is steered (a SYN-cookie ACK then creates its
    // connection on the worker its SYN was counted for), but only
    // connection openings are counted, so that the counters match what the
    // workers accept rather than what stray segments hit.
    if opens_connection(ctx) {
        bump_u64(&WORKER_ACCEPTS, worker);
    }
    sk_action::SK_PASS
}
