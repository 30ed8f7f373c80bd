//! `cargo xtask bench plugins`: what two gateway plugins cost, each against
//! the same xlb without it, in the same run — `jwt-auth` (HS256 and ES256
//! tokens) on ÷ off, and `compression` (gzip and zstd) on ÷ off.
//!
//! Every xlb instance has one worker pinned to one CPU; the backend (nginx)
//! and wrk (HTTP/1.1, 64 connections, one thread) share the other CPU, as
//! in `cargo xtask bench l7`. Each instance serves two routes: `/` without
//! plugins (readiness checks) and `/m/*`, the measured one, with the plugin
//! (or without, on the baseline instance). Both runs of a pair send the same
//! request bytes: the JWT pair sends the token to the baseline too, the
//! compression pair sends `Accept-Encoding` to the baseline too.
//!
//! - JWT: `GET /m/` (a 64-byte answer), the token in `Authorization`.
//! - Compression: `GET /m/page`, a 16 KiB HTML page of varied words that
//!   nginx serves from a file (`Content-Length` known, compressible about
//!   3×); the baseline sends it as is.
//!
//! Before measuring, each instance is checked with curl: the JWT instances
//! refuse a request without the token (401) and take one with it (200); the
//! compression instances answer with the expected `Content-Encoding` and
//! curl decodes it to the page. Rounds alternate the order within each
//! group; medians are reported with user and kernel CPU µs per request.
//!
//! Environment: `XLB_BIN`, `XLB_BENCH_SECONDS` (default 5),
//! `XLB_BENCH_ROUNDS` (default 3), `XLB_BENCH_KEEP=1` (keep the scratch
//! directory).
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use xlb_tests::bench_l7::{
    parse::{self, LoadResult},
    procs::{self, Ports, Proc},
};

const H1_CONNECTIONS: u32 = 64;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ERROR_SHARE: f64 = 0.001;
/// The compressible page's size.
const PAGE_BYTES: usize = 16 * 1024;

/// One xlb configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// No plugins (the baseline of every pair).
    Plain,
    JwtHs256,
    JwtEs256,
    Gzip,
    Zstd,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::Plain,
        Variant::JwtHs256,
        Variant::JwtEs256,
        Variant::Gzip,
        Variant::Zstd,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "xlb",
            Variant::JwtHs256 => "xlb-jwt-hs256",
            Variant::JwtEs256 => "xlb-jwt-es256",
            Variant::Gzip => "xlb-gzip",
            Variant::Zstd => "xlb-zstd",
        }
    }

    /// The measured route's `plugins:` (YAML flow style).
    fn plugins(self, dir: &Path) -> String {
        match self {
            Variant::Plain => String::new(),
            Variant::JwtHs256 => {
                format!("{{jwt-auth: {{keys: [{{alg: HS256, secret: \"{HS256_SECRET}\"}}]}}}}")
            }
            Variant::JwtEs256 => format!(
                "{{jwt-auth: {{keys: [{{alg: ES256, public_key_file: \"{}\"}}]}}}}",
                dir.join("jwt-es256.pub.pem").display()
            ),
            Variant::Gzip => "{compression: {encodings: [gzip]}}".into(),
            Variant::Zstd => "{compression: {encodings: [zstd]}}".into(),
        }
    }
}

const HS256_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// A measured pair group: the baseline and the plugin variants, one load.
struct Group {
    title: &'static str,
    variants: [Variant; 3],
    path: &'static str,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench plugins could not measure: {e:#}");
        std::process::exit(1);
    }
}

struct Running {
    variant: Variant,
    port: u16,
    proc: Proc,
}

struct Sample {
    load: LoadResult,
    cpu_us: f64,
    user_us: f64,
    kernel_us: f64,
}

