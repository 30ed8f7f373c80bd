//! The whole request pipeline over loopback: routing by host and path,
//! round robin over an upstream's nodes, a dead node retried away (a
//! refused connection never carried the request, so even a POST moves on),
//! and the error answers (400, 404, 503 with Retry-After) a client sees.
mod support;

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    forward::ERROR_HEADER,
    options::UpstreamOptions,
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

/// A backend answering every request (its body read first) with what
/// `answer` makes of its header fields.
async fn backend<F>(answer: F) -> SocketAddr
where
    F: Fn(&http::HeaderMap) -> String + Clone + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let _ = body.collect().await;
                        let text = answer(&parts.headers);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A backend answering every request with its name.
async fn named_backend(name: &'static str) -> SocketAddr {
    backend(move |_| name.to_string()).await
}

async fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

fn pool(addrs: &[SocketAddr]) -> Arc<Pool> {
    weighted_pool(addrs, 1)
}

fn weighted_pool(addrs: &[SocketAddr], weight: u32) -> Arc<Pool> {
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(id, addr)| Node {
            id,
            addr: *addr,
            weight,
        })
        .collect();
    let upstream = Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap());
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    Arc::new(Pool::new("p", upstream, balancer, UpstreamOptions::default(), None).unwrap())
}

struct Bed {
    proxy: SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn bed(api: Vec<SocketAddr>, web: Vec<SocketAddr>) -> Bed {
    let mut api_route = RouteSpec::new("api", "api");
    api_route.hosts = vec!["api.example.com".into()];
    api_route.paths = vec![PathMatch::Prefix("/api/".into())];
    let mut web_route = RouteSpec::new("web", "web");
    web_route.paths = vec![PathMatch::Prefix("/".into())];
    let table = RouteTable::build(vec![api_route, web_route]).unwrap();
    let mut pools = HashMap::new();
    pools.insert("api".to_string(), pool(&api));
    pools.insert("web".to_string(), pool(&web));
    serve_proxy(Proxy::new(Arc::new(table), pools)).await
}

/// `proxy` served on a loopback port with the default limits.
async fn serve_proxy(proxy: Proxy) -> Bed {
    let (addr, tx) = support::serve_proxy(proxy).await;
    Bed {
        proxy: addr,
        _stop: tx,
    }
}

/// One request on a fresh HTTP/1.1 connection: (status, reason header, body).
async fn send(
    proxy: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (StatusCode, Option<String>, String) {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status();
    let reason = resp
        .headers()
        .get(ERROR_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(resp.headers().contains_key(http::header::RETRY_AFTER));
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, reason, String::from_utf8_lossy(&body).into_owned())
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn routes_by_host_and_path_and_round_robins_the_nodes() {
    let (b1, b2, b3) = (
        named_backend("b1").await,
        named_backend("b2").await,
        named_backend("b3").await,
    );
    let bed = bed(vec![b1, b2], vec![b3]).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let (status, _, body) = send(bed.proxy, get("api.example.com", "/api/items")).await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.get("b1"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("b2"), Some(&5), "{counts:?}");
    // Another host, or the api host outside /api/: the web route.
    assert_eq!(
        send(bed.proxy, get("www.example.com", "/api/items"))
            .await
            .2,
        "b3"
    );
    assert_eq!(
        send(bed.proxy, get("api.example.com", "/index.html"))
            .await
            .2,
        "b3"
    );
}

#[tokio::test]
async fn a_dead_node_is_retried_away() {
    let (live, dead) = (named_backend("live").await, dead_addr().await);
    let bed = bed(vec![live], vec![dead, live]).await;
    for _ in 0..6 {
        let (status, reason, body) = send(bed.proxy, get("www.example.com", "/")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "live"),
            "{reason:?}"
        );
    }
    // A refused connection never carried the request: a POST with a body
    // moves on to the live node too, body intact.
    for _ in 0..4 {
        let req = Request::post("/form")
            .header("host", "www.example.com")
            .body(Full::new(Bytes::from_static(b"a=1")))
            .unwrap();
        let (status, reason, body) = send(bed.proxy, req).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "live"),
            "{reason:?}"
        );
    }
}

