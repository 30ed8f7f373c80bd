//! `control_plane_priority: idle`: the control plane's threads (the main
//! runtime that runs the admin API, the store and the applier) are
//! `SCHED_IDLE` and the proxy workers keep the normal policy, as `ps -eLo
//! comm,cls` shows an operator; the control plane still applies a route
//! the moment its PUT returns. The control run, the default (`normal`),
//! leaves every thread normal.
mod store_bed;

use store_bed::{Backend, Node, StoreAt};

const TOKEN: &str = "sched-token";
const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// (thread name, scheduling policy) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let dir = t.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        // /proc/PID/task/TID/stat: field 41 is the policy; the name (field
        // 2) is in parentheses and may hold spaces, so count after it.
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let policy = after
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|v| v.parse().ok())
            .expect("policy field");
        out.push((comm.trim().to_string(), policy));
    }
    out
}

/// The policies of the threads whose name starts with `prefix`.
fn policies(all: &[(String, u32)], prefix: &str) -> Vec<u32> {
    all.iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, p)| *p)
        .collect()
}

fn serves_a_new_route(node: &Node, backend: &Backend) {
    let upstream = format!(r#"{{"nodes":[{{"address":"{}"}}]}}"#, backend.addr);
    let (s, b) = node.api("PUT", "/xlb/v1/upstreams/u", Some(&upstream));
    assert_eq!(s, 200, "{b}");
    let (s, b) = node.api(
        "PUT",
        "/xlb/v1/routes/r",
        Some(r#"{"hosts":["sched.test"],"upstream":"u"}"#),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get("sched.test"), 200, "the new route serves at once");
}

/// Root (or CAP_SYS_NICE) lets the workers leave the inherited idle
/// policy; without it the daemon keeps everything normal, so the check
/// would not apply.
fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if ["CI", "XLB_REQUIRE_PRIVILEGED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        panic!("{test}: needs root (CI runs as root)");
    }
    eprintln!("SKIPPED {test}: needs root or CAP_SYS_NICE");
    false
}

#[test]
fn proxy_workers_stay_normal_and_the_control_plane_goes_idle() {
    if !privileged("proxy_workers_stay_normal_and_the_control_plane_goes_idle") {
        return;
    }
    let backend = Backend::start("b");
    let node = Node::start_with(
        StoreAt::Embedded { durable: false },
        TOKEN,
        "control_plane_priority: idle\n",
    );
    serves_a_new_route(&node, &backend);
    let all = threads(node.pid().expect("running"));
    let workers = policies(&all, "xlb-worker-");
    assert_eq!(workers, vec![SCHED_OTHER], "proxy workers: {all:?}");
    let runtime = policies(&all, "tokio-rt");
    assert!(!runtime.is_empty(), "{all:?}");
    assert!(
        runtime.iter().all(|p| *p == SCHED_IDLE),
        "control plane: {all:?}"
    );
    // The main thread runs the daemon's own future: control plane too.
    let main: Vec<u32> = all
        .iter()
        .filter(|(n, _)| n == "xlb")
        .map(|(_, p)| *p)
        .collect();
    // (Unnamed threads it starts carry its name too: all of them idle.)
    assert!(!main.is_empty(), "{all:?}");
    assert!(
        main.iter().all(|p| *p == SCHED_IDLE),
        "main thread: {all:?}"
    );
}

#[test]
fn control_run_the_default_leaves_every_thread_normal() {
    let backend = Backend::start("b");
    let node = Node::start(StoreAt::Embedded { durable: false }, TOKEN);
    serves_a_new_route(&node, &backend);
    let all = threads(node.pid().expect("running"));
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.iter().all(|(_, p)| *p == SCHED_OTHER), "{all:?}");
}
