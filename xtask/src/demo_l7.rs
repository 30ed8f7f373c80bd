//! The L7 half of `cargo xtask demo`: a client namespace reaches an L7 VIP
//! (10.77.0.1) in the LB namespace over a veth link; xlb terminates HTTPS
//! for two host names (SNI picks the certificate), speaks HTTP/2, passes a
//! WebSocket through, redirects plain HTTP to HTTPS, and is reloaded while
//! a client keeps sending requests. Backends live on the LB namespace's
//! loopback. Everything is printed as a short report.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{bail, Context as _};
use xlb_tests::{netns::veth, xlb::Xlb, ChildGuard, Netns};

const VIP: &str = "10.77.0.1";
const CLIENT: &str = "10.77.0.2";
const PYTHON: &str = "/usr/bin/python3";
/// Backend name and loopback port (inside the LB namespace).
const BACKENDS: [(&str, u16); 4] = [("a1", 19001), ("a2", 19002), ("b1", 19003), ("a3", 19004)];
const WS_PORT: u16 = 19010;
const HOSTS: [&str; 2] = ["site-a.demo", "site-b.demo"];
/// Requests sent while the config is reloaded.
const LOAD: usize = 3000;

/// Runs the L7 demo; `bin` is the xlb binary (already in `XLB_BIN`).
pub fn run() -> anyhow::Result<()> {
    println!("\n== xlb demo, part 2: the L7 proxy (HTTPS, SNI, HTTP/2, WebSocket, reload) ==");
    let client = Netns::new("l7client")?;
    let lb = Netns::new("l7lb")?;
    veth(&client, "eth0", &lb, "eth0")?;
    client.addr("eth0", &format!("{CLIENT}/24"))?;
    lb.addr("eth0", &format!("{VIP}/24"))?;
    for ns in [&client, &lb] {
        ns.up("eth0")?;
        ns.up("lo")?;
    }
    let dir = tempdir()?;
    let bundle = certificates(&dir)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (name, port) in BACKENDS {
        let listener = lb.enter(move || TcpListener::bind(("127.0.0.1", port)))??;
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            named_backend(listener, name, &stop)
        }));
    }
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/ws_peer.py");
    let mut ws = lb.command(PYTHON);
    ws.arg(&peers)
        .args([
            "server",
            "--port",
            &WS_PORT.to_string(),
            "--name",
            "ws-echo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut ws = ChildGuard::new(ws.spawn().context("starting the WebSocket echo backend")?);
    wait_ready(&mut ws)?;

    println!(
        "topology: client {CLIENT} -- veth -- {VIP} (L7 VIP: xlb, 2 workers) ; backends on the LB's loopback:"
    );
    println!(
        "  site-a.demo -> a1, a2 (round robin) ; site-b.demo -> b1 ; /ws on :80 -> WebSocket echo"
    );
    let mut xlb = Xlb::start(&lb, &config(&dir, false)).context("starting xlb")?;
    println!("xlb running in {} (pid {})\n", lb.name(), xlb.pid());

    println!("HTTPS, one listener, two names (SNI picks the certificate, ALPN picks HTTP/2):");
    for host in HOSTS {
        let subject = served_certificate(&client, host)?;
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        let mut version = String::new();
        for _ in 0..6 {
            let (v, body) = curl_https(&client, &bundle, host, "/")?;
            version = v;
            *answers.entry(body).or_default() += 1;
        }
        println!(
            "  https://{host}/  certificate {subject}, HTTP/{version}, answered by {answers:?}"
        );
    }
    let redirect = curl(
        &client,
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{VIP}/hello"),
        ],
        Some("site-a.demo"),
    )?;
    println!("  plain http://site-a.demo/hello  -> {redirect}");

    println!("\nWebSocket through xlb (HTTP/1.1 Upgrade on :80, /ws):");
    let out = client
        .command(PYTHON)
        .arg(&peers)
        .args([
            "client",
            "--url",
            &format!("ws://{VIP}/ws"),
            "--messages",
            "20",
        ])
        .output()
        .context("running the WebSocket client")?;
    let report = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("  {report}");

    plugins(&client)?;

    println!(
        "\nReload while traffic flows: {LOAD} HTTP/2 requests to site-a.demo, 5 reloads meanwhile"
    );
    let mut load = start_load(&client, &bundle, &dir, LOAD)?;
    for n in 1..=5 {
        std::thread::sleep(Duration::from_millis(150));
        let line = xlb.reload(&config(&dir, n % 2 == 1))?;
        let what = if n % 2 == 1 {
            "a3 joins site-a (weights 1:1:3)"
        } else {
            "a3 leaves"
        };
        println!("  reload {n}: {what}: {line}");
    }
    let overlapped = load.child_mut().try_wait()?.is_none();
    let codes = finish_load(load)?;
    println!(
        "  status codes of the {LOAD} requests: {codes:?} (load {} while the reloads ran)",
        if overlapped {
            "still running"
        } else {
            "had finished"
        }
    );
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        *after
            .entry(curl_https(&client, &bundle, "site-a.demo", "/")?.1)
            .or_default() += 1;
    }
    println!("  after the last reload (a3 in, weight 3), site-a answered by {after:?}");

    let status = xlb.stop().context("stopping xlb")?;
    stop.store(true, Ordering::Relaxed);
    drop(ws);
    for t in threads {
        let _ = t.join();
    }
    println!("\nxlb stopped ({status}); namespaces and files are removed now.");
    println!("=======================================================================");
    Ok(())
}

