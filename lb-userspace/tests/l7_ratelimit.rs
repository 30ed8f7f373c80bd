//! The rate limiter end to end through its public API, on a manual clock
//! (and tokio's paused clock for `admit`): exact counts of the leaky
//! bucket, rules that must all pass, key isolation, bounded memory under a
//! flood of keys, escalation, and a rough cost per check.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use http::{HeaderMap, StatusCode};
use xlb::l7::ratelimit::{
    escalation_channel, HardLimit, ManualClock, Overflow, Rate, RateLimiter, RejectReason,
    RequestFacts, Rule, RuleConfig, Side, SystemClock, Verdict,
};

const MS: Duration = Duration::from_millis(1);

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn config(name: &str, key: &str, rate: u64, allowance: u32, burst: u32) -> RuleConfig {
    let mut c =
        RuleConfig::new(name, Side::Downstream, key, Rate::per_second(rate).unwrap()).unwrap();
    c.allowance = allowance;
    c.burst = burst;
    c
}

fn manual(rules: Vec<Arc<Rule>>) -> (RateLimiter, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (RateLimiter::new(rules).with_clock(clock.clone()), clock)
}

fn check(l: &RateLimiter, client: IpAddr, uri: &str) -> Verdict {
    let headers = HeaderMap::new();
    l.check(
        Side::Downstream,
        &RequestFacts::new(client, "example.com", uri, &headers),
    )
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Verdict `Forward`.
    at_once: u64,
    /// Verdict `Delay`.
    delayed: u64,
    rejected: u64,
    /// Accepted requests that reached the backend within the second
    /// (arrival + delay < 1 s).
    sent_in_second: u64,
    /// Accepted requests still waiting at the end of the second.
    queued_at_end: u64,
    /// The most requests waiting at once.
    max_queue: u64,
}

/// One client sends `5·rate` requests evenly over one second.
fn five_times_the_rate(rate: u64, allowance: u32, burst: u32) -> Tally {
    let rule = Arc::new(Rule::new(config("r", "$src_ip", rate, allowance, burst)).unwrap());
    let (l, clock) = manual(vec![rule.clone()]);
    let n = 5 * rate;
    let spacing = 1_000_000_000 / n;
    let mut tally = Tally::default();
    let mut departures: Vec<u64> = Vec::new();
    for k in 0..n {
        let now = k * spacing;
        clock.set_nanos(now);
        let delay = match check(&l, ip(1), "/") {
            Verdict::Forward => {
                tally.at_once += 1;
                0
            }
            Verdict::Delay(d) => {
                tally.delayed += 1;
                d.as_nanos() as u64
            }
            Verdict::Reject(r) => {
                assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
                tally.rejected += 1;
                continue;
            }
        };
        departures.push(now + delay);
        let waiting = departures.iter().filter(|&&d| d > now).count() as u64;
        tally.max_queue = tally.max_queue.max(waiting);
    }
    tally.sent_in_second = departures.iter().filter(|&&d| d < 1_000_000_000).count() as u64;
    tally.queued_at_end = departures.len() as u64 - tally.sent_in_second;
    let c = rule.counters();
    assert_eq!(
        (c.forwarded, c.delayed, c.rejected),
        (tally.at_once, tally.delayed, tally.rejected)
    );
    tally
}

