//! Restarts, upgrades and a crash under load (`xlb_tests::l4bed`): a
//! numbered UDP stream and 200 long-lived TCP connections through an L4 VIP
//! (DSR), plus a stream of HTTP/1.1 requests through an L7 listener on the
//! LB, while xlb hands itself over to a new process (SIGUSR2) twice,
//! is upgraded in place (the binary file replaced, then SIGUSR2) twice and
//! is killed with SIGKILL once and started again.
//!
//! Asserted: no UDP datagram lost (not even across the SIGKILL gap: the
//! pinned link keeps forwarding), every TCP connection still answered by
//! the backend it started on, zero failed HTTP requests across the
//! handovers, the pinned XDP link the same link throughout, the packet
//! counters never going backwards.
//!
//! Control run: the same load across a plain stop and start (what xlb did
//! before this change, and still does on `systemctl stop; start`): HTTP
//! requests are refused and UDP datagrams lost in the gap, so the test can
//! fail. Both runs print their numbers (`--nocapture`).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, LB4, TCP_PORT, UDP_PORT, VIP4},
    privilege::privileged,
    process::ChildGuard,
    xlb::Xlb,
};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Long-lived L4 connections.
const TCP_FLOWS: u16 = 200;
/// The L7 listener on the LB's own address.
const L7_PORT: u16 = 8080;
/// The HTTP node (in backend1).
const NODE_PORT: u16 = 8000;
/// The WebSocket echo peer (tests/peers/ws_peer.py), on the LB's loopback.
const WS_PORT: u16 = 9001;
/// Handovers of each kind (restart, upgrade).
const HANDOVERS: usize = 5;
/// One UDP datagram per this interval.
const UDP_EVERY: Duration = Duration::from_millis(2);

