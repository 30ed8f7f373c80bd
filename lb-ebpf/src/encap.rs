//! IP-in-IP encapsulation towards backends (Katran's scheme: IPv4-in-IPv4,
//! IPv6-in-IPv6), and its reverse for the backend-side decap program.
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

/// The Ethernet (and VLAN) header to write in front of a rewritten packet.
#[derive(Clone, Copy)]
pub struct L2 {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Some(tci) when the frame carried an 802.1Q tag, kept as it was.
    pub vlan_tci: Option<[u8; 2]>,
}

impl L2 {
    /// Reads the current frame's Ethernet header: `dst` will become our
    /// source (the frame was addressed to us), the new destination is given.
    #[inline(always)]
    pub fn towards(ctx: &XdpContext, l3_off: usize, next_hop: [u8; 6]) -> Option<L2> {
        let eth = ptr_at::<EthHdr>(ctx, 0)?;
        // SAFETY: bounds checked by ptr_at.
        let our_mac = unsafe { (*eth).dst };
        let vlan_tci = if l3_off == ETH + VLAN {
            let v = ptr_at::<VlanHdr>(ctx, ETH)?;
            Some(unsafe { (*v).tci })
        } else {
            None
        };
        Some(L2 {
            dst: next_hop,
            src: our_mac,
            vlan_tci,
        })
    }

    /// Writes this header at the start of the frame with `ether_type`;
    /// returns the L3 offset.
    #[inline(always)]
    pub fn write(&self, ctx: &XdpContext, ether_type: u16) -> Option<usize> {
        let eth = ptr_at::<EthHdr>(ctx, 0)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*eth).dst = self.dst;
            (*eth).src = self.src;
        }
        match self.vlan_tci {
            None => {
                unsafe { (*eth).ether_type = ether_type.to_be_bytes() };
                Some(ETH)
            }
            Some(tci) => {
                let v = ptr_at::<VlanHdr>(ctx, ETH)?;
                unsafe {
                    (*eth).ether_type = ETH_P_8021Q.to_be_bytes();
                    (*v).tci = tci;
                    (*v).ether_type = ether_type.to_be_bytes();
                }
                Some(ETH + VLAN)
            }
        }
    }
}

/// Rewrites only the MACs (DSR): the packet goes to the backend unchanged.
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, next_hop: [u8; 6]) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).src = (*eth).dst;
        (*eth).dst = next_hop;
    }
    Some(())
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
    l2: &L2,
    backend: &BackendMeta,
    settings: &Settings,
    hash: u32,
    inner_len: u32,
    tos: u8,
    dont_frag: bool,
) -> Option<()> {
    // SAFETY: adjust_head only moves ctx->data; every later access is
    // bounds-checked again against the new data/data_end.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V4_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = l2.write(ctx, ETH_P_IPV4)?;
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

/// Prepends an outer IPv6 header (next header 41) addressed to `backend`.
/// The flow label carries the flow hash so ECMP paths keep flows together.
#[inline(always)]
pub fn ipip_v6(
    ctx: &XdpContext,
    l2: &L2,
    backend: &BackendMeta,
    settings: &Settings,
    hash: u32,
    inner_len: u32,
    traffic_class: u8,
) -> Option<()> {
    // SAFETY: see ipip_v4.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V6_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = l2.write(ctx, ETH_P_IPV6)?;
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
        (*ip).next_header = IPPROTO_IPV6;
        (*ip).hop_limit = OUTER_TTL;
        (*ip).src = src;
        (*ip).dst = dst;
    }
    Some(())
}

/// Removes an outer IPv4 (protocol 4) or IPv6 (next header 41) header that
/// carries the same IP version inside, keeping the Ethernet/VLAN header.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Decap {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Decap::NotIpip;
    };
    // SAFETY: bounds checked by ptr_at (here and below).
    let (dst, src, mut ether_type) = unsafe {
        (
            (*eth).dst,
            (*eth).src,
            u16::from_be_bytes((*eth).ether_type),
        )
    };
    let mut l3 = ETH;
    let mut tci = None;
    if ether_type == ETH_P_8021Q {
        let Some(v) = ptr_at::<VlanHdr>(ctx, ETH) else {
            return Decap::NotIpip;
        };
        tci = Some(unsafe { (*v).tci });
        ether_type = u16::from_be_bytes(unsafe { (*v).ether_type });
        l3 = ETH + VLAN;
    }
    let outer_len = match ether_type {
        ETH_P_IPV4 => {
            let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
                return Decap::NotIpip;
            };
            let (vihl, proto) = unsafe { ((*ip).version_ihl, (*ip).protocol) };
            if vihl >> 4 != 4 || vihl & 0x0f < 5 || proto != IPPROTO_IPIP {
                return Decap::NotIpip;
            }
            let len = (vihl & 0x0f) as usize * 4;
            // The inner packet must be IPv4 too: the Ethernet type is kept.
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
            if unsafe { (*ip).next_header } != IPPROTO_IPV6 {
                return Decap::NotIpip;
            }
            let Some(inner) = ptr_at::<u8>(ctx, l3 + V6_HDR) else {
                return Decap::NotIpip;
            };
            if unsafe { *inner } >> 4 != 6 {
                return Decap::NotIpip;
            }
            V6_HDR
        }
        _ => return Decap::NotIpip,
    };
    // SAFETY: shrinking the head by the outer header; all later accesses are
    // bounds-checked against the new frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Decap::NotIpip;
    }
    let l2 = L2 {
        dst,
        src,
        vlan_tci: tci,
    };
    match l2.write(ctx, ether_type) {
        Some(_) => Decap::Done,
        None => Decap::Broken,
    }
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
