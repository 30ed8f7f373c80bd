//! The request pipeline's middleware seen on the wire: rate limiting
//! (downstream and upstream rules, escalation), passive health fed by the
//! proxy, and cold-start holding. Real sockets on 127.0.0.1, hyper
//! backends in this process, xlb's server and proxy in front. Rate limits
//! run on a frozen manual clock so that the counts are exact (the delays
//! of delayed requests are real sleeps).
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use xlb::{
    health::{HealthEvent, PassiveConfig, PassiveState, PassiveTracker},
    l7::{
        balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
        forward::ERROR_HEADER,
        options::{
            ColdStart, RetryBudgetConfig, RetryPolicy, RouteOptions, SharedLimiter, UpstreamOptions,
        },
        proxy::{Pool, Proxy},
        ratelimit::{
            escalation_channel, HardLimit, ManualClock, Rate, RateLimiter, Rule, RuleConfig, Side,
        },
        router::{PathMatch, RouteSpec, RouteTable},
    },
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TBody = BoxBody<Bytes, BoxError>;

fn full(text: impl Into<Bytes>) -> TBody {
    Full::new(text.into()).map_err(|n| match n {}).boxed()
}

/// Serves `handler` on `listener`.
fn serve_backend<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TBody>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// What a [`recording`] backend saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    /// Bodies of non-empty requests, in arrival order.
    bodies: Mutex<Vec<Bytes>>,
}

/// A backend on `listener` answering `status` with `name`, counting its
/// requests and keeping their bodies.
fn recording(listener: TcpListener, name: &'static str, status: StatusCode) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    serve_backend(listener, move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            s.hits.fetch_add(1, Ordering::SeqCst);
            if !body.is_empty() {
                s.bodies.lock().unwrap().push(body);
            }
            let mut resp = Response::new(full(name));
            *resp.status_mut() = status;
            resp
        }
    });
    seen
}

async fn backend(name: &'static str, status: StatusCode) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, recording(listener, name, status))
}

/// Addresses nothing listens on (yet): bound together, then let go.
async fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

async fn free_addr() -> SocketAddr {
    let [a] = free_addrs().await;
    a
}

fn upstream(addrs: &[SocketAddr]) -> Arc<Upstream> {
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(id, addr)| Node {
            id,
            addr: *addr,
            weight: 1,
        })
        .collect();
    Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap())
}

fn pool_of(upstream: Arc<Upstream>, options: UpstreamOptions) -> Pool {
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    Pool::new("u", upstream, balancer, options, None).unwrap()
}

fn rr(addrs: &[SocketAddr]) -> Arc<Pool> {
    Arc::new(pool_of(upstream(addrs), UpstreamOptions::default()))
}

