//! The XDP program counts every frame by protocol, exactly: a client
//! namespace sends a known set of real frames to a namespace where `xlb run`
//! has attached XDP in native mode, and `xlb stats` must report exactly
//! those packets and bytes. Then nothing the test created may remain.
use std::{
    net::UdpSocket,
    path::PathBuf,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use xlb_tests::{
    names,
    netns::{self, veth, Netns},
    privilege::privileged,
    process::pid_alive,
    rawsock::RawSender,
    xlb::Xlb,
};

const CLIENT4: [u8; 4] = [192, 0, 2, 1];
const LB4: [u8; 4] = [192, 0, 2, 2];
const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const LB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// What the test sent, per counter class: (packets, bytes).
#[derive(Default, Debug)]
struct Expected {
    tcp4: (u64, u64),
    udp4: (u64, u64),
    tcp6: (u64, u64),
    udp6: (u64, u64),
    malformed: (u64, u64),
    non_ip: (u64, u64),
}

fn add(c: &mut (u64, u64), frame_len: usize) {
    c.0 += 1;
    c.1 += frame_len as u64;
}

fn counter(stats: &serde_json::Value, class: &str) -> (u64, u64) {
    let stats = &stats["classes"];
    (
        stats[class]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no {class} in {stats}")),
        stats[class]["bytes"].as_u64().unwrap(),
    )
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn xdp_counts_real_frames_exactly_and_cleans_up() {
    if !privileged("xdp_counts_real_frames_exactly_and_cleans_up") {
        return;
    }
    // Unique link names, so the leak check below can look for them.
    let tag = names::unique("v");
    let suffix = &tag[tag.len().saturating_sub(6)..];
    let cli_dev = format!("xc{}", suffix.replace('-', ""));
    let lb_dev = format!("xl{}", suffix.replace('-', ""));

    let created: (Vec<String>, u32, PathBuf);
    {
        let client = Netns::new("cli").unwrap();
        let lb = Netns::new("lb").unwrap();
        veth(&client, &cli_dev, &lb, &lb_dev).unwrap();
        client.addr(&cli_dev, "192.0.2.1/24").unwrap();
        lb.addr(&lb_dev, "192.0.2.2/24").unwrap();
        client.addr(&cli_dev, "2001:db8::1/64").unwrap();
        lb.addr(&lb_dev, "2001:db8::2/64").unwrap();
        let cli_mac = client.mac(&cli_dev).unwrap();
        let lb_mac = lb.mac(&lb_dev).unwrap();
        // Permanent neighbours: no ARP or ND traffic mixes into the counts.
        let fmt_mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (ns, dev, ip, mac) in [
            (&client, &cli_dev, "192.0.2.2", lb_mac),
            (&client, &cli_dev, "2001:db8::2", lb_mac),
            (&lb, &lb_dev, "192.0.2.1", cli_mac),
            (&lb, &lb_dev, "2001:db8::1", cli_mac),
        ] {
            ns.ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &fmt_mac(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        }

        // At debug level, so the eBPF side's aya-log messages come through.
        let mut xlb = Xlb::start_logged(
            &lb,
            &format!("interfaces:\n  - name: {lb_dev}\n    xdp_mode: native\n"),
            "debug",
        )
        .unwrap();
        let before = xlb.stats().unwrap();
        for class in ["tcp4", "udp4", "tcp6", "udp6", "malformed"] {
            assert_eq!(
                counter(&before, class),
                (0, 0),
                "{class} before any traffic"
            );
        }

        let mut exp = Expected::default();
        let cli_ifindex = client.ifindex(&cli_dev).unwrap();
        client
            .enter(|| {
                // Real UDP through the client's kernel stack, several sizes.
                let s4 = UdpSocket::bind("192.0.2.1:0").unwrap();
                for i in 0..50usize {
                    let payload = vec![b'x'; 1 + i * 7];
                    s4.send_to(&payload, "192.0.2.2:9").unwrap();
                    add(&mut exp.udp4, 14 + 20 + 8 + payload.len());
                }
                let s6 = UdpSocket::bind("[2001:db8::1]:0").unwrap();
                for i in 0..40usize {
                    let payload = vec![b'y'; 3 + i * 11];
                    s6.send_to(&payload, "[2001:db8::2]:9").unwrap();
                    add(&mut exp.udp6, 14 + 40 + 8 + payload.len());
                }

                // TCP SYNs and edge cases, byte-exact, from a packet socket.
                let raw = RawSender::open(cli_ifindex).unwrap();
                let send = |frame: Vec<u8>, bucket: &mut (u64, u64)| {
                    raw.send(&frame).unwrap();
                    add(bucket, frame.len());
                };
                for i in 0..30u16 {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2(cli_mac, lb_mac)
                        .ipv4(CLIENT4, LB4, 64)
                        .tcp(40000 + i, 80, 1000 + u32::from(i), 64240)
                        .syn()
                        .write(&mut f, &[])
                        .unwrap();
                    send(f, &mut exp.tcp4);
                }
                for i in 0..20u16 {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2(cli_mac, lb_mac)
                        .ipv6(CLIENT6, LB6, 64)
                        .tcp(41000 + i, 443, 7, 64240)
                        .syn()
                        .write(&mut f, &[0u8; 12])
                        .unwrap();
                    send(f, &mut exp.tcp6);
                }
                // 802.1Q-tagged UDP: counted by what the tag carries.
                for _ in 0..5 {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2(cli_mac, lb_mac)
                        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
                        .ipv4(CLIENT4, LB4, 64)
                        .udp(5353, 53)
                        .write(&mut f, b"tagged")
                        .unwrap();
                    send(f, &mut exp.udp4);
                }
                // Truncated: IPv4 EtherType with 10 bytes of IP header; an
                // IPv6 EtherType whose version nibble says 4.
                let mut trunc = Vec::new();
                trunc.extend_from_slice(&lb_mac);
                trunc.extend_from_slice(&cli_mac);
                trunc.extend_from_slice(&[0x08, 0x00]);
                trunc.extend_from_slice(&[0x45; 10]);
                for _ in 0..3 {
                    send(trunc.clone(), &mut exp.malformed);
                }
                let mut badver = Vec::new();
                PacketBuilder::ethernet2(cli_mac, lb_mac)
                    .ipv6(CLIENT6, LB6, 64)
                    .udp(1, 2)
                    .write(&mut badver, b"v")
                    .unwrap();
                badver[14] = 0x40;
                send(badver, &mut exp.malformed);
                // Non-IP (IEEE local experimental EtherType).
                let mut other = Vec::new();
                other.extend_from_slice(&lb_mac);
                other.extend_from_slice(&cli_mac);
                other.extend_from_slice(&[0x88, 0xb5]);
                other.extend_from_slice(&[0u8; 46]);
                for _ in 0..4 {
                    send(other.clone(), &mut exp.non_ip);
                }
            })
            .unwrap();

        // XDP on veth runs in the receiver's NAPI poll, a moment after the
        // send returns: wait (bounded) for the last frame to be counted.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stats = xlb.stats().unwrap();
        while counter(&stats, "tcp4").0
            + counter(&stats, "udp4").0
            + counter(&stats, "tcp6").0
            + counter(&stats, "udp6").0
            + counter(&stats, "malformed").0
            < exp.tcp4.0 + exp.udp4.0 + exp.tcp6.0 + exp.udp6.0 + exp.malformed.0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
            stats = xlb.stats().unwrap();
        }
        // Settle, then read once more: the counts must not overshoot either.
        std::thread::sleep(Duration::from_millis(200));
        let stats = xlb.stats().unwrap();
        assert_eq!(counter(&stats, "tcp4"), exp.tcp4, "tcp4; stats {stats}");
        assert_eq!(counter(&stats, "udp4"), exp.udp4, "udp4; stats {stats}");
        assert_eq!(counter(&stats, "tcp6"), exp.tcp6, "tcp6; stats {stats}");
        assert_eq!(counter(&stats, "udp6"), exp.udp6, "udp6; stats {stats}");
        assert_eq!(
            counter(&stats, "malformed"),
            exp.malformed,
            "malformed; stats {stats}"
        );
        // ICMPv6 router/multicast-listener chatter may add non-IP-free noise
        // elsewhere, but nothing but our frames is non-IP here.
        assert_eq!(
            counter(&stats, "non_ip"),
            exp.non_ip,
            "non_ip; stats {stats}"
        );

        // aya-log works end to end: the datapath's message about each
        // malformed frame reaches the daemon's log (read asynchronously, so
        // wait for it, bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        let logged = |x: &Xlb| x.stderr().matches("malformed frame of").count() as u64;
        while logged(&xlb) < exp.malformed.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            logged(&xlb),
            exp.malformed.0,
            "one eBPF log line per malformed frame; stderr:\n{}",
            xlb.stderr()
        );

        let pid = xlb.pid();
        let pin_dir = xlb.pin_dir.clone();
        assert!(
            pin_dir.join("COUNTERS").exists(),
            "map pinned while running"
        );
        let status = xlb.stop().unwrap();
        assert!(
            status.success(),
            "xlb exited with {status}; stderr:\n{}",
            xlb.stderr()
        );
        assert!(!pin_dir.exists(), "pins removed on clean shutdown");
        // XDP is detached: the link reports no program.
        let link = lb.ip(&["-j", "link", "show", "dev", &lb_dev]).unwrap();
        assert!(
            !link.contains("\"xdp\""),
            "XDP still attached after shutdown: {link}"
        );
        created = (
            vec![client.name().to_string(), lb.name().to_string()],
            pid,
            pin_dir,
        );
    }

    // Nothing the test created is left.
    let (namespaces, pid, pin_dir) = created;
    let existing = netns::list().unwrap();
    for ns in &namespaces {
        assert!(!existing.contains(ns), "namespace {ns} left behind");
    }
    assert!(!pid_alive(pid), "xlb process {pid} left behind");
    assert!(
        !pin_dir.exists(),
        "pinned objects left in {}",
        pin_dir.display()
    );
    for dev in [&cli_dev, &lb_dev] {
        let st = std::process::Command::new("ip")
            .args(["link", "show", "dev", dev])
            .output()
            .unwrap();
        assert!(!st.status.success(), "link {dev} left behind");
    }
}