#[tokio::test]
async fn error_answers_say_why() {
    let dead = dead_addr().await;
    let bed = bed(vec![dead], vec![dead]).await;
    // The only node refuses connections: the last failure, a 502.
    let (status, reason, _) = send(bed.proxy, get("api.example.com", "/api/x")).await;
    assert_eq!(
        (status, reason.as_deref()),
        (StatusCode::BAD_GATEWAY, Some("upstream-unreachable"))
    );
    // A path spelled to dodge routing.
    let (status, reason, _) = send(bed.proxy, get("api.example.com", "/api/../admin")).await;
    assert_eq!(
        (status, reason.as_deref()),
        (StatusCode::BAD_REQUEST, Some("ambiguous-path"))
    );
    // HTTP/1.1 without Host.
    let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let (status, reason, _) = send(bed.proxy, req).await;
    assert_eq!(
        (status, reason.as_deref()),
        (StatusCode::BAD_REQUEST, Some("bad-request-target"))
    );
}

#[tokio::test]
async fn no_route_is_a_404() {
    let b = named_backend("b").await;
    let mut only = RouteSpec::new("only", "api");
    only.hosts = vec!["api.example.com".into()];
    let table = RouteTable::build(vec![only]).unwrap();
    let mut pools = HashMap::new();
    pools.insert("api".to_string(), pool(&[b]));
    let mut drained = RouteSpec::new("drained", "drained");
    drained.hosts = vec!["drained.example.com".into()];
    let table = RouteTable::build(vec![table.routes()[0].spec().clone(), drained]).unwrap();
    pools.insert("drained".to_string(), weighted_pool(&[b], 0));
    let bed = serve_proxy(Proxy::new(Arc::new(table), pools)).await;
    let addr = bed.proxy;
    let (status, reason, _) = send(addr, get("other.example.com", "/")).await;
    assert_eq!(
        (status, reason.as_deref()),
        (StatusCode::NOT_FOUND, Some("no-route"))
    );
    assert_eq!(send(addr, get("api.example.com", "/")).await.2, "b");
    // Every node drained (weight 0): 503, a reason and Retry-After.
    let (status, reason, _) = send(addr, get("drained.example.com", "/")).await;
    assert_eq!(
        (status, reason.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no-healthy-node"))
    );
}

/// A backend answering with the forwarding headers it was sent.
async fn forwarding_echo() -> SocketAddr {
    backend(|headers| {
        let h = |n: &str| {
            let all: Vec<&str> = headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            all.join("|")
        };
        format!(
            "xff={};proto={};real={};fwd={}",
            h("x-forwarded-for"),
            h("x-forwarded-proto"),
            h("x-real-ip"),
            h("forwarded")
        )
    })
    .await
}

/// Only a source in `trusted_proxies` passes its X-Forwarded-For chain
/// (and X-Forwarded-Proto, Forwarded, X-Real-IP) on; from anyone else the
/// backend sees the peer's address alone, whatever the client wrote.
#[tokio::test]
async fn only_trusted_proxies_pass_their_forwarding_headers() {
    let echo = forwarding_echo().await;
    let cases: [(&[&str], &str); 3] = [
        (&[], "xff=127.0.0.1;proto=http;real=;fwd="),
        (
            &["10.0.0.0/8", "127.0.0.1"],
            "xff=198.51.100.7, 127.0.0.1;proto=https;real=198.51.100.7;fwd=for=198.51.100.7",
        ),
        (&["::1/128"], "xff=127.0.0.1;proto=http;real=;fwd="),
    ];
    for (trusted, want) in cases {
        let mut route = RouteSpec::new("all", "echo");
        route.paths = vec![PathMatch::Prefix("/".into())];
        let table = RouteTable::build(vec![route]).unwrap();
        let mut pools = HashMap::new();
        pools.insert("echo".to_string(), pool(&[echo]));
        let prefixes = trusted.iter().map(|p| p.parse().unwrap()).collect();
        let bed =
            serve_proxy(Proxy::new(Arc::new(table), pools).with_trusted_proxies(prefixes)).await;
        let req = Request::get("/")
            .header("host", "www.example.com")
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "198.51.100.7")
            .header("forwarded", "for=198.51.100.7")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = send(bed.proxy, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, want, "trusted {trusted:?}");
    }
}
