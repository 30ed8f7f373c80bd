//! Names of the BPF maps and programs, shared so that the loader finds
//! exactly what the eBPF object declares.

/// Per-CPU array with one [`crate::counters::GlobalCounters`]: packets and
/// bytes per protocol class and per outcome.
pub const COUNTERS: &str = "COUNTERS";
/// Hash map [`crate::vip::VipKey`] → [`crate::vip::VipMeta`].
pub const VIPS: &str = "VIPS";
/// Array of backend indices: `(vip.index * 2 + vip.table) * M + slot`.
pub const MAGLEV: &str = "MAGLEV";
/// Array of [`crate::backend::BackendMeta`].
pub const BACKENDS: &str = "BACKENDS";
/// LRU hash map `flow::FlowKey` → [`crate::conntrack::ConnValue`].
pub const CONNTRACK: &str = "CONNTRACK";
/// Array with one [`crate::settings::Settings`].
pub const SETTINGS: &str = "SETTINGS";
/// Per-CPU array with one [`crate::settings::FloodBudget`].
pub const FLOOD_GUARD: &str = "FLOOD_GUARD";
/// Per-CPU array of `PacketCounter` per VIP row.
pub const VIP_STATS: &str = "VIP_STATS";
/// Per-CPU array of `PacketCounter` per backend index.
pub const BACKEND_STATS: &str = "BACKEND_STATS";

/// The XDP balancer entry point.
pub const XDP_PROGRAM: &str = "xlb_xdp";
/// The XDP decapsulation program for backends (`xlb decap`).
pub const XDP_DECAP_PROGRAM: &str = "xlb_decap";
