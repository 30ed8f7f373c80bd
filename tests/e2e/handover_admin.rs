//! A restart/upgrade handover (SIGUSR2) with the admin API on, over the
//! embedded (redb) store, with `observe.listen` on, under load: a client
//! loop of proxied HTTP requests and an admin loop of route PUTs and
//! status reads while xlb hands itself over three times.
//!
//! Asserted: every handover completes (the successor's ready line, the
//! old process gone, the successor's pid answering `GET /xlb/v1/status`);
//! zero failed proxied requests; the admin API answered every request,
//! the only non-2xx answers being the documented 503 with `Retry-After`
//! (a request on a connection the old process had while it released the
//! store); every route whose PUT was acknowledged is read back through the
//! API and served through the proxy after the last handover; `/metrics`
//! answers on the handed-over socket.
//!
//! Control: before this change the successor could not bind the admin
//! address nor open the redb file; it exited, no successor became ready,
//! and the first `hand_over` below fails (run it with `XLB_BIN` pointing at
//! such a build to see it). The status pid check fails the same way if the
//! old process is still the one answering.
//!
//! Needs root: the handover socket lives in /run/xlb, and the test runs in
//! a network namespace of its own.
use std::{
    convert::Infallible,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use xlb_tests::{privilege::privileged, xlb::Xlb, Netns};

#[path = "../../lb-userspace/tests/store_bed/mod.rs"]
mod store_bed;

const PROXY: &str = "127.0.0.1:18280";
const ADMIN: &str = "127.0.0.1:19280";
const OBSERVE: &str = "127.0.0.1:19290";
const BACKEND: &str = "127.0.0.1:18981";
const HANDOVERS: usize = 3;

/// The node's file over `store` (the `config_store:` section's lines).
fn config(store: &str) -> String {
    format!(
        "admin:
  address: \"{ADMIN}\"
config_store:
{store}observe:
  listen: \"{OBSERVE}\"
lifecycle:
  takeover_timeout: 30s
l7:
  workers: 2
  listeners:
    - name: web
      address: \"{PROXY}\"
"
    )
}

/// The backend: 200 `backend` to everything, until `stop`.
fn backend(ns: &Netns, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(BACKEND).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                let Ok(Ok((stream, _))) = accepted else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("backend"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    })
}

/// Whether `pid` runs (a zombie whose parent is gone counts as exited:
/// intermediate successors are nobody's child here once their
/// predecessor left).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One admin call (a new connection): status, lower-cased head, body.
fn api(method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String, String)> {
    store_bed::http_with_head(&addr(ADMIN), method, path, &[], body)
}

/// One proxied GET for `host`: status and body.
fn proxied(host: &str) -> std::io::Result<(u16, String)> {
    store_bed::http(&addr(PROXY), "GET", "/", &[("Host", host)], None)
}

/// One request on a keep-alive connection to the admin API: status,
/// lower-cased head; `None` when the connection was closed before an
/// answer (the caller reconnects).
fn keepalive_get(conn: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<(u16, String)> {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())?;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {head:?}"),
            ));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    conn.read_exact(&mut body)?;
    Ok((status, head))
}

/// What the loops saw.
#[derive(Default)]
struct Seen {
    proxied_ok: AtomicU64,
    proxied_failed: AtomicU64,
    admin_ok: AtomicU64,
    /// 503 with `Retry-After` (documented for the handover).
    admin_503: AtomicU64,
    admin_failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Routes whose PUT answered 200.
    acked: Mutex<Vec<String>>,
    /// Distinct pids seen answering `GET /xlb/v1/status`, in order.
    status_pids: Mutex<Vec<u64>>,
    /// Keep-alive admin client: answers, 503s (with `Retry-After` and
    /// `Connection: close`), connections opened, failures.
    keepalive_ok: AtomicU64,
    keepalive_503: AtomicU64,
    keepalive_conns: AtomicU64,
    keepalive_failed: AtomicU64,
}

impl Seen {
    fn error(&self, e: String) {
        let mut v = self.errors.lock().unwrap();
        if v.len() < 20 {
            v.push(e);
        }
    }