/// Rate R, allowance A, burst Q, one client at 5R/s for one second: the
/// backend gets exactly R + A requests within the second, Q more are queued
/// at its end, and the other 4R − A − Q are rejected. By verdict, the
/// first ⌊1.25·A⌋ + 1 go at once (the arrivals outpace the leak by 0.8
/// interval each until the allowance is used), every later accepted one is
/// delayed (the queue is never empty again), and the queue peaks at Q.
/// With Q = 0 there is no queue: all R + A accepted requests go at once.
#[test]
fn five_times_the_rate_for_one_second_is_counted_exactly() {
    for (r, a, q) in [
        (100u64, 0u32, 20u32),
        (100, 10, 20),
        (40, 4, 8),
        (1000, 0, 0),
    ] {
        let t = five_times_the_rate(r, a, q);
        let (a64, q64) = (u64::from(a), u64::from(q));
        // Without a queue nothing is delayed: every accepted request goes at once.
        let at_once = if q == 0 { r + a64 } else { a64 * 5 / 4 + 1 };
        let expected = Tally {
            at_once,
            delayed: r + a64 + q64 - at_once,
            rejected: 4 * r - a64 - q64,
            sent_in_second: r + a64,
            queued_at_end: q64,
            max_queue: q64,
        };
        assert_eq!(t, expected, "R={r} A={a} Q={q}");
        println!("R={r} allowance={a} burst={q}: {t:?}");
    }
}

#[test]
fn a_rejecting_rule_does_not_consume_the_others() {
    // Per URI 1/s with nothing extra; per client 5 at once (1 + allowance 4).
    let uri = Arc::new(Rule::new(config("per-uri", "$uri", 1, 0, 0)).unwrap());
    let client = Arc::new(Rule::new(config("per-client", "$src_ip", 1, 4, 0)).unwrap());
    let (l, _clock) = manual(vec![uri.clone(), client.clone()]);
    assert_eq!(check(&l, ip(1), "/a"), Verdict::Forward);
    for _ in 0..100 {
        let Verdict::Reject(r) = check(&l, ip(1), "/a") else {
            panic!("/a is over its limit")
        };
        assert_eq!(&*r.rule, "per-uri");
    }
    // The 100 rejections left the client's budget alone: 4 more URIs pass,
    // the fifth is the client's sixth accepted request.
    for path in ["/b", "/c", "/d", "/e"] {
        assert_eq!(check(&l, ip(1), path), Verdict::Forward);
    }
    let Verdict::Reject(r) = check(&l, ip(1), "/f") else {
        panic!("the client is over its limit")
    };
    assert_eq!(&*r.rule, "per-client");
    let (u, c) = (uri.counters(), client.counters());
    assert_eq!((u.forwarded, u.rejected), (5, 100));
    assert_eq!((c.forwarded, c.rejected), (5, 1));
    // Both rejecting: the longest retry-after of the two.
    let Verdict::Reject(r) = check(&l, ip(1), "/a") else {
        panic!()
    };
    assert_eq!(r.retry_after, Duration::from_secs(1));
}

