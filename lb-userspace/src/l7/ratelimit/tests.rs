//! Unit tests of the rate limiter, on a manual clock.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn rule(key: &str, rate: &str, allowance: u32, burst: u32) -> RuleConfig {
    let mut c = RuleConfig::new(
        format!("{key} {rate}"),
        Side::Downstream,
        key,
        rate.parse().unwrap(),
    )
    .unwrap();
    c.allowance = allowance;
    c.burst = burst;
    c
}

fn limiter(configs: Vec<RuleConfig>) -> (RateLimiter, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let rules = configs.into_iter().map(|c| Arc::new(Rule::new(c).unwrap()));
    (RateLimiter::new(rules).with_clock(clock.clone()), clock)
}

fn check(l: &RateLimiter, client: IpAddr, uri: &str) -> Verdict {
    let headers = HeaderMap::new();
    l.check(
        Side::Downstream,
        &RequestFacts::new(client, "example.com", uri, &headers),
    )
}

fn is_reject(v: &Verdict) -> bool {
    matches!(v, Verdict::Reject(_))
}

#[test]
fn templates_parse_and_print_back() {
    for t in [
        "$src_ip",
        "$src_ip/$uri",
        "$host:$path",
        "$header_x_api_key",
        "$cookie_session_id",
        "$upstream/$node",
        "tenant-$header_x_tenant",
    ] {
        let parsed = KeyTemplate::parse(t).unwrap();
        assert_eq!(parsed.to_string(), t);
    }
    let braces = KeyTemplate::parse("${src_ip}x${header_X_Api_Key}").unwrap();
    assert_eq!(braces.to_string(), "$src_ipx$header_x_api_key");
    let vars: Vec<_> = braces.vars().cloned().collect();
    assert_eq!(
        vars,
        vec![
            KeyVar::SrcIp,
            KeyVar::Header(http::HeaderName::from_static("x-api-key"))
        ]
    );
}

#[test]
fn template_errors_are_clear() {
    let cases: &[(&str, TemplateError)] = &[
        ("", TemplateError::Empty),
        ("src_ip", TemplateError::NoVariable("src_ip".into())),
        ("$src_ip/$", TemplateError::DanglingDollar { at: 8 }),
        ("${src_ip", TemplateError::Unclosed { at: 0 }),
        (
            "$src_ip/$url",
            TemplateError::UnknownVariable {
                name: "url".into(),
                at: 8,
            },
        ),
        (
            "$header_",
            TemplateError::MissingName {
                prefix: "header_",
                at: 0,
            },
        ),
        (
            "$cookie_",
            TemplateError::MissingName {
                prefix: "cookie_",
                at: 0,
            },
        ),
        (
            "${header_bad name}",
            TemplateError::BadHeaderName {
                name: "bad name".into(),
                at: 0,
            },
        ),
    ];
    for (t, want) in cases {
        assert_eq!(KeyTemplate::parse(t).as_ref(), Err(want), "{t:?}");
    }
    let msg = KeyTemplate::parse("$src_ip/$url").unwrap_err().to_string();
    assert!(msg.contains("unknown variable `$url` at 8"), "{msg}");
    assert!(msg.contains("$src_ip, $uri"), "{msg}");
    assert_eq!(
        KeyTemplate::parse("src_ip").unwrap_err().to_string(),
        "key template `src_ip` has no variable; variables start with `$`, e.g. `$src_ip`"
    );
}

#[test]
fn upstream_variables_need_the_upstream_side() {
    let c = RuleConfig::new("n", Side::Downstream, "$node", Rate::per_second(1).unwrap()).unwrap();
    let err = Rule::new(c).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key: `$node` is only known on side `upstream` (after the node is picked)"
    );
    let c = RuleConfig::new("n", Side::Upstream, "$node", Rate::per_second(1).unwrap()).unwrap();
    assert!(Rule::new(c).is_ok());
}

