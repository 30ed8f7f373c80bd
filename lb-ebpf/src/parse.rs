//! Bounds-checked header access and the packet parser: Ethernet with at most
//! one 802.1Q tag, IPv4 (options included) or IPv6 (a short extension-header
//! chain), and the TCP/UDP ports. The parser returns what it found, or why it
//! stopped, and never touches a byte it has not bounds-checked.
use aya_ebpf::programs::XdpContext;
use lb_common::{counters::ProtoClass, flow::FlowKey};

use crate::hdr::*;

/// Largest offset the parser will form; keeps the verifier's range of
/// every packet pointer small.
const MAX_OFFSET: usize = 4096;

/// Most IPv6 extension headers skipped before giving up (Hop-by-Hop,
/// Routing, Destination Options, Fragment: one each is the normal case).
const MAX_V6_EXT_HEADERS: usize = 4;

/// Returns a pointer to a `T` at `offset` bytes into the frame, or `None`
/// when the frame is too short. Every header read goes through here so the
/// verifier sees the bounds check next to the access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    if offset > MAX_OFFSET {
        return None;
    }
    let start = ctx.data();
    // A volatile load of data_end: LLVM may otherwise prove this check
    // redundant from an earlier, stricter one against a *scalar* bound (the
    // IP length, say) and delete it, leaving the verifier, which only trusts
    // comparisons against data_end itself, without a bound.
    // SAFETY: ctx.ctx points at the kernel's xdp_md for this run.
    let end = unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) } as usize;
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// An IP packet's layout and flow, as far as the balancer needs it.
pub struct Pkt {
    /// Offset of the IP header (14, or 18 behind an 802.1Q tag).
    pub l3_off: usize,
    /// Offset of the L4 header (after IPv4 options / IPv6 extensions).
    pub l4_off: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The flow; ports are zero for fragments and for protocols without
    /// ports.
    pub key: FlowKey,
    /// An IP fragment (IPv4 MF/offset, or an IPv6 Fragment header).
    pub fragment: bool,
    /// A first fragment (offset 0) of a TCP/UDP datagram whose ports lie
    /// inside it: `key` carries them, as for an unfragmented packet.
    pub frag_first: bool,
    /// The fragment's identification (IPv4 16 bits, IPv6 32 bits), as
    /// loaded; zero when not a fragment.
    pub frag_id: u32,
    /// IPv4 Don't Fragment (IPv6 never fragments in flight).
    pub dont_frag: bool,
    /// Length of the IP packet by its header (total length / 40 + payload).
    pub ip_len: u32,
    /// The IPv4 TOS byte or the IPv6 traffic class, for an encapsulation's
    /// outer header: taken here, where the header is loaded anyway, rather
    /// than bounds-checked and read again before encapsulating.
    pub tos: u8,
    /// Counter bucket.
    pub class: ProtoClass,
}

/// What the parser made of a frame.
pub enum Parsed {
    /// An IPv4/IPv6 packet.
    Ip(Pkt),
    /// Not IP: ARP, LLDP, ...
    NonIp,
    /// Truncated or invalid headers.
    Malformed,
    /// Valid but beyond what the parser follows (long IPv6 extension chain).
    Unsupported,
    /// The source address lies in a denied prefix: to be dropped. Found
    /// right after the IP header, before ports or extension headers; the
    /// class is by the IP header's protocol / next-header field.
    Denied(ProtoClass),
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Where the frame's IP header starts, by IP version: what the parser
/// found before the IP header.
pub enum L3 {
    /// An IPv4 header at this offset (not yet checked).
    V4(usize),
    /// An IPv6 header at this offset (not yet checked).
    V6(usize),
    /// Not IP: ARP, LLDP, ...
    NonIp,
    /// Too short for its Ethernet or 802.1Q header.
    Malformed,
}

/// Reads the Ethernet header (and an 802.1Q tag) of the frame in `ctx`.
///
/// Separate from [`parse_v4`] / [`parse_v6`] so that the balancer can run
/// the rest of its work in one copy per IP version (see
/// `balancer::process`).
#[inline(always)]
pub fn l3(ctx: &XdpContext) -> L3 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return L3::Malformed;
    };
    let mut l3_off = core::mem::size_of::<EthHdr>();
    // SAFETY (every dereference in this module): the pointer came from
    // `ptr_at`, which checked that the whole header lies inside the frame.
    let mut ether_type = be16(unsafe { (*eth).ether_type });
    if ether_type == ETH_P_8021Q {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, l3_off) else {
            return L3::Malformed;
        };
        ether_type = be16(unsafe { (*vlan).ether_type });
        l3_off += core::mem::size_of::<VlanHdr>();
    }
    match ether_type {
        ETH_P_IPV4 => L3::V4(l3_off),
        ETH_P_IPV6 => L3::V6(l3_off),
        _ => L3::NonIp,
    }
}

