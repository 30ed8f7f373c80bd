//! Rate-limit escalation from the L7 proxy to the XDP deny list, end to
//! end, on the L4 testbed (`xlb_tests::l4bed`): the LB namespace runs
//! `xlb run` with XDP on `eth0` and an L7 listener on the LB's address,
//! whose one route has a `$src_ip` rate limit (5/s, burst 0) with a hard
//! limit (10/s, deny_for 3 s) and forwards to an HTTP server on the LB's
//! loopback that counts requests per client (X-Forwarded-For). The client
//! namespace holds two addresses, A (192.0.2.1) and B (192.0.2.3).
//!
//! A sends requests as fast as it can, each on a new connection: the first
//! is answered 200, then 429s (`rate-limited`), then A is over the hard
//! limit: after at most a few 429s `denied` by the proxy itself, its SYNs
//! are dropped at the NIC (connects time out, `drop_denied` rises, the
//! deny list holds A's /32, the backend sees nothing more from A). B is
//! served meanwhile. When `deny_for` has passed (the XDP program honours
//! the expiry itself; the daemon removes the entry within its 1 s tick) A
//! is answered again. The counts are printed (`--nocapture`).
use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, IntoRawFd as _},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xlb::datapath::deny::{DenyList, Prefix};
use xlb_tests::{
    l4bed::{L4Bed, CLIENT4, IFACE, LB4},
    netns::{self, Netns},
    privilege::privileged,
    process::pid_alive,
    xlb::Xlb,
};

/// The second client address (same link as A).
const B4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
/// The L7 listener's port on the LB's address.
const LISTEN_PORT: u16 = 8080;
/// The HTTP backend's port on the LB's loopback.
const BACKEND_PORT: u16 = 9080;
const DENY_FOR: Duration = Duration::from_secs(3);
/// The daemon releases expired denials every second.
const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// A connect that takes longer counts as dropped: below the initial SYN
/// retransmission timeout (1 s), so each one sends exactly one SYN.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Reading a response.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Most requests A sends in its burst.
const MAX_REQUESTS: usize = 200;
/// A's burst ends after this many connects in a row timed out.
const TIMEOUTS_IN_A_ROW: usize = 3;
/// B's requests while A is denied, and their spacing (under B's 5/s).
const B_REQUESTS: usize = 3;
const B_SPACING: Duration = Duration::from_millis(250);

// ----------------------------------------------------------- the backend

/// A keep-alive HTTP/1.1 server answering `200 ok` to every request and
/// counting requests per X-Forwarded-For value.
struct Backend {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &Netns) -> anyhow::Result<Backend> {
        let l = ns.enter(|| TcpListener::bind((Ipv4Addr::LOCALHOST, BACKEND_PORT)))??;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let (s, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((sock, _)) => {
                        let (s, c) = (s.clone(), c.clone());
                        conns.retain(|h| !h.is_finished());
                        conns.push(std::thread::spawn(move || serve_http(sock, c, s)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            for h in conns {
                let _ = h.join();
            }
        });
        Ok(Backend {
            stop,
            counts,
            thread: Some(thread),
        })
    }

    /// Requests seen from `client` so far.
    fn count(&self, client: IpAddr) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(&client.to_string())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_http(mut s: TcpStream, counts: Arc<Mutex<HashMap<String, u64>>>, stop: Arc<AtomicBool>) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(Duration::from_millis(50))).is_err()
    {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        // Every complete request head in the buffer (GETs: no bodies).
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let xff = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("x-forwarded-for")
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| "-".into());
            // The client is the last hop the proxy appended.
            let client = xff.rsplit(',').next().unwrap_or("-").trim().to_string();
            *counts.lock().unwrap().entry(client).or_insert(0) += 1;
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

// ----------------------------------------------------------- the client

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A response: status and body.
    Status(u16, String),
    /// The connect timed out (the SYN got no answer).
    Dropped,
    /// Anything else (reset, no response …).
    Error(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Status(s, body) if body.trim().starts_with(&s.to_string()) => {
                body.trim().to_string()
            }
            Outcome::Status(s, body) => format!("{s} {}", body.trim()),
            Outcome::Dropped => "dropped (connect timed out)".into(),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
}

/// One GET on a new connection from `src` (kernel-chosen port) to the
/// listener. Call inside the client namespace.
fn request(src: IpAddr) -> Outcome {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrStorage,
    };
    use nix::sys::time::TimeVal;
    let dst = SocketAddr::new(LB4.into(), LISTEN_PORT);
    let fd = match socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => fd,
        Err(e) => return Outcome::Error(format!("socket: {e}")),
    };
    let tv = TimeVal::new(0, CONNECT_TIMEOUT.as_micros() as _);
    // A blocking connect gives up after SO_SNDTIMEO (EINPROGRESS).
    if let Err(e) = setsockopt(&fd, sockopt::SendTimeout, &tv) {
        return Outcome::Error(format!("SO_SNDTIMEO: {e}"));
    }
    if let Err(e) = bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    ) {
        return Outcome::Error(format!("bind {src}: {e}"));
    }
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINPROGRESS)
        | Err(nix::errno::Errno::EAGAIN)
        | Err(nix::errno::Errno::ETIMEDOUT) => return Outcome::Dropped,
        Err(e) => return Outcome::Error(format!("connect: {e}")),
    }
    // SAFETY: the descriptor is ours; the stream takes it over.
    let mut s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    let io = (|| -> std::io::Result<Vec<u8>> {
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        s.set_write_timeout(Some(READ_TIMEOUT))?;
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: lb.test\r\nconnection: close\r\n\r\n")?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    })();
    let raw = match io {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("exchange: {e}")),
    };
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Error(format!("no response head in {text:?}"));
    };
    match head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(code) => Outcome::Status(code, body.to_string()),
        None => Outcome::Error(format!("bad status line in {head:?}")),
    }
}

