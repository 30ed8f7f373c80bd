//! The connection table: which backend an established flow uses.
//!
//! Two tables, one per IP family: `CONNTRACK_V4` keyed by [`FlowKeyV4`]
//! (16 bytes) and `CONNTRACK` keyed by `flow::FlowKey` (40 bytes, IPv6).
//! The kernel hashes the whole key with jhash on every lookup and compares
//! it whole in the bucket; with one 40-byte key for both families those two
//! steps were about a third of an IPv4 connection-table hit (`cargo xtask
//! bench l4`, docs/bench/l4.md), most of it over twelve zero words.

use crate::flow::FlowKey;

/// `CONNTRACK_V4` key: an IPv4 flow, the fields of `flow::FlowKey` with
/// 4-byte addresses, in the same wire byte order.
///
/// Layout (16 bytes, no implicit padding): `src` 0..4, `dst` 4..8,
/// `src_port` 8..10, `dst_port` 10..12, `proto` 12, padding 13..16 (always
/// zero: it takes part in the hash and the comparison).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKeyV4 {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    _pad: u8,
    _pad16: u16,
}
const _: () = assert!(core::mem::size_of::<FlowKeyV4>() == 16);

impl FlowKeyV4 {
    /// The IPv4 table's key of an IPv4 flow key (address words 1..4 are
    /// zero in every IPv4 `FlowKey` and are dropped).
    #[inline(always)]
    pub const fn of(k: &FlowKey) -> FlowKeyV4 {
        FlowKeyV4 {
            src: k.src[0],
            dst: k.dst[0],
            src_port: k.src_port,
            dst_port: k.dst_port,
            proto: k.proto,
            _pad: 0,
            _pad16: 0,
        }
    }

    /// The same flow as a `FlowKey` (what the flow hash and tools use).
    #[inline(always)]
    pub const fn widen(&self) -> FlowKey {
        FlowKey::v4(self.src, self.dst, self.src_port, self.dst_port, self.proto)
    }
}

/// Whether `k` has the shape of an IPv4 key (address words 1..4 zero): how
/// userspace, which gets a bare `FlowKey`, picks the table. The datapath
/// picks by the packet's family instead; the two differ only for an IPv6
/// flow whose two addresses both end in 96 zero bits, which never reaches
/// a VIP whose address does not.
#[inline(always)]
pub const fn is_v4_shaped(k: &FlowKey) -> bool {
    k.src[1] | k.src[2] | k.src[3] | k.dst[1] | k.dst[2] | k.dst[3] == 0
}

/// `CONNTRACK` and `CONNTRACK_V4` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnValue {
    /// Index into `BACKENDS`.
    pub backend: u32,
    /// Row of the VIP the flow belongs to (so a removed VIP's flows are not
    /// followed into a reused backend slot).
    pub vip: u32,
    /// `flow::flow_hash` of the key, stored at insert so that a hit
    /// towards an IPIP backend does not hash the flow again for the outer
    /// source (about 10 ns per packet, `cargo xtask bench l4`).
    pub hash: u32,
}
const _: () = assert!(core::mem::size_of::<ConnValue>() == 12);

/// `FRAGMENTS` key: one IP datagram being fragmented (RFC 791 §3.2 /
/// RFC 8200 §4.5: source, destination, protocol and identification name
/// it). Addresses in wire order as in `flow::FlowKey`; the IPv4 16-bit
/// identification or the IPv6 32-bit one, as loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);

/// `FRAGMENTS` value: where the datagram's first fragment went, so its
/// later fragments (no ports) follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue {
    /// Index into `BACKENDS`.
    pub backend: u32,
    /// The flow hash of the first fragment's 5-tuple (outer IPIP source).
    pub hash: u32,
    /// The VIP the first fragment matched (mode, flags, row).
    pub vip: crate::vip::VipMeta,
}
const _: () = assert!(core::mem::size_of::<FragValue>() == 24);
