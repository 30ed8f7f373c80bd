//! Observability end to end, on a real `xlb` with real traffic:
//!
//! * `/metrics` is scraped after a known mix of requests (200s, a node's
//!   503s, xlb's own 502s, cache misses and hits); `promtool check metrics`
//!   accepts it, and every counter equals what the clients counted.
//! * The JSON access log: while four clients send requests, the log is
//!   rotated three times (rename + SIGUSR1); across the four files every
//!   request appears exactly once (matched by the `X-Request-Id` each
//!   client sent) with its status, route, node, cache and error fields.
//! * `/status` in headless Chromium shows a node `up`, and `DOWN` once its
//!   process is gone (the control: the same check on the first page must
//!   fail); a screenshot is saved (`XLB_BLESS=1` writes
//!   docs/status-page.png). `xlb status` prints the same.
//! * XDP: with XDP attached to a veth, frames from a source put in the
//!   deny list are dropped at the NIC, and the per-CPU counters summed at
//!   scrape time say exactly how many (`drop_denied`), after a control
//!   batch sent before the deny that must count as passed, not dropped;
//!   the denied source shows on `/status.json`.
use std::{
    collections::HashMap,
    convert::Infallible,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use xlb::datapath::deny::{DenyList, Prefix};
use xlb_tests::{names, netns::veth, privilege::privileged, xlb::Xlb, ChildGuard, Netns};

const PROXY: &str = "127.0.0.1:18180";
const SECURE: &str = "127.0.0.1:18443";
const OBSERVE: &str = "127.0.0.1:19190";
const B1: &str = "127.0.0.1:18901";
const B2: &str = "127.0.0.1:18902";
/// Nothing listens there: xlb answers 502 itself.
const DEAD: &str = "127.0.0.1:18909";
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 150;
const ROTATIONS: usize = 3;

fn config(log: &Path, cert_dir: &Path) -> String {
    format!(
        "observe:
  listen: \"{OBSERVE}\"
  access_log:
    path: \"{}\"
l7:
  workers: 2
  certificates:
    - {{id: site, names: [observe.test], cert: {d}/site.pem, key: {d}/site.key}}
  listeners:
    - name: web
      address: \"{PROXY}\"
    - name: secure
      address: \"{SECURE}\"
      tls: {{certificates: [site]}}
  rate_limits:
    - {{name: tight, key: \"$src_ip\", rate: 1/h, burst: 0, allowance: 0}}
  routes:
    - id: limited
      paths: [\"/limited\"]
      upstream: pool
      rate_limits: [tight]
    - id: dead
      paths: [\"/dead\"]
      upstream: dead
    - id: cached
      paths: [\"/cached\"]
      upstream: pool
      cache: true
    - id: all
      paths: [\"/*\"]
      upstream: pool
  upstreams:
    - id: pool
      nodes:
        - {{address: \"{B1}\"}}
        - {{address: \"{B2}\"}}
      health_check: {{type: tcp, interval: 200ms, timeout: 150ms, healthy_threshold: 1, unhealthy_threshold: 1}}
    - id: dead
      nodes:
        - {{address: \"{DEAD}\"}}
",
        log.display(),
        d = cert_dir.display()
    )
}

/// A backend: `/cached` is cacheable for a minute, `/fail` is a 503, the
/// rest a 200 naming the backend. Stops (closing its port) on `stop`.
fn backend(ns: &Netns, addr: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let mut conns = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                let Ok(Ok((stream, _))) = accepted else {
                    continue;
                };
                conns.push(tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| async move {
                        let mut resp = Response::new(Full::new(Bytes::from(addr)));
                        // What xlb passed on, for the client to check.
                        for (from, to) in [
                            ("x-request-id", "x-seen-id"),
                            ("traceparent", "x-seen-trace"),
                        ] {
                            if let Some(v) = req.headers().get(from) {
                                resp.headers_mut().insert(to, v.clone());
                            }
                        }
                        match req.uri().path() {
                            "/cached" => {
                                resp.headers_mut()
                                    .insert("cache-control", "max-age=60".parse().unwrap());
                            }
                            "/fail" => *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
                            _ => {}
                        }
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }));
            }
            // Gone for real: open connections close too.
            for c in conns {
                c.abort();
            }
        });
    })
}

/// What a client saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    status: u16,
    /// `x-xlb-error`, when xlb answered with an error.
    error: Option<String>,
    cache: Option<String>,
}

type Log = Arc<Mutex<HashMap<String, Seen>>>;

/// Sends `paths` in order on one keep-alive connection, each with its own `X-Request-Id` `<prefix>-<n>`.
fn client(ns: &Netns, prefix: String, paths: Vec<String>, seen: Log) -> JoinHandle<()> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let proxy: SocketAddr = PROXY.parse().unwrap();
            let mut sender = None;
            for (n, path) in paths.into_iter().enumerate() {
                if sender.is_none() {
                    let stream = tokio::net::TcpStream::connect(proxy)
                        .await
                        .expect("connect");
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    sender = Some(s);
                }
                let s = sender.as_mut().unwrap();
                let id = format!("{prefix}-{n}");
                let req = Request::get(path.as_str())
                    .header("host", "observe.test")
                    .header("x-request-id", &id)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                };
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => panic!("{id} {path}: {e}"),
                };
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_string())
                };
                assert_eq!(header("x-request-id").as_deref(), Some(id.as_str()));
                let from_node =
                    header("x-xlb-error").is_none() && header("x-cache").as_deref() != Some("HIT");
                if from_node {
                    // The node got the request id and a W3C traceparent.
                    assert_eq!(header("x-seen-id").as_deref(), Some(id.as_str()));
                    let tp = header("x-seen-trace").expect("traceparent sent to the node");
                    let parts: Vec<&str> = tp.split('-').collect();
                    assert!(
                        parts.len() == 4
                            && parts[0] == "00"
                            && parts[1].len() == 32
                            && parts[2].len() == 16,
                        "{tp}"
                    );
                }
                let record = Seen {
                    path: path.clone(),
                    status: resp.status().as_u16(),
                    error: header("x-xlb-error"),
                    cache: header("x-cache"),
                };
                let _ = resp.into_body().collect().await;
                seen.lock().unwrap().insert(id, record);
            }
        });
    })
}

