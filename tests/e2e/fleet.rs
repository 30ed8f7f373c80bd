//! An anycast fleet in namespaces: a router running BIRD 2 (`merge paths`,
//! ECMP hashed on each packet's own addresses, protocol and ports:
//! `fib_multipath_hash_policy=3`) peers over eBGP with three LB nodes, each
//! running xlb (DSR) and BIRD, in front of three backends. 300 long-lived
//! TCP connections are spread over the nodes by the router; then one node
//! dies (link down, processes killed). Its route is withdrawn, its flows
//! reach the other nodes, which find no connection-table entry but pick
//! the same backend from the same Maglev table: every connection goes on.
//!
//! Then node 3 is stopped the proper way (routes withdrawn, a drain while
//! it still forwards, then XDP detached): no connection breaks either.
//!
//! Control run: one node has a different backend set (its table digest
//! differs, which `xlb stats` shows), and some of the moved connections
//! break — the test can fail.
//!
//! ```text
//!                       [switch] br0
//!   client .1 ─ router .100 ─ lb1 .2 ─ lb2 .3 ─ lb3 .4 ─ backend1..3 .11-.13   (192.0.2.0/24)
//! ```
//! The client routes the VIP via the router, the router via BGP to the LB
//! nodes; the backends answer the client directly (DSR).
use std::{
    net::{SocketAddr, TcpStream},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use serde_json::Value;
use xlb_tests::{
    bird::{self, Bird},
    l4bed::{self, L4Bed, CLIENT4, TCP_PORT, VIP4},
    netns::{self, Netns},
    privilege::privileged,
    xlb::Xlb,
};

const FLOWS: u16 = 300;
const ROUTER: &str = "192.0.2.100";
const NODES: [&str; 3] = ["192.0.2.2", "192.0.2.3", "192.0.2.4"];
const CONVERGE: Duration = Duration::from_secs(30);

/// The fleet around an `L4Bed` (whose `lb` namespace is node 1).
struct Fleet {
    // Drop order: processes, then XDP links, then namespaces.
    xlbs: Vec<Option<Xlb>>,
    birds: Vec<Option<Bird>>,
    router_bird: Option<Bird>,
    _xdp_pass: Vec<OwnedFd>,
    _dir: tempfile::TempDir,
    router: Netns,
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
}

fn node_config(
    bed: &L4Bed,
    backends: &[usize],
    routes: &std::path::Path,
    socket: &std::path::Path,
) -> String {
    let mut y = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\nl4:\n  conntrack_size: 65536\n  max_vips: 4\n  max_backends: 16\n  vips:\n    - name: web\n      address: \"{VIP4}\"\n      port: {TCP_PORT}\n      protocol: tcp\n      mode: dsr\n      backends:\n"
    );
    for &b in backends {
        y += &format!("        - address: \"{}\"\n", bed.backends[b].v4);
    }
    y += &format!(
        "anycast:\n  routes_file: \"{}\"\n  bird_socket: \"{}\"\n",
        routes.display(),
        socket.display()
    );
    y
}

/// Next hops of the router's route to the VIP.
fn next_hops(router: &Netns) -> usize {
    let r = router
        .ip(&["-4", "route", "show", &format!("{VIP4}")])
        .unwrap_or_default();
    if r.trim().is_empty() {
        0
    } else {
        r.matches("nexthop").count().max(1)
    }
}

