//! Active and passive health against real sockets on 127.0.0.1.
//!
//! Probe counts are exact, not timed: each probe result and the event it
//! causes carry the same instant, so "unhealthy after exactly N failed
//! probes" is read from the ordered probe log (TCP) or from the arrival
//! times the backend recorded (HTTP). Passive tests drive time explicitly
//! (`record_at`, `tick`), except one that checks the real driver task.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{broadcast, mpsc},
    task::JoinHandle,
};
use xlb::health::{
    eligible, Backoff, CheckKind, CheckSpec, CheckerConfig, ErrorRateRule, EventSource,
    FailureKind, Health, HealthChecker, HealthEvent, HealthView, HttpCheck, InitialState, Outcome,
    PassiveConfig, PassiveState, PassiveTracker, ProbeResult, SpecError, StatusSet, Target,
    TlsCheck,
};

/// Upper bound on any wait in these tests (they normally take milliseconds).
const WAIT: Duration = Duration::from_secs(10);

fn fast(kind: CheckKind, initial: InitialState) -> CheckSpec {
    CheckSpec {
        kind,
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        jitter_percent: 10,
        initial,
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no health event in time")
        .expect("event channel closed")
}

/// Probe results of `target` received so far, up to the one completed at
/// `at` (which was sent before the event of that instant).
fn results_until(
    rx: &mut broadcast::Receiver<ProbeResult>,
    target: &str,
    at: Instant,
) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    // Bounded by the channel's content; the result at `at` is in it.
    loop {
        let r = rx.try_recv().expect("probe result of the event is missing");
        if r.target != target {
            continue;
        }
        let last = r.at == at;
        out.push(r);
        if last {
            return out;
        }
    }
}

/// Number of results at the end of `results` with `ok == ok`, in a row.
fn trailing(results: &[ProbeResult], ok: bool) -> usize {
    results.iter().rev().take_while(|r| r.ok == ok).count()
}

/// A TCP listener on `addr` (port reuse allowed, to come back on the same
/// port) that accepts and drops connections until its task is aborted.
fn tcp_backend(addr: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(64).unwrap();
    let local = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Ends when aborted (which drops the listener).
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        }
    });
    (local, task)
}

#[tokio::test]
async fn tcp_target_goes_down_and_up_after_exact_thresholds() {
    let (addr, backend) = tcp_backend("127.0.0.1:0".parse().unwrap());
    let (tx, mut events) = mpsc::unbounded_channel();
    let checker = HealthChecker::new(CheckerConfig::default(), tx);
    let mut probes = checker.subscribe_probes();
    let spec = fast(CheckKind::Tcp, InitialState::Unhealthy);
    checker
        .set_targets(vec![Target::new("l4/web/b1", addr, spec)])
        .unwrap();

    // Starts unhealthy, announced.
    let ev = next_event(&mut events).await;
    assert_eq!((ev.target.as_str(), ev.healthy), ("l4/web/b1", false));
    assert_eq!(ev.source, EventSource::Active);
    assert!(!checker.is_eligible("l4/web/b1"));

    // Up after exactly healthy_threshold (2) successful probes.
    let ev = next_event(&mut events).await;
    assert!(ev.healthy, "{ev:?}");
    let log = results_until(&mut probes, "l4/web/b1", ev.at);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|r| r.ok));
    assert_eq!(checker.state("l4/web/b1").unwrap().health, Health::Healthy);

    // The listener goes away: down after exactly unhealthy_threshold (3)
    // failed probes (a probe in flight at the drop may still pass).
    backend.abort();
    let _ = backend.await;
    let ev = next_event(&mut events).await;
    assert!(!ev.healthy, "{ev:?}");
    assert!(
        ev.reason.contains("3 consecutive failed checks"),
        "{}",
        ev.reason
    );
    assert!(ev.reason.contains("connect"), "{}", ev.reason);
    let log = results_until(&mut probes, "l4/web/b1", ev.at);
    assert_eq!(trailing(&log, false), 3, "{log:?}");
    assert_eq!(log.len(), 3 + trailing(&log[..log.len() - 3], true));
    let state = checker.state("l4/web/b1").unwrap();
    assert_eq!(state.health, Health::Unhealthy);
    assert_eq!(state.consecutive_failures, 3);

    // Back on the same port: up after exactly 2 successes.
    let (_, backend) = tcp_backend(addr);
    let ev = next_event(&mut events).await;
    assert!(ev.healthy, "{ev:?}");
    let log = results_until(&mut probes, "l4/web/b1", ev.at);
    assert_eq!(trailing(&log, true), 2, "{log:?}");
    assert!(log[..log.len() - 2].iter().all(|r| !r.ok), "{log:?}");
    backend.abort();
}

