//! One rate-limiting rule: its settings, its buckets (one GCRA
//! "theoretical arrival time" per key), its per-source escalation
//! tracking, and its counters.
use std::{
    collections::hash_map::RandomState,
    fmt,
    net::IpAddr,
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use http::StatusCode;

use super::{
    clock::saturating_nanos,
    key::{KeyTemplate, RequestFacts, TemplateError},
    table::{Expiring, Shard, Table},
};

/// Default cap on the keys one rule tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// When the proxy applies a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Per client, after the route matched and before a node is picked.
    Downstream,
    /// To protect a backend, after the node is picked: the key may use
    /// `$upstream` and `$node`.
    Upstream,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
        })
    }
}

/// A rate: one request per `interval`, kept in whole nanoseconds so that
/// bucket arithmetic is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval_nanos: u64,
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Zero requests, or a zero period.
    #[error("a rate must allow at least one request per non-zero period")]
    Zero,
    /// More than one request per nanosecond.
    #[error("rate too high: more than one request per nanosecond")]
    TooHigh,
    /// Not `N/s`, `N/m`, `N/h` or `N/<duration>`.
    #[error("`{0}` is not a rate; write e.g. `100/s`, `30/m`, `1000/h` or `5/100ms`")]
    Syntax(String),
}

impl Rate {
    /// `requests` per `per`; the interval is `per / requests`, rounded
    /// down to the nanosecond.
    pub fn new(requests: u64, per: Duration) -> Result<Rate, RateError> {
        let per = saturating_nanos(per);
        if requests == 0 || per == 0 {
            return Err(RateError::Zero);
        }
        let interval_nanos = per / requests;
        if interval_nanos == 0 {
            return Err(RateError::TooHigh);
        }
        Ok(Rate { interval_nanos })
    }

    /// `requests` per second.
    pub fn per_second(requests: u64) -> Result<Rate, RateError> {
        Rate::new(requests, Duration::from_secs(1))
    }

    /// `requests` per minute.
    pub fn per_minute(requests: u64) -> Result<Rate, RateError> {
        Rate::new(requests, Duration::from_secs(60))
    }

    /// The time between two requests at this rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// Requests per second (for display).
    pub fn per_second_f64(&self) -> f64 {
        1e9 / self.interval_nanos as f64
    }
}

impl FromStr for Rate {
    type Err = RateError;

    /// `100/s`, `100r/s` (nginx), `30/m`, `1000/h`, `5/100ms`.
    fn from_str(s: &str) -> Result<Rate, RateError> {
        let syntax = || RateError::Syntax(s.to_owned());
        let (count, per) = s.trim().split_once('/').ok_or_else(syntax)?;
        let count = count.trim();
        let count = count.strip_suffix('r').unwrap_or(count);
        let count: u64 = count.parse().map_err(|_| syntax())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| syntax())?,
        };
        Rate::new(count, per)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if 1_000_000_000 % self.interval_nanos == 0 {
            write!(f, "{}/s", 1_000_000_000 / self.interval_nanos)
        } else {
            write!(f, "1/{}", humantime::format_duration(self.interval()))
        }
    }
}

/// What a rule does with a new key when its table is full of live buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Evict the least-indebted live buckets (smallest theoretical arrival
    /// time: the ones that would drain first) to admit the new key. The
    /// default: a flood of distinct keys (free to make with `$uri` or a
    /// header) then costs legitimate new clients nothing, and the buckets
    /// it pushes out are its own one-request buckets before any heavily
    /// indebted abuser's, so the limiter degrades by forgetting the
    /// smallest debts instead of by refusing service.
    #[default]
    Evict,
    /// Reject requests with new keys (503) until some bucket drains, as
    /// nginx does when a `limit_req` zone is exhausted: fail closed, for
    /// rules that protect a backend and must never over-admit.
    Reject,
}

/// Escalation: a source that keeps exceeding `rate` (beyond `burst` extra
/// requests) is reported for denial at the NIC for `deny_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardLimit {
    /// The sustained rate above which a source is abusive; higher than
    /// the rule's rate. Every request the source sends counts, rejected
    /// ones included.
    pub rate: Rate,
    /// Requests above `rate` tolerated before escalating.
    pub burst: u32,
    /// How long the source is denied.
    pub deny_for: Duration,
}