fn run() -> anyhow::Result<()> {
    let num = |k: &str, d: u64| -> anyhow::Result<u64> {
        match std::env::var(k) {
            Ok(v) => v.trim().parse().with_context(|| format!("{k}={v}")),
            Err(_) => Ok(d),
        }
    };
    let seconds = num("XLB_BENCH_SECONDS", 5)?.max(1);
    let rounds = num("XLB_BENCH_ROUNDS", 3)?.max(1) as usize;
    for tool in ["nginx", "wrk", "curl", "taskset"] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !found {
            bail!("`{tool}` is not installed: run `cargo xtask bench plugins`, which installs it");
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (proxy_cpu, load_cpu) = if cpus >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    if let Some(cpu) = load_cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("xlb-bench-plugins-")
        .tempdir()?;
    let dir = tmp.path().to_path_buf();
    if std::env::var_os("XLB_BENCH_KEEP").is_some() {
        let _ = tmp.keep();
        println!("bench plugins: scratch directory {}", dir.display());
    }
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let page = page_text(PAGE_BYTES);
    std::fs::write(dir.join("page.html"), &page)?;
    let es256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    std::fs::write(dir.join("jwt-es256.pub.pem"), es256.public_key_pem())?;
    let hs_token = jwt(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )?;
    let es_token = jwt(
        jsonwebtoken::Algorithm::ES256,
        &jsonwebtoken::EncodingKey::from_ec_pem(es256.serialize_pem().as_bytes())?,
    )?;

    let mut ports = Ports::default();
    let backend_port = ports.free()?;
    let _backend = start_backend(&dir, backend_port, load_cpu)?;
    let mut running = Vec::new();
    for v in Variant::ALL {
        let port = ports.free()?;
        let proc = start_xlb(&dir, v, port, backend_port, proxy_cpu)
            .with_context(|| format!("{} could not start", v.name()))?;
        running.push(Running {
            variant: v,
            port,
            proc,
        });
    }
    let token_of = |v: Variant| match v {
        Variant::JwtEs256 => &es_token,
        _ => &hs_token,
    };
    // Checks: the plugins are really on, and do what they should.
    for r in &running {
        check(r, &page, token_of(r.variant))
            .with_context(|| format!("{} check", r.variant.name()))?;
    }

    let groups = [
        Group {
            title: "jwt-auth: GET /m/ with a valid token (64-byte answer)",
            variants: [Variant::Plain, Variant::JwtHs256, Variant::JwtEs256],
            path: "/m/",
        },
        Group {
            title: "compression: GET /m/page, 16 KiB HTML, Accept-Encoding: gzip, zstd",
            variants: [Variant::Plain, Variant::Gzip, Variant::Zstd],
            path: "/m/page",
        },
    ];
    println!(
        "bench plugins: {seconds} s per run, {rounds} round(s), xlb on CPU {:?}, wrk and backend on CPU {:?}",
        proxy_cpu, load_cpu
    );
    let mut samples: Vec<Vec<Vec<Sample>>> = groups
        .iter()
        .map(|_| vec![vec![], vec![], vec![]])
        .collect();
    for round in 0..rounds {
        for (g, group) in groups.iter().enumerate() {
            let mut order = [0usize, 1, 2];
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let v = group.variants[i];
                let r = running.iter_mut().find(|r| r.variant == v).unwrap();
                let headers = match g {
                    // The baseline gets the token of the variant it is
                    // compared with; both tokens have the same length
                    // within a few bytes, HS256's is sent to it.
                    0 => vec![format!("Authorization: Bearer {}", token_of(v))],
                    _ => vec!["Accept-Encoding: gzip, zstd".to_string()],
                };
                let s = measure(&dir, r, group.path, &headers, seconds).with_context(|| {
                    format!("{} on {}, round {}", v.name(), group.path, round + 1)
                })?;
                println!(
                    "  round {} {:<14} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:>6.1} µs/req ({:.1} user, {:.1} kernel)",
                    round + 1,
                    v.name(),
                    s.load.rps,
                    s.load.p50_us / 1e3,
                    s.load.p99_us / 1e3,
                    s.cpu_us,
                    s.user_us,
                    s.kernel_us
                );
                samples[g][i].push(s);
            }
        }
    }
    drop(running);
    report(&groups, &samples)
}