struct Bed {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

/// The proxy with one catch-all route with `options` to pool `u`.
async fn start(pool: Arc<Pool>, options: RouteOptions) -> Bed {
    let mut route = RouteSpec::new("r", "u");
    route.paths = vec![PathMatch::Prefix("/".into())];
    route.options = std::sync::Arc::new(options);
    let table = RouteTable::build(vec![route]).unwrap();
    let pools: HashMap<String, Arc<Pool>> = [("u".to_string(), pool)].into_iter().collect();
    let (addr, tx) = support::serve_proxy(Proxy::new(Arc::new(table), pools)).await;
    Bed { addr, _stop: tx }
}

/// What a client got.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Got {
    fn reason(&self) -> Option<&str> {
        self.headers.get(ERROR_HEADER).map(|v| v.to_str().unwrap())
    }

    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn send(addr: SocketAddr, req: Request<TBody>) -> Got {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let resp = s.send_request(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str) -> Request<TBody> {
    Request::get(path)
        .header("host", "example.com:8080")
        .body(full(""))
        .unwrap()
}

fn post(path: &str, body: Bytes) -> Request<TBody> {
    Request::post(path)
        .header("host", "example.com")
        .body(full(body))
        .unwrap()
}

/// `n` concurrent GETs.
async fn burst(addr: SocketAddr, n: usize) -> Vec<Got> {
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(send(addr, get(&format!("/x/{i}")))))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn limiter(rules: Vec<RuleConfig>) -> (SharedLimiter, Vec<Arc<Rule>>, Arc<ManualClock>) {
    let rules: Vec<Arc<Rule>> = rules
        .into_iter()
        .map(|c| Arc::new(Rule::new(c).unwrap()))
        .collect();
    let clock = Arc::new(ManualClock::new());
    let l = RateLimiter::new(rules.clone()).with_clock(clock.clone());
    (SharedLimiter(Arc::new(l)), rules, clock)
}

fn rule(name: &str, side: Side, key: &str, per_sec: u64, burst: u32) -> RuleConfig {
    let mut c = RuleConfig::new(name, side, key, Rate::per_second(per_sec).unwrap()).unwrap();
    c.burst = burst;
    c
}

// ------------------------------------------------------------ rate limits

#[tokio::test]
async fn a_burst_gets_one_at_once_plus_the_queue_and_the_rest_429() {
    let (node, seen) = backend("b", StatusCode::OK).await;
    // R = 10/s, Q = 5, no allowance (nginx `rate=10r/s burst=5`): on a
    // frozen clock one request goes at once, five wait 100..500 ms, the
    // other 44 are rejected.
    let (limit, rules, _clock) = limiter(vec![rule("per-ip", Side::Downstream, "$src_ip", 10, 5)]);
    let bed = start(
        rr(&[node]),
        RouteOptions {
            rate_limit: Some(limit),
            ..RouteOptions::default()
        },
    )
    .await;

    let t0 = Instant::now();
    let got = burst(bed.addr, 50).await;
    let ok = got.iter().filter(|g| g.status == StatusCode::OK).count();
    assert_eq!(ok, 6, "{got:?}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 6);
    let rejected: Vec<&Got> = got
        .iter()
        .filter(|g| g.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(rejected.len(), 44);
    for g in rejected {
        assert_eq!(g.reason(), Some("rate-limited"));
        // The queue drains in 600 ms: a whole second, rounded up.
        assert_eq!(g.retry_after(), Some(1));
    }
    // The last queued request waited its 500 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(490),
        "{:?}",
        t0.elapsed()
    );
    let c = rules[0].counters();
    assert_eq!((c.forwarded, c.delayed, c.rejected), (1, 5, 44));
}

#[tokio::test]
async fn an_upstream_rule_protects_each_node_and_keys_on_it() {
    let (a, seen_a) = backend("a", StatusCode::OK).await;
    let (b, seen_b) = backend("b", StatusCode::OK).await;
    // One request per node per second, no queue: with the clock frozen,
    // each node gets exactly one request whatever the number of clients.
    let (limit, rules, clock) = limiter(vec![rule("per-node", Side::Upstream, "$node", 1, 0)]);
    let bed = start(
        rr(&[a, b]),
        RouteOptions {
            rate_limit: Some(limit),
            ..RouteOptions::default()
        },
    )
    .await;

    let got = burst(bed.addr, 20).await;
    let ok = got.iter().filter(|g| g.status == StatusCode::OK).count();
    assert_eq!(ok, 2, "{got:?}");
    assert_eq!(seen_a.hits.load(Ordering::SeqCst), 1);
    assert_eq!(seen_b.hits.load(Ordering::SeqCst), 1);
    for g in got.iter().filter(|g| g.status != StatusCode::OK) {
        assert_eq!(g.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(g.reason(), Some("rate-limited"));
        assert_eq!(g.retry_after(), Some(1));
    }
    assert_eq!(rules[0].tracked_keys(), 2, "one bucket per node");

    // A second later each node takes one more.
    clock.advance(Duration::from_secs(1));
    let got = burst(bed.addr, 10).await;
    assert_eq!(got.iter().filter(|g| g.status == StatusCode::OK).count(), 2);
    assert_eq!(seen_a.hits.load(Ordering::SeqCst), 2);
    assert_eq!(seen_b.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_abusive_source_is_denied_with_the_denied_reason() {
    let (node, seen) = backend("b", StatusCode::OK).await;
    let mut c = rule("per-ip", Side::Downstream, "$src_ip", 1, 0);
    c.hard_limit = Some(HardLimit {
        rate: Rate::per_second(2).unwrap(),
        burst: 1,
        deny_for: Duration::from_secs(60),
    });
    let rules = vec![Arc::new(Rule::new(c).unwrap())];
    let (sink, mut events) = escalation_channel();
    let l = RateLimiter::new(rules.clone())
        .with_clock(Arc::new(ManualClock::new()))
        .with_escalation_sink(sink);
    let bed = start(
        rr(&[node]),
        RouteOptions {
            rate_limit: Some(SharedLimiter(Arc::new(l))),
            ..RouteOptions::default()
        },
    )
    .await;

    // 1: forwarded; 2: over the rate; 3 and 4: over the hard limit, denied.
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(send(bed.addr, get(&format!("/{i}"))).await);
    }
    assert_eq!(got[0].status, StatusCode::OK);
    assert_eq!(got[1].status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(got[1].reason(), Some("rate-limited"));
    for g in &got[2..] {
        assert_eq!(g.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(g.reason(), Some("denied"));
        assert_eq!(g.retry_after(), Some(60));
    }
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    let e = events.try_recv().expect("one escalation");
    assert_eq!(e.source, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    assert!(events.try_recv().is_err(), "one event per denial");
}

// ---------------------------------------------------------- passive health

fn tracker(n: usize) -> (Arc<PassiveTracker>, mpsc::UnboundedReceiver<HealthEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = PassiveConfig {
        consecutive_failures: Some(3),
        error_rate: None,
        ..PassiveConfig::default()
    };
    let ids = (0..n).map(|i| format!("n{i}")).collect();
    (Arc::new(PassiveTracker::new(ids, config, tx).unwrap()), rx)
}

#[tokio::test]
async fn a_node_answering_502_is_ejected_by_passive_health() {
    let (bad, seen_bad) = backend("bad", StatusCode::BAD_GATEWAY).await;
    let (good, _) = backend("good", StatusCode::OK).await;
    // A 500 is the application's answer, not a sick node.
    let (app_err, _) = backend("500", StatusCode::INTERNAL_SERVER_ERROR).await;
    let (passive, mut events) = tracker(3);
    let pool = pool_of(upstream(&[bad, good, app_err]), UpstreamOptions::default())
        .with_passive(passive.clone());
    assert!(pool.passive().is_some());
    let bed = start(Arc::new(pool), RouteOptions::default()).await;

    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(send(bed.addr, get("/")).await.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|&&s| s == 502).count(), 3);
    assert_eq!(seen_bad.hits.load(Ordering::SeqCst), 3);
    let now = std::time::Instant::now();
    assert!(matches!(
        passive.status(0, now).state,
        PassiveState::Ejected { .. }
    ));
    assert!(passive.is_ejected(0));
    for node in [1, 2] {
        let s = passive.status(node, now);
        assert_eq!(s.state, PassiveState::Admitted);
        assert_eq!(s.consecutive_failures, 0);
    }
    let e = events.try_recv().expect("an ejection event");
    assert_eq!((e.target.as_str(), e.healthy), ("n0", false));
    assert!(e.reason.contains("502"), "{}", e.reason);
}

#[tokio::test]
async fn a_refusing_node_is_recorded_even_when_retries_hide_it() {
    let dead = free_addr().await;
    let (good, seen_good) = backend("good", StatusCode::OK).await;
    let (passive, mut events) = tracker(2);
    let pool =
        pool_of(upstream(&[dead, good]), UpstreamOptions::default()).with_passive(passive.clone());
    let bed = start(Arc::new(pool), RouteOptions::default()).await;

    // Round robin sends every other request to the dead node first; the
    // retry takes it to the good one.
    for _ in 0..10 {
        let g = send(bed.addr, get("/")).await;
        assert_eq!((g.status, g.body.as_str()), (StatusCode::OK, "good"));
    }
    assert_eq!(seen_good.hits.load(Ordering::SeqCst), 10);
    assert!(passive.is_ejected(0));
    assert!(!passive.is_ejected(1));
    let e = events.try_recv().expect("an ejection event");
    assert_eq!((e.target.as_str(), e.healthy), ("n0", false));
    assert!(e.reason.contains("connect"), "{}", e.reason);
}

/// A backend that answers every request with a 200 head promising 1000
/// bytes, sends 10, and closes: the node fails after its head.
async fn breaking_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
            });
        }
    });
    addr
}

/// A node whose responses break after the head is ejected like one that
/// answers 502: each broken body is one failure (its success is only
/// recorded once a body is done), while whole bodies count as successes.
#[tokio::test]
async fn a_node_breaking_its_bodies_is_ejected_by_passive_health() {
    let broken = breaking_backend().await;
    let (good, _) = backend("good", StatusCode::OK).await;
    let (passive, mut events) = tracker(2);
    let pool = pool_of(upstream(&[broken, good]), UpstreamOptions::default())
        .with_passive(passive.clone());
    let bed = start(Arc::new(pool), RouteOptions::default()).await;
    let mut broken_bodies = 0;
    for _ in 0..6 {
        let io = TokioIo::new(TcpStream::connect(bed.addr).await.unwrap());
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = s.send_request(get("/")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        if resp.into_body().collect().await.is_err() {
            broken_bodies += 1;
        }
    }
    assert_eq!(broken_bodies, 3, "round robin: every other request");
    let now = std::time::Instant::now();
    assert!(passive.is_ejected(0), "{:?}", passive.status(0, now));
    let good = passive.status(1, now);
    assert_eq!(good.state, PassiveState::Admitted);
    assert_eq!(good.consecutive_failures, 0);
    let e = events.try_recv().expect("an ejection event");
    assert_eq!((e.target.as_str(), e.healthy), ("n0", false));
}

// -------------------------------------------------------------- cold start

fn cold(deadline: Duration) -> RouteOptions {
    RouteOptions {
        cold_start: Some(ColdStart {
            deadline,
            max_body_bytes: 1 << 20,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        }),
        // Held attempts are not retries: none is allowed here.
        retry: RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        },
        ..RouteOptions::default()
    }
}

/// A pool whose retry budget allows no retry at all.
fn no_budget(addrs: &[SocketAddr]) -> Arc<Pool> {
    let options = UpstreamOptions {
        retry_budget: RetryBudgetConfig {
            ratio: 0.0,
            min_per_sec: 0,
            window: Duration::from_secs(10),
        },
        ..UpstreamOptions::default()
    };
    Arc::new(pool_of(upstream(addrs), options))
}

fn body_of(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn requests_sent_before_the_backend_listens_are_held_until_it_does() {
    // Two nodes: one never comes up, the other binds 2 s late.
    let [never, late] = free_addrs().await;
    let bed = start(no_budget(&[never, late]), cold(Duration::from_secs(5))).await;

    let t0 = Instant::now();
    let posts = [body_of(64 * 1024, 1), body_of(10, 7)];
    let mut tasks = Vec::new();
    for (i, b) in posts.iter().enumerate() {
        tasks.push(tokio::spawn(send(
            bed.addr,
            post(&format!("/p{i}"), b.clone()),
        )));
    }
    let sender = tokio::spawn({
        let addr = bed.addr;
        async move {
            let mut tasks = Vec::new();
            while t0.elapsed() < Duration::from_secs(2) {
                tasks.push(tokio::spawn(send(addr, get("/g"))));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tasks
        }
    });
    tokio::time::sleep(Duration::from_millis(2000).saturating_sub(t0.elapsed())).await;
    let listener = TcpListener::bind(late)
        .await
        .expect("the late port is free");
    let up_at = t0.elapsed();
    let seen = recording(listener, "late", StatusCode::OK);
    tasks.extend(sender.await.unwrap());

    let n = tasks.len();
    assert!(n >= 20, "{n} requests");
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(
            (g.status, g.body.as_str()),
            (StatusCode::OK, "late"),
            "{g:?}"
        );
    }
    // Each request reached the backend exactly once, bodies intact.
    assert_eq!(seen.hits.load(Ordering::SeqCst), n);
    let mut bodies = seen.bodies.lock().unwrap().clone();
    bodies.sort_by_key(|b| b.len());
    assert_eq!(bodies, [posts[1].clone(), posts[0].clone()]);
    // Held requests retry at most `max_backoff` apart.
    assert!(
        t0.elapsed() < up_at + Duration::from_millis(1000),
        "{:?} after the backend came up",
        t0.elapsed() - up_at
    );
}

/// On tokio's paused clock: the hold's deadline and backoff are timers, so
/// the test sees exactly the deadline, not a loaded machine's lateness.
#[tokio::test(start_paused = true)]
async fn a_hold_shorter_than_the_startup_ends_in_503_cold_start_timeout() {
    let late = free_addr().await;
    let bed = start(no_budget(&[late]), cold(Duration::from_millis(500))).await;

    let t0 = tokio::time::Instant::now();
    let (g, p) = tokio::join!(
        send(bed.addr, get("/")),
        send(bed.addr, post("/", body_of(1000, 3)))
    );
    let took = t0.elapsed();
    for g in [g, p] {
        assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE, "{g:?}");
        assert_eq!(g.reason(), Some("cold-start-timeout"));
        assert_eq!(g.retry_after(), Some(1));
    }
    // The deadline, give or take one backoff step (20–200 ms).
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took <= Duration::from_millis(700), "{took:?}");