/// A response with status `code` whose body holds `word`: the backend's
/// `ok`, or xlb's own `429 <reason>` (framing may be chunked, so look for
/// the word).
fn is_status(o: &Outcome, code: u16, word: &str) -> bool {
    matches!(o, Outcome::Status(c, b) if *c == code && b.contains(word))
}

fn drop_denied(xlb: &Xlb) -> u64 {
    let s = xlb.stats().unwrap();
    s["reasons"]["drop_denied"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no drop_denied in {}", s["reasons"]))
}

/// The LB's config: XDP on `eth0`, one listener on the LB's address, one
/// route `all` to the backend; `l7_extra` goes into `l7:` (indented two
/// spaces), `route_extra` into the route (indented six).
fn lb_config(l7_extra: &str, route_extra: &str) -> String {
    format!(
        "interfaces:\n  - name: {IFACE}\n    xdp_mode: native\n\
         l7:\n  workers: 2\n{l7_extra}\
         \x20 listeners:\n    - name: web\n      address: \"{LB4}:{LISTEN_PORT}\"\n\
         \x20 routes:\n    - id: all\n      upstream: app\n{route_extra}\
         \x20 upstreams:\n    - id: app\n      nodes:\n        - {{address: \"127.0.0.1:{BACKEND_PORT}\"}}\n"
    )
}

fn config() -> String {
    lb_config(
        &format!(
            "  rate_limits:\n    - name: per-src\n      key: \"$src_ip\"\n      rate: 5/s\n      burst: 0\n\
             \x20     hard_limit: {{rate: 10/s, deny_for: {}s}}\n",
            DENY_FOR.as_secs()
        ),
        "      rate_limits: [per-src]\n",
    )
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn hard_rate_limit_escalates_to_the_xdp_deny_list() {
    if !privileged("hard_rate_limit_escalates_to_the_xdp_deny_list") {
        return;
    }
    let a: IpAddr = CLIENT4.into();
    let b: IpAddr = B4.into();
    let created: (Vec<String>, u32, PathBuf);
    {
        // Drop order on a panic: xlb, the HTTP backend, the testbed.
        let bed = L4Bed::with_backends(1).unwrap();
        bed.client.addr(IFACE, &format!("{B4}/24")).unwrap();
        let backend = Backend::start(&bed.lb).unwrap();
        let mut xlb = Xlb::start(&bed.lb, &config()).unwrap();
        let pin_dir = xlb.pin_dir.clone();
        let deny = DenyList::open(&pin_dir).unwrap();
        let client = &bed.client;

        // 0. Both clients are served; nothing is denied.
        let first_b = client.enter(|| request(b)).unwrap();
        assert!(
            is_status(&first_b, 200, "ok"),
            "B before the burst: {first_b:?}; xlb stderr:\n{}",
            xlb.stderr()
        );
        assert_eq!(backend.count(b), 1, "the backend saw B's request as B's");
        let denied_before = drop_denied(&xlb);
        assert_eq!(denied_before, 0, "drop_denied before the burst");

        // 1. A's burst: new connections as fast as they go.
        let started = Instant::now();
        let burst: Vec<(Duration, Outcome)> = client
            .enter(|| {
                let mut out = Vec::new();
                let mut in_a_row = 0;
                for _ in 0..MAX_REQUESTS {
                    let o = request(a);
                    in_a_row = if o == Outcome::Dropped {
                        in_a_row + 1
                    } else {
                        0
                    };
                    out.push((started.elapsed(), o));
                    if in_a_row == TIMEOUTS_IN_A_ROW {
                        break;
                    }
                }
                out
            })
            .unwrap();
        let a_at_backend = backend.count(a);
        let mut tally: Vec<(String, usize)> = Vec::new();
        for (_, o) in &burst {
            match tally.iter_mut().find(|(l, _)| *l == o.label()) {
                Some((_, n)) => *n += 1,
                None => tally.push((o.label(), 1)),
            }
        }
        println!(
            "A's burst, {} requests (in order of first appearance): {tally:?}",
            burst.len()
        );
        let seq: Vec<String> = burst
            .iter()
            .map(|(t, o)| format!("{:>4}ms {}", t.as_millis(), o.label()))
            .collect();
        let ok = burst
            .iter()
            .filter(|(_, o)| is_status(o, 200, "ok"))
            .count();
        let limited = burst
            .iter()
            .filter(|(_, o)| is_status(o, 429, "rate-limited"))
            .count();
        let denied_429 = burst
            .iter()
            .filter(|(_, o)| is_status(o, 429, "denied"))
            .count();
        let dropped = burst.iter().filter(|(_, o)| *o == Outcome::Dropped).count();
        let other: Vec<&String> = seq
            .iter()
            .zip(&burst)
            .filter(|(_, (_, o))| {
                !(is_status(o, 200, "ok")
                    || is_status(o, 429, "rate-limited")
                    || is_status(o, 429, "denied")
                    || *o == Outcome::Dropped)
            })
            .map(|(s, _)| s)
            .collect();
        let ctx = || {
            format!(
                "A's requests:\n{}\nxlb stderr:\n{}",
                seq.join("\n"),
                xlb.stderr()
            )
        };
        assert!(other.is_empty(), "unexpected outcomes {other:?}; {}", ctx());
        assert!(
            is_status(&burst[0].1, 200, "ok"),
            "A's first request is forwarded; {}",
            ctx()
        );
        assert!(limited >= 1, "A got no 429 rate-limited; {}", ctx());
        assert_eq!(
            burst.last().map(|(_, o)| o),
            Some(&Outcome::Dropped),
            "A's burst ended without being dropped at the NIC; {}",
            ctx()
        );
        // The order: forwarded and rate-limited, then (briefly) denied by
        // the proxy, then dropped, and nothing but drops after the first.
        let first_drop = burst
            .iter()
            .position(|(_, o)| *o == Outcome::Dropped)
            .unwrap();
        let first_denied = burst
            .iter()
            .position(|(_, o)| is_status(o, 429, "denied"))
            .unwrap_or(first_drop);
        assert!(
            burst[..first_denied]
                .iter()
                .all(|(_, o)| is_status(o, 200, "ok") || is_status(o, 429, "rate-limited")),
            "before the escalation only 200/429 rate-limited; {}",
            ctx()
        );
        assert!(
            burst[first_denied..first_drop]
                .iter()
                .all(|(_, o)| is_status(o, 429, "denied")),
            "between the escalation and the NIC only 429 denied; {}",
            ctx()
        );
        assert!(
            burst[first_drop..]
                .iter()
                .all(|(_, o)| *o == Outcome::Dropped),
            "once dropped, A stays dropped; {}",
            ctx()
        );
        // The hard limit (10/s, burst 10) escalates after about a dozen
        // requests, far below MAX_REQUESTS.
        assert!(
            first_denied <= 40,
            "A escalated only after {first_denied} requests; {}",
            ctx()
        );
        assert_eq!(
            a_at_backend, ok as u64,
            "the backend saw exactly A's forwarded requests"
        );
        // The escalating request is the first one answered `denied`: the
        // escalation happened after the request before it ended, and
        // before that one ended.
        let escalated_after = burst[first_denied.saturating_sub(1)].0;
        let escalated_before = burst[first_denied].0;
        println!(
            "A: {ok} x 200, {limited} x 429 rate-limited, {denied_429} x 429 denied (proxy, before the NIC deny), \
             {dropped} connects dropped; escalated by request {first_denied} ({}-{}ms), first drop at {}ms",
            escalated_after.as_millis(),
            escalated_before.as_millis(),
            burst[first_drop].0.as_millis()
        );

        // 2. The NIC dropped A's SYNs, counted; the deny list holds A; the
        // daemon said so.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut denied_now = drop_denied(&xlb);
        while denied_now < dropped as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            denied_now = drop_denied(&xlb);
        }
        println!("drop_denied: {denied_before} -> {denied_now} ({dropped} connects timed out)");
        assert!(
            denied_now >= dropped as u64,
            "drop_denied rose by {} for {dropped} dropped connects",
            denied_now - denied_before
        );
        let listed: Vec<String> = deny
            .list()
            .unwrap()
            .iter()
            .map(|e| format!("{} reason {}", e.prefix, e.reason))
            .collect();
        assert_eq!(
            listed,
            [format!("{} reason 1", Prefix::host(a))],
            "the deny list while A is denied"
        );
        let stderr = xlb.stderr();
        assert!(
            stderr.contains(&format!(
                "rate limit per-src: {a} over the hard limit, dropped at the NIC"
            )),
            "the daemon logs the escalation; stderr:\n{stderr}"
        );

        // 3. B is served meanwhile; A stays dropped and unseen.
        let b_before = backend.count(b);
        let b_out: Vec<Outcome> = client
            .enter(|| {
                (0..B_REQUESTS)
                    .map(|i| {
                        if i > 0 {
                            std::thread::sleep(B_SPACING);
                        }
                        request(b)
                    })
                    .collect()
            })
            .unwrap();
        println!(
            "B while A is denied: {:?}",
            b_out.iter().map(Outcome::label).collect::<Vec<_>>()
        );
        for (i, o) in b_out.iter().enumerate() {
            assert!(
                is_status(o, 200, "ok"),
                "B's request {i} while A is denied: {o:?}"
            );
        }
        assert_eq!(
            backend.count(b) - b_before,
            B_REQUESTS as u64,
            "the backend saw B's requests"
        );
        let again = client.enter(|| request(a)).unwrap();
        let checked_at = started.elapsed();
        assert!(
            checked_at + Duration::from_millis(200) < escalated_after + DENY_FOR,
            "the test ran too slowly ({checked_at:?}) to check A within deny_for"
        );
        assert_eq!(
            again,
            Outcome::Dropped,
            "A at {checked_at:?}, within deny_for"
        );
        assert_eq!(
            backend.count(a),
            a_at_backend,
            "the backend saw nothing more from A"
        );

        // 4. After deny_for, A is answered again (the XDP program honours
        // the expiry; the daemon's tick removes the entry).
        let bound = escalated_before + DENY_FOR + EXPIRY_TICK + Duration::from_secs(2);
        let mut retries = 0;
        let (back_at, first) = loop {
            let o = client.enter(|| request(a)).unwrap();
            if o != Outcome::Dropped {
                break (started.elapsed(), o);
            }
            retries += 1;
            assert!(
                started.elapsed() < bound,
                "A still dropped {:?} after its burst began; xlb stderr:\n{}",
                started.elapsed(),
                xlb.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        println!(
            "A answered again {}ms after its burst began ({}ms after the escalating request ended; deny_for {DENY_FOR:?}): {} ({retries} dropped retries meanwhile)",
            back_at.as_millis(),
            back_at.saturating_sub(escalated_before).as_millis(),
            first.label()
        );
        assert!(
            is_status(&first, 200, "ok"),
            "A's first request after the deny: {first:?}"
        );
        assert!(
            back_at >= escalated_after + DENY_FOR,
            "A was let in {back_at:?} after its burst began, before deny_for had passed since the escalation (after {escalated_after:?})"
        );
        assert_eq!(
            backend.count(a),
            a_at_backend + 1,
            "the backend sees A again"
        );
        // The daemon's expiry tick clears the entry.
        let deadline = Instant::now() + EXPIRY_TICK + Duration::from_secs(2);
        while !deny.list().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            deny.list().unwrap().is_empty(),
            "deny list after the expiry"
        );
        assert!(
            xlb.stderr()
                .contains(&format!("deny of {} expired", Prefix::host(a))),
            "the daemon logs the release; stderr:\n{}",
            xlb.stderr()
        );
        let final_denied = drop_denied(&xlb);
        println!("drop_denied at the end: {final_denied}");

        drop(deny);
        let pid = xlb.pid();
        let status = xlb.stop().unwrap();
        assert!(
            status.success(),
            "xlb exited with {status}; stderr:\n{}",
            xlb.stderr()
        );
        drop(xlb);
        drop(backend);
        let mut names = vec![
            bed.switch.name().to_string(),
            bed.client.name().to_string(),
            bed.lb.name().to_string(),
        ];
        names.extend(bed.backends.iter().map(|b| b.ns.name().to_string()));
        created = (names, pid, pin_dir);
    }
    let (namespaces, pid, pin_dir) = created;
    let existing = netns::list().unwrap();
    for ns in &namespaces {
        assert!(!existing.contains(ns), "namespace {ns} left behind");
    }
    assert!(!pid_alive(pid), "xlb process {pid} left behind");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
}

/// The config of the `ip-restriction` case: A's address is denied on the
/// route, with `xdp_deny_for`.
fn ip_restriction_config() -> String {
    lb_config(
        "",
        &format!(
            "      plugins:\n        ip-restriction: {{deny: [\"{CLIENT4}/32\"], xdp_deny_for: {}s}}\n",
            DENY_FOR.as_secs()
        ),
    )
}

/// `ip-restriction` with `xdp_deny_for`: the denied source's first request
/// is answered `403 source-forbidden` by the proxy, and its next
/// connections are dropped at the NIC (counted `drop_denied`, listed in the
/// deny list) while B, the control, is served throughout; the backend never
/// sees A.
#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn ip_restriction_pushes_denied_sources_into_xdp() {
    if !privileged("ip_restriction_pushes_denied_sources_into_xdp") {
        return;
    }
    let a: IpAddr = CLIENT4.into();
    let b: IpAddr = B4.into();
    let bed = L4Bed::with_backends(1).unwrap();
    bed.client.addr(IFACE, &format!("{B4}/24")).unwrap();
    let backend = Backend::start(&bed.lb).unwrap();
    let xlb = Xlb::start(&bed.lb, &ip_restriction_config()).unwrap();
    let deny = DenyList::open(&xlb.pin_dir).unwrap();
    let client = &bed.client;

    let first_b = client.enter(|| request(b)).unwrap();
    assert!(
        is_status(&first_b, 200, "ok"),
        "B (control): {first_b:?}; xlb stderr:\n{}",
        xlb.stderr()
    );
    let first_a = client.enter(|| request(a)).unwrap();
    assert!(
        is_status(&first_a, 403, "source-forbidden"),
        "A's first request: {first_a:?}; xlb stderr:\n{}",
        xlb.stderr()
    );
    // The daemon writes the entry as soon as the plugin reports it; give it
    // a bounded moment, then A's connects must time out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while deny.list().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed: Vec<String> = deny
        .list()
        .unwrap()
        .iter()
        .map(|e| e.prefix.to_string())
        .collect();
    assert_eq!(listed, [Prefix::host(a).to_string()], "the deny list");
    let before = drop_denied(&xlb);
    let later: Vec<Outcome> = client
        .enter(|| (0..3).map(|_| request(a)).collect())
        .unwrap();
    assert!(
        later.iter().all(|o| *o == Outcome::Dropped),
        "A after the denial: {later:?}"
    );
    assert!(
        drop_denied(&xlb) >= before + 3,
        "drop_denied did not count A's SYNs"
    );
    let b_again = client.enter(|| request(b)).unwrap();
    assert!(
        is_status(&b_again, 200, "ok"),
        "B while A is denied: {b_again:?}"
    );
    assert_eq!(backend.count(a), 0, "the backend saw A");
    assert_eq!(backend.count(b), 2, "the backend saw B's two requests");
}