impl HardLimit {
    /// `rate` with a burst of one second's worth of it (at least 1).
    pub fn new(rate: Rate, deny_for: Duration) -> HardLimit {
        let burst = (1_000_000_000 / rate.interval_nanos).clamp(1, u64::from(u32::MAX));
        HardLimit {
            rate,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            deny_for,
        }
    }
}

/// The settings of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// Name, for counters, logs and escalation events.
    pub name: String,
    /// When the proxy applies it.
    pub side: Side,
    /// What one bucket counts.
    pub key: KeyTemplate,
    /// The leak rate R.
    pub rate: Rate,
    /// Excess requests forwarded at once, before any is delayed (nginx's
    /// `delay=`; 0 by default, as in nginx).
    pub allowance: u32,
    /// Excess requests beyond `allowance` that wait in the key's queue, at
    /// most B at a time (nginx's `burst` minus its `delay`).
    pub burst: u32,
    /// A longer wait is rejected instead (default: none beyond `burst`).
    pub max_wait: Option<Duration>,
    /// 429 (default) or 503.
    pub reject_status: StatusCode,
    /// Most keys tracked at once.
    pub max_keys: usize,
    /// What happens to new keys when `max_keys` live keys are tracked.
    pub on_full: Overflow,
    /// Escalation of abusive sources, if any.
    pub hard_limit: Option<HardLimit>,
}

impl RuleConfig {
    /// A rule with the defaults: no allowance, no burst (so every excess
    /// request is rejected), 429, [`DEFAULT_MAX_KEYS`], evicting, no
    /// escalation.
    pub fn new(
        name: impl Into<String>,
        side: Side,
        key: &str,
        rate: Rate,
    ) -> Result<RuleConfig, RuleError> {
        Ok(RuleConfig {
            name: name.into(),
            side,
            key: KeyTemplate::parse(key)?,
            rate,
            allowance: 0,
            burst: 0,
            max_wait: None,
            reject_status: StatusCode::TOO_MANY_REQUESTS,
            max_keys: DEFAULT_MAX_KEYS,
            on_full: Overflow::Evict,
            hard_limit: None,
        })
    }
}

/// Why a rule's settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The key template.
    #[error("key: {0}")]
    Key(#[from] TemplateError),
    /// `reject_status` other than 429 or 503.
    #[error("reject_status must be 429 or 503, not {0}")]
    Status(u16),
    /// `max_keys: 0`.
    #[error("max_keys must be at least 1")]
    MaxKeys,
    /// A hard limit not above the rate.
    #[error("hard_limit ({hard}) must be higher than rate ({rate})")]
    HardLimitTooLow {
        /// The hard limit.
        hard: Rate,
        /// The rule's rate.
        rate: Rate,
    },
    /// `deny_for: 0`.
    #[error("deny_for must be longer than zero")]
    DenyFor,
}

/// Counter values of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleCounters {
    /// Requests this rule let through at once.
    pub forwarded: u64,
    /// Requests this rule let through after a delay.
    pub delayed: u64,
    /// Requests this rule rejected (over the limit, table full, or from a
    /// denied source).
    pub rejected: u64,
    /// Escalation events (sources reported for denial).
    pub escalated: u64,
    /// Live buckets evicted to make room for new keys.
    pub evicted: u64,
    /// Keys tracked now.
    pub tracked_keys: u64,
}

#[derive(Debug, Default)]
struct Counters {
    forwarded: AtomicU64,
    delayed: AtomicU64,
    rejected: AtomicU64,
    escalated: AtomicU64,
    evicted: AtomicU64,
}

/// A key's bucket: its theoretical arrival time (GCRA). A bucket whose TAT
/// is not after now is the same as a fresh one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tat: u64,
}

impl Expiring for Bucket {
    fn expires(&self) -> u64 {
        self.tat
    }
}

/// A source's escalation state under one rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source {
    tat: u64,
    denied_until: u64,
}

impl Expiring for Source {
    fn expires(&self) -> u64 {
        self.tat.max(self.denied_until)
    }
}