#[test]
fn rule_settings_are_validated() {
    let mut c = rule("$src_ip", "10/s", 0, 0);
    c.reject_status = StatusCode::FORBIDDEN;
    assert_eq!(Rule::new(c).unwrap_err(), RuleError::Status(403));
    let mut c = rule("$src_ip", "10/s", 0, 0);
    c.max_keys = 0;
    assert_eq!(Rule::new(c).unwrap_err(), RuleError::MaxKeys);
    let mut c = rule("$src_ip", "10/s", 0, 0);
    c.hard_limit = Some(HardLimit::new(
        "10/s".parse().unwrap(),
        Duration::from_secs(1),
    ));
    assert!(matches!(
        Rule::new(c).unwrap_err(),
        RuleError::HardLimitTooLow { .. }
    ));
    let mut c = rule("$src_ip", "10/s", 0, 0);
    c.hard_limit = Some(HardLimit::new("20/s".parse().unwrap(), Duration::ZERO));
    assert_eq!(Rule::new(c).unwrap_err(), RuleError::DenyFor);
}

#[test]
fn rates_parse() {
    let r: Rate = "100/s".parse().unwrap();
    assert_eq!(r.interval(), 10 * MS);
    assert_eq!(r.to_string(), "100/s");
    assert_eq!("100r/s".parse::<Rate>().unwrap(), r);
    assert_eq!("30/m".parse::<Rate>().unwrap().interval(), 2000 * MS);
    assert_eq!("5/100ms".parse::<Rate>().unwrap().interval(), 20 * MS);
    assert_eq!("3600/h".parse::<Rate>().unwrap().interval(), 1000 * MS);
    assert_eq!("0/s".parse::<Rate>(), Err(RateError::Zero));
    assert!(matches!("fast".parse::<Rate>(), Err(RateError::Syntax(_))));
    assert_eq!(
        Rate::new(2_000_000_000, Duration::from_secs(1)),
        Err(RateError::TooHigh)
    );
}

/// The GCRA table of the module documentation, step by step, against
/// nginx's `limit_req` arithmetic (excess in requests: `max(e − R·Δt, 0) + 1`
/// before the request, delay `e/R`, reject when `e > burst`).
#[test]
fn single_key_steps_match_nginx_limit_req() {
    // rate 10/s (T = 100 ms), burst 3, no allowance: nginx `burst=3`.
    let (l, clock) = limiter(vec![rule("$src_ip", "10/s", 0, 3)]);
    let c = ip(1);
    assert_eq!(check(&l, c, "/"), Verdict::Forward);
    assert_eq!(check(&l, c, "/"), Verdict::Delay(100 * MS));
    assert_eq!(check(&l, c, "/"), Verdict::Delay(200 * MS));
    assert_eq!(check(&l, c, "/"), Verdict::Delay(300 * MS));
    let Verdict::Reject(r) = check(&l, c, "/") else {
        panic!("the fifth request at once must be rejected")
    };
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.reason, RejectReason::OverLimit);
    assert_eq!(r.retry_after, 100 * MS);
    assert_eq!(r.retry_after_secs(), 1);
    // After 100 ms one place is free again; the queue is 300 ms long.
    clock.advance(100 * MS);
    assert_eq!(check(&l, c, "/"), Verdict::Delay(300 * MS));
    assert!(is_reject(&check(&l, c, "/")));
    // Idle for the whole debt: fresh again.
    clock.advance(400 * MS);
    assert_eq!(check(&l, c, "/"), Verdict::Forward);
    let counters = l.rules().next().unwrap().counters();
    assert_eq!(
        (counters.forwarded, counters.delayed, counters.rejected),
        (2, 4, 2)
    );
}

#[test]
fn allowance_forwards_at_once_and_max_wait_bounds_the_delay() {
    // 10/s, 2 at once beyond the first, then a queue of 5 but at most 250 ms.
    let mut c = rule("$src_ip", "10/s", 2, 5);
    c.max_wait = Some(250 * MS);
    let (l, _clock) = limiter(vec![c]);
    let verdicts: Vec<_> = (0..7).map(|_| check(&l, ip(1), "/")).collect();
    assert_eq!(
        verdicts[..3],
        [Verdict::Forward, Verdict::Forward, Verdict::Forward]
    );
    assert_eq!(
        verdicts[3..5],
        [Verdict::Delay(100 * MS), Verdict::Delay(200 * MS)]
    );
    assert!(is_reject(&verdicts[5]) && is_reject(&verdicts[6]));
    let Verdict::Reject(r) = &verdicts[5] else {
        unreachable!()
    };
    // Would wait 300 ms; 250 allowed: 50 ms to go.
    assert_eq!(r.retry_after, 50 * MS);
}

