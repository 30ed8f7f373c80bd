//! Backends as the datapath sees them, the `BACKENDS` array's values.

/// The backend is present (an index with this flag clear is a free slot).
pub const BACKEND_F_ACTIVE: u32 = 1 << 0;
/// The backend's address is IPv6 (else IPv4 in word 0).
pub const BACKEND_F_V6: u32 = 1 << 1;

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
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<BackendMeta>() == 28);
