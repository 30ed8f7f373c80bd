//! What the route and upstream options do, seen on the wire: real sockets
//! on 127.0.0.1, hyper backends in this process, xlb's server and proxy in
//! front. Each test asserts what a client or a backend observes.
mod support;

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::{
    body::{Body, Frame, Incoming},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    forward::ERROR_HEADER,
    options::{
        HashOn, HeaderEdits, PassHost, PathRewrite, RetryBudgetConfig, RetryPolicy, RouteOptions,
        Timeouts, UpstreamOptions, UpstreamProtocol, UpstreamTls,
    },
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TBody = BoxBody<Bytes, BoxError>;

fn full(text: impl Into<Bytes>) -> TBody {
    Full::new(text.into()).map_err(|n| match n {}).boxed()
}

/// A body fed frame by frame from a channel (streams, trailers).
struct ChanBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn chan_body() -> (mpsc::Sender<Frame<Bytes>>, TBody) {
    let (tx, rx) = mpsc::channel(8);
    (tx, ChanBody(rx).boxed())
}

/// Serves `handler` (HTTP/1.1 with upgrades, and h2c prior knowledge) on
/// a fresh port.
async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend that answers with its request: request line, then headers,
/// then the body; with `server: test-backend`.
async fn echo_backend() -> SocketAddr {
    backend(|req: Request<Incoming>| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            text += &format!("{}: {}\n", k, v.to_str().unwrap_or("?"));
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        text += &format!("body: {}\n", String::from_utf8_lossy(&body));
        Response::builder()
            .header("server", "test-backend")
            .header("x-backend", "1")
            .body(full(text))
            .unwrap()
    })
    .await
}

/// A backend answering with `name`, counting its requests.
async fn named_backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let addr = backend(move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            let _ = req.into_body().collect().await;
            h.fetch_add(1, Ordering::SeqCst);
            Response::new(full(name))
        }
    })
    .await;
    (addr, hits)
}

async fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn pool(addrs: &[SocketAddr], algorithm: Algorithm, options: UpstreamOptions) -> Arc<Pool> {
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(id, addr)| Node {
            id,
            addr: *addr,
            weight: 1,
        })
        .collect();
    let upstream = Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap());
    let sticky = options.sticky_cookie.is_some();
    let balancer = balance::build(upstream.clone(), algorithm, sticky).unwrap();
    Arc::new(Pool::new("u", upstream, balancer, options, None).unwrap())
}

fn rr(addrs: &[SocketAddr]) -> Arc<Pool> {
    pool(addrs, Algorithm::RoundRobin, UpstreamOptions::default())
}

/// A route for every path under `prefix` to upstream `upstream`.
fn route(prefix: &str, upstream: &str, options: RouteOptions) -> RouteSpec {
    let mut r = RouteSpec::new(format!("r{prefix}"), upstream);
    r.paths = vec![PathMatch::Prefix(prefix.into())];
    r.options = std::sync::Arc::new(options);
    r
}

struct Bed {
    addr: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn start(routes: Vec<RouteSpec>, pools: Vec<(&str, Arc<Pool>)>) -> Bed {
    let table = RouteTable::build(routes).unwrap();
    let pools: HashMap<String, Arc<Pool>> =
        pools.into_iter().map(|(k, p)| (k.to_string(), p)).collect();
    let (addr, tx) = support::serve_proxy(Proxy::new(Arc::new(table), pools)).await;
    Bed { addr, _stop: tx }
}

/// One bed with one upstream `u` and one catch-all route.
async fn simple(pool: Arc<Pool>, options: RouteOptions) -> Bed {
    start(vec![route("/", "u", options)], vec![("u", pool)]).await
}

async fn send_on(addr: SocketAddr, h2: bool, req: Request<TBody>) -> Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    }
}

/// One HTTP/1.1 request on a fresh connection: status, headers, body.
async fn send(addr: SocketAddr, req: Request<TBody>) -> (StatusCode, http::HeaderMap, String) {
    let resp = send_on(addr, false, req).await;
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(host: &str, path: &str) -> Request<TBody> {
    Request::get(path)
        .header("host", host)
        .body(full(""))
        .unwrap()
}

fn reason(h: &http::HeaderMap) -> Option<&str> {
    h.get(ERROR_HEADER).map(|v| v.to_str().unwrap())
}

fn no_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 0,
        ..RetryPolicy::default()
    }
}

