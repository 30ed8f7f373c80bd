//! Weighted Maglev lookup-table builder (userspace only, `std` feature).
//!
//! Builds the table of Maglev consistent hashing (Eisenbud et al., "Maglev:
//! A Fast and Reliable Software Network Load Balancer", NSDI 2016, §3.4) that
//! the daemon copies into a BPF array map. The eBPF side looks a flow up with
//! `table[slot(flow_hash(key), m)]` ([`crate::flow::slot`],
//! [`crate::flow::flow_hash`]).
//!
//! # Algorithm
//!
//! * The table size `m` is prime (default [`DEFAULT_TABLE_SIZE`] = 65537), so
//!   that every `skip` in `1..m` generates a full permutation of the slots.
//! * Each backend's preference list is the permutation
//!   `p(j) = (offset + j·skip) mod m` with `offset = h₁(key) mod m` and
//!   `skip = h₂(key) mod (m−1) + 1`, where `h₁`, `h₂` are MurmurHash3 x86_32
//!   of the backend's identity bytes under two fixed seeds
//!   ([`OFFSET_SEED`], [`SKIP_SEED`]). Only `offset`, `skip` and the current
//!   position are kept per backend: memory is O(m + n), the n×m permutation
//!   matrix is never materialised.
//! * Backends take turns; on its turn a backend claims the next slot of its
//!   preference list that is still empty (the paper's `Populate`).
//! * Determinism: backends are sorted by identity bytes first, so the output
//!   depends only on the *set* of backends, never on the order they are
//!   passed in, nor on the machine, the compiler or the process (no
//!   `std::collections::hash_map::DefaultHasher`, whose output Rust does not
//!   promise to keep across releases, and no random state).
//!
//! # Weights
//!
//! The paper's §3.4 says backends with larger weights "take turns more
//! often". Here that is made exact in two steps:
//!
//! 1. **Quotas.** Backend i's target is `tᵢ = m·wᵢ/Σw` slots. Its quota `qᵢ`
//!    is `⌊tᵢ⌋` or `⌈tᵢ⌉`, by the largest-remainder (Hamilton) method, ties
//!    broken by identity order, so that `Σqᵢ = m`.
//! 2. **Turn order.** Backend i's k-th turn happens at virtual time
//!    `(k − ½)/wᵢ` (Sainte-Laguë / weighted fair queueing order; ties broken
//!    by identity order), and a backend stops taking turns when it has its
//!    quota. So at every point of the filling each backend has claimed slots
//!    in proportion to its weight, which is what keeps the disruption of a
//!    backend change low (every backend gets its early, most-preferred
//!    slots).
//!
//! With equal weights both steps reduce to the paper's round robin, and the
//! table is exactly the paper's.
//!
//! **Guarantee:** every backend gets exactly `qᵢ` slots, so
//! `|countᵢ − m·wᵢ/Σw| < 1` slot. Relative to its weight share that is an
//! error below `1/tᵢ`, i.e. within 1 % for every backend whose target is at
//! least 100 slots (weight share ≥ 0.153 % at m = 65537); no integer table
//! can do better than ½ slot, so the 1 % relative bound is impossible for
//! backends with fewer than 50 target slots. Measured at m = 65537
//! (`tests/maglev.rs`, worst over the backends): equal weights N=3 0.0031 %,
//! N=10 0.011 %, N=100 0.096 % (0.63 of 655.4 slots); weights 1,2,3,4
//! 0.0046 %; weights 1,1,2,1,3 0.0025 %; weights 100,1,1,1 0.11 %; weights
//! 1..=20 0.027 %. The absolute error is always below 1 slot (worst seen
//! 0.72).
//! A backend of weight 0 gets no slot (its absence or presence does not
//! change the table). If no backend has a positive weight, the table is full
//! of [`NO_BACKEND`].
//!
//! # Disruption
//!
//! Removing one backend moves that backend's slots (necessarily) and a small
//! fraction of the other backends' slots. `tests/maglev.rs` measures, at
//! m = 65537 and for every choice of the removed backend, the fraction of the
//! *remaining* backends' slots whose owner changes, and asserts that it is at
//! most [`REMOVAL_DISRUPTION_BOUND`] = 2 % for N ≤ 50 backends. Measured
//! (worst / mean over the removed backend):
//!
//! | backends               | worst   | mean    |
//! |------------------------|---------|---------|
//! | N=5, equal weights     | 0.120 % | 0.100 % |
//! | N=10, equal weights    | 0.309 % | 0.275 % |
//! | N=50, equal weights    | 1.233 % | 0.509 % |
//! | weights 1,1,2,1,3      | 0.154 % | 0.120 % |
//! | weights 1..=10         | 0.346 % | 0.245 % |
//!
//! The tables are deterministic, so these numbers are exact for those
//! backend sets (identities 10.0.0.i:80), not samples. The paper's
//! recommendation holds: keep m well above 100·N for low disruption.
//!
//! # Why not the `maglev` crate
//!
//! The `maglev` crate on crates.io (0.2) was assessed and not used:
//! * it keeps its lookup table private: there is nothing to copy into a BPF
//!   map, only its own `get(key)` can use the table;
//! * it hashes with `std::collections::hash_map::DefaultHasher` by default,
//!   whose output Rust does not promise to keep across releases, so two
//!   builds of xlb in one fleet could build different tables (a custom
//!   `BuildHasher` can be passed, but then the crate adds nothing);
//! * it materialises every backend's full permutation, N·M words (65537 ×
//!   100 backends × 8 bytes ≈ 52 MB), where O(M + N) is enough;
//! * it has no weights, and its table depends on the order of the nodes.
//!
//! # Why MurmurHash3 for the backend permutation
//!
//! The two hashes must be stable forever (every node in a fleet must build
//! the same table) and look independent. MurmurHash3 x86_32 under two
//! unrelated fixed seeds gives both, is the same function family as the flow
//! hash (one hash implementation, checked against published vectors, no new
//! dependency), and is what Katran does (MurmurHash3 with distinct seeds for
//! offset and skip). A keyed PRF such as SipHash would buy resistance to
//! chosen inputs, which does not matter here: backend identities come from
//! the operator's configuration, not from clients.

