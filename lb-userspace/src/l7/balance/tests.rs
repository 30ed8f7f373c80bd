//! Unit tests of the balancers. Deterministic: seeded randomness, explicit
//! `Instant`s, no sleeping.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const SEED: u64 = 0x786c_6221;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
        8080,
    )
}

fn nodes(weights: &[u32]) -> Vec<Node> {
    weights
        .iter()
        .enumerate()
        .map(|(id, &weight)| Node {
            id,
            addr: addr(id),
            weight,
        })
        .collect()
}

fn upstream_with(weights: &[u32], config: UpstreamConfig) -> Arc<Upstream> {
    Arc::new(Upstream::new(nodes(weights), config).unwrap())
}

fn upstream(weights: &[u32]) -> Arc<Upstream> {
    upstream_with(weights, UpstreamConfig::default())
}

fn seeded() -> Arc<dyn RandomSource> {
    Arc::new(SeededRandom::new(SEED))
}

fn balancer(up: &Arc<Upstream>, alg: Algorithm, sticky: bool) -> Box<dyn Balancer> {
    build_with(Arc::clone(up), alg, sticky, seeded()).unwrap()
}

/// Picks `n` times with `ctx` (requests end at once) and counts per node.
fn counts(b: &dyn Balancer, ctx: &PickContext<'_>, n: usize) -> Vec<usize> {
    let mut c = vec![0; b.upstream().len()];
    for _ in 0..n {
        c[b.pick(ctx).unwrap()] += 1;
    }
    c
}

fn shares(c: &[usize]) -> Vec<f64> {
    let total: usize = c.iter().sum();
    c.iter().map(|&x| x as f64 / total as f64).collect()
}

/// Asserts that each share is within `rel` (relative) of its weight's.
fn assert_shares(c: &[usize], weights: &[u32], rel: f64) {
    let total_w: u32 = weights.iter().sum();
    for (i, (&s, &w)) in shares(c).iter().zip(weights).enumerate() {
        let want = f64::from(w) / f64::from(total_w);
        let err = (s - want).abs() / want;
        assert!(
            err <= rel,
            "node {i}: share {s:.4}, expected {want:.4} (error {:.2}% > {:.2}%), counts {c:?}",
            err * 100.0,
            rel * 100.0
        );
    }
}

// ---------------------------------------------------------------- upstream

#[test]
fn upstream_rejects_bad_ids_and_duplicate_addresses() {
    let mut n = nodes(&[1, 1]);
    n[1].id = 5;
    assert_eq!(
        Upstream::new(n, UpstreamConfig::default()).unwrap_err(),
        BalanceError::NodeId { index: 1, id: 5 }
    );
    let mut n = nodes(&[1, 1, 1]);
    n[2].addr = n[0].addr;
    assert!(matches!(
        Upstream::new(n, UpstreamConfig::default()).unwrap_err(),
        BalanceError::DuplicateAddr {
            first: 0,
            second: 2,
            ..
        }
    ));
    let mut n = nodes(&[1, 1]);
    n[1].addr = "[::ffff:10.0.0.1]:8080".parse().unwrap();
    assert!(matches!(
        Upstream::new(n, UpstreamConfig::default()).unwrap_err(),
        BalanceError::DuplicateAddr {
            first: 0,
            second: 1,
            ..
        }
    ));
}

#[test]
fn algorithm_names_round_trip() {
    for a in Algorithm::ALL {
        assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
    }
    assert!("wrr".parse::<Algorithm>().is_err());
}

