//! River-style rate limiting for the L7 proxy: rules keyed by a template
//! (`$src_ip`, `$uri`, `$host`, `$header_NAME`, `$cookie_NAME`, `$upstream`,
//! `$node`, or a composite such as `$src_ip/$uri`), a leaky bucket per key
//! with three verdicts (forward now, delay in a bounded queue, reject), all
//! of a route's rules to pass, capped key tables, and escalation of abusive
//! sources to the XDP deny map.
//!
//! **The bucket** is nginx's `limit_req` written as GCRA: each key keeps one
//! number, its theoretical arrival time (TAT, nanoseconds). With interval
//! `T = 1/rate`, a request at `now` has excess `d = max(TAT, now) − now`:
//!
//! | excess `d` | verdict | TAT becomes |
//! |---|---|---|
//! | `d ≤ allowance·T` | [`Verdict::Forward`] | `max(TAT, now) + T` |
//! | `w = d − allowance·T ≤ min(burst·T, max_wait)` | [`Verdict::Delay`]`(w)` | `max(TAT, now) + T` |
//! | otherwise | [`Verdict::Reject`], `retry_after = w − min(burst·T, max_wait)` | unchanged |
//!
//! so a fresh key forwards `1 + allowance` requests at once, then queues at
//! most `burst` (delayed requests leave at `T` spacing: the queue never
//! holds more than `burst`), and over any long stretch admits `rate`. With
//! `allowance = 0` this is exactly nginx's `burst=B` (the first request goes
//! at once, every excess request is delayed), with `allowance = burst` it is
//! `burst=B nodelay`. A bucket whose TAT is not after now equals a fresh
//! one, which is what lets idle buckets be dropped.
//!
//! **Several rules** ([`RateLimiter::check`]): each rule is evaluated while
//! the shards of all the request's buckets are held (locked in rule-id
//! order, so two checks cannot deadlock), and buckets change only if every
//! rule accepts: a request rejected by one rule consumes no budget of the
//! others. The delay is the largest of the rules' delays; the rejection
//! names the first rejecting rule in evaluation order and carries the
//! longest `retry_after` of the rejecting rules. Each rule counts its own
//! verdict (a rule that accepted a request which another rejected counts
//! nothing).
//!
//! **Escalation** ([`HardLimit`]): before the buckets, each rule with a hard
//! limit charges the request to its source's own GCRA bucket at the hard
//! rate, every request counted, rejected ones included. A source more than
//! `burst` requests ahead of the hard rate is denied for `deny_for`: one
//! [`Escalation`] goes to the sink, and until the denial ends its requests
//! are rejected without touching any bucket and without further events.
//! The daemon writes the event into the XDP deny map; userspace denial is
//! the fallback until the map drops the packets.
//!
//! **Memory**: per rule at most `max_keys` buckets (16 bytes of key and TAT
//! plus hash-table overhead each); see [`Overflow`] for what happens when all
//! are live, and `table.rs` for the reclamation.
//!
//! ```text
//! // route matched:
//! let facts = RequestFacts::new(peer.ip(), host, path_and_query, req.headers());
//! limiter.admit(Side::Downstream, &facts).await?;          // Err(r) → r.status, Retry-After: r.retry_after_secs()
//! // node picked:
//! let facts = facts.with_upstream(&upstream_id, node.addr);
//! limiter.admit(Side::Upstream, &facts).await?;
//! ```
use std::{
    fmt,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::StatusCode;

mod clock;
mod key;
mod rule;
mod table;
#[cfg(test)]
mod tests;

pub use clock::{Clock, ManualClock, SystemClock};
pub use key::{KeyPart, KeyTemplate, KeyVar, RequestFacts, TemplateError};
pub use rule::{
    HardLimit, Overflow, Rate, RateError, Rule, RuleConfig, RuleCounters, RuleError, Side,
    DEFAULT_MAX_KEYS,
};

use rule::{Gate, Proposal};

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it now.
    Forward,
    /// Forward it after this wait (its place in the queue is already taken).
    Delay(Duration),
    /// Answer it with the rejection's status.
    Reject(Rejection),
}

/// Why a rule rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Over the rate and its burst (or beyond `max_wait`).
    OverLimit,
    /// The rule's key table is full of live buckets ([`Overflow::Reject`]).
    TableFull,
    /// The source is denied after exceeding a hard limit.
    Denied,
}

