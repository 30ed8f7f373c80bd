//! The L4 paths beyond plain forwarding, end to end over real namespaces
//! (`xlb_tests::l4bed`), each with a control run that shows it can fail:
//!
//! - ping (the `ping` binary) to the VIPs is answered by XDP on the LB,
//!   which does not own the VIPs; with `ping: false` nothing answers;
//! - an IPv4 VIP with IPv6 backends: IPv4 in IPv6 to backends running
//!   `xlb decap`, which answer the client directly;
//! - one UDP flow whose datagrams are sometimes fragmented (the client's
//!   kernel splits 3000-byte datagrams at the 1500-byte MTU): every answer
//!   of a flow comes from one backend, the one `xlb flow` predicts;
//! - backends behind a second LB NIC (`backend_interface: eth1`): frames
//!   leave by `XDP_REDIRECT` through it, in both modes; with eth1 down
//!   nothing arrives.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    process::Output,
    time::Duration,
};

use serde_json::Value;
use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, UDP_PORT, VIP4, VIP6},
    privilege::privileged,
    xlb::Xlb,
};

/// Every datagram wait is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per UDP question.
const ATTEMPTS: u32 = 3;

fn reason(stats: &Value, name: &str) -> u64 {
    stats["reasons"][name]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reason {name} in {}", stats["reasons"]))
}

/// An L4 config: one UDP 53 VIP per address in `addrs`, in `mode`, with
/// every backend of the bed (its address of the family `backends_v6`
/// says), plus `extra` under `l4:` and `vip_extra` under each VIP.
fn config(
    bed: &L4Bed,
    addrs: &[IpAddr],
    mode: &str,
    backends_v6: Option<bool>,
    extra: &str,
    vip_extra: &str,
) -> String {
    let mut y = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\nl4:\n  conntrack_size: 65536\n  max_vips: 8\n  max_backends: 64\n{extra}  vips:\n"
    );
    for (i, addr) in addrs.iter().enumerate() {
        y += &format!(
            "    - name: v{i}\n      address: \"{addr}\"\n      port: {UDP_PORT}\n      protocol: udp\n      mode: {mode}\n{vip_extra}      backends:\n"
        );
        for b in &bed.backends {
            let v6 = backends_v6.unwrap_or(addr.is_ipv6());
            let a: IpAddr = if v6 { b.v6.into() } else { b.v4.into() };
            y += &format!("        - address: \"{a}\"\n");
        }
    }
    y
}

/// `ping -c N` from the client to `dst`.
fn ping(bed: &L4Bed, dst: IpAddr, n: u32) -> Output {
    bed.client
        .command("ping")
        .args(["-n", "-c", &n.to_string(), "-i", "0.2", "-W", "1"])
        .arg(dst.to_string())
        .output()
        .expect("running ping")
}

/// How many echo replies `ping` reports.
fn received(out: &Output) -> u32 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary in ping's output: {text}"))
}