/// A token valid for a long time, with a subject.
fn jwt(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> anyhow::Result<String> {
    let claims = serde_json::json!({"sub": "bench-user", "iss": "bench", "exp": 4_000_000_000u64});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        key,
    )?)
}

/// `bytes` of HTML: paragraphs of words drawn from a small vocabulary by a
/// fixed linear congruential generator (varied enough that it compresses
/// like prose, not like one repeated line).
fn page_text(bytes: usize) -> String {
    const WORDS: [&str; 32] = [
        "load", "balancer", "packet", "kernel", "route", "upstream", "node", "health", "request",
        "header", "token", "cache", "stream", "window", "socket", "buffer", "latency", "queue",
        "worker", "policy", "client", "server", "frame", "table", "weight", "drain", "limit",
        "retry", "origin", "gateway", "plugin", "phase",
    ];
    let mut s = String::from("<!doctype html><html><head><title>bench</title></head><body>\n");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while s.len() < bytes - 20 {
        s.push_str("<p>");
        for _ in 0..40 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(WORDS[(x >> 59) as usize]);
            s.push(' ');
        }
        s.push_str("</p>\n");
    }
    s.truncate(bytes - 15);
    s.push_str("</body></html>\n");
    s
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").is_file() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// nginx: `/` a short text from memory, `/m/page` the page from a file.
fn start_backend(dir: &Path, port: u16, cpu: Option<usize>) -> anyhow::Result<Proc> {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;
daemon off;
pid {d}/backend.pid;
error_log {d}/backend-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8000; }}
http {{
    access_log off;
    client_body_temp_path {d}/backend-body;
    proxy_temp_path {d}/backend-proxy;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 \"{body}\"; }}
        location = /m/page {{ default_type text/html; alias {d}/page.html; }}
    }}
}}
",
        body = xlb_tests::bench_l7::configs::BODY.replace('\n', "\\n"),
    );
    let path = dir.join("backend.conf");
    std::fs::write(&path, conf)?;
    let log = dir.join("backend-stderr.log");
    let mut cmd = procs::pinned(cpu, nginx_binary());
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(&log)
        .arg("-c")
        .arg(&path);
    let mut proc = procs::spawn_logged("backend", &mut cmd, &log)?;
    procs::wait_http_ok(port, READY_TIMEOUT, || proc.exited().is_none())
        .context("the backend (nginx) did not answer")?;
    Ok(proc)
}

fn xlb_binary() -> PathBuf {
    match std::env::var_os("XLB_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/xlb"),
    }
}

/// `xlb run` with one worker, a plain listener on `port`, and the two
/// routes; returns once it printed `xlb ready` and `/` answers 200.
fn start_xlb(
    dir: &Path,
    v: Variant,
    port: u16,
    backend: u16,
    cpu: Option<usize>,
) -> anyhow::Result<Proc> {
    let bin = xlb_binary();
    anyhow::ensure!(
        bin.is_file(),
        "{} does not exist: run `cargo xtask bench plugins`",
        bin.display()
    );
    let plugins = match v.plugins(dir) {
        p if p.is_empty() => String::new(),
        p => format!("      plugins: {p}\n"),
    };
    let conf = format!(
        "instance: bench-plugins-{pid}-{name}
l7:
  workers: 1
  limits:
    idle_timeout: 300s
  listeners:
    - name: plain
      address: \"127.0.0.1:{port}\"
  routes:
    - id: measured
      paths: [\"/m/*\"]
      upstream: backend
{plugins}    - id: rest
      upstream: backend
  upstreams:
    - id: backend
      nodes:
        - address: \"127.0.0.1:{backend}\"
      keepalive: {{max_idle_per_node: 512, idle_timeout: 300s}}
",
        pid = std::process::id(),
        name = v.name(),
    );
    let path = dir.join(format!("{}.yaml", v.name()));
    std::fs::write(&path, &conf)?;
    let log = dir.join(format!("{}-stderr.log", v.name()));
    let child = procs::pinned(cpu, &bin)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proc = Proc::new(v.name(), child);
    let stdout = proc.child_mut().stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("xlb ready") => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                "xlb closed stdout without `xlb ready`:\n{conf}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
        if proc.exited().is_some() || Instant::now() >= deadline {
            bail!(
                "xlb did not get ready:\n{conf}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    procs::wait_http_ok(port, READY_TIMEOUT, || proc.exited().is_none())?;
    Ok(proc)
}

/// curl: status, headers (lower case) and body of `url` with `args`.
fn curl(url: &str, args: &[&str]) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D"])
        .arg(&head)
        .args(args)
        .arg(url)
        .output()?;
    anyhow::ensure!(out.status.success(), "curl {url}: {out:?}");
    let head = std::fs::read_to_string(&head)?.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, head, out.stdout))
}