/// A rejected request: what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 429 or 503 (the rule's `reject_status`; 503 when its table is full).
    pub status: StatusCode,
    /// How long until a request would be accepted, if nothing else arrived
    /// meanwhile (a hint: the earliest time worth retrying).
    pub retry_after: Duration,
    /// The rejecting rule's name.
    pub rule: Arc<str>,
    /// Why.
    pub reason: RejectReason,
}

impl Rejection {
    /// `retry_after` in whole seconds rounded up, at least 1: the value of
    /// a `Retry-After` header (RFC 9110 §10.2.3 counts whole seconds).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit `{}`: {:?}, retry after {:?}",
            self.rule, self.reason, self.retry_after
        )
    }
}

impl std::error::Error for Rejection {}

/// A source that exceeded a rule's hard limit, to be denied at the NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The client address.
    pub source: IpAddr,
    /// The rule's name.
    pub rule: String,
    /// The end of the denial.
    pub until: Instant,
}

/// Receives escalations; called outside every lock, at most once per source
/// and rule per denial. Must not block (send to a channel).
pub type EscalationSink = Arc<dyn Fn(Escalation) + Send + Sync>;

/// A sink that sends escalations to an unbounded channel, and its receiver.
/// Unbounded is safe here: events are at most one per source and rule per
/// `deny_for`, and each needs a source that sustained the hard rate.
pub fn escalation_channel() -> (
    EscalationSink,
    tokio::sync::mpsc::UnboundedReceiver<Escalation>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink: EscalationSink = Arc::new(move |e| {
        // A closed receiver means the daemon is shutting down.
        let _ = tx.send(e);
    });
    (sink, rx)
}

/// The rules of one route, with a clock and an escalation sink.
#[derive(Clone)]
pub struct RateLimiter {
    /// Per side, sorted by rule id (the lock order).
    downstream: Vec<(Arc<Rule>, Arc<str>)>,
    upstream: Vec<(Arc<Rule>, Arc<str>)>,
    clock: Arc<dyn Clock>,
    sink: Option<EscalationSink>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |rules: &[(Arc<Rule>, Arc<str>)]| {
            rules.iter().map(|(_, n)| n.to_string()).collect::<Vec<_>>()
        };
        f.debug_struct("RateLimiter")
            .field("downstream", &names(&self.downstream))
            .field("upstream", &names(&self.upstream))
            .field("clock", &self.clock)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter over `rules` (either side), on [`SystemClock`], without an
    /// escalation sink.
    pub fn new(rules: impl IntoIterator<Item = Arc<Rule>>) -> RateLimiter {
        let mut downstream = Vec::new();
        let mut upstream = Vec::new();
        for rule in rules {
            let name: Arc<str> = Arc::from(rule.name());
            match rule.side() {
                Side::Downstream => downstream.push((rule, name)),
                Side::Upstream => upstream.push((rule, name)),
            }
        }
        downstream.sort_by_key(|(r, _)| r.id);
        upstream.sort_by_key(|(r, _)| r.id);
        downstream.dedup_by_key(|(r, _)| r.id);
        upstream.dedup_by_key(|(r, _)| r.id);
        RateLimiter {
            downstream,
            upstream,
            clock: Arc::new(SystemClock),
            sink: None,
        }
    }

