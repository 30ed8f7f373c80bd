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

/// A MAC address as a 4-byte and a 2-byte word, loaded as-is.
///
/// Every MAC copy on the datapath goes through these two words: copying
/// `[u8; 6]` fields of one header into another makes LLVM call `memmove`
/// (it cannot prove the fields apart), which on BPF is a byte loop.
#[derive(Clone, Copy)]
struct Mac(u32, u16);

/// Loads the MAC at `p`.
///
/// # Safety
/// `p` must point at 6 readable bytes.
#[inline(always)]
unsafe fn load_mac(p: *const u8) -> Mac {
    // SAFETY: per the contract; unaligned loads are what the program is
    // built for (allows-misaligned-mem-access, see lb-ebpf/.cargo).
    unsafe {
        Mac(
            core::ptr::read_unaligned(p as *const u32),
            core::ptr::read_unaligned(p.add(4) as *const u16),
        )
    }
}

/// Stores `m` at `p`.
///
/// # Safety
/// `p` must point at 6 writable bytes.
#[inline(always)]
unsafe fn store_mac(p: *mut u8, m: Mac) {
    // SAFETY: per the contract.
    unsafe {
        core::ptr::write_unaligned(p as *mut u32, m.0);
        core::ptr::write_unaligned(p.add(4) as *mut u16, m.1);
    }
}

/// Rewrites the MACs in place for forwarding: the new destination is
/// `next_hop`, the new source the frame's old destination (our own MAC, as
/// the frame was addressed to us). DSR needs nothing more.
#[inline(always)]
pub fn rewrite_macs(ctx: &XdpContext, next_hop: &[u8; 6]) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)? as *mut u8;
    // SAFETY: bounds checked by ptr_at (14 bytes at eth); next_hop is 6.
    unsafe {
        let own = load_mac(eth);
        store_mac(eth.add(6), own);
        store_mac(eth, load_mac(next_hop.as_ptr()));
    }
    Some(())
}

/// Sets the source MAC (the interface a redirected frame leaves by).
#[inline(always)]
pub fn set_src_mac(ctx: &XdpContext, mac: &[u8; 6]) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)? as *mut u8;
    // SAFETY: bounds checked by ptr_at; mac is 6 bytes.
    unsafe { store_mac(eth.add(6), load_mac(mac.as_ptr())) };
    Some(())
}

/// Swaps the MACs in place, to send a reply back where the frame came from.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let eth = ptr_at::<EthHdr>(ctx, 0)? as *mut u8;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let dst = load_mac(eth);
        let src = load_mac(eth.add(6));
        store_mac(eth, src);
        store_mac(eth.add(6), dst);
    }
    Some(())
}

/// After `bpf_xdp_adjust_head(-grown)`, moves the L2 header (`l3_off`
/// bytes: 14, or 18 with an 802.1Q tag, already rewritten in place) from
/// offset `grown` to the new start of the frame and sets its EtherType.
/// Returns the new L3 offset (`l3_off`).
#[inline(always)]
pub fn move_l2(ctx: &XdpContext, grown: usize, l3_off: usize, ether_type: u16) -> Option<usize> {
    let from = ptr_at::<[u8; 12]>(ctx, grown)? as *const u8;
    // SAFETY: bounds checked by ptr_at; the old header (at `grown`)
    // lies before the bytes being written, both 12 bytes long.
    let (dst, src) = unsafe { (load_mac(from), load_mac(from.add(6))) };
    forwarded_l2(ctx, grown, l3_off, dst, src, ether_type)
}

/// The encapsulating version of [`rewrite_macs`] + [`move_l2`] in one
/// pass, after `bpf_xdp_adjust_head(-grown)`: writes `next_hop` as the
/// destination and the old header's destination (our MAC) as the source
/// at the new start, the VLAN tag if any, and the EtherType.
#[inline(always)]
pub fn encap_l2(
    ctx: &XdpContext,
    grown: usize,
    l3_off: usize,
    next_hop: &[u8; 6],
    ether_type: u16,
) -> Option<usize> {
    let from = ptr_at::<[u8; 6]>(ctx, grown)? as *const u8;
    // SAFETY: bounds checked by ptr_at; next_hop is 6 bytes.
    let (own, nh) = unsafe { (load_mac(from), load_mac(next_hop.as_ptr())) };
    forwarded_l2(ctx, grown, l3_off, nh, own, ether_type)
}

