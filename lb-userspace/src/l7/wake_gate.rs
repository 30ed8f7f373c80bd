//! Driving a busy future and a rarely-ready one in one task without
//! polling the rare one on every wake-up.
//!
//! `tokio::select!` polls every branch whenever the task wakes, whichever
//! branch's waker fired. A connection task wakes several times per request
//! (socket readiness, the upstream's answer), and its watchdog branches (a
//! shutdown watch, two `Notify`s, a timer) cost a mutex and a timer look
//! per poll: about 7 % of a worker's user time per HTTP/1.1 request in a
//! profile (`docs/bench/l7.md`). Here the rare future gets a waker of its
//! own that records that it fired; it is polled only then (and once at
//! the start), the busy one on every wake-up. Written here because
//! `futures`' and tokio's combinators all share one waker between their
//! branches.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

/// Which of the two finished first.
pub enum Either<A, B> {
    /// The busy future.
    Busy(A),
    /// The rare one.
    Rare(B),
}

/// The rare future's waker: notes that it fired, then wakes the task.
#[derive(Default)]
struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One gate per task; reused for each new rare future (see [`Gate::run`]).
pub struct Gate {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Default for Gate {
    fn default() -> Gate {
        let flag = Arc::new(Flag::default());
        Gate {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl Gate {
    /// Resolves with whichever of `busy` and `rare` finishes first; `rare`
    /// is polled first once, then only after its own waker fired.
    pub async fn run<A, B>(
        &self,
        mut busy: Pin<&mut A>,
        mut rare: Pin<&mut B>,
    ) -> Either<A::Output, B::Output>
    where
        A: Future,
        B: Future,
    {
        self.flag.fired.store(true, Ordering::Release);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = busy.as_mut().poll(cx) {
                return Poll::Ready(Either::Busy(out));
            }
            // Registered before the flag is read: a wake-up in between is
            // seen on the next poll, not lost.
            self.flag.task.register(cx.waker());
            if self.flag.fired.swap(false, Ordering::AcqRel) {
                let mut own = Context::from_waker(&self.waker);
                if let Poll::Ready(out) = rare.as_mut().poll(&mut own) {
                    return Poll::Ready(Either::Rare(out));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_rare_future_finishes_when_its_waker_fires() {
        let gate = Gate::default();
        let notify = Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            n.notify_one();
        });
        let busy = std::pin::pin!(tokio::time::sleep(Duration::from_secs(60)));
        let rare = std::pin::pin!(notify.notified());
        assert!(matches!(gate.run(busy, rare).await, Either::Rare(())));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_busy_future_is_polled_on_every_wake_up_and_wins() {
        let gate = Gate::default();
        let mut busy = std::pin::pin!(async {
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            7
        });
        let rare_polls = std::cell::Cell::new(0);
        let mut rare = std::pin::pin!(std::future::poll_fn(|_| {
            rare_polls.set(rare_polls.get() + 1);
            Poll::<()>::Pending
        }));
        assert!(matches!(
            gate.run(busy.as_mut(), rare.as_mut()).await,
            Either::Busy(7)
        ));
        // Polled once at the start, never again: its waker never fired
        // (the busy future woke the task five times).
        assert_eq!(rare_polls.get(), 1);
    }
}
