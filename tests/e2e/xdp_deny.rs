//! The XDP deny list, end to end: `xlb run` attaches XDP to the link of a
//! namespace holding a TCP listener; a client namespace holds two clients'
//! addresses (A and B, IPv4 and IPv6) on one link. After
//! `DenyList::deny` of A's addresses (through the instance's pinned maps,
//! as the daemon and `xlb` subcommands reach them), A's connects fail: its
//! SYNs are dropped at the NIC and `drop_denied` (read with `xlb stats`)
//! rises by exactly the number of segments A's kernel sent, while B keeps
//! connecting. `allow` and `expire` (a short TTL) let A in again. Then
//! nothing the test created may remain.
//!
//! A second test runs the `DenyList` API on the maps of a loaded (not
//! attached) object: normalization, a repeated deny, overlapping prefixes,
//! `allow`, `expire` and `list`.
use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use xlb::datapath::deny::{monotonic_now_ns, DenyList, DenyOutcome, Prefix};
use xlb_tests::{
    names,
    netns::{self, veth, Netns},
    privilege::privileged,
    process::pid_alive,
    rawsock::RawSender,
    xlb::Xlb,
};

const LB4: &str = "192.0.2.2";
const A4: &str = "192.0.2.1";
const B4: &str = "192.0.2.3";
const LB6: &str = "2001:db8::2";
const A6: &str = "2001:db8:0:1::1";
const B6: &str = "2001:db8:0:2::1";
const PORT: u16 = 8080;
/// How long a connect may take before it counts as failed: well below the
/// initial SYN retransmission timeout (1 s), so each failed connect sends
/// exactly one SYN (the count is measured anyway, not assumed).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(400);
/// The rule id the test denies with.
const RULE: u32 = 42;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Connects from `src` (port chosen by the kernel) to `dst`; Ok(true) when
/// the handshake completed within [`CONNECT_TIMEOUT`], Ok(false) when it
/// timed out. Call inside the client namespace.
fn try_connect(src: IpAddr, dst: SocketAddr) -> anyhow::Result<bool> {
    use nix::sys::socket::{
        bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let family = if src.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )?;
    // A blocking connect gives up after SO_SNDTIMEO (EINPROGRESS).
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: CONNECT_TIMEOUT.as_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(rc == 0, "SO_SNDTIMEO: {}", std::io::Error::last_os_error());
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {
            // SAFETY: the descriptor is ours; the stream takes it over.
            let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
            anyhow::ensure!(s.peer_addr()? == dst, "connected elsewhere");
            Ok(true)
        }
        Err(nix::errno::Errno::EINPROGRESS)
        | Err(nix::errno::Errno::EAGAIN)
        | Err(nix::errno::Errno::ETIMEDOUT) => Ok(false),
        Err(e) => Err(anyhow::anyhow!("connect {src} → {dst}: {e}")),
    }
}

/// The client namespace's TCP `OutSegs` (every segment its kernel sent,
/// retransmissions included). Call inside the namespace.
fn tcp_out_segs() -> u64 {
    // /proc/thread-self: /proc/self/net is the main thread's namespace.
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (head, vals) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = head
        .split_whitespace()
        .position(|f| f == "OutSegs")
        .expect("OutSegs in /proc/net/snmp");
    vals.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn denied(stats: &serde_json::Value) -> (u64, u64) {
    let r = &stats["reasons"]["drop_denied"];
    (
        r["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no drop_denied in {stats}")),
        r["bytes"].as_u64().unwrap(),
    )
}