// ---------------------------------------------------------------- upgrades

/// Reads an HTTP/1.1 response head off a raw stream.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(n == 1, "connection closed in the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A masked WebSocket text frame (client to server).
fn ws_frame(text: &str) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn websocket_echoes_through_the_proxy_and_closes_when_idle() {
    // The backend switches protocols and then echoes raw bytes; it reports
    // the upgrade headers it received.
    let node = backend(|mut req: Request<Incoming>| async move {
        let seen = format!(
            "{}|{}",
            req.headers()
                .get("connection")
                .map_or("", |v| v.to_str().unwrap()),
            req.headers()
                .get("upgrade")
                .map_or("", |v| v.to_str().unwrap())
        );
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .header("x-seen", seen)
            .body(full(""))
            .unwrap()
    })
    .await;
    let idle = Duration::from_millis(400);
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            timeouts: Timeouts {
                idle,
                ..Timeouts::default()
            },
            ..RouteOptions::default()
        },
    )
    .await;

    let mut s = TcpStream::connect(bed.addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("\r\nx-seen: upgrade|websocket\r\n"),
        "the upstream hop carries the upgrade: {head}"
    );
    // Frames spaced out over longer than `idle` in total: activity keeps
    // the tunnel open (no whole-connection deadline).
    let started = Instant::now();
    for i in 0..6 {
        let frame = ws_frame(&format!("hello {i}"));
        s.write_all(&frame).await.unwrap();
        let mut echo = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(echo, frame);
        tokio::time::sleep(idle / 3).await;
    }
    assert!(started.elapsed() > idle * 2);
    // Silence in both directions: the proxy closes the tunnel.
    let silent = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed by the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(silent.elapsed() >= idle / 2, "{:?}", silent.elapsed());
}

// ------------------------------------------------------------ gRPC over h2c

#[tokio::test]
async fn grpc_over_h2c_streams_both_ways_and_passes_trailers() {
    // Echoes each request message as it arrives, then ends with trailers.
    let node = backend(|req: Request<Incoming>| async move {
        let te = req
            .headers()
            .get("te")
            .map_or("none", |v| v.to_str().unwrap())
            .to_string();
        let version = format!("{:?}", req.version());
        let (tx, body) = chan_body();
        tokio::spawn(async move {
            let mut incoming = req.into_body();
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data() {
                    if tx.send(Frame::data(data)).await.is_err() {
                        return;
                    }
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("done"));
            let _ = tx.send(Frame::trailers(trailers)).await;
        });
        Response::builder()
            .header("content-type", "application/grpc")
            .header("x-te", te)
            .header("x-version", version)
            .body(body)
            .unwrap()
    })
    .await;
    let options = UpstreamOptions {
        protocol: UpstreamProtocol::H2c,
        ..UpstreamOptions::default()
    };
    let bed = simple(
        pool(&[node], Algorithm::RoundRobin, options),
        RouteOptions::default(),
    )
    .await;

    let (tx, body) = chan_body();
    let req = Request::post("http://grpc.example.com/pkg.Echo/Stream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = send_on(bed.addr, true, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-te"], "trailers");
    assert_eq!(resp.headers()["x-version"], "HTTP/2.0");
    let mut body = resp.into_body();
    // Each message comes back before the next is sent: nothing is
    // buffered in either direction.
    for msg in ["first", "second", "third"] {
        tx.send(Frame::data(Bytes::from(msg))).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
            .await
            .expect("echo while the request is still open")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), msg);
    }
    drop(tx);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        if let Ok(t) = frame.unwrap().into_trailers() {
            trailers = Some(t);
        }
    }
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
}

// ------------------------------------------------------------ upstream TLS

