//! Differential test: the same random and mutated response byte streams
//! go to xlb's HTTP/1.1 client and to hyper's, each over a real loopback
//! connection from a scripted node, and the two must agree on framing:
//! the final status (interim `1xx` skipped), the body bytes and trailers,
//! whether the head or the body is refused, and where the next response
//! starts (whether the connection can carry the next request: hyper then
//! reads a sentinel response, xlb puts the connection back in its pool).
//!
//! Bounded: [`CASES`] streams per run (`XLB_H1_DIFF_CASES` to change), the
//! seed printed first and taken from `XLB_H1_DIFF_SEED` to replay a run.
//! It can fail: with the one change of refusing a tab after a chunk size
//! (hyper accepts it), a run of 3 000 streams found the disagreement at
//! case 694.
//! `101` is left out (both hand the connection over; the WebSocket tests
//! cover it), and so are heads near the size limits (unit tests in
//! `head.rs`).
use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{checkout, idle_count, send, Checkin, Conn, PoolKey, Stream};
use crate::l7::{body::empty_up_body, lane::General};

/// Streams per run.
const CASES: usize = 400;

/// The response a node sends for the second request on a connection.
const SENTINEL: &[u8] = b"HTTP/1.1 299 Next\r\ncontent-length: 4\r\n\r\nNEXT";

/// What one client made of a stream.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// No usable final head.
    HeadRefused,
    /// A head; then the body and trailers, or a refused body.
    Response {
        status: u16,
        body: Result<BodyAndTrailers, ()>,
    },
}

impl Outcome {
    /// A response read to its end, as either client gives it.
    async fn of<B: hyper::body::Body>(resp: http::Response<B>) -> Outcome {
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(c) => {
                let trailers = fields(c.trailers());
                Ok((c.to_bytes().to_vec(), trailers))
            }
            Err(_) => Err(()),
        };
        Outcome::Response { status, body }
    }
}

/// A body's bytes and its trailer fields (name, value).
type BodyAndTrailers = (Vec<u8>, Vec<(String, String)>);

/// One scripted node connection: reads a request head, writes `stream`,
/// then either closes, or waits for a second request head and answers it
/// with [`SENTINEL`].
async fn node(listener: TcpListener, stream: Vec<u8>, second: bool) {
    let Ok((mut s, _)) = listener.accept().await else {
        return;
    };
    if read_head(&mut s).await.is_none() {
        return;
    }
    let _ = s.write_all(&stream).await;
    if second && read_head(&mut s).await.is_some() {
        let _ = s.write_all(SENTINEL).await;
    }
    // Dropped: the connection closes.
}

async fn read_head(s: &mut TcpStream) -> Option<()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(())
}

async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn request(method: &Method) -> Request<crate::l7::body::UpBody> {
    Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "node")
        .body(empty_up_body())
        .unwrap()
}

fn fields(map: Option<&http::HeaderMap>) -> Vec<(String, String)> {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect()
    })
    .unwrap_or_default()
}

/// hyper's client on `stream`; with `second`, whether the next request
/// on the connection got the sentinel.
async fn hyper_side(stream: &[u8], method: &Method, second: bool) -> (Outcome, bool) {
    let (listener, addr) = listen().await;
    let script = tokio::spawn(node(listener, stream.to_vec(), second));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let outcome = match sender.send_request(request(method)).await {
        Err(_) => Outcome::HeadRefused,
        Ok(resp) => Outcome::of(resp).await,
    };
    let mut next = false;
    if second {
        // Until hyper has finished with the first exchange.
        if std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .is_ok()
        {
            if let Ok(resp) = sender.send_request(request(&Method::GET)).await {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|c| c.to_bytes());
                next = status == 299 && body.is_ok_and(|b| b == Bytes::from_static(b"NEXT"));
            }
        }
    }
    drop(sender);
    let _ = script.await;
    (outcome, next)
}

