//! The upstream phases as an explicit state machine: pick a node, send
//! the request to it, and on a failure decide between a retry on another
//! node, sending once more on a fresh connection, holding for a cold
//! start, or giving up.
//!
//! ```text
//!            ┌──── busy node (max_requests_per_node): pick again ───┐
//!            ▼                                                      │
//!   ──►  Pick ─────── node ───────► Send ──── response ──► Done     │
//!         │  ▲                       │                              │
//!         │  └── retry / send again ─┤ failed (see after_failure)   │
//!   none, │  └── refused (cold start)┘                              │
//!  starting  ▲                                                      │
//!         ▼  │ a node may be up                                     │
//!        Hold ──── deadline passed ───► Done (503)                  │
//!   none, not starting ──────────────► Done (last failure / 503) ◄──┘
//! ```
//!
//! Retries follow the route's `RetryPolicy` (attempts, backoff with
//! jitter) within the upstream's retry budget; held connection attempts
//! and a resend after a pooled connection closed under the request are not
//! retries.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::{request, Response};
use hyper::body::Body as _;
use smallvec::SmallVec;

use super::{
    super::{
        balance::{InFlight, PickContext, Unavailable},
        body::{empty_up_body, ClientBody, UpBody},
        box_in_place::box_in_place,
        cold_start::{self, Buffered, Hold, Replay},
        error::{ErrorKind, ProxyError},
        forward::{self, request_body, BodyWatch, ForwardError, ProxyBody},
        lane::{General, Lane},
        options::{ColdStart, RetryPolicy},
        ratelimit::{RequestFacts, Side},
        record::RateLimitVerdict,
    },
    context::RequestCtx,
    request_filters::rate_limited,
    response_filters::ServedBy,
    upstream_request::Outgoing,
    upstream_response::{self, Answered},
};
use crate::health::Outcome;

/// [`forward_served`] for a caller that hands the response on as a
/// value (the cache): the node rides in the response's extensions.
pub(super) async fn forward(
    ctx: RequestCtx,
    parts: request::Parts,
    body: ClientBody,
) -> Response<ProxyBody> {
    let (mut resp, served) = forward_served::<General>(ctx, parts, body).await;
    if let Some(node) = served {
        resp.extensions_mut().insert(node);
    }
    resp
}

/// Runs the upstream phases for one request: everything after the cache
/// lookup. The response is the node's (with the node that served it) or
/// one of xlb's errors (no node); the response filters are not applied
/// yet. The node is returned beside the response, not in its extensions:
/// a map created and emptied per request cost three allocations.
pub(super) async fn forward_served<L: Lane>(
    ctx: RequestCtx,
    parts: request::Parts,
    mut body: ClientBody,
) -> (Response<ProxyBody>, Option<ServedBy>) {
    let mut out = Outgoing::prepare(&ctx, parts, &body);
    // An idempotent request's body read whole is held for every attempt,
    // as a cold-start hold holds it: a retry or a resend after a pooled
    // connection closed under it sends it again. (Its length was checked
    // against `max_body_bytes` by the request filters.)
    let replay = match out.replayable && !body.is_end_stream() {
        true => body.take_whole().map(Replay::whole),
        false => None,
    };
    let (up_body, watch) = request_body(body, ctx.opts().max_body_bytes);
    ctx.pool.budget.record_request();
    let mut run = Attempts::new(up_body, watch);
    run.replay = replay;
    let mut step = Step::Pick;
    loop {
        step = match step {
            Step::Pick => run.pick(&ctx, &out),
            Step::Hold(cfg) => Box::pin(run.hold(&ctx, &out, cfg)).await,
            // Not boxed: small (the node's send inside is boxed), and an
            // allocation per attempt showed in profiles.
            Step::Send { node, flight } => run.send::<L>(&ctx, &mut out, node, flight).await,
            Step::Done(resp) => {
                out.recycle();
                return (resp, run.served.map(ServedBy));
            }
        };
    }
}