fn check(r: &Running, page: &str, token: &str) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{}", r.port);
    let auth = format!("Authorization: Bearer {token}");
    match r.variant {
        Variant::Plain => {
            let (s, h, b) = curl(
                &format!("{base}/m/page"),
                &["-H", "Accept-Encoding: gzip, zstd"],
            )?;
            anyhow::ensure!(
                s == 200 && !h.contains("content-encoding") && b == page.as_bytes(),
                "plain /m/page: {s}\n{h}"
            );
        }
        Variant::JwtHs256 | Variant::JwtEs256 => {
            let (s, _, _) = curl(&format!("{base}/m/"), &[])?;
            anyhow::ensure!(s == 401, "without a token: {s}, not 401");
            let (s, _, _) = curl(&format!("{base}/m/"), &["-H", &auth])?;
            anyhow::ensure!(s == 200, "with the token: {s}, not 200");
        }
        Variant::Gzip | Variant::Zstd => {
            let enc = if r.variant == Variant::Gzip {
                "gzip"
            } else {
                "zstd"
            };
            let (s, h, b) = curl(
                &format!("{base}/m/page"),
                &["--compressed", "-H", "Accept-Encoding: gzip, zstd"],
            )?;
            anyhow::ensure!(s == 200, "status {s}");
            anyhow::ensure!(
                h.contains(&format!("content-encoding: {enc}")),
                "no {enc}:\n{h}"
            );
            anyhow::ensure!(
                b == page.as_bytes(),
                "curl did not decode {enc} to the page"
            );
        }
    }
    Ok(())
}