#[test]
fn l4_ping_to_vips_is_answered_from_xdp() {
    if !privileged("l4_ping_to_vips_is_answered_from_xdp") {
        return;
    }
    let bed = L4Bed::new().unwrap();
    let vips = [IpAddr::from(VIP4), IpAddr::from(VIP6)];

    // Control: ping: false. The LB does not own the VIPs, so nothing
    // answers (the backends hold them on lo, but the client routes the VIPs
    // to the LB).
    let mut xlb = Xlb::start(
        &bed.lb,
        &config(&bed, &vips, "dsr", None, "", "      ping: false\n"),
    )
    .unwrap();
    for vip in vips {
        let out = ping(&bed, vip, 3);
        assert_eq!(received(&out), 0, "ping {vip} with ping: false: {out:?}");
    }
    assert_eq!(reason(&xlb.stats().unwrap(), "tx_echo_reply"), 0);
    // The instance lock is held while it runs and removed on a clean exit.
    let lock = std::path::Path::new("/run/xlb").join(format!("{}.lock", xlb.instance()));
    assert!(lock.exists(), "{} while xlb runs", lock.display());
    assert!(xlb.stop().unwrap().success());
    assert!(!lock.exists(), "{} left after a clean exit", lock.display());

    // ping: true (the default): XDP answers.
    let xlb = Xlb::start(&bed.lb, &config(&bed, &vips, "dsr", None, "", "")).unwrap();
    for vip in vips {
        let out = ping(&bed, vip, 5);
        println!("{}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(received(&out), 5, "ping {vip}: {out:?}");
    }
    let stats = xlb.stats().unwrap();
    assert_eq!(reason(&stats, "tx_echo_reply"), 10, "{}", stats["reasons"]);
    // A non-VIP address of the LB is answered by its own kernel, untouched.
    let out = ping(&bed, l4bed::LB4.into(), 2);
    assert_eq!(received(&out), 2, "{out:?}");
    assert_eq!(reason(&xlb.stats().unwrap(), "tx_echo_reply"), 10);
}

#[test]
fn l4_ipv4_vip_with_ipv6_backends_reaches_decap_backends() {
    if !privileged("l4_ipv4_vip_with_ipv6_backends_reaches_decap_backends") {
        return;
    }
    let bed = L4Bed::new().unwrap();
    let decaps = bed.start_decap().unwrap();
    let vip = IpAddr::from(VIP4);
    let xlb = Xlb::start(&bed.lb, &config(&bed, &[vip], "ipip", Some(true), "", "")).unwrap();
    let dst = SocketAddr::new(vip, UDP_PORT);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for port in 24000..24030u16 {
        let src = SocketAddr::new(CLIENT4.into(), port);
        let answer = bed
            .client
            .enter(move || {
                let s = l4bed::udp_from(src, dst, TIMEOUT)?;
                Ok::<_, anyhow::Error>(l4bed::ask_udp(&s, ATTEMPTS)?)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{src} -> {dst}: {e:#}\nxlb stderr:\n{}", xlb.stderr()));
        let predicted = xlb.flow(&src.to_string(), &dst.to_string(), "udp").unwrap();
        let want: IpAddr = predicted["backend"]
            .as_str()
            .expect("xlb flow names a backend")
            .parse()
            .unwrap();
        assert!(
            want.is_ipv6(),
            "the backend is reached over IPv6: {predicted}"
        );
        assert_eq!(
            Some(answer.as_str()),
            bed.backend_name(want),
            "{src}: answered by {answer}, xlb flow said {want}"
        );
        *seen.entry(answer).or_default() += 1;
    }
    println!("IPv4 in IPv6: flows per backend {seen:?}");
    assert!(seen.len() >= 2, "30 flows all on one backend: {seen:?}");
    let stats = xlb.stats().unwrap();
    assert!(reason(&stats, "tx_new_flow") >= 30, "{}", stats["reasons"]);
    let decapsulated: u64 = decaps.into_iter().map(|d| d.stop().unwrap()).sum();
    assert!(
        decapsulated >= 30,
        "the decap programs removed {decapsulated} headers"
    );
}

/// Sends one datagram of `size` bytes on `s` and returns the answer.
fn ask_sized(s: &std::net::UdpSocket, size: usize) -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    let data = vec![0x5a; size];
    let mut last = std::io::Error::from(std::io::ErrorKind::TimedOut);
    for _ in 0..ATTEMPTS {
        s.send(&data)?;
        match s.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[test]
fn l4_fragmented_udp_flow_stays_on_one_backend() {
    if !privileged("l4_fragmented_udp_flow_stays_on_one_backend") {
        return;
    }
    let bed = L4Bed::new().unwrap();
    let vip = IpAddr::from(VIP4);
    let xlb = Xlb::start(&bed.lb, &config(&bed, &[vip], "dsr", None, "", "")).unwrap();
    let dst = SocketAddr::new(vip, UDP_PORT);
    let mut per_flow: Vec<(u16, BTreeSet<String>)> = Vec::new();
    let mut used = BTreeSet::new();
    for port in 25000..25024u16 {
        let src = SocketAddr::new(CLIENT4.into(), port);
        // Small, fragmented (3000 bytes over a 1500-byte MTU), small, big.
        let answers = bed
            .client
            .enter(move || {
                let s = l4bed::udp_from(src, dst, TIMEOUT)?;
                let mut out = Vec::new();
                for size in [16, 3000, 16, 4000] {
                    out.push(ask_sized(&s, size)?);
                }
                Ok::<_, anyhow::Error>(out)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{src}: {e:#}\nxlb stderr:\n{}", xlb.stderr()));
        let predicted: IpAddr = xlb.flow(&src.to_string(), &dst.to_string(), "udp").unwrap()
            ["backend"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let want = bed.backend_name(predicted).unwrap().to_string();
        let got: BTreeSet<String> = answers.into_iter().collect();
        used.extend(got.iter().cloned());
        assert_eq!(
            got,
            BTreeSet::from([want.clone()]),
            "flow {src}: small and fragmented datagrams answered by {got:?}, predicted {want}"
        );
        per_flow.push((port, got));
    }
    println!("fragmented flows: backends used {used:?}");
    // Placement by the 3-tuple (all of one client's fragments on one
    // backend) would fail the check above for the flows the 5-tuple puts
    // elsewhere: the flows must really be spread.
    assert!(used.len() >= 2, "24 flows on one backend: {per_flow:?}");
    let stats = xlb.stats().unwrap();
    let first = reason(&stats, "tx_fragment_first");
    let followed = reason(&stats, "tx_fragment_followed");
    println!(
        "tx_fragment_first {first}, tx_fragment_followed {followed}, tx_fragment {}",
        reason(&stats, "tx_fragment")
    );
    assert!(
        first >= 48,
        "two fragmented datagrams per flow: {}",
        stats["reasons"]
    );
    assert!(followed >= 48, "{}", stats["reasons"]);
}

/// Whether `mac` is learnt on bridge port `port` in the switch.
fn learnt_on(bed: &L4Bed, mac: [u8; 6], port: &str) -> bool {
    let text = bed
        .switch
        .command("bridge")
        .args(["fdb", "show", "br", "br0"])
        .output()
        .expect("bridge fdb show");
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    String::from_utf8_lossy(&text.stdout)
        .lines()
        .any(|l| l.starts_with(&mac) && l.contains(&format!("dev {port} ")))
}

fn second_nic(mode: &str) {
    let mut bed = L4Bed::new().unwrap();
    bed.add_lb_nic("eth1", "p-lb2").unwrap();
    let eth1_mac = bed.lb.mac("eth1").unwrap();
    let decaps = if mode == "ipip" {
        bed.start_decap().unwrap()
    } else {
        Vec::new()
    };
    let vip = IpAddr::from(VIP4);
    let xlb = Xlb::start(
        &bed.lb,
        &config(&bed, &[vip], mode, None, "  backend_interface: eth1\n", ""),
    )
    .unwrap();
    let dst = SocketAddr::new(vip, UDP_PORT);
    let ask_n = |port: u16, attempts: u32| {
        let src = SocketAddr::new(CLIENT4.into(), port);
        bed.client
            .enter(move || {
                let s = l4bed::udp_from(src, dst, TIMEOUT)?;
                Ok::<_, anyhow::Error>(l4bed::ask_udp(&s, attempts)?)
            })
            .unwrap()
    };
    let ask = |port: u16| ask_n(port, ATTEMPTS);
    let mut seen = BTreeMap::<String, usize>::new();
    for port in 26000..26020u16 {
        let answer = ask(port).unwrap_or_else(|e| {
            panic!(
                "{mode} {port}: {e:#}\nxlb stderr:\n{}\nreasons {}\neth1 {}",
                xlb.stderr(),
                xlb.stats()
                    .map(|s| s["reasons"].to_string())
                    .unwrap_or_default(),
                bed.lb
                    .ip(&["-s", "link", "show", "eth1"])
                    .unwrap_or_default()
            )
        });
        *seen.entry(answer).or_default() += 1;
    }
    println!("{mode} via eth1: flows per backend {seen:?}");
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        learnt_on(&bed, eth1_mac, "p-lb2"),
        "the bridge never saw a frame from eth1's MAC on its port"
    );

    // Control: eth1 down. The redirect has nowhere to go; nothing arrives.
    bed.lb.ip(&["link", "set", "eth1", "down"]).unwrap();
    for port in 26100..26103u16 {
        assert!(ask_n(port, 1).is_err(), "{mode}: answered with eth1 down");
    }
    bed.lb.ip(&["link", "set", "eth1", "up"]).unwrap();
    for d in decaps {
        d.stop().unwrap();
    }
}

#[test]
fn l4_dsr_backends_behind_a_second_nic() {
    if !privileged("l4_dsr_backends_behind_a_second_nic") {
        return;
    }
    second_nic("dsr");
}

#[test]
fn l4_ipip_backends_behind_a_second_nic() {
    if !privileged("l4_ipip_backends_behind_a_second_nic") {
        return;
    }
    second_nic("ipip");
}