    /// Counts an admin answer; true when it was a success.
    fn admin(&self, what: &str, r: &std::io::Result<(u16, String, String)>) -> bool {
        match r {
            Ok((200, _, _)) => {
                self.admin_ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok((503, head, _)) if head.contains("retry-after:") => {
                self.admin_503.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok((s, _, body)) => {
                self.admin_failed.fetch_add(1, Ordering::Relaxed);
                self.error(format!("{what}: {s} {body}"));
                false
            }
            Err(e) => {
                self.admin_failed.fetch_add(1, Ordering::Relaxed);
                self.error(format!("{what}: {e}"));
                false
            }
        }
    }
}

/// Removes what the instance leaves in /run/xlb (the daemon without an
/// XDP half has no pins, so `Xlb`'s drop may leave them), also on panic.
struct RunFiles(String);

impl Drop for RunFiles {
    fn drop(&mut self) {
        for ext in ["json", "handover", "drained", "anycast.json", "lock"] {
            let _ = std::fs::remove_file(format!("/run/xlb/{}.{ext}", self.0));
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&self.0));
    }
}

#[test]
fn handovers_with_admin_api_embedded_store_and_observe_lose_nothing() {
    if !privileged("handover_admin") {
        return;
    }
    let ns = Netns::new("hoadm").expect("namespace");
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "  kind: embedded\n  path: \"{}\"\n",
        dir.path().join("store.redb").display()
    );
    handovers_under_load(&ns, &store);
}

/// The same with etcd (no store release: both processes may use it; the
/// admin and observe sockets still go over).
#[test]
fn handovers_with_admin_api_etcd_store_and_observe_lose_nothing() {
    if !privileged("handover_admin (etcd)") {
        return;
    }
    let Some(bin) = store_bed::etcd_binary("handover_admin (etcd)") else {
        return;
    };
    let ns = Netns::new("hoaetcd").expect("namespace");
    let etcd = store_bed::Etcd::start_at(&bin, [127, 0, 0, 1].into(), Some(&ns.path()));
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "  kind: etcd\n  endpoints: [\"{}\"]\n  snapshot: \"{}\"\n",
        etcd.endpoint(),
        dir.path().join("snapshot.json").display()
    );
    handovers_under_load(&ns, &store);
    drop(etcd);
}