/// The `api` route's plugins as a client sees them: key-auth, a CORS
/// preflight, compression, the request id, a body refused by its schema.
fn plugins(client: &Netns) -> anyhow::Result<()> {
    println!(
        "\nPlugins on http://{VIP}/api (request-id, key-auth, CORS, compression, \
         request-validation; docs/plugins.md):"
    );
    let url = format!("http://{VIP}/api");
    let fmt =
        "%{http_code} www-authenticate=%header{www-authenticate} x-xlb-error=%header{x-xlb-error}";
    let none = curl(client, &["-sS", "-o", "/dev/null", "-w", fmt, &url], None)?;
    println!("  no key:           {none}");
    let fmt =
        " (status %{http_code}, content-encoding=%header{content-encoding}, decoded by curl, \
               x-request-id=%header{x-request-id})";
    let ok = curl(
        client,
        &[
            "-sS",
            "--compressed",
            "-H",
            "x-api-key: demo-key",
            "-H",
            "accept-encoding: zstd",
            "-w",
            fmt,
            &url,
        ],
        None,
    )?;
    println!("  X-API-Key: demo-key, Accept-Encoding: zstd: body {ok}");
    let fmt = "%{http_code} allow-origin=%header{access-control-allow-origin} allow-methods=%header{access-control-allow-methods}";
    let pre = curl(
        client,
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-X",
            "OPTIONS",
            "-H",
            "origin: https://app.demo",
            "-H",
            "access-control-request-method: PUT",
            "-w",
            fmt,
            &url,
        ],
        None,
    )?;
    println!("  CORS preflight from https://app.demo: {pre} (answered by xlb, not forwarded)");
    let bad = curl(
        client,
        &[
            "-sS",
            "-H",
            "x-api-key: demo-key",
            "-H",
            "content-type: application/json",
            "--data-binary",
            r#"{"qty": 0}"#,
            &url,
        ],
        None,
    )?;
    println!(
        "  POST {{\"qty\": 0}} (schema: qty ≥ 1): {} (refused by xlb, not forwarded)",
        bad.trim()
    );
    Ok(())
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(xlb_tests::names::unique("xlb-demo-l7"));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

/// A self-signed certificate per host name; returns the CA bundle (both).
fn certificates(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut bundle = String::new();
    for host in HOSTS {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()])?;
        let pem = ck.cert.pem();
        std::fs::write(dir.join(format!("{host}.pem")), &pem)?;
        std::fs::write(
            dir.join(format!("{host}.key")),
            ck.signing_key.serialize_pem(),
        )?;
        bundle += &pem;
    }
    let path = dir.join("bundle.pem");
    std::fs::write(&path, bundle)?;
    Ok(path)
}

