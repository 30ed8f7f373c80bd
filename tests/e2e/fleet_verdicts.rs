//! Shared health verdicts (`health: { shared_verdicts: true }`): three xlb
//! nodes in namespaces share one etcd (started by the test in the client's
//! namespace, stopped on drop); each node actively checks the same three
//! backends of one DSR VIP. A health-check disagreement is made real with
//! a `prohibit` route to backend 3 inside a node's namespace: that node's
//! TCP probes fail at once, everyone else's pass, and forwarding is not
//! touched (DSR uses the MAC resolved at start).
//!
//! - Shared verdicts on, backend 3 unreachable from one node: it stays in
//!   every node's table (all three `xlb stats` digests equal the digest of
//!   the full table), and the blocking node reports local `down`, fleet
//!   `up`.
//! - Then unreachable from two of three: a quorum (2 of 3) sees it down,
//!   so it leaves every table (all digests equal the digest of the table
//!   without backend 3), including the node that still reaches it.
//! - Node 3 replaced by a new process: its first table is already
//!   without backend 3 (it reads the fleet's decision before writing).
//! - etcd killed: every node keeps the last decision, except that a
//!   fleet-down backend a node itself sees up comes back in on that node
//!   (the documented outage rule: the two blocked nodes keep it out, the
//!   third takes it back). etcd restarted: out everywhere again.
//! - Both blocks lifted: back in every table.
//! - Node 3 stopped: it revokes its lease, so the others count two voters
//!   within seconds, not after the lease's 10 s TTL.
//! - Control, shared verdicts off: the one blocking node drops backend 3
//!   alone, and its digest differs from the others' — the split that the
//!   option prevents, and proof that the assertions can fail.
//!
//! ```text
//!                      [switch] br0
//!   client .1 (etcd) ─ lb1 .2 ─ lb2 .3 ─ lb3 .4 ─ backend1..3 .11-.13   (192.0.2.0/24)
//! ```
#[path = "../../lb-userspace/tests/store_bed/mod.rs"]
mod store_bed;

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    os::fd::OwnedFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, TCP_PORT, VIP4},
    netns::Netns,
    privilege::privileged,
    xlb::Xlb,
};

const NODES: [&str; 3] = ["192.0.2.2", "192.0.2.3", "192.0.2.4"];
/// The port the health checks probe on each backend's own address (the
/// bed's line servers listen on the VIP only).
const HEALTH_PORT: u16 = 8081;
/// Probe every 200 ms, two failures take a backend down: a verdict
/// changes within about half a second of the route change.
const INTERVAL_MS: u64 = 200;
/// How long the tables may take to settle after a change (verdict, vote,
/// watch, re-apply): generous for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(20);
/// Time given to a change that must *not* happen: several probe rounds
/// and vote round trips.
const HOLD: Duration = Duration::from_secs(3);

/// The fleet; field order is drop order (processes, etcd, XDP links,
/// namespaces).
struct Fleet {
    xlbs: Vec<Xlb>,
    /// Each node's config (for a restart).
    configs: Vec<String>,
    _health: HealthListeners,
    etcd: store_bed::Etcd,
    _xdp_pass: Vec<OwnedFd>,
    extra_nodes: Vec<Netns>,
    bed: L4Bed,
}

impl Fleet {
    fn node(&self, i: usize) -> &Netns {
        if i == 0 {
            &self.bed.lb
        } else {
            &self.extra_nodes[i - 1]
        }
    }

    /// Makes backend 3 unreachable from node `i` (its probes fail with
    /// "permission denied" at connect).
    fn block_backend3(&self, i: usize) {
        let b3 = self.bed.backends[2].v4;
        self.node(i)
            .ip(&["route", "add", "prohibit", &format!("{b3}/32")])
            .unwrap();
    }

    /// Undoes [`Fleet::block_backend3`].
    fn unblock_backend3(&self, i: usize) {
        let b3 = self.bed.backends[2].v4;
        self.node(i)
            .ip(&["route", "del", "prohibit", &format!("{b3}/32")])
            .unwrap();
    }

    /// Every node's `xlb stats --json`.
    fn stats(&self) -> Vec<Value> {
        self.xlbs.iter().map(|x| x.stats().unwrap()).collect()
    }
}

