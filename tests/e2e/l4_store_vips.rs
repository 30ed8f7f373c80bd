//! L4 VIPs created through the admin API (embedded store) reach the XDP
//! tables, over real namespaces (`xlb_tests::l4bed`):
//!
//! - a PUT of a VIP returns only once this node forwards it: the very
//!   next connection to the VIP reaches one of its backends, and the
//!   VIP's XDP counter moves;
//! - a PUT that changes one VIP's backend set rewrites that VIP's table
//!   only: the other VIP's table digest stays, the daemon's apply report
//!   names that one VIP, and an established flow keeps its backend;
//! - a malformed body gets 400 naming the field, and the tables stay;
//! - a DELETE takes the VIP out of the XDP maps: its traffic is passed to
//!   the kernel (`pass_not_vip` counts it) and no backend answers.
//!
//! Numbers are printed; run with `--nocapture` to see them.
#[path = "../../lb-userspace/tests/store_bed/mod.rs"]
mod store_bed;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde_json::Value;
use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, TCP_PORT, UDP_PORT, VIP4, VIP6},
    privilege::privileged,
    xlb::Xlb,
};

/// The admin API, inside the LB's namespace.
const ADMIN: &str = "127.0.0.1:9180";
const TIMEOUT: Duration = Duration::from_secs(2);

