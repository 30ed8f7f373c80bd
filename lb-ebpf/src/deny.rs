//! The deny list check: is this source inside a denied prefix? See
//! `lb_common::deny` for the maps. Called by the parser right after the IP
//! header is validated, before ports or extension headers are read, so
//! nothing a denied source sends gets further than that.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use lb_common::deny::{DenyValue, DENY_V4_PRESENT, DENY_V6_PRESENT};

use crate::maps::{DENY_STATE, DENY_V4, DENY_V6};

/// The `DENY_STATE` presence bits (0 before userspace wrote any).
#[inline(always)]
pub fn present() -> u32 {
    // An array lookup with a constant key: the verifier inlines it into a
    // bounds-free load, the only cost an empty deny list adds per frame.
    match DENY_STATE.get(0) {
        Some(b) => *b,
        None => 0,
    }
}

/// Trie lookups per frame at most: the longest match, and, while the
/// match has expired (userspace removes it within a second), the match
/// among the shorter prefixes around it. So an expired /32 inside a denied
/// /24 does not let the /32's traffic through in that second.
const MAX_LOOKUPS: usize = 4;

/// The entry is still in force: the clock is read only on a trie hit.
#[inline(always)]
fn active(v: &DenyValue) -> bool {
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    v.active(now)
}

/// The IPv4 source `src` (as loaded from the header) is denied.
#[inline(always)]
pub fn denied_v4(src: u32) -> bool {
    if present() & DENY_V4_PRESENT == 0 {
        return false;
    }
    let mut len = 32;
    for _ in 0..MAX_LOOKUPS {
        // A key's prefix length bounds the match: entries up to `len` bits.
        let Some(v) = DENY_V4.get(Key::new(len, src)) else {
            return false;
        };
        if active(v) {
            return true;
        }
        if v.prefix_len == 0 || v.prefix_len > len {
            return false;
        }
        len = v.prefix_len - 1;
    }
    false
}

/// The IPv6 source `src` (four words as loaded) is denied.
#[inline(always)]
pub fn denied_v6(src: [u32; 4]) -> bool {
    if present() & DENY_V6_PRESENT == 0 {
        return false;
    }
    let mut len = 128;
    for _ in 0..MAX_LOOKUPS {
        let Some(v) = DENY_V6.get(Key::new(len, src)) else {
            return false;
        };
        if active(v) {
            return true;
        }
        if v.prefix_len == 0 || v.prefix_len > len {
            return false;
        }
        len = v.prefix_len - 1;
    }
    false
}
