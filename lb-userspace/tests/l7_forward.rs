//! The proxy core over real sockets on loopback: a hyper backend, xlb's
//! server and forwarder in front of it, and HTTP/1.1 and HTTP/2
//! (prior-knowledge) clients. Checks what a user sees: the backend's
//! answer, the proxy headers the backend received, hop-by-hop headers gone,
//! and 502 with a reason when the backend is down.
use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpListener, sync::watch};
use xlb::l7::{
    body::ClientBody,
    forward::{Forwarder, ForwarderConfig, ERROR_HEADER},
    headers::Downstream,
    server::{serve, ConnInfo, ServerLimits},
};

/// A backend that answers with the request's headers, one per line.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut lines = format!("{} {}\n", req.method(), req.uri());
                    for (k, v) in req.headers() {
                        lines += &format!("{}: {}\n", k, v.to_str().unwrap_or("?"));
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    lines += &format!("body: {}\n", String::from_utf8_lossy(&body));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(lines))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// xlb's server in front of `node`; returns its address and the shutdown
/// switch.
async fn proxy(node: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forwarder = Forwarder::new(ForwarderConfig {
        connect_timeout: Duration::from_secs(1),
        ..ForwarderConfig::default()
    });
    let (tx, rx) = watch::channel(false);
    tokio::spawn(serve(
        listener,
        None,
        ServerLimits::default(),
        move |req: Request<ClientBody>, info: ConnInfo| {
            let forwarder = forwarder.clone();
            async move {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| req.uri().authority().map(|a| a.to_string()));
                let down = Downstream {
                    client: &info.peer_ip,
                    proto: "http",
                    host: host.as_deref(),
                    host_field: None,
                    version: req.version(),
                    trusted: false,
                };
                match forwarder.forward(req.map(|b| b.boxed()), node, &down).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            }
        },
        rx,
    ));
    (addr, tx)
}

async fn send(
    proxy: SocketAddr,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http1_request_reaches_the_backend_with_proxy_headers() {
    let node = backend().await;
    let (proxy, _stop) = proxy(node).await;
    let req = Request::post("/echo?x=1")
        .header("host", "www.example.com")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-forwarded-proto", "https")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, headers, body) = send(proxy, false, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("POST /echo?x=1\n"), "{body}");
    assert!(body.contains("host: www.example.com\n"), "{body}");
    assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
    assert!(
        body.contains("x-forwarded-proto: http\n"),
        "client's claim replaced: {body}"
    );
    assert!(
        body.contains("x-forwarded-host: www.example.com\n"),
        "{body}"
    );
    assert!(body.contains("via: 1.1 xlb\n"), "{body}");
    assert!(body.contains("x-end-to-end: kept\n"), "{body}");
    assert!(
        !body.contains("x-hop"),
        "Connection-named header leaked: {body}"
    );
    assert!(body.contains("body: payload\n"), "{body}");
    assert_eq!(headers.get("via").unwrap(), "1.1 xlb");
}

#[tokio::test]
async fn http2_prior_knowledge_is_proxied_to_an_http1_backend() {
    let node = backend().await;
    let (proxy, _stop) = proxy(node).await;
    let req = Request::get("http://api.example.com/v1/items")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(proxy, true, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("GET /v1/items\n"), "{body}");
    // :authority became Host for the HTTP/1.1 upstream.
    assert!(body.contains("host: api.example.com\n"), "{body}");
    assert!(body.contains("via: 2 xlb\n"), "{body}");
}

#[tokio::test]
async fn a_dead_backend_is_a_502_with_a_reason() {
    // A port that was free a moment ago: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (proxy, _stop) = proxy(dead).await;
    let req = Request::get("/")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = send(proxy, false, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get(ERROR_HEADER).unwrap(), "upstream-unreachable");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let node = backend().await;
    let (proxy, stop) = proxy(node).await;
    stop.send(true).unwrap();
    // Bounded wait for the listener to close.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the proxy still accepts connections after shutdown"
    );
}
