//! `request-id` with the request recording on (as with `observe:`): curl
//! against xlb's server and proxy on 127.0.0.1, a hyper backend that
//! echoes the ids it was sent, and a record sink installed in this test
//! binary that keeps every request record. One id per request: the
//! response, the node and the record must show the same value.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex, OnceLock},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    body::ClientBody,
    options::{RouteOptions, UpstreamOptions},
    plugin::PluginChain,
    plugins::{self, consumers::Consumers, PluginEnv, PluginsConfig},
    proxy::{Pool, Proxy},
    record::{self, RecordSink, RequestRecord},
    recording,
    router::{PathMatch, RouteSpec, RouteTable},
    server::{serve, ConnInfo, ServerLimits},
};

/// Keeps every record (the sink is process-wide: installed once).
struct Keep(Mutex<Vec<RequestRecord>>);

impl RecordSink for Keep {
    fn request(&self, r: RequestRecord) {
        self.0.lock().unwrap().push(r);
    }
    fn tls_handshake(&self, _: SocketAddr, _: Result<&'static str, &'static str>) {}
    fn connection(&self, _: SocketAddr, _: bool) {}
}

fn records() -> &'static Arc<Keep> {
    static KEEP: OnceLock<Arc<Keep>> = OnceLock::new();
    KEEP.get_or_init(|| {
        let k = Arc::new(Keep(Mutex::new(Vec::new())));
        assert!(record::install(k.clone()), "a sink was already installed");
        k
    })
}

/// The record of the request whose path is `path` (paths are unique per
/// test); waits (bounded) for the body to end.
async fn record_of(path: &str) -> RequestRecord {
    for _ in 0..200 {
        if let Some(r) = records()
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.path() == path)
        {
            return r.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no record for {path}");
}

/// A backend that echoes the id headers it got as `x-seen-<name>`
/// (`-` when absent).
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    for name in ["x-request-id", "x-correlation-id", "traceparent"] {
                        let seen: Vec<&str> = req
                            .headers()
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap())
                            .collect();
                        let v = if seen.is_empty() {
                            "-".to_string()
                        } else {
                            seen.join(",")
                        };
                        resp.headers_mut().insert(
                            format!("x-seen-{name}")
                                .parse::<http::HeaderName>()
                                .unwrap(),
                            v.parse().unwrap(),
                        );
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// xlb with the recording on and one route per `(path prefix, plugins YAML)`.
async fn xlb(
    routes: &[(&str, &str)],
    node: SocketAddr,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    records();
    let mut specs = Vec::new();
    for (i, (prefix, yaml)) in routes.iter().enumerate() {
        let cfg: PluginsConfig = serde_yaml_ng::from_str(yaml).expect("plugins YAML");
        let chain: PluginChain = plugins::build(
            &cfg,
            &PluginEnv {
                route: "r",
                consumers: Arc::new(Consumers::build(&[]).unwrap()),
                upstream_exists: &|_| true,
                deny_sink: None,
            },
        )
        .expect("plugins build");
        let mut route = RouteSpec::new(format!("r{i}"), "u");
        route.paths = vec![PathMatch::Prefix((*prefix).into())];
        route.options = std::sync::Arc::new(RouteOptions {
            plugins: chain,
            ..RouteOptions::default()
        });
        specs.push(route);
    }
    let upstream = Arc::new(
        Upstream::new(
            vec![Node {
                id: 0,
                addr: node,
                weight: 1,
            }],
            UpstreamConfig::default(),
        )
        .unwrap(),
    );
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    let pool =
        Arc::new(Pool::new("u", upstream, balancer, UpstreamOptions::default(), None).unwrap());
    let pools: HashMap<String, Arc<Pool>> = [("u".to_string(), pool)].into();
    let proxy = Arc::new(Proxy::new(
        Arc::new(RouteTable::build(specs).unwrap()),
        pools,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let name: Arc<str> = "test".into();
    tokio::spawn(serve(
        listener,
        None,
        ServerLimits::default(),
        move |req: Request<ClientBody>, info: ConnInfo| {
            let proxy = proxy.clone();
            let name = name.clone();
            Box::pin(recording::observe(
                name,
                req,
                info,
                move |r, c| async move { proxy.handle(r, c).await },
            ))
        },
        rx,
    ));
    (addr, tx)
}

/// curl's status and headers (lower-case names; a header sent twice is
/// kept twice).
async fn curl(url: String, args: &[&str]) -> (u16, Vec<(String, String)>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(&args)
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let head = text.split_once("\r\n\r\n").expect("a head").0.to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers)
    })
    .await
    .unwrap()
}