fn config(dir: &Path, with_a3: bool) -> String {
    let cert = |h: &str| {
        format!(
            "{{id: {h}, names: [{h}], cert: \"{}\", key: \"{}\"{}}}",
            dir.join(format!("{h}.pem")).display(),
            dir.join(format!("{h}.key")).display(),
            if h == HOSTS[0] { ", default: true" } else { "" }
        )
    };
    let a3 = if with_a3 {
        format!(", {{address: \"127.0.0.1:{}\", weight: 3}}", BACKENDS[3].1)
    } else {
        String::new()
    };
    format!(
        "l7:
  workers: 2
  certificates:
    - {}
    - {}
  listeners:
    - {{name: https, address: \"{VIP}:443\", tls: {{certificates: [{}, {}]}}}}
    - {{name: http, address: \"{VIP}:80\"}}
  routes:
    - {{id: site-a, listeners: [https], hosts: [{}], upstream: a}}
    - {{id: site-b, listeners: [https], hosts: [{}], upstream: b}}
    - {{id: ws, listeners: [http], paths: [\"/ws\"], upstream: ws, timeouts: {{idle: 60s}}}}
    - {{id: api, listeners: [http], paths: [\"/api*\"], upstream: a, plugins: {{request-id: {{}}, key-auth: {{}}, cors: {{allow_origins: [\"https://app.demo\"]}}, compression: {{min_bytes: 0}}, request-validation: {{body_schema: {{type: object, properties: {{qty: {{type: integer, minimum: 1}}}}}}}}}}}}
    - {{id: to-https, listeners: [http], redirect_https: 443}}
  # demo-user's API key is `demo-key`: printf %s demo-key | sha256sum
  consumers:
    - {{name: demo-user, key_sha256: c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c}}
  upstreams:
    - {{id: a, nodes: [{{address: \"127.0.0.1:{}\"}}, {{address: \"127.0.0.1:{}\"}}{a3}]}}
    - {{id: b, nodes: [{{address: \"127.0.0.1:{}\"}}]}}
    - {{id: ws, nodes: [{{address: \"127.0.0.1:{WS_PORT}\"}}]}}
",
        cert(HOSTS[0]),
        cert(HOSTS[1]),
        HOSTS[0],
        HOSTS[1],
        HOSTS[0],
        HOSTS[1],
        BACKENDS[0].1,
        BACKENDS[1].1,
        BACKENDS[2].1,
    )
}

/// Answers every request on `listener` with `name` (one request per
/// connection), until `stop`.
fn named_backend(listener: TcpListener, name: &str, stop: &AtomicBool) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
            name.len()
        );
    }
}

fn wait_ready(child: &mut ChildGuard) -> anyhow::Result<()> {
    let out = child.child_mut().stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("the WebSocket backend did not start (is python3-websockets installed?)");
    }
    Ok(())
}

fn curl(ns: &Netns, args: &[&str], host: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = ns.command("curl");
    cmd.args(["--max-time", "5"]).args(args);
    if let Some(h) = host {
        cmd.args(["-H", &format!("host: {h}")]);
    }
    let out = cmd.output().context("running curl")?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// (HTTP version, body) of one HTTPS request to `host`.
fn curl_https(
    ns: &Netns,
    bundle: &Path,
    host: &str,
    path: &str,
) -> anyhow::Result<(String, String)> {
    let out = curl(
        ns,
        &[
            "-sS",
            "--http2",
            "--cacert",
            &bundle.display().to_string(),
            "--resolve",
            &format!("{host}:443:{VIP}"),
            "-w",
            "\n%{http_version}",
            &format!("https://{host}{path}"),
        ],
        None,
    )?;
    let (body, version) = out.rsplit_once('\n').unwrap_or(("", &out));
    Ok((version.to_string(), body.to_string()))
}

/// The subject of the certificate xlb serves for `host` (openssl s_client).
fn served_certificate(ns: &Netns, host: &str) -> anyhow::Result<String> {
    let script = format!(
        "openssl s_client -connect {VIP}:443 -servername {host} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName 2>/dev/null | tail -1"
    );
    let out = ns.command("sh").args(["-c", &script]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts one curl that sends `n` HTTP/2 requests (4 in parallel).
fn start_load(ns: &Netns, bundle: &Path, dir: &Path, n: usize) -> anyhow::Result<ChildGuard> {
    let urls = dir.join("urls.txt");
    let mut list = String::new();
    for i in 0..n {
        list += &format!("url = \"https://site-a.demo/load/{i}\"\noutput = \"/dev/null\"\n");
    }
    std::fs::write(&urls, list)?;
    let child = ns
        .command("curl")
        .args(["-sS", "--http2", "-Z", "--parallel-max", "4", "--cacert"])
        .arg(bundle)
        .args([
            "--resolve",
            &format!("site-a.demo:443:{VIP}"),
            "-w",
            "%{http_code}\n",
            "-K",
        ])
        .arg(&urls)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the load")?;
    Ok(ChildGuard::new(child))
}

fn finish_load(mut load: ChildGuard) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = String::new();
    load.child_mut()
        .stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut out)?;
    let _ = load.child_mut().wait();
    let mut codes = BTreeMap::new();
    for c in out.lines() {
        *codes.entry(c.trim().to_string()).or_default() += 1;
    }
    Ok(codes)
}