fn wait_next_hops(router: &Netns, n: usize) {
    let deadline = Instant::now() + CONVERGE;
    while next_hops(router) != n {
        assert!(
            Instant::now() < deadline,
            "the router's route to {VIP4} did not reach {n} next hops: {}",
            router
                .ip(&["-4", "route", "show", &format!("{VIP4}")])
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn build(lb3_backends: &[usize]) -> Fleet {
    let bed = L4Bed::new().expect("testbed");
    let sw = &bed.switch;
    let (extra_nodes, xdp_pass) = l4bed::extra_lb_nodes(&bed, "fllb", &NODES[1..], 2).unwrap();
    let router = Netns::new("flr").unwrap();
    netns::veth(sw, "p-r", &router, "eth0").unwrap();
    sw.ip(&["link", "set", "p-r", "master", "br0"]).unwrap();
    router.addr("eth0", &format!("{ROUTER}/24")).unwrap();
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.eth0.send_redirects", "0"),
        // Hash each forwarded packet's own source/destination address,
        // protocol and ports (0x37); policy 1 would reuse the hash the
        // client's socket put on the skb over veth, which TCP changes at
        // every retransmission timeout.
        ("net.ipv4.fib_multipath_hash_policy", "3"),
        ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
        ("net.ipv4.fib_multipath_use_neigh", "1"),
    ] {
        router.sysctl(k, v).unwrap();
    }
    bed.client
        .sysctl("net.ipv4.conf.all.accept_redirects", "0")
        .unwrap();
    bed.client
        .ip(&["route", "replace", &format!("{VIP4}/32"), "via", ROUTER])
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rdir = dir.path().join("router");
    std::fs::create_dir_all(&rdir).unwrap();
    let peers: Vec<(String, &str, u32)> = NODES
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("lb{}", i + 1), *a, 65001))
        .collect();
    let peers: Vec<(&str, &str, u32)> =
        peers.iter().map(|(n, a, s)| (n.as_str(), *a, *s)).collect();
    let rconf = rdir.join("bird.conf");
    std::fs::write(&rconf, bird::router_config(ROUTER, 65000, &peers).unwrap()).unwrap();
    let router_bird = Bird::start(&router, &rconf, &rdir).unwrap();
    let mut fleet = Fleet {
        xlbs: Vec::new(),
        birds: Vec::new(),
        router_bird: Some(router_bird),
        _xdp_pass: xdp_pass,
        _dir: dir,
        router,
        extra_nodes,
        bed,
    };
    for (i, addr) in NODES.iter().enumerate() {
        let ndir = fleet._dir.path().join(format!("node{}", i + 1));
        std::fs::create_dir_all(&ndir).unwrap();
        let (conf, routes) = bird::install_node(&ndir, addr, 65001, ROUTER, 65000).unwrap();
        let b = Bird::start(fleet.node(i), &conf, &ndir).unwrap();
        let backends: Vec<usize> = if i == 2 {
            lb3_backends.to_vec()
        } else {
            vec![0, 1, 2]
        };
        let yaml = node_config(&fleet.bed, &backends, &routes, b.socket());
        let x = Xlb::start(fleet.node(i), &yaml).expect("xlb on a node");
        fleet.birds.push(Some(b));
        fleet.xlbs.push(Some(x));
    }
    wait_next_hops(&fleet.router, 3);
    fleet
}

fn reason(stats: &Value, name: &str) -> u64 {
    stats["reasons"][name]["packets"].as_u64().unwrap_or(0)
}

/// TCP packets without SYN that missed the node's connection table.
fn midflow_misses(stats: &Value) -> u64 {
    stats["midflow_misses"]["web"]["packets"]
        .as_u64()
        .unwrap_or(0)
}

/// Asks every connection again; how many broke or moved.
fn broken(conns: &mut [(TcpStream, String)]) -> usize {
    let mut n = 0;
    for (s, first) in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        match l4bed::ask_tcp(s) {
            Ok(name) if &name == first => {}
            _ => n += 1,
        }
    }
    n
}

