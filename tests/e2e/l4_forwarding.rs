//! L4 forwarding end to end, per mode (DSR and IPIP), IPv4 and IPv6, TCP
//! and UDP, over real namespaces (`xlb_tests::l4bed`): a client opens
//! connections from chosen source ports to the VIPs through `xlb run` on
//! the LB, and every one must reach the backend `xlb flow` predicted. Then
//! the backend set changes at run time (SIGHUP) and established flows must
//! keep their backend through the connection table: a backend removed and
//! re-added, a backend drained (weight 0), a broken config refused.
//!
//! Numbers (flows per backend, reason counters) are printed; run with
//! `--nocapture` to see them.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use serde_json::Value;
use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, CLIENT6, TCP_PORT, UDP_PORT, VIP4, VIP6},
    privilege::privileged,
    xlb::Xlb,
};

/// Every connect, read and datagram wait is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per UDP question (a datagram may be lost while neighbours resolve).
const UDP_ATTEMPTS: u32 = 3;
/// First wave: connections per family and protocol.
const TCP_FLOWS: u16 = 60;
const UDP_FLOWS: u16 = 30;
/// Later waves.
const TCP_FLOWS_LATER: u16 = 30;
const UDP_FLOWS_LATER: u16 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The four VIPs' (name, address, port, protocol).
fn vips() -> [(&'static str, IpAddr, u16, Proto); 4] {
    [
        ("tcp4", VIP4.into(), TCP_PORT, Proto::Tcp),
        ("udp4", VIP4.into(), UDP_PORT, Proto::Udp),
        ("tcp6", VIP6.into(), TCP_PORT, Proto::Tcp),
        ("udp6", VIP6.into(), UDP_PORT, Proto::Udp),
    ]
}

/// The config: every VIP in `mode` with the backends `(number, weight)`
/// (numbers 1-based, as in `backend1`). `wrong_family` adds a backend of
/// the other family to `tcp4`, which validation must refuse.
fn config(bed: &L4Bed, mode: &str, backends: &[(usize, u32)], wrong_family: bool) -> String {
    let mut y = String::from(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\nl4:\n  conntrack_size: 65536\n  max_vips: 8\n  max_backends: 64\n  vips:\n",
    );
    for (name, addr, port, proto) in vips() {
        y += &format!(
            "    - name: {name}\n      address: \"{addr}\"\n      port: {port}\n      protocol: {}\n      mode: {mode}\n      backends:\n",
            proto.name()
        );
        if backends.is_empty() {
            y += "        []\n";
        }
        for &(n, weight) in backends {
            let b = &bed.backends[n - 1];
            let a: IpAddr = if addr.is_ipv4() {
                b.v4.into()
            } else {
                b.v6.into()
            };
            y += &format!("        - address: \"{a}\"\n          weight: {weight}\n");
        }
        if wrong_family && name == "tcp4" {
            y += &format!("        - address: \"{}\"\n", bed.backends[0].v6);
        }
    }
    y
}

/// `xlb flow` for many flows at once (8 processes at a time). `Xlb` is
/// not `Sync` (it owns a channel receiver), so the threads run the binary
/// themselves on the daemon's config file, as `Xlb::flow` does.
fn flows(xlb: &Xlb, pairs: &[(SocketAddr, SocketAddr)], proto: Proto) -> Vec<Value> {
    let config = xlb.config_path();
    let config = config.as_path();
    let chunk = pairs.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|(src, dst)| {
                            let out = std::process::Command::new(xlb_tests::xlb::binary())
                                .arg("flow")
                                .arg("-c")
                                .arg(config)
                                .args(["--src", &src.to_string(), "--dst", &dst.to_string()])
                                .args(["--proto", proto.name()])
                                .output()
                                .expect("running xlb flow");
                            assert!(
                                out.status.success(),
                                "xlb flow {src} -> {dst}: {}",
                                String::from_utf8_lossy(&out.stderr)
                            );
                            serde_json::from_slice::<Value>(&out.stdout).expect("xlb flow JSON")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("xlb flow thread"))
            .collect()
    })
}