#[test]
fn in_flight_guard_counts_and_finish_records_latency() {
    let up = upstream(&[1, 1]);
    let t = Instant::now();
    let g1 = up.begin(1);
    let g2 = up.begin(1);
    assert_eq!(up.state(1).in_flight(), 2);
    g1.finish_at(Duration::from_millis(4), true, t);
    assert_eq!(up.state(1).in_flight(), 1);
    drop(g2); // cancelled: uncounted, no sample
    assert_eq!(up.state(1).in_flight(), 0);
    assert_eq!(
        up.state(1).ewma(t, &up.config().ewma),
        Some(Duration::from_millis(4))
    );
    // The first sample is the estimate; node 0 has none.
    assert_eq!(up.state(0).ewma(t, &up.config().ewma), None);
    // Readmission forgets it.
    up.set_healthy(1, false, t);
    up.set_healthy(1, true, t);
    assert_eq!(up.state(1).ewma(t, &up.config().ewma), None);
}

#[test]
fn ewma_is_peak_sensitive_decays_and_penalises_failures() {
    let up = upstream(&[1, 1]);
    let cfg = up.config().ewma;
    let t = Instant::now();
    let ms = Duration::from_millis;
    up.observe(0, ms(2), true, t);
    // A slower sample is taken at once.
    up.observe(0, ms(8), true, t);
    assert_eq!(up.state(0).ewma(t, &cfg), Some(ms(8)));
    // A faster one τ later weighs 1 − 1/e.
    up.observe(0, ms(2), true, t + cfg.decay);
    let want = 8.0 / std::f64::consts::E + 2.0 * (1.0 - 1.0 / std::f64::consts::E);
    let got = up.state(0).ewma(t + cfg.decay, &cfg).unwrap().as_secs_f64() * 1e3;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // Read τ after the last sample, it has decayed by 1/e.
    let later = up
        .state(0)
        .ewma(t + 2 * cfg.decay, &cfg)
        .unwrap()
        .as_secs_f64()
        * 1e3;
    assert!((later - want / std::f64::consts::E).abs() < 1e-6);
    // A fast failure counts as the 1 s penalty.
    up.observe(1, ms(1), false, t);
    assert_eq!(up.state(1).ewma(t, &cfg), Some(cfg.failure_penalty));
}

#[test]
fn unavailable_reasons() {
    let t = Instant::now();
    let empty = upstream(&[]);
    assert_eq!(empty.unavailable(&[]), Some(Unavailable::NoNodes));
    assert_eq!(
        upstream(&[0, 0]).unavailable(&[]),
        Some(Unavailable::AllDrained)
    );
    let up = upstream(&[1, 0, 1]);
    assert_eq!(up.unavailable(&[]), None);
    assert_eq!(up.unavailable(&[0, 2]), Some(Unavailable::AllTried));
    up.set_healthy(0, false, t);
    up.set_healthy(2, false, t);
    assert_eq!(up.unavailable(&[]), Some(Unavailable::AllUnhealthy));
    assert_eq!(
        Unavailable::AllUnhealthy.to_string(),
        "every upstream node is unhealthy"
    );
    for alg in Algorithm::ALL {
        assert_eq!(
            balancer(&empty, alg, true).pick(&PickContext::at(CLIENT, t)),
            None
        );
    }
}

// ------------------------------------------------------------------- SWRR