/// Parses the IPv4 packet at `l3_off`.
#[inline(always)]
pub fn parse_v4(ctx: &XdpContext, l3_off: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3_off) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { &*ip };
    let ihl = (ip.version_ihl & 0x0f) as usize;
    if ip.version_ihl >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let hdr_len = ihl * 4;
    let total_len = be16(ip.total_len) as usize;
    // A datagram longer than the frame that carries it is truncated
    // (RFC 1812 §5.2.2): never forward it, and never read "its" bytes
    // from whatever follows in the buffer.
    let ip_end = l3_off + total_len;
    if total_len < hdr_len || ip_end > ctx.data_end() - ctx.data() {
        return Parsed::Malformed;
    }
    let proto = ip.protocol;
    let class = match proto {
        IPPROTO_TCP => ProtoClass::Tcp4,
        IPPROTO_UDP => ProtoClass::Udp4,
        IPPROTO_ICMP => ProtoClass::Icmp4,
        _ => ProtoClass::OtherIp4,
    };
    if crate::deny::denied_v4(u32::from_ne_bytes(ip.src)) {
        return Parsed::Denied(class);
    }
    let l4_off = l3_off + hdr_len;
    let frag = be16(ip.frag_off);
    let fragment = frag & IPV4_FRAG_MASK != 0;
    let first = fragment && frag & IPV4_OFFSET_MASK == 0;
    let (src_port, dst_port, frag_first) = if !fragment {
        match ports(ctx, l4_off, ip_end, proto) {
            Ok((s, d)) => (s, d, false),
            Err(()) => return Parsed::Malformed,
        }
    } else {
        first_fragment_ports(ctx, first, l4_off, ip_end, proto)
    };
    let key = FlowKey::v4(
        u32::from_ne_bytes(ip.src),
        u32::from_ne_bytes(ip.dst),
        src_port,
        dst_port,
        proto,
    );
    Parsed::Ip(Pkt {
        l3_off,
        l4_off,
        v6: false,
        key,
        fragment,
        frag_first,
        frag_id: u16::from_ne_bytes(ip.id) as u32,
        dont_frag: frag & IPV4_DF != 0,
        ip_len: total_len as u32,
        tos: ip.tos,
        class,
    })
}