/// Runs `cmd` with a deadline; its stdout, or a panic with what it said.
fn run(mut cmd: Command, timeout: Duration, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = guard.child_mut().try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read as _;
            let c = guard.child_mut();
            c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(status.success(), "{what}: {status}\n{out}\n{err}");
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no answer within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Samples of a text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn curl(ns: &Netns, url: &str) -> String {
    let mut c = ns.command("curl");
    c.args(["-sS", "--max-time", "5", url]);
    run(c, Duration::from_secs(10), &format!("curl {url}"))
}

/// Headless Chromium in `ns`: the DOM of `url` after load, and a
/// screenshot at phone width into `shot`.
fn chromium(ns: &Netns, profile: &Path, url: &str, shot: Option<&Path>) -> String {
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            // Root in a test namespace: Chromium's sandbox needs user
            // namespaces it cannot have here.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    };
    if let Some(shot) = shot {
        let mut c = ns.command("chromium");
        base(&mut c);
        c.arg("--window-size=412,1100")
            .arg(format!("--screenshot={}", shot.display()))
            .arg(url);
        run(c, Duration::from_secs(60), "chromium --screenshot");
    }
    let mut c = ns.command("chromium");
    base(&mut c);
    c.arg("--dump-dom").arg(url);
    run(c, Duration::from_secs(60), "chromium --dump-dom")
}

/// The status page's table row of node `addr`, as markup.
fn node_row(addr: &str, health: &str) -> String {
    let span = if health == "up" {
        r#"<span class="up">up</span>"#
    } else {
        r#"<span class="down">DOWN</span>"#
    };
    format!("<td>pool</td><td>{addr}</td><td>1</td><td>{span}</td>")
}

#[test]
fn metrics_access_log_and_status_page_follow_real_traffic() {
    if !privileged("observe::metrics_access_log_and_status_page_follow_real_traffic") {
        return;
    }
    let ns = Netns::new("observe").expect("namespace");
    ns.up("lo").expect("lo up");
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("access.log");
    let stop_b1 = Arc::new(AtomicBool::new(false));
    let stop_b2 = Arc::new(AtomicBool::new(false));
    let b1 = backend(&ns, B1, stop_b1.clone());
    let b2 = backend(&ns, B2, stop_b2.clone());
    std::thread::sleep(Duration::from_millis(200));
    let site = rcgen::generate_simple_self_signed(vec!["observe.test".to_string()]).unwrap();
    std::fs::write(dir.path().join("site.pem"), site.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("site.key"),
        site.signing_key.serialize_pem(),
    )
    .unwrap();
    let xlb = Xlb::start_l7(&ns, &config(&log_path, dir.path())).expect("xlb starts");

    // Load, with the log rotated under it.
    let seen: Log = Arc::default();
    let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
        .map(|c| {
            let paths = (0..PER_CLIENT).map(|i| format!("/p/{c}/{i}")).collect();
            client(&ns, format!("c{c}"), paths, seen.clone())
        })
        .collect();
    let pid = nix::unistd::Pid::from_raw(xlb.pid() as i32);
    let mut rotated = Vec::new();
    for r in 1..=ROTATIONS {
        // Each rotation once another share of the load is answered, so
        // that every file gets lines however fast the machine is.
        let due = r * CLIENTS * PER_CLIENT / (ROTATIONS + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().len() < due && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer reopens on SIGUSR1 from its own thread: the previous
        // rotation's new file may not exist yet (bounded wait).
        let reopened = Instant::now() + Duration::from_secs(10);
        while !log_path.exists() && Instant::now() < reopened {
            std::thread::sleep(Duration::from_millis(5));
        }
        let to = dir.path().join(format!("access.log.{r}"));
        std::fs::rename(&log_path, &to).expect("rotate");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).expect("SIGUSR1");
        rotated.push(to);
    }
    for c in clients {
        c.join().expect("client");
    }
    // The mix whose counters are checked one by one.
    let mut mix = Vec::new();
    mix.extend((0..7).map(|_| "/fail".to_string()));
    mix.extend((0..5).map(|_| "/dead".to_string()));
    mix.extend((0..3).map(|_| "/cached".to_string()));
    mix.extend((0..4).map(|_| "/limited".to_string()));
    client(&ns, "m".into(), mix, seen.clone())
        .join()
        .expect("mix client");
    // TLS: three requests (curl, certificate not verified: it is
    // self-signed), and one connection that speaks plain HTTP to the TLS
    // port, a failed handshake.
    for i in 0..3 {
        let id = format!("tls-{i}");
        let path = format!("/tls/{i}");
        let mut c = ns.command("curl");
        c.args([
            "-sSk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["--resolve", "observe.test:18443:127.0.0.1", "-H"])
        .arg(format!("x-request-id: {id}"))
        .arg(format!("https://observe.test:18443{path}"));
        let code = run(c, Duration::from_secs(10), "curl https");
        assert_eq!(code, "200");
        let record = Seen {
            path,
            status: 200,
            error: None,
            cache: None,
        };
        seen.lock().unwrap().insert(id, record);
    }
    ns.enter(|| {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(SECURE).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: observe.test\r\n\r\n")
            .unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    })
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let total = seen.len();
    assert_eq!(total, CLIENTS * PER_CLIENT + 19 + 3);
    let count = |f: &dyn Fn(&Seen) -> bool| seen.values().filter(|s| f(s)).count() as f64;

    // /metrics: promtool accepts it, and the counters say what the clients saw.
    let text = curl(&ns, &format!("http://{OBSERVE}/metrics"));
    let prom = dir.path().join("metrics.txt");
    std::fs::write(&prom, &text).unwrap();
    let mut promtool = Command::new("promtool");
    promtool
        .args(["check", "metrics"])
        .stdin(File::open(&prom).unwrap());
    run(promtool, Duration::from_secs(30), "promtool check metrics");
    let m = samples(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{text}"))
    };
    let req_on = |listener: &str, route: &str, upstream: &str, code: &str| {
        get(&format!(
            "xlb_http_requests_total{{listener=\"{listener}\",route=\"{route}\",upstream=\"{upstream}\",code=\"{code}\"}}"
        ))
    };
    let req = |route: &str, upstream: &str, code: &str| req_on("web", route, upstream, code);
    let ok_all = count(&|s| s.path.starts_with("/p/") && s.status == 200);
    assert_eq!(
        ok_all,
        (CLIENTS * PER_CLIENT) as f64,
        "every load request got 200"
    );
    assert_eq!(req("all", "pool", "2xx"), ok_all);
    assert_eq!(
        req("all", "pool", "5xx"),
        count(&|s| s.path == "/fail" && s.status == 503)
    );
    assert_eq!(req("all", "pool", "5xx"), 7.0);
    assert_eq!(req("dead", "dead", "5xx"), 5.0);
    assert_eq!(req("cached", "pool", "2xx"), 3.0);
    let dead_reason = seen
        .values()
        .find(|s| s.path == "/dead")
        .and_then(|s| s.error.clone())
        .expect("xlb names its 502");
    assert_eq!(
        get(&format!(
            "xlb_http_errors_total{{reason=\"{dead_reason}\"}}"
        )),
        5.0
    );
    let limited = |status: u16| count(&|s| s.path == "/limited" && s.status == status);
    assert_eq!(
        (limited(200), limited(429)),
        (1.0, 3.0),
        "one in, the rest refused"
    );
    let verdict = |v: &str| {
        get(&format!(
            "xlb_http_rate_limit_verdicts_total{{route=\"limited\",verdict=\"{v}\"}}"
        ))
    };
    assert_eq!(verdict("forward"), limited(200));
    assert_eq!(verdict("reject"), limited(429));
    assert!(
        !text.contains("route=\"all\",verdict="),
        "no rules, no verdicts"
    );
    let hits = count(&|s| s.cache.as_deref() == Some("HIT"));
    assert_eq!(hits, 2.0, "the first /cached is a miss, the next two hits");
    assert_eq!(
        get("xlb_http_cache_responses_total{route=\"cached\",status=\"HIT\"}"),
        hits
    );
    assert_eq!(
        get("xlb_http_cache_responses_total{route=\"cached\",status=\"MISS\"}"),
        1.0
    );
    assert_eq!(
        get("xlb_http_request_duration_seconds_count{listener=\"web\"}"),
        (total - 3) as f64
    );
    assert_eq!(get("xlb_access_log_reopens_total"), ROTATIONS as f64);
    let secure = |k: &str, v: &str| format!("{{address=\"{SECURE}\",{k}=\"{v}\"}}");
    assert_eq!(
        get(&format!(
            "xlb_tls_handshakes_total{}",
            secure("version", "TLSv1.3")
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            "xlb_tls_handshake_failures_total{}",
            secure("reason", "error")
        )),
        1.0
    );
    assert_eq!(req_on("secure", "all", "pool", "2xx"), 3.0);
    assert_eq!(get("xlb_access_log_dropped_total"), 0.0);
    assert_eq!(
        get("xlb_health_up{kind=\"l7\",pool=\"pool\",node=\"127.0.0.1:18902\"}"),
        1.0
    );
    // Reloads: one that applies, one refused (observe is restart-only).
    assert_eq!(get("xlb_config_generation"), 1.0);
    let same = config(&log_path, dir.path());
    let answer = xlb.reload(&same).expect("reload answered");
    assert!(answer.starts_with("xlb reloaded generation=2"), "{answer}");
    let moved = same.replace(OBSERVE, "127.0.0.1:19191");
    let answer = xlb.reload(&moved).expect("reload answered");
    assert!(
        answer.starts_with("xlb reload failed") && answer.contains("observe"),
        "{answer}"
    );
    let after_reloads = samples(&curl(&ns, &format!("http://{OBSERVE}/metrics")));
    assert_eq!(after_reloads.get("xlb_config_generation"), Some(&2.0));
    assert_eq!(
        after_reloads.get("xlb_config_reloads_total{outcome=\"ok\"}"),
        Some(&1.0)
    );
    assert_eq!(
        after_reloads.get("xlb_config_reloads_total{outcome=\"error\"}"),
        Some(&1.0)
    );
    // Put the file back as running, for what follows.
    assert!(xlb
        .reload(&same)
        .unwrap()
        .starts_with("xlb reloaded generation=3"));
    // Prometheus itself asks for OpenMetrics, and gets it.
    let mut c = ns.command("curl");
    c.args([
        "-sS",
        "-H",
        "accept: application/openmetrics-text; version=1.0.0",
    ])
    .arg(format!("http://{OBSERVE}/metrics"));
    let om = run(c, Duration::from_secs(10), "curl openmetrics");
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    // The access log: every request exactly once, across the rotations.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut files = rotated.clone();
    files.push(log_path.clone());
    let lines = loop {
        let lines: Vec<String> = files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        if lines.len() >= total || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let non_empty = files
        .iter()
        .filter(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false))
        .count();
    assert!(
        non_empty >= 2,
        "rotation wrote into more than one file: {non_empty}"
    );
    let mut by_id: HashMap<String, serde_json::Value> = HashMap::new();
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert_eq!(v.as_object().unwrap().len(), 25, "every field, always: {l}");
        let id = v["request_id"].as_str().unwrap().to_string();
        assert!(by_id.insert(id.clone(), v).is_none(), "{id} logged twice");
    }
    assert_eq!(lines.len(), total, "one line per request");
    for (id, s) in &seen {
        let v = by_id.get(id).unwrap_or_else(|| panic!("{id} not logged"));
        assert_eq!(v["status"], s.status, "{id}");
        assert_eq!(v["path"], s.path.as_str(), "{id}");
        assert_eq!(v["method"], "GET");
        if id.starts_with("tls-") {
            assert_eq!(v["listener"], "secure");
            assert_eq!(v["tls_version"], "TLSv1.3");
            assert_eq!(v["sni"], "observe.test");
            assert_eq!(v["host"], "observe.test:18443");
        } else {
            assert_eq!(v["host"], "observe.test");
            assert_eq!(v["protocol"], "HTTP/1.1");
            assert_eq!(v["listener"], "web");
            assert!(v["tls_version"].is_null() && v["sni"].is_null());
        }
        assert_eq!(v["error"].as_str(), s.error.as_deref(), "{id}");
        assert_eq!(v["cache"].as_str(), s.cache.as_deref(), "{id}");
        assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        match s.path.as_str() {
            "/limited" => {
                assert_eq!(v["route"], "limited");
                let want = if s.status == 200 { "forward" } else { "reject" };
                assert_eq!(v["rate_limit"], want, "{id}");
            }
            "/dead" => {
                assert_eq!(v["route"], "dead");
                assert_eq!(v["node"], DEAD);
                assert!(v["first_byte_ms"].is_null());
            }
            p => {
                let from_store = s.cache.as_deref() == Some("HIT");
                assert_eq!(v["rate_limit"], "none", "{id}: the route has no rules");
                assert_eq!(v["route"], if p == "/cached" { "cached" } else { "all" });
                assert_eq!(v["upstream"], "pool");
                if !from_store {
                    let node = v["node"].as_str().unwrap();
                    assert!(node == B1 || node == B2, "{id}: node {node}");
                    assert!(v["first_byte_ms"].as_f64().is_some(), "{id}");
                    assert!(v["bytes_out"].as_u64().unwrap() > 0 || s.status == 503);
                }
            }
        }
    }

    // The status page, before and after b2 is gone.
    let profile = tempfile::tempdir().expect("chromium profile");
    let url = format!("http://{OBSERVE}/status");
    let before = chromium(&ns, profile.path(), &url, None);
    assert!(
        before.contains(&node_row(B2, "up")),
        "b2 up at first:\n{before}"
    );
    assert!(
        !before.contains(&node_row(B2, "DOWN")),
        "control: the DOWN check does not pass on a page where b2 is up"
    );
    stop_b2.store(true, Ordering::Relaxed);
    b2.join().expect("b2 stops");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&curl(&ns, &format!("http://{OBSERVE}/status.json"))).unwrap();
        let down = s["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| u["nodes"].as_array().unwrap())
            .any(|n| n["address"] == B2 && n["healthy"] == false);
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b2 not down on /status.json: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/observe-status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let after = chromium(&ns, profile.path(), &url, Some(&shot));
    assert!(
        after.contains(&node_row(B2, "DOWN")),
        "b2 DOWN after its process ended:\n{after}"
    );
    assert!(after.contains(&node_row(B1, "up")), "b1 still up:\n{after}");
    assert!(after.contains("upstream-unreachable") || after.contains(&dead_reason));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if std::env::var_os("XLB_BLESS").is_some() {
        let docs: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png");
        std::fs::copy(&shot, docs).expect("bless the screenshot");
    }

    // `xlb status` prints the same.
    let mut c = ns.command(xlb_tests::xlb::binary());
    c.args(["status", "--addr", OBSERVE]);
    let out = run(c, Duration::from_secs(10), "xlb status");
    eprintln!("xlb status:\n{out}");
    let b2_line = out
        .lines()
        .find(|l| l.contains(B2))
        .unwrap_or_else(|| panic!("no b2 line:\n{out}"));
    assert!(b2_line.contains("DOWN"), "{b2_line}");
    let b1_line = out.lines().find(|l| l.contains(B1)).expect("b1 line");
    assert!(b1_line.contains(" up "), "{b1_line}");
    assert!(out.contains(&dead_reason), "recent errors listed:\n{out}");

    drop(xlb);
    stop_b1.store(true, Ordering::Relaxed);
    let _ = b1.join();
}

/// Waits (bounded) until `sample` of `/metrics` (scraped in `ns`) reaches
/// `want`; returns the last scrape.
fn scrape_until(ns: &Netns, sample: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = curl(ns, &format!("http://{OBSERVE}/metrics"));
        let v = samples(&text).get(sample).copied().unwrap_or(0.0);
        if v >= want || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn xdp_drops_of_a_denied_source_are_counted_at_scrape_time() {
    if !privileged("observe::xdp_drops_of_a_denied_source_are_counted_at_scrape_time") {
        return;
    }
    let tag = names::unique("v");
    let suffix = tag[tag.len().saturating_sub(6)..].replace('-', "");
    let (cli_dev, lb_dev) = (format!("oc{suffix}"), format!("ol{suffix}"));
    let client = Netns::new("obscli").expect("namespace");
    let lb = Netns::new("obslb").expect("namespace");
    lb.up("lo").expect("lo up");
    veth(&client, &cli_dev, &lb, &lb_dev).expect("veth");
    client.addr(&cli_dev, "192.0.2.1/24").unwrap();
    lb.addr(&lb_dev, "192.0.2.2/24").unwrap();
    let lb_mac = lb.mac(&lb_dev).unwrap();
    let mac = lb_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    // A permanent neighbour: no ARP mixes into the counts.
    client
        .ip(&[
            "neigh",
            "replace",
            "192.0.2.2",
            "lladdr",
            &mac,
            "dev",
            &cli_dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    let xlb = Xlb::start(
        &lb,
        &format!(
            "interfaces:\n  - name: {lb_dev}\n    xdp_mode: native\nobserve:\n  listen: \"{OBSERVE}\"\n"
        ),
    )
    .expect("xlb starts");
    let send = |n: usize| {
        client
            .enter(|| {
                let s = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
                for _ in 0..n {
                    s.send_to(b"hello", "192.0.2.2:9").unwrap();
                }
            })
            .unwrap();
    };
    let denied = r#"xlb_xdp_packets_total{action="drop",reason="drop_denied"}"#;
    let passed = r#"xlb_xdp_packets_total{action="pass",reason="pass_not_vip"}"#;

    // Control: before the deny, the same frames pass and none is dropped.
    send(20);
    let text = scrape_until(&lb, passed, 20.0);
    let m = samples(&text);
    assert!(m.get(passed).copied().unwrap_or(0.0) >= 20.0, "{text}");
    assert_eq!(
        m.get(denied).copied(),
        Some(0.0),
        "nothing denied yet:\n{text}"
    );

    let mut list = DenyList::open(&xlb.pin_dir).expect("the pinned deny list");
    list.deny(
        Prefix::host("192.0.2.1".parse().unwrap()),
        Duration::from_secs(600),
        7,
    )
    .expect("deny");
    send(37);
    let text = scrape_until(&lb, denied, 37.0);
    // Settle, then once more: exactly, no overshoot.
    std::thread::sleep(Duration::from_millis(200));
    let text2 = curl(&lb, &format!("http://{OBSERVE}/metrics"));
    assert_eq!(samples(&text2).get(denied).copied(), Some(37.0), "{text}");
    let prom = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prom.path(), &text2).unwrap();
    let mut promtool = Command::new("promtool");
    promtool
        .args(["check", "metrics"])
        .stdin(File::open(prom.path()).unwrap());
    run(promtool, Duration::from_secs(30), "promtool check metrics");

    // The denied source on the status page (published every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s: serde_json::Value =
            serde_json::from_str(&curl(&lb, &format!("http://{OBSERVE}/status.json"))).unwrap();
        if s["denied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["prefix"] == "192.0.2.1/32")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "192.0.2.1/32 not on /status.json: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = curl(&lb, &format!("http://{OBSERVE}/metrics"));
    assert_eq!(samples(&text).get("xlb_denied_sources").copied(), Some(1.0));
    drop(list);
    drop(xlb);
}