/// xlb's client on `stream`; with `second`, whether the connection went
/// back to the pool and then got the sentinel.
async fn own_side(stream: &[u8], method: &Method, second: bool, client: u64) -> (Outcome, bool) {
    let (listener, addr) = listen().await;
    let script = tokio::spawn(node(listener, stream.to_vec(), second));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let key = PoolKey {
        client,
        node: addr,
        name: None,
    };
    let checkin = Checkin {
        key: key.clone(),
        max_idle: 4,
        idle_timeout: Duration::from_secs(30),
    };
    let conn = Conn::new(Stream::Tcp(tcp));
    let (head, body) = request(method).into_parts();
    let outcome =
        match send::<General>(conn, (&head).into(), body, addr, Some(checkin.clone())).await {
            Err(_) => Outcome::HeadRefused,
            Ok(resp) => Outcome::of(resp).await,
        };
    let mut next = false;
    if second && idle_count(client) == 1 {
        if let Some(conn) = checkout(&key) {
            let (head, body) = request(&Method::GET).into_parts();
            if let Ok(resp) = send::<General>(conn, (&head).into(), body, addr, Some(checkin)).await
            {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|c| c.to_bytes());
                next = status == 299 && body.is_ok_and(|b| b == Bytes::from_static(b"NEXT"));
            }
        }
    }
    super::clear(client);
    let _ = script.await;
    (outcome, next)
}

/// A random response, well-formed or close to it, and the request method.
fn generate(rng: &mut StdRng) -> (Vec<u8>, Method, bool) {
    let method = if rng.random_bool(0.15) {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        match rng.random_range(0..3) {
            0 => out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
            1 => out.extend_from_slice(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
            ),
            _ => out.extend_from_slice(b"HTTP/1.1 102 Processing\r\n\r\n"),
        }
    }
    let version = if rng.random_bool(0.85) { "1.1" } else { "1.0" };
    let status = [200, 200, 200, 201, 204, 304, 404, 500][rng.random_range(0..8)];
    out.extend_from_slice(format!("HTTP/{version} {status} X\r\n").as_bytes());
    let body: Vec<u8> = (0..rng.random_range(0..40))
        .map(|_| b"abcdefghij\r\n0123456789"[rng.random_range(0..22)])
        .collect();
    let chunked = rng.random_bool(0.4);
    let te = [
        "chunked",
        "gzip, chunked",
        "Chunked",
        "chunked, gzip",
        "identity",
        "chunked ",
    ];
    if chunked || rng.random_bool(0.1) {
        let v = te[rng.random_range(0..te.len())];
        out.extend_from_slice(format!("transfer-encoding: {v}\r\n").as_bytes());
    }
    let n = body.len();
    let lengths = [
        format!("{n}"),
        format!("{}", n + 1),
        format!("{}", n.saturating_sub(1)),
        format!("{n}, {n}"),
        format!("{n}, {}", n + 2),
        format!("+{n}"),
        format!("0x{n:x}"),
        "18446744073709551616".to_string(),
        String::new(),
    ];
    if !chunked && rng.random_bool(0.8) || rng.random_bool(0.15) {
        let i = if rng.random_bool(0.6) {
            0
        } else {
            rng.random_range(0..lengths.len())
        };
        out.extend_from_slice(format!("content-length: {}\r\n", lengths[i]).as_bytes());
        if rng.random_bool(0.1) {
            let j = rng.random_range(0..lengths.len());
            out.extend_from_slice(format!("Content-Length: {}\r\n", lengths[j]).as_bytes());
        }
    }
    match rng.random_range(0..6) {
        0 => out.extend_from_slice(b"connection: close\r\n"),
        1 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        2 => out.extend_from_slice(b"keep-alive: timeout=5\r\n"),
        _ => {}
    }
    if rng.random_bool(0.3) {
        out.extend_from_slice(b"x-field: some value\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if chunked {
        let mut rest = &body[..];
        while !rest.is_empty() {
            let take = rng.random_range(1..=rest.len());
            let ext = if rng.random_bool(0.1) { ";a=b" } else { "" };
            let size = if rng.random_bool(0.1) {
                format!("{take:X}")
            } else {
                format!("{take:x}")
            };
            out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..take]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[take..];
        }
        out.extend_from_slice(b"0\r\n");
        if rng.random_bool(0.2) {
            out.extend_from_slice(b"x-trailer: t\r\n");
        }
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&body);
    }
    // Mutations: a few byte edits that framing bugs are made of.
    let mutated = rng.random_bool(0.35);
    if mutated {
        let interesting = b"\r\n :;0f\t\x00\x7fzZ9,";
        for _ in 0..rng.random_range(1..4) {
            if out.is_empty() {
                break;
            }
            let at = rng.random_range(0..out.len());
            let b = if rng.random_bool(0.8) {
                interesting[rng.random_range(0..interesting.len())]
            } else {
                rng.random()
            };
            match rng.random_range(0..4) {
                0 => out[at] = b,
                1 => out.insert(at, b),
                2 => {
                    out.remove(at);
                }
                _ => out.truncate(at),
            }
        }
    }
    (out, method, mutated)
}