/// What the HTTP backend answers; the phase is recorded with each request.
struct HttpBackend {
    phase: AtomicU32,
    /// (arrival, phase, request head)
    seen: Mutex<Vec<(Instant, u32, String)>>,
}

/// Phase → (status, body).
fn answer(phase: u32) -> (u16, &'static str) {
    match phase {
        0 | 2 => (200, "status: ok"),
        1 => (500, "status: ok"),
        _ => (200, "status: degraded"),
    }
}

async fn serve_http(stream: TcpStream, backend: Arc<HttpBackend>) {
    let mut stream = stream;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Bounded: at most 16 KiB of head.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let phase = backend.phase.load(Ordering::SeqCst);
    backend.seen.lock().unwrap().push((
        Instant::now(),
        phase,
        String::from_utf8_lossy(&head).into_owned(),
    ));
    let (status, body) = answer(phase);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn http_backend() -> (SocketAddr, Arc<HttpBackend>, JoinHandle<()>) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std).unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = Arc::new(HttpBackend {
        phase: AtomicU32::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let b = Arc::clone(&backend);
    let task = tokio::spawn(async move {
        // Ends when aborted.
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_http(stream, Arc::clone(&b)));
            }
        }
    });
    (addr, backend, task)
}

/// Requests the backend saw in `phase` before `at`.
fn requests_in(backend: &HttpBackend, phase: u32, before: Instant) -> usize {
    backend
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, p, _)| *p == phase && *t < before)
        .count()
}

#[tokio::test]
async fn http_check_judges_status_and_body_counting_at_the_server() {
    let (addr, backend, server) = http_backend();
    let (tx, mut events) = mpsc::unbounded_channel();
    let checker = HealthChecker::new(CheckerConfig::default(), tx);
    let http = HttpCheck {
        path: "/healthz?full=1".to_string(),
        host: Some("svc.internal".to_string()),
        expected: "200-299,304".parse().unwrap(),
        body_contains: Some("ok".to_string()),
    };
    let spec = fast(CheckKind::Http(http), InitialState::HealthyUntilFirstCheck);
    checker
        .set_targets(vec![Target::new("l7/api/n1", addr, spec)])
        .unwrap();

    // First check passes: already eligible, so no event; wait for it.
    let deadline = Instant::now() + WAIT;
    while checker.state("l7/api/n1").unwrap().probes == 0 {
        assert!(Instant::now() < deadline, "no probe");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = checker.state("l7/api/n1").unwrap();
    assert_eq!(state.health, Health::Healthy);
    assert!(!state.pending_first_check);
    {
        let seen = backend.seen.lock().unwrap();
        let head = &seen[0].2;
        assert!(
            head.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("host: svc.internal\r\n"),
            "{head}"
        );
    }

    // 500: unhealthy after exactly 3 requests answered 500.
    backend.phase.store(1, Ordering::SeqCst);
    let ev = next_event(&mut events).await;
    assert!(!ev.healthy, "{ev:?}");
    assert!(
        ev.reason.contains("HTTP status 500 not in 200-299,304"),
        "{}",
        ev.reason
    );
    assert_eq!(requests_in(&backend, 1, ev.at), 3);

    // Fixed: healthy after exactly 2 good answers.
    backend.phase.store(2, Ordering::SeqCst);
    let ev = next_event(&mut events).await;
    assert!(ev.healthy, "{ev:?}");
    assert_eq!(requests_in(&backend, 2, ev.at), 2);

    // 200 with the wrong body: unhealthy after exactly 3.
    backend.phase.store(3, Ordering::SeqCst);
    let ev = next_event(&mut events).await;
    assert!(!ev.healthy, "{ev:?}");
    assert!(
        ev.reason.contains("body does not contain \"ok\""),
        "{}",
        ev.reason
    );
    assert_eq!(requests_in(&backend, 3, ev.at), 3);
    server.abort();
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn make_ca() -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, ca_pem) = make_ca();
    let (_, other_pem) = make_ca();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["backend.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca = dir.path().join("ca.pem");
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&other_ca, other_pem).unwrap();
    Pki {
        chain: vec![leaf.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        ca,
        other_ca,
        _dir: dir,
    }
}

/// The SNI of each handshake a backend completed.
type Snis = Arc<Mutex<Vec<Option<String>>>>;

/// A TLS backend answering every request 200 "ok"; records handshakes' SNI.
fn https_backend(pki: &Pki) -> (SocketAddr, Snis, JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std).unwrap();
    let addr = listener.local_addr().unwrap();
    let snis = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&snis);
    let task = tokio::spawn(async move {
        // Ends when aborted.
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                s.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().map(str::to_string));
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, snis, task)
}