/// Runs the fleet with node 3's backend set `lb3_backends`; returns the
/// connections that broke when node 2 died, the table digests, and the
/// survivors' new-flow count after the death next to node 2's flows.
/// With `then_stop`, node 3 is then stopped (withdraw, drain, detach)
/// and the connections that broke then are returned too.
fn run(lb3_backends: &[usize], then_stop: bool) -> (usize, Vec<String>, u64, u64, usize) {
    let mut fleet = build(lb3_backends);
    let digests: Vec<String> = fleet
        .xlbs
        .iter()
        .map(|x| {
            x.as_ref().unwrap().stats().unwrap()["digests"]["web"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let vip = SocketAddr::new(VIP4.into(), TCP_PORT);
    let mut conns: Vec<(TcpStream, String)> = fleet
        .bed
        .client
        .enter(move || {
            (0..FLOWS)
                .map(|i| {
                    let src = SocketAddr::new(CLIENT4.into(), 42000 + i);
                    let mut s = l4bed::tcp_connect_from(src, vip, Duration::from_secs(5))
                        .expect("TCP via the fleet");
                    let name = l4bed::ask_tcp(&mut s).expect("first answer");
                    (s, name)
                })
                .collect()
        })
        .unwrap();
    let new_flows: Vec<u64> = fleet
        .xlbs
        .iter()
        .map(|x| reason(&x.as_ref().unwrap().stats().unwrap(), "tx_new_flow"))
        .collect();
    let misses_before: u64 = fleet
        .xlbs
        .iter()
        .map(|x| midflow_misses(&x.as_ref().unwrap().stats().unwrap()))
        .sum();
    assert_eq!(
        misses_before, 0,
        "every flow began with its SYN on its node"
    );
    println!("flows per node (new flows): {new_flows:?}; digests {digests:?}");
    assert!(
        new_flows.iter().all(|n| *n > 0),
        "the router spread flows over every node: {new_flows:?}"
    );

    // Node 2 dies: its link goes, then its processes.
    fleet.node(1).ip(&["link", "set", "eth0", "down"]).unwrap();
    if let Some(mut x) = fleet.xlbs[1].take() {
        x.kill9();
    }
    if let Some(b) = fleet.birds[1].take() {
        b.stop();
    }
    wait_next_hops(&fleet.router, 2);
    let broken_by_death = broken(&mut conns);
    let after: u64 = [0, 2]
        .iter()
        .map(|&i| {
            reason(
                &fleet.xlbs[i].as_ref().unwrap().stats().unwrap(),
                "tx_new_flow",
            )
        })
        .sum();
    let survivors_new = after - new_flows[0] - new_flows[2];
    let misses: u64 = [0, 2]
        .iter()
        .map(|&i| midflow_misses(&fleet.xlbs[i].as_ref().unwrap().stats().unwrap()))
        .sum();
    println!(
        "survivors counted {misses} mid-flow misses (TCP without SYN, no connection-table entry)"
    );
    println!(
        "node 2 died: {} of {FLOWS} connections broke; survivors took {survivors_new} flows they had not seen (node 2 had {})",
        broken_by_death, new_flows[1]
    );
    // A stop of node 3: its route goes first (the router moves its flows
    // to node 1 while node 3 still forwards), then it detaches.
    let mut broken_by_stop = 0;
    if then_stop {
        let mut x = fleet.xlbs[2].take().unwrap();
        let stopping = std::thread::spawn(move || {
            let status = x.stop();
            (x, status)
        });
        wait_next_hops(&fleet.router, 1);
        let (_x, status) = stopping.join().unwrap();
        assert!(status.unwrap().success(), "node 3 stopped cleanly");
        broken_by_stop = broken(&mut conns);
        println!("node 3 stopped (withdrawn, drained, detached): {broken_by_stop} of {FLOWS} connections broke");
    }
    drop(conns);
    for x in fleet.xlbs.iter_mut() {
        if let Some(x) = x.take() {
            drop(x);
        }
    }
    fleet.birds.clear();
    fleet.router_bird.take();
    (
        broken_by_death,
        digests,
        survivors_new.min(misses),
        new_flows[1],
        broken_by_stop,
    )
}

#[test]
fn a_node_dies_and_every_connection_goes_on() {
    if !privileged("fleet") {
        return;
    }
    let (broken, digests, survivors_new, lost_node_flows, broken_by_stop) = run(&[0, 1, 2], true);
    assert_eq!(broken, 0, "connections broke when node 2 died");
    assert_eq!(
        broken_by_stop, 0,
        "connections broke when node 3 was stopped"
    );
    assert!(
        digests.iter().all(|d| !d.is_empty() && *d == digests[0]),
        "digests differ: {digests:?}"
    );
    assert!(
        survivors_new >= lost_node_flows,
        "the survivors counted {survivors_new} moved flows (new flows and mid-flow misses, the smaller), node 2 had {lost_node_flows}"
    );
}

#[test]
fn control_a_node_with_another_backend_set_breaks_connections() {
    if !privileged("fleet control") {
        return;
    }
    let (broken, digests, _, _, _) = run(&[0, 1], false);
    assert_ne!(
        digests[2], digests[0],
        "the disagreeing node's digest must differ: {digests:?}"
    );
    assert!(
        broken > 0,
        "a node with another backend set should break some moved connections"
    );
}