    // The backend starting afterwards sees none of them.
    let seen = recording(
        TcpListener::bind(late).await.unwrap(),
        "late",
        StatusCode::OK,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_an_unhealthy_upstream_to_recover() {
    let (node, seen) = backend("b", StatusCode::OK).await;
    let up = upstream(&[node]);
    up.set_healthy(0, false, std::time::Instant::now());
    let bed = start(
        Arc::new(pool_of(up.clone(), UpstreamOptions::default())),
        cold(Duration::from_secs(5)),
    )
    .await;

    let t0 = tokio::time::Instant::now();
    let req = tokio::spawn(send(bed.addr, post("/", body_of(5000, 9))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
    up.set_healthy(0, true, std::time::Instant::now());
    let g = req.await.unwrap();
    assert_eq!(g.status, StatusCode::OK, "{g:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(seen.bodies.lock().unwrap().clone(), [body_of(5000, 9)]);

    // Without cold start the same state is an immediate 503.
    up.set_healthy(0, false, std::time::Instant::now());
    let plain = start(
        Arc::new(pool_of(up.clone(), UpstreamOptions::default())),
        RouteOptions::default(),
    )
    .await;
    let g = send(plain.addr, get("/")).await;
    assert_eq!(g.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(g.reason(), Some("no-healthy-node"));
}

#[tokio::test]
async fn a_body_too_large_to_buffer_is_not_held() {
    let late = free_addr().await;
    let mut options = cold(Duration::from_secs(5));
    if let Some(c) = &mut options.cold_start {
        c.max_body_bytes = 100;
    }
    let bed = start(no_budget(&[late]), options).await;

    let t0 = Instant::now();
    let g = send(bed.addr, post("/", body_of(101, 0))).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY, "{g:?}");
    assert_eq!(g.reason(), Some("upstream-unreachable"));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    // A chunked body (no length) that grows past the limit: same.
    let (tx, rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, BoxError>>(4);
    let chunked = http_body_util::StreamBody::new(tokio_stream(rx)).boxed();
    let req = Request::post("/")
        .header("host", "example.com")
        .body(chunked)
        .unwrap();
    let feed = tokio::spawn(async move {
        for _ in 0..3 {
            let _ = tx.send(Ok(hyper::body::Frame::data(body_of(60, 1)))).await;
        }
    });
    let t0 = Instant::now();
    let g = send(bed.addr, req).await;
    feed.await.unwrap();
    assert_eq!(g.status, StatusCode::BAD_GATEWAY, "{g:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// A stream of a channel's items.
fn tokio_stream<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_cancels_its_hold() {
    let late = free_addr().await;
    let bed = start(no_budget(&[late]), cold(Duration::from_secs(5))).await;

    let mut s = TcpStream::connect(bed.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = recording(
        TcpListener::bind(late).await.unwrap(),
        "late",
        StatusCode::OK,
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        seen.hits.load(Ordering::SeqCst),
        0,
        "the hold outlived its client"
    );
}