fn one<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let all: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(all.len() <= 1, "{name} {all:?} more than once");
    all.first().copied()
}

#[tokio::test]
async fn one_request_id_reaches_the_node_the_client_and_the_log() {
    let node = backend().await;
    let (addr, _stop) = xlb(
        &[
            ("/plain", "{}"),
            ("/v4", "request-id: {}"),
            ("/v7", "request-id: { header: X-Correlation-Id, algorithm: uuid-v7, trust_incoming: false }"),
            ("/auth", "{ request-id: {}, key-auth: {} }"),
        ],
        node,
    )
    .await;

    // Control: no plugin, the recording's own id (32 hex digits).
    let (status, h) = curl(format!("http://{addr}/plain/1"), &[]).await;
    assert_eq!(status, 200);
    let id = one(&h, "x-request-id").expect("an id").to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(one(&h, "x-seen-x-request-id"), Some(id.as_str()));
    assert_eq!(record_of("/plain/1").await.request_id_str(), id);

    // The plugin: a UUID v4, the same at the node, on the response and in
    // the record, and the trace id is the same value.
    let (status, h) = curl(format!("http://{addr}/v4/1"), &[]).await;
    assert_eq!(status, 200);
    let id = one(&h, "x-request-id").expect("an id").to_string();
    let uuid = uuid::Uuid::parse_str(&id).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(one(&h, "x-seen-x-request-id"), Some(id.as_str()));
    assert_eq!(record_of("/v4/1").await.request_id_str(), id);
    let tp = one(&h, "x-seen-traceparent").unwrap();
    assert_eq!(&tp[3..35], uuid.simple().to_string(), "{tp}");

    // A client's id is kept, everywhere.
    let (_, h) = curl(
        format!("http://{addr}/v4/2"),
        &["-H", "X-Request-Id: client-7"],
    )
    .await;
    assert_eq!(one(&h, "x-request-id"), Some("client-7"));
    assert_eq!(one(&h, "x-seen-x-request-id"), Some("client-7"));
    assert_eq!(record_of("/v4/2").await.request_id_str(), "client-7");

    // Another header, v7, client ids not trusted: the node gets only the
    // plugin's header (the recording's X-Request-Id is gone), the client
    // gets it back, the record has it.
    let (_, h) = curl(
        format!("http://{addr}/v7/1"),
        &["-H", "X-Correlation-Id: forged"],
    )
    .await;
    let id = one(&h, "x-correlation-id").expect("an id").to_string();
    assert_ne!(id, "forged");
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(one(&h, "x-seen-x-correlation-id"), Some(id.as_str()));
    assert_eq!(one(&h, "x-seen-x-request-id"), Some("-"));
    assert_eq!(one(&h, "x-request-id"), None);
    assert_eq!(record_of("/v7/1").await.request_id_str(), id);

    // A refusal by a later plugin carries the id, and the record has it.
    let (status, h) = curl(format!("http://{addr}/auth/1"), &[]).await;
    assert_eq!(status, 401);
    let id = one(&h, "x-request-id")
        .expect("an id on the 401")
        .to_string();
    uuid::Uuid::parse_str(&id).expect("the plugin's UUID");
    assert_eq!(record_of("/auth/1").await.request_id_str(), id);
}