/// Whether my framing of `stream` runs to the close (the boundary check
/// would wait for a close that never comes).
fn close_delimited(stream: &[u8], method: &Method) -> bool {
    let mut buf = bytes::BytesMut::from(stream);
    loop {
        match super::head::parse(&mut buf) {
            Ok(Some(h)) => match super::framing::framing(h.status, h.version, &h.headers, method) {
                Ok(super::framing::Disposition::Interim) => continue,
                Ok(super::framing::Disposition::Final(f)) => {
                    return f == super::framing::Framing::Close
                }
                Err(_) => return false,
            },
            _ => return false,
        }
    }
}

#[test]
fn own_and_hyper_clients_frame_every_stream_alike() {
    let seed: u64 = std::env::var("XLB_H1_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases: usize = std::env::var("XLB_H1_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CASES);
    eprintln!("h1 differential: seed {seed} (replay: XLB_H1_DIFF_SEED={seed}), {cases} cases");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut refused, mut mutated_n, mut reused) = (0, 0, 0);
    for case in 0..cases {
        let (stream, method, mutated) = generate(&mut rng);
        mutated_n += usize::from(mutated);
        let text = String::from_utf8_lossy(&stream).into_owned();
        rt.block_on(async {
            let limit = Duration::from_secs(10);
            let run = async {
                let (theirs, _) = hyper_side(&stream, &method, false).await;
                let (ours, _) = own_side(&stream, &method, false, 1_000_000 + case as u64).await;
                assert_eq!(
                    ours, theirs,
                    "seed {seed} case {case}: {method} → {text:?}: xlb (left) and hyper (right) disagree"
                );
                let whole = matches!(&ours, Outcome::Response { body: Ok(_), .. });
                refused += usize::from(!whole);
                if whole && !close_delimited(&stream, &method) {
                    let (_, theirs) = hyper_side(&stream, &method, true).await;
                    let (_, ours) = own_side(&stream, &method, true, 2_000_000 + case as u64).await;
                    assert_eq!(
                        ours, theirs,
                        "seed {seed} case {case}: {method} → {text:?}: next response on the connection: xlb {ours}, hyper {theirs}"
                    );
                    reused += usize::from(ours);
                }
            };
            tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| panic!("seed {seed} case {case}: {text:?} hung"));
        });
    }
    eprintln!(
        "h1 differential: {cases} streams ({mutated_n} mutated): {refused} refused or cut off by both, {reused} connections reused by both"
    );
    // The generator must exercise both sides of each decision.
    assert!(
        refused > 0 && refused < cases,
        "{refused} of {cases} refused"
    );
    assert!(reused > 0, "no stream left a reusable connection");
}