/// Where the state machine is.
enum Step {
    /// Pick a node that was not tried, is not busy and did not refuse.
    Pick,
    /// No node can take the request, but some may be starting: hold it.
    Hold(ColdStart),
    /// Send to this node (already counted in flight).
    Send { node: usize, flight: InFlight },
    /// The answer.
    Done(Response<ProxyBody>),
}

/// What the attempts of one request remember.
struct Attempts {
    /// The request body, while it has not been sent (or came back unsent).
    body: Option<UpBody>,
    /// Progress of the body being sent (the send timeout's clock).
    watch: Arc<BodyWatch>,
    /// Nodes tried (not picked again). Inline: most requests try one node,
    /// and a heap allocation per request showed in profiles.
    tried: SmallVec<[usize; 4]>,
    /// Nodes at `max_requests_per_node` since the last wait.
    busy: Vec<usize>,
    /// Nodes that refused the connection since the last wait.
    refused: Vec<usize>,
    /// Nodes the upstream-side rate limit admitted this request to.
    admitted: Vec<usize>,
    /// The failure a retry is about to follow.
    last_error: Option<ForwardError>,
    /// The last refusal (cold start), answered if nothing else is left.
    refusal: Option<ForwardError>,
    /// Retries so far (of the route's policy).
    retries: usize,
    /// The cold-start hold, once the request is held.
    hold: Option<Hold>,
    /// The buffered body, once the request is held.
    replay: Option<Replay>,
    /// Whether the request was sent again after a pooled connection closed
    /// under it (only once).
    reuse_retried: bool,
    /// The node whose response is the answer.
    served: Option<usize>,
}

impl Attempts {
    fn new(body: UpBody, watch: Arc<BodyWatch>) -> Attempts {
        Attempts {
            body: Some(body),
            watch,
            tried: SmallVec::new(),
            busy: Vec::new(),
            refused: Vec::new(),
            admitted: Vec::new(),
            last_error: None,
            refusal: None,
            retries: 0,
            hold: None,
            replay: None,
            reuse_retried: false,
            served: None,
        }
    }

    fn excluded(&self) -> SmallVec<[usize; 8]> {
        self.tried
            .iter()
            .chain(&self.busy)
            .chain(&self.refused)
            .copied()
            .collect()
    }

    /// Pick: a node, a hold, or the end.
    fn pick(&mut self, ctx: &RequestCtx, out: &Outgoing) -> Step {
        let pool = &*ctx.pool;
        let exclude = self.excluded();
        let pc = PickContext::new(ctx.conn.peer.ip())
            .with_exclude(&exclude)
            .with_hash_key(out.hash_key.as_deref())
            .with_sticky(ctx.sticky_in.as_deref());
        let Some(node) = pool.balancer.pick(&pc) else {
            if let Some(cfg) = ctx.opts().cold_start {
                // Nodes refuse or are all down: they may be starting.
                if !self.refused.is_empty()
                    || pool.upstream.unavailable(&exclude) == Some(Unavailable::AllUnhealthy)
                {
                    return Step::Hold(cfg);
                }
            }
            return Step::Done(self.no_node(ctx, &exclude));
        };
        let flight = pool.upstream.begin(node);
        if let Some(max) = pool.options.max_requests_per_node {
            // Counted first, checked after: concurrent requests cannot all
            // slip under the limit together.
            if pool.upstream.state(node).in_flight() > u64::from(max) {
                drop(flight);
                self.busy.push(node);
                return Step::Pick;
            }
        }
        Step::Send { node, flight }
    }

    /// The answer when no node is left: the last failure (a 502 says more
    /// than "no node" would), else 503 busy or unavailable.
    fn no_node(&mut self, ctx: &RequestCtx, exclude: &[usize]) -> Response<ProxyBody> {
        let pool = &*ctx.pool;
        if let Some(e) = self.last_error.take().or(self.refusal.take()) {
            return e.into_response();
        }
        if !self.busy.is_empty() {
            log::debug!(
                "upstream {}: every node is at max_requests_per_node",
                pool.id
            );
            return unavailable(ErrorKind::UpstreamBusy);
        }
        let reason = pool
            .upstream
            .unavailable(exclude)
            .map(|u| u.to_string())
            .unwrap_or_else(|| "no node available".into());
        log::debug!("upstream {}: {reason}", pool.id);
        unavailable(ErrorKind::NoHealthyNode)
    }