#[test]
fn swrr_nginx_sequence_for_5_1_1() {
    let up = upstream(&[5, 1, 1]);
    let b = SmoothRoundRobin::new(Arc::clone(&up));
    let ctx = PickContext::at(CLIENT, Instant::now());
    let seq: Vec<usize> = (0..14).map(|_| b.pick(&ctx).unwrap()).collect();
    // a a b a c a a, twice.
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn swrr_exact_shares_over_7000_picks() {
    let up = upstream(&[5, 1, 1]);
    let b = SmoothRoundRobin::new(Arc::clone(&up));
    let ctx = PickContext::at(CLIENT, Instant::now());
    assert_eq!(counts(&b, &ctx, 7000), [5000, 1000, 1000]);
}

#[test]
fn swrr_exact_shares_from_four_threads() {
    let up = upstream(&[5, 1, 1]);
    let b = Arc::new(SmoothRoundRobin::new(Arc::clone(&up)));
    let now = Instant::now();
    let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                s.spawn(move || counts(&*b, &PickContext::at(CLIENT, now), 1750))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: Vec<usize> = (0..3)
        .map(|i| per_thread.iter().map(|c| c[i]).sum())
        .collect();
    assert_eq!(total, [5000, 1000, 1000]);
}

#[test]
fn swrr_skips_excluded_and_unhealthy_keeping_ratios() {
    let up = upstream(&[5, 1, 1, 3]);
    let b = SmoothRoundRobin::new(Arc::clone(&up));
    let t = Instant::now();
    up.set_healthy(3, false, t);
    let ctx = PickContext::at(CLIENT, t).with_exclude(&[2]);
    assert_eq!(counts(&b, &ctx, 600), [500, 100, 0, 0]);
}

// ----------------------------------------------------------------- random

#[test]
fn weighted_random_within_2_percent_over_100000_picks() {
    let weights = [5, 3, 2];
    let up = upstream(&weights);
    let b = WeightedRandom::with_random(Arc::clone(&up), seeded());
    let c = counts(&b, &PickContext::at(CLIENT, Instant::now()), 100_000);
    eprintln!(
        "weighted random 5:3:2 over 100000: {c:?} = {:.4?}",
        shares(&c)
    );
    assert_shares(&c, &weights, 0.02);
}

// ------------------------------------------------------------- least conn

#[test]
fn least_conn_prefers_fewer_in_flight() {
    let up = upstream(&[1, 1, 1]);
    let b = LeastConn::with_random(Arc::clone(&up), seeded());
    let ctx = PickContext::at(CLIENT, Instant::now());
    let _busy = [up.begin(0), up.begin(0), up.begin(1)];
    assert_eq!(counts(&b, &ctx, 100), [0, 0, 100]);
    // Holding what it picks, it fills node 2 up to node 1, then alternates.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(up.begin(b.pick(&ctx).unwrap()));
    }
    let load: Vec<u64> = (0..3).map(|i| up.state(i).in_flight()).collect();
    assert_eq!(load, [2, 2, 2]);
}

#[test]
fn least_conn_is_weighted() {
    let up = upstream(&[2, 1]);
    let b = LeastConn::with_random(Arc::clone(&up), seeded());
    let ctx = PickContext::at(CLIENT, Instant::now());
    // 1 in flight on weight 2 (0.5) beats 1 on weight 1 (1.0).
    let _g = [up.begin(0), up.begin(1)];
    assert_eq!(counts(&b, &ctx, 50), [50, 0]);
    // Picking and holding 298 more: in-flight ends 2:1.
    let mut held = Vec::new();
    for _ in 0..298 {
        held.push(up.begin(b.pick(&ctx).unwrap()));
    }
    assert_eq!(
        (up.state(0).in_flight(), up.state(1).in_flight()),
        (200, 100)
    );
}

#[test]
fn least_conn_idle_ties_follow_weights() {
    let weights = [3, 1];
    let up = upstream(&weights);
    let b = LeastConn::with_random(Arc::clone(&up), seeded());
    let c = counts(&b, &PickContext::at(CLIENT, Instant::now()), 100_000);
    eprintln!("least_conn idle 3:1 over 100000: {c:?}");
    assert_shares(&c, &weights, 0.02);
}

// -------------------------------------------------------------------- P2C

#[test]
fn p2c_moves_traffic_away_from_a_node_10x_slower() {
    let up = upstream(&[1, 1, 1, 1]);
    let b = PowerOfTwo::with_random(Arc::clone(&up), seeded());
    let t = Instant::now();
    for i in 0..3 {
        up.observe(i, Duration::from_millis(1), true, t);
    }
    up.observe(3, Duration::from_millis(10), true, t);
    // 16 requests in flight at any time, the oldest finishing first.
    let ctx = PickContext::at(CLIENT, t);
    let mut window = std::collections::VecDeque::new();
    let mut c = [0usize; 4];
    for _ in 0..100_000 {
        let n = b.pick(&ctx).unwrap();
        c[n] += 1;
        window.push_back(up.begin(n));
        if window.len() > 16 {
            window.pop_front();
        }
    }
    eprintln!(
        "p2c, node 3 EWMA 10x, 16 in flight: {c:?} = {:.4?}",
        shares(&c)
    );
    assert!(shares(&c)[3] < 0.10, "{c:?}");
}

