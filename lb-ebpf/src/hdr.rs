//! Wire layouts of the headers the datapath reads.
//!
//! Written by hand rather than taken from `network-types`: its accessors go
//! through `Result`-returning conversions the hot path does not need, and its
//! layouts changed between releases; these few structs are easy to audit
//! against the RFCs. Multi-byte fields are big-endian byte arrays.

/// Ethernet II header (IEEE 802.3), without FCS.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

/// 802.1Q tag that follows the source MAC when the EtherType is 0x8100.
#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ether_type: [u8; 2],
}

/// IPv4 header without options (RFC 791 §3.1).
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// IPv6 fixed header (RFC 8200 §3).
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

const _: () = assert!(core::mem::size_of::<EthHdr>() == 14);
const _: () = assert!(core::mem::size_of::<VlanHdr>() == 4);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == 40);

/// The first four bytes of TCP and UDP headers: the ports.
#[repr(C)]
pub struct Ports {
    pub src: [u8; 2],
    pub dst: [u8; 2],
}

/// ICMP/ICMPv6 header (RFC 792, RFC 4443 §2.1): type, code, checksum and
/// the 4-byte rest (unused / next-hop MTU / ...).
#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    pub rest: [u8; 4],
}

/// IPv6 extension header prefix (RFC 8200 §4): next header and length in
/// 8-octet units not counting the first 8.
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len: u8,
    /// Type-specific; in a Fragment header, bytes 0..2 are the offset
    /// (13 bits), two reserved bits and the M flag.
    pub rest: [u8; 6],
}

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// IPv4 flags/fragment-offset field: Don't Fragment.
pub const IPV4_DF: u16 = 0x4000;
/// More Fragments and the 13-bit offset: non-zero means a fragment.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;
/// The 13-bit fragment offset alone: zero in a first fragment.
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
pub const ICMPV6_TIME_EXCEED: u8 = 3;

const _: () = assert!(core::mem::size_of::<Ports>() == 4);
const _: () = assert!(core::mem::size_of::<IcmpHdr>() == 8);
const _: () = assert!(core::mem::size_of::<Ipv6ExtHdr>() == 8);