/// What one rule proposes for one request, before the other rules are known.
#[derive(Debug, Clone, Copy)]
pub(super) enum Proposal {
    /// Accept after `delay` nanoseconds (0: at once); the bucket's TAT
    /// becomes `tat` if every rule accepts.
    Accept { delay: u64, tat: u64, fresh: bool },
    /// Reject.
    Reject {
        retry_after: u64,
        reason: super::RejectReason,
    },
}

/// What the escalation gate says about a request's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Not denied.
    Pass,
    /// Denied until that nanosecond; `new` if this request escalated it.
    Denied { until: u64, new: bool },
}

/// A rate-limiting rule with its state. Share it (`Arc<Rule>`) between
/// the limiters of every route it applies to, so that they share buckets.
#[derive(Debug)]
pub struct Rule {
    config: RuleConfig,
    /// Process-unique, ascending in creation order: the order in which a
    /// check locks rules, so two checks never wait on each other in a cycle.
    pub(super) id: u64,
    hasher: RandomState,
    interval: u64,
    /// Excess (ns) forwarded at once: allowance × interval.
    immediate: u64,
    /// Longest delay (ns): min(burst × interval, max_wait).
    max_delay: u64,
    buckets: Table<Bucket>,
    sources: Option<Table<Source>>,
    counters: Counters,
}

