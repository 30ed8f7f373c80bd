//! Why the XDP balancer did what it did to a packet: one per-CPU counter per
//! reason, so "it doesn't forward" is answered by `xlb stats`.

/// Outcome of one packet. The discriminant indexes
/// `GlobalCounters::reasons`: append only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not addressed to a VIP: passed to the stack untouched.
    PassNotVip = 0,
    /// Not IPv4/IPv6: passed untouched.
    PassNonIp = 1,
    /// L7 VIP (`XDP_PASS` to the local proxy).
    PassL7 = 2,
    /// Forwarded, flow found in the connection table.
    TxConntrackHit = 3,
    /// Forwarded, new flow placed by the Maglev table.
    TxNewFlow = 4,
    /// Forwarded by the Maglev table but not remembered: the new-flow
    /// budget for this second was spent (flood guard).
    TxFloodGuard = 5,
    /// Forwarded an ICMP error to the backend owning the quoted flow: the
    /// connection table's, else the Maglev table's (never inserted).
    TxIcmpToBackend = 6,
    /// Answered with ICMP "fragmentation needed"/"packet too big".
    TxIcmpTooBig = 7,
    /// Passed to the stack (which drops it): headers truncated or invalid.
    PassMalformed = 8,
    /// Dropped: the VIP has no backend with weight > 0.
    DropNoBackend = 9,
    /// Dropped: the table named a backend slot that is not active.
    DropBadBackend = 10,
    /// Dropped: headroom adjustment for encapsulation failed.
    DropEncapFailed = 11,
    /// Passed: an ICMP error whose quote names no VIP flow (not TCP/UDP, a
    /// later fragment, not from the address the error is sent to, or not
    /// to a VIP).
    PassIcmpUnknownFlow = 12,
    /// Passed to the stack: an IPv6 extension-header chain longer than the
    /// parser follows.
    PassUnsupportedHeader = 13,
    /// Decap program: outer header removed, inner packet passed up.
    PassDecapsulated = 14,
    /// Forwarded a later IP fragment by the 3-tuple hash: no first
    /// fragment of its datagram was seen (it arrived first, or its entry
    /// was evicted from `FRAGMENTS`).
    TxFragment = 15,
    /// Dropped: the source address lies in a denied prefix (the deny
    /// list, `lb_common::deny`), checked before anything else.
    DropDenied = 16,
    /// Answered an ICMP/ICMPv6 echo request to a VIP from XDP.
    TxEchoReply = 17,
    /// Dropped: larger than `backend_mtu` once encapsulated, and the VIP's
    /// `too_big` policy is `drop` (or no ICMP error may be sent about it:
    /// it is itself an ICMP error, or an IPv4 header with options).
    DropTooBig = 18,
    /// Forwarded a first IP fragment (offset 0, ports present) by its
    /// 5-tuple like an unfragmented packet of its flow; its backend is
    /// remembered in `FRAGMENTS` for the datagram's later fragments.
    TxFragmentFirst = 19,
    /// Forwarded a later IP fragment to the backend its first fragment
    /// went to (found in `FRAGMENTS`).
    TxFragmentFollowed = 20,
}

/// Counter slots per outcome in `GlobalCounters::reasons`: room for
/// reasons yet to be appended without changing the map's layout. Only the
/// first [`Reason::COUNT`] are in use.
pub const REASONS: u32 = 32;

impl Reason {
    /// Number of defined reasons (the used prefix of the counter slots).
    pub const COUNT: usize = 21;

    /// All reasons in index order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::PassNotVip,
        Reason::PassNonIp,
        Reason::PassL7,
        Reason::TxConntrackHit,
        Reason::TxNewFlow,
        Reason::TxFloodGuard,
        Reason::TxIcmpToBackend,
        Reason::TxIcmpTooBig,
        Reason::PassMalformed,
        Reason::DropNoBackend,
        Reason::DropBadBackend,
        Reason::DropEncapFailed,
        Reason::PassIcmpUnknownFlow,
        Reason::PassUnsupportedHeader,
        Reason::PassDecapsulated,
        Reason::TxFragment,
        Reason::DropDenied,
        Reason::TxEchoReply,
        Reason::DropTooBig,
        Reason::TxFragmentFirst,
        Reason::TxFragmentFollowed,
    ];

    /// Stable snake_case name for CLI output and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassNonIp => "pass_non_ip",
            Reason::PassL7 => "pass_l7",
            Reason::TxConntrackHit => "tx_conntrack_hit",
            Reason::TxNewFlow => "tx_new_flow",
            Reason::TxFloodGuard => "tx_flood_guard",
            Reason::TxIcmpToBackend => "tx_icmp_to_backend",
            Reason::TxIcmpTooBig => "tx_icmp_too_big",
            Reason::PassMalformed => "pass_malformed",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropBadBackend => "drop_bad_backend",
            Reason::DropEncapFailed => "drop_encap_failed",
            Reason::PassIcmpUnknownFlow => "pass_icmp_unknown_flow",
            Reason::PassUnsupportedHeader => "pass_unsupported_header",
            Reason::PassDecapsulated => "pass_decapsulated",
            Reason::TxFragment => "tx_fragment",
            Reason::DropDenied => "drop_denied",
            Reason::TxEchoReply => "tx_echo_reply",
            Reason::DropTooBig => "drop_too_big",
            Reason::TxFragmentFirst => "tx_fragment_first",
            Reason::TxFragmentFollowed => "tx_fragment_followed",
        }
    }
}

const _: () = assert!(Reason::COUNT <= REASONS as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_unique() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
            for other in &Reason::ALL[..i] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert_eq!(Reason::ALL[Reason::COUNT - 1], Reason::TxFragmentFollowed);
    }
}