/// Simulates 10 000 requests/s for 20 s against four nodes answering in
/// 1, 1, 1 and 10 ms, every response feeding the EWMA: the slow node ends
/// up with a small share (an even split would give it 25 %).
#[test]
fn p2c_simulation_learns_the_slow_node() {
    let up = upstream(&[1, 1, 1, 1]);
    let b = PowerOfTwo::with_random(Arc::clone(&up), seeded());
    let latency = [1, 1, 1, 10].map(Duration::from_millis);
    let t0 = Instant::now();
    let step = Duration::from_micros(100);
    let mut pending: BTreeMap<(Duration, u64), InFlight> = BTreeMap::new();
    let mut c = [0usize; 4];
    let mut late = [0usize; 4]; // the last 10 s
    for k in 0..200_000u64 {
        let at = step * k as u32;
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > at {
                break;
            }
            let ((done, _), guard) = entry.remove_entry();
            let node = guard.node();
            guard.finish_at(latency[node], true, t0 + done);
        }
        let n = b.pick(&PickContext::at(CLIENT, t0 + at)).unwrap();
        c[n] += 1;
        if k >= 100_000 {
            late[n] += 1;
        }
        pending.insert((at + latency[n], k), up.begin(n));
    }
    eprintln!(
        "p2c simulation, 1/1/1/10 ms: all {c:?} = {:.4?}; last 10 s {late:?} = {:.4?}",
        shares(&c),
        shares(&late)
    );
    assert!(shares(&c)[3] < 0.10, "{c:?}");
    assert!(shares(&late)[3] < 0.10, "{late:?}");
}

#[test]
fn p2c_follows_weights_when_latencies_are_equal() {
    let weights = [3, 1];
    let up = upstream(&[3, 1, 1]);
    let b = PowerOfTwo::with_random(Arc::clone(&up), seeded());
    let t = Instant::now();
    // Node 2 is excluded; nodes 0 and 1 have no estimate yet and no
    // request in flight, so the first draw (by weight) wins.
    let c = counts(&b, &PickContext::at(CLIENT, t).with_exclude(&[2]), 100_000);
    assert_eq!(c[2], 0);
    assert_shares(&c[..2], &weights, 0.02);
}

// -------------------------------------------------------- consistent hash

fn key(i: u32) -> [u8; 4] {
    i.to_le_bytes()
}

fn owners(b: &dyn Balancer, keys: u32, t: Instant) -> Vec<usize> {
    (0..keys)
        .map(|i| {
            let k = key(i);
            b.pick(&PickContext::at(CLIENT, t).with_hash_key(Some(&k)))
                .unwrap()
        })
        .collect()
}

#[test]
fn default_table_sizes_are_prime_and_roomy() {
    for n in [0, 1, 40, 41, 655, 656, 2621, 10_000, 1 << 20] {
        let m = default_table_size(n);
        assert!(lb_common::maglev::is_prime(m), "{m}");
        assert!(m as usize >= (n * 100).min(1_048_573), "{n} nodes: {m}");
    }
    assert_eq!(default_table_size(40), 4093);
    assert_eq!(default_table_size(41), 65537);
}

#[test]
fn chash_same_key_same_node_across_instances_and_orderings() {
    let up = upstream(&[1, 2, 1, 1, 3]);
    let b = ConsistentHash::new(Arc::clone(&up)).unwrap();
    assert_eq!(b.table_size(), 4093);
    let t = Instant::now();
    let first = owners(&b, 10_000, t);
    assert_eq!(owners(&b, 10_000, t), first);
    // Another proxy, with the nodes listed in reverse order: same addresses.
    let mut rev = nodes(&[1, 2, 1, 1, 3]);
    rev.reverse();
    for (i, n) in rev.iter_mut().enumerate() {
        n.id = i;
    }
    let up2 = Arc::new(Upstream::new(rev, UpstreamConfig::default()).unwrap());
    let b2 = ConsistentHash::new(Arc::clone(&up2)).unwrap();
    let second = owners(&b2, 10_000, t);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(up.nodes()[*a].addr, up2.nodes()[*b].addr);
    }
}

