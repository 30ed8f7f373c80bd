//! ICMP for the balancer: finding the flow an ICMP error is about (so it
//! reaches the backend that owns that flow), answering "fragmentation
//! needed" (RFC 792) / "packet too big" (RFC 4443 §3.2) when encapsulation
//! would push a packet over the path MTU to the backends, and answering
//! echo requests to VIPs (RFC 792, RFC 4443 §4).
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::flow::FlowKey;

use crate::{
    csum, encap,
    hdr::*,
    parse::{ptr_at, words, Pkt},
};

const ICMP_HDR: usize = core::mem::size_of::<IcmpHdr>();
const V4_HDR: usize = core::mem::size_of::<Ipv4Hdr>();
const V6_HDR: usize = core::mem::size_of::<Ipv6Hdr>();

/// Bytes of the offending datagram quoted beyond its IP header (RFC 792:
/// "the first 64 bits of the original datagram's data").
const QUOTED_L4: usize = 8;

/// What an ICMP message says about a flow.
pub enum Quoted {
    /// Not an error message (echo, neighbour discovery, ...).
    NotAnError,
    /// An error, but its quote names no TCP/UDP flow from this address.
    Unusable,
    /// An error about this flow (client → VIP direction).
    Flow(FlowKey),
}

/// For an ICMP error about a TCP/UDP packet, the flow of the packet it
/// quotes, turned around: the quoted packet went from the VIP (sent by a
/// backend) to the client, so the flow is client → VIP, the direction the
/// connection table and the Maglev table know. The error must be addressed
/// to the quoted packet's source, as RFC 792 / RFC 4443 errors are.
#[inline(always)]
pub fn quoted_flow(ctx: &XdpContext, pkt: &Pkt) -> Quoted {
    if pkt.fragment {
        return Quoted::NotAnError;
    }
    // The ICMP header and the quote are the datagram's bytes, never the
    // padding after it.
    let ip_end = pkt.l3_off + pkt.ip_len as usize;
    if pkt.l4_off + ICMP_HDR > ip_end {
        return Quoted::NotAnError;
    }
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, pkt.l4_off) else {
        return Quoted::NotAnError;
    };
    // SAFETY (all dereferences here): pointers come from ptr_at.
    let kind = unsafe { (*icmp).kind };
    let is_error = if pkt.v6 {
        kind == ICMPV6_DEST_UNREACH || kind == ICMPV6_PKT_TOOBIG || kind == ICMPV6_TIME_EXCEED
    } else {
        kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED
    };
    if !is_error {
        return Quoted::NotAnError;
    }
    match quoted_error_flow(ctx, pkt, ip_end) {
        Some(f) => Quoted::Flow(f),
        None => Quoted::Unusable,
    }
}

#[inline(always)]
fn quoted_error_flow(ctx: &XdpContext, pkt: &Pkt, ip_end: usize) -> Option<FlowKey> {
    let inner = pkt.l4_off + ICMP_HDR;
    if !pkt.v6 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, inner)?;
        let ip = unsafe { &*ip };
        let ihl = (ip.version_ihl & 0x0f) as usize;
        if ip.version_ihl >> 4 != 4 || ihl < 5 {
            return None;
        }
        if ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP {
            return None;
        }
        // Only a first fragment (offset 0) quotes the ports.
        if u16::from_be_bytes(ip.frag_off) & 0x1fff != 0 {
            return None;
        }
        if u32::from_ne_bytes(ip.src) != pkt.key.dst[0] {
            return None;
        }
        if inner + ihl * 4 + core::mem::size_of::<Ports>() > ip_end {
            return None;
        }
        let ports = ptr_at::<Ports>(ctx, inner + ihl * 4)?;
        let ports = unsafe { &*ports };
        Some(FlowKey::v4(
            u32::from_ne_bytes(ip.dst),
            u32::from_ne_bytes(ip.src),
            u16::from_ne_bytes(ports.dst),
            u16::from_ne_bytes(ports.src),
            ip.protocol,
        ))
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, inner)?;
        let ip = unsafe { &*ip };
        if ip.version_tc_flow[0] >> 4 != 6 {
            return None;
        }
        if ip.next_header != IPPROTO_TCP && ip.next_header != IPPROTO_UDP {
            return None;
        }
        if words(ip.src) != pkt.key.dst {
            return None;
        }
        if inner + V6_HDR + core::mem::size_of::<Ports>() > ip_end {
            return None;
        }
        let ports = ptr_at::<Ports>(ctx, inner + V6_HDR)?;
        let ports = unsafe { &*ports };
        Some(FlowKey::v6(
            words(ip.dst),
            words(ip.src),
            u16::from_ne_bytes(ports.dst),
            u16::from_ne_bytes(ports.src),
            ip.next_header,
        ))
    }
}