#[test]
fn composite_keys_isolate_clients() {
    let rule = Arc::new(Rule::new(config("c", "$src_ip/$uri", 1, 0, 0)).unwrap());
    let (l, _clock) = manual(vec![rule.clone()]);
    assert_eq!(check(&l, ip(1), "/x"), Verdict::Forward);
    assert!(matches!(check(&l, ip(1), "/x"), Verdict::Reject(_)));
    assert_eq!(check(&l, ip(2), "/x"), Verdict::Forward, "another client");
    assert_eq!(check(&l, ip(1), "/y"), Verdict::Forward, "another URI");
    // Length-prefixed parts: "/x" + "" ≠ "" + "/x" style collisions are
    // impossible, and the literal `/` plays no part.
    assert_eq!(check(&l, ip(2), "/y"), Verdict::Forward);
    assert_eq!(rule.tracked_keys(), 4);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A million distinct keys: the table never tracks more than its cap, and
/// memory stays in proportion to the cap, not to the flood.
#[test]
fn a_million_distinct_keys_stay_within_the_cap() {
    let rss_before = rss_bytes();
    let rule = Arc::new(Rule::new(config("flood", "$src_ip", 10, 0, 5)).unwrap());
    let (l, clock) = manual(vec![rule.clone()]);
    let cap = rule.key_capacity();
    assert!(cap <= 100_000, "{cap}");
    let mut max_tracked = 0;
    // Phase 1: 1M new keys at one instant, all live: eviction makes room.
    for i in 0..1_000_000 {
        assert_eq!(check(&l, ip(i), "/"), Verdict::Forward);
        if i % 10_000 == 0 {
            max_tracked = max_tracked.max(rule.tracked_keys());
        }
    }
    let after_live = rule.counters();
    let rss_live = rss_bytes();
    assert!(after_live.tracked_keys as usize <= cap);
    // Phase 2: 1M more keys, one per 2 µs: buckets drain after 100 ms, so
    // about 50 000 are live at a time and sweeps of full shards make all
    // the room, evicting nothing live (once phase 1's buckets have drained).
    clock.advance(100 * MS);
    for i in 1_000_000..2_000_000 {
        clock.advance(Duration::from_micros(2));
        check(&l, ip(i), "/");
        if i % 10_000 == 0 {
            max_tracked = max_tracked.max(rule.tracked_keys());
        }
    }
    let after_churn = rule.counters();
    let rss_churn = rss_bytes();
    clock.advance(Duration::from_secs(1));
    let swept = l.sweep();
    let rss_swept = rss_bytes();
    println!(
        "cap {cap}; max tracked {max_tracked}; after 1M live keys: tracked {} evicted {}; \
         after 1M keys at 1/2µs: tracked {} evicted {}; swept {swept}, tracked now {}",
        after_live.tracked_keys,
        after_live.evicted,
        after_churn.tracked_keys,
        after_churn.evicted,
        rule.tracked_keys(),
    );
    println!(
        "RSS: before {:.1} MiB, after live flood {:.1} MiB, after churn {:.1} MiB, after sweep {:.1} MiB",
        rss_before as f64 / 1048576.0,
        rss_live as f64 / 1048576.0,
        rss_churn as f64 / 1048576.0,
        rss_swept as f64 / 1048576.0,
    );
    assert!(max_tracked <= cap);
    assert!(after_churn.tracked_keys as usize <= cap);
    assert_eq!(
        after_churn.evicted, after_live.evicted,
        "drained buckets made the room"
    );
    assert_eq!(rule.tracked_keys(), 0);
    // 100 000 buckets take a few MiB; a leak of 1M keys would take tens.
    // (Other tests run beside this one, so the bound is loose.)
    assert!(
        rss_churn.saturating_sub(rss_before) < 48 << 20,
        "RSS grew by {} bytes",
        rss_churn - rss_before
    );
}

#[test]
fn a_full_table_can_fail_closed() {
    let mut c = config("closed", "$src_ip", 10, 0, 0);
    c.max_keys = 100;
    c.on_full = Overflow::Reject;
    let rule = Arc::new(Rule::new(c).unwrap());
    let (l, clock) = manual(vec![rule.clone()]);
    for i in 0..100 {
        assert_eq!(check(&l, ip(i), "/"), Verdict::Forward);
    }
    let Verdict::Reject(r) = check(&l, ip(100), "/") else {
        panic!("full")
    };
    assert_eq!(
        (r.status, r.reason),
        (StatusCode::SERVICE_UNAVAILABLE, RejectReason::TableFull)
    );
    assert_eq!(r.retry_after, 100 * MS);
    clock.advance(100 * MS);
    assert_eq!(check(&l, ip(100), "/"), Verdict::Forward);
}

#[test]
fn escalation_fires_once_per_source_and_again_after_deny_for() {
    let mut c = config("abuse", "$src_ip", 10, 0, 5);
    c.hard_limit = Some(HardLimit {
        rate: Rate::per_second(50).unwrap(),
        burst: 10,
        deny_for: Duration::from_secs(30),
    });
    let rule = Arc::new(Rule::new(c).unwrap());
    let (sink, mut events) = escalation_channel();
    let (l, clock) = manual(vec![rule.clone()]);
    let l = l.with_escalation_sink(sink);
    let (abuser, polite) = (ip(66), ip(7));
    // The abuser sends 200/s for 2 s; the polite client 10/s.
    for ms in (0..2000u64).step_by(5) {
        clock.set_nanos(ms * 1_000_000);
        check(&l, abuser, "/");
        if ms % 100 == 0 {
            assert!(
                !matches!(check(&l, polite, "/"), Verdict::Reject(_)),
                "polite client at {ms} ms"
            );
        }
    }
    let first = events.try_recv().expect("one escalation");
    assert!(events.try_recv().is_err(), "only one while denied");
    assert_eq!((first.source, first.rule.as_str()), (abuser, "abuse"));
    // 200/s against 50/s: the hard bucket gains 15 ms per 5 ms request, so
    // the excess passes 10 × 20 ms = 200 ms at the 15th request (70 ms).
    assert_eq!(
        first.until,
        l.clock().instant_at(70_000_000 + 30_000_000_000)
    );
    let Verdict::Reject(r) = check(&l, abuser, "/") else {
        panic!("denied")
    };
    assert_eq!(r.reason, RejectReason::Denied);
    // After deny_for the abuser starts afresh, and is escalated again.
    clock.set_nanos(30_070_000_000);
    assert_ne!(
        check(&l, abuser, "/"),
        Verdict::Reject(r.clone()),
        "served again"
    );
    for _ in 0..20 {
        check(&l, abuser, "/");
    }
    let second = events.try_recv().expect("a second escalation");
    assert_eq!(second.source, abuser);
    assert!(second.until > first.until);
    assert!(events.try_recv().is_err());
    assert_eq!(rule.counters().escalated, 2);
}

/// `admit` waits out delays on tokio's clock (paused: time jumps to each
/// wake-up) and returns rejections at once.
#[tokio::test(start_paused = true)]
async fn admit_really_delays() {
    let rule = Arc::new(Rule::new(config("slow", "$src_ip", 10, 0, 3)).unwrap());
    let l = Arc::new(RateLimiter::new([rule]).with_clock(Arc::new(SystemClock)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let headers = HeaderMap::new();
            let facts = RequestFacts::new(ip(1), "h", "/", &headers);
            let verdict = l.admit(Side::Downstream, &facts).await;
            (verdict.is_ok(), tokio::time::Instant::now() - start)
        }));
        // Let each task take its place in order.
        tokio::task::yield_now().await;
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results,
        vec![
            (true, Duration::ZERO),
            (true, 100 * MS),
            (true, 200 * MS),
            (true, 300 * MS),
            (false, Duration::ZERO),
        ]
    );
}

