//! Reload under load: while clients send a steady stream of requests
//! through `xlb` (keep-alive and fresh connections, GETs and POSTs with
//! bodies), the config is changed and reloaded 20 times — weights, routes
//! added and removed, nodes added and removed, header edits — and a broken
//! file once. Not one request may fail, every reload must be answered,
//! the broken one refused with the running config untouched, and the last
//! config must be the one serving.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use xlb_tests::{privilege::privileged, xlb::Xlb, Netns};

const PROXY: &str = "127.0.0.1:18080";
const BACKENDS: [&str; 3] = ["127.0.0.1:19001", "127.0.0.1:19002", "127.0.0.1:19003"];
const CLIENTS: usize = 6;
const RELOADS: usize = 20;

/// A backend answering `name` (and echoing the POST body's length), and
/// the `x-edit` header it received, so a test sees header edits applied.
fn backend(
    ns: &Netns,
    addr: &'static str,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
                let Ok(Ok((stream, _))) = accepted else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| async move {
                        let edit = req
                            .headers()
                            .get("x-edit")
                            .map(|v| v.to_str().unwrap_or("?").to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                        let text = format!("{name} {} {edit}", body.unwrap_or(usize::MAX));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    })
}

/// The config of reload `n`: its changes cycle through weights, an extra
/// route, the node set and a header edit.
fn config(n: usize) -> String {
    let weights = [(1, 1, 1), (5, 1, 1), (1, 5, 1), (1, 1, 5)][n % 4];
    let nodes = if n % 3 == 1 {
        // b1 leaves the pool for this generation (it keeps running: the
        // requests in flight to it finish on the old generation).
        format!(
            "        - {{address: \"{}\", weight: {}}}\n        - {{address: \"{}\", weight: {}}}\n",
            BACKENDS[1], weights.1, BACKENDS[2], weights.2
        )
    } else {
        format!(
            "        - {{address: \"{}\", weight: {}}}\n        - {{address: \"{}\", weight: {}}}\n        - {{address: \"{}\", weight: {}}}\n",
            BACKENDS[0], weights.0, BACKENDS[1], weights.1, BACKENDS[2], weights.2
        )
    };
    let extra = if n.is_multiple_of(2) {
        "    - id: extra\n      paths: [\"/extra\"]\n      upstream: only3\n".to_string()
    } else {
        String::new()
    };
    format!(
        "l7:
  workers: 2
  listeners:
    - name: web
      address: \"{PROXY}\"
  routes:
{extra}    - id: all
      paths: [\"/*\"]
      upstream: pool
      request_headers: {{set: {{x-edit: \"gen{n}\"}}}}
  upstreams:
    - id: pool
      algorithm: round_robin
      nodes:
{nodes}    - id: only3
      nodes:
        - {{address: \"{}\"}}
",
        BACKENDS[2]
    )
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }
}

/// One client: alternates keep-alive and fresh connections, GET and POST
/// (with a 4 KiB body), until `stop`.
fn client(ns: &Netns, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> JoinHandle<()> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let proxy: SocketAddr = PROXY.parse().unwrap();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let stream = match tokio::net::TcpStream::connect(proxy).await {
                    Ok(s) => s,
                    Err(e) => {
                        tally.fail(format!("client {id}: connect: {e}"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let (mut sender, conn) =
                    match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                        Ok(x) => x,
                        Err(e) => {
                            tally.fail(format!("client {id}: handshake: {e}"));
                            continue;
                        }
                    };
                tokio::spawn(conn);
                // Odd rounds: one request per connection; even: ten.
                let per_conn = if round % 2 == 1 { 1 } else { 10 };
                for k in 0..per_conn {
                    let post = (round + k).is_multiple_of(3);
                    let req = Request::builder()
                        .method(if post { "POST" } else { "GET" })
                        .uri(format!("/r{id}/{round}/{k}"))
                        .header("host", "reload.test")
                        .body(Full::new(if post {
                            Bytes::from(vec![b'x'; 4096])
                        } else {
                            Bytes::new()
                        }))
                        .unwrap();
                    if sender.ready().await.is_err() {
                        tally.fail(format!(
                            "client {id}: connection closed by xlb before request {k}"
                        ));
                        break;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                            match body {
                                Ok(b)
                                    if status == StatusCode::OK
                                        && (!post
                                            || String::from_utf8_lossy(&b).contains(" 4096 ")) =>
                                {
                                    tally.ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(b) => tally.fail(format!(
                                    "client {id}: {status} {:?}",
                                    String::from_utf8_lossy(&b)
                                )),
                                Err(e) => tally.fail(format!("client {id}: body: {e}")),
                            }
                        }
                        Err(e) => {
                            tally.fail(format!("client {id}: request: {e}"));
                            break;
                        }
                    }
                }
            }
        });
    })
}

/// GET `path` through the proxy from inside the namespace: the body.
fn get(ns: &Netns, path: &str) -> String {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "5", "-H", "host: reload.test"])
        .arg(format!("http://{PROXY}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn twenty_reloads_under_load_lose_no_request() {
    if !privileged("l7_reload::twenty_reloads_under_load_lose_no_request") {
        return;
    }
    let ns = Netns::new("l7reload").expect("namespace");
    ns.up("lo").expect("lo up");
    let stop_backends = Arc::new(AtomicBool::new(false));
    let backends: Vec<JoinHandle<()>> = BACKENDS
        .iter()
        .zip(["b1", "b2", "b3"])
        .map(|(addr, name)| backend(&ns, addr, name, stop_backends.clone()))
        .collect();
    let mut xlb = Xlb::start(&ns, &config(0)).expect("xlb starts");
    // The first answer proves the path works before load starts.
    assert!(get(&ns, "/warmup").starts_with('b'), "{}", xlb.stderr());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<JoinHandle<()>> = (0..CLIENTS)
        .map(|id| client(&ns, id, stop.clone(), tally.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let mut answers = Vec::new();
    for n in 1..=RELOADS {
        answers.push(xlb.reload(&config(n)).expect("reload answered"));
        if n == RELOADS / 2 {
            let before = tally.ok.load(Ordering::Relaxed);
            let broken = config(n).replace("upstream: pool", "upstream: missing");
            let answer = xlb.reload(&broken).expect("broken reload answered");
            assert!(
                answer.starts_with("xlb reload failed") && answer.contains("l7.routes"),
                "a broken file must be refused, naming the field: {answer}"
            );
            // The running config is untouched: requests keep flowing.
            std::thread::sleep(Duration::from_millis(150));
            assert!(
                tally.ok.load(Ordering::Relaxed) > before,
                "traffic stopped after a refused reload"
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    eprintln!("reload under load: {ok} requests ok, {failed} failed, {RELOADS} reloads + 1 broken");
    assert_eq!(
        failed,
        0,
        "requests failed during reloads: {:?}\nxlb stderr:\n{}",
        tally.failures.lock().unwrap(),
        xlb.stderr()
    );
    assert!(
        ok >= 200,
        "too little traffic to prove anything: {ok} requests"
    );
    for (i, a) in answers.iter().enumerate() {
        assert!(
            a.starts_with("xlb reloaded generation="),
            "reload {}: {a}",
            i + 1
        );
    }
    // The last config serves: RELOADS is even, so /extra exists and goes
    // to b3 only, and the header edit names the last generation.
    assert_eq!(RELOADS % 2, 0);
    for _ in 0..5 {
        let body = get(&ns, "/extra");
        assert!(
            body.starts_with("b3 "),
            "/extra must reach b3 only: {body:?}"
        );
    }
    let body = get(&ns, "/other");
    assert!(
        body.ends_with(&format!("gen{RELOADS}")),
        "last header edit not applied: {body:?}"
    );

    xlb.stop().expect("xlb stops");
    stop_backends.store(true, Ordering::Relaxed);
    for b in backends {
        let _ = b.join();
    }
}