fn addr_of(v: &Value, field: &str) -> Option<IpAddr> {
    v[field].as_str().map(|s| s.parse().expect("an address"))
}

/// One client flow: where it was predicted to go, where it went, and its
/// socket (None once the flow is given up).
struct Flow<S> {
    src: SocketAddr,
    dst: SocketAddr,
    /// The first prediction (all backends present).
    predicted: IpAddr,
    /// The backend name it answers with now.
    backend: String,
    sock: Option<S>,
}

/// Readable failure context: the counters that say why.
fn why(xlb: &Xlb) -> String {
    match xlb.stats() {
        Ok(s) => {
            let reasons: BTreeMap<String, u64> = s["reasons"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v["packets"].as_u64().unwrap_or(0)))
                        .filter(|(_, p)| *p > 0)
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "reasons {reasons:?}; vips {}; backends {}",
                s["vips"], s["backends"]
            )
        }
        Err(e) => format!("(no stats: {e:#})"),
    }
}

/// `why`, plus a pointer at the cause when the VIP itself matched nothing.
fn why_vip(xlb: &Xlb, dst: SocketAddr, proto: Proto) -> String {
    let name = vips()
        .into_iter()
        .find(|(_, a, p, pr)| *a == dst.ip() && *p == dst.port() && *pr == proto)
        .map(|(n, ..)| n)
        .unwrap_or("?");
    let matched = xlb
        .stats()
        .ok()
        .and_then(|s| s["vips"][name]["packets"].as_u64())
        .unwrap_or(0);
    let hint = if matched == 0 {
        format!(
            "; VIP `{name}` matched no packet at all: the XDP program does not know it \
             (is its key in the pinned VIPS map? `bpftool map dump pinned {}/VIPS`)",
            xlb.pin_dir.display()
        )
    } else {
        String::new()
    };
    format!("{}{hint}", why(xlb))
}

/// The source addresses of a wave: `n` ports from `base`.
fn sources(client: IpAddr, base: u16, n: u16) -> Vec<SocketAddr> {
    (0..n).map(|i| SocketAddr::new(client, base + i)).collect()
}

/// Predicts each flow (it must be new: source "maglev"), then connects
/// from the client namespace, asks each connection once, and checks that
/// every answer names the predicted backend.
fn open_tcp(bed: &L4Bed, xlb: &Xlb, srcs: &[SocketAddr], dst: SocketAddr) -> Vec<Flow<TcpStream>> {
    let pairs: Vec<_> = srcs.iter().map(|s| (*s, dst)).collect();
    let predictions = flows(xlb, &pairs, Proto::Tcp);
    let mut expected = Vec::new();
    for ((src, _), p) in pairs.iter().zip(&predictions) {
        assert_eq!(p["source"], "maglev", "{src} -> {dst} is not new: {p}");
        let predicted =
            addr_of(p, "predicted").unwrap_or_else(|| panic!("no backend predicted: {p}"));
        expected.push(predicted);
    }
    let srcs_owned = srcs.to_vec();
    let answers = bed
        .client
        .enter(move || {
            let mut out = Vec::new();
            for src in srcs_owned {
                let r = l4bed::tcp_connect_from(src, dst, TIMEOUT).and_then(|mut s| {
                    let name = l4bed::ask_tcp(&mut s)?;
                    Ok((s, name))
                });
                let failed = r.is_err();
                out.push(r);
                if failed {
                    break; // fail fast: the rest would time out the same way
                }
            }
            out
        })
        .unwrap();
    let mut out = Vec::new();
    for ((src, predicted), r) in srcs.iter().zip(expected).zip(answers) {
        let (sock, name) = r.unwrap_or_else(|e| {
            panic!(
                "TCP {src} -> {dst}: {e:#}; {}",
                why_vip(xlb, dst, Proto::Tcp)
            )
        });
        let want = bed.backend_name(predicted).unwrap();
        assert_eq!(
            name, want,
            "TCP {src} -> {dst} reached {name}, predicted {want} ({predicted})"
        );
        out.push(Flow {
            src: *src,
            dst,
            predicted,
            backend: name,
            sock: Some(sock),
        });
    }
    assert_eq!(out.len(), srcs.len());
    out
}

