//! IP-in-IP encapsulation towards backends (Katran's scheme: IPv4-in-IPv4,
//! IPv6-in-IPv6, and IPv4-in-IPv6 for IPv4 VIPs with IPv6 backends), and
//! its reverse for the backend-side decap program.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    backend::BackendMeta,
    settings::{Settings, SETTINGS_F_IPIP_SRC_FROM_FLOW},
};

use crate::{csum, hdr::*, parse::ptr_at};

const V4_HDR: usize = core::mem::size_of::<Ipv4Hdr>();
const V6_HDR: usize = core::mem::size_of::<Ipv6Hdr>();
const ETH: usize = core::mem::size_of::<EthHdr>();
const VLAN: usize = core::mem::size_of::<VlanHdr>();

/// TTL / hop limit of the outer header.
const OUTER_TTL: u8 = 64;

/// Rewrites the MACs in place for forwarding: the new destination is
/// `next_hop`, the new source the frame's old destination (our own MAC, as
/// the frame was addressed to us). DSR needs nothing more.
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, next_hop: &[u8; 6]) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).src = (*eth).dst;
        (*eth).dst = *next_hop;
    }
    Some(())
}

/// Swaps the MACs in place, to send a reply back where the frame came from.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let src = (*eth).src;
        (*eth).src = (*eth).dst;
        (*eth).dst = src;
    }
    Some(())
}

/// After `bpf_xdp_adjust_head(-grown)`, moves the L2 header (`l3_off`
/// bytes: 14, or 18 with an 802.1Q tag, already rewritten in place) from
/// offset `grown` to the new start of the frame and sets its EtherType.
/// Returns the new L3 offset (`l3_off`).
///
/// Copies in 4- and 2-byte words straight from packet to packet: going
/// through byte arrays on the stack makes LLVM spill every byte to its own
/// 8-byte slot, and BPF programs have 512 bytes of stack in all.
#[inline(always)]
pub fn move_l2(ctx: &XdpContext, grown: usize, l3_off: usize, ether_type: u16) -> Option<usize> {
    let ty = ether_type.to_be_bytes();
    if l3_off == ETH + VLAN {
        let from = ptr_at::<[u32; 4]>(ctx, grown)?;
        let to = ptr_at::<[u32; 4]>(ctx, 0)?;
        let last = ptr_at::<[u8; 2]>(ctx, ETH + VLAN - 2)?;
        // SAFETY: bounds checked by ptr_at; `grown` ≥ 20 > 18, so source
        // and destination do not overlap.
        unsafe {
            core::ptr::write_unaligned(to, core::ptr::read_unaligned(from));
            *last = ty;
        }
        Some(ETH + VLAN)
    } else {
        let from = ptr_at::<[u32; 3]>(ctx, grown)?;
        let to = ptr_at::<[u32; 3]>(ctx, 0)?;
        let last = ptr_at::<[u8; 2]>(ctx, ETH - 2)?;
        // SAFETY: as above.
        unsafe {
            core::ptr::write_unaligned(to, core::ptr::read_unaligned(from));
            *last = ty;
        }
        Some(ETH)
    }
}

/// The outer IPv4 source: fixed, or the configured /16 with the low 16
/// bits taken from the flow hash, so a backend's RSS spreads flows over its
/// receive queues.
#[inline(always)]
fn outer_src_v4(settings: &Settings, hash: u32) -> [u8; 4] {
    let p = settings.ipip_src_v4.to_ne_bytes();
    if settings.flags & SETTINGS_F_IPIP_SRC_FROM_FLOW == 0 {
        return p;
    }
    let h = hash.to_be_bytes();
    [p[0], p[1], h[2], h[3]]
}

/// The outer IPv6 source: fixed, or the configured /96 with the last 32
/// bits taken from the flow hash.
#[inline(always)]
fn outer_src_v6(settings: &Settings, hash: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = settings.ipip_src_v6[i].to_ne_bytes();
        out[i * 4] = w[0];
        out[i * 4 + 1] = w[1];
        out[i * 4 + 2] = w[2];
        out[i * 4 + 3] = w[3];
        i += 1;
    }
    if settings.flags & SETTINGS_F_IPIP_SRC_FROM_FLOW != 0 {
        let h = hash.to_be_bytes();
        out[12] = h[0];
        out[13] = h[1];
        out[14] = h[2];
        out[15] = h[3];
    }
    out
}

