//! What one connection is doing, for its watchdog: requests begun,
//! answered and cancelled, in flight, since when idle, since when a head
//! is being read. Shared by hyper's connections and the own HTTP/1.1 path
//! ([`super::h1`]).
use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Notify,
    time::Instant,
};

use crate::l7::{body::ProxyBody, coarse_clock};

/// The shortest pause between two looks at a busy connection's idle
/// clock (`Activity::expired`), for very short idle timeouts.
const BUSY_RECHECK_MIN: Duration = Duration::from_millis(10);

/// When the watchdog closes a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// The first request must start within this of the connection's start.
    pub(super) first_request: Duration,
    /// Longest time with no request in flight, after the first.
    pub(super) idle: Duration,
    /// Cancelled-request budget (see `ServerLimits::max_cancelled_requests`).
    pub(super) max_cancelled: usize,
}

/// What one connection is doing, for its watchdog.
#[derive(Debug)]
pub(super) struct Activity {
    opened: Instant,
    /// `opened` on the coarse clock: the idle and head clocks are read per
    /// request, to milliseconds (see `coarse_clock`).
    opened_coarse: u64,
    /// Requests started.
    pub(super) requests: AtomicUsize,
    /// Requests whose handler was dropped before it answered: the client
    /// reset the stream (or went away).
    pub(super) cancelled: AtomicUsize,
    /// 0: no cancelled-request budget.
    max_cancelled: usize,
    /// Requests whose response body has not been fully sent (or dropped).
    in_flight: AtomicUsize,
    /// When `in_flight` last fell to zero, in nanoseconds since `opened`.
    idle_since: AtomicU64,
    /// When the first byte of an HTTP/1.1 request head arrived with
    /// nothing in flight, in nanoseconds since `opened` plus one; 0: no
    /// head is being read (set by [`HeadClock`], cleared by `begin`).
    head_since: AtomicU64,
    /// The connection speaks HTTP/2 (set by [`HeadClock`]).
    pub(super) http2: AtomicBool,
    /// Wakes the watchdog: the first request started. Going idle does not
    /// wake it (that would cost a wake-up and a new timer per request):
    /// a busy connection's watchdog looks again every quarter of the idle
    /// timeout, so an idle connection is closed within 1.25 × `idle`.
    changed: Notify,
    /// Wakes the connection: the cancelled-request budget is spent.
    pub(super) abused: Notify,
}

impl Activity {
    pub(super) fn new(max_cancelled: usize) -> Activity {
        Activity {
            opened: Instant::now(),
            opened_coarse: coarse_clock::monotonic_ns(),
            requests: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            max_cancelled,
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
            abused: Notify::new(),
        }
    }

    /// Nanoseconds since the connection opened, on the coarse clock and
    /// rounded up by one tick: never less than the real time, so that a
    /// deadline counted from it (the head and idle clocks) never fires
    /// before its timeout, at worst one tick after it. (Without the tick
    /// a trickled head was once cut at 999.8 ms of a 1 s timeout.)
    fn since_opened(&self) -> u64 {
        coarse_clock::monotonic_ns()
            .saturating_sub(self.opened_coarse)
            .saturating_add(coarse_clock::tick_ns())
    }

    /// A request starts; it ends when the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        if self.requests.fetch_add(1, Ordering::SeqCst) == 0 {
            self.changed.notify_one();
        }
        self.head_since.store(0, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            activity: self.clone(),
            answered: false,
        }
    }

    /// An HTTP/1.1 head's first byte arrived while nothing was in flight:
    /// its clock starts (once per head). The watchdog is not woken (a
    /// wake-up and a new timer per request showed in profiles); it looks
    /// on its own within half the header timeout (see `expired`).
    pub(super) fn head_started(&self) {
        if self.requests.load(Ordering::Relaxed) == 0
            || self.in_flight.load(Ordering::SeqCst) > 0
            || self.head_since.load(Ordering::SeqCst) != 0
        {
            // The first request has its own deadline; bytes read while a
            // request is in flight are its body or a pipelined head.
            return;
        }
        let since = self.since_opened().min(u64::MAX - 1);
        self.head_since.store(since + 1, Ordering::SeqCst);
    }

    /// Resolves when the connection has overstayed: no first request in
    /// time, a later HTTP/1.1 head not complete in time, or idle too long
    /// since the last request.
    pub(super) async fn expired(&self, policy: Policy) -> &'static str {
        loop {
            let now = Instant::now();
            let head = self.head_since.load(Ordering::SeqCst);
            let (deadline, why) = if self.requests.load(Ordering::SeqCst) == 0 {
                (self.opened + policy.first_request, "no request in time")
            } else if self.in_flight.load(Ordering::SeqCst) > 0 {
                // Busy: look again later (see `changed`).
                (now + (policy.idle / 4).max(BUSY_RECHECK_MIN), "idle")
            } else if head != 0 {
                let since = Duration::from_nanos(head - 1);
                (self.opened + since + policy.first_request, HEAD_TIMEOUT)
            } else {
                let since = Duration::from_nanos(self.idle_since.load(Ordering::SeqCst));
                let idle_at = self.opened + since + policy.idle;
                if idle_at <= now {
                    return "idle";
                }
                // A head may start at any moment without waking this
                // watchdog (see `head_started`): look again within half
                // the header timeout, so a slow head is cut within
                // 1.5 × `header_read_timeout` of its first byte.
                let recheck = now + (policy.first_request / 2).max(BUSY_RECHECK_MIN);
                (idle_at.min(recheck), "idle")
            };
            if deadline <= now {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.changed.notified() => {}
            }
        }
    }

    /// Resolves once nothing has been in flight for `grace` (checked every
    /// `grace`).
    pub(super) async fn quiet_for(&self, grace: Duration) {
        loop {
            tokio::time::sleep(grace).await;
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }
}

/// One request in flight, from the handler's call until its response body
/// is done or dropped (the client reset the stream, or went away).
#[derive(Debug)]
pub(super) struct InFlight {
    activity: Arc<Activity>,
    /// Whether the handler produced a response.
    pub(super) answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        if !self.answered {
            let cancelled = a.cancelled.fetch_add(1, Ordering::SeqCst) + 1;
            if a.max_cancelled > 0
                && cancelled >= a.max_cancelled
                && cancelled * 2 > a.requests.load(Ordering::SeqCst)
            {
                a.abused.notify_one();
            }
        }
        // The idle clock is set before the count falls, so a watchdog that
        // sees zero also sees when.
        let since = a.since_opened();
        a.idle_since.store(since, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why the watchdog cut a connection whose request head was not complete
/// within `header_read_timeout` of its first byte.
pub(super) const HEAD_TIMEOUT: &str = "request head not complete in time";

/// The connection's reads, watched for the first byte of each HTTP/1.1
/// request head after the first (whose deadline counts from the accept):
/// that starts the head's clock in [`Activity`]. An HTTP/2 connection is
/// not watched: its frames between requests (PING, SETTINGS) are no
/// request heads, and its idle close is the watchdog's.
pub(super) struct HeadClock<I> {
    inner: I,
    activity: Arc<Activity>,
    /// The connection speaks HTTP/2: reads are passed through unwatched.
    http2: bool,
}

impl<I> HeadClock<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>, http2: bool) -> HeadClock<I> {
        activity.http2.store(http2, Ordering::SeqCst);
        HeadClock {
            inner,
            activity,
            http2,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadClock<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.http2 && buf.filled().len() > before {
            this.activity.head_started();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadClock<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent.
pub(super) struct TrackedBody {
    pub(super) body: ProxyBody,
    pub(super) _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
