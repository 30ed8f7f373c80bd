//! Per-CPU traffic counters that the XDP program keeps and `xlb stats` reads.

/// Which bucket of the protocol counters a frame falls into.
///
/// The discriminant is the index into [`GlobalCounters::classes`], so the
/// order is part of the map's ABI: append, never reorder.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoClass {
    /// IPv4 carrying TCP.
    Tcp4 = 0,
    /// IPv4 carrying UDP.
    Udp4 = 1,
    /// IPv4 carrying ICMP.
    Icmp4 = 2,
    /// IPv4 carrying any other protocol.
    OtherIp4 = 3,
    /// IPv6 carrying TCP.
    Tcp6 = 4,
    /// IPv6 carrying UDP.
    Udp6 = 5,
    /// IPv6 carrying ICMPv6.
    Icmp6 = 6,
    /// IPv6 carrying any other next header.
    OtherIp6 = 7,
    /// Ethernet frames that are neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NonIp = 8,
    /// Frames too short for the headers they announce, or with an invalid
    /// IP header; passed to the stack, which will drop them itself.
    Malformed = 9,
}

/// Number of protocol classes.
pub const PROTO_CLASSES: u32 = 10;

impl ProtoClass {
    /// All classes in index order.
    pub const ALL: [ProtoClass; PROTO_CLASSES as usize] = [
        ProtoClass::Tcp4,
        ProtoClass::Udp4,
        ProtoClass::Icmp4,
        ProtoClass::OtherIp4,
        ProtoClass::Tcp6,
        ProtoClass::Udp6,
        ProtoClass::Icmp6,
        ProtoClass::OtherIp6,
        ProtoClass::NonIp,
        ProtoClass::Malformed,
    ];

    /// Stable lower-case name used in CLI output and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            ProtoClass::Tcp4 => "tcp4",
            ProtoClass::Udp4 => "udp4",
            ProtoClass::Icmp4 => "icmp4",
            ProtoClass::OtherIp4 => "other_ip4",
            ProtoClass::Tcp6 => "tcp6",
            ProtoClass::Udp6 => "udp6",
            ProtoClass::Icmp6 => "icmp6",
            ProtoClass::OtherIp6 => "other_ip6",
            ProtoClass::NonIp => "non_ip",
            ProtoClass::Malformed => "malformed",
        }
    }
}

/// Packets and bytes seen, one value per CPU in a per-CPU array.
///
/// Bytes are whole frames as XDP sees them (Ethernet header included, no FCS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounter {
    /// Frames counted.
    pub packets: u64,
    /// Sum of the frames' lengths in bytes.
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<PacketCounter>() == 16);

impl PacketCounter {
    /// Adds another CPU's (or another bucket's) counts to this one.
    pub fn add(&mut self, other: &PacketCounter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// The single entry of the per-CPU `COUNTERS` array: every frame's protocol
/// class and outcome. One value, so the datapath pays one map lookup per
/// frame for both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    /// Indexed by [`ProtoClass`].
    pub classes: [PacketCounter; PROTO_CLASSES as usize],
    /// Indexed by [`crate::reasons::Reason`]; `REASONS` (32) slots, of
    /// which the first `Reason::COUNT` are in use.
    pub reasons: [PacketCounter; crate::reasons::REASONS as usize],
}

const _: () = assert!(
    core::mem::size_of::<GlobalCounters>()
        == 16 * (PROTO_CLASSES as usize + crate::reasons::REASONS as usize)
);
const _: () = assert!(core::mem::size_of::<GlobalCounters>() == 16 * (10 + 32));

impl GlobalCounters {
    /// Adds another CPU's counters to these.
    pub fn add(&mut self, other: &GlobalCounters) {
        for (a, b) in self.classes.iter_mut().zip(&other.classes) {
            a.add(b);
        }
        for (a, b) in self.reasons.iter_mut().zip(&other.reasons) {
            a.add(b);
        }
    }
}
