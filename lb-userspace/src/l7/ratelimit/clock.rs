//! Time for the rate limiter: whole nanoseconds on a monotonic scale, so
//! that bucket arithmetic is exact and tests can drive a manual clock.
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// A monotonic source of "now" in nanoseconds since the clock's own epoch.
///
/// Every rule evaluated by one [`super::RateLimiter`] reads the same clock;
/// rules shared between limiters must be used with clocks that share an
/// epoch ([`SystemClock`] always does).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Nanoseconds since this clock's epoch; never decreases.
    fn now_nanos(&self) -> u64;

    /// The [`Instant`] that `nanos` (a value of [`Clock::now_nanos`]'s scale)
    /// stands for.
    fn instant_at(&self, nanos: u64) -> Instant;
}

/// The process clock, read through tokio so that tests with paused time
/// (`#[tokio::test(start_paused = true)]`) see the time their sleeps advance.
///
/// Its epoch is one process-wide instant, so every `SystemClock` agrees.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The epoch of [`SystemClock`]: a year before the first use. Tokio's paused
/// clock starts at the real time its runtime was made, which may precede the
/// first use by a little; the margin keeps such instants after the epoch.
fn system_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        [365 * 86_400, 86_400, 3_600, 60]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
}

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        let now = tokio::time::Instant::now().into_std();
        saturating_nanos(now.saturating_duration_since(system_epoch()))
    }

    fn instant_at(&self, nanos: u64) -> Instant {
        system_epoch() + Duration::from_nanos(nanos)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    epoch: Instant,
    nanos: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock at nanosecond 0.
    pub fn new() -> ManualClock {
        ManualClock {
            epoch: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(saturating_nanos(by), Ordering::SeqCst);
    }

    /// Sets the clock to `nanos` since its epoch (it must not go back).
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::SeqCst);
    }

    /// Time since the epoch.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    fn instant_at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years).
pub(super) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
