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
/// LRU hash map `flow::FlowKey` → [`crate::conntrack::ConnValue`]: the
/// IPv6 flows' connection table (named before IPv4 got its own table, and
/// kept so that pins of earlier versions are adopted).
pub const CONNTRACK: &str = "CONNTRACK";
/// LRU hash map [`crate::conntrack::FlowKeyV4`] →
/// [`crate::conntrack::ConnValue`]: the IPv4 flows' connection table.
pub const CONNTRACK_V4: &str = "CONNTRACK_V4";
/// LRU hash map [`crate::conntrack::FragKey`] →
/// [`crate::conntrack::FragValue`]: the backend of each fragmented
/// datagram's first fragment.
pub const FRAGMENTS: &str = "FRAGMENTS";
/// Array of [`crate::backend::TxPort`]: egress interfaces for redirect.
pub const TX_PORTS: &str = "TX_PORTS";
/// Device map (`BPF_MAP_TYPE_DEVMAP`) slot → ifindex, for
/// `bpf_redirect_map`.
pub const TX_DEVMAP: &str = "TX_DEVMAP";
/// Array with one [`crate::settings::Settings`].
pub const SETTINGS: &str = "SETTINGS";
/// Per-CPU array with one [`crate::settings::FloodBudget`].
pub const FLOOD_GUARD: &str = "FLOOD_GUARD";
/// Per-CPU array of `PacketCounter` per VIP row.
pub const VIP_STATS: &str = "VIP_STATS";
/// Per-CPU array of `PacketCounter` per VIP row: TCP packets without SYN
/// that found no connection-table entry and were placed by the Maglev
/// table. On an anycast node these are flows that began on another node
/// (ECMP moved them here after a node or link change); they keep their
/// backend only if this node's table agrees with the other node's. A
/// counter of its own rather than a `Reason`, because it is a second look
/// at a packet whose outcome (`TxNewFlow`) is already counted.
pub const MIDFLOW_MISSES: &str = "MIDFLOW_MISSES";
/// Per-CPU array of `PacketCounter` per backend index.
pub const BACKEND_STATS: &str = "BACKEND_STATS";
/// LPM trie of denied IPv4 source prefixes → [`crate::deny::DenyValue`].
pub const DENY_V4: &str = "DENY_V4";
/// LPM trie of denied IPv6 source prefixes → [`crate::deny::DenyValue`].
pub const DENY_V6: &str = "DENY_V6";
/// Array with one `u32` of `deny::DENY_*_PRESENT` bits.
pub const DENY_STATE: &str = "DENY_STATE";

/// The maps the daemon pins under its instance folder: the L4 datapath's
/// state and counters, which `xlb stats`/`xlb flow` and operators' tools
/// read, and the deny list that the daemon's L7 rate limiter and `xlb`
/// subcommands write. (Benchmark maps and the L7 worker-steering maps are not pinned.)
pub const PINNED: &[&str] = &[
    COUNTERS,
    VIPS,
    MAGLEV,
    BACKENDS,
    CONNTRACK,
    CONNTRACK_V4,
    SETTINGS,
    FLOOD_GUARD,
    VIP_STATS,
    BACKEND_STATS,
    MIDFLOW_MISSES,
    DENY_V4,
    DENY_V6,
    DENY_STATE,
];

/// The XDP balancer entry point.
pub const XDP_PROGRAM: &str = "xlb_xdp";
/// The XDP decapsulation program for backends (`xlb decap`).
pub const XDP_DECAP_PROGRAM: &str = "xlb_decap";

/// `REUSEPORT_SOCKARRAY`: worker id → that worker's listening socket (one
/// `SO_REUSEPORT` group).
pub const REUSEPORT_SOCKARRAY: &str = "REUSEPORT_SOCKARRAY";
/// Array of `u32` per worker id: `reuseport::WORKER_ACTIVE` or
/// `reuseport::WORKER_DRAINING`.
pub const WORKER_STATE: &str = "WORKER_STATE";
/// Hash map with one [`crate::reuseport::ActiveWorkers`] at
/// `reuseport::ACTIVE_WORKERS_KEY`, replaced whole.
pub const ACTIVE_WORKERS: &str = "ACTIVE_WORKERS";
/// Per-CPU array of `u64` per worker id: connections steered to it.
pub const WORKER_ACCEPTS: &str = "WORKER_ACCEPTS";
/// Per-CPU array of `u64` per [`crate::reuseport::Fallback`]: connections
/// left to the kernel's own reuseport hash.
pub const REUSEPORT_FALLBACKS: &str = "REUSEPORT_FALLBACKS";
/// The `sk_reuseport` worker-steering entry point.
pub const REUSEPORT_PROGRAM: &str = "xlb_reuseport";
