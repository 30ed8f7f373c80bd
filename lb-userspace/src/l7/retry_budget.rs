//! A per-upstream retry budget (Finagle/Linkerd style): retries may add at
//! most `ratio` of the requests counted over the last `window`, plus
//! `min_per_sec` per second that are always allowed. Without it a failing
//! upstream turns every request into `1 + attempts` requests exactly when
//! it can least take them.
//!
//! The window is a ring of [`SLOTS`] buckets of atomics, each stamped with
//! the epoch (`elapsed / slot width`) it counts; a bucket found with an old
//! stamp is reset by whoever touches it first. Counting is approximate
//! under races (a few increments may land in a bucket being reset, or a
//! retry may slip past a budget that another thread just spent), which is
//! harmless for a budget and keeps every request lock-free.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{coarse_clock, options::RetryBudgetConfig};

/// Buckets the window is divided into: expiry is smooth to a tenth of the
/// window.
pub const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// The epoch counted here, plus one (0: never used).
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The retry budget of one upstream (see the module documentation).
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Times are on the coarse monotonic clock (nanoseconds): buckets of a
    /// window of seconds need no better than its ticks, and the precise
    /// clock costs ~25–35 ns a read here against ~5 (a read per request).
    base: u64,
    slot_nanos: u64,
    slots: [Slot; SLOTS],
}

impl RetryBudget {
    /// An empty budget: at first only `min_per_sec` allows retries.
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        let window = config.window.max(Duration::from_millis(SLOTS as u64));
        RetryBudget {
            config,
            base: coarse_clock::monotonic_ns(),
            slot_nanos: (window.as_nanos() / SLOTS as u128).max(1) as u64,
            slots: Default::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Counts one request (a first attempt) now.
    pub fn record_request(&self) {
        self.record_request_at(coarse_clock::monotonic_ns());
    }

    /// [`RetryBudget::record_request`] at `now` (coarse monotonic ns).
    pub fn record_request_at(&self, now: u64) {
        self.slot(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more retry fits the budget now; if so it is counted.
    pub fn try_retry(&self) -> bool {
        self.try_retry_at(coarse_clock::monotonic_ns())
    }

    /// [`RetryBudget::try_retry`] at `now` (coarse monotonic ns).
    pub fn try_retry_at(&self, now: u64) -> bool {
        let (requests, retries) = self.totals(now);
        let window_secs = self.slot_nanos as f64 * SLOTS as f64 / 1e9;
        let allowed =
            self.config.ratio * requests as f64 + f64::from(self.config.min_per_sec) * window_secs;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn epoch(&self, now: u64) -> u64 {
        now.saturating_sub(self.base) / self.slot_nanos
    }

    /// The bucket of `now`, reset first if it still counts an old epoch.
    fn slot(&self, now: u64) -> &Slot {
        let epoch = self.epoch(now) + 1;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && seen < epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Requests and retries counted in the buckets of the current window.
    fn totals(&self, now: u64) -> (u64, u64) {
        let current = self.epoch(now) + 1;
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .iter()
            .filter(|s| {
                let e = s.epoch.load(Ordering::Acquire);
                e >= oldest && e <= current
            })
            .fold((0, 0), |(req, ret), s| {
                (
                    req + s.requests.load(Ordering::Relaxed),
                    ret + s.retries.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32, window_secs: u64) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_per_sec,
            window: Duration::from_secs(window_secs),
        })
    }

    fn secs(n: u64) -> u64 {
        n * 1_000_000_000
    }

    #[test]
    fn ratio_of_requests_bounds_retries() {
        let b = budget(0.2, 0, 10);
        let t = b.base;
        assert!(!b.try_retry_at(t), "no request yet, no reserve");
        for _ in 0..10 {
            b.record_request_at(t);
        }
        assert!(b.try_retry_at(t));
        assert!(b.try_retry_at(t));
        assert!(!b.try_retry_at(t), "20 % of 10 requests is 2 retries");
    }

    #[test]
    fn min_per_sec_is_a_floor_over_the_window() {
        let b = budget(0.0, 1, 10);
        let t = b.base;
        let granted = (0..20).filter(|_| b.try_retry_at(t)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn old_requests_and_retries_expire_with_the_window() {
        let b = budget(0.5, 0, 10);
        let t = b.base;
        for _ in 0..4 {
            b.record_request_at(t);
        }
        assert!(b.try_retry_at(t));
        assert!(b.try_retry_at(t));
        assert!(!b.try_retry_at(t));
        // A window later, both the requests and the retries are gone.
        let later = t + secs(11);
        assert!(!b.try_retry_at(later));
        b.record_request_at(later);
        b.record_request_at(later);
        assert!(b.try_retry_at(later));
        assert!(!b.try_retry_at(later));
    }

    #[test]
    fn buckets_within_the_window_add_up() {
        let b = budget(1.0, 0, 10);
        let t = b.base;
        for s in 0..5 {
            b.record_request_at(t + secs(s));
        }
        let at = t + secs(5);
        assert_eq!((0..10).filter(|_| b.try_retry_at(at)).count(), 5);
    }
}