/// Waits until target `id` has completed at least one probe.
async fn first_probe(checker: &HealthChecker, id: &str) -> xlb::health::TargetStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = checker.state(id).unwrap();
        if s.probes > 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "no probe of {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn https_check_verifies_against_the_test_ca() {
    let pki = pki();
    let (addr, snis, server) = https_backend(&pki);
    let (tx, mut events) = mpsc::unbounded_channel();
    let checker = HealthChecker::new(CheckerConfig::default(), tx);
    let https = |ca: Option<&std::path::Path>, verify: bool, name: &str| {
        fast(
            CheckKind::Https {
                http: HttpCheck {
                    body_contains: Some("ok".to_string()),
                    ..HttpCheck::default()
                },
                tls: TlsCheck {
                    ca: ca.map(|p| p.to_path_buf()),
                    verify,
                    server_name: Some(name.to_string()),
                },
            },
            InitialState::UnknownUntilFirstCheck,
        )
    };
    checker
        .set_targets(vec![
            Target::new("good", addr, https(Some(&pki.ca), true, "backend.test")),
            Target::new(
                "wrong-ca",
                addr,
                https(Some(&pki.other_ca), true, "backend.test"),
            ),
            Target::new("wrong-name", addr, https(Some(&pki.ca), true, "other.test")),
            Target::new("no-verify", addr, https(None, false, "backend.test")),
        ])
        .unwrap();
    // All four start ineligible, announced.
    for _ in 0..4 {
        let ev = next_event(&mut events).await;
        assert!(!ev.healthy);
    }
    for id in ["good", "no-verify"] {
        let s = first_probe(&checker, id).await;
        assert_eq!(s.health, Health::Healthy, "{id}: {s:?}");
    }
    for id in ["wrong-ca", "wrong-name"] {
        let s = first_probe(&checker, id).await;
        assert_eq!(s.health, Health::Unhealthy, "{id}: {s:?}");
        let err = s.last_error.unwrap();
        assert!(
            err.starts_with("TLS: invalid peer certificate"),
            "{id}: {err}"
        );
    }
    assert!(snis
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.as_deref() == Some("backend.test")));

    // Verification on without a CA is refused up front; nothing changes.
    let err = checker
        .set_targets(vec![Target::new(
            "x",
            addr,
            https(None, true, "backend.test"),
        )])
        .unwrap_err();
    assert!(matches!(err, SpecError::CaRequired), "{err}");
    assert!(checker.state("good").is_some());
    server.abort();
}

