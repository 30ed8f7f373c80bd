//! L7 worker steering: what the `sk_reuseport` program and the daemon share.
//!
//! Each L7 worker owns one listening socket of an `SO_REUSEPORT` group; its
//! worker id is its index in `REUSEPORT_SOCKARRAY`, `WORKER_STATE` and
//! `WORKER_ACCEPTS`. The program maps the kernel's flow hash onto the list of
//! active workers in `ACTIVE_WORKERS`, which the daemon rebuilds from the
//! per-worker flags and replaces in one map update.

use crate::flow::slot;

/// Most workers (listening sockets) one group may have: entries of the
/// per-worker maps. One worker per CPU is the intended layout; 256 covers
/// the largest hosts xlb targets at 1 KiB for the active list.
pub const MAX_WORKERS: u32 = 256;

/// `WORKER_STATE` value: the worker takes new connections.
pub const WORKER_ACTIVE: u32 = 0;

/// `WORKER_STATE` value: the worker finishes what it has but gets no new
/// connection.
pub const WORKER_DRAINING: u32 = 1;

/// The only key of the `ACTIVE_WORKERS` hash map.
pub const ACTIVE_WORKERS_KEY: u32 = 0;

/// The workers that take new connections (`ACTIVE_WORKERS[0]`).
///
/// One value rather than an array of indices plus a count so the daemon can
/// replace it with one update of a `BPF_F_NO_PREALLOC` hash map: the kernel
/// swaps the element under RCU, so the program never sees a count from one
/// version with indices from another.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveWorkers {
    /// How many leading entries of `workers` are valid (≤ [`MAX_WORKERS`]).
    pub count: u32,
    /// Worker ids in increasing order; entries past `count` are unused.
    pub workers: [u32; MAX_WORKERS as usize],
}
const _: () = assert!(core::mem::size_of::<ActiveWorkers>() == 4 + 4 * MAX_WORKERS as usize);

impl ActiveWorkers {
    /// No worker active: every connection falls back to kernel hashing.
    pub const EMPTY: ActiveWorkers = ActiveWorkers {
        count: 0,
        workers: [0; MAX_WORKERS as usize],
    };

    /// The active list for per-worker `states` (`WORKER_*`, indexed by
    /// worker id; ids at or past [`MAX_WORKERS`] are ignored).
    pub fn from_states(states: &[u32]) -> ActiveWorkers {
        let mut list = ActiveWorkers::EMPTY;
        for (id, &state) in states.iter().enumerate().take(MAX_WORKERS as usize) {
            if state == WORKER_ACTIVE {
                list.workers[list.count as usize] = id as u32;
                list.count += 1;
            }
        }
        list
    }

    /// The active workers as a slice.
    pub fn as_slice(&self) -> &[u32] {
        let n = (self.count as usize).min(self.workers.len());
        &self.workers[..n]
    }

    /// The worker for a connection whose flow hash is `hash`, or `None`
    /// when no worker is active (or the count is corrupt).
    ///
    /// `⌊hash · count / 2³²⌋` indexes the list: each active worker gets an
    /// equal share of the hash range whatever the count, so draining one
    /// spreads its share evenly over the others (a probe to the next worker
    /// would hand it all to one neighbour).
    #[inline(always)]
    pub fn pick(&self, hash: u32) -> Option<u32> {
        let n = self.count;
        if n == 0 || n > MAX_WORKERS {
            return None;
        }
        // `get` bounds-checks against the array length, which the verifier
        // sees directly (it does not need to follow the multiply).
        self.workers.get(slot(hash, n) as usize).copied()
    }
}

/// Why the program let the kernel choose (it returned `SK_PASS` without
/// selecting a socket, so the kernel falls back to its own reuseport hash).
///
/// The discriminant indexes `REUSEPORT_FALLBACKS`: append, never reorder.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// `ACTIVE_WORKERS` is empty or missing: every worker is draining, or
    /// the daemon has not written the list yet.
    NoActiveWorker = 0,
    /// The picked worker has no socket in `REUSEPORT_SOCKARRAY` (its
    /// listener closed) or the socket is not in this group.
    SelectFailed = 1,
    /// The picked worker is marked draining in `WORKER_STATE` but is still
    /// in the active list: someone wrote the flag without rebuilding the
    /// list (the daemon never does; see the `steering` module).
    StaleList = 2,
}

/// Number of [`Fallback`] reasons (entries of `REUSEPORT_FALLBACKS`).
pub const FALLBACK_REASONS: u32 = 3;

impl Fallback {
    /// All reasons in index order.
    pub const ALL: [Fallback; FALLBACK_REASONS as usize] = [
        Fallback::NoActiveWorker,
        Fallback::SelectFailed,
        Fallback::StaleList,
    ];

    /// A snake_case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Fallback::NoActiveWorker => "no_active_worker",
            Fallback::SelectFailed => "select_failed",
            Fallback::StaleList => "stale_list",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_states_lists_active_workers_in_order() {
        let list = ActiveWorkers::from_states(&[
            WORKER_ACTIVE,
            WORKER_DRAINING,
            WORKER_ACTIVE,
            WORKER_ACTIVE,
        ]);
        assert_eq!(list.as_slice(), &[0, 2, 3]);
        assert_eq!(
            ActiveWorkers::from_states(&[WORKER_DRAINING; 4]).as_slice(),
            &[] as &[u32]
        );
    }

    #[test]
    fn pick_spreads_the_hash_range_evenly_over_active_workers() {
        let list = ActiveWorkers::from_states(&[
            WORKER_ACTIVE,
            WORKER_ACTIVE,
            WORKER_DRAINING,
            WORKER_ACTIVE,
        ]);
        let mut seen = [0u32; 4];
        // 3 · 2¹⁶ evenly spaced hashes: each active worker gets a third
        // (up to rounding at the two boundaries), the draining one nothing.
        let n = 3u64 << 16;
        for i in 0..n {
            let w = list.pick(((i << 32) / n) as u32).unwrap();
            seen[w as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        for w in [0, 1, 3] {
            assert!(seen[w].abs_diff(1 << 16) <= 1, "{seen:?}");
        }
        assert_eq!(list.pick(0), Some(0));
        assert_eq!(list.pick(u32::MAX), Some(3));
    }

    #[test]
    fn pick_refuses_empty_or_corrupt_lists() {
        assert_eq!(ActiveWorkers::EMPTY.pick(12345), None);
        let mut bad = ActiveWorkers::from_states(&[WORKER_ACTIVE]);
        bad.count = MAX_WORKERS + 1;
        assert_eq!(bad.pick(12345), None);
    }
}