/// Shrinks or grows the frame's tail so it is `len` bytes long.
#[inline(always)]
fn set_len(ctx: &XdpContext, len: usize) -> Option<()> {
    let cur = ctx.data_end() - ctx.data();
    let delta = len as i32 - cur as i32;
    // SAFETY: adjust_tail only moves data_end; later accesses re-check it.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return None;
    }
    Some(())
}

/// Turns the IPv4 packet in `ctx` into an ICMP "fragmentation needed"
/// (type 3 code 4) to its sender, advertising `mtu`, quoting its IP header
/// and first 8 bytes of payload. The caller sends it with `XDP_TX`.
///
/// Only for headers without options (`None` otherwise): the quote then has
/// a fixed size, which keeps the checksum a straight-line computation the
/// verifier accepts. Oversized DF packets with IP options are rare enough
/// that they are simply dropped (and counted) instead.
///
/// Not inlined: its buffers would otherwise sit in the balancer's stack
/// frame on every packet (BPF has 512 bytes of stack in all).
#[inline(never)]
pub fn too_big_v4(ctx: &XdpContext, pkt: &Pkt, mtu: u32) -> Option<()> {
    const QUOTE: usize = V4_HDR + QUOTED_L4;
    const PREPEND: usize = V4_HDR + ICMP_HDR;
    if pkt.l4_off - pkt.l3_off != V4_HDR {
        return None;
    }
    ptr_at::<[u8; QUOTE]>(ctx, pkt.l3_off)?;
    encap::swap_macs(ctx)?;
    let orig = ptr_at::<Ipv4Hdr>(ctx, pkt.l3_off)?;
    // SAFETY: bounds checked by ptr_at.
    let (client, vip) = unsafe { ((*orig).src, (*orig).dst) };

    // Prepending the new IP and ICMP headers leaves the original IP header
    // and the 8 bytes after it exactly where the quote belongs.
    // SAFETY: see set_len; everything below is re-checked.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(PREPEND as i32)) } != 0 {
        return None;
    }
    set_len(ctx, pkt.l3_off + PREPEND + QUOTE)?;
    let l3 = encap::move_l2(ctx, PREPEND, pkt.l3_off, ETH_P_IPV4)?;

    let mut hdr = [0u8; 20];
    hdr[0] = 0x45;
    hdr[2..4].copy_from_slice(&((PREPEND + QUOTE) as u16).to_be_bytes());
    hdr[8] = 64;
    hdr[9] = IPPROTO_ICMP;
    hdr[12..16].copy_from_slice(&vip);
    hdr[16..20].copy_from_slice(&client);
    let check = csum::fold(csum::add(0, &hdr));
    hdr[10..12].copy_from_slice(&check.to_be_bytes());
    let ip = ptr_at::<[u8; 20]>(ctx, l3)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { core::ptr::write_unaligned(ip, hdr) };

    let mtu16 = (mtu.min(0xffff) as u16).to_be_bytes();
    let mut icmp = [
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        mtu16[0],
        mtu16[1],
    ];
    let sum = csum::add_frame::<QUOTE>(ctx, csum::add(0, &icmp), l3 + PREPEND)?;
    let check = csum::fold(sum).to_be_bytes();
    icmp[2] = check[0];
    icmp[3] = check[1];
    let out = ptr_at::<[u8; ICMP_HDR]>(ctx, l3 + V4_HDR)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { core::ptr::write_unaligned(out, icmp) };
    Some(())
}