    /// Hold: buffer the body (once), wait until a node may be up, pick
    /// again; a body too large to buffer is not held.
    async fn hold(&mut self, ctx: &RequestCtx, out: &Outgoing, cfg: ColdStart) -> Step {
        let hold = self
            .hold
            .get_or_insert_with(|| Hold::new(cfg, ctx.arrived.unwrap_or_else(Instant::now)));
        let held = match (&self.replay, self.body.take()) {
            (Some(_), _) => true,
            // The body went to a node that failed after it was sent:
            // nothing left to hold.
            (None, None) if !out.replayable => false,
            (None, b) => {
                let b = b.unwrap_or_else(empty_up_body);
                let buffering = cold_start::buffer(b, cfg.max_body_bytes, ctx.opts().timeouts.send);
                let buffering = Box::pin(tokio::time::timeout_at(hold.deadline(), buffering));
                match buffering.await {
                    Err(_) => return Step::Done(hold.timeout_response()),
                    Ok(Buffered::Failed(e)) => return Step::Done(e.into_response()),
                    Ok(Buffered::Whole(r)) => {
                        self.replay = Some(r);
                        true
                    }
                    Ok(Buffered::TooLarge(b)) => {
                        self.body = Some(b);
                        false
                    }
                }
            }
        };
        if !held {
            // As without cold start.
            let exclude = self.excluded();
            return Step::Done(self.no_node(ctx, &exclude));
        }
        if !Box::pin(hold.wait()).await {
            log::debug!(
                "upstream {}: no node up within {:?} (cold start)",
                ctx.pool.id,
                cfg.deadline
            );
            return Step::Done(hold.timeout_response());
        }
        self.refused.clear();
        self.busy.clear();
        Step::Pick
    }