#[test]
fn nodelay_equivalent_forwards_the_whole_burst() {
    // allowance = burst = 4: nginx `burst=4 nodelay`.
    let (l, _clock) = limiter(vec![rule("$src_ip", "1/s", 4, 0)]);
    let forwarded = (0..10)
        .filter(|_| check(&l, ip(1), "/") == Verdict::Forward)
        .count();
    assert_eq!(forwarded, 5);
}

#[test]
fn several_rules_delay_by_the_max_and_reject_without_consuming() {
    let (l, clock) = limiter(vec![
        rule("$src_ip", "10/s", 0, 5), // T = 100 ms
        rule("$uri", "4/s", 0, 1),     // T = 250 ms
    ]);
    assert_eq!(check(&l, ip(1), "/a"), Verdict::Forward);
    // src: 100 ms, uri: 250 ms → 250 ms.
    assert_eq!(check(&l, ip(1), "/a"), Verdict::Delay(250 * MS));
    // uri /a is full: rejected, and the src bucket is not charged…
    assert!(is_reject(&check(&l, ip(1), "/a")));
    assert!(is_reject(&check(&l, ip(1), "/a")));
    // …so /b sees the src bucket exactly two requests deep: 200 ms.
    assert_eq!(check(&l, ip(1), "/b"), Verdict::Delay(200 * MS));
    clock.advance(Duration::from_secs(10));
    let rules: Vec<_> = l.rules().collect();
    let src = rules[0].counters();
    let uri = rules[1].counters();
    assert_eq!((src.forwarded, src.delayed, src.rejected), (1, 2, 0));
    assert_eq!((uri.forwarded, uri.delayed, uri.rejected), (2, 1, 2));
}

#[test]
fn empty_keys_are_not_accounted() {
    let (l, _clock) = limiter(vec![rule("$header_x_api_key", "1/s", 0, 0)]);
    let none = HeaderMap::new();
    let facts = RequestFacts::new(ip(1), "h", "/", &none);
    for _ in 0..5 {
        assert_eq!(l.check(Side::Downstream, &facts), Verdict::Forward);
    }
    let mut keyed = HeaderMap::new();
    keyed.insert("x-api-key", HeaderValue::from_static("k1"));
    let facts = RequestFacts::new(ip(1), "h", "/", &keyed);
    assert_eq!(l.check(Side::Downstream, &facts), Verdict::Forward);
    assert!(is_reject(&l.check(Side::Downstream, &facts)));
    assert_eq!(l.rules().next().unwrap().tracked_keys(), 1);
}

#[test]
fn keys_follow_headers_cookies_hosts_and_mapped_addresses() {
    let (l, _clock) = limiter(vec![
        rule("$cookie_sid", "1/s", 0, 0),
        rule("$host", "1/s", 1, 0),
    ]);
    let mut a = HeaderMap::new();
    a.insert("cookie", HeaderValue::from_static("x=1; sid=alice"));
    let mut b = HeaderMap::new();
    b.insert("cookie", HeaderValue::from_static("sid=bob"));
    let fa = RequestFacts::new(ip(1), "Example.COM", "/", &a);
    let fb = RequestFacts::new(ip(1), "example.com", "/", &b);
    assert_eq!(l.check(Side::Downstream, &fa), Verdict::Forward);
    // Another cookie value: its own bucket; the host is the same
    // (case-insensitively) and has one request of allowance left.
    assert_eq!(l.check(Side::Downstream, &fb), Verdict::Forward);
    let Verdict::Reject(r) = l.check(Side::Downstream, &fa) else {
        panic!("alice is over")
    };
    assert_eq!(&*r.rule, "$cookie_sid 1/s");

    // An IPv4-mapped IPv6 peer is the same client as the IPv4 address.
    let (l, _clock) = limiter(vec![rule("$src_ip", "1/s", 0, 0)]);
    let v4 = Ipv4Addr::new(198, 51, 100, 7);
    assert_eq!(check(&l, IpAddr::V4(v4), "/"), Verdict::Forward);
    assert!(is_reject(&check(&l, IpAddr::V6(v4.to_ipv6_mapped()), "/")));
    assert_eq!(
        check(&l, IpAddr::V6(Ipv6Addr::LOCALHOST), "/"),
        Verdict::Forward
    );
}