/// xlb over `store` in `ns`, handed over [`HANDOVERS`] times under load.
fn handovers_under_load(ns: &Netns, store: &str) {
    let stop_backend = Arc::new(AtomicBool::new(false));
    let backend_thread = backend(ns, stop_backend.clone());
    let mut xlb = Xlb::start_l7(ns, &config(store)).expect("xlb starts");
    let _files = RunFiles(xlb.instance().to_string());
    let first = xlb.pid();

    // The base route, through the API (a store node's file holds none).
    let ns_ref = &ns;
    let setup = ns_ref
        .enter(|| {
            let u = api(
                "PUT",
                "/xlb/v1/upstreams/node",
                Some(&format!(r#"{{"nodes":[{{"address":"{BACKEND}"}}]}}"#)),
            )?;
            let r = api(
                "PUT",
                "/xlb/v1/routes/base",
                Some(r#"{"hosts":["base.test"],"upstream":"node"}"#),
            )?;
            let p = proxied("base.test")?;
            std::io::Result::Ok((u.0, r.0, p))
        })
        .unwrap()
        .expect("setup calls");
    assert_eq!(setup, (200, 200, (200, "backend".to_string())), "setup");

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Proxied requests, each on a new connection.
    let proxy_loop = {
        let (seen, stop) = (seen.clone(), stop.clone());
        ns.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match proxied("base.test") {
                    Ok((200, _)) => {
                        seen.proxied_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        seen.proxied_failed.fetch_add(1, Ordering::Relaxed);
                        seen.error(format!("proxied: {other:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Admin: a new route per round, and the status.
    let admin_loop = {
        let (seen, stop) = (seen.clone(), stop.clone());
        ns.spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("r{n}");
                let body = format!(r#"{{"hosts":["{id}.test"],"upstream":"node"}}"#);
                let put = api("PUT", &format!("/xlb/v1/routes/{id}"), Some(&body));
                if seen.admin(&format!("PUT {id}"), &put) {
                    seen.acked.lock().unwrap().push(id);
                }
                let status = api("GET", "/xlb/v1/status", None);
                if seen.admin("GET status", &status) {
                    let pid = serde_json::from_str::<serde_json::Value>(
                        &status.as_ref().map(|s| s.2.clone()).unwrap_or_default(),
                    )
                    .ok()
                    .and_then(|v| v["pid"].as_u64())
                    .unwrap_or(0);
                    let mut pids = seen.status_pids.lock().unwrap();
                    if pids.last() != Some(&pid) {
                        pids.push(pid);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Admin reads on keep-alive connections: a connection to a process
    // that hands over must get an answer (the documented 503) and be
    // closed, never be dropped unanswered.
    let keepalive_loop = {
        let (seen, stop) = (seen.clone(), stop.clone());
        ns.spawn(move || {
            let mut conn: Option<BufReader<TcpStream>> = None;
            while !stop.load(Ordering::Relaxed) {
                let c = match &mut conn {
                    Some(c) => c,
                    None => {
                        match TcpStream::connect_timeout(&addr(ADMIN), Duration::from_secs(5)) {
                            Ok(t) => {
                                let _ = t.set_read_timeout(Some(Duration::from_secs(10)));
                                seen.keepalive_conns.fetch_add(1, Ordering::Relaxed);
                                conn.insert(BufReader::new(t))
                            }
                            Err(e) => {
                                seen.keepalive_failed.fetch_add(1, Ordering::Relaxed);
                                seen.error(format!("keep-alive connect: {e}"));
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        }
                    }
                };
                match keepalive_get(c, "/xlb/v1/routes/base") {
                    Ok((200, head)) => {
                        seen.keepalive_ok.fetch_add(1, Ordering::Relaxed);
                        if head.contains("connection: close") {
                            conn = None;
                        }
                    }
                    Ok((503, head))
                        if head.contains("retry-after:") && head.contains("connection: close") =>
                    {
                        seen.keepalive_503.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                    other => {
                        seen.keepalive_failed.fetch_add(1, Ordering::Relaxed);
                        seen.error(format!("keep-alive GET: {other:?}"));
                        conn = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut pids = vec![first];
    let mut result: Result<(), String> = Ok(());
    for i in 0..HANDOVERS {
        std::thread::sleep(Duration::from_millis(700));
        let old = xlb.pid();
        let started = Instant::now();
        match xlb.hand_over() {
            Ok(pid) => {
                println!(
                    "handover {}: {old} -> {pid}, ready after {:?}",
                    i + 1,
                    started.elapsed()
                );
                pids.push(pid);
            }
            Err(e) => {
                result = Err(format!("handover {}: {e:#}", i + 1));
                break;
            }
        }
        // The old process drains and exits. The first one is this test's
        // child: it has exited once it can be reaped. Its /proc state turns
        // 'Z' as soon as its main thread returns, while its other threads
        // may still be finishing and `wait` cannot reap it yet (a CI run
        // failed on exactly that), so /proc is asked only of successors,
        // which are not this test's children.
        let gone = |xlb: &mut Xlb| {
            if old == first {
                xlb.first_exited()
            } else {
                !running(old)
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gone(&mut xlb) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !gone(&mut xlb) {
            result = Err(if old == first {
                format!("the first process {old} did not exit")
            } else {
                format!("process {old} did not exit after its handover")
            });
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let _ = proxy_loop.join();
    let _ = admin_loop.join();
    let _ = keepalive_loop.join();

    let proxied_ok = seen.proxied_ok.load(Ordering::Relaxed);
    let proxied_failed = seen.proxied_failed.load(Ordering::Relaxed);
    let admin_ok = seen.admin_ok.load(Ordering::Relaxed);
    let admin_503 = seen.admin_503.load(Ordering::Relaxed);
    let admin_failed = seen.admin_failed.load(Ordering::Relaxed);
    let acked = seen.acked.lock().unwrap().clone();
    let status_pids = seen.status_pids.lock().unwrap().clone();
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "keep-alive admin client: {} answered 200, {} answered 503+Retry-After+close, {} connections, {} failed",
        n(&seen.keepalive_ok),
        n(&seen.keepalive_503),
        n(&seen.keepalive_conns),
        n(&seen.keepalive_failed)
    );
    println!(
        "pids {pids:?}; status answered by {status_pids:?}; proxied ok {proxied_ok} failed {proxied_failed}; \
         admin ok {admin_ok}, 503+Retry-After {admin_503}, failed {admin_failed}; acknowledged PUTs {}",
        acked.len()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let errors = seen.errors.lock().unwrap().clone();
    assert_eq!(proxied_failed, 0, "failed proxied requests: {errors:?}");
    assert_eq!(admin_failed, 0, "admin requests not answered: {errors:?}");
    assert_eq!(
        n(&seen.keepalive_failed),
        0,
        "keep-alive admin requests not answered: {errors:?}"
    );
    assert!(
        proxied_ok > 100 && acked.len() > 20,
        "too little load to mean anything"
    );

    // The last successor serves; every acknowledged route is there.
    let last = xlb.pid();
    assert_eq!(last, *pids.last().unwrap());
    assert_eq!(pids.len(), HANDOVERS + 1);
    let (status, missing_api, missing_proxy, metrics) = ns
        .enter(|| {
            let status = api("GET", "/xlb/v1/status", None);
            let mut missing_api = Vec::new();
            let mut missing_proxy = Vec::new();
            for id in &acked {
                match api("GET", &format!("/xlb/v1/routes/{id}"), None) {
                    Ok((200, _, body)) if body.contains(&format!("{id}.test")) => {}
                    other => missing_api.push(format!("{id}: {other:?}")),
                }
                match proxied(&format!("{id}.test")) {
                    Ok((200, body)) if body == "backend" => {}
                    other => missing_proxy.push(format!("{id}: {other:?}")),
                }
            }
            let metrics = store_bed::http(&addr(OBSERVE), "GET", "/metrics", &[], None);
            (status, missing_api, missing_proxy, metrics)
        })
        .unwrap();
    let (code, _, body) = status.expect("status after the last handover");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["pid"].as_u64(),
        Some(u64::from(last)),
        "the last successor answers the admin API: {body}"
    );
    assert!(
        missing_api.is_empty(),
        "acknowledged, not read back: {missing_api:?}"
    );
    assert!(
        missing_proxy.is_empty(),
        "acknowledged, not served: {missing_proxy:?}"
    );
    let (code, text) = metrics.expect("/metrics after the handovers");
    assert_eq!(code, 200);
    assert!(
        text.contains("xlb_"),
        "metrics: {}",
        &text[..text.len().min(300)]
    );
    for p in &pids[..HANDOVERS] {
        assert!(!running(*p) || *p == first, "process {p} still runs");
    }
    println!(
        "after the last handover: {} acknowledged routes read back and served by pid {last}; /metrics {} bytes",
        acked.len(),
        text.len()
    );

    xlb.stop().expect("stop");
    stop_backend.store(true, Ordering::Relaxed);
    let _ = backend_thread.join();
}

/// A successor that fails after it opened the released store (its config
/// names a listener address it cannot bind): the old process reopens the
/// store, its admin API answers again (writes included, by its own pid),
/// and a good successor then takes over with everything written.
#[test]
fn a_failed_successor_gives_the_store_back() {
    if !privileged("handover_admin failed successor") {
        return;
    }
    const PROXY2: &str = "127.0.0.1:18281";
    const ADMIN2: &str = "127.0.0.1:19281";
    let ns = Netns::new("hoafail").expect("namespace");
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "admin:\n  address: \"{ADMIN2}\"\nconfig_store:\n  kind: embedded\n  path: \"{}\"\nlifecycle:\n  takeover_timeout: 20s\nl7:\n  listeners:\n    - name: web\n      address: \"{PROXY2}\"\n",
        dir.path().join("store.redb").display()
    );
    let mut xlb = Xlb::start_l7(&ns, &good).expect("xlb starts");
    let _files = RunFiles(xlb.instance().to_string());
    let first = xlb.pid();
    let call = |method: &str, path: &str, body: Option<&str>| {
        ns.enter(|| store_bed::http(&addr(ADMIN2), method, path, &[], body))
            .unwrap()
            .unwrap_or_else(|e| (0, format!("error: {e}")))
    };
    let get = |host: &str| {
        ns.enter(|| store_bed::http(&addr(PROXY2), "GET", "/", &[("Host", host)], None))
            .unwrap()
            .unwrap_or_else(|e| (0, format!("error: {e}")))
    };
    let upstream = format!(r#"{{"nodes":[{{"address":"{BACKEND}"}}]}}"#);
    assert_eq!(
        call("PUT", "/xlb/v1/upstreams/node", Some(&upstream)).0,
        200
    );
    let route = |h: &str| format!(r#"{{"hosts":["{h}"],"upstream":"node"}}"#);
    assert_eq!(
        call("PUT", "/xlb/v1/routes/a", Some(&route("a.test"))).0,
        200
    );

    // The successor's config adds a listener on an address no interface
    // has: it opens the store, then fails binding and exits.
    let path = xlb.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}    - name: bad\n      address: \"192.0.2.99:8080\"\n"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !xlb.stderr().contains("reopened after the failed handover") {
        assert!(
            Instant::now() < deadline,
            "the store was not reopened:\n{}",
            xlb.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        xlb.stderr().contains("embedded store released"),
        "the store was released for the successor:\n{}",
        xlb.stderr()
    );
    // The old process answers, writes included.
    let (s, body) = call("GET", "/xlb/v1/status", None);
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pid"].as_u64(), Some(u64::from(first)), "{body}");
    assert_eq!(
        call("PUT", "/xlb/v1/routes/b", Some(&route("b.test"))).0,
        200
    );
    // (No backend runs here: a route that exists answers 502 or 503, an
    // unknown host 404.)
    let routed = |host: &str| matches!(get(host).0, 502 | 503);
    assert!(
        routed("b.test"),
        "the route written after the failure is served"
    );
    assert_eq!(get("nope.test").0, 404, "control: an unknown host");

    // A good successor takes over with both routes.
    std::fs::write(&path, &text).unwrap();
    let second = xlb.hand_over().expect("a good successor takes over");
    assert_ne!(second, first);
    let (s, body) = call("GET", "/xlb/v1/status", None);
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pid"].as_u64(), Some(u64::from(second)), "{body}");
    for id in ["a", "b"] {
        assert_eq!(
            call("GET", &format!("/xlb/v1/routes/{id}"), None).0,
            200,
            "route {id}"
        );
        assert!(routed(&format!("{id}.test")), "route {id} served");
    }
    xlb.stop().expect("stop");
}