/// Reads `drop_denied` until it reaches `want` packets (bounded), then once
/// more after a pause, so an overshoot shows too.
fn settled_denied(xlb: &Xlb, want: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while denied(&xlb.stats().unwrap()).0 < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    denied(&xlb.stats().unwrap())
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn xdp_deny_list_drops_denied_sources_at_the_nic() {
    if !privileged("xdp_deny_list_drops_denied_sources_at_the_nic") {
        return;
    }
    let tag = names::unique("v");
    let suffix = tag[tag.len().saturating_sub(6)..].replace('-', "");
    let cli_dev = format!("dc{suffix}");
    let lb_dev = format!("dl{suffix}");

    let created: (Vec<String>, u32, PathBuf);
    {
        // Dropped in reverse order on any panic: the daemon (and its pins),
        // then the namespaces with their links and listeners.
        let client = Netns::new("dcli").unwrap();
        let lb = Netns::new("dlb").unwrap();
        veth(&client, &cli_dev, &lb, &lb_dev).unwrap();
        lb.addr(&lb_dev, &format!("{LB4}/24")).unwrap();
        lb.addr(&lb_dev, &format!("{LB6}/48")).unwrap();
        for a in [A4, B4] {
            client.addr(&cli_dev, &format!("{a}/24")).unwrap();
        }
        for a in [A6, B6] {
            client.addr(&cli_dev, &format!("{a}/48")).unwrap();
        }
        let cli_mac = client.mac(&cli_dev).unwrap();
        let lb_mac = lb.mac(&lb_dev).unwrap();
        // Permanent neighbours: no ARP/ND, so nothing but the test's own
        // segments comes from A's addresses (a denied A could not answer
        // the load balancer's neighbour solicitations anyway).
        let fmt_mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut neigh = vec![
            (&client, LB4, lb_mac, &cli_dev),
            (&client, LB6, lb_mac, &cli_dev),
        ];
        for a in [A4, B4, A6, B6] {
            neigh.push((&lb, a, cli_mac, &lb_dev));
        }
        for (ns, addr, mac, dev) in neigh {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &fmt_mac(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        }

        // The listeners live in the load balancer's namespace; connects
        // complete in the kernel's backlog, nobody needs to accept.
        let listeners: Vec<TcpListener> = lb
            .enter(|| {
                vec![
                    TcpListener::bind((ip(LB4), PORT)).unwrap(),
                    TcpListener::bind((ip(LB6), PORT)).unwrap(),
                ]
            })
            .unwrap();

        let mut xlb = Xlb::start(
            &lb,
            &format!("interfaces:\n  - name: {lb_dev}\n    xdp_mode: native\n"),
        )
        .unwrap();
        for m in ["DENY_V4", "DENY_V6", "DENY_STATE"] {
            assert!(xlb.pin_dir.join(m).exists(), "{m} pinned");
        }
        let mut deny = DenyList::open(&xlb.pin_dir).unwrap();
        assert_eq!(
            denied(&xlb.stats().unwrap()),
            (0, 0),
            "drop_denied at start"
        );

        let lb4 = SocketAddr::new(ip(LB4), PORT);
        let lb6 = SocketAddr::new(ip(LB6), PORT);
        let connects = |src: &str, dst: SocketAddr, n: usize| -> usize {
            let src = ip(src);
            client
                .enter(|| (0..n).filter(|_| try_connect(src, dst).unwrap()).count())
                .unwrap()
        };

        // 1. Nobody denied: everyone connects.
        assert_eq!(connects(A4, lb4, 3), 3, "A v4 before any deny");
        assert_eq!(connects(A6, lb6, 3), 3, "A v6 before any deny");
        assert_eq!(connects(B4, lb4, 3), 3, "B v4 before any deny");
        assert_eq!(connects(B6, lb6, 3), 3, "B v6 before any deny");
        assert_eq!(denied(&xlb.stats().unwrap()), (0, 0));
        // Let the closed connections' FIN exchanges finish.
        std::thread::sleep(Duration::from_millis(300));

        // 2. Deny A: its /32 and its /64 (B's address is in another /64).
        let a4 = Prefix::host(ip(A4));
        let a6: Prefix = format!("{A6}/64").parse().unwrap();
        assert_eq!(
            deny.deny(a4, Duration::from_secs(120), RULE).unwrap(),
            DenyOutcome::Added
        );
        assert_eq!(
            deny.deny(a6, Duration::from_secs(120), RULE).unwrap(),
            DenyOutcome::Added
        );
        let listed: Vec<String> = deny
            .list()
            .unwrap()
            .iter()
            .map(|e| format!("{} rule {}", e.prefix, e.reason))
            .collect();
        assert_eq!(
            listed,
            ["192.0.2.1/32 rule 42", "2001:db8:0:1::/64 rule 42"],
            "list()"
        );
        let out_before = client.enter(tcp_out_segs).unwrap();
        assert_eq!(connects(A4, lb4, 4), 0, "A v4 connects while denied");
        assert_eq!(connects(A6, lb6, 4), 0, "A v6 connects while denied");
        let sent = client.enter(tcp_out_segs).unwrap() - out_before;
        assert!(sent >= 8, "A's kernel sent {sent} segments for 8 connects");
        let (syns_dropped, _) = settled_denied(&xlb, sent);
        assert_eq!(
            syns_dropped, sent,
            "drop_denied must rise by exactly the segments A sent"
        );
        eprintln!("8 denied connects: A sent {sent} SYNs, drop_denied +{syns_dropped}");

        // B is untouched, and is not counted.
        assert_eq!(connects(B4, lb4, 5), 5, "B v4 while A is denied");
        assert_eq!(connects(B6, lb6, 5), 5, "B v6 while A is denied");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            denied(&xlb.stats().unwrap()).0,
            syns_dropped,
            "B not dropped"
        );

        // Byte-exact: 25 hand-made SYNs from A (IPv4) and 15 from A (IPv6).
        let before = denied(&xlb.stats().unwrap());
        let cli_ifindex = client.ifindex(&cli_dev).unwrap();
        let (n, bytes) = client
            .enter(|| {
                let raw = RawSender::open(cli_ifindex).unwrap();
                let (mut n, mut bytes) = (0u64, 0u64);
                let a4: std::net::Ipv4Addr = A4.parse().unwrap();
                let lb4: std::net::Ipv4Addr = LB4.parse().unwrap();
                let a6: std::net::Ipv6Addr = A6.parse().unwrap();
                let lb6: std::net::Ipv6Addr = LB6.parse().unwrap();
                for i in 0..25u16 {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2(cli_mac, lb_mac)
                        .ipv4(a4.octets(), lb4.octets(), 64)
                        .tcp(50000 + i, PORT, 1, 64240)
                        .syn()
                        .write(&mut f, &[])
                        .unwrap();
                    raw.send(&f).unwrap();
                    n += 1;
                    bytes += f.len() as u64;
                }
                for i in 0..15u16 {
                    let mut f = Vec::new();
                    PacketBuilder::ethernet2(cli_mac, lb_mac)
                        .ipv6(a6.octets(), lb6.octets(), 64)
                        .tcp(51000 + i, PORT, 1, 64240)
                        .syn()
                        .write(&mut f, &[0u8; 8])
                        .unwrap();
                    raw.send(&f).unwrap();
                    n += 1;
                    bytes += f.len() as u64;
                }
                (n, bytes)
            })
            .unwrap();
        let after = settled_denied(&xlb, before.0 + n);
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (n, bytes),
            "drop_denied packets/bytes for {n} raw SYNs"
        );
        eprintln!(
            "{n} raw SYNs from A: drop_denied +{} packets, +{} bytes",
            after.0 - before.0,
            after.1 - before.1
        );

        // 3. Denying again with a shorter TTL keeps the later expiry.
        let until = |p: Prefix, d: &DenyList| {
            d.list()
                .unwrap()
                .into_iter()
                .find(|e| e.prefix == p)
                .map(|e| e.expires_ns)
        };
        let long = until(a4, &deny).unwrap();
        assert_eq!(
            deny.deny(a4, Duration::from_secs(1), 7).unwrap(),
            DenyOutcome::Kept
        );
        assert_eq!(until(a4, &deny), Some(long), "expiry not shortened");

        // 4. allow lifts A's IPv4 deny at once; IPv6 stays denied.
        assert!(deny.allow(a4).unwrap());
        assert!(!deny.allow(a4).unwrap(), "nothing left to allow");
        assert_eq!(connects(A4, lb4, 3), 3, "A v4 after allow");
        assert_eq!(connects(A6, lb6, 2), 0, "A v6 still denied");

        // 5. A short TTL: denied, then released by expire, then connects.
        let ttl = Duration::from_millis(1500);
        assert_eq!(deny.deny(a4, ttl, RULE).unwrap(), DenyOutcome::Added);
        let t0 = Instant::now();
        assert_eq!(connects(A4, lb4, 2), 0, "A v4 within the short TTL");
        assert!(
            t0.elapsed() < ttl,
            "the denied connects outlasted the TTL ({:?}): the check above proves nothing",
            t0.elapsed()
        );
        assert!(
            deny.expire(monotonic_now_ns()).unwrap().is_empty(),
            "nothing expired yet"
        );
        std::thread::sleep(ttl.saturating_sub(t0.elapsed()) + Duration::from_millis(100));
        let released = deny.expire(monotonic_now_ns()).unwrap();
        assert_eq!(
            released.iter().map(|e| e.prefix).collect::<Vec<_>>(),
            vec![a4],
            "expire releases exactly the short deny"
        );
        assert_eq!(released[0].reason, RULE);
        assert_eq!(
            deny.list()
                .unwrap()
                .iter()
                .map(|e| e.prefix)
                .collect::<Vec<_>>(),
            vec![a6],
            "only the long IPv6 deny is left"
        );
        assert_eq!(connects(A4, lb4, 3), 3, "A v4 after expire");
        assert!(deny.allow(a6).unwrap());
        assert_eq!(connects(A6, lb6, 3), 3, "A v6 after allow");
        assert!(deny.list().unwrap().is_empty());

        // `xlb stats` (the table) names the reason too.
        let table = std::process::Command::new(xlb_tests::xlb::binary())
            .args(["stats", "--instance", xlb.instance()])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(table.contains("drop_denied"), "xlb stats table:\n{table}");

        drop(deny);
        drop(listeners);
        let pid = xlb.pid();
        let pin_dir = xlb.pin_dir.clone();
        let status = xlb.stop().unwrap();
        assert!(
            status.success(),
            "xlb exited with {status}; stderr:\n{}",
            xlb.stderr()
        );
        created = (
            vec![client.name().to_string(), lb.name().to_string()],
            pid,
            pin_dir,
        );
    }

    let (namespaces, pid, pin_dir) = created;
    let existing = netns::list().unwrap();
    for ns in &namespaces {
        assert!(!existing.contains(ns), "namespace {ns} left behind");
    }
    assert!(!pid_alive(pid), "xlb process {pid} left behind");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    for dev in [&cli_dev, &lb_dev] {
        let st = std::process::Command::new("ip")
            .args(["link", "show", "dev", dev])
            .output()
            .unwrap();
        assert!(!st.status.success(), "link {dev} left behind");
    }
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn deny_list_api_on_loaded_maps() {
    if !privileged("deny_list_api_on_loaded_maps") {
        return;
    }
    // Loading creates the maps; nothing is attached. They are freed when
    // the object (and the list holding them) drop, also on a panic.
    let mut ebpf = aya::EbpfLoader::new()
        .load(xlb::datapath::EBPF_OBJECT)
        .expect("loading xlb's eBPF object");
    let mut d = DenyList::from_ebpf(&mut ebpf).unwrap();
    let p = |s: &str| -> Prefix { s.parse().unwrap() };
    let now = monotonic_now_ns();
    let sec = 1_000_000_000u64;

    // Host bits are zeroed; a mapped address is IPv4.
    assert_eq!(
        d.deny_until(p("10.1.2.3/24"), now + 100 * sec, 1).unwrap(),
        DenyOutcome::Added
    );
    assert_eq!(
        d.deny_until(p("10.1.2.0/24"), now + 50 * sec, 2).unwrap(),
        DenyOutcome::Kept,
        "the same prefix, an earlier expiry: kept"
    );
    assert_eq!(
        d.deny_until(p("::ffff:10.1.2.200/120"), now + 200 * sec, 3)
            .unwrap(),
        DenyOutcome::Extended,
        "the same prefix written as mapped IPv6, a later expiry: extended"
    );
    // A /32 inside the /24 is its own entry, not the /24 (the trie lookup
    // would return the covering /24).
    assert_eq!(
        d.deny_until(p("10.1.2.9"), now + 10 * sec, 4).unwrap(),
        DenyOutcome::Added
    );
    assert_eq!(
        d.deny_until(p("2001:db8:1:2:3::/64"), now + 5 * sec, 5)
            .unwrap(),
        DenyOutcome::Added
    );
    let list = |d: &DenyList| -> Vec<(String, u32, u64)> {
        d.list()
            .unwrap()
            .into_iter()
            .map(|e| (e.prefix.to_string(), e.reason, (e.expires_ns - now) / sec))
            .collect()
    };
    assert_eq!(
        list(&d),
        vec![
            ("10.1.2.0/24".into(), 3, 200),
            ("10.1.2.9/32".into(), 4, 10),
            ("2001:db8:1:2::/64".into(), 5, 5),
        ]
    );

    // expire removes what is due, and only that.
    let gone: Vec<String> = d
        .expire(now + 10 * sec)
        .unwrap()
        .iter()
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(gone, ["10.1.2.9/32", "2001:db8:1:2::/64"]);
    assert_eq!(list(&d), vec![("10.1.2.0/24".into(), 3, 200)]);
    assert!(d.expire(now + 199 * sec).unwrap().is_empty());

    // An expired entry counts as absent for a new deny.
    d.deny_until(p("192.0.2.0/25"), 1, 9).unwrap();
    assert_eq!(
        d.deny_until(p("192.0.2.0/25"), now + sec, 9).unwrap(),
        DenyOutcome::Added
    );

    // allow is exact: not the covering /24 for a /32 inside it.
    assert!(!d.allow(p("10.1.2.9")).unwrap());
    assert!(d.allow(p("10.1.2.77/24")).unwrap());
    assert_eq!(d.clear().unwrap(), 1);
    assert!(d.list().unwrap().is_empty());
    assert!("10.0.0.0/33".parse::<Prefix>().is_err());
}