#[test]
fn chash_shares_follow_weights() {
    let weights = [1, 2, 1, 1, 3];
    let up = upstream(&weights);
    let b = ConsistentHash::new(Arc::clone(&up)).unwrap();
    let mut c = vec![0; 5];
    for n in owners(&b, 100_000, Instant::now()) {
        c[n] += 1;
    }
    eprintln!(
        "chash 1:2:1:1:3 over 100000 keys: {c:?} = {:.4?}",
        shares(&c)
    );
    assert_shares(&c, &weights, 0.05);
}

#[test]
fn chash_client_ip_is_the_default_key() {
    let up = upstream(&[1, 1, 1, 1]);
    let b = ConsistentHash::new(Arc::clone(&up)).unwrap();
    let t = Instant::now();
    let v4 = Ipv4Addr::new(198, 51, 100, 7);
    let picked = b.pick(&PickContext::at(IpAddr::V4(v4), t)).unwrap();
    let mapped = IpAddr::V6(v4.to_ipv6_mapped());
    assert_eq!(b.pick(&PickContext::at(mapped, t)), Some(picked));
    // Spread over clients.
    let mut c = [0usize; 4];
    for i in 0..4000u32 {
        let ip = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64 | 1));
        c[b.pick(&PickContext::at(ip, t)).unwrap()] += 1;
    }
    assert!(c.iter().all(|&x| x > 800), "{c:?}");
}

#[test]
fn chash_removing_a_node_moves_only_its_keys_give_or_take_maglev() {
    let t = Instant::now();
    let keys = 100_000;
    for (n, m) in [
        (5usize, None),
        (5, Some(65537)),
        (20, None),
        (40, None),
        (40, Some(65537)),
    ] {
        let weights = vec![1; n];
        let up = upstream(&weights);
        let before_b = match m {
            Some(m) => ConsistentHash::with_table_size(Arc::clone(&up), m).unwrap(),
            None => ConsistentHash::new(Arc::clone(&up)).unwrap(),
        };
        let before = owners(&before_b, keys, t);
        // Remove node 2: the others keep their addresses, renumbered.
        let rest: Vec<Node> = nodes(&weights)
            .into_iter()
            .filter(|x| x.id != 2)
            .enumerate()
            .map(|(id, x)| Node { id, ..x })
            .collect();
        let up2 = Arc::new(Upstream::new(rest, UpstreamConfig::default()).unwrap());
        let after_b = match m {
            Some(m) => ConsistentHash::with_table_size(Arc::clone(&up2), m).unwrap(),
            None => ConsistentHash::new(Arc::clone(&up2)).unwrap(),
        };
        let after = owners(&after_b, keys, t);
        let (mut on_removed, mut moved_extra) = (0, 0);
        for (a, b) in before.iter().zip(&after) {
            if *a == 2 {
                on_removed += 1;
            } else if up.nodes()[*a].addr != up2.nodes()[*b].addr {
                moved_extra += 1;
            }
        }
        let extra = moved_extra as f64 / (keys - on_removed) as f64;
        eprintln!(
            "chash remove 1 of {n} (m={}): {on_removed} keys were on it, {moved_extra} others moved ({:.3}%)",
            before_b.table_size(),
            extra * 100.0
        );
        assert!(extra <= 0.03, "{extra}");
    }
}

