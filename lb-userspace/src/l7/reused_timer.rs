//! Per-request deadlines on timers that are reused instead of made and
//! cancelled for every request.
//!
//! Every attempt waits for its response under a read or send timeout. A
//! fresh `tokio::time::Sleep` per attempt registers an entry in the
//! runtime's timer wheel when first polled (a lock and a wheel insert) and
//! removes it again when the response comes first, which is nearly always:
//! ~650 instructions per proxied request in a profile (docs/bench/l7.md).
//! A `Sleep` kept from an earlier request and reset to a *later* deadline
//! only moves its expiry with one atomic compare-and-swap (tokio re-files
//! the entry when the old expiry comes round, at most once per timeout),
//! so finished deadlines go back to a small per-thread pool.
//!
//! A pooled `Sleep` still holds the waker of the task that last polled
//! it until it is reused or fires (at most one timeout later); the pool is
//! small ([`POOL_MAX`]) so that this holds at most that many finished
//! tasks' memory. A `Sleep` belongs to the runtime that made it: the pool
//! remembers which runtime that was and is emptied when another one asks
//! (a thread that runs runtimes one after another, as tests do).
use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    runtime::{self, Handle},
    time::{Instant, Sleep},
};

/// Most timers a thread keeps for reuse: about the requests a worker has
/// waiting on upstreams at once, beyond which new ones are made as usual.
const POOL_MAX: usize = 256;

struct Pool {
    runtime: Option<runtime::Id>,
    timers: Vec<Pin<Box<Sleep>>>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { runtime: None, timers: Vec::new() })
    };
}

/// A timer that resolves at its deadline and goes back to the pool when
/// dropped.
pub struct Deadline {
    /// Always `Some` but in `drop`, which hands it to the pool.
    sleep: Option<Pin<Box<Sleep>>>,
    runtime: runtime::Id,
}

impl Deadline {
    /// A timer for `at`, reused from this thread's pool when it has one of
    /// the current runtime. Must be called within a tokio runtime with its
    /// timer enabled, as `tokio::time::sleep_until`.
    pub fn at(at: Instant) -> Deadline {
        let runtime = Handle::current().id();
        let reused = POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.runtime != Some(runtime) {
                p.timers.clear();
                p.runtime = Some(runtime);
            }
            p.timers.pop()
        });
        match reused {
            Some(mut sleep) => {
                sleep.as_mut().reset(at);
                Deadline {
                    sleep: Some(sleep),
                    runtime,
                }
            }
            None => Deadline {
                sleep: Some(Box::pin(tokio::time::sleep_until(at))),
                runtime,
            },
        }
    }

    /// Moves the deadline (cheap when it moves later, see the module doc).
    pub fn reset(&mut self, at: Instant) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(at);
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.runtime == Some(self.runtime) && p.timers.len() < POOL_MAX {
                p.timers.push(sleep);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pooled() -> usize {
        POOL.with(|p| p.borrow().timers.len())
    }

    /// Fires at its deadline, whether the timer is new, reused for a later
    /// deadline than the one it is filed at (moved in place), reused for an
    /// earlier one (filed anew), or reused after it fired.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_reused_timer_fires_at_its_new_deadline() {
        // (seconds, waited for: else polled once, so filed, and dropped)
        let cases = [(5, true), (2, false), (10, true), (60, false), (3, true)];
        for (i, (secs, wait)) in cases.into_iter().enumerate() {
            let base = Instant::now();
            let mut timer = Deadline::at(base + Duration::from_secs(secs));
            if i > 0 {
                assert_eq!(pooled(), 0, "case {i}: the pooled timer was taken");
            }
            if wait {
                (&mut timer).await;
                assert_eq!(Instant::now() - base, Duration::from_secs(secs), "case {i}");
            } else {
                let early = tokio::time::timeout(Duration::from_millis(1), &mut timer).await;
                assert!(early.is_err(), "case {i} fired early");
            }
            drop(timer);
            assert_eq!(pooled(), 1, "case {i}: the timer went back");
        }
    }

    /// A timer moved later while waited on fires at the later deadline,
    /// not the first one.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_moved_deadline_is_kept() {
        let base = Instant::now();
        let mut timer = Deadline::at(base + Duration::from_secs(1));
        timer.reset(base + Duration::from_secs(4));
        (&mut timer).await;
        assert_eq!(Instant::now() - base, Duration::from_secs(4));
    }

    /// Timers of a runtime that is gone are not handed to the next one on
    /// the same thread (polling them would panic).
    #[test]
    fn a_new_runtime_on_the_thread_gets_fresh_timers() {
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let base = Instant::now();
                Deadline::at(base + Duration::from_millis(10)).await;
                assert_eq!(Instant::now() - base, Duration::from_millis(10));
            });
        }
    }
}
