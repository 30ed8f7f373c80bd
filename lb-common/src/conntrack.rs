//! The connection table: which backend an established flow uses.

/// `CONNTRACK` value (key: `flow::FlowKey`).
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
