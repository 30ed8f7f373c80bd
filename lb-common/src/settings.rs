//! Instance-wide datapath settings, the single entry of the `SETTINGS` array.

/// Derive the IPIP outer source from the flow (Katran's scheme), so the
/// backends' NIC receive queues spread the load; else use `ipip_src_*`.
pub const SETTINGS_F_IPIP_SRC_FROM_FLOW: u32 = 1 << 0;

/// No L4 VIP has port 0: the datapath skips the port-wildcard lookup,
/// which otherwise costs every non-VIP packet a second hash lookup.
pub const SETTINGS_F_NO_PORT_WILDCARDS: u32 = 1 << 1;

/// `SETTINGS[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Maglev table size M (prime); the `MAGLEV` array holds
    /// `MAX_VIPS * 2 * M` entries.
    pub maglev_size: u32,
    /// `SETTINGS_F_*`.
    pub flags: u32,
    /// Fixed IPIP outer source for IPv4, network byte order.
    pub ipip_src_v4: u32,
    /// Largest IP packet the path to backends carries (bytes).
    pub backend_mtu: u32,
    /// Fixed IPIP outer source for IPv6 (or the /96 prefix the derived
    /// source is placed in), network byte order.
    pub ipip_src_v6: [u32; 4],
    /// Connection-table inserts allowed per CPU per second. Not read by the
    /// datapath: the daemon turns it into [`FloodBudget`] refills.
    pub new_flows_per_cpu_sec: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 40);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            maglev_size: crate::consts::DEFAULT_MAGLEV_SIZE,
            flags: SETTINGS_F_IPIP_SRC_FROM_FLOW,
            ipip_src_v4: 0,
            backend_mtu: crate::consts::DEFAULT_BACKEND_MTU,
            ipip_src_v6: [0; 4],
            new_flows_per_cpu_sec: crate::consts::DEFAULT_NEW_FLOWS_PER_CPU_SEC,
            _pad: 0,
        }
    }
}

/// Per-CPU new-flow budget (`FLOOD_GUARD` per-CPU array): connection-table
/// inserts this CPU may still make.
///
/// The datapath only decrements it; the daemon refills every CPU's budget
/// to `new_flows_per_cpu_sec / FLOOD_REFILLS_PER_SEC` on a timer. Reading
/// the clock in the datapath instead cost about 30 ns per new flow
/// (measured with `cargo xtask bench l4`); a refill is one map write per
/// tick. If the daemon stops refilling, new flows are still forwarded by the
/// Maglev table, just not remembered: the safe direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodBudget {
    /// Inserts left until the next refill.
    pub remaining: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FloodBudget>() == 8);

/// How often the daemon refills [`FloodBudget`] (per second).
pub const FLOOD_REFILLS_PER_SEC: u32 = 10;
