//! The upstream keep-alive race, on real sockets on 127.0.0.1: a backend
//! that closes connections idle for exactly its keep-alive time, and POSTs
//! timed around that edge, through xlb's server and proxy. A request
//! written on a connection the node is closing would be lost (a POST is
//! never replayed), so the client would get a 502.
mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    options::UpstreamOptions,
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TBody = BoxBody<Bytes, BoxError>;

/// The backend's keep-alive time, announced as Node.js does.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// How late the backend picks up data that has arrived: its event loop
/// runs its timers before it polls its sockets (as libuv does), and a
/// loop iteration under load takes a few milliseconds. A keep-alive timer
/// that fires in that gap closes the socket with the request unread (the
/// kernel answers with a reset).
const LOOP_LAG: Duration = Duration::from_millis(3);

/// Reads one request (head and `content-length` body) that has begun to
/// arrive; `None` when the peer closed.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some(length)
}

/// A raw HTTP/1.1 backend that closes a connection idle for exactly
/// [`KEEP_ALIVE`] after its last response and says so in
/// `Keep-Alive: timeout=1`, like Node.js's `server.keepAliveTimeout`.
/// Counts the requests it answered.
async fn short_keepalive_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut deadline = Instant::now() + KEEP_ALIVE;
                loop {
                    if buf.is_empty() {
                        tokio::select! {
                            biased;
                            _ = tokio::time::sleep_until(deadline) => return,
                            r = s.readable() => if r.is_err() { return },
                        }
                        tokio::time::sleep(LOOP_LAG).await;
                        // Timers first: past the deadline the socket is
                        // closed even though a request is waiting in it.
                        if Instant::now() >= deadline {
                            return;
                        }
                    }
                    let Some(length) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    // Counted when the request is in, not after the answer
                    // is written: the client can read the answer and the
                    // test count before this task runs again.
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = format!("got {length}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nkeep-alive: timeout={}\r\n\r\n{body}",
                        body.len(),
                        KEEP_ALIVE.as_secs()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    deadline = Instant::now() + KEEP_ALIVE;
                }
            });
        }
    });
    (addr, served)
}

/// A raw HTTP/1.1 backend that answers the first request on each
/// connection and, on the second, reads it whole and closes without an
/// answer: from xlb's side just what a node closing an idle connection
/// under an arriving request looks like. Counts connections and the
/// requests it read, by method.
async fn closes_on_second_request() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conn_no = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            conn_no += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0..2 {
                    let mut first = [0u8; 8];
                    let k = s.peek(&mut first).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&first[..k]).to_string();
                    let method = head.split(' ').next().unwrap_or("").to_string();
                    if read_request(&mut s, &mut buf).await.is_none() {
                        return;
                    }
                    log.lock()
                        .unwrap()
                        .push(format!("conn {conn_no}: {method}"));
                    if n == 1 {
                        return;
                    }
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            });
        }
    });
    (addr, seen)
}

/// A GET whose pooled connection the node closes under it is sent again
/// on a new connection (the client gets its 200); a POST in the same spot
/// gets 502 `upstream-reset` and is not sent again.
#[tokio::test]
async fn a_get_goes_again_on_a_closed_pooled_connection_and_a_post_does_not() {
    let (node, seen) = closes_on_second_request().await;
    let (addr, _stop) = proxy_to(node).await;
    let send = |method: &'static str, path: &'static str| async move {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let body: TBody = Full::new(Bytes::from_static(b"form=1"))
            .map_err(|n| match n {})
            .boxed();
        let body = if method == "GET" {
            http_body_util::Empty::new().map_err(|n| match n {}).boxed()
        } else {
            body
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "app")
            .body(body)
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let reason = resp
            .headers()
            .get("x-xlb-error")
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status(), reason)
    };
    assert_eq!(send("GET", "/a").await, (StatusCode::OK, None));
    // Pooled connection 1 closes under the second GET: sent again on 2.
    assert_eq!(send("GET", "/b").await, (StatusCode::OK, None));
    assert_eq!(
        *seen.lock().unwrap(),
        ["conn 1: GET", "conn 1: GET", "conn 2: GET"]
    );
    // Pooled connection 2 closes under the POST: not sent again.
    assert_eq!(
        send("POST", "/c").await,
        (StatusCode::BAD_GATEWAY, Some("upstream-reset".to_string()))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["conn 1: GET", "conn 1: GET", "conn 2: GET", "conn 2: POST"]
    );
}

/// xlb's server and proxy with one route to `node` (default upstream
/// options); the server stops when the sender is dropped.
async fn proxy_to(node: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let nodes = vec![Node {
        id: 0,
        addr: node,
        weight: 1,
    }];
    let upstream = Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap());
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    let pool =
        Arc::new(Pool::new("u", upstream, balancer, UpstreamOptions::default(), None).unwrap());
    let mut route = RouteSpec::new("r", "u");
    route.paths = vec![PathMatch::Prefix("/".into())];
    let table = RouteTable::build(vec![route]).unwrap();
    let pools = HashMap::from([("u".to_string(), pool)]);
    let (addr, tx) = support::serve_proxy(Proxy::new(Arc::new(table), pools)).await;
    (addr, tx)
}

/// 10 000 POSTs with bodies from 16 clients, each on its own keep-alive
/// connection to xlb, in bursts of 25 separated by pauses that sweep
/// 970–1030 ms: xlb's pooled connections to the node sit idle right
/// around the node's 1 s keep-alive. Every POST must get the node's 200.
/// Before xlb honoured `Keep-Alive: timeout=` this run gave 502
/// `upstream-reset`s (see docs/threat-model.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_around_a_short_backend_keepalive_never_get_a_502() {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 25;
    const BURST: usize = 25;
    let (node, served) = short_keepalive_backend().await;
    let (addr, _stop) = proxy_to(node).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (failures, ok) = (failures.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            for round in 0..ROUNDS {
                // A pause of 970–1030 ms after the previous burst: the
                // upstream connection that carried this client's last
                // request has been idle about that long.
                if round > 0 {
                    let offset_ms = ((round * 7 + c * 3) % 13) as u64 * 5;
                    let pause =
                        KEEP_ALIVE + Duration::from_millis(offset_ms) - Duration::from_millis(30);
                    tokio::time::sleep(pause).await;
                }
                for i in 0..BURST {
                    let payload = format!("client {c} round {round} request {i} ").repeat(20);
                    let len = payload.len();
                    let body: TBody = Full::new(Bytes::from(payload))
                        .map_err(|n| match n {})
                        .boxed();
                    let req = Request::post("/submit")
                        .header("host", "app")
                        .body(body)
                        .unwrap();
                    sender.ready().await.unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    let status = resp.status();
                    let text = resp.into_body().collect().await.unwrap().to_bytes();
                    if status == StatusCode::OK && text == format!("got {len}").as_bytes() {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        eprintln!("client {c} round {round} request {i}: {status} {text:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("clients finish")
            .unwrap();
    }
    let (ok, failures) = (ok.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
    eprintln!("{ok} ok, {failures} failed");
    assert_eq!(failures, 0, "POSTs answered with something else than 200");
    assert_eq!(ok, CLIENTS * ROUNDS * BURST);
    assert_eq!(
        served.load(Ordering::SeqCst),
        ok,
        "each POST reached the node once"
    );
}
