//! Lazy routing (`config_store.routes: lazy`) against the real stores:
//! a host's routes are read on its first request and cached ("no such
//! host" too), changes invalidate the cache so a write is served the moment
//! it returns, concurrent misses share one read, a flood of random hosts is
//! shed over the miss cap while a cached host keeps serving, and with etcd
//! down a cached host serves while a new one gets 503 with Retry-After.
mod store_bed;

use std::time::{Duration, Instant};

use serde_json::Value;
use store_bed::{etcd_binary, http_with_head, Backend, Etcd, Node, StoreAt};

const TOKEN: &str = "lazy-token";

fn upstream(b: &Backend) -> String {
    format!(r#"{{"nodes":[{{"address":"{}"}}]}}"#, b.addr)
}

fn put(node: &Node, path: &str, body: &str) {
    let (s, b) = node.api("PUT", path, Some(body));
    assert_eq!(s, 200, "PUT {path}: {b}");
}

fn lazy_stats(node: &Node) -> Value {
    let (s, body) = node.api("GET", "/xlb/v1/status", None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(v["routes"], "lazy", "{body}");
    v["lazy"].clone()
}

fn counter(node: &Node, name: &str) -> u64 {
    lazy_stats(node)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Status, head (lowercased) and body of `GET /` for `host`.
fn get_full(node: &Node, host: &str) -> (u16, String, String) {
    http_with_head(&node.web, "GET", "/", &[("Host", host)], None).unwrap_or((
        0,
        String::new(),
        String::new(),
    ))
}

#[test]
fn lazy_hosts_load_on_first_request_cache_absence_and_follow_every_change() {
    let node = Node::start_with(
        StoreAt::Embedded { durable: true },
        TOKEN,
        "  routes: lazy\n",
    );
    let a = Backend::start("backend-a");
    let b = Backend::start("backend-b");
    put(&node, "/xlb/v1/upstreams/ua", &upstream(&a));
    put(&node, "/xlb/v1/upstreams/ub", &upstream(&b));
    put(
        &node,
        "/xlb/v1/routes/r1",
        r#"{"hosts":["a.test"],"upstream":"ua"}"#,
    );
    assert_eq!(
        counter(&node, "cached_slots"),
        0,
        "nothing loaded before a request"
    );

    // First request: one load, then served from the cache.
    assert_eq!(node.get_body("a.test"), (200, "backend-a".into()));
    let loads = counter(&node, "loads");
    assert_eq!(loads, 1);
    assert_eq!(node.get_body("a.test"), (200, "backend-a".into()));
    assert_eq!(
        counter(&node, "loads"),
        loads,
        "a cached host is not read again"
    );
    assert!(counter(&node, "hits") >= 1);

    // "No such host" is cached too.
    assert_eq!(node.get("nobody.test"), 404);
    let loads = counter(&node, "loads");
    assert_eq!(node.get("nobody.test"), 404);
    assert_eq!(counter(&node, "loads"), loads, "absence is cached");

    // Creating a route for a host cached as absent: served at once (the
    // write returned after the watch invalidated the entry).
    put(
        &node,
        "/xlb/v1/routes/r2",
        r#"{"hosts":["nobody.test"],"upstream":"ub"}"#,
    );
    assert_eq!(node.get_body("nobody.test"), (200, "backend-b".into()));

    // Replacing a cached route: the next request sees the new upstream.
    put(
        &node,
        "/xlb/v1/routes/r1",
        r#"{"hosts":["a.test"],"upstream":"ub"}"#,
    );
    assert_eq!(node.get_body("a.test"), (200, "backend-b".into()));

    // Moving a route to another host: the old host loses it (the removed
    // index entry invalidates it), the new one serves it.
    put(
        &node,
        "/xlb/v1/routes/r1",
        r#"{"hosts":["c.test"],"upstream":"ua"}"#,
    );
    assert_eq!(node.get("a.test"), 404);
    assert_eq!(node.get_body("c.test"), (200, "backend-a".into()));

    // Wildcards come in the same read; an exact name still beats one.
    put(
        &node,
        "/xlb/v1/routes/w",
        r#"{"hosts":["*.w.test"],"upstream":"ua"}"#,
    );
    put(
        &node,
        "/xlb/v1/routes/wx",
        r#"{"hosts":["x.w.test"],"upstream":"ub"}"#,
    );
    assert_eq!(node.get_body("y.w.test"), (200, "backend-a".into()));
    assert_eq!(node.get_body("x.w.test"), (200, "backend-b".into()));
    assert_eq!(node.get("w.test"), 404, "a wildcard needs one more label");

    // A route without a host is always loaded and serves unknown hosts.
    put(&node, "/xlb/v1/routes/fallback", r#"{"upstream":"ua"}"#);
    assert_eq!(node.get_body("elsewhere.test"), (200, "backend-a".into()));

    // Deleting: gone at once.
    let (s, body) = node.api("DELETE", "/xlb/v1/routes/r2", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        node.get_body("nobody.test"),
        (200, "backend-a".into()),
        "now the fallback"
    );
}

#[test]
fn concurrent_misses_for_one_host_share_one_read() {
    let node = Node::start_with(
        StoreAt::Embedded { durable: true },
        TOKEN,
        "  routes: lazy\n",
    );
    let a = Backend::start("backend-a");
    put(&node, "/xlb/v1/upstreams/ua", &upstream(&a));
    put(
        &node,
        "/xlb/v1/routes/r1",
        r#"{"hosts":["burst.test"],"upstream":"ua"}"#,
    );
    let before = counter(&node, "loads");
    let web = node.web;
    let threads: Vec<_> = (0..24)
        .map(|_| {
            std::thread::spawn(move || {
                http_with_head(&web, "GET", "/", &[("Host", "burst.test")], None)
                    .map(|(s, _, _)| s)
                    .unwrap_or(0)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let stats = lazy_stats(&node);
    assert_eq!(
        stats["loads"].as_u64().unwrap() - before,
        1,
        "24 requests, one store read: {stats}"
    );
}

#[test]
fn a_random_host_flood_is_shed_over_the_cap_while_a_cached_host_serves() {
    let node = Node::start_with(
        StoreAt::Embedded { durable: true },
        TOKEN,
        "  routes: lazy\n  lazy:\n    misses_per_second: 20\n    max_concurrent_misses: 2\n",
    );
    let a = Backend::start("backend-a");
    put(&node, "/xlb/v1/upstreams/ua", &upstream(&a));
    put(
        &node,
        "/xlb/v1/routes/hot",
        r#"{"hosts":["hot.test"],"upstream":"ua"}"#,
    );
    assert_eq!(node.get("hot.test"), 200);
    let loads_before = counter(&node, "loads");

    let started = Instant::now();
    let web = node.web;
    let flood: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut shed = 0;
                let mut other = Vec::new();
                for i in 0..100 {
                    let host = format!("r{t}-{i}.flood.test");
                    let (s, head, _) = http_with_head(&web, "GET", "/", &[("Host", &host)], None)
                        .unwrap_or((0, String::new(), String::new()));
                    match s {
                        503 => {
                            assert!(head.contains("x-xlb-error: route-lookup-shed"), "{head}");
                            assert!(head.contains("retry-after: 1"), "{head}");
                            shed += 1;
                        }
                        404 => {}
                        s => other.push(s),
                    }
                }
                (shed, other)
            })
        })
        .collect();
    // The cached host keeps serving during the flood.
    let mut hot_failures = 0;
    for _ in 0..50 {
        if node.get("hot.test") != 200 {
            hot_failures += 1;
        }
    }
    let mut shed = 0;
    for t in flood {
        let (s, other) = t.join().unwrap();
        assert!(
            other.is_empty(),
            "only 404 or 503 for unknown hosts: {other:?}"
        );
        shed += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(hot_failures, 0, "a cached host is never shed");
    assert!(
        shed > 0,
        "400 random hosts at 20 misses/s: some must be shed"
    );
    let stats = lazy_stats(&node);
    assert_eq!(stats["shed"].as_u64().unwrap(), shed, "{stats}");
    // The store saw at most the bucket's burst plus its refill.
    let loads = stats["loads"].as_u64().unwrap() - loads_before;
    let allowed = 20.0 + 20.0 * elapsed + 1.0;
    assert!(
        (loads as f64) <= allowed,
        "{loads} store reads in {elapsed:.2} s at 20/s: {stats}"
    );
}

#[test]
fn with_etcd_down_cached_hosts_serve_and_a_lazy_miss_gets_503_with_retry_after() {
    let Some(bin) =
        etcd_binary("with_etcd_down_cached_hosts_serve_and_a_lazy_miss_gets_503_with_retry_after")
    else {
        return;
    };
    let mut etcd = Etcd::start(&bin);
    let ep = etcd.endpoint();
    let node = Node::start_with(
        StoreAt::Etcd {
            endpoint: &ep,
            prefix: "/xlb",
        },
        TOKEN,
        "  routes: lazy\n",
    );
    let a = Backend::start("backend-a");
    put(&node, "/xlb/v1/upstreams/ua", &upstream(&a));
    put(
        &node,
        "/xlb/v1/routes/r1",
        r#"{"hosts":["known.test"],"upstream":"ua"}"#,
    );
    put(
        &node,
        "/xlb/v1/routes/r2",
        r#"{"hosts":["later.test"],"upstream":"ua"}"#,
    );
    assert_eq!(node.get_body("known.test"), (200, "backend-a".into()));

    etcd.kill();
    for _ in 0..20 {
        assert_eq!(node.get_body("known.test"), (200, "backend-a".into()));
    }
    let (s, head, _) = get_full(&node, "later.test");
    assert_eq!(s, 503, "{head}");
    assert!(
        head.contains("x-xlb-error: route-store-unavailable"),
        "{head}"
    );
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(counter(&node, "store_errors") >= 1);

    // Back: the miss is read (errors were not cached).
    etcd.restart();
    assert!(
        store_bed::eventually(Duration::from_secs(20), || node.get("later.test") == 200),
        "later.test never served after etcd came back"
    );
    assert_eq!(node.get_body("known.test"), (200, "backend-a".into()));
}
