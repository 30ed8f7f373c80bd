//! Cold-start holding (the Rivet Guard model): a request for a backend
//! that is not up yet waits in the proxy instead of failing.
//!
//! When a route has [`ColdStart`] options and the picked node refuses the
//! connection (the request certainly never reached it: see
//! [`ForwardError::is_refusal`]), or the upstream has no eligible node
//! because every node is marked unhealthy, the proxy *holds* the request:
//! its body is read into memory (up to `max_body_bytes`; a larger one is
//! not held, and the request goes on as it would without cold start), and
//! a node is picked again after a wait that doubles from `backoff` to
//! `max_backoff`, until `deadline` from the request's arrival. Each round
//! re-picks, so a node that comes up anywhere in the upstream gets the
//! request. At the deadline the client gets 503 `cold-start-timeout` with
//! `Retry-After`.
//!
//! A hold is only an awaiting task: it blocks nothing else, and when the
//! client goes away the request's future is dropped and the hold with it.
//!
//! Held connection attempts are not retries: they never sent anything, so
//! they consume neither the route's `RetryPolicy` attempts nor the
//! upstream's retry budget, and their refusals are not reported to passive
//! health (a starting node would otherwise be ejected by the very requests
//! waiting for it). Failures other than a refusal (timeouts, resets, 5xx)
//! go through the normal retry rules.
use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant as TokioInstant;

use super::{
    error::{ErrorKind, ProxyError},
    forward::{body_failure, ForwardError, ProxyBody},
    options::ColdStart,
    upstream_client::{BoxError, UpBody},
};

/// The shortest wait between two rounds (a zero `backoff` must not spin).
const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// One request's hold: its deadline and the next wait.
#[derive(Debug)]
pub struct Hold {
    config: ColdStart,
    /// tokio's clock, so that paused-time tests see the waits.
    deadline: TokioInstant,
    next: Duration,
}

impl Hold {
    /// A hold for a request that arrived at `arrived`.
    pub fn new(config: ColdStart, arrived: Instant) -> Hold {
        Hold {
            config,
            deadline: TokioInstant::from_std(arrived) + config.deadline,
            next: config.backoff.max(MIN_BACKOFF),
        }
    }

    /// When the hold gives up.
    pub fn deadline(&self) -> TokioInstant {
        self.deadline
    }

    /// Waits before the next round: the current backoff (then doubled, up
    /// to `max_backoff`), cut short at the deadline so that one last
    /// round happens there. `false`, without waiting, once the deadline
    /// has passed.
    pub async fn wait(&mut self) -> bool {
        let now = TokioInstant::now();
        if now >= self.deadline {
            return false;
        }
        let wait = self.next.min(self.deadline - now);
        let cap = self
            .config
            .max_backoff
            .max(self.config.backoff)
            .max(MIN_BACKOFF);
        self.next = self.next.saturating_mul(2).min(cap);
        tokio::time::sleep(wait).await;
        true
    }

    /// The answer once the deadline has passed: 503 `cold-start-timeout`,
    /// retry after `max_backoff` (in whole seconds, at least 1).
    pub fn timeout_response(&self) -> Response<ProxyBody> {
        let d = self.config.max_backoff;
        let secs = (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1);
        ProxyError::new(ErrorKind::ColdStartTimeout)
            .with_retry_after(secs)
            .into_response()
    }
}

/// A request body held in memory, to be sent again as often as needed.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Replay {
    /// An empty body.
    pub fn empty() -> Replay {
        Replay::default()
    }

    /// A body already read whole.
    pub fn whole(bytes: Bytes) -> Replay {
        Replay {
            chunks: vec![bytes],
            trailers: None,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    /// Whether no byte is held.
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }

    /// A fresh body with the held bytes (and trailers).
    pub fn body(&self) -> UpBody {
        Chained {
            prefix: self.chunks.iter().cloned().collect(),
            trailers: self.trailers.clone(),
            rest: None,
        }
        .boxed()
    }
}

/// What [`buffer`] made of a body.
pub enum Buffered {
    /// The whole body, in memory.
    Whole(Replay),
    /// Over the limit: what was read followed by the rest, as one body to
    /// be sent as it would have been without cold start.
    TooLarge(UpBody),
    /// The client's body failed (over the route's `max_body_bytes`,
    /// malformed, or stalled).
    Failed(ForwardError),
}

/// Reads `body` into memory if it has at most `limit` bytes. A pause of
/// more than `stall` between two frames fails it
/// ([`ForwardError::ClientStalled`]). Nothing is read when the body
/// announces more than `limit`.
pub async fn buffer(body: UpBody, limit: u64, stall: Duration) -> Buffered {
    if body.is_end_stream() {
        return Buffered::Whole(Replay::empty());
    }
    if body.size_hint().lower() > limit {
        return Buffered::TooLarge(body);
    }
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut trailers: Option<HeaderMap> = None;
    let mut seen: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Buffered::Failed(ForwardError::ClientStalled(stall)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Buffered::Failed(body_failure(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                seen += data.len() as u64;
                chunks.push(data);
                if seen > limit {
                    let prefix = chunks.into_iter().collect();
                    return Buffered::TooLarge(
                        Chained {
                            prefix,
                            trailers: None,
                            rest: Some(body),
                        }
                        .boxed(),
                    );
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut trailers {
                        Some(all) => all.extend(t),
                        None => trailers = Some(t),
                    }
                }
            }
        }
    }
    Buffered::Whole(Replay { chunks, trailers })
}

/// Data held in memory, then trailers, then (when some) the rest of a
/// body.
struct Chained {
    prefix: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<UpBody>,
}

impl Body for Chained {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(held),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + held);
                if let Some(upper) = r.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, StatusCode};
    use http_body_util::{Full, StreamBody};

    fn up(chunks: Vec<&'static str>) -> UpBody {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c.as_bytes()))));
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    async fn collect(b: UpBody) -> Vec<u8> {
        b.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_small_body_is_held_and_replayed_as_often_as_needed() {
        let Buffered::Whole(r) = buffer(up(vec!["ab", "cd", "e"]), 5, Duration::from_secs(1)).await
        else {
            panic!("not held");
        };
        assert_eq!(r.len(), 5);
        assert_eq!(collect(r.body()).await, b"abcde");
        assert_eq!(collect(r.body()).await, b"abcde");
        assert_eq!(r.body().size_hint().exact(), Some(5));
    }

    #[tokio::test]
    async fn a_large_body_is_passed_on_whole_and_not_held() {
        let Buffered::TooLarge(b) =
            buffer(up(vec!["ab", "cd", "ef"]), 3, Duration::from_secs(1)).await
        else {
            panic!("held");
        };
        assert_eq!(collect(b).await, b"abcdef");
        let known = Full::new(Bytes::from_static(b"0123456789"))
            .map_err(|n| match n {})
            .boxed();
        let Buffered::TooLarge(b) = buffer(known, 3, Duration::from_secs(1)).await else {
            panic!("held");
        };
        assert_eq!(collect(b).await, b"0123456789");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_backs_off_and_stops_at_the_deadline() {
        let cfg = ColdStart {
            deadline: Duration::from_millis(1000),
            max_body_bytes: 0,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let start = TokioInstant::now();
        let mut hold = Hold::new(cfg, start.into_std());
        let mut at = Vec::new();
        while hold.wait().await {
            at.push(start.elapsed().as_millis() / 10 * 10);
        }
        // 100, 200, 300, 300, then cut at the deadline.
        assert_eq!(at, [100, 300, 600, 900, 1000]);
        let resp = hold.timeout_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