/// Not a benchmark with an assertion: the cost of one check, printed for
/// the record (run with `--release` for meaningful numbers).
#[test]
fn cost_per_check() {
    let headers = HeaderMap::new();
    let run = |rules: Vec<RuleConfig>| {
        let rules: Vec<_> = rules
            .into_iter()
            .map(|c| Arc::new(Rule::new(c).unwrap()))
            .collect();
        let l = RateLimiter::new(rules).with_clock(Arc::new(SystemClock));
        let n = if cfg!(debug_assertions) {
            200_000
        } else {
            2_000_000
        };
        let start = Instant::now();
        let mut accepted = 0u64;
        for i in 0..n {
            let facts = RequestFacts::new(
                ip(i % 4096),
                "example.com",
                "/api/v1/items?page=2",
                &headers,
            );
            accepted += u64::from(!matches!(
                l.check(Side::Downstream, &facts),
                Verdict::Reject(_)
            ));
        }
        (start.elapsed().as_nanos() as f64 / f64::from(n), accepted)
    };
    let big = 1_000_000_000;
    let (one, a1) = run(vec![config("ip", "$src_ip", big, 100, 0)]);
    let (three, a3) = run(vec![
        config("ip", "$src_ip", big, 100, 0),
        config("ip+uri", "$src_ip/$uri", big, 100, 0),
        config("host", "$host", big, 1_000_000, 0),
    ]);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("ratelimit check ({profile}): 1 rule {one:.0} ns, 3 rules {three:.0} ns (accepted {a1}, {a3})");
}
