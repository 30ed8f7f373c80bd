//! Names and sizes of the BPF maps, shared so that the loader finds exactly
//! what the eBPF object declares.

/// Per-CPU array of [`crate::counters::PacketCounter`] indexed by
/// [`crate::counters::ProtoClass`].
pub const PROTO_COUNTERS: &str = "PROTO_COUNTERS";

/// Name of the XDP entry point in the eBPF object.
pub const XDP_PROGRAM: &str = "xlb_xdp";