impl Rule {
    /// Validates `config` and makes the rule with no buckets yet.
    pub fn new(config: RuleConfig) -> Result<Rule, RuleError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        config.key.check_side(config.side)?;
        if !matches!(config.reject_status.as_u16(), 429 | 503) {
            return Err(RuleError::Status(config.reject_status.as_u16()));
        }
        if config.max_keys == 0 {
            return Err(RuleError::MaxKeys);
        }
        if let Some(hard) = &config.hard_limit {
            if hard.rate.interval_nanos >= config.rate.interval_nanos {
                return Err(RuleError::HardLimitTooLow {
                    hard: hard.rate,
                    rate: config.rate,
                });
            }
            if hard.deny_for.is_zero() {
                return Err(RuleError::DenyFor);
            }
        }
        let interval = config.rate.interval_nanos;
        let queue = interval.saturating_mul(u64::from(config.burst));
        Ok(Rule {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            hasher: RandomState::new(),
            interval,
            immediate: interval.saturating_mul(u64::from(config.allowance)),
            max_delay: config
                .max_wait
                .map_or(queue, |w| queue.min(saturating_nanos(w))),
            buckets: Table::new(config.max_keys),
            sources: config.hard_limit.map(|_| Table::new(config.max_keys)),
            counters: Counters::default(),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RuleConfig {
        &self.config
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// When the proxy applies it.
    pub fn side(&self) -> Side {
        self.config.side
    }

    /// Keys tracked now (buckets; escalation sources are capped separately).
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }

    /// The most keys this rule tracks (`max_keys`, rounded down to a
    /// multiple of its shard count).
    pub fn key_capacity(&self) -> usize {
        self.buckets.capacity()
    }

    /// Sources tracked for escalation now.
    pub fn tracked_sources(&self) -> usize {
        self.sources.as_ref().map_or(0, Table::len)
    }

    /// The counters now.
    pub fn counters(&self) -> RuleCounters {
        let c = &self.counters;
        RuleCounters {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            escalated: c.escalated.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            tracked_keys: self.tracked_keys() as u64,
        }
    }

    /// Drops drained buckets and sources at `now` (a clock's nanoseconds);
    /// returns how many. Full shards do this by themselves; a periodic
    /// sweep also returns the memory of a flood that has passed.
    pub fn sweep_at(&self, now: u64) -> usize {
        self.buckets.sweep(now) + self.sources.as_ref().map_or(0, |s| s.sweep(now))
    }

    /// The request's bucket key, `None` if the rule does not count it.
    pub(super) fn key_of(&self, facts: &RequestFacts<'_>) -> Option<u64> {
        self.config.key.hash(facts, &self.hasher)
    }

    /// Locks the shard of `key`.
    pub(super) fn lock(&self, key: u64) -> std::sync::MutexGuard<'_, Shard<Bucket>> {
        self.buckets.lock(key)
    }

    /// The GCRA step for one request at `now`, without changing anything:
    /// with `tat` = max(bucket's TAT, now) and excess `d = tat − now`,
    /// forward if `d ≤ allowance·T`, delay by `d − allowance·T` if that is
    /// ≤ min(burst·T, max_wait), else reject. An accepted request moves
    /// the TAT to `tat + T`.
    pub(super) fn propose(&self, shard: &mut Shard<Bucket>, key: u64, now: u64) -> Proposal {
        let (tat, fresh) = match shard.get(key) {
            Some(bucket) => (bucket.tat.max(now), false),
            None => {
                if self.config.on_full == Overflow::Reject && !shard.has_room(now) {
                    return Proposal::Reject {
                        retry_after: shard.floor().saturating_sub(now),
                        reason: super::RejectReason::TableFull,
                    };
                }
                (now, true)
            }
        };
        let excess = tat - now;
        let next = tat.saturating_add(self.interval);
        if excess <= self.immediate {
            return Proposal::Accept {
                delay: 0,
                tat: next,
                fresh,
            };
        }
        let wait = excess - self.immediate;
        if wait <= self.max_delay {
            Proposal::Accept {
                delay: wait,
                tat: next,
                fresh,
            }
        } else {
            Proposal::Reject {
                retry_after: wait - self.max_delay,
                reason: super::RejectReason::OverLimit,
            }
        }
    }

    /// Stores an accepted proposal and counts it.
    pub(super) fn commit(&self, shard: &mut Shard<Bucket>, key: u64, now: u64, proposal: Proposal) {
        let Proposal::Accept { delay, tat, fresh } = proposal else {
            return;
        };
        match shard.get_mut(key) {
            Some(bucket) => bucket.tat = tat,
            None => {
                debug_assert!(fresh);
                let evicted = shard.make_room(now);
                if evicted > 0 {
                    self.counters
                        .evicted
                        .fetch_add(evicted as u64, Ordering::Relaxed);
                }
                shard.insert(key, Bucket { tat });
            }
        }
        let counter = if delay == 0 {
            &self.counters.forwarded
        } else {
            &self.counters.delayed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rejection by this rule.
    pub(super) fn count_rejected(&self) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The escalation gate for `source` at `now`: counts the request
    /// against the source's hard-limit bucket (every request, whatever the
    /// verdict) and says whether the source is denied. A request over the
    /// hard limit (excess beyond `burst` intervals) starts a denial; while
    /// one lasts, the source's requests are rejected without touching any
    /// bucket, and no new escalation is reported.
    pub(super) fn gate(&self, source: IpAddr, now: u64) -> Gate {
        let (Some(table), Some(hard)) = (&self.sources, &self.config.hard_limit) else {
            return Gate::Pass;
        };
        let key = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = self.hasher.build_hasher();
            h.write_u8(0xff);
            match source.to_canonical() {
                IpAddr::V4(v4) => h.write(&v4.octets()),
                IpAddr::V6(v6) => h.write(&v6.octets()),
            }
            h.finish()
        };
        let mut shard = table.lock(key);
        let state = match shard.get(key) {
            Some(state) => *state,
            None => Source {
                tat: 0,
                denied_until: 0,
            },
        };
        if state.denied_until > now {
            return Gate::Denied {
                until: state.denied_until,
                new: false,
            };
        }
        let interval = hard.rate.interval_nanos;
        let tat = state.tat.max(now);
        let next = if tat - now > interval.saturating_mul(u64::from(hard.burst)) {
            let until = now.saturating_add(saturating_nanos(hard.deny_for));
            Source {
                // The denial wipes the debt: after it the source starts afresh.
                tat: 0,
                denied_until: until,
            }
        } else {
            Source {
                tat: tat.saturating_add(interval),
                denied_until: 0,
            }
        };
        if shard.get(key).is_none() {
            // Escalation tracking always evicts: refusing requests because
            // the source table is full would hand a flood a denial of service.
            let evicted = shard.make_room(now);
            if evicted > 0 {
                self.counters
                    .evicted
                    .fetch_add(evicted as u64, Ordering::Relaxed);
            }
            shard.insert(key, next);
        } else if let Some(state) = shard.get_mut(key) {
            *state = next;
        }
        drop(shard);
        if next.denied_until > now {
            self.counters.escalated.fetch_add(1, Ordering::Relaxed);
            Gate::Denied {
                until: next.denied_until,
                new: true,
            }
        } else {
            Gate::Pass
        }
    }
}