#[test]
fn upstream_rules_share_one_bucket_per_node() {
    let clock = Arc::new(ManualClock::new());
    let mut c = RuleConfig::new("node", Side::Upstream, "$node", "2/s".parse().unwrap()).unwrap();
    c.allowance = 1;
    let l = RateLimiter::new([Arc::new(Rule::new(c).unwrap())]).with_clock(clock);
    let headers = HeaderMap::new();
    let n1: SocketAddr = "10.0.0.1:80".parse().unwrap();
    let n2: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let facts =
        |client, node| RequestFacts::new(ip(client), "h", "/", &headers).with_upstream("api", node);
    // Downstream checks do not see upstream rules.
    assert!(!l.has_side(Side::Downstream));
    assert_eq!(l.check(Side::Downstream, &facts(1, n1)), Verdict::Forward);
    // Two clients share node 1's budget of 2; node 2 has its own.
    assert_eq!(l.check(Side::Upstream, &facts(1, n1)), Verdict::Forward);
    assert_eq!(l.check(Side::Upstream, &facts(2, n1)), Verdict::Forward);
    assert!(is_reject(&l.check(Side::Upstream, &facts(3, n1))));
    assert_eq!(l.check(Side::Upstream, &facts(3, n2)), Verdict::Forward);
}

#[test]
fn full_table_evicts_the_least_indebted() {
    // One shard of 32: eviction removes 32/16 = 2 buckets per new key batch.
    let mut c = rule("$src_ip", "1/s", 0, 10);
    c.max_keys = 32;
    let (l, clock) = limiter(vec![c]);
    // Client 1 is deep in debt (10 queued), the others have one request each.
    for _ in 0..11 {
        assert!(!is_reject(&check(&l, ip(1), "/")));
    }
    for i in 2..=32 {
        clock.advance(MS);
        assert_eq!(check(&l, ip(i), "/"), Verdict::Forward);
    }
    let rule = l.rules().next().unwrap().clone();
    assert_eq!(rule.tracked_keys(), 32);
    // All live: a new key evicts the two smallest TATs (clients 2 and 3),
    // never the indebted client 1.
    assert_eq!(check(&l, ip(100), "/"), Verdict::Forward);
    assert_eq!(rule.tracked_keys(), 31);
    assert_eq!(rule.counters().evicted, 2);
    assert!(is_reject(&check(&l, ip(1), "/")), "client 1 keeps its debt");
    assert_eq!(
        check(&l, ip(4), "/"),
        Verdict::Delay(Duration::from_secs(1) + 3 * MS - 31 * MS),
        "client 4 was kept"
    );
    assert_eq!(
        check(&l, ip(2), "/"),
        Verdict::Forward,
        "client 2 was reset"
    );
}

#[test]
fn full_table_can_reject_new_keys_instead() {
    let mut c = rule("$src_ip", "1/s", 0, 0);
    c.max_keys = 4;
    c.on_full = Overflow::Reject;
    let (l, clock) = limiter(vec![c]);
    for i in 1..=4 {
        assert_eq!(check(&l, ip(i), "/"), Verdict::Forward);
        clock.advance(100 * MS);
    }
    // now = 400 ms; the oldest bucket (TAT 1 s) drains in 600 ms.
    let Verdict::Reject(r) = check(&l, ip(5), "/") else {
        panic!("new key in a full table")
    };
    assert_eq!(
        (r.status, r.reason, r.retry_after),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::TableFull,
            600 * MS
        )
    );
    // Known keys are still served as usual.
    assert!(is_reject(&check(&l, ip(1), "/")));
    clock.advance(600 * MS);
    assert_eq!(
        check(&l, ip(5), "/"),
        Verdict::Forward,
        "ip 1 drained and was swept"
    );
    assert_eq!(l.rules().next().unwrap().tracked_keys(), 4);
}