/// Prepends an outer IPv4 header (protocol 4) addressed to `backend`.
/// `inner_len` is the inner packet's IP length, `tos` its TOS byte.
#[inline(always)]
pub fn ipip_v4(
    ctx: &XdpContext,
    l3_off: usize,
    backend: &BackendMeta,
    settings: &Settings,
    hash: u32,
    inner_len: u32,
    tos: u8,
    dont_frag: bool,
) -> Option<()> {
    // SAFETY: adjust_head only moves ctx->data; every later access is
    // bounds-checked again against the new data/data_end.
    rewrite_macs(ctx, &backend.next_hop_mac)?;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V4_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = move_l2(ctx, V4_HDR, l3_off, ETH_P_IPV4)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
    let total = (inner_len as usize + V4_HDR) as u16;
    let mut hdr = [0u8; 20];
    hdr[0] = 0x45;
    hdr[1] = tos;
    hdr[2..4].copy_from_slice(&total.to_be_bytes());
    if dont_frag {
        hdr[6..8].copy_from_slice(&IPV4_DF.to_be_bytes());
    }
    hdr[8] = OUTER_TTL;
    hdr[9] = IPPROTO_IPIP;
    hdr[12..16].copy_from_slice(&outer_src_v4(settings, hash));
    hdr[16..20].copy_from_slice(&backend.addr[0].to_ne_bytes());
    let check = csum::fold(csum::add(0, &hdr));
    hdr[10..12].copy_from_slice(&check.to_be_bytes());
    // SAFETY: bounds checked by ptr_at; Ipv4Hdr is 20 bytes of u8 fields.
    unsafe { core::ptr::write_unaligned(ip as *mut [u8; 20], hdr) };
    Some(())
}

/// Prepends an outer IPv6 header addressed to `backend`, next header 41
/// for an IPv6 packet or 4 for an IPv4 one (`inner_proto`; RFC 2473 §3).
/// The flow label carries the flow hash so ECMP paths keep flows together.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn ipip_v6(
    ctx: &XdpContext,
    l3_off: usize,
    backend: &BackendMeta,
    settings: &Settings,
    hash: u32,
    inner_len: u32,
    traffic_class: u8,
    inner_proto: u8,
) -> Option<()> {
    // SAFETY: see ipip_v4.
    rewrite_macs(ctx, &backend.next_hop_mac)?;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V6_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = move_l2(ctx, V6_HDR, l3_off, ETH_P_IPV6)?;
    let ip = ptr_at::<Ipv6Hdr>(ctx, l3)?;
    let flow = hash & 0x000f_ffff;
    let vtf: u32 = (6 << 28) | ((traffic_class as u32) << 20) | flow;
    let src = outer_src_v6(settings, hash);
    let mut dst = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = backend.addr[i].to_ne_bytes();
        dst[i * 4] = w[0];
        dst[i * 4 + 1] = w[1];
        dst[i * 4 + 2] = w[2];
        dst[i * 4 + 3] = w[3];
        i += 1;
    }
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*ip).version_tc_flow = vtf.to_be_bytes();
        (*ip).payload_len = (inner_len as u16).to_be_bytes();
        (*ip).next_header = inner_proto;
        (*ip).hop_limit = OUTER_TTL;
        (*ip).src = src;
        (*ip).dst = dst;
    }
    Some(())
}