/// The node's file: the admin API over `store` (a `config_store:` value),
/// and one VIP of its own (`file6`: VIPs may stay in the file beside the
/// store's).
fn config(store: &str, bed: &L4Bed) -> String {
    format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\n\
         admin:\n  address: {ADMIN}\n\
         config_store: {store}\n\
         l4:\n  conntrack_size: 65536\n  max_vips: 8\n  max_backends: 16\n  vips:\n\
         \x20   - {{name: file6, address: \"{VIP6}\", port: {TCP_PORT}, protocol: tcp, mode: dsr, backends: [{{address: \"{}\"}}]}}\n",
        bed.backends[0].v6
    )
}

/// A VIP body (JSON, no name: the id names it).
fn vip(port: u16, proto: &str, backends: &[IpAddr]) -> String {
    let bs: Vec<Value> = backends
        .iter()
        .map(|a| serde_json::json!({"address": a.to_string()}))
        .collect();
    serde_json::json!({
        "address": VIP4.to_string(),
        "port": port,
        "protocol": proto,
        "mode": "dsr",
        "backends": bs,
    })
    .to_string()
}

/// One admin call from inside the LB's namespace: status and body.
fn api(bed: &L4Bed, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let addr: SocketAddr = ADMIN.parse().unwrap();
    bed.lb
        .enter(|| store_bed::http(&addr, method, path, &[], body))
        .expect("entering the LB namespace")
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Asks udp4 once from the client's source port `port`: who answered.
fn ask_udp4(bed: &L4Bed, port: u16) -> anyhow::Result<String> {
    bed.client.enter(|| {
        let s = l4bed::udp_from(
            SocketAddr::new(CLIENT4.into(), port),
            SocketAddr::new(VIP4.into(), UDP_PORT),
            TIMEOUT,
        )?;
        anyhow::Ok(l4bed::ask_udp(&s, 3)?)
    })?
}

fn counter(stats: &Value, section: &str, name: &str) -> u64 {
    stats[section][name]["packets"].as_u64().unwrap_or(0)
}

/// The `L4 tables: …` lines the daemon logged after the first `skip`.
fn reports(xlb: &Xlb, skip: usize) -> Vec<String> {
    xlb.stderr()
        .lines()
        .filter(|l| l.contains("L4 tables: "))
        .skip(skip)
        .map(str::to_string)
        .collect()
}

#[test]
fn embedded_store_vips_are_forwarded_changed_alone_and_deleted() {
    if !privileged("l4_store_vips") {
        return;
    }
    let bed = L4Bed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = format!(
        "{{ kind: embedded, path: \"{}\" }}",
        dir.path().join("store.redb").display()
    );
    run(&bed, &store);
}

#[test]
fn etcd_store_vips_are_forwarded_changed_alone_and_deleted() {
    if !privileged("l4_store_vips (etcd)") {
        return;
    }
    let Some(etcd_bin) = store_bed::etcd_binary("l4_store_vips (etcd)") else {
        return;
    };
    let bed = L4Bed::new().expect("testbed");
    // etcd in the client's namespace, reached over the bed's link.
    let etcd = store_bed::Etcd::start_at(&etcd_bin, IpAddr::V4(CLIENT4), Some(&bed.client.path()));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let prefix = format!("/xlb-{}", std::process::id());
    let store = format!(
        "{{ kind: etcd, endpoints: [\"{}\"], prefix: \"{prefix}\", snapshot: \"{}\" }}",
        etcd.endpoint(),
        dir.path().join("snapshot.json").display()
    );
    run(&bed, &store);
    drop(etcd);
}

/// The whole sequence over the store `store` names.
fn run(bed: &L4Bed, store: &str) {
    let b: Vec<IpAddr> = bed.backends.iter().map(|b| IpAddr::V4(b.v4)).collect();
    let xlb = Xlb::start(&bed.lb, &config(store, bed)).expect("xlb with the admin API");

    // A UDP VIP first: the one that must stay untouched later.
    let (status, body) = api(
        bed,
        "PUT",
        "/xlb/v1/vips/udp4",
        Some(&vip(UDP_PORT, "udp", &b)),
    );
    assert_eq!(status, 200, "PUT udp4: {body}");
    let dns = ask_udp4(bed, 40000).expect("udp4 answered after its PUT");
    println!("udp4 answered by {dns}");

    // The TCP VIP with two backends: the next connection is forwarded.
    let before = xlb.stats().expect("stats");
    assert_eq!(counter(&before, "vips", "tcp4"), 0);
    let reports_before = reports(&xlb, 0).len();
    let put_at = Instant::now();
    let (status, body) = api(
        bed,
        "PUT",
        "/xlb/v1/vips/tcp4",
        Some(&vip(TCP_PORT, "tcp", &b[..2])),
    );
    let put_took = put_at.elapsed();
    assert_eq!(status, 200, "PUT tcp4: {body}");
    let returned = Instant::now();
    let (mut stream, first) = bed
        .client
        .enter(|| {
            let mut s = l4bed::tcp_connect_from(
                SocketAddr::new(CLIENT4.into(), 41000),
                SocketAddr::new(VIP4.into(), TCP_PORT),
                TIMEOUT,
            )?;
            let name = l4bed::ask_tcp(&mut s)?;
            anyhow::Ok((s, name))
        })
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the first connection after the PUT returned was not forwarded: {e:#}; stats {}",
                xlb.stats().map(|s| s.to_string()).unwrap_or_default()
            )
        });
    let answered = returned.elapsed();
    assert!(
        first == "backend1" || first == "backend2",
        "tcp4 has backends 1 and 2, answered by {first}"
    );
    let after = xlb.stats().expect("stats");
    let tcp4_packets = counter(&after, "vips", "tcp4");
    assert!(
        tcp4_packets > 0,
        "the tcp4 XDP counter did not move: {}",
        after["vips"]
    );
    println!(
        "PUT tcp4 took {:.2} ms; PUT returned -> first connection answered by {first}: {:.2} ms (connect + one line); tcp4 counter {tcp4_packets} packets",
        put_took.as_secs_f64() * 1e3,
        answered.as_secs_f64() * 1e3
    );
    let digests = after["digests"].clone();
    let udp4_digest = digests["udp4"].as_str().expect("udp4 digest").to_string();
    let file6_digest = digests["file6"]
        .as_str()
        .expect("the file's VIP is served beside the store's")
        .to_string();
    let tcp4_digest = digests["tcp4"].as_str().expect("tcp4 digest").to_string();
    let added = reports(&xlb, reports_before);
    assert!(
        added.iter().any(|l| l.contains("+vips [\"tcp4\"]")),
        "no apply report adding tcp4: {added:?}"
    );

    // A third backend for tcp4: only tcp4's table is rewritten.
    let reports_before = reports(&xlb, 0).len();
    let (status, body) = api(
        bed,
        "PUT",
        "/xlb/v1/vips/tcp4",
        Some(&vip(TCP_PORT, "tcp", &b)),
    );
    assert_eq!(status, 200, "PUT tcp4 (3 backends): {body}");
    let changed = xlb.stats().expect("stats");
    assert_eq!(
        changed["digests"]["udp4"].as_str(),
        Some(udp4_digest.as_str()),
        "udp4's table changed"
    );
    assert_ne!(
        changed["digests"]["tcp4"].as_str(),
        Some(tcp4_digest.as_str()),
        "tcp4's table did not change"
    );
    let added = reports(&xlb, reports_before);
    assert_eq!(added.len(), 1, "one apply for one PUT: {added:?}");
    assert!(
        added[0].contains("+vips [] ~vips [\"tcp4\"] -vips []"),
        "the apply touched more than tcp4: {}",
        added[0]
    );
    let slots: usize = added[0]
        .rsplit(", ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("slots written");
    println!(
        "PUT tcp4 with a third backend: {}",
        added[0].split("L4 tables: ").nth(1).unwrap_or("")
    );
    // One table half: tcp4's idle half, never written before, in full.
    assert_eq!(slots, 65537, "tcp4's idle half, and nothing else");
    // Back to backends 1 and 2: the idle half still holds that table, so
    // no slot is written, the VIP only flips halves.
    let slots_of = |line: &str| -> usize {
        line.rsplit(", ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("slots written")
    };
    let put_one = |backends: &[IpAddr], what: &str| -> usize {
        let before = reports(&xlb, 0).len();
        let (status, body) = api(
            bed,
            "PUT",
            "/xlb/v1/vips/tcp4",
            Some(&vip(TCP_PORT, "tcp", backends)),
        );
        assert_eq!(status, 200, "PUT tcp4 ({what}): {body}");
        let added = reports(&xlb, before);
        assert_eq!(added.len(), 1, "one apply for one PUT: {added:?}");
        assert!(
            added[0].contains("+vips [] ~vips [\"tcp4\"] -vips []"),
            "{}",
            added[0]
        );
        let n = slots_of(&added[0]);
        println!("PUT tcp4 ({what}): {n} of 65537 slots written");
        n
    };
    assert_eq!(put_one(&b[..2], "backends 1, 2 again"), 0);
    // Backends 1 and 3: the idle half holds the three-backend table; only
    // the slots that differ are written.
    let diff = put_one(&[b[0], b[2]], "backends 1, 3");
    assert!(diff > 0 && diff < 65537 / 2, "{diff} slots written");
    let changed = xlb.stats().expect("stats");
    assert_eq!(
        changed["digests"]["udp4"].as_str(),
        Some(udp4_digest.as_str()),
        "udp4's table changed"
    );
    // The established flow keeps its backend (connection table).
    let again = bed
        .client
        .enter(|| l4bed::ask_tcp(&mut stream))
        .unwrap()
        .expect("the established flow still answers");
    assert_eq!(
        again, first,
        "an established flow moved when the backend set changed"
    );

    // A malformed body: 400 naming the field, nothing changed.
    let bad = vip(TCP_PORT, "tcp", &b[..1]).replace("\"port\":80", "\"port\":\"eighty\"");
    assert!(bad.contains("eighty"), "{bad}");
    // Each refused with 400 and an issue on its field.
    let refused = |body: &str, field: &str| -> Value {
        let (status, answer) = api(bed, "PUT", "/xlb/v1/vips/tcp4", Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        let v: Value = serde_json::from_str(&answer).expect("JSON error");
        assert!(
            v["issues"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["field"] == field),
            "the 400 does not name `{field}`: {answer}"
        );
        v
    };
    refused(&bad, "port");
    // An IPv6 backend on an IPv4 VIP (the checks of `xlb check`).
    let mixed = vip(TCP_PORT, "tcp", &b[..1]).replace("192.0.2.11", "2001:db8::11");
    let issues = refused(&mixed, "backends[0].address");
    println!(
        "bad bodies: 400 on `port` (not a number) and on `backends[0].address` ({})",
        issues["error"]
    );
    let unchanged = xlb.stats().expect("stats");
    assert_eq!(
        unchanged["digests"], changed["digests"],
        "a refused body changed the tables"
    );
    let (status, body) = api(bed, "GET", "/xlb/v1/vips/tcp4", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("192.0.2.13") && !body.contains("2001:db8::11"),
        "the stored VIP changed: {body}"
    );

    // Valid bodies this node cannot serve: 422 naming the reason, nothing
    // stored, the tables unchanged. (Before the datapath was asked first,
    // each was stored, answered 200, and only logged as not applied.)
    let cannot = |id: &str, body: &str, reason: &str| {
        let at = Instant::now();
        let (status, answer) = api(bed, "PUT", &format!("/xlb/v1/vips/{id}"), Some(body));
        assert_eq!(status, 422, "PUT {id}: {answer}");
        assert!(
            answer.contains(reason),
            "PUT {id}: the 422 does not say `{reason}`: {answer}"
        );
        let (status, stored) = api(bed, "GET", &format!("/xlb/v1/vips/{id}"), None);
        assert_eq!(status, 404, "{id} was stored anyway: {stored}");
        println!(
            "PUT {id} refused in {:.0} ms: {answer}",
            at.elapsed().as_secs_f64() * 1e3
        );
    };
    // A backend on the link that no neighbour answers for.
    let gone: IpAddr = "192.0.2.99".parse().unwrap();
    cannot("ghost", &vip(8080, "tcp", &[gone]), "192.0.2.99");
    // The address, port and protocol of the file's VIP, under another id.
    let file_clash = serde_json::json!({
        "address": VIP6.to_string(), "port": TCP_PORT, "protocol": "tcp", "mode": "dsr",
        "backends": [{"address": bed.backends[0].v6.to_string()}],
    })
    .to_string();
    cannot("clash6", &file_clash, "file6");
    assert_eq!(
        xlb.stats().expect("stats")["digests"],
        changed["digests"],
        "a refused VIP changed the tables"
    );

    // DELETE: the VIP leaves the maps; its packets go to the kernel.
    let before = xlb.stats().expect("stats");
    let passed_before = counter(&before, "reasons", "pass_not_vip");
    let (status, body) = api(bed, "DELETE", "/xlb/v1/vips/tcp4", None);
    assert_eq!(status, 200, "DELETE tcp4: {body}");
    let refused = bed
        .client
        .enter(|| {
            l4bed::tcp_connect_from(
                SocketAddr::new(CLIENT4.into(), 42000),
                SocketAddr::new(VIP4.into(), TCP_PORT),
                Duration::from_millis(1500),
            )
            .and_then(|mut s| Ok(l4bed::ask_tcp(&mut s)?))
        })
        .unwrap();
    assert!(
        refused.is_err(),
        "tcp4 still forwarded after its DELETE: {refused:?}"
    );
    let gone = xlb.stats().expect("stats");
    let passed = counter(&gone, "reasons", "pass_not_vip") - passed_before;
    assert!(
        passed > 0,
        "no packet counted as pass_not_vip after the DELETE: {}",
        gone["reasons"]
    );
    assert!(
        gone["digests"].get("tcp4").is_none(),
        "tcp4 still has a table: {}",
        gone["digests"]
    );
    assert_eq!(gone["digests"]["udp4"].as_str(), Some(udp4_digest.as_str()));
    assert_eq!(
        gone["digests"]["file6"].as_str(),
        Some(file6_digest.as_str())
    );
    println!("after DELETE tcp4: the next connection was not answered ({}); {passed} packets passed to the kernel as pass_not_vip", refused.unwrap_err());
    // udp4 still serves.
    let dns = ask_udp4(bed, 40001).expect("udp4 still answers");
    println!("udp4 still answered by {dns}");

    // Health checks apply to stored VIPs: nothing listens on port 8081 of
    // the backends, so both leave the table of a VIP checked there.
    let mut checked: Value = serde_json::from_str(&vip(TCP_PORT, "tcp", &b[..2])).unwrap();
    checked["health_check"] = serde_json::json!({
        "type": "tcp", "port": 8081, "interval": "100ms", "timeout": "100ms",
        "unhealthy_threshold": 2, "healthy_threshold": 1,
    });
    let (status, body) = api(bed, "PUT", "/xlb/v1/vips/hc4", Some(&checked.to_string()));
    assert_eq!(status, 200, "PUT hc4: {body}");
    let reports_before = reports(&xlb, 0).len();
    let t = Instant::now();
    let both_out = store_bed::eventually(Duration::from_secs(10), || {
        let log = xlb.stderr();
        b[..2]
            .iter()
            .all(|a| log.contains(&format!("L4 backend l4/hc4/{a} out of its VIP's table")))
    });
    assert!(
        both_out,
        "hc4's backends did not leave its table: {}",
        xlb.stderr()
    );
    // The health verdicts re-applied hc4's table, and only hc4's.
    let applies = reports(&xlb, reports_before);
    assert!(
        applies
            .iter()
            .any(|l| l.contains("+vips [] ~vips [\"hc4\"] -vips []")),
        "no apply of hc4 alone after its health verdicts: {applies:?}"
    );
    println!(
        "hc4 (health-checked, stored): both backends out of its table {:?} after the PUT",
        t.elapsed()
    );
    let (status, body) = api(bed, "DELETE", "/xlb/v1/vips/hc4", None);
    assert_eq!(status, 200, "DELETE hc4: {body}");

    // A crash and a restart: the stored VIP keeps its pinned row (its
    // counter goes on) and is forwarded while no xlb runs.
    let udp4_before = counter(&xlb.stats().expect("stats"), "vips", "udp4");
    let instance = xlb.instance().to_string();
    let reports_before_kill = reports(&xlb, 0).len();
    let mut xlb = xlb;
    xlb.kill9();
    let dns = ask_udp4(bed, 40002).expect("udp4 forwarded by the pinned tables while no xlb runs");
    println!("xlb killed: udp4 still answered by {dns}");
    let xlb = Xlb::start_named(&bed.lb, &instance, &config(store, bed), "info", &[])
        .expect("xlb started again");
    let restarted = xlb.stats().expect("stats");
    let udp4_after = counter(&restarted, "vips", "udp4");
    assert!(
        udp4_after > udp4_before,
        "udp4's counter went from {udp4_before} to {udp4_after}: its row was not adopted"
    );
    assert_eq!(
        restarted["digests"]["udp4"].as_str(),
        Some(udp4_digest.as_str())
    );
    let (status, body) = api(bed, "GET", "/xlb/v1/vips/tcp4", None);
    assert_eq!(status, 404, "tcp4 came back: {body}");
    let after_restart = reports(&xlb, reports_before_kill);
    // Listed in the report as `+vips [..] ~vips [..] -vips [..]`.
    let list = |r: &str, which: &str| -> String {
        r.split(&format!("{which} ["))
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or("")
            .to_string()
    };
    for r in &after_restart {
        assert!(!list(r, "+vips").contains("udp4"), "udp4 added anew: {r}");
        assert!(!list(r, "-vips").contains("udp4"), "udp4 removed: {r}");
    }
    println!(
        "restarted: udp4 counter {udp4_before} -> {udp4_after} (row adopted); applies: {:?}",
        after_restart
            .iter()
            .map(|l| l.split("L4 tables: ").nth(1).unwrap_or(""))
            .collect::<Vec<_>>()
    );

    // A reload of the file (SIGHUP) keeps the store's VIPs.
    let line = xlb.reload(&config(store, bed)).expect("reload");
    assert!(line.starts_with("xlb reloaded"), "{line}");
    let reloaded = xlb.stats().expect("stats");
    assert_eq!(
        reloaded["digests"]["udp4"].as_str(),
        Some(udp4_digest.as_str()),
        "the reload dropped the stored VIP: {}",
        reloaded["digests"]
    );
    assert_eq!(
        reloaded["digests"]["file6"].as_str(),
        Some(file6_digest.as_str())
    );

    drop(xlb);
}