struct Pki {
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
    other_ca_path: std::path::PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn ca() -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), cert.pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, pem) = ca();
    let (_, other_pem) = ca();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["backend.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    let other_ca_path = dir.path().join("other.pem");
    std::fs::write(&ca_path, pem).unwrap();
    std::fs::write(&other_ca_path, other_pem).unwrap();
    Pki {
        chain: vec![leaf.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        ca_path,
        other_ca_path,
        _dir: dir,
    }
}

/// A TLS backend (ALPN h2, http/1.1) answering with the SNI it was sent
/// and the HTTP version spoken.
async fn tls_backend(pki: &Pki) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(pki.chain.clone(), pki.key.clone_key())
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let text = format!("sni={sni} version={:?}", req.version());
                    async move { Ok::<_, Infallible>(Response::new(full(text))) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn tls_pool(node: SocketAddr, protocol: UpstreamProtocol, tls: UpstreamTls) -> Arc<Pool> {
    pool(
        &[node],
        Algorithm::RoundRobin,
        UpstreamOptions {
            protocol,
            tls,
            ..UpstreamOptions::default()
        },
    )
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_ca_with_the_right_sni() {
    let pki = pki();
    let node = tls_backend(&pki).await;
    let trusted = UpstreamTls {
        ca: Some(pki.ca_path.clone()),
        ..UpstreamTls::default()
    };
    let rewrite_host = RouteOptions {
        pass_host: PassHost::Rewrite(HeaderValue::from_static("backend.test")),
        retry: no_retry(),
        ..RouteOptions::default()
    };
    let plain = RouteOptions {
        retry: no_retry(),
        ..RouteOptions::default()
    };
    let bed = start(
        vec![
            route("/alpn/", "alpn", rewrite_host.clone()),
            route("/h1/", "h1", plain.clone()),
            route("/untrusted/", "untrusted", rewrite_host.clone()),
            route("/mismatch/", "mismatch", plain.clone()),
            route("/noverify/", "noverify", plain.clone()),
        ],
        vec![
            // SNI from the Host sent upstream; ALPN picks h2.
            (
                "alpn",
                tls_pool(node, UpstreamProtocol::Https, trusted.clone()),
            ),
            // SNI from `server_name`, whatever the client's Host; HTTP/1.1.
            (
                "h1",
                tls_pool(
                    node,
                    UpstreamProtocol::Https1,
                    UpstreamTls {
                        server_name: Some("backend.test".into()),
                        ..trusted.clone()
                    },
                ),
            ),
            (
                "untrusted",
                tls_pool(
                    node,
                    UpstreamProtocol::Https,
                    UpstreamTls {
                        ca: Some(pki.other_ca_path.clone()),
                        ..UpstreamTls::default()
                    },
                ),
            ),
            // The certificate is for backend.test, not for the client's Host.
            (
                "mismatch",
                tls_pool(node, UpstreamProtocol::Https, trusted.clone()),
            ),
            (
                "noverify",
                tls_pool(
                    node,
                    UpstreamProtocol::Https2,
                    UpstreamTls {
                        server_name: Some("anything.test".into()),
                        verify: false,
                        ..UpstreamTls::default()
                    },
                ),
            ),
        ],
    )
    .await;

    let (status, _, body) = send(bed.addr, get("www.example.com", "/alpn/x")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "sni=backend.test version=HTTP/2.0")
    );
    let (status, _, body) = send(bed.addr, get("www.example.com", "/h1/x")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "sni=backend.test version=HTTP/1.1")
    );
    let (status, h, _) = send(bed.addr, get("www.example.com", "/untrusted/x")).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::BAD_GATEWAY, Some("upstream-tls"))
    );
    let (status, h, _) = send(bed.addr, get("www.example.com", "/mismatch/x")).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::BAD_GATEWAY, Some("upstream-tls"))
    );
    let (status, _, body) = send(bed.addr, get("www.example.com", "/noverify/x")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "sni=anything.test version=HTTP/2.0")
    );
}