fn config(bed: &L4Bed) -> String {
    let mut y = String::from(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\nlifecycle:\n  takeover_timeout: 30s\nl4:\n  conntrack_size: 65536\n  max_vips: 8\n  max_backends: 64\n  vips:\n",
    );
    for (name, port, proto) in [("tcp4", TCP_PORT, "tcp"), ("udp4", UDP_PORT, "udp")] {
        y += &format!(
            "    - name: {name}\n      address: \"{VIP4}\"\n      port: {port}\n      protocol: {proto}\n      mode: dsr\n      backends:\n"
        );
        for b in &bed.backends {
            y += &format!("        - address: \"{}\"\n", b.v4);
        }
    }
    y += &format!(
        "l7:
  workers: 2
  listeners:
    - name: web
      address: \"{LB4}:{L7_PORT}\"
  routes:
    - id: ws
      paths: [\"/ws/*\"]
      upstream: ws
    - id: all
      paths: [\"/*\"]
      upstream: node
  upstreams:
    - id: node
      nodes:
        - {{address: \"{}:{NODE_PORT}\"}}
    - id: ws
      nodes:
        - {{address: \"127.0.0.1:{WS_PORT}\"}}
",
        bed.backends[0].v4
    );
    y
}

/// What the background load saw.
#[derive(Default)]
struct Load {
    udp_sent: AtomicU64,
    udp_received: AtomicU64,
    http_ok: AtomicU64,
    http_failed: AtomicU64,
    h2_ok: AtomicU64,
    h2_failed: AtomicU64,
    http_errors: Mutex<Vec<String>>,
}

/// One HTTP/1.1 request on a fresh connection; the status line.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: restart.test\r\nConnection: close\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// The WebSocket echo peer on the LB's loopback, once it accepts.
fn ws_peer(bed: &L4Bed) -> ChildGuard {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ws_peer.py");
    let child = bed
        .lb
        // Debian's python3, where python3-websockets is installed.
        .command("/usr/bin/python3")
        .arg(script)
        .args(["server", "--port", &WS_PORT.to_string(), "--name", "ws"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 ws_peer.py (Debian python3-websockets)");
    let guard = ChildGuard::new(child);
    let target: SocketAddr = format!("127.0.0.1:{WS_PORT}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bed
        .lb
        .enter(move || TcpStream::connect_timeout(&target, TIMEOUT).is_err())
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "the WebSocket peer did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    guard
}

/// Opens a WebSocket through the L7 listener (RFC 6455 handshake by hand:
/// the test needs nothing but a text frame each way) and reads the peer's
/// hello.
fn ws_open() -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(LB4.into(), L7_PORT), TIMEOUT)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        b"GET /ws/restart HTTP/1.1\r\nHost: restart.test\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("no upgrade: {head}")));
    }
    let hello = ws_read(&mut s)?;
    assert!(hello.starts_with("hello from ws"), "{hello}");
    Ok(s)
}

/// Reads the server's next unmasked text frame (payload under 64 KiB),
/// answering its pings on the way: the peer (Python `websockets`) pings
/// every 20 s and closes a connection that does not answer, and the
/// handovers can take longer than that on a busy machine.
fn ws_read(s: &mut TcpStream) -> std::io::Result<String> {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h)?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l)?;
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)?;
        match h[0] & 0x0f {
            // Ping: a masked pong with the same payload (under 126 bytes).
            0x9 => {
                let mask = [0x21u8, 0x43, 0x65, 0x87];
                let mut pong = vec![0x8a, 0x80 | payload.len() as u8];
                pong.extend_from_slice(&mask);
                pong.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                s.write_all(&pong)?;
            }
            // Pong: nothing to do.
            0xa => {}
            _ => return Ok(String::from_utf8_lossy(&payload).into_owned()),
        }
    }
}

/// Sends `text` in a masked text frame (a client must mask) and returns
/// the echo.
fn ws_echo(s: &mut TcpStream, text: &str) -> String {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).expect("WebSocket write");
    ws_read(s).expect("WebSocket echo")
}

/// The id of the XDP link pinned in `pin_dir`.
fn link_id(pin_dir: &Path) -> u32 {
    let p = aya::programs::links::PinnedLink::from_pin(pin_dir.join("link_xdp_eth0"))
        .expect("the XDP link is pinned");
    aya::programs::links::FdLink::from(p)
        .info()
        .expect("link info")
        .id()
}

/// Total packets over every class of `xlb stats`.
fn packets(xlb: &Xlb) -> u64 {
    let v = xlb.stats().expect("xlb stats");
    v["classes"]
        .as_object()
        .map(|o| o.values().filter_map(|c| c["packets"].as_u64()).sum())
        .unwrap_or(0)
}

/// Asks every TCP connection once more; returns how many answered with a
/// backend other than their first, or failed.
fn tcp_moved(conns: &mut [(TcpStream, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (s, first) in conns.iter_mut() {
        match l4bed::ask_tcp(s) {
            Ok(name) if &name == first => {}
            Ok(name) => bad.push(format!("{first} -> {name}")),
            Err(e) => bad.push(format!("{first}: {e}")),
        }
    }
    bad
}

/// The testbed with the HTTP node running in backend1.
fn bed_with_node() -> (L4Bed, ChildGuard) {
    let bed = L4Bed::new().expect("testbed");
    let node_addr = format!("{}", bed.backends[0].v4);
    let node = bed.backends[0]
        .ns
        .command("python3")
        .args([
            "-m",
            "http.server",
            &NODE_PORT.to_string(),
            "--bind",
            &node_addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let node = ChildGuard::new(node);
    let target: SocketAddr = format!("{node_addr}:{NODE_PORT}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bed.backends[0]
        .ns
        .enter(move || TcpStream::connect_timeout(&target, TIMEOUT).is_err())
        .unwrap()
    {
        assert!(Instant::now() < deadline, "the HTTP node did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (bed, node)
}

/// Runs `events` against a started xlb while the load runs; returns the
/// load's tally and whether every TCP connection stayed.
fn under_load(
    bed: &L4Bed,
    xlb: &mut Xlb,
    events: impl FnOnce(&mut Xlb, &mut Vec<(TcpStream, String)>),
) -> Arc<Load> {
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let vip_tcp = SocketAddr::new(VIP4.into(), TCP_PORT);
    let mut conns: Vec<(TcpStream, String)> = bed
        .client
        .enter(move || {
            (0..TCP_FLOWS)
                .map(|i| {
                    let src = SocketAddr::new(CLIENT4.into(), 41000 + i);
                    let mut s =
                        l4bed::tcp_connect_from(src, vip_tcp, TIMEOUT).expect("TCP via the VIP");
                    let name = l4bed::ask_tcp(&mut s).expect("first answer");
                    (s, name)
                })
                .collect()
        })
        .unwrap();
    // A numbered UDP stream: one connected socket, one datagram every
    // UDP_EVERY, every answer counted by a receiver thread.
    let udp: UdpSocket = bed
        .client
        .enter(|| {
            l4bed::udp_from(
                SocketAddr::new(CLIENT4.into(), 40000),
                SocketAddr::new(VIP4.into(), UDP_PORT),
                Duration::from_millis(200),
            )
        })
        .unwrap()
        .expect("UDP socket");
    std::thread::scope(|s| {
        let rx = udp.try_clone().unwrap();
        let (l, st) = (load.clone(), stop.clone());
        s.spawn(move || {
            let mut buf = [0u8; 512];
            // Runs until the sender stopped and a quiet second passed.
            let mut quiet_since: Option<Instant> = None;
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => {
                        l.udp_received.fetch_add(1, Ordering::Relaxed);
                        quiet_since = None;
                    }
                    Err(_) => {
                        if st.load(Ordering::Relaxed) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_secs(1) {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let (l, st) = (load.clone(), stop.clone());
        let tx = &udp;
        s.spawn(move || {
            let mut seq = 0u64;
            while !st.load(Ordering::Relaxed) {
                seq += 1;
                if tx.send(format!("seq {seq}\n").as_bytes()).is_ok() {
                    l.udp_sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(UDP_EVERY);
            }
        });
        let (l, st) = (load.clone(), stop.clone());
        let client = &bed.client;
        s.spawn(move || {
            client
                .enter(|| {
                    let addr = SocketAddr::new(LB4.into(), L7_PORT);
                    while !st.load(Ordering::Relaxed) {
                        match http_get(addr) {
                            Ok(line) if line.starts_with("HTTP/1.1 200") => {
                                l.http_ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                l.http_failed.fetch_add(1, Ordering::Relaxed);
                                let mut e = l.http_errors.lock().unwrap();
                                if e.len() < 5 {
                                    e.push(format!("{other:?}"));
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
                .unwrap();
        });
        // HTTP/2 (h2c, prior knowledge) with curl, a connection per request.
        let (l, st) = (load.clone(), stop.clone());
        s.spawn(move || {
            let url = format!("http://{LB4}:{L7_PORT}/");
            while !st.load(Ordering::Relaxed) {
                let out = client
                    .command("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code} %{http_version}",
                    ])
                    .args(["--http2-prior-knowledge", "--max-time", "10", &url])
                    .output();
                match out {
                    Ok(o) if String::from_utf8_lossy(&o.stdout) == "200 2" => {
                        l.h2_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        l.h2_failed.fetch_add(1, Ordering::Relaxed);
                        let mut e = l.http_errors.lock().unwrap();
                        if e.len() < 10 {
                            e.push(format!(
                                "h2: {:?}",
                                other.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        // Load runs a moment before and after the events.
        std::thread::sleep(Duration::from_millis(500));
        events(xlb, &mut conns);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    load
}

fn print(what: &str, l: &Load) {
    let sent = l.udp_sent.load(Ordering::Relaxed);
    let got = l.udp_received.load(Ordering::Relaxed);
    println!(
        "{what}: UDP sent {sent}, answered {got}, lost {}; HTTP/1.1 ok {}, failed {}; HTTP/2 ok {}, failed {} {:?}",
        sent.saturating_sub(got),
        l.http_ok.load(Ordering::Relaxed),
        l.http_failed.load(Ordering::Relaxed),
        l.h2_ok.load(Ordering::Relaxed),
        l.h2_failed.load(Ordering::Relaxed),
        l.http_errors.lock().unwrap()
    );
}

#[test]
fn restarts_upgrades_and_a_crash_lose_nothing() {
    if !privileged("restart") {
        return;
    }
    let (bed, _node) = bed_with_node();
    // The binary runs from a copy, so that an upgrade can replace the file.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("xlb");
    std::fs::copy(xlb_tests::xlb::binary(), &bin).unwrap();
    // SAFETY (edition 2021: set_var is safe): the tests in this binary do
    // not read XLB_BIN concurrently with this write.
    std::env::set_var("XLB_BIN", &bin);
    let yaml = config(&bed);
    let mut xlb = Xlb::start(&bed.lb, &yaml).expect("xlb starts");
    let pin_dir = xlb.pin_dir.clone();
    let link = link_id(&pin_dir);
    let mut last_packets = packets(&xlb);

    let _ws_peer = ws_peer(&bed);
    let mut ws = bed
        .client
        .enter(ws_open)
        .unwrap()
        .expect("WebSocket through L7");
    assert_eq!(ws_echo(&mut ws, "before"), "before");
    let load = under_load(&bed, &mut xlb, |xlb, conns| {
        let mut check = |xlb: &mut Xlb, what: &str| {
            let moved = tcp_moved(conns);
            assert!(
                moved.is_empty(),
                "{what}: TCP connections moved or failed: {moved:?}"
            );
            assert_eq!(
                link_id(&pin_dir),
                link,
                "{what}: the pinned XDP link changed"
            );
            let p = packets(xlb);
            assert!(
                p >= last_packets,
                "{what}: counters went back from {last_packets} to {p}"
            );
            last_packets = p;
        };
        for i in 0..HANDOVERS {
            let pid = xlb.hand_over().expect("restart by handover");
            println!("restart {i}: pid {pid}");
            check(xlb, &format!("restart {i}"));
        }
        for i in 0..HANDOVERS {
            // A new file at the same path (as a package manager writes it).
            let tmp = bin.with_extension("new");
            std::fs::copy(xlb_tests::xlb::binary(), &tmp).unwrap();
            std::fs::rename(&tmp, &bin).unwrap();
            let pid = xlb.hand_over().expect("upgrade by handover");
            println!("upgrade {i}: pid {pid}");
            check(xlb, &format!("upgrade {i}"));
        }
    });
    print("restarts and upgrades", &load);
    // The WebSocket opened before the first handover is still open: its
    // process drains it (up to drain_timeout) while successors serve.
    assert_eq!(
        ws_echo(&mut ws, "after ten handovers"),
        "after ten handovers"
    );
    drop(ws);
    let sent = load.udp_sent.load(Ordering::Relaxed);
    assert!(sent > 100, "the UDP stream ran ({sent} datagrams)");
    assert_eq!(
        load.udp_received.load(Ordering::Relaxed),
        sent,
        "UDP datagrams lost"
    );
    assert!(load.http_ok.load(Ordering::Relaxed) > 10, "HTTP load ran");
    assert!(load.h2_ok.load(Ordering::Relaxed) > 10, "HTTP/2 load ran");
    assert_eq!(
        load.http_failed.load(Ordering::Relaxed) + load.h2_failed.load(Ordering::Relaxed),
        0,
        "failed HTTP requests across handovers: {:?}",
        load.http_errors.lock().unwrap()
    );

    // A crash: SIGKILL, then a plain start. L4 keeps forwarding through
    // the gap with the pinned link and tables; the new process adopts them.
    let instance = xlb.instance().to_string();
    let mut holder: Option<Xlb> = Some(xlb);
    let load = under_load(&bed, holder.as_mut().unwrap(), |xlb, conns| {
        xlb.kill9();
        std::thread::sleep(Duration::from_millis(300));
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let fresh =
            Xlb::start_named(&bed.lb, &instance, &yaml, &level, &[]).expect("start after SIGKILL");
        let moved = tcp_moved(conns);
        assert!(
            moved.is_empty(),
            "after SIGKILL: TCP connections moved or failed: {moved:?}"
        );
        assert_eq!(
            link_id(&pin_dir),
            link,
            "after SIGKILL: the pinned XDP link changed"
        );
        let p = packets(&fresh);
        assert!(
            p >= last_packets,
            "after SIGKILL: counters went back from {last_packets} to {p}"
        );
        // The killed process's guard must not remove the fresh one's pins.
        *xlb = fresh;
    });
    print("SIGKILL and start", &load);
    let sent = load.udp_sent.load(Ordering::Relaxed);
    assert_eq!(
        load.udp_received.load(Ordering::Relaxed),
        sent,
        "UDP datagrams lost across the SIGKILL gap"
    );
    // HTTP requests in the SIGKILL gap are refused (nobody holds the
    // listening sockets): counted, not asserted.
    holder.take().unwrap().stop().expect("clean stop");
    assert!(!pin_dir.exists(), "a stop removes the pins");
}

#[test]
fn control_a_plain_stop_and_start_loses_traffic() {
    if !privileged("restart control") {
        return;
    }
    let (bed, _node) = bed_with_node();
    let yaml = config(&bed);
    let mut xlb = Xlb::start(&bed.lb, &yaml).expect("xlb starts");
    let instance = xlb.instance().to_string();
    let load = under_load(&bed, &mut xlb, |xlb, _conns| {
        xlb.stop().expect("stop");
        std::thread::sleep(Duration::from_millis(300));
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        *xlb = Xlb::start_named(&bed.lb, &instance, &yaml, &level, &[]).expect("start again");
    });
    print("control: stop and start", &load);
    let lost = load.udp_sent.load(Ordering::Relaxed) - load.udp_received.load(Ordering::Relaxed);
    // Either protocol's loop may be the one that meets the gap (a loop
    // waiting on a request when the stop comes can miss it): both count.
    let refused = load.http_failed.load(Ordering::Relaxed) + load.h2_failed.load(Ordering::Relaxed);
    assert!(
        lost > 0 && refused > 0,
        "a plain stop/start should lose datagrams and refuse requests (lost {lost}, refused {refused})"
    );
}

/// A successor that fails after it received the listeners (here: the new
/// config adds a listener on an address the host does not have) leaves
/// the old process serving, with the instance lock taken back: a later
/// handover works.
#[test]
fn a_failed_successor_leaves_the_old_process_serving() {
    if !privileged("restart failed successor") {
        return;
    }
    let ns = xlb_tests::netns::Netns::new("rsfail").unwrap();
    let config = |extra: &str| {
        format!(
            "interfaces:\n  - name: lo\n    xdp_mode: skb\nlifecycle:\n  takeover_timeout: 20s\nl7:\n  listeners:\n    - name: a\n      address: \"127.0.0.1:8080\"\n{extra}  routes:\n    - id: all\n      paths: [\"/*\"]\n      upstream: none\n  upstreams:\n    - id: none\n      nodes:\n        - {{address: \"127.0.0.1:9\"}}\n"
        )
    };
    let mut xlb = Xlb::start(&ns, &config("")).expect("xlb starts");
    let first = xlb.pid();
    let get = || {
        ns.enter(|| http_get("127.0.0.1:8080".parse().unwrap()))
            .unwrap()
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    assert!(get().starts_with("HTTP/1.1 "), "served before");
    let path = xlb.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    let instance_line = good.lines().next().unwrap().to_string();
    std::fs::write(
        &path,
        format!(
            "{instance_line}\n{}",
            config("    - name: b\n      address: \"192.0.2.99:8080\"\n")
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !xlb.stderr().contains("handover failed") {
        assert!(
            Instant::now() < deadline,
            "no failed handover logged:\n{}",
            xlb.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(xlb.pid(), first);
    assert!(
        xlb_tests::process::pid_alive(first),
        "the old process goes on"
    );
    let line = get();
    assert!(
        line.starts_with("HTTP/1.1 "),
        "the old process still serves: {line}"
    );
    // The lock was taken back and released again for a good successor.
    std::fs::write(&path, &good).unwrap();
    let second = xlb.hand_over().expect("a good successor takes over");
    assert_ne!(second, first);
    let line = get();
    assert!(
        line.starts_with("HTTP/1.1 "),
        "the successor serves: {line}"
    );
    xlb.stop().expect("stop");
}