#[tokio::test]
async fn set_targets_keeps_the_state_of_staying_targets() {
    let (up, backend) = tcp_backend("127.0.0.1:0".parse().unwrap());
    // A port with nothing listening: bound, then released.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, mut events) = mpsc::unbounded_channel();
    let checker = HealthChecker::new(CheckerConfig::default(), tx);
    let spec = fast(CheckKind::Tcp, InitialState::Unhealthy);
    let a = Target::new("a", up, spec.clone());
    let b = Target::new("b", down, spec.clone());
    checker.set_targets(vec![a.clone(), b.clone()]).unwrap();
    // Two announcements (both start unhealthy), then a comes up.
    let mut seen = Vec::new();
    while !seen.contains(&("a".to_string(), true)) {
        let ev = next_event(&mut events).await;
        seen.push((ev.target, ev.healthy));
    }
    assert!(seen.contains(&("b".to_string(), false)));
    let before = checker.state("a").unwrap();
    assert_eq!(before.health, Health::Healthy);

    // a stays unchanged, b goes, c comes.
    let c = Target::new("c", up, spec.clone());
    checker.set_targets(vec![a.clone(), c.clone()]).unwrap();
    let after = checker.state("a").unwrap();
    assert_eq!(after.health, Health::Healthy);
    assert_eq!(after.since, before.since);
    assert!(after.probes >= before.probes);
    assert!(checker.state("b").is_none());
    assert!(checker.is_eligible("b"), "an unchecked target is eligible");
    let ev = next_event(&mut events).await;
    assert_eq!((ev.target.as_str(), ev.healthy), ("c", false));

    // a's spec changes: restarted, state kept (no event, still healthy).
    let mut a2 = a.clone();
    a2.spec.interval = Duration::from_millis(40);
    a2.spec.unhealthy_threshold = 5;
    checker.set_targets(vec![a2.clone(), c.clone()]).unwrap();
    let kept = checker.state("a").unwrap();
    assert_eq!(kept.health, Health::Healthy);
    assert_eq!(kept.since, before.since);
    assert!(kept.probes >= after.probes);

    // Invalid sets change nothing.
    let dup = checker
        .set_targets(vec![a2.clone(), a2.clone()])
        .unwrap_err();
    assert!(matches!(dup, SpecError::DuplicateTarget(_)), "{dup}");
    let mut bad = c.clone();
    bad.spec.healthy_threshold = 0;
    assert!(checker.set_targets(vec![bad]).is_err());
    assert!(checker.state("a").is_some() && checker.state("c").is_some());

    // c comes up; no event ever names b again.
    let ev = next_event(&mut events).await;
    assert_eq!((ev.target.as_str(), ev.healthy), ("c", true));
    assert!(events.try_recv().is_err());
    let statuses = checker.statuses();
    let ids: Vec<&str> = statuses.iter().map(|(t, _)| t.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    backend.abort();
}

fn passive(
    config: PassiveConfig,
    n: usize,
) -> (PassiveTracker, mpsc::UnboundedReceiver<HealthEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ids = (0..n).map(|i| format!("n{i}")).collect();
    (PassiveTracker::new(ids, config, tx).unwrap(), rx)
}

const FAIL: Outcome = Outcome::Failure(FailureKind::Status(503));
const OK: Outcome = Outcome::Success;

#[test]
fn passive_ejects_after_consecutive_failures_and_readmits_on_probation() {
    let config = PassiveConfig {
        consecutive_failures: Some(3),
        error_rate: None,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(100),
        backoff: Backoff::Linear,
        max_ejection_percent: 50,
    };
    let (t, mut rx) = passive(config, 3);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);

    // Two failures, a success, two failures: never three in a row.
    for o in [FAIL, FAIL, OK, FAIL, FAIL] {
        t.record_at(0, o, at(0));
    }
    assert!(!t.is_ejected(0));
    assert!(rx.try_recv().is_err());
    t.record_at(0, FAIL, at(0));
    assert!(t.is_ejected(0));
    let ev = rx.try_recv().unwrap();
    assert_eq!(
        (ev.target.as_str(), ev.healthy, ev.source),
        ("n0", false, EventSource::Passive)
    );
    assert!(
        ev.reason
            .contains("ejected for 10s (ejection 1): 3 consecutive failures (last: HTTP 503)"),
        "{}",
        ev.reason
    );
    assert_eq!(
        t.status(0, at(0)).state,
        PassiveState::Ejected { until: at(10) }
    );
    // Outcomes of requests still in flight change nothing.
    t.record_at(0, OK, at(1));
    assert!(t.is_ejected(0));

    // Readmitted when the ejection is over, not before.
    assert_eq!(t.next_readmission(), Some(at(10)));
    assert_eq!(t.tick(at(9)), 0);
    assert_eq!(t.tick(at(10)), 1);
    let ev = rx.try_recv().unwrap();
    assert!(ev.healthy && ev.reason.contains("probation"), "{ev:?}");
    assert_eq!(t.status(0, at(10)).state, PassiveState::Probation);

    // A failure on probation ejects at once, for longer (linear: 2 × 10 s).
    t.record_at(0, FAIL, at(11));
    assert_eq!(
        t.status(0, at(11)).state,
        PassiveState::Ejected { until: at(31) }
    );
    assert!(rx
        .try_recv()
        .unwrap()
        .reason
        .contains("(ejection 2): failed on probation"));
    assert_eq!(t.tick(at(31)), 1);
    let _ = rx.try_recv().unwrap();

    // One success on probation keeps it; later failures count from zero.
    t.record_at(0, OK, at(32));
    assert_eq!(t.status(0, at(32)).state, PassiveState::Admitted);
    t.record_at(0, FAIL, at(33));
    t.record_at(0, FAIL, at(33));
    assert!(!t.is_ejected(0));
    t.record_at(0, FAIL, at(33));
    // Third ejection: 30 s (the backoff remembers, it was admitted < 100 s).
    assert_eq!(
        t.status(0, at(33)).state,
        PassiveState::Ejected { until: at(63) }
    );
    assert_eq!(t.status(0, at(33)).times_ejected, 3);
    assert_eq!(t.tick(at(63)), 1);
    t.record_at(0, OK, at(64));
    // Admitted for the whole max_ejection (100 s): the backoff starts over.
    for _ in 0..3 {
        t.record_at(0, FAIL, at(164));
    }
    assert_eq!(
        t.status(0, at(164)).state,
        PassiveState::Ejected { until: at(174) }
    );
    assert_eq!(t.status(0, at(164)).times_ejected, 1);
}

