//! Request smuggling over raw TCP: each attempt hides a second request
//! (`GET /smuggled`) behind ambiguous HTTP/1.1 framing. Whatever xlb does
//! with the first request (reject it with a 4xx, or forward it with one
//! unambiguous framing), the hidden request must never reach the backend.
//! The HTTP/2 downgrade variants (H2.CL, H2.TE, CR/LF in fields) are in
//! `l7_hostile.rs`: they need hand-made HTTP/2 frames.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use xlb::l7::{
    body::ClientBody,
    forward::{Forwarder, ForwarderConfig},
    headers::Downstream,
    server::{serve, ConnInfo, ServerLimits},
};

type Seen = Arc<Mutex<Vec<String>>>;

/// A backend that records every request line it receives.
async fn recording_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let line = format!("{} {}", req.method(), req.uri());
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        s.lock().unwrap().push(format!(
                            "{line} body={:?}",
                            body.map(|b| String::from_utf8_lossy(&b).into_owned())
                        ));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn proxy_to(node: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let forwarder = Forwarder::new(ForwarderConfig::default());
    let (tx, rx) = watch::channel(false);
    tokio::spawn(serve(
        listener,
        None,
        ServerLimits::default(),
        move |req: Request<ClientBody>, info: ConnInfo| {
            let forwarder = forwarder.clone();
            async move {
                let down = Downstream {
                    client: &info.peer_ip,
                    proto: "http",
                    host: Some("x"),
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

/// Sends raw bytes, then reads whatever comes back for a bounded time.
async fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Status codes of every response in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn no_smuggled_request_ever_reaches_the_backend() {
    let cases: Vec<(&str, String)> = vec![
        (
            "CL.TE: Content-Length and chunked together",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "TE.CL: chunked body longer than Content-Length claims",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
                SMUGGLED.len()
            ),
        ),
        (
            "TE.TE: obfuscated second Transfer-Encoding",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "TE with space before the colon",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "duplicate Content-Length with different values",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd{SMUGGLED}"
            ),
        ),
        (
            "invalid chunk size",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "chunk size overflow",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabcd\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "bare LF line endings in the head",
            format!("POST /a HTTP/1.1\nHost: x\nContent-Length: 4\n\nabcd{SMUGGLED}"),
        ),
        (
            "Transfer-Encoding folded onto a continuation line (obs-fold)",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Content-Length with a sign",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd{SMUGGLED}"),
        ),
        (
            "Content-Length as a list of different values",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 40\r\n\r\nabcd{SMUGGLED}"
            ),
        ),
        (
            "chunked not the final transfer coding",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "bare LF after a chunk size",
            format!(
                "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
    ];
    let (node, seen) = recording_backend().await;
    let (proxy, _stop) = proxy_to(node).await;
    let mut report = Vec::new();
    for (name, bytes) in &cases {
        seen.lock().unwrap().clear();
        let text = raw(proxy, bytes.as_bytes()).await;
        let codes = statuses(&text);
        let got = seen.lock().unwrap().clone();
        report.push(format!("{name}: client saw {codes:?}, backend saw {got:?}"));
        // Smuggling is the backend seeing a request the proxy did not see
        // as one: every request that reaches the backend must be one the
        // client got its own successful answer for. (A second request that
        // both sides frame the same way is plain pipelining.)
        let answered = codes.iter().filter(|c| (200..300).contains(*c)).count();
        assert!(
            got.len() <= answered,
            "{name}: backend saw {got:?} but the client got {codes:?}"
        );
        // The first request is either rejected with a 4xx, or forwarded
        // with one framing; never a 5xx blamed on the upstream.
        let first = codes.first().copied().unwrap_or(0);
        assert!(
            (400..500).contains(&first) || first == 200,
            "{name}: client saw {codes:?} ({text:?}), backend {got:?}"
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// Bare LF is framing only inside chunked bodies, where it is refused
/// (400); in a request head it is read as a line end (RFC 9112 §2.2 lets a
/// recipient do so) and the head reaches the node re-serialised with CRLF,
/// so a bare-LF head followed by a second request is plain pipelining:
/// both sides see the same two requests, and the client gets both answers.
#[tokio::test]
async fn bare_lf_is_refused_in_chunked_framing_and_reframed_in_heads() {
    let (node, seen) = recording_backend().await;
    let (proxy, _stop) = proxy_to(node).await;
    let head = raw(
        proxy,
        format!("POST /a HTTP/1.1\nHost: x\nContent-Length: 4\n\nabcd{SMUGGLED}").as_bytes(),
    )
    .await;
    assert_eq!(statuses(&head), vec![200, 200], "{head:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "POST /a body=Ok(\"abcd\")".to_string(),
            "GET /smuggled body=Ok(\"\")".to_string()
        ]
    );
    seen.lock().unwrap().clear();
    let chunked = raw(
        proxy,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&chunked), vec![400], "{chunked:?}");
    assert!(seen.lock().unwrap().iter().all(|s| !s.contains("abcd")));
}