#[test]
fn sweep_drops_drained_buckets() {
    let (l, clock) = limiter(vec![rule("$uri", "10/s", 0, 0)]);
    for i in 0..1000 {
        check(&l, ip(1), &format!("/{i}"));
    }
    let rule = l.rules().next().unwrap().clone();
    assert_eq!(rule.tracked_keys(), 1000);
    clock.advance(99 * MS);
    assert_eq!(l.sweep(), 0);
    clock.advance(MS);
    assert_eq!(l.sweep(), 1000);
    assert_eq!(rule.tracked_keys(), 0);
}

#[test]
fn escalation_fires_once_per_denial() {
    let mut c = rule("$src_ip", "10/s", 0, 0);
    c.hard_limit = Some(HardLimit {
        rate: "20/s".parse().unwrap(),
        burst: 2,
        deny_for: Duration::from_secs(60),
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let (l, clock) = limiter(vec![c]);
    let l = l.with_escalation_sink(Arc::new(move |e| seen.lock().unwrap().push(e)));
    // Hard bucket: T = 50 ms, tolerance 100 ms → the 4th request at once escalates.
    let verdicts: Vec<_> = (0..10).map(|_| check(&l, ip(9), "/")).collect();
    assert_eq!(verdicts[0], Verdict::Forward);
    let Verdict::Reject(r) = &verdicts[3] else {
        panic!("escalated")
    };
    assert_eq!(
        (r.reason, r.retry_after),
        (RejectReason::Denied, Duration::from_secs(60))
    );
    assert_eq!(events.lock().unwrap().len(), 1);
    let e = events.lock().unwrap()[0].clone();
    assert_eq!(e.source, ip(9));
    assert_eq!(e.until, l.clock().instant_at(60_000_000_000));
    assert_eq!(l.rules().next().unwrap().counters().escalated, 1);
    // Still denied a minute later minus a nanosecond; no new event.
    clock.advance(Duration::from_secs(60) - Duration::from_nanos(1));
    assert!(is_reject(&check(&l, ip(9), "/")));
    assert_eq!(events.lock().unwrap().len(), 1);
    // The denial is over: one request is served, abuse escalates again.
    clock.advance(Duration::from_nanos(1));
    assert_eq!(check(&l, ip(9), "/"), Verdict::Forward);
    for _ in 0..10 {
        check(&l, ip(9), "/");
    }
    assert_eq!(events.lock().unwrap().len(), 2);
    // Forwarded: 1 + 1. Rejected: 2 over the limit + 7 denied, 1 denied,
    // then 2 over the limit + 8 denied.
    let c = l.rules().next().unwrap().counters();
    assert_eq!((c.forwarded, c.rejected, c.escalated), (2, 20, 2));
}

/// Concurrent checks at one instant admit exactly what a sequential run
/// would, with two rules shared by two limiters that list them in
/// opposite orders (the lock order is the rules' ids, not the list's).
#[test]
fn concurrent_checks_are_exact_and_do_not_deadlock() {
    let clock = Arc::new(ManualClock::new());
    let a = Arc::new(Rule::new(rule("$src_ip", "1/s", 99, 100)).unwrap());
    let b = Arc::new(Rule::new(rule("$host", "1/s", 149, 0)).unwrap());
    let l1 = RateLimiter::new([a.clone(), b.clone()]).with_clock(clock.clone());
    let l2 = RateLimiter::new([b.clone(), a.clone()]).with_clock(clock);
    let accepted: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let l = if t % 2 == 0 { &l1 } else { &l2 };
                s.spawn(move || {
                    (0..1000)
                        .filter(|_| !is_reject(&check(l, ip(1), "/")))
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    // Rule b (150 at once, no queue) is the tighter: exactly 150 pass, and
    // rule a was charged only for those.
    assert_eq!(accepted, 150);
    let ca = a.counters();
    assert_eq!((ca.forwarded, ca.delayed, ca.rejected), (100, 50, 0));
    let cb = b.counters();
    assert_eq!((cb.forwarded, cb.rejected), (150, 8000 - 150));
}