#[test]
fn passive_error_rate_rule() {
    let config = PassiveConfig {
        consecutive_failures: None,
        error_rate: Some(ErrorRateRule {
            percent: 50,
            min_requests: 10,
            window: Duration::from_secs(10),
        }),
        max_ejection_percent: 100,
        ..PassiveConfig::default()
    };
    let (t, mut rx) = passive(config, 3);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    // Node 0: alternating; 5 of 10 is not above 50 %, 6 of 11 is.
    for i in 0..10 {
        t.record_at(0, if i % 2 == 0 { OK } else { FAIL }, at(i * 100));
    }
    assert!(!t.is_ejected(0));
    t.record_at(0, FAIL, at(1000));
    assert!(t.is_ejected(0));
    let ev = rx.try_recv().unwrap();
    assert!(
        ev.reason
            .contains("6 of 11 requests failed in the last 10s (above 50%"),
        "{}",
        ev.reason
    );

    // Node 1: nine failures are below min_requests; the tenth ejects.
    for _ in 0..9 {
        t.record_at(1, FAIL, at(0));
    }
    assert!(!t.is_ejected(1));
    t.record_at(1, FAIL, at(0));
    assert!(t.is_ejected(1));
    let _ = rx.try_recv().unwrap();

    // Node 2: nine failures, then the window slides past them: 1 of 10.
    for _ in 0..9 {
        t.record_at(2, FAIL, at(0));
    }
    for _ in 0..9 {
        t.record_at(2, OK, at(11_000));
    }
    t.record_at(2, FAIL, at(11_000));
    let s = t.status(2, at(11_000));
    assert_eq!((s.window_requests, s.window_failures), (10, 1));
    assert!(!t.is_ejected(2));
    assert!(rx.try_recv().is_err());
}

#[test]
fn passive_max_ejection_guard() {
    let config = |pct| PassiveConfig {
        consecutive_failures: Some(2),
        error_rate: None,
        max_ejection_percent: pct,
        ..PassiveConfig::default()
    };
    let now = Instant::now();
    let fail = |t: &PassiveTracker, node| {
        for _ in 0..5 {
            t.record_at(node, FAIL, now);
        }
    };

    // Two nodes at 50 %: one may go, not the other.
    let (t, mut rx) = passive(config(50), 2);
    fail(&t, 0);
    fail(&t, 1);
    assert!(t.is_ejected(0) && !t.is_ejected(1));
    assert!(t.status(1, now).blocked_ejections > 0);
    assert_eq!(rx.try_recv().unwrap().target, "n0");
    assert!(rx.try_recv().is_err());

    // 10 % of 3 rounds to 0, yet one node may always go (as in Envoy).
    let (t, _rx) = passive(config(10), 3);
    fail(&t, 2);
    fail(&t, 1);
    assert!(t.is_ejected(2) && !t.is_ejected(1));

    // A pool of one: its only node is never ejected below 100 %.
    let (t, _rx) = passive(config(99), 1);
    fail(&t, 0);
    assert!(!t.is_ejected(0));
    let (t, _rx) = passive(config(100), 1);
    fail(&t, 0);
    assert!(t.is_ejected(0));

    // 100 %: the whole pool may go.
    let (t, _rx) = passive(config(100), 3);
    (0..3).for_each(|n| fail(&t, n));
    assert!((0..3).all(|n| t.is_ejected(n)));

    // Nodes the active checker holds down count as not serving: with n1
    // down and n0 ejected, n2 is the last serving node and stays.
    let (t, _rx) = passive(config(90), 3);
    assert!(t.set_active_healthy("n1", false));
    assert!(!t.set_active_healthy("nope", false));
    fail(&t, 0);
    fail(&t, 2);
    assert!(t.is_ejected(0) && !t.is_ejected(2));
    // n1 back up: n2 may go now.
    t.set_active_healthy("n1", true);
    fail(&t, 2);
    assert!(t.is_ejected(2));
}