/// Removes an outer IPv4 (protocol 4) or IPv6 (next header 41) header that
/// carries the same IP version inside, or an outer IPv6 header (next
/// header 4) carrying IPv4, keeping the Ethernet/VLAN header (its
/// EtherType becomes the inner packet's).
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Decap {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Decap::NotIpip;
    };
    // SAFETY: bounds checked by ptr_at (here and below).
    let mut ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    let mut l3 = ETH;
    if ether_type == ETH_P_8021Q {
        let Some(v) = ptr_at::<VlanHdr>(ctx, ETH) else {
            return Decap::NotIpip;
        };
        ether_type = u16::from_be_bytes(unsafe { (*v).ether_type });
        l3 = ETH + VLAN;
    }
    let mut inner_type = ether_type;
    let outer_len = match ether_type {
        ETH_P_IPV4 => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
                return Decap::NotIpip;
            };
            let (vihl, proto, frag) = unsafe {
                (
                    (*ip).version_ihl,
                    (*ip).protocol,
                    u16::from_be_bytes((*ip).frag_off),
                )
            };
            if vihl >> 4 != 4 || vihl & 0x0f < 5 || proto != IPPROTO_IPIP {
                return Decap::NotIpip;
            }
            // A fragment of an encapsulated packet holds only part of the
            // inner one: leave reassembly to the stack.
            if frag & IPV4_FRAG_MASK != 0 {
                return Decap::NotIpip;
            }
            let len = (vihl & 0x0f) as usize * 4;
            // The inner packet must be IPv4 too: the EtherType is kept.
            let Some(inner) = ptr_at::<u8>(ctx, l3 + len) else {
                return Decap::NotIpip;
            };
            if unsafe { *inner } >> 4 != 4 {
                return Decap::NotIpip;
            }
            len
        }
        ETH_P_IPV6 => {
            let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
                return Decap::NotIpip;
            };
            let (version, next) = unsafe { ((*ip).version_tc_flow[0] >> 4, (*ip).next_header) };
            let want = match next {
                IPPROTO_IPV6 => 6,
                IPPROTO_IPIP => 4,
                _ => return Decap::NotIpip,
            };
            if version != 6 {
                return Decap::NotIpip;
            }
            let Some(inner) = ptr_at::<u8>(ctx, l3 + V6_HDR) else {
                return Decap::NotIpip;
            };
            if unsafe { *inner } >> 4 != want {
                return Decap::NotIpip;
            }
            if want == 4 {
                inner_type = ETH_P_IPV4;
            }
            V6_HDR
        }
        _ => return Decap::NotIpip,
    };
    // Move the L2 header forward over the outer header, then drop the bytes
    // in front of it. The destination starts `outer_len` ≥ 20 bytes after
    // the source, so the two do not overlap.
    if !move_l2_forward(ctx, l3, outer_len) {
        return Decap::NotIpip;
    }
    if inner_type != ether_type {
        let Some(t) = ptr_at::<[u8; 2]>(ctx, outer_len + l3 - 2) else {
            return Decap::Broken;
        };
        // SAFETY: bounds checked by ptr_at.
        unsafe { *t = inner_type.to_be_bytes() };
    }
    // SAFETY: shrinking the head by the outer header; the frame is only
    // read again through bounds-checked accessors.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Decap::Broken;
    }
    Decap::Done
}

/// Copies the first `l3` bytes (14 or 18) of the frame to offset `by`.
#[inline(always)]
fn move_l2_forward(ctx: &XdpContext, l3: usize, by: usize) -> bool {
    let words = l3 / 4; // 3 or 4 whole words, then the 2-byte EtherType
    if words == 4 {
        let (Some(a), Some(c)) = (ptr_at::<[u32; 4]>(ctx, 0), ptr_at::<[u32; 4]>(ctx, by)) else {
            return false;
        };
        let (Some(b), Some(d)) = (ptr_at::<[u8; 2]>(ctx, 16), ptr_at::<[u8; 2]>(ctx, by + 16))
        else {
            return false;
        };
        // SAFETY: bounds checked by ptr_at; no overlap (by ≥ 20).
        unsafe {
            core::ptr::write_unaligned(c, core::ptr::read_unaligned(a));
            *d = *b;
        }
    } else {
        let (Some(a), Some(c)) = (ptr_at::<[u32; 3]>(ctx, 0), ptr_at::<[u32; 3]>(ctx, by)) else {
            return false;
        };
        let (Some(b), Some(d)) = (ptr_at::<[u8; 2]>(ctx, 12), ptr_at::<[u8; 2]>(ctx, by + 12))
        else {
            return false;
        };
        // SAFETY: as above.
        unsafe {
            core::ptr::write_unaligned(c, core::ptr::read_unaligned(a));
            *d = *b;
        }
    }
    true
}

/// What [`decap`] did.
pub enum Decap {
    /// Not an IP-in-IP packet of one version: untouched.
    NotIpip,
    /// Outer header removed.
    Done,
    /// The frame was changed but could not be completed: drop it.
    Broken,
}
