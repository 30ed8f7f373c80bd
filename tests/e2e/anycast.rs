//! Anycast with real BIRD 2: an LB node (xlb + BIRD, configured by
//! `scripts/install-anycast-node.sh`) peers over eBGP with a router
//! namespace (BIRD from `scripts/bird/router.conf.in`). The VIP route must
//! be in the router's kernel table exactly while the node can serve it:
//!
//! - not before xlb runs (control: the session is up, yet no route — the
//!   route the test sees later comes from xlb);
//! - present while the VIP's backend passes its health check, withdrawn
//!   when it fails, back when it recovers;
//! - withdrawn by `xlb drain`, back after `xlb undrain`;
//! - withdrawn by a stop *before* XDP detaches (the pinned link is still
//!   there when the route goes).
//!
//! ```text
//! [router] up0 10.9.0.1 ── eth0 10.9.0.2 [lb: xlb + BIRD] eth1 10.8.0.1 ── eth0 10.8.0.2 [backend]
//! ```
use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use xlb_tests::{
    bird::{self, Bird},
    netns::{self, Netns},
    privilege::privileged,
    process::ChildGuard,
    xlb::Xlb,
};

const VIP: &str = "203.0.113.10";
const BACKEND: &str = "10.8.0.2";
/// How long BGP and health may take to show a change.
const CONVERGE: Duration = Duration::from_secs(20);

/// Whether the router's kernel has a route to the VIP.
fn routed(router: &Netns) -> bool {
    router
        .ip(&["-4", "route", "show", VIP])
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)
}

fn wait_routed(router: &Netns, want: bool, what: &str) {
    let deadline = Instant::now() + CONVERGE;
    while routed(router) != want {
        assert!(
            Instant::now() < deadline,
            "{what}: the router {} a route to {VIP} after {CONVERGE:?}",
            if want { "still has no" } else { "still has" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP server on the backend (what its health check connects to).
fn backend_server(backend: &Netns) -> ChildGuard {
    ChildGuard::new(
        backend
            .command("python3")
            .args(["-m", "http.server", "80", "--bind", BACKEND])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 http.server"),
    )
}

fn config(routes: &Path, bird: &Bird, anycast: bool) -> String {
    let mut y = format!(
        "interfaces:
  - name: eth0
    xdp_mode: native
lifecycle:
  stop_drain: 2s
l4:
  vips:
    - name: web
      address: \"{VIP}\"
      port: 80
      protocol: tcp
      mode: dsr
      health_check: {{type: tcp, interval: 200ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 1}}
      backends:
        - address: \"{BACKEND}\"
"
    );
    if anycast {
        y += &format!(
            "anycast:\n  routes_file: \"{}\"\n  bird_socket: \"{}\"\n",
            routes.display(),
            bird.socket().display()
        );
    }
    y
}

#[test]
fn vip_routes_follow_health_drain_and_stop() {
    if !privileged("anycast") {
        return;
    }
    let router = Netns::new("acr").unwrap();
    let lb = Netns::new("aclb").unwrap();
    let backend = Netns::new("acbe").unwrap();
    netns::veth(&router, "up0", &lb, "eth0").unwrap();
    netns::veth(&lb, "eth1", &backend, "eth0").unwrap();
    router.addr("up0", "10.9.0.1/24").unwrap();
    lb.addr("eth0", "10.9.0.2/24").unwrap();
    lb.addr("eth1", "10.8.0.1/24").unwrap();
    backend.addr("eth0", &format!("{BACKEND}/24")).unwrap();
    for (ns, dev) in [
        (&router, "up0"),
        (&lb, "eth0"),
        (&lb, "eth1"),
        (&backend, "eth0"),
    ] {
        ns.up(dev).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rdir = dir.path().join("router");
    let ndir = dir.path().join("node");
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::create_dir_all(&ndir).unwrap();
    let rconf = rdir.join("bird.conf");
    std::fs::write(
        &rconf,
        bird::router_config("10.9.0.1", 65000, &[("lb1", "10.9.0.2", 65001)]).unwrap(),
    )
    .unwrap();
    let router_bird = Bird::start(&router, &rconf, &rdir).unwrap();
    let (nconf, routes) = bird::install_node(&ndir, "10.9.0.2", 65001, "10.9.0.1", 65000).unwrap();
    let node_bird = Bird::start(&lb, &nconf, &ndir).unwrap();
    router_bird.wait_established("lb1", CONVERGE).unwrap();
    let _server = backend_server(&backend);

    // Control: a node whose xlb has no `anycast:` serves but announces
    // nothing; the session is up and the router has no route.
    {
        let _xlb =
            Xlb::start(&lb, &config(&routes, &node_bird, false)).expect("xlb without anycast");
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            !routed(&router),
            "control: a route appeared that xlb did not announce"
        );
    }

    let mut xlb = Xlb::start(&lb, &config(&routes, &node_bird, true)).expect("xlb starts");
    wait_routed(&router, true, "healthy VIP");
    println!(
        "announced while healthy: {}",
        router.ip(&["-4", "route", "show", VIP]).unwrap().trim()
    );

    // All backends down: withdrawn; recovered: announced again.
    drop(_server);
    wait_routed(&router, false, "backend down");
    let _server = backend_server(&backend);
    wait_routed(&router, true, "backend recovered");

    // Drain and undrain.
    let drain = |verb: &str| {
        let out = std::process::Command::new(xlb_tests::xlb::binary())
            .args([verb, "--instance", xlb.instance()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xlb {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    drain("drain");
    wait_routed(&router, false, "drained");
    drain("undrain");
    wait_routed(&router, true, "undrained");

    // A stop withdraws first: the route goes while the pinned link stays.
    let link = xlb.pin_dir.join("link_xdp_eth0");
    assert!(link.exists(), "the XDP link is pinned");
    let stopper = std::thread::spawn(move || {
        let status = xlb.stop();
        (xlb, status)
    });
    let deadline = Instant::now() + CONVERGE;
    while routed(&router) {
        assert!(
            Instant::now() < deadline,
            "stop: the route was not withdrawn"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        link.exists(),
        "the route was withdrawn only after XDP detached"
    );
    println!("stop: route withdrawn while the XDP link was still pinned");
    let (_xlb, status) = stopper.join().unwrap();
    assert!(status.unwrap().success());
    assert!(!link.exists(), "a stop detaches in the end");
    node_bird.stop();
    router_bird.stop();
}