use core::cmp::Ordering;
use core::fmt;
use std::collections::BinaryHeap;
use std::vec;
use std::vec::Vec;

pub use crate::flow::slot;
use crate::flow::{murmur3_finish, murmur3_mix};

/// Default table size: the prime 65537, as in the Maglev paper and Katran.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Smallest table size accepted: the paper's `m ≥ 100·n` for one backend.
pub const MIN_TABLE_SIZE: u32 = 101;

/// Largest table size accepted (2²⁴ entries, 64 MiB of `u32`).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Value of a slot that no backend owns (only when no backend has a positive
/// weight). Not a valid backend id.
pub const NO_BACKEND: u32 = u32::MAX;

/// Seed of the hash that gives a backend's `offset`: the first 32 bits of
/// the fractional part of π.
pub const OFFSET_SEED: u32 = 0x243f_6a88;

/// Seed of the hash that gives a backend's `skip`: the first 32 bits of the
/// fractional part of e.
pub const SKIP_SEED: u32 = 0xb7e1_5162;

/// Upper bound on the fraction of the *remaining* backends' slots that change
/// owner when one of N ≤ 50 backends is removed, at m = 65537, asserted by
/// `tests/maglev.rs` for the sets listed in the module documentation (worst
/// measured: 1.233 %, N=50).
pub const REMOVAL_DISRUPTION_BOUND: f64 = 0.02;