    /// The same limiter reading `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> RateLimiter {
        self.clock = clock;
        self
    }

    /// The same limiter reporting escalations to `sink`.
    pub fn with_escalation_sink(mut self, sink: EscalationSink) -> RateLimiter {
        self.sink = Some(sink);
        self
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Whether any rule applies on `side` (to skip building facts).
    pub fn has_side(&self, side: Side) -> bool {
        !self.side(side).is_empty()
    }

    /// Every rule, downstream first.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.downstream.iter().chain(&self.upstream).map(|(r, _)| r)
    }

    fn side(&self, side: Side) -> &[(Arc<Rule>, Arc<str>)] {
        match side {
            Side::Downstream => &self.downstream,
            Side::Upstream => &self.upstream,
        }
    }

    /// The verdict of the `side` rules on one request, now. Does not wait:
    /// a [`Verdict::Delay`] has already taken its place in the queue, and
    /// the caller must wait that long before forwarding.
    pub fn check(&self, side: Side, facts: &RequestFacts<'_>) -> Verdict {
        let rules = self.side(side);
        if rules.is_empty() {
            return Verdict::Forward;
        }
        let now = self.clock.now_nanos();

        // Escalation gates: every rule with a hard limit counts the request.
        let mut denied: Option<(usize, u64)> = None;
        for (i, (rule, name)) in rules.iter().enumerate() {
            if let Gate::Denied { until, new } = rule.gate(facts.client, now) {
                rule.count_rejected();
                if new {
                    if let Some(sink) = &self.sink {
                        sink(Escalation {
                            source: facts.client,
                            rule: name.to_string(),
                            until: self.clock.instant_at(until),
                        });
                    }
                }
                if denied.is_none_or(|(_, u)| until > u) {
                    denied = Some((i, until));
                }
            }
        }
        if let Some((i, until)) = denied {
            let (rule, name) = &rules[i];
            return Verdict::Reject(Rejection {
                status: rule.config().reject_status,
                retry_after: Duration::from_nanos(until - now),
                rule: name.clone(),
                reason: RejectReason::Denied,
            });
        }

        let mut acc = Outcome::default();
        evaluate(rules, facts, now, &mut acc);
        match acc.rejection {
            Some(rejection) => Verdict::Reject(rejection),
            None if acc.delay == 0 => Verdict::Forward,
            None => Verdict::Delay(Duration::from_nanos(acc.delay)),
        }
    }

    /// [`RateLimiter::check`], then waits out a delay (tokio's sleep): the
    /// caller forwards when this returns `Ok`. If the future is dropped
    /// while waiting, its queue place stays spent (as in nginx).
    pub async fn admit(
        &self,
        side: Side,
        facts: &RequestFacts<'_>,
    ) -> Result<Admission, Rejection> {
        match self.check(side, facts) {
            Verdict::Forward => Ok(Admission::Now),
            Verdict::Delay(wait) => {
                tokio::time::sleep(wait).await;
                Ok(Admission::Delayed)
            }
            Verdict::Reject(rejection) => Err(rejection),
        }
    }

    /// Drops drained buckets of every rule now; returns how many. Optional:
    /// full tables reclaim by themselves; call it periodically to give
    /// memory back after a flood.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_nanos();
        self.rules().map(|r| r.sweep_at(now)).sum()
    }
}

/// How [`RateLimiter::admit`] let a request through (for the request record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// At once.
    Now,
    /// After a delay in a rule's queue.
    Delayed,
}

/// The combined outcome of a check's rules.
#[derive(Debug, Default)]
struct Outcome {
    /// The largest delay (ns).
    delay: u64,
    rejection: Option<Rejection>,
}

/// Proposes rule `rules[0]`'s verdict with its shard locked, recurses into
/// the rest while holding it, then commits if no rule rejected: the guards
/// live on the stack, one frame per rule, so no allocation is needed to
/// hold them all.
fn evaluate(
    rules: &[(Arc<Rule>, Arc<str>)],
    facts: &RequestFacts<'_>,
    now: u64,
    acc: &mut Outcome,
) {
    let Some(((rule, name), rest)) = rules.split_first() else {
        return;
    };
    let Some(key) = rule.key_of(facts) else {
        return evaluate(rest, facts, now, acc);
    };
    let mut shard = rule.lock(key);
    let proposal = rule.propose(&mut shard, key, now);
    match proposal {
        Proposal::Accept { delay, .. } => acc.delay = acc.delay.max(delay),
        Proposal::Reject {
            retry_after,
            reason,
        } => {
            let retry_after = Duration::from_nanos(retry_after);
            match &mut acc.rejection {
                Some(first) => first.retry_after = first.retry_after.max(retry_after),
                None => {
                    acc.rejection = Some(Rejection {
                        status: match reason {
                            RejectReason::TableFull => StatusCode::SERVICE_UNAVAILABLE,
                            _ => rule.config().reject_status,
                        },
                        retry_after,
                        rule: name.clone(),
                        reason,
                    })
                }
            }
        }
    }
    evaluate(rest, facts, now, acc);
    match proposal {
        Proposal::Accept { .. } if acc.rejection.is_none() => {
            rule.commit(&mut shard, key, now, proposal)
        }
        Proposal::Accept { .. } => {}
        Proposal::Reject { .. } => {
            drop(shard);
            rule.count_rejected();
        }
    }
}
