//! The gateway plugins, seen on the wire: curl (a real client) and a
//! hyper client against xlb's server and proxy on 127.0.0.1, with hyper
//! backends in this process that count what reaches them. Plugin configs
//! are parsed from the YAML a user writes.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    options::{RouteOptions, UpstreamOptions},
    plugin::{Plugin, PluginChain},
    plugins::{
        self,
        consumers::{ConsumerConfig, Consumers},
        jwt_auth::{JwtAuth, JwtAuthConfig},
        PluginEnv, PluginsConfig,
    },
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

/// A backend: answers `/big` with 20 KB of HTML and anything else with a
/// short text; echoes what it saw of the auth headers as `x-seen-*`;
/// counts requests.
async fn backend(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
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
                let svc = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let body = if req.uri().path() == "/big" {
                            "<p>xlb compresses this line of text.</p>\n".repeat(500)
                        } else {
                            format!("hello from {name}\n")
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        let h = resp.headers_mut();
                        h.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
                        h.insert("x-backend", name.parse().unwrap());
                        h.insert("server", "backend/1.0".parse().unwrap());
                        for (seen, header) in [
                            ("x-seen-consumer", "x-consumer-username"),
                            ("x-seen-api-key", "x-api-key"),
                            ("x-seen-authorization", "authorization"),
                            ("x-seen-user", "x-user"),
                            ("x-seen-sub", "x-sub"),
                        ] {
                            if let Some(v) = req.headers().get(header) {
                                h.insert(seen, v.clone());
                            }
                        }
                        Ok::<_, Infallible>(resp)
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

fn pool(id: &str, addr: SocketAddr) -> Arc<Pool> {
    let nodes = vec![Node {
        id: 0,
        addr,
        weight: 1,
    }];
    let upstream = Arc::new(Upstream::new(nodes, UpstreamConfig::default()).unwrap());
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false).unwrap();
    Arc::new(Pool::new(id, upstream, balancer, UpstreamOptions::default(), None).unwrap())
}

/// The chain that `plugins:` YAML builds, with `consumers`.
fn chain(yaml: &str, consumers: &[ConsumerConfig], upstreams: &[&str]) -> PluginChain {
    let cfg: PluginsConfig = serde_yaml_ng::from_str(yaml).expect("plugins YAML");
    let env = PluginEnv {
        route: "r",
        consumers: Arc::new(Consumers::build(consumers).unwrap()),
        upstream_exists: &|u| upstreams.contains(&u),
        deny_sink: None,
    };
    plugins::build(&cfg, &env).expect("plugins build")
}

/// xlb with one catch-all route to upstream `u` (and more upstreams for
/// traffic splits) whose plugins are `chain`.
async fn xlb(
    chain: PluginChain,
    pools: Vec<(&str, Arc<Pool>)>,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let mut route = RouteSpec::new("r", "u");
    route.paths = vec![PathMatch::Prefix("/".into())];
    route.options = std::sync::Arc::new(RouteOptions {
        plugins: chain,
        ..RouteOptions::default()
    });
    let table = RouteTable::build(vec![route]).unwrap();
    let pools: HashMap<String, Arc<Pool>> =
        pools.into_iter().map(|(k, p)| (k.to_string(), p)).collect();
    support::serve_proxy(Proxy::new(Arc::new(table), pools)).await
}

/// What curl got: status, headers (lower-case names), body.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl against `url` with `args`; `-i` output split into its parts.
async fn curl(url: String, args: &[&str]) -> Got {
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
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
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
        Got {
            status,
            headers,
            body: body.to_string(),
        }
    })
    .await
    .unwrap()
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn key_auth_lets_consumers_in_and_keeps_the_key_from_the_node() {
    let (b, hits) = backend("b").await;
    let consumers = [ConsumerConfig {
        name: "alice".into(),
        key_sha256: Some(sha256_hex("alice-key-7f3a")),
        basic_auth: None,
    }];
    let (addr, _stop) = xlb(
        chain("key-auth: {}", &consumers, &["u"]),
        vec![("u", pool("u", b))],
    )
    .await;
    let url = format!("http://{addr}/");

    let none = curl(url.clone(), &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("x-xlb-error"), Some("unauthorized"));
    assert_eq!(none.header("www-authenticate"), Some("Key"));
    let wrong = curl(url.clone(), &["-H", "X-API-Key: bob-key"]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused request reached the node"
    );

    // The right key; a forged consumer header is replaced.
    let ok = curl(
        url.clone(),
        &[
            "-H",
            "X-API-Key: alice-key-7f3a",
            "-H",
            "X-Consumer-Username: root",
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-seen-consumer"), Some("alice"));
    assert_eq!(
        ok.header("x-seen-api-key"),
        None,
        "the key reached the node"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_passwords() {
    let (b, hits) = backend("b").await;
    let consumers = [ConsumerConfig {
        name: "carol".into(),
        key_sha256: None,
        basic_auth: Some(plugins::consumers::BasicCredConfig {
            username: "carol".into(),
            password_bcrypt: bcrypt::hash("open sesame", 4).unwrap(),
        }),
    }];
    let (addr, _stop) = xlb(
        chain("basic-auth: {}", &consumers, &["u"]),
        vec![("u", pool("u", b))],
    )
    .await;
    let url = format!("http://{addr}/");
    let bad = curl(url.clone(), &["-u", "carol:guess"]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.header("www-authenticate"), Some("Basic realm=\"xlb\""));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    for _ in 0..2 {
        let ok = curl(url.clone(), &["-u", "carol:open sesame"]).await;
        assert_eq!(ok.status, 200, "{ok:?}");
        assert_eq!(ok.header("x-seen-consumer"), Some("carol"));
        assert_eq!(ok.header("x-seen-authorization"), None);
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWS signed with HMAC-SHA256 under `secret` (for forged tokens).
fn hs256(header: &str, claims: &str, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn jwt_auth_refuses_every_bad_token_before_the_node() {
    let (b, hits) = backend("b").await;
    // An ES256 key pair; the public key is what xlb trusts.
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public_pem = kp.public_key_pem();
    let pub_path = dir.path().join("es256.pem");
    std::fs::write(&pub_path, &public_pem).unwrap();
    let yaml = format!(
        "keys:\n  - {{ alg: ES256, public_key_file: {} }}\n  - {{ alg: HS256, secret_base64: AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow }}\naudience: api\nclaims_to_headers: {{ sub: x-sub }}\n",
        pub_path.display()
    );
    let cfg: JwtAuthConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    // A fixed clock: 2030-01-01.
    const NOW: u64 = 1_893_456_000;
    let jwt = JwtAuth::new(&cfg).unwrap().with_clock(|| NOW);
    let plugin: Arc<dyn Plugin> = Arc::new(jwt);
    let (addr, _stop) = xlb(PluginChain::new(vec![plugin]), vec![("u", pool("u", b))]).await;
    let url = format!("http://{addr}/");

    let es256 = |claims: serde_json::Value| {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap()
    };
    let good = es256(serde_json::json!({"sub": "u-42", "aud": "api", "exp": NOW + 600}));
    let ok = curl(
        url.clone(),
        &["-H", &format!("Authorization: Bearer {good}")],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-seen-sub"), Some("u-42"));
    assert_eq!(ok.header("x-seen-authorization"), None);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // RFC 7515 A.1's token verifies with its key but is long expired, and
    // has no audience.
    let rfc7515 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let mut tampered = good.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let payload_swapped = {
        let mut p: Vec<&str> = good.split('.').collect();
        let evil = b64(br#"{"sub":"admin","aud":"api","exp":1999999999}"#);
        p[1] = &evil;
        p.join(".")
    };
    let bad = [
        ("rfc7515 (expired)", rfc7515.to_string()),
        (
            "expired",
            es256(serde_json::json!({"sub": "u", "aud": "api", "exp": NOW - 3600})),
        ),
        (
            "not yet valid",
            es256(serde_json::json!({"sub": "u", "aud": "api", "nbf": NOW + 3600})),
        ),
        (
            "wrong audience",
            es256(serde_json::json!({"sub": "u", "aud": "billing", "exp": NOW + 600})),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(br#"{"sub":"admin","aud":"api"}"#)
            ),
        ),
        (
            // The classic confusion: HMAC keyed with the trusted public key.
            "HS256 keyed with the ES256 public key",
            hs256(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                r#"{"sub":"admin","aud":"api","exp":1999999999}"#,
                public_pem.as_bytes(),
            ),
        ),
        ("tampered signature", tampered),
        ("swapped payload", payload_swapped),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in bad {
        let got = curl(
            url.clone(),
            &["-H", &format!("Authorization: Bearer {token}")],
        )
        .await;
        assert_eq!(got.status, 401, "{what}: {got:?}");
        assert_eq!(got.header("x-xlb-error"), Some("unauthorized"), "{what}");
    }
    let none = curl(url.clone(), &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a refused token reached the node"
    );
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_allowed_origins() {
    let (b, hits) = backend("b").await;
    let (addr, _stop) = xlb(
        chain(
            "cors: { allow_origins: [\"https://app.example\"], max_age: 10m, expose_headers: [x-backend] }",
            &[],
            &["u"],
        ),
        vec![("u", pool("u", b))],
    )
    .await;
    let url = format!("http://{addr}/api");
    let pre = curl(
        url.clone(),
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://app.example",
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: content-type",
        ],
    )
    .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("PUT")));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a preflight reached the node"
    );

    let actual = curl(url.clone(), &["-H", "Origin: https://app.example"]).await;
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        actual.header("access-control-expose-headers"),
        Some("x-backend")
    );
    assert_eq!(actual.header("vary"), Some("Origin"));
    let other = curl(url.clone(), &["-H", "Origin: https://evil.example"]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn compression_is_negotiated_and_decodes_to_the_original() {
    let (b, _) = backend("b").await;
    let (addr, _stop) = xlb(
        chain(
            "compression: {}\nresponse-headers: { hsts: { max_age: 365d, include_subdomains: true }, remove: [server] }",
            &[],
            &["u"],
        ),
        vec![("u", pool("u", b))],
    )
    .await;
    let url = format!("http://{addr}/big");
    let original = "<p>xlb compresses this line of text.</p>\n".repeat(500);
    let plain = curl(url.clone(), &[]).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, original);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        plain.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(plain.header("server"), None);
    for enc in ["gzip", "br", "zstd"] {
        let got = curl(
            url.clone(),
            &["--compressed", "-H", &format!("Accept-Encoding: {enc}")],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-encoding"), Some(enc), "{got:?}");
        assert_eq!(got.header("content-length"), None);
        assert_eq!(got.body, original, "{enc} did not decode to the original");
    }
    // A short body is left alone.
    let small = curl(format!("http://{addr}/small"), &["--compressed"]).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body, "hello from b\n");
}

#[tokio::test]
async fn traffic_split_sends_the_configured_share_and_matched_requests() {
    let (stable, stable_hits) = backend("stable").await;
    let (canary, canary_hits) = backend("canary").await;
    let (addr, _stop) = xlb(
        chain(
            "traffic-split:\n  match: [{ header: x-canary, value: \"1\", upstream: canary }]\n  weights: [{ upstream: canary, weight: 10 }, { upstream: _route, weight: 90 }]",
            &[],
            &["u", "canary"],
        ),
        vec![("u", pool("u", stable)), ("canary", pool("canary", canary))],
    )
    .await;
    // One keep-alive connection, 10 000 requests.
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let n = 10_000;
    for _ in 0..n {
        let req = Request::get("/")
            .header("host", "t")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    let to_canary = canary_hits.load(Ordering::SeqCst);
    assert_eq!(stable_hits.load(Ordering::SeqCst) + to_canary, n);
    // 10 % of 10 000 = 1 000; the standard deviation is 30: ±150 is 5σ.
    assert!(
        (850..=1150).contains(&to_canary),
        "{to_canary} of {n} went to the canary"
    );
    for _ in 0..20 {
        let req = Request::get("/")
            .header("host", "t")
            .header("x-canary", "1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.headers()["x-backend"], "canary");
        resp.into_body().collect().await.unwrap();
    }
}

/// An auth service: `Authorization: Bearer good` is allowed (with
/// `X-User: bob`), anything else refused with 403 and a body.
async fn auth_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let allowed = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer good")
                        && req
                            .headers()
                            .get("x-forwarded-uri")
                            .is_some_and(|v| v == "/doc?x=1")
                        && req
                            .headers()
                            .get("x-forwarded-method")
                            .is_some_and(|v| v == "GET");
                    let mut resp = if allowed {
                        let mut r = Response::new(Full::new(Bytes::new()));
                        r.headers_mut().insert("x-user", "bob".parse().unwrap());
                        r
                    } else {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"go away\n")));
                        *r.status_mut() = StatusCode::FORBIDDEN;
                        r
                    };
                    resp.headers_mut()
                        .insert("x-auth-internal", "secret".parse().unwrap());
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

#[tokio::test]
async fn forward_auth_asks_the_service_and_fails_closed() {
    let (b, hits) = backend("b").await;
    let auth = auth_service().await;
    let yaml =
        format!("forward-auth: {{ uri: \"http://{auth}/check\", upstream_headers: [x-user] }}");
    let (addr, _stop) = xlb(chain(&yaml, &[], &["u"]), vec![("u", pool("u", b))]).await;
    let url = format!("http://{addr}/doc?x=1");
    let ok = curl(
        url.clone(),
        &["-H", "Authorization: Bearer good", "-H", "X-User: mallory"],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("x-seen-user"), Some("bob"));
    let denied = curl(url.clone(), &["-H", "Authorization: Bearer bad"]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "go away\n");
    assert_eq!(
        denied.header("x-auth-internal"),
        None,
        "only client_headers pass"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The service gone: refused, not let through.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let yaml = format!("forward-auth: {{ uri: \"http://{dead_addr}/check\" }}");
    let (addr2, _stop2) = xlb(chain(&yaml, &[], &["u"]), vec![("u", pool("u", b))]).await;
    let down = curl(
        format!("http://{addr2}/"),
        &["-H", "Authorization: Bearer good"],
    )
    .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.header("x-xlb-error"), Some("auth-unavailable"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ip_restriction_refuses_denied_sources() {
    let (b, hits) = backend("b").await;
    let (addr, _stop) = xlb(
        chain("ip-restriction: { deny: [127.0.0.0/8] }", &[], &["u"]),
        vec![("u", pool("u", b))],
    )
    .await;
    let got = curl(format!("http://{addr}/"), &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.header("x-xlb-error"), Some("source-forbidden"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Control: allowed when only another network is denied.
    let (addr, _stop2) = xlb(
        chain("ip-restriction: { deny: [10.0.0.0/8] }", &[], &["u"]),
        vec![("u", pool("u", b))],
    )
    .await;
    assert_eq!(curl(format!("http://{addr}/"), &[]).await.status, 200);
}

#[test]
fn plugin_config_errors_name_the_field() {
    let cfg: PluginsConfig =
        serde_yaml_ng::from_str("cors: { allow_origins: [\"*\"], allow_credentials: true }\ntraffic-split: { weights: [{ upstream: nope, weight: 1 }] }")
            .unwrap();
    let env = PluginEnv {
        route: "r",
        consumers: Arc::new(Consumers::default()),
        upstream_exists: &|_| false,
        deny_sink: None,
    };
    let errors = plugins::build(&cfg, &env).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "cors.allow_credentials",
            "traffic-split.weights[0].upstream"
        ]
    );
    // An unknown plugin is a YAML error.
    let e = serde_yaml_ng::from_str::<PluginsConfig>("jwt-auht: {}").unwrap_err();
    assert!(e.to_string().contains("unknown field `jwt-auht`"), "{e}");
}

/// A backend that answers with the request body it received (and counts).
async fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
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
                let svc = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
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

#[tokio::test]
async fn request_validation_refuses_bad_bodies_and_headers_with_the_failing_path() {
    let (b, hits) = echo_backend().await;
    let yaml = r#"
request-validation:
  max_body_bytes: 1KiB
  headers: [{ name: x-tenant, pattern: '^[a-z]+$' }]
  body_schema:
    type: object
    required: [customer, items]
    properties:
      customer: { type: string }
      items:
        type: array
        items:
          type: object
          required: [sku, qty]
          properties: { sku: { type: string }, qty: { type: integer, minimum: 1 } }
"#;
    let (addr, _stop) = xlb(chain(yaml, &[], &["u"]), vec![("u", pool("u", b))]).await;
    let url = format!("http://{addr}/orders");
    let json = [
        "-H",
        "content-type: application/json",
        "-H",
        "x-tenant: acme",
    ];
    let post = |body: &str| {
        let mut a: Vec<String> = json.iter().map(|s| s.to_string()).collect();
        a.extend(["--data-binary".to_string(), body.to_string()]);
        a
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(url, &refs).await
        }
    };

    // Valid: forwarded byte for byte, also when sent chunked.
    let good = r#"{"customer":"c1","items":[{"sku":"a","qty":2}]}"#;
    let ok = run(post(good)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, good);
    let mut chunked = post(good);
    chunked.extend(["-H".into(), "transfer-encoding: chunked".into()]);
    let ok = run(chunked).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, good), "{ok:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // The schema's failure names the path of the bad value.
    let bad = run(post(
        r#"{"customer":"c1","items":[{"sku":"a","qty":2},{"sku":"b","qty":0}]}"#,
    ))
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.header("x-xlb-error"), Some("request-invalid"));
    assert!(bad.body.contains("body /items/1/qty: "), "{}", bad.body);
    let not_json = run(post("{customer")).await;
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.body.contains("body: not JSON"),
        "{}",
        not_json.body
    );
    // Headers: missing, or not matching.
    let no_tenant = curl(url.clone(), &["--data-binary", good]).await;
    assert_eq!(no_tenant.status, 400);
    assert!(
        no_tenant.body.contains("header x-tenant: missing"),
        "{}",
        no_tenant.body
    );
    let big = format!(r#"{{"customer":"{}","items":[]}}"#, "x".repeat(2000));
    let too_big = run(post(&big)).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.header("x-xlb-error"), Some("body-too-large"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a refused request reached the node"
    );

    // Control: without the plugin the same bad body reaches the node.
    let (addr2, _stop2) = xlb(chain("{}", &[], &["u"]), vec![("u", pool("u", b))]).await;
    let through = curl(
        format!("http://{addr2}/orders"),
        &["--data-binary", r#"{"items":[{"qty":0}]}"#],
    )
    .await;
    assert_eq!(through.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}
