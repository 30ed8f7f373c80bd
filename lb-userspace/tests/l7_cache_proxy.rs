//! The response cache wired into the proxy, on the wire: real sockets on
//! 127.0.0.1, counting hyper backends in this process, xlb's server and
//! proxy in front (and once the whole L7 service, for reloads). What is
//! checked is what a client and the backend see: `X-Cache`, bodies, and how
//! many requests reached the backend.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use xlb::{
    config::{l7_plan, Config, ConfigError},
    l7::{
        balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
        cache::{Cache, CacheConfig, Clock, X_CACHE},
        forward::ERROR_HEADER,
        options::{RouteOptions, SharedCache, UpstreamOptions},
        proxy::{Pool, Proxy},
        router::{PathMatch, RouteSpec, RouteTable},
        service::L7Service,
    },
    net::Prefix,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TBody = BoxBody<Bytes, BoxError>;

fn full(text: impl Into<Bytes>) -> TBody {
    Full::new(text.into()).map_err(|n| match n {}).boxed()
}

// ------------------------------------------------------------------ backend

/// What the backend answers: the request (method, path, headers) and its
/// number (0 for the first) → status, headers, body.
type Answer = dyn Fn(&Method, &str, &HeaderMap, usize) -> (u16, Vec<(&'static str, String)>, String)
    + Send
    + Sync;

/// A hyper backend counting its requests (and which methods), that can be
/// killed (listener closed, every connection dropped).
struct Backend {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    methods: Arc<Mutex<Vec<Method>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    async fn start(
        delay: Duration,
        answer: impl Fn(&Method, &str, &HeaderMap, usize) -> (u16, Vec<(&'static str, String)>, String)
            + Send
            + Sync
            + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let methods = Arc::new(Mutex::new(Vec::new()));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let answer: Arc<Answer> = Arc::new(answer);
        let (c, m, t) = (calls.clone(), methods.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, m, answer) = (c.clone(), m.clone(), answer.clone());
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (c, m, answer) = (c.clone(), m.clone(), answer.clone());
                        async move {
                            let n = c.fetch_add(1, Ordering::SeqCst);
                            m.lock().unwrap().push(req.method().clone());
                            let (method, path, headers) = (
                                req.method().clone(),
                                req.uri().path().to_string(),
                                req.headers().clone(),
                            );
                            let _ = req.into_body().collect().await;
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let (status, hs, body) = answer(&method, &path, &headers, n);
                            let mut resp = Response::new(full(body));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            for (k, v) in hs {
                                resp.headers_mut().append(k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                t.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Backend {
            addr,
            calls,
            methods,
            tasks,
        }
    }

    /// Always 200 with `cache_control`, the body naming the path and the
    /// request number.
    async fn cacheable(cache_control: &'static str) -> Backend {
        Backend::start(Duration::ZERO, move |_, path, _, n| {
            (
                200,
                vec![("cache-control", cache_control.to_string())],
                format!("{path} #{n}"),
            )
        })
        .await
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn saw(&self, method: &str) -> bool {
        self.methods
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.as_str() == method)
    }

    /// Closes the listener and every connection: the proxy now gets
    /// refused connections.
    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

// ------------------------------------------------------------------ proxy

fn pool(addr: SocketAddr) -> Arc<Pool> {
    let nodes = vec![Node {
        id: 0,
        addr,
        weight: 1,
    }];
    let upstream = Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap());
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    Arc::new(Pool::new("u", upstream, balancer, UpstreamOptions::default(), None).unwrap())
}

fn loopback() -> Vec<Prefix> {
    vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()]
}

struct Bed {
    addr: SocketAddr,
    cache: Cache,
    /// The cache's clock: real time plus what the test skipped ahead.
    clock: Arc<SkippingClock>,
    _stop: watch::Sender<bool>,
}

/// Wall-clock time that a test can move forward, so that ageing an entry
/// past its freshness is an instant step, not a real sleep.
#[derive(Debug, Default)]
struct SkippingClock {
    skipped_ms: AtomicUsize,
}

impl SkippingClock {
    fn skip(&self, by: Duration) {
        self.skipped_ms
            .fetch_add(by.as_millis() as usize, Ordering::SeqCst);
    }
}

impl Clock for SkippingClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.skipped_ms.load(Ordering::SeqCst) as u64)
    }
}

/// The proxy over one backend: `/c/*` caches (purgeable from
/// `purge_from`), `/p/*` does not.
async fn start(backend: SocketAddr, purge_from: Vec<Prefix>) -> Bed {
    let clock = Arc::new(SkippingClock::default());
    let cache = Cache::new(CacheConfig {
        clock: clock.clone(),
        ..CacheConfig::default()
    });
    let mut cached = RouteSpec::new("cached", "u");
    cached.paths = vec![PathMatch::Prefix("/c/".into())];
    cached.options = std::sync::Arc::new(RouteOptions {
        cache: Some(SharedCache::new(cache.clone(), purge_from)),
        ..RouteOptions::default()
    });
    let mut plain = RouteSpec::new("plain", "u");
    plain.paths = vec![PathMatch::Prefix("/p/".into())];
    let table = RouteTable::build(vec![cached, plain]).unwrap();
    let pools: HashMap<String, Arc<Pool>> = [("u".to_string(), pool(backend))].into();
    let (addr, tx) = support::serve_proxy(Proxy::new(Arc::new(table), pools)).await;
    Bed {
        addr,
        cache,
        clock,
        _stop: tx,
    }
}

// ------------------------------------------------------------------ client

/// What a client got.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn x_cache(&self) -> &str {
        self.headers
            .get(X_CACHE)
            .map_or("", |v| v.to_str().unwrap())
    }

    fn reason(&self) -> Option<&str> {
        self.headers.get(ERROR_HEADER).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/1.1 request on a fresh connection from `from` (any port).
async fn send_from(from: Option<IpAddr>, addr: SocketAddr, req: Request<TBody>) -> Got {
    let stream = match from {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(ip, 0)).unwrap();
            sock.connect(addr).await.unwrap()
        }
    };
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
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

async fn send(addr: SocketAddr, req: Request<TBody>) -> Got {
    send_from(None, addr, req).await
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<TBody> {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("host", "example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full("")).unwrap()
}

fn get(path: &str) -> Request<TBody> {
    request("GET", path, &[])
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn a_miss_then_hits_reach_the_backend_once() {
    let be = Backend::cacheable("max-age=60").await;
    let bed = start(be.addr, loopback()).await;

    let first = send(bed.addr, get("/c/a?x=1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.body, "/c/a #0");
    for _ in 0..3 {
        let again = send(bed.addr, get("/c/a?x=1")).await;
        assert_eq!((again.status, again.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(again.body, "/c/a #0");
        assert!(again.headers.contains_key(header::AGE));
    }
    // HEAD shares the GET's entry.
    let head = send(bed.addr, request("HEAD", "/c/a?x=1", &[])).await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
    // Another query is another key.
    let other = send(bed.addr, get("/c/a?x=2")).await;
    assert_eq!(other.x_cache(), "MISS");
    assert_eq!(be.calls(), 2);
    let s = bed.cache.stats();
    assert_eq!((s.hits, s.misses, s.stored), (4, 2, 2), "{s:?}");
}

#[tokio::test]
async fn a_route_without_cache_never_caches() {
    let be = Backend::cacheable("public, max-age=600").await;
    let bed = start(be.addr, loopback()).await;
    for i in 0..3 {
        let got = send(bed.addr, get("/p/a")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, format!("/p/a #{i}"));
        assert!(!got.headers.contains_key(X_CACHE), "{:?}", got.headers);
    }
    // And a PURGE there is the backend's business (forwarded as before).
    let purge = send(bed.addr, request("PURGE", "/p/a", &[])).await;
    assert_eq!(purge.status, StatusCode::OK);
    assert!(be.saw("PURGE"));
    assert_eq!(be.calls(), 4);
    assert_eq!(bed.cache.stats().stored, 0);
}

#[tokio::test]
async fn variants_by_vary_are_kept_apart() {
    let be = Backend::start(Duration::ZERO, |_, _, h, n| {
        let lang = h
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap())
            .to_string();
        (
            200,
            vec![
                ("cache-control", "max-age=60".into()),
                ("vary", "Accept-Language".into()),
            ],
            format!("{lang} #{n}"),
        )
    })
    .await;
    let bed = start(be.addr, loopback()).await;
    let lang = |l: &'static str| request("GET", "/c/v", &[("accept-language", l)]);

    let en = send(bed.addr, lang("en")).await;
    assert_eq!((en.x_cache(), en.body.as_str()), ("MISS", "en #0"));
    let fr = send(bed.addr, lang("fr")).await;
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("MISS", "fr #1"));
    let en = send(bed.addr, lang("en")).await;
    assert_eq!((en.x_cache(), en.body.as_str()), ("HIT", "en #0"));
    let fr = send(bed.addr, lang("fr")).await;
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("HIT", "fr #1"));
    let none = send(bed.addr, get("/c/v")).await;
    assert_eq!((none.x_cache(), none.body.as_str()), ("MISS", "none #2"));
    assert_eq!(be.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_clients_of_a_cold_key_make_one_backend_request() {
    let be = Backend::start(Duration::from_millis(300), |_, path, _, n| {
        (
            200,
            vec![("cache-control", "max-age=60".into())],
            format!("{path} #{n}"),
        )
    })
    .await;
    let bed = start(be.addr, loopback()).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(send(bed.addr, get("/c/hot"))))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, "/c/hot #0");
        *seen.entry(got.x_cache().to_string()).or_default() += 1;
    }
    assert_eq!(be.calls(), 1, "{seen:?}");
    assert_eq!(seen.get("MISS"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("HIT"), Some(&99), "{seen:?}");
    let s = bed.cache.stats();
    println!("coalescing: {seen:?}, stats {s:?}");
    assert!(s.coalesced > 0, "{s:?}");
}

#[tokio::test]
async fn a_dead_backend_is_covered_by_stale_if_error() {
    let be = Backend::cacheable("max-age=1, stale-if-error=60").await;
    let bed = start(be.addr, loopback()).await;
    let first = send(bed.addr, get("/c/s")).await;
    assert_eq!((first.x_cache(), first.body.as_str()), ("MISS", "/c/s #0"));
    be.kill();
    // Stale for sure (Date has a one-second resolution).
    bed.clock.skip(Duration::from_millis(2500));
    let stale = send(bed.addr, get("/c/s")).await;
    assert_eq!(stale.status, StatusCode::OK, "{stale:?}");
    assert_eq!((stale.x_cache(), stale.body.as_str()), ("STALE", "/c/s #0"));
    // Without an entry the client sees the failure.
    let cold = send(bed.addr, get("/c/never")).await;
    assert_eq!(cold.status, StatusCode::BAD_GATEWAY, "{cold:?}");
    assert_eq!(cold.x_cache(), "MISS");
    assert!(cold.reason().is_some());
    let s = bed.cache.stats();
    assert_eq!(s.stale_if_error, 1, "{s:?}");
}

#[tokio::test]
async fn purge_from_an_allowed_source_removes_the_entry() {
    let be = Backend::cacheable("max-age=60").await;
    let bed = start(be.addr, loopback()).await;
    assert_eq!(send(bed.addr, get("/c/a")).await.x_cache(), "MISS");
    assert_eq!(send(bed.addr, get("/c/a")).await.x_cache(), "HIT");

    let purge = send(bed.addr, request("PURGE", "/c/a", &[])).await;
    assert_eq!(purge.status, StatusCode::OK, "{purge:?}");
    assert_eq!(
        purge.body.trim(),
        r#"{"purged":"key","route":"cached","key":"example.com/c/a","removed":1}"#
    );
    let again = send(bed.addr, get("/c/a")).await;
    assert_eq!((again.x_cache(), again.body.as_str()), ("MISS", "/c/a #1"));
    // Purging what is not there says so.
    let twice = send(bed.addr, request("PURGE", "/c/nothing", &[])).await;
    assert_eq!(twice.status, StatusCode::OK);
    assert!(twice.body.contains(r#""removed":0"#), "{}", twice.body);

    // By prefix: everything under /c/dir/, nothing else.
    for p in ["/c/dir/1", "/c/dir/2?q", "/c/other"] {
        assert_eq!(send(bed.addr, get(p)).await.x_cache(), "MISS");
        assert_eq!(send(bed.addr, get(p)).await.x_cache(), "HIT");
    }
    let purge = send(
        bed.addr,
        request("PURGE", "/c/dir/", &[("x-purge-prefix", "1")]),
    )
    .await;
    assert_eq!(purge.status, StatusCode::OK);
    assert!(
        purge.body.contains(r#""prefix":"example.com/c/dir/""#),
        "{}",
        purge.body
    );
    assert_eq!(send(bed.addr, get("/c/dir/1")).await.x_cache(), "MISS");
    assert_eq!(send(bed.addr, get("/c/dir/2?q")).await.x_cache(), "MISS");
    assert_eq!(send(bed.addr, get("/c/other")).await.x_cache(), "HIT");
    assert!(!be.saw("PURGE"), "a PURGE is never forwarded");
    assert_eq!(be.calls(), 2 + 3 + 2);
}

#[tokio::test]
async fn purge_from_elsewhere_is_refused_and_not_forwarded() {
    let be = Backend::cacheable("max-age=60").await;
    let bed = start(be.addr, loopback()).await;
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(send(bed.addr, get("/c/a")).await.x_cache(), "MISS");
    // 127.0.0.2 may read …
    let read = send_from(Some(other), bed.addr, get("/c/a")).await;
    assert_eq!(read.x_cache(), "HIT");
    // … not purge.
    let purge = send_from(Some(other), bed.addr, request("PURGE", "/c/a", &[])).await;
    assert_eq!(purge.status, StatusCode::FORBIDDEN, "{purge:?}");
    assert_eq!(purge.reason(), Some("purge-forbidden"));
    assert_eq!(send(bed.addr, get("/c/a")).await.x_cache(), "HIT");

    // With no purge_from at all, PURGE is not a method of the route.
    let closed = start(be.addr, Vec::new()).await;
    let purge = send(closed.addr, request("PURGE", "/c/a", &[])).await;
    assert_eq!(purge.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(purge.reason(), Some("purge-disabled"));
    assert!(!be.saw("PURGE"));
    assert_eq!(be.calls(), 1);
}

#[tokio::test]
async fn unsafe_methods_pass_through_and_invalidate() {
    let be = Backend::cacheable("max-age=60").await;
    let bed = start(be.addr, loopback()).await;
    assert_eq!(send(bed.addr, get("/c/doc")).await.x_cache(), "MISS");
    assert_eq!(send(bed.addr, get("/c/doc")).await.x_cache(), "HIT");
    let post = send(bed.addr, request("POST", "/c/doc", &[])).await;
    assert_eq!((post.status, post.x_cache()), (StatusCode::OK, "BYPASS"));
    assert_eq!(send(bed.addr, get("/c/doc")).await.x_cache(), "MISS");
    assert_eq!(be.calls(), 3);
}

// ------------------------------------------------------------------ config

const YAML: &str = "\
l7:
  workers: 1
  cache:
    max_bytes: 64MiB
    max_object_bytes: 1MiB
    purge_from: [\"127.0.0.1/32\", \"::1/128\"]
  listeners:
    - name: web
      address: 127.0.0.1:0
  routes:
    - id: static
      paths: [\"/c/*\"]
      upstream: app
      cache: true
    - id: api
      paths: [\"/p/*\"]
      upstream: app
  upstreams:
    - id: app
      nodes: [{address: \"BACKEND\"}]
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("xlb.yaml"))
}

/// `l7.trusted_proxies` plans to prefixes; a bad entry is reported with
/// its position and index, like `purge_from`'s.
#[test]
fn trusted_proxies_plan_to_prefixes_and_bad_ones_are_named() {
    let yaml = YAML.replace("BACKEND", "127.0.0.1:9").replace(
        "l7:\n  workers: 1\n",
        "l7:\n  workers: 1\n  trusted_proxies: [\"127.0.0.1/32\", \"::1\"]\n",
    );
    let plan = l7_plan::plan(&parse(&yaml).expect("valid").l7).expect("plans");
    assert_eq!(plan.trusted_proxies, loopback());
    let bad = yaml.replace("\"::1\"", "\"10.0.0.0/33\"");
    let text = match parse(&bad) {
        Ok(_) => panic!("a /33 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        text.contains("xlb.yaml:3:") && text.contains("l7.trusted_proxies[1]"),
        "{text}"
    );
}

#[test]
fn the_cache_section_plans_to_one_store_and_marked_routes() {
    let cfg = parse(&YAML.replace("BACKEND", "127.0.0.1:9")).expect("valid");
    let plan = l7_plan::plan(&cfg.l7).expect("plans");
    let cache = plan.cache.as_ref().expect("a store");
    assert_eq!(cache.max_bytes, 64 << 20);
    assert_eq!(cache.max_object_bytes, 1 << 20);
    assert_eq!(cache.purge_from, loopback());
    let routes = &plan.listeners[0].routes;
    assert!(routes[0].options.cached);
    assert!(!routes[1].options.cached);

    // A caching route without l7.cache gets the default store, and no
    // one may purge it.
    let bare = YAML
        .replace("BACKEND", "127.0.0.1:9")
        .lines()
        .filter(|l| !l.contains("max_") && !l.contains("purge_from") && l.trim() != "cache:")
        .collect::<Vec<_>>()
        .join("\n");
    let plan = l7_plan::plan(&parse(&bare).expect("valid").l7).unwrap();
    let cache = plan.cache.expect("default store");
    assert_eq!(
        (cache.max_bytes, cache.max_object_bytes),
        (256 << 20, 8 << 20)
    );
    assert!(cache.purge_from.is_empty());

    // Neither: no store.
    let none = bare.replace("      cache: true\n", "");
    assert!(l7_plan::plan(&parse(&none).expect("valid").l7)
        .unwrap()
        .cache
        .is_none());
}

#[test]
fn cache_mistakes_are_located() {
    let base = YAML.replace("BACKEND", "127.0.0.1:9");
    let err = parse(&base.replace("\"::1/128\"", "\"::1/129\"")).unwrap_err();
    let ConfigError::Invalid(l) = err else {
        panic!("one problem expected: {err}")
    };
    assert_eq!(l.field, "l7.cache.purge_from[1]");
    assert_eq!(l.line, Some(6), "{l}");
    assert!(l.message.contains("longer than 128"), "{l}");

    let err = parse(&base.replace("max_object_bytes: 1MiB", "max_object_bytes: 128MiB"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("xlb.yaml:5:23: field `l7.cache.max_object_bytes`: larger than max_bytes"),
        "{err}"
    );

    let err = parse(&base.replace("cache: true", "cache: yes please"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("l7.routes[0].cache"), "{err}");

    let err = parse(&base.replace("    purge_from", "    purge_form"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `purge_form`"), "{err}");
}

/// The service keeps its store across a reload that leaves `l7.cache`
/// alone (the purge list may change), and starts afresh when the store's
/// size changes.
#[tokio::test]
async fn a_reload_keeps_the_store_unless_its_size_changes() {
    let be = Backend::cacheable("max-age=60").await;
    let yaml = YAML.replace("BACKEND", &be.addr.to_string());
    let plan = |text: &str| l7_plan::plan(&parse(text).expect("valid").l7).expect("plans");
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut svc = L7Service::start(plan(&yaml), tx).await.expect("starts");
    let addr = svc.addresses()[0].1;
    assert_eq!(send(addr, get("/c/a")).await.x_cache(), "MISS");
    assert_eq!(send(addr, get("/c/a")).await.x_cache(), "HIT");

    svc.reload(plan(&yaml.replace(", \"::1/128\"", "")))
        .await
        .expect("reloads");
    assert_eq!(send(addr, get("/c/a")).await.x_cache(), "HIT");
    let purge = send(addr, request("PURGE", "/c/a", &[])).await;
    assert_eq!(purge.status, StatusCode::OK, "{purge:?}");
    assert_eq!(send(addr, get("/c/a")).await.x_cache(), "MISS");

    svc.reload(plan(&yaml.replace("max_bytes: 64MiB", "max_bytes: 32MiB")))
        .await
        .expect("reloads");
    assert_eq!(send(addr, get("/c/a")).await.x_cache(), "MISS");
    assert_eq!(send(addr, get("/p/a")).await.x_cache(), "");
    assert_eq!(be.calls(), 3 + 1);
    assert!(svc.cache().is_some());
    svc.shutdown().await;
}

/// CDN-Cache-Control (RFC 9213) rules over Cache-Control in xlb's cache,
/// and `l7.cache.targeted_field` over both, through the whole service:
/// `/c/cdn` says `private, no-store` to browsers and `max-age=60` to CDNs
/// and is stored; `/c/own` says `max-age=60` to everyone but `no-store`
/// in xlb's own field and is not; `/c/browser` (the control) says
/// `private, max-age=60` only and is not stored either. The client gets
/// CDN-Cache-Control but never xlb's own field.
#[tokio::test]
async fn cdn_cache_control_and_the_targeted_field_rule_over_cache_control() {
    let be = Backend::start(Duration::ZERO, |_, path, _, n| {
        let headers: Vec<(&'static str, String)> = match path {
            "/c/cdn" => vec![
                ("cache-control", "private, no-store".into()),
                ("cdn-cache-control", "max-age=60".into()),
            ],
            "/c/own" => vec![
                ("cache-control", "max-age=60".into()),
                ("cdn-cache-control", "max-age=60".into()),
                ("xlb-cache-control", "no-store".into()),
            ],
            _ => vec![("cache-control", "private, max-age=60".into())],
        };
        (200, headers, format!("{path} #{n}"))
    })
    .await;
    let yaml = YAML.replace("BACKEND", &be.addr.to_string()).replace(
        "    max_object_bytes: 1MiB\n",
        "    max_object_bytes: 1MiB\n    targeted_field: Xlb-Cache-Control\n",
    );
    let plan = l7_plan::plan(&parse(&yaml).expect("valid").l7).expect("plans");
    let (tx, _rx) = mpsc::unbounded_channel();
    let svc = L7Service::start(plan, tx).await.expect("starts");
    let addr = svc.addresses()[0].1;
    let twice = |path: &'static str| async move {
        let a = send(addr, get(path)).await;
        let b = send(addr, get(path)).await;
        (a, b)
    };

    let (a, b) = twice("/c/cdn").await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "HIT"));
    assert_eq!(b.body, "/c/cdn #0");
    assert_eq!(b.headers["cdn-cache-control"], "max-age=60");
    assert_eq!(b.headers[header::CACHE_CONTROL], "private, no-store");

    let (a, b) = twice("/c/own").await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    assert_eq!(b.body, "/c/own #2");
    assert!(
        !a.headers.contains_key("xlb-cache-control"),
        "{:?}",
        a.headers
    );
    assert_eq!(a.headers["cdn-cache-control"], "max-age=60");

    let (a, b) = twice("/c/browser").await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    assert_eq!(be.calls(), 1 + 2 + 2);
    svc.shutdown().await;
}

/// `targeted_field` must be a field name of xlb's own.
#[test]
fn a_targeted_field_that_is_no_field_of_its_own_is_refused() {
    let base = YAML.replace("BACKEND", "127.0.0.1:9");
    for (field, says) in [
        ("Xlb Cache", "is not a header field name"),
        ("Cache-Control", "has its own meaning"),
        ("CDN-Cache-Control", "has its own meaning"),
    ] {
        let yaml = base.replace(
            "    max_object_bytes: 1MiB\n",
            &format!("    max_object_bytes: 1MiB\n    targeted_field: {field}\n"),
        );
        let err = parse(&yaml).unwrap_err().to_string();
        assert!(
            err.contains("l7.cache.targeted_field") && err.contains(says),
            "{err}"
        );
    }
}

// ------------------------------------------------------------------ measure

/// Requests/s of `conns` keep-alive connections sending GETs of `path`
/// for `for_how_long`.
async fn rate(addr: SocketAddr, path: &'static str, conns: usize, for_how_long: Duration) -> f64 {
    let deadline = Instant::now() + for_how_long;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let resp = s.send_request(get(path)).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    let _ = resp.into_body().collect().await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Not a benchmark (debug build unless run with `--release`, client and
/// backend in the same process): a rough comparison for the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn measure_hits_against_forwarding() {
    let be = Backend::cacheable("max-age=600").await;
    let bed = start(be.addr, loopback()).await;
    assert_eq!(send(bed.addr, get("/c/bench")).await.x_cache(), "MISS");
    let d = Duration::from_millis(1500);
    let hits = rate(bed.addr, "/c/bench", 16, d).await;
    let before = be.calls();
    let forwarded = rate(bed.addr, "/p/bench", 16, d).await;
    println!(
        "cache hits: {hits:.0} req/s; uncached route: {forwarded:.0} req/s ({} backend requests); \
         ratio {:.2}",
        be.calls() - before,
        hits / forwarded
    );
    assert_eq!(bed.cache.stats().misses, 1);
}

/// Raw request bytes on a fresh connection (the request must ask for
/// `Connection: close`); the whole answer.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no close: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Cache poisoning by absolute-form target (RFC 9112 §3.2.2): for
/// `GET http://victim.test/c/p` with `Host: attacker.test`, the node is
/// asked for victim.test's page (the target's authority replaces `Host`),
/// so the entry stored under victim.test is victim.test's and a victim
/// then gets that as a HIT. A scheme xlb does not serve is a 400; an
/// absolute-form target no route serves, a 421 (origin form: 404).
#[tokio::test]
async fn absolute_form_targets_cannot_poison_the_cache() {
    let hosts: Arc<Mutex<Vec<String>>> = Arc::default();
    let h = hosts.clone();
    let be = Backend::start(Duration::ZERO, move |_, _, headers, _| {
        let host = headers
            .get(header::HOST)
            .map_or("", |v| v.to_str().unwrap())
            .to_string();
        h.lock().unwrap().push(host.clone());
        let cc = ("cache-control", "max-age=600".to_string());
        (200, vec![cc], format!("page of {host}"))
    })
    .await;
    let bed = start(be.addr, loopback()).await;

    let attack = raw(
        bed.addr,
        b"GET http://victim.test/c/p HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(attack.starts_with("HTTP/1.1 200 "), "{attack:?}");
    assert!(attack.ends_with("page of victim.test"), "{attack:?}");
    let victim = send(
        bed.addr,
        Request::get("/c/p")
            .header("host", "victim.test")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!((victim.status, victim.x_cache()), (StatusCode::OK, "HIT"));
    assert_eq!(victim.body, "page of victim.test");
    // Without the cache too: the node sees the target's host, port kept.
    let plain = raw(
        bed.addr,
        b"GET http://victim.test:8080/p/q HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.ends_with("page of victim.test:8080"), "{plain:?}");
    assert_eq!(
        *hosts.lock().unwrap(),
        vec!["victim.test", "victim.test:8080"],
        "the node never saw attacker.test"
    );

    let ftp = raw(
        bed.addr,
        b"GET ftp://victim.test/c/p HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ftp.starts_with("HTTP/1.1 400 "), "{ftp:?}");
    assert!(ftp.contains("unsupported-scheme"), "{ftp:?}");
    let elsewhere = raw(
        bed.addr,
        b"GET http://victim.test/none HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(elsewhere.starts_with("HTTP/1.1 421 "), "{elsewhere:?}");
    let origin = raw(
        bed.addr,
        b"GET /none HTTP/1.1\r\nHost: victim.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(origin.starts_with("HTTP/1.1 404 "), "{origin:?}");
    assert_eq!(be.calls(), 2);
    assert_eq!(bed.cache.stats().stored, 1);
}
