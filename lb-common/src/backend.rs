//! Backends as the datapath sees them, the `BACKENDS` array's values.

/// The backend is present (an index with this flag clear is a free slot).
pub const BACKEND_F_ACTIVE: u32 = 1 << 0;
/// The backend's address is IPv6 (else IPv4 in word 0).
pub const BACKEND_F_V6: u32 = 1 << 1;
/// The backend's next hop is behind another interface: send with
/// `XDP_REDIRECT` through `TX_DEVMAP[tx_port]`, source MAC from
/// `TX_PORTS[tx_port]` (else `XDP_TX` back out of the receiving NIC).
pub const BACKEND_F_REDIRECT: u32 = 1 << 2;

/// `BACKENDS` value: where to send a flow's packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendMeta {
    /// Backend address, network byte order (IPv4 in word 0).
    pub addr: [u32; 4],
    /// `BACKEND_F_*`.
    pub flags: u32,
    /// MAC of the next hop towards the backend: the backend itself when it
    /// is on-link (DSR always; IPIP usually), else the gateway.
    pub next_hop_mac: [u8; 6],
    /// Slot in `TX_PORTS`/`TX_DEVMAP` when `BACKEND_F_REDIRECT` is set.
    pub tx_port: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<BackendMeta>() == 28);

/// Most egress interfaces besides the receiving one (`TX_PORTS`,
/// `TX_DEVMAP` entries).
pub const MAX_TX_PORTS: u32 = 16;

/// `TX_PORTS` value: what a frame redirected to another interface needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPort {
    /// The egress interface's index (also written to `TX_DEVMAP`).
    pub ifindex: u32,
    /// The egress interface's MAC: the redirected frame's source.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<TxPort>() == 12);