#[test]
fn chash_unhealthy_node_moves_only_its_own_keys() {
    let up = upstream(&[1, 1, 1, 1, 1]);
    let b = ConsistentHash::new(Arc::clone(&up)).unwrap();
    let t = Instant::now();
    let before = owners(&b, 50_000, t);
    up.set_healthy(1, false, t);
    let after = owners(&b, 50_000, t);
    let mut spread = [0usize; 5];
    for (a, b) in before.iter().zip(&after) {
        if *a == 1 {
            spread[*b] += 1;
        } else {
            assert_eq!(a, b);
        }
    }
    eprintln!("chash: keys of unhealthy node 1 went to {spread:?}");
    assert_eq!(spread[1], 0);
    assert!(
        spread.iter().enumerate().all(|(i, &x)| i == 1 || x > 1500),
        "{spread:?}"
    );
    // Deterministic fallback, and back home once healthy.
    assert_eq!(owners(&b, 50_000, t), after);
    up.set_healthy(1, true, t);
    assert_eq!(owners(&b, 50_000, t), before);
}

// ----------------------------------------------------------------- sticky

#[test]
fn sticky_cookie_is_honoured_and_falls_back() {
    let up = upstream(&[1, 1, 1, 1]);
    let b = balancer(&up, Algorithm::RoundRobin, true);
    let t = Instant::now();
    let cookie = up.cookie_value(2).to_owned();
    assert_eq!(cookie.len(), 16);
    assert!(cookie.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(up.node_for_cookie(cookie.as_bytes()), Some(2));
    let ctx = PickContext::at(CLIENT, t).with_sticky(Some(cookie.as_bytes()));
    assert_eq!(counts(&*b, &ctx, 100), [0, 0, 100, 0]);

    // Unhealthy: round robin over the others.
    up.set_healthy(2, false, t);
    assert_eq!(counts(&*b, &ctx, 30), [10, 10, 0, 10]);
    up.set_healthy(2, true, t);
    assert_eq!(counts(&*b, &ctx, 10), [0, 0, 10, 0]);

    // Excluded by a retry: another node.
    let retry = ctx.with_exclude(&[2]);
    assert_ne!(b.pick(&retry), Some(2));

    // Values that name no node: ignored.
    for bad in [
        &b"0123456789abcdef"[..],
        b"",
        b"zz",
        b"10.0.0.3:8080",
        b"0123456789abcdeg",
    ] {
        assert_eq!(up.node_for_cookie(bad), None);
        let ctx = PickContext::at(CLIENT, t).with_sticky(Some(bad));
        assert_eq!(counts(&*b, &ctx, 40), [10, 10, 10, 10]);
    }
    // Uppercase hex is the same id.
    assert_eq!(
        up.node_for_cookie(cookie.to_uppercase().as_bytes()),
        Some(2)
    );
}

#[test]
fn sticky_cookie_of_a_drained_node_falls_back() {
    let up = upstream(&[1, 0, 1]);
    let b = balancer(&up, Algorithm::LeastConn, true);
    let c = up.cookie_value(1).to_owned();
    let ctx = PickContext::at(CLIENT, Instant::now()).with_sticky(Some(c.as_bytes()));
    assert_eq!(counts(&*b, &ctx, 100)[1], 0);
}

#[test]
fn sticky_cookie_values_survive_reorder_and_reload() {
    let up = upstream(&[1, 1, 1]);
    let t = Instant::now();
    let mut n = nodes(&[1, 1, 1, 1]);
    n.swap(0, 3);
    for (i, x) in n.iter_mut().enumerate() {
        x.id = i;
    }
    let up2 = Upstream::with_previous(n, UpstreamConfig::default(), &up, t).unwrap();
    for i in 0..3 {
        let j = up2
            .nodes()
            .iter()
            .position(|x| x.addr == up.nodes()[i].addr)
            .unwrap();
        assert_eq!(up.cookie_value(i), up2.cookie_value(j));
        assert_eq!(up2.node_for_cookie(up.cookie_value(i).as_bytes()), Some(j));
    }
}

// ---------------------------------------------------- every algorithm

#[test]
fn every_algorithm_respects_exclude_health_and_zero_weight() {
    let up = upstream(&[2, 1, 0, 3, 1, 1]);
    let t = Instant::now();
    up.set_healthy(4, false, t);
    let excluded = [0, 5];
    let cookie = up.cookie_value(0).to_owned(); // names an excluded node
    for alg in Algorithm::ALL {
        for sticky in [false, true] {
            let b = balancer(&up, alg, sticky);
            assert_eq!(b.algorithm(), alg);
            let mut c = vec![0; 6];
            for i in 0..3000u32 {
                let k = key(i);
                let ctx = PickContext::at(CLIENT, t)
                    .with_exclude(&excluded)
                    .with_hash_key(Some(&k))
                    .with_sticky(Some(cookie.as_bytes()));
                c[b.pick(&ctx).unwrap()] += 1;
            }
            // Only nodes 1 and 3 may be picked: 0 and 5 excluded, 2 drained,
            // 4 unhealthy. Both get some.
            assert_eq!(
                (c[0], c[2], c[4], c[5]),
                (0, 0, 0, 0),
                "{alg} sticky={sticky}: {c:?}"
            );
            assert!(c[1] > 0 && c[3] > 0, "{alg} sticky={sticky}: {c:?}");
            // Everything excluded → None.
            let ctx = PickContext::at(CLIENT, t).with_exclude(&[1, 3, 0, 5]);
            assert_eq!(b.pick(&ctx), None, "{alg}");
        }
    }
}

#[test]
fn every_algorithm_returns_none_when_all_unhealthy() {
    let up = upstream(&[1, 2, 3]);
    let t = Instant::now();
    for i in 0..3 {
        up.set_healthy(i, false, t);
    }
    let cookie = up.cookie_value(1).to_owned();
    for alg in Algorithm::ALL {
        for sticky in [false, true] {
            let b = balancer(&up, alg, sticky);
            let ctx = PickContext::at(CLIENT, t).with_sticky(Some(cookie.as_bytes()));
            assert_eq!(b.pick(&ctx), None, "{alg}");
        }
    }
    assert_eq!(up.unavailable(&[]), Some(Unavailable::AllUnhealthy));
    // One back: everyone picks it.
    up.set_healthy(2, true, t);
    for alg in Algorithm::ALL {
        let b = balancer(&up, alg, false);
        assert_eq!(b.pick(&PickContext::at(CLIENT, t)), Some(2), "{alg}");
    }
}

#[test]
fn zero_weight_nodes_get_nothing() {
    let up = upstream(&[0, 1, 0, 1]);
    let t = Instant::now();
    for alg in Algorithm::ALL {
        let b = balancer(&up, alg, false);
        let mut c = [0usize; 4];
        for i in 0..2000u32 {
            let k = key(i);
            c[b.pick(&PickContext::at(CLIENT, t).with_hash_key(Some(&k)))
                .unwrap()] += 1;
        }
        assert_eq!((c[0], c[2]), (0, 0), "{alg}: {c:?}");
    }
    let drained = upstream(&[0, 0]);
    for alg in Algorithm::ALL {
        assert_eq!(
            balancer(&drained, alg, false).pick(&PickContext::at(CLIENT, t)),
            None
        );
    }
}

// ------------------------------------------------------------- slow start

fn slow_start_config() -> UpstreamConfig {
    UpstreamConfig {
        slow_start: Duration::from_secs(30),
        ..UpstreamConfig::default()
    }
}

#[test]
fn slow_start_ramps_effective_weight() {
    let up = upstream_with(&[1, 2], slow_start_config());
    let t0 = Instant::now();
    // Healthy from the start: full weight, no ramp.
    assert_eq!(up.effective_weight(1, t0), 2000);
    assert!(up.set_healthy(1, false, t0));
    assert!(up.set_healthy(1, true, t0));
    assert!(!up.set_healthy(1, true, t0));
    let s = Duration::from_secs;
    assert_eq!(up.effective_weight(1, t0), 200); // 10 %
    assert_eq!(up.effective_weight(1, t0 + s(15)), 1100); // 55 %
    assert!(up.state(1).is_ramping(t0 + s(29), up.config().slow_start));
    assert_eq!(up.effective_weight(1, t0 + s(29)), 1940); // 97 %
    assert_eq!(up.effective_weight(1, t0 + s(30)), 2000);
    assert!(!up.state(1).is_ramping(t0 + s(31), up.config().slow_start));
    assert_eq!(up.effective_weight(0, t0), 1000);
    // Without slow start, readmission is at full weight.
    let plain = upstream(&[1, 2]);
    plain.set_healthy(1, false, t0);
    plain.set_healthy(1, true, t0);
    assert_eq!(plain.effective_weight(1, t0), 2000);
}

#[test]
fn slow_start_shapes_round_robin_and_random() {
    let up = upstream_with(&[1, 1], slow_start_config());
    let t0 = Instant::now();
    up.set_healthy(1, false, t0);
    up.set_healthy(1, true, t0);
    let rr = SmoothRoundRobin::new(Arc::clone(&up));
    // 1000 : 100 at t0, exactly.
    assert_eq!(counts(&rr, &PickContext::at(CLIENT, t0), 1100), [1000, 100]);
    // 1000 : 550 at t0 + 15 s.
    let mid = PickContext::at(CLIENT, t0 + Duration::from_secs(15));
    assert_eq!(counts(&rr, &mid, 1550), [1000, 550]);
    let random = WeightedRandom::with_random(Arc::clone(&up), seeded());
    let c = counts(&random, &mid, 100_000);
    assert_shares(&c, &[1000, 550], 0.02);
    // Over at t0 + 30 s.
    let end = PickContext::at(CLIENT, t0 + Duration::from_secs(30));
    assert_eq!(counts(&rr, &end, 1000), [500, 500]);
}

#[test]
fn reload_shares_state_by_address_and_ramps_new_nodes() {
    let up = upstream_with(&[1, 1], slow_start_config());
    let t0 = Instant::now();
    let in_flight = up.begin(0);
    up.set_healthy(1, false, t0);
    up.observe(0, Duration::from_millis(7), true, t0);
    // Reload: node 0 keeps its address, node 1 too, a third is added.
    let up2 =
        Arc::new(Upstream::with_previous(nodes(&[1, 1, 1]), slow_start_config(), &up, t0).unwrap());
    assert_eq!(up2.state(0).in_flight(), 1);
    assert!(!up2.is_healthy(1));
    assert_eq!(
        up2.state(0).ewma(t0, &up2.config().ewma),
        Some(Duration::from_millis(7))
    );
    assert!(up2.state(2).is_ramping(t0, up2.config().slow_start));
    assert!(up2.effective_weight(2, t0 + Duration::from_secs(1)) < 200);
    // The old request ends against the shared state.
    drop(in_flight);
    assert_eq!(up2.state(0).in_flight(), 0);
    // Health set through either is seen by both.
    up2.set_healthy(1, true, t0);
    assert!(up.is_healthy(1));
}

#[test]
fn weighted_draws_stay_exact_when_most_weight_is_down() {
    // 49 of 51 nodes down: most draws are rejected and the exact scan
    // decides; the two left still split 1:3.
    let mut weights = vec![1; 50];
    weights.push(3);
    let up = upstream(&weights);
    let t = Instant::now();
    for i in 0..49 {
        up.set_healthy(i, false, t);
    }
    for alg in [Algorithm::Random, Algorithm::P2cEwma] {
        let b = balancer(&up, alg, false);
        let c = counts(&*b, &PickContext::at(CLIENT, t), 100_000);
        assert_eq!(c[..49].iter().sum::<usize>(), 0);
        if alg == Algorithm::Random {
            eprintln!("random, 2 of 51 up (1:3): {:?}", &c[49..]);
            assert_shares(&c[49..], &[1, 3], 0.02);
        }
    }
}