/// One backend of a Maglev table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend<'a> {
    /// The value stored in the backend's table slots (e.g. its index in the
    /// backends map). Must not be [`NO_BACKEND`]; unique within a table.
    pub id: u32,
    /// The backend's identity, e.g. its address and port bytes in network
    /// order. Its permutation depends only on these bytes, so a backend keeps
    /// its preferred slots across restarts and renumbering. Unique within a
    /// table.
    pub key: &'a [u8],
    /// Relative weight; 0 means "gets no slot".
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaglevError {
    /// The table size is not a prime number.
    NotPrime {
        /// The rejected size.
        m: u32,
    },
    /// The table size is below [`MIN_TABLE_SIZE`] or below the number of
    /// backends with a positive weight.
    TooSmall {
        /// The rejected size.
        m: u32,
        /// The smallest size accepted for this backend set.
        min: u32,
    },
    /// The table size is above [`MAX_TABLE_SIZE`].
    TooLarge {
        /// The rejected size.
        m: u32,
    },
    /// A backend uses the reserved id [`NO_BACKEND`].
    ReservedId,
    /// Two backends have the same id.
    DuplicateId {
        /// The repeated id.
        id: u32,
    },
    /// Two backends have the same identity bytes (they would have the same
    /// permutation).
    DuplicateKey {
        /// Id of one of the two backends.
        id: u32,
        /// Id of the other.
        other: u32,
    },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::NotPrime { m } => write!(f, "Maglev table size {m} is not prime"),
            MaglevError::TooSmall { m, min } => {
                write!(f, "Maglev table size {m} is too small (minimum {min})")
            }
            MaglevError::TooLarge { m } => {
                write!(
                    f,
                    "Maglev table size {m} is too large (maximum {MAX_TABLE_SIZE})"
                )
            }
            MaglevError::ReservedId => {
                write!(f, "backend id {NO_BACKEND:#x} is reserved for empty slots")
            }
            MaglevError::DuplicateId { id } => write!(f, "two backends have the id {id}"),
            MaglevError::DuplicateKey { id, other } => {
                write!(f, "backends {id} and {other} have the same identity")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// Whether `n` is prime (trial division; `n` ≤ 2³² needs at most 32768
/// divisions).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d: u64 = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Checks a table size on its own: prime and within
/// [`MIN_TABLE_SIZE`]..=[`MAX_TABLE_SIZE`]. ([`build`] also requires `m` to
/// be at least the number of backends with a positive weight.)
pub fn validate_table_size(m: u32) -> Result<(), MaglevError> {
    if m > MAX_TABLE_SIZE {
        return Err(MaglevError::TooLarge { m });
    }
    if !is_prime(m) {
        return Err(MaglevError::NotPrime { m });
    }
    if m < MIN_TABLE_SIZE {
        return Err(MaglevError::TooSmall {
            m,
            min: MIN_TABLE_SIZE,
        });
    }
    Ok(())
}

/// MurmurHash3 x86_32 of `data` with `seed` (the reference algorithm,
/// little-endian blocks, tail included).
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        h = murmur3_mix(h, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, &byte) in tail.iter().enumerate() {
            k ^= u32::from(byte) << (8 * i);
        }
        // The tail mixes k into h without the rotate/multiply/add step.
        let k = k
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h ^= k;
    }
    // Lengths above 4 GiB wrap, as in the reference (which takes an int).
    murmur3_finish(h, data.len() as u32)
}

/// A backend's `(offset, skip)` in a table of size `m` (prime, ≥ 2): its
/// preference list is `(offset + j·skip) mod m` for `j = 0, 1, …`.
///
/// # Panics
///
/// If `m < 2` (no valid table is that small).
pub fn permutation(key: &[u8], m: u32) -> (u32, u32) {
    let offset = murmur3_32(key, OFFSET_SEED) % m;
    let skip = murmur3_32(key, SKIP_SEED) % (m - 1) + 1;
    (offset, skip)
}

/// A backend's next turn in the filling: its `turn`-th turn (1-based)
/// happens at virtual time `(2·turn − 1) / (2·weight)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Turn {
    /// `2·turn − 1`.
    num: u64,
    weight: u32,
    /// Index in identity order: the tie-breaker.
    idx: u32,
}