/// Parses the IPv6 packet at `l3_off`.
#[inline(always)]
pub fn parse_v6(ctx: &XdpContext, l3_off: usize) -> Parsed {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3_off) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { &*ip };
    if ip.version_tc_flow[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    // See parse_v4: the datagram must fit in the frame.
    let ip_len = be16(ip.payload_len) as usize + core::mem::size_of::<Ipv6Hdr>();
    let ip_end = l3_off + ip_len;
    if ip_end > ctx.data_end() - ctx.data() {
        return Parsed::Malformed;
    }
    let mut next = ip.next_header;
    if crate::deny::denied_v6(words(ip.src)) {
        return Parsed::Denied(class_v6(next));
    }
    let mut l4_off = l3_off + core::mem::size_of::<Ipv6Hdr>();
    let mut fragment = false;
    let mut first = false;
    let mut frag_id = 0u32;
    for _ in 0..MAX_V6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                if l4_off + core::mem::size_of::<Ipv6ExtHdr>() > ip_end {
                    return Parsed::Malformed;
                }
                let Some(ext) = ptr_at::<Ipv6ExtHdr>(ctx, l4_off) else {
                    return Parsed::Malformed;
                };
                let ext = unsafe { &*ext };
                next = ext.next_header;
                l4_off += (ext.len as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                if l4_off + core::mem::size_of::<Ipv6ExtHdr>() > ip_end {
                    return Parsed::Malformed;
                }
                let Some(ext) = ptr_at::<Ipv6ExtHdr>(ctx, l4_off) else {
                    return Parsed::Malformed;
                };
                let (nh, rest) = unsafe { ((*ext).next_header, (*ext).rest) };
                next = nh;
                l4_off += 8;
                let off_m = u16::from_be_bytes([rest[0], rest[1]]);
                // An "atomic fragment" (offset 0, M clear) is a whole
                // datagram and is processed as one (RFC 6946 §4).
                fragment = off_m & 0xfff9 != 0;
                first = off_m & 0xfff8 == 0;
                frag_id = u32::from_ne_bytes([rest[2], rest[3], rest[4], rest[5]]);
            }
            _ => break,
        }
        // Behind a Fragment header, a non-first fragment carries data, not
        // headers (RFC 8200 §4.5): every fragment is keyed by the Fragment
        // header's next header, so all of a datagram's fragments agree.
        if fragment {
            break;
        }
    }
    if matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
    ) {
        return Parsed::Unsupported;
    }
    let (src_port, dst_port, frag_first) = if !fragment {
        frag_id = 0;
        match ports(ctx, l4_off, ip_end, next) {
            Ok((s, d)) => (s, d, false),
            Err(()) => return Parsed::Malformed,
        }
    } else {
        first_fragment_ports(ctx, first, l4_off, ip_end, next)
    };
    let key = FlowKey::v6(words(ip.src), words(ip.dst), src_port, dst_port, next);
    Parsed::Ip(Pkt {
        l3_off,
        l4_off,
        v6: true,
        key,
        fragment,
        frag_first,
        frag_id,
        dont_frag: true,
        ip_len: ip_len as u32,
        tos: (ip.version_tc_flow[0] << 4) | (ip.version_tc_flow[1] >> 4),
        class: class_v6(next),
    })
}

/// The counter bucket of an IPv6 packet whose upper-layer header is `next`.
#[inline(always)]
fn class_v6(next: u8) -> ProtoClass {
    match next {
        IPPROTO_TCP => ProtoClass::Tcp6,
        IPPROTO_UDP => ProtoClass::Udp6,
        IPPROTO_ICMPV6 => ProtoClass::Icmp6,
        _ => ProtoClass::OtherIp6,
    }
}

/// TCP/UDP ports as loaded (network byte order); zero for other protocols.
/// The ports must lie inside the datagram (`ip_end`), not just the frame.
#[inline(always)]
fn ports(ctx: &XdpContext, l4_off: usize, ip_end: usize, proto: u8) -> Result<(u16, u16), ()> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok((0, 0));
    }
    if l4_off + core::mem::size_of::<Ports>() > ip_end {
        return Err(());
    }
    let p = ptr_at::<Ports>(ctx, l4_off).ok_or(())?;
    let p = unsafe { &*p };
    Ok((u16::from_ne_bytes(p.src), u16::from_ne_bytes(p.dst)))
}

/// The ports of a fragment, if it is a first fragment (`first`: offset 0)
/// of a TCP/UDP datagram that holds them; else zeros (the fragment is then
/// placed by the 3-tuple or by its first fragment's choice).
#[inline(always)]
fn first_fragment_ports(
    ctx: &XdpContext,
    first: bool,
    l4_off: usize,
    ip_end: usize,
    proto: u8,
) -> (u16, u16, bool) {
    if !first || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return (0, 0, false);
    }
    match ports(ctx, l4_off, ip_end, proto) {
        Ok((s, d)) => (s, d, true),
        // A first fragment too short to hold the ports (RFC 1858's tiny
        // fragment): placed like a later one.
        Err(()) => (0, 0, false),
    }
}

/// An IPv6 address as four words loaded as-is (network byte order).
#[inline(always)]
pub fn words(a: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The counter bucket of a frame that did not parse as IP.
#[inline(always)]
pub fn class_of_failure(p: &Parsed) -> ProtoClass {
    match p {
        Parsed::Ip(pkt) => pkt.class,
        Parsed::Denied(class) => *class,
        Parsed::NonIp => ProtoClass::NonIp,
        Parsed::Malformed | Parsed::Unsupported => ProtoClass::Malformed,
    }
}