/// As `open_tcp`, for UDP "flows" (a connected socket per source port).
fn open_udp(bed: &L4Bed, xlb: &Xlb, srcs: &[SocketAddr], dst: SocketAddr) -> Vec<Flow<UdpSocket>> {
    let pairs: Vec<_> = srcs.iter().map(|s| (*s, dst)).collect();
    let predictions = flows(xlb, &pairs, Proto::Udp);
    let mut expected = Vec::new();
    for ((src, _), p) in pairs.iter().zip(&predictions) {
        assert_eq!(p["source"], "maglev", "{src} -> {dst} is not new: {p}");
        expected
            .push(addr_of(p, "predicted").unwrap_or_else(|| panic!("no backend predicted: {p}")));
    }
    let srcs_owned = srcs.to_vec();
    let socks = bed
        .client
        .enter(move || {
            srcs_owned
                .into_iter()
                .map(|src| l4bed::udp_from(src, dst, TIMEOUT))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    for ((src, predicted), sock) in srcs.iter().zip(expected).zip(socks) {
        let name = l4bed::ask_udp(&sock, UDP_ATTEMPTS).unwrap_or_else(|e| {
            panic!("UDP {src} -> {dst}: {e}; {}", why_vip(xlb, dst, Proto::Udp))
        });
        let want = bed.backend_name(predicted).unwrap();
        assert_eq!(
            name, want,
            "UDP {src} -> {dst} reached {name}, predicted {want} ({predicted})"
        );
        out.push(Flow {
            src: *src,
            dst,
            predicted,
            backend: name,
            sock: Some(sock),
        });
    }
    out
}

/// Flows per backend name.
fn spread<S>(flows: &[Flow<S>]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in flows {
        *m.entry(f.backend.clone()).or_insert(0) += 1;
    }
    m
}

fn assert_all_backends<S>(bed: &L4Bed, what: &str, flows: &[Flow<S>]) {
    let s = spread(flows);
    println!("{what}: {s:?}");
    for b in &bed.backends {
        assert!(
            s.get(&b.name).copied().unwrap_or(0) > 0,
            "{what}: {} got no flow: {s:?}",
            b.name
        );
    }
}

/// Every open TCP flow answers again, with the backend it had.
fn assert_tcp_unchanged(xlb: &Xlb, what: &str, flows: &mut [Flow<TcpStream>]) {
    for f in flows.iter_mut() {
        let Some(s) = f.sock.as_mut() else { continue };
        match l4bed::ask_tcp(s) {
            Ok(name) => assert_eq!(
                name, f.backend,
                "{what}: TCP {} -> {} moved from {} to {name}",
                f.src, f.dst, f.backend
            ),
            Err(e) => panic!(
                "{what}: TCP {} -> {} (on {}) broke: {e}; {}",
                f.src,
                f.dst,
                f.backend,
                why(xlb)
            ),
        }
    }
}

/// Every UDP flow answers again, from the backend it had.
fn assert_udp_unchanged(xlb: &Xlb, what: &str, flows: &[Flow<UdpSocket>]) {
    for f in flows {
        let s = f.sock.as_ref().unwrap();
        let name = l4bed::ask_udp(s, UDP_ATTEMPTS).unwrap_or_else(|e| {
            panic!(
                "{what}: UDP {} -> {} (on {}): {e}; {}",
                f.src,
                f.dst,
                f.backend,
                why(xlb)
            )
        });
        assert_eq!(
            name, f.backend,
            "{what}: UDP {} -> {} moved from {} to {name}",
            f.src, f.dst, f.backend
        );
    }
}

fn reason(stats: &Value, name: &str) -> u64 {
    stats["reasons"][name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reason {name} in {}", stats["reasons"]))
}

fn reload_ok(xlb: &Xlb, yaml: &str) {
    let answer = xlb.reload(yaml).unwrap();
    assert!(
        answer.starts_with("xlb reloaded"),
        "reload: {answer}\nstderr:\n{}",
        xlb.stderr()
    );
}

fn forwarding(mode: &str) {
    let bed = L4Bed::new().unwrap();
    let decaps = if mode == "ipip" {
        bed.start_decap().unwrap()
    } else {
        Vec::new()
    };
    let all = [(1, 1), (2, 1), (3, 1)];
    let mut xlb = Xlb::start(&bed.lb, &config(&bed, mode, &all, false)).unwrap();
    let before = xlb.stats().unwrap();
    let b1 = bed.backends[0].name.clone();
    let b3 = bed.backends[2].name.clone();
    let c4: IpAddr = CLIENT4.into();
    let c6: IpAddr = CLIENT6.into();
    let tcp4 = SocketAddr::new(VIP4.into(), TCP_PORT);
    let tcp6 = SocketAddr::new(VIP6.into(), TCP_PORT);
    let udp4 = SocketAddr::new(VIP4.into(), UDP_PORT);
    let udp6 = SocketAddr::new(VIP6.into(), UDP_PORT);

    // 1-2. First wave: every flow on its predicted backend, all used.
    let mut tcp = open_tcp(&bed, &xlb, &sources(c4, 20000, TCP_FLOWS), tcp4);
    assert_all_backends(&bed, &format!("{mode} tcp4 wave 1"), &tcp);
    let t6 = open_tcp(&bed, &xlb, &sources(c6, 21000, TCP_FLOWS), tcp6);
    assert_all_backends(&bed, &format!("{mode} tcp6 wave 1"), &t6);
    tcp.extend(t6);
    let mut udp = open_udp(&bed, &xlb, &sources(c4, 22000, UDP_FLOWS), udp4);
    assert_all_backends(&bed, &format!("{mode} udp4 wave 1"), &udp);
    let u6 = open_udp(&bed, &xlb, &sources(c6, 23000, UDP_FLOWS), udp6);
    assert_all_backends(&bed, &format!("{mode} udp6 wave 1"), &u6);
    udp.extend(u6);
    let mut opened_tcp = tcp.len();
    let mut opened_udp = udp.len();
    // Which flows the first wave holds, for the table-restored check.
    let wave1_tcp: Vec<(SocketAddr, SocketAddr, IpAddr)> =
        tcp.iter().map(|f| (f.src, f.dst, f.predicted)).collect();
    let wave1_udp: Vec<(SocketAddr, SocketAddr, IpAddr)> =
        udp.iter().map(|f| (f.src, f.dst, f.predicted)).collect();

    // 3. Backend 3 removed: flows on 1 and 2 stay; those on 3 are re-placed.
    reload_ok(&xlb, &config(&bed, mode, &[(1, 1), (2, 1)], false));
    let (on3, mut tcp): (Vec<_>, Vec<_>) = tcp.into_iter().partition(|f| f.backend == b3);
    assert_tcp_unchanged(&xlb, "backend3 removed", &mut tcp);
    let mut reset = 0;
    for mut f in on3 {
        // Re-placed on a backend that has no such connection: a reset, or
        // nothing within the timeout; either way bounded.
        if l4bed::ask_tcp(f.sock.as_mut().unwrap()).is_err() {
            reset += 1;
        }
    }
    println!("{mode}: flows of the removed backend3: {reset} TCP connections broke (expected: re-placed)");
    // UDP flows of backend 3 go where the new table says (their entry in
    // the connection table names a backend that is gone).
    let mut new_home: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for fam in [true, false] {
        let pairs: Vec<(SocketAddr, SocketAddr)> = udp
            .iter()
            .filter(|f| f.backend == b3 && f.src.is_ipv4() == fam)
            .map(|f| (f.src, f.dst))
            .collect();
        for ((src, _), p) in pairs.iter().zip(flows(&xlb, &pairs, Proto::Udp)) {
            let predicted = addr_of(&p, "predicted").expect("predicted");
            let name = bed.backend_name(predicted).unwrap();
            assert_ne!(name, b3, "{p}");
            new_home.insert(*src, name.to_string());
        }
    }
    for f in udp.iter_mut().filter(|f| f.backend == b3) {
        let name = l4bed::ask_udp(f.sock.as_ref().unwrap(), UDP_ATTEMPTS).unwrap_or_else(|e| {
            panic!(
                "UDP {} -> {} after backend3 left: {e}; {}",
                f.src,
                f.dst,
                why(&xlb)
            )
        });
        assert_eq!(
            name, new_home[&f.src],
            "UDP {} re-placed against the new table",
            f.src
        );
        f.backend = name;
    }
    assert_udp_unchanged(&xlb, "backend3 removed", &udp);

    // Backend 3 back: the table is what it was, established flows stay.
    reload_ok(&xlb, &config(&bed, mode, &all, false));
    for (proto, list) in [(Proto::Tcp, &wave1_tcp), (Proto::Udp, &wave1_udp)] {
        for fam in [true, false] {
            let part: Vec<_> = list.iter().filter(|(s, _, _)| s.is_ipv4() == fam).collect();
            let pairs: Vec<_> = part.iter().map(|(s, d, _)| (*s, *d)).collect();
            for ((src, dst, first), now) in part.iter().zip(flows(&xlb, &pairs, proto)) {
                assert_eq!(
                    addr_of(&now, "predicted"),
                    Some(*first),
                    "{proto:?} {src} -> {dst}: prediction changed after backend3 came back: {now}"
                );
            }
        }
    }
    // The connection table holds the open flows (xlb flow reads it).
    for fam in [true, false] {
        let part: Vec<&Flow<TcpStream>> = tcp.iter().filter(|f| f.src.is_ipv4() == fam).collect();
        let pairs: Vec<_> = part.iter().map(|f| (f.src, f.dst)).collect();
        for (f, now) in part.iter().zip(flows(&xlb, &pairs, Proto::Tcp)) {
            assert_eq!(now["source"], "conntrack", "{} -> {}: {now}", f.src, f.dst);
            let tracked = addr_of(&now, "conntrack").unwrap();
            assert_eq!(bed.backend_name(tracked), Some(f.backend.as_str()), "{now}");
        }
    }
    assert_tcp_unchanged(&xlb, "backend3 re-added", &mut tcp);
    assert_udp_unchanged(&xlb, "backend3 re-added", &udp);
    let t = open_tcp(&bed, &xlb, &sources(c4, 24000, TCP_FLOWS_LATER), tcp4);
    let t6 = open_tcp(&bed, &xlb, &sources(c6, 25000, TCP_FLOWS_LATER), tcp6);
    let mut wave2: Vec<_> = t.into_iter().chain(t6).collect();
    assert_all_backends(&bed, &format!("{mode} tcp wave 2 (backend3 back)"), &wave2);
    opened_tcp += wave2.len();
    tcp.append(&mut wave2);

    // 4. Drain backend 1: its connections stay, no new flow goes there.
    reload_ok(&xlb, &config(&bed, mode, &[(1, 0), (2, 1), (3, 1)], false));
    let on1 = tcp.iter().filter(|f| f.backend == b1).count();
    assert!(on1 > 0, "no open connection on {b1} to drain");
    assert_tcp_unchanged(&xlb, "backend1 drained", &mut tcp);
    assert_udp_unchanged(&xlb, "backend1 drained", &udp);
    let mut wave3 = open_tcp(&bed, &xlb, &sources(c4, 26000, TCP_FLOWS_LATER), tcp4);
    wave3.extend(open_tcp(
        &bed,
        &xlb,
        &sources(c6, 27000, TCP_FLOWS_LATER),
        tcp6,
    ));
    let mut wave3u = open_udp(&bed, &xlb, &sources(c4, 28000, UDP_FLOWS_LATER), udp4);
    wave3u.extend(open_udp(
        &bed,
        &xlb,
        &sources(c6, 29000, UDP_FLOWS_LATER),
        udp6,
    ));
    println!(
        "{mode} wave 3 (backend1 drained, {on1} of its connections still open): tcp {:?} udp {:?}",
        spread(&wave3),
        spread(&wave3u)
    );
    assert!(
        wave3.iter().all(|f| f.backend != b1) && wave3u.iter().all(|f| f.backend != b1),
        "a new flow landed on the drained {b1}"
    );
    opened_tcp += wave3.len();
    opened_udp += wave3u.len();
    tcp.append(&mut wave3);
    udp.append(&mut wave3u);
    assert_tcp_unchanged(&xlb, "after wave 3", &mut tcp);

    // 6. A broken config is refused and changes nothing.
    let answer = xlb.reload(&config(&bed, mode, &all, true)).unwrap();
    assert!(
        answer.starts_with("xlb reload failed"),
        "a backend of the wrong family was accepted: {answer}"
    );
    println!("{mode}: broken config: {answer}");
    assert_tcp_unchanged(&xlb, "after the refused config", &mut tcp);
    assert_udp_unchanged(&xlb, "after the refused config", &udp);

    // 5. Counters.
    let after = xlb.stats().unwrap();
    let open = tcp.iter().filter(|f| f.sock.is_some()).count();
    println!(
        "{mode}: {opened_tcp} TCP connections opened ({open} open now), {opened_udp} UDP flows"
    );
    println!("{mode}: {}", why(&xlb));
    let new_flows = reason(&after, "tx_new_flow") - reason(&before, "tx_new_flow");
    let hits = reason(&after, "tx_conntrack_hit") - reason(&before, "tx_conntrack_hit");
    assert!(
        new_flows >= (opened_tcp + opened_udp) as u64,
        "tx_new_flow grew by {new_flows}, fewer than the {} flows opened",
        opened_tcp + opened_udp
    );
    assert!(
        hits >= 2 * opened_tcp as u64,
        "tx_conntrack_hit grew by {hits}: every TCP connection sends at least its ACK and a line after the SYN"
    );
    for r in [
        "drop_no_backend",
        "drop_bad_backend",
        "drop_encap_failed",
        "tx_flood_guard",
    ] {
        assert_eq!(reason(&after, r), reason(&before, r), "{r}: {}", why(&xlb));
    }
    for (name, ..) in vips() {
        let p = after["vips"][name]["packets"].as_u64().unwrap_or(0);
        assert!(p > 0, "VIP {name} counted nothing: {}", after["vips"]);
    }
    for b in &bed.backends {
        for a in [IpAddr::from(b.v4), IpAddr::from(b.v6)] {
            let p = after["backends"][a.to_string()]["packets"]
                .as_u64()
                .unwrap_or(0);
            assert!(p > 0, "backend {a} counted nothing: {}", after["backends"]);
        }
    }

    // Stop xlb, then the decap programs (which report their counts).
    drop(tcp);
    drop(udp);
    let status = xlb.stop().unwrap();
    assert!(
        status.success(),
        "xlb exited with {status}; stderr:\n{}",
        xlb.stderr()
    );
    let mut decapsulated = Vec::new();
    for (b, d) in bed.backends.iter().zip(decaps) {
        let n = d.stop().unwrap();
        decapsulated.push((b.name.clone(), n));
    }
    if mode == "ipip" {
        println!("{mode}: decapsulated per backend: {decapsulated:?}");
        for (name, n) in &decapsulated {
            assert!(*n > 0, "{name}'s decap program decapsulated nothing");
        }
    }
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn l4_dsr_forwards_tcp_and_udp_v4_v6_through_backend_changes() {
    if !privileged("l4_dsr_forwards_tcp_and_udp_v4_v6_through_backend_changes") {
        return;
    }
    forwarding("dsr");
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn l4_ipip_forwards_tcp_and_udp_v4_v6_through_backend_changes() {
    if !privileged("l4_ipip_forwards_tcp_and_udp_v4_v6_through_backend_changes") {
        return;
    }
    forwarding("ipip");
}
