//! `compression` as a browser sees it: headless Chromium (Debian's, which
//! `cargo xtask test` installs) loads a page through xlb whose script
//! fetches a large text with a synchronous XMLHttpRequest and writes into
//! the page what it got: the `Content-Encoding` the browser received, the
//! decoded text's length and its last line, and the page's own encoded and
//! decoded sizes (Navigation Timing). `--dump-dom` shows the result. Each
//! of gzip, br and zstd is checked, and a control without the plugin shows
//! the page arriving uncompressed.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    options::{RouteOptions, UpstreamOptions},
    plugins::{self, consumers::Consumers, PluginEnv, PluginsConfig},
    proxy::{Pool, Proxy},
    router::{PathMatch, RouteSpec, RouteTable},
};

/// The text the script fetches: numbered lines, then a last line it
/// reports.
fn data() -> String {
    let mut s = String::new();
    for i in 0..600 {
        s.push_str(&format!(
            "line {i:04}: the quick brown fox jumps over the lazy dog\n"
        ));
    }
    s.push_str("END-OF-DATA-7f3a");
    s
}

/// The page: a script that, once the page has loaded, fetches `/data.txt`
/// and reports, plus enough text that the page itself is compressed too.
fn page() -> String {
    let filler = "<p>xlb compresses pages for browsers.</p>\n".repeat(80);
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body>
<pre id="r">not run</pre>
{filler}<script>
// On load: the page's own sizes (Navigation Timing) are known only once its
// last byte arrived, which a script inside the streamed page may precede.
window.addEventListener("load", function () {{
var x = new XMLHttpRequest();
x.open("GET", "/data.txt", false);
x.send();
var t = x.responseText;
var nav = performance.getEntriesByType("navigation")[0];
document.getElementById("r").textContent =
  "status=" + x.status +
  " enc=" + (x.getResponseHeader("content-encoding") || "none") +
  " len=" + t.length +
  " tail=" + t.slice(t.lastIndexOf("\n") + 1) +
  " page-encoded=" + nav.encodedBodySize +
  " page-decoded=" + nav.decodedBodySize;
}});
</script></body></html>
"#
    )
}

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
                    let (body, ty) = match req.uri().path() {
                        "/data.txt" => (data(), "text/plain; charset=utf-8"),
                        _ => (page(), "text/html; charset=utf-8"),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut()
                        .insert("content-type", ty.parse().unwrap());
                    resp.headers_mut()
                        .insert("cache-control", "no-store".parse().unwrap());
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

/// Kills and reaps the browser if the test ends before it does.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium's DOM of `url` after load (bounded to 60 s).
fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile folder");
    let child = Command::new("chromium")
        .args([
            "--headless",
            // Tests run as root: Chromium's sandbox needs user namespaces.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromium does not run ({e}): `cargo xtask test` installs Debian's chromium")
        });
    let mut reap = Reap(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = reap.0.try_wait().unwrap() {
            use std::io::Read as _;
            let mut out = String::new();
            let mut err = String::new();
            reap.0
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            reap.0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(status.success(), "chromium: {status}\n{err}");
            return out;
        }
        assert!(Instant::now() < deadline, "chromium: no DOM within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the page's script reported, as `key=value` pairs.
fn report(dom: &str) -> HashMap<String, String> {
    let start = dom.find("<pre id=\"r\">").expect("the report element") + 12;
    let end = start + dom[start..].find("</pre>").unwrap();
    dom[start..end]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn chromium_decodes_every_encoding_and_its_script_sees_the_text() {
    let node = backend().await;
    let len = data().chars().count().to_string();
    for (yaml, want) in [
        ("compression: { encodings: [gzip] }", "gzip"),
        ("compression: { encodings: [br] }", "br"),
        ("compression: { encodings: [zstd] }", "zstd"),
        ("{}", "none"), // control: no plugin, nothing compressed
    ] {
        let (addr, _stop) = xlb(yaml, node).await;
        let url = format!("http://{addr}/page.html");
        let dom = tokio::task::spawn_blocking(move || chromium_dom(&url))
            .await
            .unwrap();
        let r = report(&dom);
        assert_eq!(
            r.get("status").map(String::as_str),
            Some("200"),
            "{want}: {dom}"
        );
        assert_eq!(r["enc"], want, "{dom}");
        assert_eq!(r["len"], len, "{want}: the decoded text's length");
        assert_eq!(r["tail"], "END-OF-DATA-7f3a", "{want}");
        let encoded: u64 = r["page-encoded"].parse().unwrap();
        let decoded: u64 = r["page-decoded"].parse().unwrap();
        assert_eq!(
            decoded,
            page().len() as u64,
            "{want}: the page's decoded size"
        );
        match want {
            "none" => assert_eq!(encoded, decoded, "control: the page came uncompressed"),
            _ => assert!(
                encoded * 3 < decoded,
                "{want}: page {encoded} bytes on the wire for {decoded} decoded"
            ),
        }
    }
}
