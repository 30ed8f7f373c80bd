//! The per-rule key table: a fixed number of `Mutex<HashMap>` shards with a
//! hard cap on entries, reclamation of drained entries and eviction of the
//! least-indebted ones.
//!
//! Why std mutexes rather than `dashmap`/`papaya`: a check must hold one
//! shard of *each* rule at once (see `RateLimiter::check`) so that a
//! request rejected by one rule consumes nothing of the others, and the
//! cap needs per-shard sweeps and eviction under that same lock. Both are
//! direct with our own shards and awkward through a concurrent map's API;
//! the critical section is a few dozen nanoseconds, and 64 shards keep
//! distinct keys off each other's locks. No dependency either.
use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::{Mutex, MutexGuard},
};

/// Something stored per key that becomes equivalent to a fresh entry at
/// some instant.
pub(super) trait Expiring {
    /// The nanosecond from which this entry is equivalent to no entry.
    fn expires(&self) -> u64;
}

/// Keys are already keyed SipHash outputs: hash them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// Most shards a table has.
const MAX_SHARDS: usize = 64;
/// Fewest entries per shard before a table is split into shards: small
/// caps stay exact instead of being spread over nearly empty shards.
const MIN_PER_SHARD: usize = 256;

/// One shard: its entries and what it knows about their expiry.
#[derive(Debug)]
pub(super) struct Shard<V> {
    map: Map<V>,
    cap: usize,
    /// A lower bound of every entry's `expires()`: no sweep can free
    /// anything before this instant.
    floor: u64,
}

impl<V: Expiring> Shard<V> {
    /// The entry of `key`, if tracked.
    pub(super) fn get(&self, key: u64) -> Option<&V> {
        self.map.get(&key)
    }

    /// The entry of `key`, if tracked.
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.map.get_mut(&key)
    }

    /// Whether one more key fits, after dropping drained entries if the
    /// shard is full and some may have drained.
    pub(super) fn has_room(&mut self, now: u64) -> bool {
        if self.map.len() < self.cap {
            return true;
        }
        if now >= self.floor {
            self.sweep(now);
        }
        self.map.len() < self.cap
    }

    /// The earliest instant at which an entry can drain.
    pub(super) fn floor(&self) -> u64 {
        self.floor
    }

    /// Inserts (or replaces) `key`; the caller made room first
    /// ([`Shard::make_room`]).
    pub(super) fn insert(&mut self, key: u64, value: V) {
        self.floor = self.floor.min(value.expires());
        self.map.insert(key, value);
    }

    /// Makes room for one new key: drained entries go first; if all are
    /// live, the `1/16` of the shard with the smallest `expires()` (the
    /// least-indebted keys, whose reset costs least) is evicted, so the
    /// O(n) scan is paid once per `cap/16` new keys. Returns the count of
    /// live entries evicted.
    pub(super) fn make_room(&mut self, now: u64) -> usize {
        if self.has_room(now) {
            return 0;
        }
        let n = (self.cap / 16).max(1);
        let mut expiries: Vec<u64> = self.map.values().map(Expiring::expires).collect();
        let (_, &mut threshold, _) = expiries.select_nth_unstable(n - 1);
        // Everything strictly below the threshold, then ties up to n.
        let mut ties = n - expiries.iter().filter(|&&e| e < threshold).count();
        self.map.retain(|_, v| {
            let e = v.expires();
            if e < threshold {
                false
            } else if e == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
        self.floor = threshold;
        n
    }

    /// Drops every entry that has drained by `now`; returns how many.
    pub(super) fn sweep(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let mut floor = u64::MAX;
        self.map.retain(|_, v| {
            let e = v.expires();
            if e > now {
                floor = floor.min(e);
                true
            } else {
                false
            }
        });
        self.floor = floor;
        // Give memory back after a flood has drained away.
        let len = self.map.len();
        if self.map.capacity() > 4 * len.max(64) {
            self.map.shrink_to(2 * len);
        }
        before - len
    }

    /// Tracked entries.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A capped, sharded map from key hash to per-key state.
#[derive(Debug)]
pub(super) struct Table<V> {
    shards: Box<[Mutex<Shard<V>>]>,
}

impl<V: Expiring> Table<V> {
    /// A table holding at most `cap` keys (at least 1). With many shards the
    /// cap is split evenly, rounding down, so a shard may fill up a little
    /// before the table does.
    pub(super) fn new(cap: usize) -> Table<V> {
        let cap = cap.max(1);
        let want = (cap / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let count = if want.is_power_of_two() {
            want
        } else {
            want.next_power_of_two() / 2
        };
        let per_shard = cap / count;
        let shards = (0..count)
            .map(|_| {
                Mutex::new(Shard {
                    map: Map::default(),
                    cap: per_shard,
                    floor: u64::MAX,
                })
            })
            .collect();
        Table { shards }
    }

    /// The locked shard of `key`. Poisoning is ignored: a shard holds plain
    /// numbers that no panic can leave half-written.
    pub(super) fn lock(&self, key: u64) -> MutexGuard<'_, Shard<V>> {
        // Bits 32.. choose the shard; hashbrown uses the low bits for the
        // slot and the top seven for its tags, so the three stay independent.
        let index = (key >> 32) as usize & (self.shards.len() - 1);
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops drained entries of every shard; returns how many.
    pub(super) fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).sweep(now))
            .sum()
    }

    /// Tracked keys (a sum over shards, each read under its lock).
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// The most keys the table can hold.
    pub(super) fn capacity(&self) -> usize {
        self.shards.len() * self.shards[0].lock().unwrap_or_else(|p| p.into_inner()).cap
    }
}