#[tokio::test]
async fn a_reload_with_the_same_options_keeps_the_client() {
    let pki = pki();
    let node = tls_backend(&pki).await;
    let options = UpstreamOptions {
        protocol: UpstreamProtocol::Https,
        tls: UpstreamTls {
            ca: Some(pki.ca_path.clone()),
            server_name: Some("backend.test".into()),
            ..UpstreamTls::default()
        },
        ..UpstreamOptions::default()
    };
    let first = pool(&[node], Algorithm::RoundRobin, options.clone());
    let bed = simple(first.clone(), RouteOptions::default()).await;
    assert_eq!(send(bed.addr, get("a", "/")).await.0, StatusCode::OK);
    assert_eq!(first.client().idle_connections(), 1, "a warm h2 connection");
    let upstream = first.upstream.clone();
    let again = |options: UpstreamOptions| {
        let b = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
        Pool::new("u", upstream.clone(), b, options, Some(&first)).unwrap()
    };
    let same = again(options.clone());
    assert_eq!(
        same.client().idle_connections(),
        1,
        "kept across the reload"
    );
    let changed = again(UpstreamOptions {
        protocol: UpstreamProtocol::Https1,
        ..options
    });
    assert_eq!(changed.client().idle_connections(), 0);
}

// ---------------------------------------------------------------- timeouts

/// On tokio's paused clock: the timeout is a timer, so the test sees
/// exactly it, however loaded the machine.
#[tokio::test(start_paused = true)]
async fn a_slow_response_head_is_a_504_after_the_read_timeout() {
    let node = backend(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            timeouts: Timeouts {
                read: Duration::from_millis(300),
                ..Timeouts::default()
            },
            retry: no_retry(),
            ..RouteOptions::default()
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let (status, h, _) = send(bed.addr, get("a", "/")).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::GATEWAY_TIMEOUT, Some("upstream-timeout"))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(400),
        "{took:?}"
    );
}

/// On real time: with tokio's paused clock, time jumps whenever every task
/// waits, also while a chunk is still crossing loopback between two tasks,
/// so a streaming body would look silent when it is not.
#[tokio::test]
async fn idle_timeout_cuts_a_silent_stream_but_not_a_slow_one() {
    // /slow: a chunk every 150 ms for 1.2 s; /silent: one chunk, then
    // nothing while the stream stays open.
    let node = backend(|req: Request<Incoming>| async move {
        let (tx, body) = chan_body();
        let slow = req.uri().path() == "/slow";
        tokio::spawn(async move {
            if slow {
                for i in 0..8 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let _ = tx.send(Frame::data(Bytes::from(i.to_string()))).await;
                }
            } else {
                let _ = tx.send(Frame::data(Bytes::from("x"))).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
        Response::new(body)
    })
    .await;
    let idle = Duration::from_millis(500);
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            timeouts: Timeouts {
                idle,
                ..Timeouts::default()
            },
            ..RouteOptions::default()
        },
    )
    .await;

    let started = Instant::now();
    let (status, _, body) = send(bed.addr, get("a", "/slow")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "01234567"));
    assert!(started.elapsed() > idle * 2, "outlived `idle` in total");

    let resp = send_on(bed.addr, false, get("a", "/silent")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "x");
    let silent = Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("cut off by the idle timeout");
    assert!(
        matches!(cut, Some(Err(_))),
        "a cut-off stream is an error, not a clean end: {cut:?}"
    );
    assert!(silent.elapsed() >= idle - Duration::from_millis(50));
}

/// On tokio's paused clock: the timeout is a timer, so the test sees
/// exactly it, however loaded the machine.
#[tokio::test(start_paused = true)]
async fn a_stalled_request_body_is_a_408_after_the_send_timeout() {
    let (node, _) = named_backend("b").await;
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            timeouts: Timeouts {
                send: Duration::from_millis(300),
                ..Timeouts::default()
            },
            ..RouteOptions::default()
        },
    )
    .await;
    let (tx, body) = chan_body();
    tx.send(Frame::data(Bytes::from("part one"))).await.unwrap();
    let req = Request::post("/upload")
        .header("host", "a")
        .body(body)
        .unwrap();
    let started = tokio::time::Instant::now();
    let (status, h, _) = send(bed.addr, req).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::REQUEST_TIMEOUT, Some("request-body-timeout"))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(400),
        "{took:?}"
    );
    drop(tx);
}

// ------------------------------------------------------- host, path, headers