    /// Send: the upstream-side rate limit (once per node), the retry
    /// budget and backoff before a retry, the request, then the response
    /// phase or the failure's verdict.
    async fn send<L: Lane>(
        &mut self,
        ctx: &RequestCtx,
        out: &mut Outgoing,
        node: usize,
        flight: InFlight,
    ) -> Step {
        let pool = &*ctx.pool;
        let opts = ctx.opts();
        let addr = pool.upstream.nodes()[node].addr;
        let limiter = opts.rate_limit.as_ref().map(|l| &*l.0);
        if let (Some(limiter), Some((headers, target))) = (limiter, &ctx.up_facts) {
            if !self.admitted.contains(&node) {
                let facts = RequestFacts::new(
                    ctx.conn.peer.ip(),
                    ctx.host.as_ref().map_or("", |h| h.as_str()),
                    target,
                    headers,
                )
                .with_upstream(&pool.id, addr);
                let verdict = Box::pin(limiter.admit(Side::Upstream, &facts)).await;
                ctx.note.rate_limit(RateLimitVerdict::of(&verdict)); // request record
                if let Err(r) = verdict {
                    log::debug!("{} → {addr}: {r}", ctx.conn.peer);
                    return Step::Done(rate_limited(&r));
                }
                self.admitted.push(node);
            }
        }
        if let Some(e) = self.last_error.take() {
            if !pool.budget.try_retry() {
                log::debug!("upstream {}: retry budget exhausted: {e}", pool.id);
                return Step::Done(e.into_response());
            }
            ctx.note.retry(e.kind().reason()); // request record: a retry is sent
            Box::pin(tokio::time::sleep(backoff(&opts.retry, self.retries - 1))).await;
        }
        self.tried.push(node);
        ctx.note.attempt(addr); // request record
        let attempt_body = match &self.replay {
            Some(r) => {
                let (b, w) = request_body(r.body(), None);
                self.watch = w;
                b
            }
            None => self.body.take().unwrap_or_else(empty_up_body),
        };
        let started = Instant::now();
        let upgrade = out.upgrade.is_some();
        let watch = &self.watch;
        let head = out.head_for(ctx, addr);
        let sent = box_in_place(|| {
            forward::send::<L>(
                &pool.client,
                addr,
                head,
                attempt_body,
                upgrade,
                &opts.timeouts,
                watch,
            )
        })
        .await;
        let (e, back) = match sent {
            Ok(resp) => {
                let at = Instant::now();
                let first_byte = at.saturating_duration_since(started);
                let connect = self.watch.connect_time(started);
                ctx.note
                    .response_head(Some(connect), first_byte, self.watch.bytes()); // request record
                let answered = Answered {
                    node,
                    flight,
                    latency: first_byte,
                    at,
                    resp,
                };
                self.served = Some(node);
                return Step::Done(upstream_response::accept(ctx, out, answered));
            }
            Err(failed) => failed,
        };
        let failure = FailureView {
            refusal: e.is_refusal(),
            closed_on_reuse: e.closed_on_reuse(),
            retryable: e.retryable(out.replayable),
            request_back: back.is_some(),
        };
        let state = AttemptState {
            cold_start: opts.cold_start.is_some(),
            replayable: out.replayable,
            reuse_retried: self.reuse_retried,
            retries_left: self.retries < opts.retry.attempts,
            buffered: self.replay.is_some(),
        };
        drop(flight);
        match after_failure(failure, state) {
            AfterFailure::HoldRefused => {
                // Nothing was sent; another node now, or a wait when every
                // node refuses. Not a passive-health failure (the node may
                // be starting).
                pool.upstream
                    .observe(node, started.elapsed(), false, Instant::now());
                log::debug!("{addr}: {e}; cold start");
                self.tried.pop();
                self.refused.push(node);
                if self.replay.is_none() {
                    self.body = back;
                }
                self.refusal = Some(e);
            }
            AfterFailure::SendAgain => {
                // A pooled connection the node closed as idle while the
                // request was on its way: this node may be picked again.
                // Not a node failure.
                self.reuse_retried = true;
                log::debug!("{addr}: {e}; pooled connection closed, sending again");
                self.tried.pop();
            }
            verdict @ (AfterFailure::Retry | AfterFailure::GiveUp) => {
                if let Some(kind) = e.node_failure() {
                    pool.upstream
                        .observe(node, started.elapsed(), false, Instant::now());
                    pool.record(node, Outcome::Failure(kind));
                }
                let retry = verdict == AfterFailure::Retry;
                log::debug!("{addr}: {e}{}", if retry { "; retrying" } else { "" });
                if !retry {
                    return Step::Done(e.into_response());
                }
                self.retries += 1;
                if self.replay.is_none() {
                    self.body = back;
                }
                self.last_error = Some(e);
            }
        }
        Step::Pick
    }
}

/// What a failed attempt says about itself.
#[derive(Debug, Clone, Copy)]
struct FailureView {
    /// The node refused the connection (nothing was sent).
    refusal: bool,
    /// A pooled connection closed as the request was written to it.
    closed_on_reuse: bool,
    /// The failure allows a retry (for a request this replayable).
    retryable: bool,
    /// The request came back unsent (it can go again as is).
    request_back: bool,
}

/// What the request's attempts so far allow.
#[derive(Debug, Clone, Copy)]
struct AttemptState {
    /// The route holds requests for cold starts.
    cold_start: bool,
    /// Bodiless and idempotent.
    replayable: bool,
    /// The one resend after a closed pooled connection was used.
    reuse_retried: bool,
    /// The route's retry policy has attempts left.
    retries_left: bool,
    /// The body is buffered (held for a cold start): it can be sent again.
    buffered: bool,
}

/// The verdict on a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFailure {
    /// A refusal on a cold-start route: another node, or a hold.
    HoldRefused,
    /// Send once more on a fresh connection (not a retry).
    SendAgain,
    /// Retry on another node (a retry of the route's policy).
    Retry,
    /// Answer the failure.
    GiveUp,
}