/// Turns the IPv6 packet in `ctx` into an ICMPv6 "packet too big" to its
/// sender advertising `mtu`, quoting the first 48 bytes of the original
/// (its IPv6 header and 8 bytes more: all a sender needs to find the
/// connection). The caller sends it with `XDP_TX`. Not inlined, as above.
#[inline(never)]
pub fn too_big_v6(ctx: &XdpContext, pkt: &Pkt, mtu: u32) -> Option<()> {
    const QUOTE: usize = V6_HDR + QUOTED_L4;
    const PREPEND: usize = V6_HDR + ICMP_HDR;
    ptr_at::<[u8; QUOTE]>(ctx, pkt.l3_off)?;
    encap::swap_macs(ctx)?;

    // Prepending the new IPv6 and ICMPv6 headers leaves the original IPv6
    // header and the 8 bytes after it exactly where the quote belongs.
    // SAFETY: see set_len; everything below is re-checked.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(PREPEND as i32)) } != 0 {
        return None;
    }
    set_len(ctx, pkt.l3_off + PREPEND + QUOTE)?;
    let l3 = encap::move_l2(ctx, PREPEND, pkt.l3_off, ETH_P_IPV6)?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, l3)?;
    let quoted = ptr_at::<Ipv6Hdr>(ctx, l3 + PREPEND)?;
    let payload_len = (ICMP_HDR + QUOTE) as u16;
    // SAFETY: bounds checked by ptr_at; the two headers do not overlap.
    unsafe {
        (*ip).version_tc_flow = [0x60, 0, 0, 0];
        (*ip).payload_len = payload_len.to_be_bytes();
        (*ip).next_header = IPPROTO_ICMPV6;
        (*ip).hop_limit = 64;
        // From the VIP (the original destination) back to the client.
        (*ip).src = (*quoted).dst;
        (*ip).dst = (*quoted).src;
    }
    let m = mtu.to_be_bytes();
    let mut icmp = [ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]];
    // Pseudo-header (RFC 8200 §8.1): both addresses (bytes 8..40 of the new
    // header), upper-layer length, next header; then ICMPv6 and the quote.
    let mut sum = csum::add_frame::<32>(ctx, 0, l3 + 8)?;
    sum += payload_len as u32 + IPPROTO_ICMPV6 as u32;
    sum = csum::add(sum, &icmp);
    sum = csum::add_frame::<QUOTE>(ctx, sum, l3 + PREPEND)?;
    let check = csum::fold(sum).to_be_bytes();
    icmp[2] = check[0];
    icmp[3] = check[1];
    let out = ptr_at::<[u8; ICMP_HDR]>(ctx, l3 + V6_HDR)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { core::ptr::write_unaligned(out, icmp) };
    Some(())
}

/// Whether the ICMP/ICMPv6 message of `pkt` is an echo request whose
/// 8-byte header lies inside the datagram (never a fragment: only a whole
/// request is answered).
#[inline(always)]
pub fn is_echo_request(ctx: &XdpContext, pkt: &Pkt) -> bool {
    if pkt.fragment || pkt.l4_off + ICMP_HDR > pkt.l3_off + pkt.ip_len as usize {
        return false;
    }
    let Some(icmp) = ptr_at::<IcmpHdr>(ctx, pkt.l4_off) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*icmp).kind };
    kind == if pkt.v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    }
}

/// Hop limit / TTL of the replies XDP builds (the Linux default).
const REPLY_TTL: u8 = 64;

/// Turns the echo request in `ctx` into its echo reply in place: MACs and
/// addresses swapped, TTL/hop limit 64, type 0 / 129, checksums updated
/// incrementally (the swap leaves both sums unchanged; the type and TTL
/// words are replaced). Identifier, sequence number and data are echoed
/// untouched, as RFC 792 and RFC 4443 §4.2 require. The caller sends it
/// with `XDP_TX`.
#[inline(always)]
pub fn echo_reply(ctx: &XdpContext, pkt: &Pkt) -> Option<()> {
    let icmp = ptr_at::<IcmpHdr>(ctx, pkt.l4_off)?;
    if pkt.v6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, pkt.l3_off)?;
        encap::swap_macs(ctx)?;
        // SAFETY: bounds checked by ptr_at; the headers do not overlap.
        unsafe {
            let src = (*ip).src;
            (*ip).src = (*ip).dst;
            (*ip).dst = src;
            (*ip).hop_limit = REPLY_TTL;
            let code = (*icmp).code;
            let old = u16::from_be_bytes([ICMPV6_ECHO_REQUEST, code]);
            let new = u16::from_be_bytes([ICMPV6_ECHO_REPLY, code]);
            (*icmp).kind = ICMPV6_ECHO_REPLY;
            let check = u16::from_be_bytes((*icmp).check);
            (*icmp).check = csum::replace(check, old, new).to_be_bytes();
        }
    } else {
        let ip = ptr_at::<Ipv4Hdr>(ctx, pkt.l3_off)?;
        encap::swap_macs(ctx)?;
        // SAFETY: as above.
        unsafe {
            let src = (*ip).src;
            (*ip).src = (*ip).dst;
            (*ip).dst = src;
            let proto = (*ip).protocol;
            let old = u16::from_be_bytes([(*ip).ttl, proto]);
            let new = u16::from_be_bytes([REPLY_TTL, proto]);
            (*ip).ttl = REPLY_TTL;
            let check = u16::from_be_bytes((*ip).check);
            (*ip).check = csum::replace(check, old, new).to_be_bytes();
            let code = (*icmp).code;
            let old = u16::from_be_bytes([ICMP_ECHO_REQUEST, code]);
            let new = u16::from_be_bytes([ICMP_ECHO_REPLY, code]);
            (*icmp).kind = ICMP_ECHO_REPLY;
            let check = u16::from_be_bytes((*icmp).check);
            (*icmp).check = csum::replace(check, old, new).to_be_bytes();
        }
    }
    Some(())
}