#[tokio::test]
async fn pass_host_modes_choose_the_host_the_node_sees() {
    let node = echo_backend().await;
    let opts = |pass_host| RouteOptions {
        pass_host,
        ..RouteOptions::default()
    };
    let bed = start(
        vec![
            route("/pass", "u", opts(PassHost::Pass)),
            route("/node", "u", opts(PassHost::Node)),
            route(
                "/rewrite",
                "u",
                opts(PassHost::Rewrite(HeaderValue::from_static(
                    "internal.example",
                ))),
            ),
        ],
        vec![("u", rr(&[node]))],
    )
    .await;
    let client_host = "www.example.com:8080";
    let body = send(bed.addr, get(client_host, "/pass")).await.2;
    assert!(body.contains("\nhost: www.example.com:8080\n"), "{body}");
    let body = send(bed.addr, get(client_host, "/node")).await.2;
    assert!(body.contains(&format!("\nhost: {node}\n")), "{body}");
    let body = send(bed.addr, get(client_host, "/rewrite")).await.2;
    assert!(body.contains("\nhost: internal.example\n"), "{body}");
    // Whatever the Host, X-Forwarded-Host says what the client asked for.
    assert!(
        body.contains("\nx-forwarded-host: www.example.com\n"),
        "{body}"
    );
    // The same host normalised from a field without a port (passed on as
    // the client's own value) and from one in capitals (a lowered copy).
    for sent in ["www.example.com", "WWW.Example.COM"] {
        let body = send(bed.addr, get(sent, "/rewrite")).await.2;
        assert!(
            body.contains("\nx-forwarded-host: www.example.com\n"),
            "Host {sent}: {body}"
        );
    }
}

#[tokio::test]
async fn header_edits_apply_both_ways() {
    let node = echo_backend().await;
    let name = HeaderName::from_static;
    let value = HeaderValue::from_static;
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            request_headers: HeaderEdits {
                remove: vec![name("x-internal")],
                set: vec![(name("x-env"), value("prod"))],
                add: vec![(name("x-tag"), value("proxy"))],
            },
            response_headers: HeaderEdits {
                remove: vec![name("server")],
                set: vec![(name("x-backend"), value("hidden"))],
                add: vec![(name("x-frame-options"), value("DENY"))],
            },
            ..RouteOptions::default()
        },
    )
    .await;
    let req = Request::get("/")
        .header("host", "a")
        .header("x-internal", "secret")
        .header("x-env", "dev")
        .header("x-tag", "client")
        .body(full(""))
        .unwrap();
    let (status, headers, body) = send(bed.addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("x-internal"), "{body}");
    assert!(
        body.contains("\nx-env: prod\n") && !body.contains("dev"),
        "{body}"
    );
    assert!(
        body.contains("\nx-tag: client\nx-tag: proxy\n"),
        "added after the client's: {body}"
    );
    assert!(headers.get("server").is_none());
    assert_eq!(headers["x-backend"], "hidden");
    assert_eq!(headers["x-frame-options"], "DENY");
}

#[tokio::test]
async fn a_path_prefix_is_replaced_and_the_query_kept() {
    let node = echo_backend().await;
    let rw = |strip: &str, with: &str| RouteOptions {
        path_rewrite: Some(PathRewrite {
            strip_prefix: strip.into(),
            replace_with: with.into(),
        }),
        ..RouteOptions::default()
    };
    let bed = start(
        vec![
            route("/api/", "u", rw("/api", "/v2")),
            route("/strip", "u", rw("/strip", "")),
        ],
        vec![("u", rr(&[node]))],
    )
    .await;
    let body = send(bed.addr, get("a", "/api/items?id=7&x=%2F")).await.2;
    assert!(body.starts_with("GET /v2/items?id=7&x=%2F "), "{body}");
    let body = send(bed.addr, get("a", "/strip?q")).await.2;
    assert!(body.starts_with("GET /?q "), "{body}");
    let body = send(bed.addr, get("a", "/strip/deeper")).await.2;
    assert!(body.starts_with("GET /deeper "), "{body}");
}