/// A listener on every backend's own address at [`HEALTH_PORT`] that
/// accepts and closes (what a TCP check needs); stopped on drop.
struct HealthListeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl HealthListeners {
    fn start(bed: &L4Bed) -> HealthListeners {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for b in &bed.backends {
            let addr = SocketAddr::new(IpAddr::V4(b.v4), HEALTH_PORT);
            let listener =
                b.ns.enter(move || TcpListener::bind(addr))
                    .unwrap()
                    .unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => drop(conn),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        HealthListeners { stop, threads }
    }
}

impl Drop for HealthListeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn node_config(bed: &L4Bed, etcd: &str, prefix: &str, shared: bool) -> String {
    let mut y = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\n\
         config_store: {{ kind: etcd, endpoints: [\"{etcd}\"], prefix: \"{prefix}\" }}\n\
         health: {{ shared_verdicts: {shared} }}\n\
         l4:\n  conntrack_size: 65536\n  max_vips: 4\n  max_backends: 16\n  vips:\n\
         \x20   - name: web\n      address: \"{VIP4}\"\n      port: {TCP_PORT}\n      protocol: tcp\n      mode: dsr\n\
         \x20     health_check: {{type: tcp, port: {HEALTH_PORT}, interval: {INTERVAL_MS}ms, timeout: {INTERVAL_MS}ms, unhealthy_threshold: 2, healthy_threshold: 2}}\n\
         \x20     backends:\n"
    );
    for b in &bed.backends {
        y += &format!("        - address: \"{}\"\n", b.v4);
    }
    y
}

/// Builds the bed, two more LB nodes on its switch, etcd in the client's
/// namespace, and starts xlb on the three nodes.
fn build(shared: bool) -> Option<Fleet> {
    let etcd_bin = store_bed::etcd_binary("fleet_verdicts")?;
    let bed = L4Bed::new().expect("testbed");
    let (extra_nodes, xdp_pass) = l4bed::extra_lb_nodes(&bed, "fvlb", &NODES[1..], 2).unwrap();
    let etcd = store_bed::Etcd::start_at(&etcd_bin, IpAddr::V4(CLIENT4), Some(&bed.client.path()));
    let mut fleet = Fleet {
        xlbs: Vec::new(),
        configs: Vec::new(),
        _health: HealthListeners::start(&bed),
        etcd,
        _xdp_pass: xdp_pass,
        extra_nodes,
        bed,
    };
    // One prefix per run: the nodes of this run vote among themselves.
    let prefix = format!("/xlb-verdicts-{}", std::process::id());
    for i in 0..NODES.len() {
        let yaml = node_config(&fleet.bed, &fleet.etcd.endpoint(), &prefix, shared);
        let x = Xlb::start(fleet.node(i), &yaml).expect("xlb on a node");
        fleet.xlbs.push(x);
        fleet.configs.push(yaml);
    }
    Some(fleet)
}

/// The digest of VIP `web`'s table with the given backends in it (as
/// every node computes it: same config, fixed Maglev seeds).
fn expected_digest(bed: &L4Bed, with_backend3: bool) -> String {
    let yaml = node_config(bed, "http://127.0.0.1:1", "/x", false);
    let config = xlb::config::Config::parse(&yaml, Path::new("expected.yaml")).unwrap();
    let mut vip = config.l4.vips[0].clone();
    if !with_backend3 {
        vip.backends[2].weight = 0;
    }
    let table =
        xlb::datapath::predict::table(&vip, lb_common::consts::DEFAULT_MAGLEV_SIZE).unwrap();
    format!(
        "{:016x}",
        xlb::datapath::l4_tables::table_digest(&vip, &table)
    )
}

fn digests(stats: &[Value]) -> Vec<String> {
    stats
        .iter()
        .map(|s| s["digests"]["web"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Backend 3's shared-verdict entry on one node.
fn verdict<'a>(stats: &'a Value, bed: &L4Bed) -> &'a Value {
    &stats["shared_verdicts"]["backends"]["web"][bed.backends[2].v4.to_string()]
}

/// Polls every node's stats until `done` holds for all of them; how long
/// it took, or the last stats when `limit` passed.
fn wait_until(
    fleet: &Fleet,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Duration, Vec<Value>> {
    let start = Instant::now();
    loop {
        let s = fleet.stats();
        if done(&s) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_quorum_decides_and_every_table_stays_equal() {
    if !privileged("fleet_verdicts") {
        return;
    }
    let Some(mut fleet) = build(true) else { return };
    let all = expected_digest(&fleet.bed, true);
    let without3 = expected_digest(&fleet.bed, false);
    assert_ne!(all, without3);

    // Every node registered and voted up on all three backends.
    let t = wait_until(&fleet, SETTLE, |s| {
        s.iter().all(|n| {
            n["shared_verdicts"]["connected"] == true
                && n["shared_verdicts"]["live_nodes"] == 3
                && verdict(n, &fleet.bed)["voters"] == 3
        })
    })
    .unwrap_or_else(|s| panic!("the fleet never saw three voters: {s:#?}"));
    println!("three nodes registered and voting after {t:?}");
    let s = fleet.stats();
    assert_eq!(digests(&s), vec![all.clone(); 3], "{:#}", s[0]);

    // One node cannot reach backend 3.
    fleet.block_backend3(0);
    let t = wait_until(&fleet, SETTLE, |s| {
        s.iter().all(|n| verdict(n, &fleet.bed)["down_votes"] == 1)
    })
    .unwrap_or_else(|s| panic!("node 1's down vote never reached the fleet: {s:#?}"));
    println!("node 1's down vote seen by every node after {t:?}");
    std::thread::sleep(HOLD);
    let s = fleet.stats();
    let d = digests(&s);
    println!("one node of three sees backend 3 down: digests {d:?} (full table {all})");
    assert_eq!(
        d,
        vec![all.clone(); 3],
        "backend 3 must stay in every table"
    );
    assert_eq!(verdict(&s[0], &fleet.bed)["local"], "down");
    for n in &s {
        assert_eq!(verdict(n, &fleet.bed)["fleet"], "up", "{n:#}");
        assert_eq!(verdict(n, &fleet.bed)["in_table"], true, "{n:#}");
    }

    // A second node cannot reach it: 2 of 3 is a quorum.
    let blocked = Instant::now();
    fleet.block_backend3(1);
    let t = wait_until(&fleet, SETTLE, |s| digests(s) == vec![without3.clone(); 3]).unwrap_or_else(
        |s| panic!("backend 3 did not leave every table (want {without3}): {s:#?}"),
    );
    println!(
        "two nodes of three see backend 3 down: every table without it after {:?} (digests {without3}); {t:?} of polling",
        blocked.elapsed()
    );
    let s = fleet.stats();
    assert_eq!(
        verdict(&s[2], &fleet.bed)["local"],
        "up",
        "node 3 still reaches it"
    );
    for n in &s {
        assert_eq!(verdict(n, &fleet.bed)["fleet"], "down", "{n:#}");
        assert_eq!(verdict(n, &fleet.bed)["down_votes"], 2, "{n:#}");
        assert_eq!(verdict(n, &fleet.bed)["in_table"], false, "{n:#}");
    }
    // It stays out (no flapping) while nothing changes.
    std::thread::sleep(HOLD);
    assert_eq!(digests(&fleet.stats()), vec![without3.clone(); 3]);

    // Node 3 (which reaches backend 3) is replaced by a new process: it
    // reads the fleet's decision before its first table write, so backend
    // 3 is never in its table, not even until its watch is up.
    assert!(fleet.xlbs[2].stop().unwrap().success());
    let restarted = Instant::now();
    fleet.xlbs[2] = Xlb::start(fleet.node(2), &fleet.configs[2]).expect("node 3 again");
    let first = fleet.xlbs[2].stats().unwrap();
    println!(
        "node 3 restarted in {:?}: first digest {}",
        restarted.elapsed(),
        digests(std::slice::from_ref(&first))[0]
    );
    assert_eq!(digests(&[first])[0], without3, "node 3's first table");
    wait_until(&fleet, SETTLE, |s| {
        s.iter().all(|n| verdict(n, &fleet.bed)["voters"] == 3)
    })
    .unwrap_or_else(|s| panic!("the restarted node 3 never voted: {s:#?}"));
    assert_eq!(digests(&fleet.stats()), vec![without3.clone(); 3]);
    let log = fleet.xlbs[2].stderr();
    let b3 = fleet.bed.backends[2].v4;
    assert!(
        !log.contains(&format!("{b3} of VIP web out of its table")),
        "backend 3 was in node 3's first table and taken out afterwards:\n{log}"
    );

    // etcd goes away (SIGKILL). Each node keeps the last decision, except
    // that a fleet-down backend it sees up comes back in: nodes 1 and 2
    // (still blocked) keep backend 3 out, node 3 takes it back.
    let killed = Instant::now();
    fleet.etcd.kill();
    let want = vec![without3.clone(), without3.clone(), all.clone()];
    let t = wait_until(&fleet, SETTLE, |s| {
        s.iter().all(|n| n["shared_verdicts"]["connected"] == false) && digests(s) == want
    })
    .unwrap_or_else(|s| panic!("the outage rule did not hold (want {want:?}): {s:#?}"));
    println!(
        "etcd killed: every node disconnected after {t:?}; digests {:?} (blocked nodes keep backend 3 out, node 3 sees it up and takes it back)",
        digests(&fleet.stats())
    );
    std::thread::sleep(HOLD);
    assert_eq!(digests(&fleet.stats()), want, "stable during the outage");

    // etcd is back: the fleet's decision holds again everywhere.
    fleet.etcd.restart();
    let back = Instant::now();
    let t = wait_until(&fleet, SETTLE, |s| {
        s.iter().all(|n| n["shared_verdicts"]["connected"] == true)
            && digests(s) == vec![without3.clone(); 3]
    })
    .unwrap_or_else(|s| panic!("the fleet did not agree again after etcd came back: {s:#?}"));
    println!(
        "etcd back after {:?} down: every table without backend 3 again after {:?} ({t:?} of polling)",
        back - killed,
        back.elapsed()
    );

    // Both nodes reach backend 3 again: it is back in every table.
    for i in [0, 1] {
        fleet.unblock_backend3(i);
    }
    let unblocked = Instant::now();
    wait_until(&fleet, SETTLE, |s| digests(s) == vec![all.clone(); 3])
        .unwrap_or_else(|s| panic!("backend 3 did not come back everywhere: {s:#?}"));
    println!(
        "backend 3 reachable again: back in every table after {:?}",
        unblocked.elapsed()
    );

    // Node 3 stops cleanly: it revokes its lease, so the others count two
    // live voters at once rather than after the lease's 10 s TTL.
    let stopping = Instant::now();
    assert!(
        fleet.xlbs[2].stop().unwrap().success(),
        "node 3 stopped cleanly"
    );
    let stopped = stopping.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s: Vec<Value> = fleet.xlbs[..2].iter().map(|x| x.stats().unwrap()).collect();
        if s.iter().all(|n| {
            n["shared_verdicts"]["live_nodes"] == 2 && verdict(n, &fleet.bed)["voters"] == 2
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3's key and votes still counted 5 s after its stop (lease TTL is 10 s): {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "node 3 stopped in {stopped:?}; the others counted 2 live voters {:?} after the stop began",
        stopping.elapsed()
    );
}

#[test]
fn control_without_shared_verdicts_one_node_splits_the_tables() {
    if !privileged("fleet_verdicts control") {
        return;
    }
    let Some(fleet) = build(false) else { return };
    let all = expected_digest(&fleet.bed, true);
    let without3 = expected_digest(&fleet.bed, false);
    assert_eq!(digests(&fleet.stats()), vec![all.clone(); 3]);
    fleet.block_backend3(0);
    let t = wait_until(&fleet, SETTLE, |s| digests(s)[0] == without3)
        .unwrap_or_else(|s| panic!("node 1 never dropped backend 3 on its own verdict: {s:#?}"));
    std::thread::sleep(HOLD);
    let s = fleet.stats();
    let d = digests(&s);
    println!("shared verdicts off, one node sees backend 3 down (after {t:?}): digests {d:?}");
    assert!(s.iter().all(|n| n["shared_verdicts"].is_null()));
    assert_eq!(d[0], without3, "the blocking node dropped backend 3 alone");
    assert_eq!(d[1], all);
    assert_eq!(d[2], all);
    assert_ne!(d[0], d[1], "the tables split");
}