#[tokio::test]
async fn passive_driver_readmits_in_real_time_and_reload_keeps_state() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let config = PassiveConfig {
        consecutive_failures: Some(1),
        error_rate: None,
        base_ejection: Duration::from_millis(100),
        max_ejection: Duration::from_secs(1),
        backoff: Backoff::Exponential,
        max_ejection_percent: 50,
    };
    let ids = vec!["a".to_string(), "b".to_string()];
    let t = Arc::new(PassiveTracker::new(ids, config, tx.clone()).unwrap());
    let driver = t.spawn_driver();
    let ejected_at = Instant::now();
    t.record(0, Outcome::Failure(FailureKind::Connect));
    assert!(!next_event(&mut rx).await.healthy);
    let ev = next_event(&mut rx).await;
    assert!(ev.healthy && ev.target == "a", "{ev:?}");
    assert!(ev.at >= ejected_at + Duration::from_millis(100));

    // A reload keeps "a"'s state (on probation, one ejection so far).
    let t2 = Arc::new(
        PassiveTracker::with_previous(vec!["c".into(), "a".into()], config, tx, &t).unwrap(),
    );
    drop(t);
    let s = t2.status(1, Instant::now());
    assert_eq!((s.state, s.times_ejected), (PassiveState::Probation, 1));
    assert_eq!(t2.status(0, Instant::now()).state, PassiveState::Admitted);
    // The old driver ends with its tracker.
    tokio::time::timeout(WAIT, driver).await.unwrap().unwrap();
    let _driver = t2.spawn_driver();
    t2.record(1, Outcome::Failure(FailureKind::Timeout));
    let ev = next_event(&mut rx).await;
    assert!(
        !ev.healthy && ev.reason.contains("ejected for 200ms (ejection 2)"),
        "{ev:?}"
    );
    let ev = next_event(&mut rx).await;
    assert!(ev.healthy && ev.target == "a", "{ev:?}");
}

#[test]
fn combined_view() {
    let ev = |target: &str, source, healthy| HealthEvent {
        target: target.to_string(),
        healthy,
        reason: String::new(),
        at: Instant::now(),
        source,
    };
    let mut view = HealthView::default();
    assert!(view.is_eligible("n"));
    assert_eq!(
        view.apply(&ev("n", EventSource::Passive, false)),
        Some(false)
    );
    assert_eq!(view.apply(&ev("n", EventSource::Active, false)), None);
    assert_eq!(view.verdicts("n"), (true, true));
    // Readmitted passively, still actively down.
    assert_eq!(view.apply(&ev("n", EventSource::Passive, true)), None);
    assert_eq!(view.apply(&ev("n", EventSource::Active, true)), Some(true));
    assert!(view.is_eligible("n"));
    view.apply(&ev("m", EventSource::Active, false));
    view.retain(|id| id != "m");
    assert!(view.is_eligible("m"));

    assert!(eligible(None, false));
    assert!(eligible(Some(Health::Healthy), false));
    assert!(!eligible(Some(Health::Unhealthy), false));
    assert!(!eligible(None, true));
}

#[test]
fn status_sets_and_spec_validation() {
    let s: StatusSet = "200-299, 304".parse().unwrap();
    assert!(s.contains(200) && s.contains(299) && s.contains(304));
    assert!(!s.contains(300) && !s.contains(500));
    assert_eq!(s.to_string(), "200-299,304");
    for bad in ["", "2xx", "300-200", "99", "600", "200-"] {
        assert!(bad.parse::<StatusSet>().is_err(), "{bad:?}");
    }
    assert!(StatusSet::default().contains(302));

    let d = CheckSpec::default();
    assert_eq!(
        (
            d.interval,
            d.timeout,
            d.healthy_threshold,
            d.unhealthy_threshold
        ),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
    );
    assert_eq!(d.initial, InitialState::HealthyUntilFirstCheck);
    assert!(d.validate().is_ok());
    let bad_path = CheckSpec::http(HttpCheck {
        path: "healthz".into(),
        ..HttpCheck::default()
    });
    assert!(matches!(bad_path.validate(), Err(SpecError::Path(_))));
    let bad_jitter = CheckSpec {
        jitter_percent: 60,
        ..CheckSpec::default()
    };
    assert!(bad_jitter.validate().is_err());
    assert!(PassiveConfig::default().validate().is_ok());
}