#[tokio::test]
async fn redirect_https_answers_308_without_forwarding() {
    let (node, hits) = named_backend("b").await;
    let redirect = |port| RouteOptions {
        redirect_https: Some(port),
        ..RouteOptions::default()
    };
    let bed = start(
        vec![
            route("/", "u", redirect(443)),
            route("/alt/", "u", redirect(8443)),
        ],
        vec![("u", rr(&[node]))],
    )
    .await;
    let (status, h, _) = send(bed.addr, get("www.example.com:80", "/a/b?c=1")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://www.example.com/a/b?c=1");
    let (status, h, _) = send(bed.addr, get("www.example.com", "/alt/x")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://www.example.com:8443/alt/x");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413() {
    // Counts the bodies it received whole.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let node = backend(move |req: Request<Incoming>| {
        let h = h.clone();
        async move {
            if req.into_body().collect().await.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
            Response::new(full("b"))
        }
    })
    .await;
    let bed = simple(
        rr(&[node]),
        RouteOptions {
            max_body_bytes: Some(10),
            ..RouteOptions::default()
        },
    )
    .await;
    let post = |body: TBody| {
        Request::post("/upload")
            .header("host", "a")
            .body(body)
            .unwrap()
    };
    // Declared too long: refused before any node is contacted.
    let (status, h, _) = send(bed.addr, post(full("0123456789ABCDEF"))).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body-too-large"))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Streamed (chunked, no length): cut off once it grows past the limit.
    let (tx, body) = chan_body();
    let sending = tokio::spawn(async move {
        for chunk in ["01234", "56789", "ABCDE", "FGHIJ"] {
            if tx.send(Frame::data(Bytes::from(chunk))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (status, h, _) = send(bed.addr, post(body)).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body-too-large"))
    );
    let _ = sending.await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the node never got it whole"
    );
    // At the limit: forwarded.
    let (status, _, body) = send(bed.addr, post(full("0123456789"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
}

// ----------------------------------------------------------------- retries

/// A node that takes a connection, reads what comes (until `marker`, or a
/// pause), counts one attempt, then resets the connection.
async fn resetting_backend(marker: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let a = a.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.windows(marker.len()).any(|w| w == marker) {
                                break;
                            }
                        }
                        Ok(_) => return,
                        Err(_) if seen.is_empty() => continue,
                        Err(_) => break,
                    }
                }
                a.fetch_add(1, Ordering::SeqCst);
                // An RST, not a FIN: the request was read and then lost.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    (addr, attempts)
}

#[tokio::test]
async fn a_post_that_reached_a_node_is_never_replayed() {
    for protocol in [UpstreamProtocol::Http1, UpstreamProtocol::H2c] {
        let (resetter, resets) = resetting_backend(b"post-payload").await;
        let (live, live_hits) = named_backend("live").await;
        let options = UpstreamOptions {
            protocol,
            ..UpstreamOptions::default()
        };
        let bed = simple(
            pool(&[resetter, live], Algorithm::RoundRobin, options),
            RouteOptions::default(),
        )
        .await;
        let mut failed = 0;
        let mut ok = 0;
        for i in 0..4 {
            // The client speaks HTTP/2 half of the time.
            let req = Request::post("http://a/form")
                .header("host", "a")
                .body(full("post-payload"))
                .unwrap();
            let resp = send_on(bed.addr, i % 2 == 1, req).await;
            match resp.status() {
                StatusCode::OK => ok += 1,
                StatusCode::BAD_GATEWAY => {
                    assert_eq!(reason(resp.headers()), Some("upstream-reset"));
                    failed += 1;
                }
                other => panic!("{protocol:?}: {other}"),
            }
        }
        assert!(failed >= 1, "{protocol:?}: the resetting node was picked");
        assert_eq!(
            resets.load(Ordering::SeqCst),
            failed,
            "{protocol:?}: one attempt per failed POST"
        );
        assert_eq!(
            live_hits.load(Ordering::SeqCst),
            ok,
            "{protocol:?}: a failed POST never went on to the live node"
        );
        // A bodiless GET is idempotent: it is replayed on the live node.
        let before = resets.load(Ordering::SeqCst);
        for _ in 0..4 {
            let (status, _, body) = send(bed.addr, get("a", "/page")).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "live"),
                "{protocol:?}"
            );
        }
        assert!(resets.load(Ordering::SeqCst) > before, "{protocol:?}");
    }
}

