//! The kernel's coarse clocks: the time at the last scheduler tick (1 to
//! 4 ms old), read from the vDSO in ~5 ns where the precise clocks take
//! ~25–35 ns on this kind of machine (a VM reading its TSC; a loop of 10⁷
//! reads of each, 2026-12-07). A request read the precise clock about a
//! dozen times; the reads that need no better than milliseconds come
//! here: the `Date` field (seconds) and a connection's idle and head
//! clocks (timeouts of seconds).
use std::sync::OnceLock;

use nix::time::{clock_getres, clock_gettime, ClockId};

/// Seconds since the Unix epoch, to the last tick.
pub fn unix_seconds() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map_or(0, |t| u64::try_from(t.tv_sec()).unwrap_or(0))
}

/// Nanoseconds on the monotonic clock, to the last tick. Only differences
/// mean anything.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    })
}

/// The coarse monotonic clock's step (one scheduler tick): a reading is
/// behind the precise clock by less than this, so a difference of two
/// readings can fall short of the real interval by up to it. Read once
/// (10 ms, the longest tick, if the kernel will not say).
pub fn tick_ns() -> u64 {
    static TICK: OnceLock<u64> = OnceLock::new();
    *TICK.get_or_init(|| {
        clock_getres(ClockId::CLOCK_MONOTONIC_COARSE).map_or(10_000_000, |t| {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    #[test]
    fn the_coarse_clocks_follow_the_precise_ones_within_ticks() {
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(super::unix_seconds().abs_diff(unix) <= 1);
        let (a, t) = (super::monotonic_ns(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let coarse = Duration::from_nanos(super::monotonic_ns() - a);
        let precise = t.elapsed();
        // A tick is at most 10 ms (HZ=100).
        assert!(
            coarse.abs_diff(precise) <= Duration::from_millis(20),
            "{coarse:?} {precise:?}"
        );
        assert!(super::tick_ns() > 0 && super::tick_ns() <= 10_000_000);
    }

    #[test]
    fn a_difference_plus_one_tick_is_never_short_of_the_real_interval() {
        for _ in 0..200 {
            let (c0, t0) = (super::monotonic_ns(), Instant::now());
            std::thread::sleep(Duration::from_micros(300));
            let real = t0.elapsed();
            let coarse = super::monotonic_ns() - c0 + super::tick_ns();
            assert!(
                Duration::from_nanos(coarse) >= real,
                "{coarse} ns < {real:?}"
            );
        }
    }
}
