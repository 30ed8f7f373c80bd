//! `jwt-auth` with keys from a JWKS URL and from an OpenID Connect
//! issuer's discovery document. The issuer is a real HTTP server in this
//! test (hyper on 127.0.0.1) serving ES256 keys made here, rotating them
//! as an identity provider does; curl is the client; the backend counts
//! what reaches it.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{EncodingKey, Header};
use tokio::net::TcpListener;
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    options::{RouteOptions, UpstreamOptions},
    plugins::{self, consumers::Consumers, PluginEnv, PluginsConfig},
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

/// An ES256 signing key and its public JWK.
struct SigningKey {
    pem: String,
    jwk: serde_json::Value,
}

fn es256(kid: &str) -> SigningKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || x || y
    assert_eq!(raw.len(), 65);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    SigningKey {
        pem: kp.serialize_pem(),
        jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }),
    }
}

/// A token signed by `key`, claiming `kid` (usually the key's own).
fn token(key: &SigningKey, kid: &str, iss: &str) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(kid.to_string());
    let claims = serde_json::json!({ "sub": "u1", "iss": iss, "exp": 4_000_000_000u64 });
    jsonwebtoken::encode(
        &h,
        &claims,
        &EncodingKey::from_ec_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// What the issuer serves.
#[derive(Default)]
struct IssuerState {
    keys: Vec<serde_json::Value>,
    /// Answer 500 to key-set fetches.
    failing: bool,
    /// `issuer` in the discovery document.
    issuer_name: String,
    key_fetches: usize,
    discovery_fetches: usize,
}

type Issuer = Arc<Mutex<IssuerState>>;

/// The issuer: `/.well-known/openid-configuration` and `/keys` (with
/// `Cache-Control: max-age=3600`).
async fn issuer() -> (SocketAddr, Issuer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state: Issuer = Arc::new(Mutex::new(IssuerState::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let st = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let st = st.clone();
                    async move {
                        let mut s = st.lock().unwrap();
                        let (status, body) = match req.uri().path() {
                            "/.well-known/openid-configuration" => {
                                s.discovery_fetches += 1;
                                let doc = serde_json::json!({
                                    "issuer": s.issuer_name,
                                    "jwks_uri": format!("http://{addr}/keys"),
                                });
                                (StatusCode::OK, doc.to_string())
                            }
                            "/keys" => {
                                s.key_fetches += 1;
                                match s.failing {
                                    true => (StatusCode::INTERNAL_SERVER_ERROR, "down".into()),
                                    false => (
                                        StatusCode::OK,
                                        serde_json::json!({ "keys": s.keys }).to_string(),
                                    ),
                                }
                            }
                            _ => (StatusCode::NOT_FOUND, String::new()),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        resp.headers_mut()
                            .insert("cache-control", "public, max-age=3600".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

/// A backend that counts requests.
async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// xlb with one catch-all route whose plugins are `yaml`.
async fn xlb(yaml: &str, node: SocketAddr) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let cfg: PluginsConfig = serde_yaml_ng::from_str(yaml).expect("plugins YAML");
    let chain = plugins::build(
        &cfg,
        &PluginEnv {
            route: "r",
            consumers: Arc::new(Consumers::build(&[]).unwrap()),
            upstream_exists: &|_| true,
            deny_sink: None,
        },
    )
    .expect("plugins build");
    let mut route = RouteSpec::new("r", "u");
    route.paths = vec![PathMatch::Prefix("/".into())];
    route.options = std::sync::Arc::new(RouteOptions {
        plugins: chain,
        ..RouteOptions::default()
    });
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
    support::serve_proxy(Proxy::new(
        Arc::new(RouteTable::build(vec![route]).unwrap()),
        pools,
    ))
    .await
}

/// The status curl got for `url` with `Authorization: Bearer <token>`.
async fn status(url: String, token: String) -> u16 {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg(&url)
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "curl: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .parse()
            .expect("a status")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn jwks_uri_keys_rotate_in_and_out() {
    let (iss_addr, iss) = issuer().await;
    let (node, hits) = backend().await;
    let a = es256("key-a");
    let b = es256("key-b");
    iss.lock().unwrap().keys = vec![a.jwk.clone()];
    // max-age 3600 is held to max_refresh (2s); unknown kids refetch at
    // most once a second.
    let (addr, _stop) = xlb(
        &format!(
            "jwt-auth: {{ jwks_uri: 'http://{iss_addr}/keys', min_refresh: 1s, max_refresh: 2s }}"
        ),
        node,
    )
    .await;
    let url = format!("http://{addr}/");
    let fetches = || iss.lock().unwrap().key_fetches;
    let mut served = 0;

    assert_eq!(status(url.clone(), token(&a, "key-a", "any")).await, 200);
    served += 1;
    assert_eq!(
        fetches(),
        1,
        "the set is fetched once, at the first request"
    );
    // A key the set does not have: refused, never at the node.
    assert_eq!(status(url.clone(), token(&b, "key-b", "any")).await, 401);
    assert_eq!(hits.load(Ordering::SeqCst), served);

    // Rotation: the issuer adds key-b; once a refetch may happen, a token
    // signed with it is accepted.
    iss.lock().unwrap().keys.push(b.jwk.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(url.clone(), token(&b, "key-b", "any")).await, 200);
    served += 1;

    // Made-up kids do not turn into a fetch each: 10 of them within a
    // second cause at most one refetch (plus at most one background one).
    let before = fetches();
    for _ in 0..10 {
        assert_eq!(status(url.clone(), token(&b, "made-up", "any")).await, 401);
    }
    let during = fetches() - before;
    assert!(during <= 2, "{during} fetches for 10 unknown kids");

    // Removal: the issuer drops key-a; the background refresh (max-age
    // held to 2s) makes tokens signed with it refused.
    iss.lock().unwrap().keys = vec![b.jwk.clone()];
    let mut refused_after = None;
    for i in 0..60 {
        let s = status(url.clone(), token(&a, "key-a", "any")).await;
        if s == 401 {
            refused_after = Some(i);
            break;
        }
        assert_eq!(s, 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_after.is_some(),
        "key-a still accepted 6s after its removal"
    );
    assert_eq!(status(url.clone(), token(&b, "key-b", "any")).await, 200);
    served += 1;

    // The issuer fails: the last good set is kept (fetches go on failing).
    iss.lock().unwrap().failing = true;
    let before = fetches();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(
        fetches() > before,
        "no fetch was tried while the issuer failed"
    );
    assert_eq!(status(url.clone(), token(&b, "key-b", "any")).await, 200);
    served += 1;
    assert_eq!(status(url.clone(), token(&a, "key-a", "any")).await, 401);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        served,
        "a refused token reached the node"
    );
}

#[tokio::test]
async fn oidc_discovery_finds_the_key_set_and_checks_the_issuer() {
    let (iss_addr, iss) = issuer().await;
    let (node, hits) = backend().await;
    let k = es256("k1");
    let issuer_url = format!("http://{iss_addr}");
    {
        let mut s = iss.lock().unwrap();
        s.keys = vec![k.jwk.clone()];
        s.issuer_name = issuer_url.clone();
    }
    let (addr, _stop) = xlb(
        &format!("jwt-auth: {{ oidc_issuer: '{issuer_url}' }}"),
        node,
    )
    .await;
    let url = format!("http://{addr}/");
    assert_eq!(status(url.clone(), token(&k, "k1", &issuer_url)).await, 200);
    {
        let s = iss.lock().unwrap();
        assert_eq!((s.discovery_fetches, s.key_fetches), (1, 1));
    }
    // The issuer is implied: a token from another one is refused.
    assert_eq!(
        status(url.clone(), token(&k, "k1", "https://evil.example")).await,
        401
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A discovery document naming another issuer gives no keys at all.
    let (iss2_addr, iss2) = issuer().await;
    {
        let mut s = iss2.lock().unwrap();
        s.keys = vec![k.jwk.clone()];
        s.issuer_name = "https://someone.else".into();
    }
    let issuer2 = format!("http://{iss2_addr}");
    let (addr2, _stop2) = xlb(&format!("jwt-auth: {{ oidc_issuer: '{issuer2}' }}"), node).await;
    assert_eq!(
        status(format!("http://{addr2}/"), token(&k, "k1", &issuer2)).await,
        401
    );
    {
        let s = iss2.lock().unwrap();
        assert_eq!((s.discovery_fetches, s.key_fetches), (1, 0));
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a refused token reached the node"
    );
}