/// Decides what follows a failed attempt; the order of the rules is the
/// order of the checks.
fn after_failure(f: FailureView, s: AttemptState) -> AfterFailure {
    if s.cold_start && f.refusal {
        return AfterFailure::HoldRefused;
    }
    if s.replayable && !s.reuse_retried && f.closed_on_reuse {
        return AfterFailure::SendAgain;
    }
    if s.retries_left && f.retryable && (f.request_back || s.replayable || s.buffered) {
        return AfterFailure::Retry;
    }
    AfterFailure::GiveUp
}

/// The wait before retry number `retry` (0 for the first): doubled each
/// time up to the cap, then "equal jitter" (half fixed, half random) so
/// that clients that failed together do not come back together.
fn backoff(policy: &RetryPolicy, retry: usize) -> Duration {
    let full = policy
        .backoff
        .saturating_mul(1u32 << retry.min(16))
        .min(policy.max_backoff);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn unavailable(kind: ErrorKind) -> Response<ProxyBody> {
    ProxyError::new(kind).with_retry_after(1).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        for (retry, full) in [(0, 10), (1, 20), (2, 40), (3, 50), (9, 50), (100, 50)] {
            let d = backoff(&p, retry);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }

    const REFUSED: FailureView = FailureView {
        refusal: true,
        closed_on_reuse: false,
        retryable: true,
        request_back: true,
    };
    const RESET_AFTER_SEND: FailureView = FailureView {
        refusal: false,
        closed_on_reuse: false,
        retryable: true,
        request_back: false,
    };
    const CLOSED_ON_REUSE: FailureView = FailureView {
        refusal: false,
        closed_on_reuse: true,
        retryable: true,
        request_back: false,
    };
    const FRESH_GET: AttemptState = AttemptState {
        cold_start: false,
        replayable: true,
        reuse_retried: false,
        retries_left: true,
        buffered: false,
    };
    const POST: AttemptState = AttemptState {
        replayable: false,
        ..FRESH_GET
    };

    #[test]
    fn a_refusal_holds_only_on_a_cold_start_route() {
        let cold = AttemptState {
            cold_start: true,
            ..POST
        };
        assert_eq!(after_failure(REFUSED, cold), AfterFailure::HoldRefused);
        // Without cold start a refusal is an ordinary retry: nothing was
        // sent, so even a POST may go to another node.
        assert_eq!(after_failure(REFUSED, POST), AfterFailure::Retry);
    }

    #[test]
    fn a_closed_pooled_connection_resends_a_replayable_request_once() {
        assert_eq!(
            after_failure(CLOSED_ON_REUSE, FRESH_GET),
            AfterFailure::SendAgain
        );
        let again = AttemptState {
            reuse_retried: true,
            ..FRESH_GET
        };
        assert_eq!(after_failure(CLOSED_ON_REUSE, again), AfterFailure::Retry);
        // A POST whose body left is never sent twice.
        assert_eq!(after_failure(CLOSED_ON_REUSE, POST), AfterFailure::GiveUp);
    }

    #[test]
    fn a_sent_body_is_retried_only_when_it_can_be_sent_again() {
        assert_eq!(
            after_failure(RESET_AFTER_SEND, FRESH_GET),
            AfterFailure::Retry
        );
        assert_eq!(after_failure(RESET_AFTER_SEND, POST), AfterFailure::GiveUp);
        let buffered = AttemptState {
            buffered: true,
            ..POST
        };
        assert_eq!(
            after_failure(RESET_AFTER_SEND, buffered),
            AfterFailure::Retry
        );
    }

    #[test]
    fn no_retry_without_attempts_left_or_when_the_failure_forbids_it() {
        let spent = AttemptState {
            retries_left: false,
            ..FRESH_GET
        };
        assert_eq!(after_failure(RESET_AFTER_SEND, spent), AfterFailure::GiveUp);
        let final_failure = FailureView {
            retryable: false,
            ..RESET_AFTER_SEND
        };
        assert_eq!(
            after_failure(final_failure, FRESH_GET),
            AfterFailure::GiveUp
        );
    }
}
