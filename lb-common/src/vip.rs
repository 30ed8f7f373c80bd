//! L4 VIP keys and per-VIP settings, the `VIPS` hash map's types.

/// Address family tag stored in keys (values of `AF_INET`/`AF_INET6`).
pub const FAMILY_V4: u8 = 2;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u8 = 10;

/// `VIPS` key: destination address, port and protocol as on the wire.
///
/// `port == 0` is a port-wildcard VIP, tried after the exact port. IPv4
/// addresses occupy word 0; the other words are zero. Addresses and port are
/// stored in network byte order, exactly as read from the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

/// Forward by rewriting the destination MAC (backends hold the VIP on lo).
pub const VIP_MODE_DSR: u32 = 0;
/// Forward by IP-in-IP encapsulation to the backend's address.
pub const VIP_MODE_IPIP: u32 = 1;

/// Pass to the local stack, where the L7 proxy listens (`XDP_PASS`).
pub const VIP_MODE_L7: u32 = 2;

/// Set in [`VipKey::family`] for the entry that IP fragments to an address
/// and protocol use (`port` 0). Non-first fragments carry no ports, so all
/// fragments of a datagram are matched by address and protocol only, and
/// are hashed by the 3-tuple (the Maglev paper's approach). Userspace points
/// this entry at the first VIP configured on that address and protocol.
pub const FAMILY_FRAGMENTS: u8 = 0x80;

/// Hash only source/destination address and protocol (no ports).
pub const VIP_F_HASH_NO_PORTS: u32 = 1 << 0;
/// Do not use the connection table for this VIP (pure Maglev; e.g. for UDP
/// services where every datagram may go anywhere the table says).
pub const VIP_F_NO_CONNTRACK: u32 = 1 << 1;

/// Answer a packet that would exceed `backend_mtu` once encapsulated with
/// a counted drop (`drop_too_big`) instead of an ICMP "fragmentation
/// needed" / "packet too big" to its sender (the default). Userspace
/// resolves the VIP's `too_big:` over the global one into this flag.
pub const VIP_F_TOO_BIG_DROP: u32 = 1 << 2;

/// `VIPS` entries with `proto` ICMP (1) or ICMPv6 (58), `port` 0 and the
/// plain family mark an address whose echo requests XDP answers (`ping:`).
/// Their value is the `VipMeta` of the first VIP on the address (its row
/// counts the echo traffic). No TCP/UDP VIP can collide with them.
pub const ECHO_PORT: u16 = 0;

/// `VIPS` value: everything the datapath needs to forward a VIP's packets.
///
/// Updated as a whole by userspace (a hash-map update replaces the element
/// atomically), which is how a new Maglev table is switched in: the other
/// `table` half is written first, then this value with the new `table`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Row of this VIP in `MAGLEV` and index in `VIP_STATS`.
    pub index: u32,
    /// Which of the VIP's two Maglev table halves is live (0 or 1).
    pub table: u32,
    /// `VIP_MODE_*`.
    pub mode: u32,
    /// `VIP_F_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<VipMeta>() == 16);

impl VipKey {
    /// An IPv4 VIP; `addr` and `port` in network byte order.
    pub const fn v4(addr: u32, port: u16, proto: u8) -> VipKey {
        VipKey {
            addr: [addr, 0, 0, 0],
            port,
            proto,
            family: FAMILY_V4,
        }
    }

    /// An IPv6 VIP; `addr` words and `port` in network byte order.
    pub const fn v6(addr: [u32; 4], port: u16, proto: u8) -> VipKey {
        VipKey {
            addr,
            port,
            proto,
            family: FAMILY_V6,
        }
    }
}