/// One warm-up and one measured wrk run; CPU of the xlb process over the
/// middle of the measured interval.
fn measure(
    dir: &Path,
    r: &mut Running,
    path: &str,
    headers: &[String],
    seconds: u64,
) -> anyhow::Result<Sample> {
    let url = format!("http://127.0.0.1:{}{path}", r.port);
    let tag = format!("{}-{}", r.variant.name(), path.replace('/', "_"));
    let args = |secs: u64| {
        let mut a = vec![
            "-t1".to_string(),
            format!("-c{H1_CONNECTIONS}"),
            format!("-d{secs}s"),
            "--timeout".into(),
            "5s".into(),
        ];
        for h in headers {
            a.push("-H".into());
            a.push(h.clone());
        }
        a
    };
    let limit = Duration::from_secs(seconds + 60);
    procs::run_tool(
        Command::new("wrk").args(args(1)).arg(&url),
        &dir.join(format!("{tag}-warmup.txt")),
        limit,
    )?;
    let out = dir.join(format!("{tag}.txt"));
    let mut cmd = Command::new("wrk");
    cmd.args(args(seconds)).arg("--latency").arg(&url);
    let mut tool = procs::spawn_logged(&tag, &mut cmd, &out)?;
    let started = Instant::now();
    let edge = Duration::from_millis(if seconds >= 4 { 500 } else { 100 });
    std::thread::sleep(edge);
    let before = (procs::tree_cpu_seconds(r.proc.pid())?, Instant::now());
    let to = started + Duration::from_secs(seconds) - edge;
    if to > Instant::now() {
        std::thread::sleep(to - Instant::now());
    }
    let after = (procs::tree_cpu_seconds(r.proc.pid())?, Instant::now());
    let status = loop {
        if let Some(st) = tool.exited() {
            break st;
        }
        anyhow::ensure!(started.elapsed() < limit, "wrk did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out)?;
    anyhow::ensure!(status.success(), "wrk failed: {text}");
    let load = parse::wrk(&text).with_context(|| format!("wrk output:\n{text}"))?;
    anyhow::ensure!(load.requests > 0, "no request completed:\n{text}");
    anyhow::ensure!(
        (load.errors as f64) <= MAX_ERROR_SHARE * load.requests as f64,
        "{} of {} requests failed or were not 2xx:\n{text}",
        load.errors,
        load.requests
    );
    anyhow::ensure!(r.proc.exited().is_none(), "xlb exited during the run");
    let window = (after.1 - before.1).as_secs_f64();
    let cpu = after.0 - before.0;
    let per_req = |secs: f64| secs * 1e6 / (load.rps * window);
    Ok(Sample {
        cpu_us: per_req(cpu.total()),
        user_us: per_req(cpu.user),
        kernel_us: per_req(cpu.system),
        load,
    })
}

fn report(groups: &[Group], samples: &[Vec<Vec<Sample>>]) -> anyhow::Result<()> {
    let med = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| {
        parse::median(&v.iter().map(f).collect::<Vec<_>>())
    };
    let mut cases = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        println!("\n{}", group.title);
        println!(
            "{:<16} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9}   on/off req/s",
            "xlb", "req/s", "p50 ms", "p99 ms", "µs/req", "user", "kernel"
        );
        let base = &samples[g][0];
        let base_rps = med(base, &|s| s.load.rps);
        for (i, v) in group.variants.iter().enumerate() {
            let s = &samples[g][i];
            let rps = med(s, &|s| s.load.rps);
            let row = [
                ("requests per second", "req/s", rps, base_rps),
                (
                    "p50 latency",
                    "us",
                    med(s, &|s| s.load.p50_us),
                    med(base, &|s| s.load.p50_us),
                ),
                (
                    "p99 latency",
                    "us",
                    med(s, &|s| s.load.p99_us),
                    med(base, &|s| s.load.p99_us),
                ),
                (
                    "proxy CPU time per request",
                    "us",
                    med(s, &|s| s.cpu_us),
                    med(base, &|s| s.cpu_us),
                ),
                (
                    "proxy user CPU time per request",
                    "us",
                    med(s, &|s| s.user_us),
                    med(base, &|s| s.user_us),
                ),
                (
                    "proxy kernel CPU time per request",
                    "us",
                    med(s, &|s| s.kernel_us),
                    med(base, &|s| s.kernel_us),
                ),
            ];
            println!(
                "{:<16} {:>10.0} {:>9.2} {:>9.2} {:>10.1} {:>9.1} {:>9.1}   {:.3}",
                v.name(),
                rps,
                row[1].2 / 1e3,
                row[2].2 / 1e3,
                row[3].2,
                row[4].2,
                row[5].2,
                rps / base_rps
            );
            if i == 0 {
                continue;
            }
            for (metric, unit, x, b) in row {
                cases.push(serde_json::json!({
                    "case": format!("{} {}", v.name(), group.path),
                    "metric": metric, "unit": unit, "value": x,
                    "baseline": format!("xlb without plugins {}", group.path),
                    "baseline_value": b, "ratio": x / b,
                }));
            }
        }
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    let json = serde_json::json!({ "machine": machine(), "cases": cases });
    std::fs::write(
        out.join("plugins.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("\nwrote {}", out.join("plugins.json").display());
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} cpus, {cpu}, kernel {}", kernel.trim())
}
