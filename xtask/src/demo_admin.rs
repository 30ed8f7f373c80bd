//! The admin-API part of `cargo xtask demo`: one xlb with an embedded,
//! durable store; while a client keeps requesting a route that exists, 1 000
//! routes are created through the API, each timed from the PUT sent to the
//! first 2xx for its new host through the proxy; prints the percentiles and
//! what the steady client saw. Loopback only.
#[path = "../../lb-userspace/tests/store_bed/mod.rs"]
mod store_bed;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use store_bed::{Backend, Node, StoreAt};

const ROUTES: usize = 1000;
const TOKEN: &str = "demo-token";

/// Runs the part; `XLB_BIN` names the binary.
pub fn run() -> anyhow::Result<()> {
    println!("\n== xlb demo, part 3: routes created through the admin API under traffic ==");
    let backend = Backend::start("demo-backend");
    let node = Node::start(StoreAt::Embedded { durable: true }, TOKEN);
    println!(
        "xlb: proxy on {}, admin API on {} (embedded redb store, fsync per write)",
        node.web, node.admin
    );
    let up = format!(r#"{{"nodes":[{{"address":"{}"}}]}}"#, backend.addr);
    let (s, body) = node.api("PUT", "/xlb/v1/upstreams/demo", Some(&up));
    anyhow::ensure!(s == 200, "PUT upstream: {s} {body}");
    let (s, body) = node.api(
        "PUT",
        "/xlb/v1/routes/steady",
        Some(r#"{"hosts":["steady.demo"],"upstream":"demo"}"#),
    );
    anyhow::ensure!(s == 200, "PUT route: {s} {body}");

    let stop = Arc::new(AtomicBool::new(false));
    let web = node.web;
    let flag = stop.clone();
    let client = std::thread::spawn(move || {
        let (mut ok, mut other) = (0u64, 0u64);
        while !flag.load(Ordering::Relaxed) {
            match store_bed::http(&web, "GET", "/", &[("Host", "steady.demo")], None) {
                Ok((200, _)) => ok += 1,
                _ => other += 1,
            }
        }
        (ok, other)
    });

    let mut times = Vec::with_capacity(ROUTES);
    let mut first_try = 0;
    let t_all = Instant::now();
    for i in 0..ROUTES {
        let host = format!("tenant-{i}.demo");
        let t0 = Instant::now();
        let (s, body) = node.api(
            "PUT",
            &format!("/xlb/v1/routes/tenant-{i}"),
            Some(&format!(r#"{{"hosts":["{host}"],"upstream":"demo"}}"#)),
        );
        anyhow::ensure!(s == 200, "PUT tenant-{i}: {s} {body}");
        let mut tries = 0;
        loop {
            tries += 1;
            if node.get(&host) == 200 {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "{host} never served"
            );
        }
        first_try += usize::from(tries == 1);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let total = t_all.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, other) = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "created {ROUTES} routes in {:.1} s; PUT sent -> first 2xx for the new host: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    println!("{first_try}/{ROUTES} new hosts answered 2xx on the first request after the PUT returned (read-your-writes)");
    println!("steady.demo meanwhile: {ok} requests answered 200, {other} otherwise");
    let (_, status) = node.api("GET", "/xlb/v1/status", None);
    println!(
        "GET /xlb/v1/status: {}",
        status.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    println!("=======================================================================");
    Ok(())
}
