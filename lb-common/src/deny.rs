//! The deny list: source prefixes whose packets the XDP program drops before
//! anything else (before the VIP lookup, for every destination, so the L7
//! proxy's listeners on the same host are protected too).
//!
//! Three maps:
//!
//! - `DENY_V4`: LPM trie, key `{prefix_len: u32, addr: u32}` (8 bytes; the
//!   address as loaded from the IPv4 header, network byte order, like
//!   [`crate::flow::FlowKey`]), value [`DenyValue`].
//! - `DENY_V6`: LPM trie, key `{prefix_len: u32, addr: [u32; 4]}` (20 bytes,
//!   the four words as loaded), value [`DenyValue`].
//! - `DENY_STATE`: array with one `u32` of `DENY_*_PRESENT` bits: which trie
//!   holds entries. The datapath reads it first (an array lookup with a
//!   constant key, which the verifier inlines) and looks the source up in a
//!   trie only when that family's bit is set, so an empty deny list costs
//!   the fast path one load, not a trie walk.
//!
//! Entries carry their expiry in `bpf_ktime_get_ns` terms (CLOCK_MONOTONIC
//! nanoseconds). Userspace removes expired entries (the daemon every
//! second); the datapath also compares the expiry with the clock on a trie
//! hit, so a deny stops the instant it runs out. The clock is read only on
//! a hit, never on the fast path.

/// Entries per trie (per address family).
pub const DENY_MAX_ENTRIES: u32 = 65536;

/// `DENY_STATE[0]` bit: `DENY_V4` holds at least one entry.
pub const DENY_V4_PRESENT: u32 = 1 << 0;
/// `DENY_STATE[0]` bit: `DENY_V6` holds at least one entry.
pub const DENY_V6_PRESENT: u32 = 1 << 1;

/// An expiry that never comes.
pub const DENY_FOREVER: u64 = u64::MAX;

/// The value of a deny entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyValue {
    /// Why: the rule id of whoever denied the prefix (opaque to the
    /// datapath).
    pub reason: u32,
    /// The entry's own prefix length, so that userspace can tell an exact
    /// match from a covering shorter prefix when it looks a prefix up (a
    /// trie lookup is a longest-prefix match).
    pub prefix_len: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`) after which the
    /// entry no longer drops anything; [`DENY_FOREVER`] for never.
    pub expires_ns: u64,
}
const _: () = assert!(core::mem::size_of::<DenyValue>() == 16);

impl DenyValue {
    /// True while the entry drops packets at time `now_ns`.
    #[inline(always)]
    pub const fn active(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

// SAFETY: `#[repr(C)]`, only integers, no implicit padding (4 + 4 + 8 ==
// 16, asserted above), every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DenyValue {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exclusive() {
        let v = DenyValue {
            reason: 7,
            prefix_len: 32,
            expires_ns: 100,
        };
        assert!(v.active(0));
        assert!(v.active(99));
        assert!(!v.active(100));
        assert!(!v.active(u64::MAX));
        let forever = DenyValue {
            expires_ns: DENY_FOREVER,
            ..v
        };
        assert!(forever.active(u64::MAX - 1));
    }
}