/// Writes the L2 header at the start of a frame grown by `grown` bytes:
/// `dst`, `src`, the old header's VLAN tag (when `l3_off` is 18), and
/// `ether_type`. Returns `l3_off`.
#[inline(always)]
fn forwarded_l2(
    ctx: &XdpContext,
    grown: usize,
    l3_off: usize,
    dst: Mac,
    src: Mac,
    ether_type: u16,
) -> Option<usize> {
    let ty = ether_type.to_be();
    if l3_off == ETH + VLAN {
        let tag = ptr_at::<u32>(ctx, grown + ETH - 2)?;
        let to = ptr_at::<[u8; ETH + VLAN]>(ctx, 0)? as *mut u8;
        // SAFETY: bounds checked by ptr_at; `grown` ≥ 20 > 18, so the tag
        // is read from bytes this does not write.
        unsafe {
            let tag = core::ptr::read_unaligned(tag);
            store_mac(to, dst);
            store_mac(to.add(6), src);
            core::ptr::write_unaligned(to.add(ETH - 2) as *mut u32, tag);
            core::ptr::write_unaligned(to.add(ETH + VLAN - 2) as *mut u16, ty);
        }
        Some(ETH + VLAN)
    } else {
        let to = ptr_at::<[u8; ETH]>(ctx, 0)? as *mut u8;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            store_mac(to, dst);
            store_mac(to.add(6), src);
            core::ptr::write_unaligned(to.add(ETH - 2) as *mut u16, ty);
        }
        Some(ETH)
    }
}

/// The outer IPv4 source: fixed, or the configured /16 with the low 16
/// bits taken from the flow hash, so a backend's RSS spreads flows over its
/// receive queues.
#[inline(always)]
fn outer_src_v4(settings: &Settings, hash: u32) -> u32 {
    let p = settings.ipip_src_v4;
    if settings.flags & SETTINGS_F_IPIP_SRC_FROM_FLOW == 0 {
        return p;
    }
    // Wire bytes [p0, p1, hash bits 15..8, hash bits 7..0] as loaded by
    // this little-endian target.
    (p & 0xffff) | ((hash as u16).to_be() as u32) << 16
}

/// The outer IPv6 source as four words loaded as-is: fixed, or the
/// configured /96 with the last 32 bits taken from the flow hash.
#[inline(always)]
fn outer_src_v6(settings: &Settings, hash: u32) -> [u32; 4] {
    let mut out = settings.ipip_src_v6;
    if settings.flags & SETTINGS_F_IPIP_SRC_FROM_FLOW != 0 {
        // The hash's big-endian bytes on the wire, as this target loads them.
        out[3] = hash.to_be();
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
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V4_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = encap_l2(ctx, V4_HDR, l3_off, &backend.next_hop_mac, ETH_P_IPV4)?;
    let ip = ptr_at::<[u32; 5]>(ctx, l3)?;
    // The header as five words in memory order (this is a little-endian
    // target: a word's low byte is the first on the wire), and its checksum
    // summed over the same words: the one's-complement sum of byte-swapped
    // 16-bit words is the byte-swapped sum, so the folded result is stored
    // as it is (RFC 1071 §2(B)).
    let total = ((inner_len as usize + V4_HDR) as u16).to_be() as u32;
    let w0 = 0x45 | (tos as u32) << 8 | total << 16;
    let w1 = if dont_frag {
        (IPV4_DF.to_be() as u32) << 16
    } else {
        0
    };
    let ttl_proto = OUTER_TTL as u32 | (IPPROTO_IPIP as u32) << 8;
    let src = outer_src_v4(settings, hash);
    let dst = backend.addr[0];
    let sum = (w0 & 0xffff)
        + (w0 >> 16)
        + (w1 >> 16)
        + ttl_proto
        + (src & 0xffff)
        + (src >> 16)
        + (dst & 0xffff)
        + (dst >> 16);
    let check = csum::fold(sum) as u32;
    // SAFETY: bounds checked by ptr_at (20 bytes at ip).
    unsafe {
        core::ptr::write_unaligned(ip, [w0, w1, ttl_proto | check << 16, src, dst]);
    }
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
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(V6_HDR as i32)) } != 0 {
        return None;
    }
    let l3 = encap_l2(ctx, V6_HDR, l3_off, &backend.next_hop_mac, ETH_P_IPV6)?;
    let ip = ptr_at::<[u32; 10]>(ctx, l3)?;
    let flow = hash & 0x000f_ffff;
    let vtf: u32 = (6 << 28) | ((traffic_class as u32) << 20) | flow;
    // The header as ten words in memory order (little-endian target, as in
    // ipip_v4): one store each instead of forty byte stores for the
    // addresses, which is what byte arrays compiled to.
    let w1 =
        ((inner_len as u16).to_be() as u32) | (inner_proto as u32) << 16 | (OUTER_TTL as u32) << 24;
    let src = outer_src_v6(settings, hash);
    let dst = backend.addr;
    // SAFETY: bounds checked by ptr_at (40 bytes at ip).
    unsafe {
        core::ptr::write_unaligned(
            ip,
            [
                vtf.to_be(),
                w1,
                src[0],
                src[1],
                src[2],
                src[3],
                dst[0],
                dst[1],
                dst[2],
                dst[3],
            ],
        );
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