impl Ord for Turn {
    /// Earlier virtual time first, then lower identity index. `BinaryHeap` is
    /// a max-heap, so the ordering is reversed: the earliest turn is the
    /// greatest.
    fn cmp(&self, other: &Self) -> Ordering {
        let a = u128::from(self.num) * u128::from(other.weight);
        let b = u128::from(other.num) * u128::from(self.weight);
        b.cmp(&a).then(other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Builds the Maglev lookup table of size `m` for `backends`.
///
/// Returns `m` entries; entry `s` is the id of the backend that owns slot
/// `s`. Backends with weight 0 own no slot; if no backend has a positive
/// weight (or there is none) every entry is [`NO_BACKEND`]. The result
/// depends only on the set of `(id, key, weight)`, not on their order.
///
/// Errors: `m` not prime, below [`MIN_TABLE_SIZE`] or the number of
/// backends with a positive weight, above [`MAX_TABLE_SIZE`]; an id equal to
/// [`NO_BACKEND`]; two backends with the same id or the same key.
pub fn build(backends: &[Backend<'_>], m: u32) -> Result<Vec<u32>, MaglevError> {
    validate_table_size(m)?;

    // Identity order; also finds duplicate keys.
    let mut order: Vec<&Backend<'_>> = backends.iter().collect();
    order.sort_unstable_by(|a, b| a.key.cmp(b.key));
    for pair in order.windows(2) {
        if pair[0].key == pair[1].key {
            let (a, b) = (pair[0].id.min(pair[1].id), pair[0].id.max(pair[1].id));
            return Err(MaglevError::DuplicateKey { id: a, other: b });
        }
    }
    let mut ids: Vec<u32> = backends.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    if ids.last() == Some(&NO_BACKEND) {
        return Err(MaglevError::ReservedId);
    }
    for pair in ids.windows(2) {
        if pair[0] == pair[1] {
            return Err(MaglevError::DuplicateId { id: pair[0] });
        }
    }

    let active: Vec<&Backend<'_>> = order.into_iter().filter(|b| b.weight > 0).collect();
    let mut table = vec![NO_BACKEND; m as usize];
    if active.is_empty() {
        return Ok(table);
    }
    if (m as usize) < active.len() {
        return Err(MaglevError::TooSmall {
            m,
            min: u32::try_from(active.len()).unwrap_or(u32::MAX),
        });
    }

    // Quotas by largest remainder. m ≤ 2^24 and w < 2^32, so m·w < 2^56.
    let total: u64 = active.iter().map(|b| u64::from(b.weight)).sum();
    let mut quota: Vec<u32> = Vec::with_capacity(active.len());
    let mut remainder: Vec<(u64, usize)> = Vec::with_capacity(active.len());
    for (i, b) in active.iter().enumerate() {
        let target = u64::from(m) * u64::from(b.weight);
        // target / total ≤ m, so it fits in u32.
        quota.push((target / total) as u32);
        remainder.push((target % total, i));
    }
    let assigned: u64 = quota.iter().map(|&q| u64::from(q)).sum();
    let leftover = (u64::from(m) - assigned) as usize; // < active.len()
    remainder.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainder.iter().take(leftover) {
        quota[i] += 1;
    }

    // Per-backend state: O(n).
    let m64 = u64::from(m);
    let mut pos: Vec<u64> = Vec::with_capacity(active.len());
    let mut skip: Vec<u64> = Vec::with_capacity(active.len());
    for b in &active {
        let (o, s) = permutation(b.key, m);
        pos.push(u64::from(o));
        skip.push(u64::from(s));
    }
    let mut taken: Vec<u32> = vec![0; active.len()];
    let mut heap: BinaryHeap<Turn> = active
        .iter()
        .enumerate()
        .filter(|&(i, _)| quota[i] > 0)
        .map(|(i, b)| Turn {
            num: 1,
            weight: b.weight,
            idx: i as u32,
        })
        .collect();

    // Σ quota = m, so the table is full exactly when the heap runs dry; while
    // a turn is pending there is a free slot, and each backend's permutation
    // visits every slot, so the inner loop ends.
    while let Some(turn) = heap.pop() {
        let i = turn.idx as usize;
        loop {
            let p = pos[i] as usize;
            pos[i] = (pos[i] + skip[i]) % m64;
            if table[p] == NO_BACKEND {
                table[p] = active[i].id;
                break;
            }
        }
        taken[i] += 1;
        if taken[i] < quota[i] {
            heap.push(Turn {
                num: 2 * u64::from(taken[i]) + 1,
                ..turn
            });
        }
    }
    debug_assert!(table.iter().all(|&s| s != NO_BACKEND));
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_published_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(&[0, 0, 0, 0], 0), 0x2362_f9de);
        assert_eq!(murmur3_32(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_32(b"abc", 0), 0xb3dd_93fa);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            small,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
        );
        assert!(is_prime(65537));
        assert!(is_prime(4_294_967_291));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(561)); // Carmichael
        assert!(!is_prime(65535));
    }

    #[test]
    fn turn_order_is_weighted_fair() {
        let a = Turn {
            num: 1,
            weight: 1,
            idx: 0,
        };
        let b = Turn {
            num: 1,
            weight: 2,
            idx: 1,
        };
        // b's first turn (t = 1/4) comes before a's (t = 1/2): b is greater.
        assert!(b > a);
        let b3 = Turn { num: 3, ..b };
        // b's second turn (t = 3/4) comes after a's first.
        assert!(a > b3);
        // Equal times: lower index first.
        let c = Turn {
            num: 2,
            weight: 2,
            idx: 5,
        };
        let d = Turn {
            num: 1,
            weight: 1,
            idx: 2,
        };
        assert!(d > c);
    }
}
