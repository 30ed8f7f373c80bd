//! Limits of the datapath. Each is the default; the loader may override the
//! map sizes at load time (`max_entries`), so they are not baked into the
//! eBPF object's logic.

/// Most L4 VIPs one instance serves (entries in `VIPS`, rows in `MAGLEV`).
pub const MAX_VIPS: u32 = 64;

/// Most backends over all VIPs (entries in `BACKENDS`).
pub const MAX_BACKENDS: u32 = 4096;

/// Default Maglev table size per VIP: a prime, as the paper requires, large
/// enough (≥ 100 × backends) for even shares with up to ~650 backends.
pub const DEFAULT_MAGLEV_SIZE: u32 = 65537;

/// Connection-table entries (LRU): established flows remembered so they keep
/// their backend when the backend set changes.
pub const CONNTRACK_SIZE: u32 = 1 << 20;

/// Default cap on connection-table inserts per CPU per second; beyond it new
/// flows are still forwarded by the Maglev table but not remembered, so a
/// SYN flood cannot evict established flows (Katran's "LRU bypass").
pub const DEFAULT_NEW_FLOWS_PER_CPU_SEC: u32 = 125_000;

/// Default MTU of the path to backends, used to decide when encapsulation
/// would exceed it (bytes of IP packet, not counting Ethernet).
pub const DEFAULT_BACKEND_MTU: u32 = 1500;

/// Table value meaning "no backend": the VIP has none with weight > 0.
pub const NO_BACKEND: u32 = u32::MAX;

/// Datagrams whose first fragment's backend is remembered (LRU
/// `FRAGMENTS`): enough for every datagram in flight for a few
/// milliseconds at 10⁶ fragmented datagrams per second.
pub const FRAGMENTS_SIZE: u32 = 16384;
