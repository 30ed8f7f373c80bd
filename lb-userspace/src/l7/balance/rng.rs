//! Randomness for the balancers, injectable so that tests are
//! deterministic.
use std::{cell::RefCell, fmt, sync::Mutex};

use rand::{rngs::SmallRng, RngCore, SeedableRng};

/// A source of uniformly random `u64`s shared by all threads.
pub trait RandomSource: Send + Sync + fmt::Debug {
    /// The next random value.
    fn next_u64(&self) -> u64;
}

thread_local! {
    static THREAD_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// The production source: one `SmallRng` (xoshiro256++) per thread, seeded
/// from the OS through `rand::rng()`; no lock, no shared cache line.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRandom;

impl RandomSource for ThreadRandom {
    #[inline]
    fn next_u64(&self) -> u64 {
        THREAD_RNG.with(|r| r.borrow_mut().next_u64())
    }
}

/// A deterministic source: one seeded `SmallRng` behind a mutex (for tests
/// and simulations; the same seed gives the same sequence of picks when
/// picks are made from one thread).
#[derive(Debug)]
pub struct SeededRandom(Mutex<SmallRng>);

impl SeededRandom {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> SeededRandom {
        SeededRandom(Mutex::new(SmallRng::seed_from_u64(seed)))
    }
}

impl RandomSource for SeededRandom {
    fn next_u64(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_u64()
    }
}

/// A uniform value in `0..n` (Lemire's multiply-shift; `n` = 0 gives 0).
/// The bias is below `n / 2⁶⁴`, negligible for sums of weights.
#[inline]
pub(super) fn below(rand: &dyn RandomSource, n: u64) -> u64 {
    ((u128::from(rand.next_u64()) * u128::from(n)) >> 64) as u64
}