/// An idempotent request whose body xlb read whole (the own HTTP/1.1 path
/// reads a `Content-Length` body of up to 64 KiB before forwarding) is
/// sent again, body included, when a node loses it; the same PUT with a
/// streamed (chunked) body is not (the control): its body is gone once
/// sent.
#[tokio::test]
async fn a_put_whose_body_was_read_whole_is_replayed_on_another_node() {
    let (resetter, resets) = resetting_backend(b"put-payload").await;
    let got = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let g = got.clone();
    let live = backend(move |req: Request<Incoming>| {
        let g = g.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            g.lock().unwrap().push(body);
            Response::new(full("live"))
        }
    })
    .await;
    let bed = simple(rr(&[resetter, live]), RouteOptions::default()).await;
    let put = |body: TBody| Request::put("/doc").header("host", "a").body(body).unwrap();
    let mut lost = 0;
    for _ in 0..4 {
        let (tx, body) = chan_body();
        let feeding = tokio::spawn(async move {
            let _ = tx
                .send(Frame::data(Bytes::from_static(b"put-payload")))
                .await;
        });
        let (status, h, _) = send(bed.addr, put(body)).await;
        let _ = feeding.await;
        match status {
            StatusCode::OK => {}
            StatusCode::BAD_GATEWAY => {
                assert_eq!(reason(&h), Some("upstream-reset"));
                lost += 1;
            }
            other => panic!("streamed PUT: {other}"),
        }
    }
    assert!(lost >= 1, "a streamed PUT the node lost is a 502");
    let (resets_before, live_before) = (resets.load(Ordering::SeqCst), got.lock().unwrap().len());
    for i in 0..4 {
        let (status, _, body) = send(bed.addr, put(full("put-payload"))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "live"), "PUT {i}");
    }
    assert!(
        resets.load(Ordering::SeqCst) > resets_before,
        "the resetting node was tried"
    );
    let got = got.lock().unwrap();
    assert_eq!(
        got.len() - live_before,
        4,
        "every PUT reached the live node"
    );
    assert!(
        got[live_before..].iter().all(|b| &b[..] == b"put-payload"),
        "with its body: {got:?}"
    );
}

#[tokio::test]
async fn retries_hide_a_dead_node_until_the_budget_is_spent() {
    let (live, _) = named_backend("live").await;
    let dead = dead_addr().await;
    let generous = rr(&[dead, live]);
    let broke = pool(
        &[dead, live],
        Algorithm::RoundRobin,
        UpstreamOptions {
            retry_budget: RetryBudgetConfig {
                ratio: 0.0,
                min_per_sec: 0,
                window: Duration::from_secs(10),
            },
            ..UpstreamOptions::default()
        },
    );
    let bed = start(
        vec![
            route("/", "generous", RouteOptions::default()),
            route("/broke/", "broke", RouteOptions::default()),
            route(
                "/once/",
                "generous",
                RouteOptions {
                    retry: no_retry(),
                    ..RouteOptions::default()
                },
            ),
        ],
        vec![("generous", generous), ("broke", broke)],
    )
    .await;
    for _ in 0..6 {
        let (status, h, body) = send(bed.addr, get("a", "/x")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "live"), "{h:?}");
    }
    let count =
        |statuses: &[StatusCode], s: StatusCode| statuses.iter().filter(|&&x| x == s).count();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(bed.addr, get("a", "/broke/x")).await.0);
    }
    assert!(
        count(&statuses, StatusCode::BAD_GATEWAY) >= 2,
        "{statuses:?}"
    );
    assert!(count(&statuses, StatusCode::OK) >= 2, "{statuses:?}");
    // No retry in the route's policy: the dead node shows too.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send(bed.addr, get("a", "/once/x")).await.0);
    }
    assert!(
        count(&statuses, StatusCode::BAD_GATEWAY) >= 2,
        "{statuses:?}"
    );
}

// ------------------------------------------------------------ node picking

#[tokio::test]
async fn a_full_node_is_skipped_and_all_full_is_503_upstream_busy() {
    let slow = |name: &'static str| {
        backend(move |_req: Request<Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Response::new(full(name))
        })
    };
    let (a, b) = (slow("a").await, slow("b").await);
    let bed = simple(
        pool(
            &[a, b],
            Algorithm::RoundRobin,
            UpstreamOptions {
                max_requests_per_node: Some(1),
                ..UpstreamOptions::default()
            },
        ),
        RouteOptions::default(),
    )
    .await;
    let addr = bed.addr;
    let first = tokio::spawn(async move { send(addr, get("x", "/")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = tokio::spawn(async move { send(addr, get("x", "/")).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, h, _) = send(addr, get("x", "/")).await;
    assert_eq!(
        (status, reason(&h)),
        (StatusCode::SERVICE_UNAVAILABLE, Some("upstream-busy"))
    );
    assert!(h.contains_key("retry-after"));
    let names: HashSet<String> = [first.await.unwrap(), second.await.unwrap()]
        .into_iter()
        .map(|(s, _, b)| {
            assert_eq!(s, StatusCode::OK);
            b
        })
        .collect();
    assert_eq!(names.len(), 2, "the second request skipped the full node");
    // Both bodies are done: the nodes are free again.
    assert_eq!(send(addr, get("x", "/")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_its_node() {
    let mut nodes = Vec::new();
    for name in ["n0", "n1", "n2"] {
        nodes.push(named_backend(name).await.0);
    }
    let bed = simple(
        pool(
            &nodes,
            Algorithm::RoundRobin,
            UpstreamOptions {
                sticky_cookie: Some("xlb_node".into()),
                ..UpstreamOptions::default()
            },
        ),
        RouteOptions::default(),
    )
    .await;
    let (_, h, first) = send(bed.addr, get("a", "/")).await;
    let set = h["set-cookie"].to_str().unwrap().to_string();
    let value = set
        .strip_prefix("xlb_node=")
        .and_then(|rest| rest.strip_suffix("; Path=/; HttpOnly"))
        .unwrap_or_else(|| panic!("{set}"));
    assert_eq!(value.len(), 16, "{set}");
    for _ in 0..8 {
        let req = Request::get("/")
            .header("host", "a")
            .header("cookie", format!("theme=dark; xlb_node={value}"))
            .body(full(""))
            .unwrap();
        let (_, h, body) = send(bed.addr, req).await;
        assert_eq!(body, first, "the session stays on its node");
        assert!(h.get("set-cookie").is_none(), "already the right value");
    }
    // A value naming no node: picked afresh and told the new value.
    let req = Request::get("/")
        .header("host", "a")
        .header("cookie", "xlb_node=0000000000000000")
        .body(full(""))
        .unwrap();
    let (_, h, _) = send(bed.addr, req).await;
    assert!(h["set-cookie"].to_str().unwrap().starts_with("xlb_node="));
}

#[tokio::test]
async fn hash_on_a_header_sends_each_key_to_one_node() {
    let mut nodes = Vec::new();
    for name in ["n0", "n1", "n2", "n3"] {
        nodes.push(named_backend(name).await.0);
    }
    let bed = simple(
        pool(
            &nodes,
            Algorithm::ConsistentHash,
            UpstreamOptions {
                hash_on: HashOn::Header(HeaderName::from_static("x-user")),
                ..UpstreamOptions::default()
            },
        ),
        RouteOptions::default(),
    )
    .await;
    let seen: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    for round in 0..3 {
        for user in 0..16 {
            let req = Request::get(format!("/r{round}"))
                .header("host", "a")
                .header("x-user", format!("user-{user}"))
                .body(full(""))
                .unwrap();
            let body = send(bed.addr, req).await.2;
            seen.lock()
                .unwrap()
                .entry(format!("user-{user}"))
                .or_default()
                .insert(body);
        }
    }
    let seen = seen.lock().unwrap();
    for (user, nodes) in seen.iter() {
        assert_eq!(nodes.len(), 1, "{user} moved: {nodes:?}");
    }
    let used: HashSet<&String> = seen.values().flatten().collect();
    assert!(used.len() >= 2, "keys spread over the nodes: {used:?}");
}
