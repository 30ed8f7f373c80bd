//! `cargo xtask bench l7`: xlb's L7 proxy against nginx and HAProxy on
//! loopback, in the same run, in front of the same small-response backend.
//!
//! Each proxy gets one worker (`l7.workers: 1`, `worker_processes 1`,
//! `nbthread 1`) and is pinned to one CPU; the backend (a `return 200` nginx)
//! and the load generators share the other CPU. HTTP/1.1 without TLS is
//! driven by wrk, HTTP/2 over TLS (ALPN h2, the same self-signed ECDSA P-256
//! certificate everywhere) by h2load. Every proxy keeps a pool of idle
//! keep-alive HTTP/1.1 connections to the backend larger than the load's
//! concurrency and adds the same forwarding headers. Each run is preceded by
//! a warm-up; rounds alternate the proxies' order, and medians are reported.
//! The proxy's CPU time per request is also split into user and kernel
//! time, and xlb's kernel time per request gives a "kernel floor" against
//! nginx (HTTP/1.1) and HAProxy (HTTP/2): the most xlb's req/s could be
//! relative to theirs with no user time at all.
//! Last, with the proxies stopped, xlb's user-space instructions per
//! proxied request are counted under callgrind (`instructions`), a figure
//! that does not move with the machine's load.
//! See docs/bench/l7.md for the reasoning and the numbers.
//!
//! HTTP/1.1 POST: every proxy again with wrk, each request carrying the
//! same 475-byte JSON body (`POST_BODY`), the shape of API traffic; the
//! proxies alternate order every round, as in the main matrix.
//!
//! Two further measurements in the same run, over HTTP/1.1 with wrk, each
//! as a pair alternated every round: the rate limiter's cost (xlb with a
//! route carrying three rules at rates nothing reaches, against the same
//! xlb config without them), and cache hits (xlb with the route's cache on,
//! against nginx with `proxy_cache`, both on a path the backend marks
//! `Cache-Control: max-age=60`). The cache pair is skipped, and says why,
//! when `xlb check` rejects the cache config or a hit cannot be seen.
//!
//! Environment: `XLB_BIN` (the release `xlb`, set by `cargo xtask bench`),
//! `XLB_BENCH_SECONDS` (measured seconds per run, default 10),
//! `XLB_BENCH_ROUNDS` (default 3), `XLB_BENCH_PROXIES` (comma-separated
//! subset of `xlb,nginx,haproxy`, for working on the bench itself; the JSON
//! is only written when xlb was measured), `XLB_BENCH_KEEP=1` (keep the
//! scratch directory with every config and tool output), `XLB_BENCH_NICE=0`
//! (do not raise the bench's priority to nice -20).
//!
//! `XLB_BENCH_TRAIN=1` is the training run of `cargo xtask build --release
//! --pgo`: xlb alone (its plain, rate-limited and observed instances), one
//! round of each case (default 3 s per run), driving an instrumented
//! `XLB_BIN` so that its profile holds the paths this bench measures; it
//! stops before the fixed-rate case, the instruction count and the report
//! (nothing is written to `target/bench/`).
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use xlb_tests::bench_l7::{
    configs::{self, Cert, Listen, XlbExtras},
    parse::{self, LoadResult},
    procs::{self, CpuTimes, Ports, Proc},
};

#[path = "l7/instructions.rs"]
mod instructions;

/// wrk's connections (one thread): requests in flight over HTTP/1.1.
const H1_CONNECTIONS: u32 = 64;
/// h2load's connections and streams per connection (one thread): 128
/// requests in flight over HTTP/2.
const H2_CONNECTIONS: u32 = 16;
const H2_STREAMS: u32 = 8;
/// The one TLS 1.3 suite h2load offers. Left to themselves, the proxies
/// differ: nginx and rustls follow the client's order (h2load's starts with
/// AES-128-GCM), HAProxy imposes its own (OpenSSL's, AES-256-GCM first).
const TLS13_CIPHERS: &str = "--tls13-ciphers=TLS_AES_128_GCM_SHA256";
/// How long a proxy may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Runs with more failed or non-2xx requests than this share are not
/// measurements of a working proxy.
const MAX_ERROR_SHARE: f64 = 0.001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Xlb,
    Nginx,
    Haproxy,
    /// xlb with three rate-limit rules on its route (HTTP/1.1 only).
    XlbLimited,
    /// xlb with the route's cache on (HTTP/1.1 on the cached path only).
    XlbCache,
    /// xlb with metrics and the access log on (HTTP/1.1 only).
    XlbObserve,
    /// nginx with `proxy_cache` (HTTP/1.1 on the cached path only).
    NginxCache,
    /// nginx with a JSON access log and the request id (HTTP/1.1 only).
    NginxLogged,
}

impl Kind {
    /// The proxies compared over both protocols (the main matrix).
    const ALL: [Kind; 3] = [Kind::Xlb, Kind::Nginx, Kind::Haproxy];

    fn name(self) -> &'static str {
        match self {
            Kind::Xlb => "xlb",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::XlbLimited => "xlb-ratelimit",
            Kind::XlbCache => "xlb-cache",
            Kind::XlbObserve => "xlb-observe",
            Kind::NginxCache => "nginx-cache",
            Kind::NginxLogged => "nginx-log",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    const ALL: [Proto; 2] = [Proto::H1, Proto::H2];

    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1 (wrk)",
            Proto::H2 => "h2+tls (h2load)",
        }
    }
}

struct Settings {
    seconds: u64,
    warmup: u64,
    rounds: usize,
    kinds: Vec<Kind>,
    /// The proxy's CPU, and the CPU of everything else (None: no pinning).
    proxy_cpu: Option<usize>,
    load_cpu: Option<usize>,
    keep: bool,
    /// Run everything at nice -20 (XLB_BENCH_NICE=0: as started).
    nice: bool,
    /// A training run for a profile-guided build (`XLB_BENCH_TRAIN=1`).
    train: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let num = |k: &str, d: u64| -> anyhow::Result<u64> {
            match std::env::var(k) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{k}={v} is not a number")),
                Err(_) => Ok(d),
            }
        };
        let train = std::env::var("XLB_BENCH_TRAIN").is_ok_and(|v| v.trim() == "1");
        let seconds = num("XLB_BENCH_SECONDS", if train { 3 } else { 10 })?.max(1);
        let rounds = match train {
            true => 1,
            false => num("XLB_BENCH_ROUNDS", 3)?.max(1) as usize,
        };
        let kinds = match std::env::var("XLB_BENCH_PROXIES") {
            _ if train => vec![Kind::Xlb],
            Ok(v) => v
                .split(',')
                .map(|n| {
                    Kind::ALL
                        .into_iter()
                        .find(|k| k.name() == n.trim())
                        .with_context(|| format!("XLB_BENCH_PROXIES: unknown proxy `{n}`"))
                })
                .collect::<anyhow::Result<_>>()?,
            Err(_) => Kind::ALL.to_vec(),
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (proxy_cpu, load_cpu) = if cpus >= 2 {
            (Some(0), Some(1))
        } else {
            eprintln!("bench l7: one CPU only; proxies and load share it (no pinning)");
            (None, None)
        };
        Ok(Settings {
            seconds,
            // Long enough for TLS handshakes, pool fill and CPU frequency
            // to settle; shorter for smoke runs.
            warmup: (seconds / 3).clamp(1, 3),
            rounds,
            kinds,
            proxy_cpu,
            load_cpu,
            keep: std::env::var_os("XLB_BENCH_KEEP").is_some(),
            nice: std::env::var("XLB_BENCH_NICE").map_or(true, |v| v.trim() != "0"),
            train,
        })
    }
}

/// One proxy under test, running.
struct Running {
    kind: Kind,
    listen: Listen,
    proc: Proc,
}

/// One measured run.
struct Sample {
    load: LoadResult,
    /// The proxy's processes' CPU time as a share of one CPU, and per
    /// request (µs), over the middle of the measured interval; the latter
    /// also split into user and kernel (system) time.
    proxy_share: f64,
    cpu_us_per_req: f64,
    cpu_user_us_per_req: f64,
    cpu_kernel_us_per_req: f64,
    /// Busy share of the proxy's CPU and of the load generator's CPU (all
    /// processes: shows whether anything else competed for them).
    proxy_busy: f64,
    load_busy: f64,
    /// Requests that reached the backend on the cached path during the
    /// measured run (cache runs only).
    backend_requests: Option<u64>,
    /// System calls and context switches of the proxy per request, counted
    /// by `perf stat` for [`KERNEL_COUNT_WINDOW`] right after the timed
    /// window (the load still running), when perf could count them.
    syscalls_per_req: Option<f64>,
    switches_per_req: Option<f64>,
}

/// How long `perf stat` counts a proxy's system calls and context
/// switches, after the timed window (so its own cost is not timed).
const KERNEL_COUNT_WINDOW: Duration = Duration::from_millis(300);

/// One HTTP/1.1 load on one proxy: which path, and what else to check.
#[derive(Clone, Copy)]
struct H1Load<'a> {
    path: &'a str,
    /// Added to the output files' names (runs of one proxy that differ).
    label: &'a str,
    /// The backend's access log of `path`: its lines are counted around the
    /// measured run.
    backend_log: Option<&'a Path>,
    /// Any non-2xx response (or socket error) fails the run.
    no_errors: bool,
    /// A wrk Lua script (the POST case's body).
    script: Option<&'a Path>,
}

const H1_ROOT: H1Load<'static> = H1Load {
    path: "/",
    label: "",
    backend_log: None,
    no_errors: false,
    script: None,
};

/// The POST case's body: a small JSON document, as API requests carry.
fn post_body() -> String {
    r#"{"k":"v","n":12345}"#.repeat(25)
}

/// The wrk script that sends every request as a POST of [`post_body`].
fn write_post_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("post.lua");
    let script = format!(
        "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        post_body()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The instances of the two further measurements, started next to the
/// main proxies.
struct Extras {
    /// xlb with the three rules (None: xlb is not measured).
    limited: Option<Running>,
    /// xlb with metrics and the access log (None: xlb is not measured).
    observed: Option<Running>,
    /// nginx with its JSON access log (None: nginx is not measured).
    nginx_logged: Option<Running>,
    /// xlb and nginx with their caches, or why the pair is skipped.
    cache: Result<(Running, Running), String>,
}

/// Their samples over rounds.
#[derive(Default)]
struct ExtraSamples {
    /// xlb without rules (paired runs of the main instance), with rules.
    unlimited: Vec<Sample>,
    limited: Vec<Sample>,
    xlb_cache: Vec<Sample>,
    nginx_cache: Vec<Sample>,
    /// xlb without `observe:` (paired runs of the main instance), with it.
    unobserved: Vec<Sample>,
    observed: Vec<Sample>,
    /// nginx without its access log (paired runs of the main instance),
    /// with it.
    nginx_unlogged: Vec<Sample>,
    nginx_logged: Vec<Sample>,
    /// The POST case, per proxy of the main matrix.
    post: Vec<(Kind, Vec<Sample>)>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench l7 could not measure: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    for tool in ["nginx", "haproxy", "wrk", "h2load", "taskset"] {
        if !tool_exists(tool) {
            bail!("`{tool}` is not installed: run `cargo xtask bench l7`, which installs it");
        }
    }
    let niced = s.nice && raise_priority();
    // Restores the session's scheduling group on the way out, also on panic.
    let _group = if s.nice { AutogroupNice::raise() } else { None };
    if let Some(cpu) = s.load_cpu {
        // wrk, h2load and the backend inherit this; the proxies are started
        // through taskset onto the other CPU.
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    }
    let tmp = tempfile::Builder::new().prefix("xlb-bench-l7-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    if s.keep {
        let _ = tmp.keep();
        println!("bench l7: scratch directory {}", dir.display());
    }
    // nginx's workers drop to `nobody` when started as root.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let cert_files = write_cert(&dir)?;
    let cert = Cert {
        cert: &cert_files.0,
        key: &cert_files.1,
        combined: &cert_files.2,
    };
    let mut ports = Ports::default();

    let backend_port = ports.free()?;
    let backend = start_backend(&dir, backend_port, s.load_cpu)?;

    let mut running = Vec::new();
    for &kind in &s.kinds {
        let listen = Listen {
            plain: ports.free()?,
            tls: ports.free()?,
        };
        let proc = match kind {
            Kind::Xlb => start_xlb(
                &dir,
                kind.name(),
                &configs::xlb(&xlb_instance(""), listen, cert, backend_port),
                listen,
                s.proxy_cpu,
            ),
            Kind::Nginx => start_nginx(&dir, listen, cert, backend_port, s.proxy_cpu),
            Kind::Haproxy => start_haproxy(&dir, listen, cert, backend_port, s.proxy_cpu),
            _ => unreachable!("not in the main matrix"),
        }
        .with_context(|| format!("{} could not start", kind.name()))?;
        let mut r = Running { kind, listen, proc };
        check_proxy(&dir, &mut r).with_context(|| format!("{} does not proxy", kind.name()))?;
        running.push(r);
    }
    let mut extras = start_extras(&s, &dir, &mut ports, cert, backend_port)?;
    let backend_log = dir.join(configs::CACHED_LOG);

    println!(
        "bench l7: {} s measured after {} s warm-up, {} round(s), proxies on CPU {}, \
         load and backend on CPU {}, {}",
        s.seconds,
        s.warmup,
        s.rounds,
        fmt_cpu(s.proxy_cpu),
        fmt_cpu(s.load_cpu),
        if niced { "nice -20" } else { "not niced" }
    );
    // samples[kind][proto] over rounds.
    let mut samples: Vec<[Vec<Sample>; 2]> = running.iter().map(|_| [vec![], vec![]]).collect();
    let mut extra_samples = ExtraSamples::default();
    let post_script = write_post_script(&dir)?;
    for round in 0..s.rounds {
        for i in round_order(running.len(), round) {
            for proto in Proto::ALL {
                let r = &mut running[i];
                let sample = measure(&s, &dir, r, proto).with_context(|| {
                    format!(
                        "{} over {}, round {}",
                        r.kind.name(),
                        proto.name(),
                        round + 1
                    )
                })?;
                println!(
                    "  round {} {:<8} {:<16} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  \
                     proxy {:>3.0}% of a CPU, {:>5.1} µs/req ({:.1} user, {:.1} kernel)  \
                     CPUs busy {:>3.0}%/{:>3.0}%",
                    round + 1,
                    r.kind.name(),
                    proto.name(),
                    sample.load.rps,
                    sample.load.p50_us / 1e3,
                    sample.load.p99_us / 1e3,
                    sample.proxy_share * 100.0,
                    sample.cpu_us_per_req,
                    sample.cpu_user_us_per_req,
                    sample.cpu_kernel_us_per_req,
                    sample.proxy_busy * 100.0,
                    sample.load_busy * 100.0,
                );
                samples[i][proto as usize].push(sample);
            }
        }
        measure_post(
            &s,
            &dir,
            round,
            &mut running,
            &post_script,
            &mut extra_samples,
        )?;
        measure_extras(
            &s,
            &dir,
            round,
            &mut running,
            &mut extras,
            &backend_log,
            &mut extra_samples,
        )?;
    }
    if s.train {
        // The proxies stop (cleanly: an instrumented xlb writes its profile
        // on exit) as `extras` and `running` are dropped.
        println!("bench l7: training run done");
        return Ok(());
    }
    let fixed = measure_fixed_rate(&s, &dir, &mut running, &samples)?;
    let kinds: Vec<Kind> = running.iter().map(|r| r.kind).collect();
    let cache_skipped = extras.cache.as_ref().err().cloned();
    // Stop the proxies and the backend before reporting; xlb's count of
    // instructions runs alone with the backend.
    drop(extras);
    drop(running);
    let counted = match kinds.contains(&Kind::Xlb) {
        true => instructions::measure(&dir, &mut ports, cert, backend_port, s.proxy_cpu)
            .map_err(|e| println!("instructions per request: not counted: {e:#}"))
            .ok(),
        false => None,
    };
    drop(backend);
    report(
        &s,
        &kinds,
        &samples,
        &extra_samples,
        cache_skipped.as_deref(),
        fixed.as_ref(),
        counted.as_ref(),
    )
}

/// The fixed rate, as a share of nginx's saturated HTTP/1.1 rate: below
/// saturation, where latency says something of its own (at saturation
/// p99 only follows throughput).
const FIXED_RATE_SHARE: f64 = 0.7;

/// The fixed-rate latency case: its rate and, per proxy of the main
/// matrix, its rounds.
struct FixedRate {
    rate: f64,
    runs: Vec<(Kind, FixedRounds)>,
}

/// (achieved req/s, p50 µs, p99 µs) of each fixed-rate round.
type FixedRounds = Vec<(f64, f64, f64)>;

/// HTTP/1.1 at [`FIXED_RATE_SHARE`] of nginx's median saturated rate,
/// driven by h2load (`--h1`, the same 64 connections, `--rps` per
/// connection), one run per proxy per round; latencies from h2load's
/// per-request log. `None` when nginx was not measured.
fn measure_fixed_rate(
    s: &Settings,
    dir: &Path,
    running: &mut [Running],
    samples: &[[Vec<Sample>; 2]],
) -> anyhow::Result<Option<FixedRate>> {
    let Some(ni) = running.iter().position(|r| r.kind == Kind::Nginx) else {
        return Ok(None);
    };
    let nginx_rps = medians(&samples[ni][Proto::H1 as usize]).rps;
    let rate = (nginx_rps * FIXED_RATE_SHARE).floor();
    let per_conn = rate / f64::from(H1_CONNECTIONS);
    let mut runs: Vec<(Kind, FixedRounds)> = running.iter().map(|r| (r.kind, Vec::new())).collect();
    for round in 0..s.rounds {
        for i in round_order(running.len(), round) {
            let r = &running[i];
            let tag = format!("{}-fixed-{}", r.kind.name(), round + 1);
            let out = dir.join(format!("{tag}.txt"));
            let log = dir.join(format!("{tag}.log"));
            let _ = std::fs::remove_file(&log);
            let mut cmd = Command::new("h2load");
            cmd.args(["--h1", "-t", "1"])
                .args(["-c", &H1_CONNECTIONS.to_string()])
                .arg(format!("--rps={per_conn:.3}"))
                .args(["-D", &s.seconds.to_string()])
                .arg(format!("--warm-up-time={}", s.warmup))
                .arg(format!("--log-file={}", log.display()))
                .arg(format!("http://127.0.0.1:{}/", r.listen.plain));
            let limit = Duration::from_secs(s.seconds + s.warmup + 60);
            procs::run_tool(&mut cmd, &out, limit).with_context(|| format!("{tag}: h2load"))?;
            let text = std::fs::read_to_string(&out)?;
            let load = parse::h2load(&text, &std::fs::read_to_string(&log)?)
                .with_context(|| format!("reading {tag}'s output:\n{text}"))?;
            println!(
                "  fixed rate {:.0} req/s, round {} {:<8} achieved {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
                rate,
                round + 1,
                r.kind.name(),
                load.rps,
                load.p50_us / 1e3,
                load.p99_us / 1e3
            );
            runs[i].1.push((load.rps, load.p50_us, load.p99_us));
        }
    }
    Ok(Some(FixedRate { rate, runs }))
}

/// Prints the fixed-rate table; JSON cases for xlb against each peer.
fn report_fixed_rate(f: &FixedRate) -> Vec<serde_json::Value> {
    println!(
        "\nfixed rate: http/1.1 at {:.0} req/s ({:.0} % of nginx's saturated rate; h2load --h1, {} connections; medians)",
        f.rate,
        FIXED_RATE_SHARE * 100.0,
        H1_CONNECTIONS
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9}",
        "proxy", "req/s", "p50 ms", "p99 ms"
    );
    let med = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        parse::median(&v.iter().map(f).collect::<Vec<_>>())
    };
    for (k, v) in &f.runs {
        println!(
            "{:<8} {:>10.0} {:>9.3} {:>9.3}",
            k.name(),
            med(v, |x| x.0),
            med(v, |x| x.1) / 1e3,
            med(v, |x| x.2) / 1e3
        );
    }
    let Some((_, xv)) = f.runs.iter().find(|(k, _)| *k == Kind::Xlb) else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for (k, v) in f.runs.iter().filter(|(k, _)| *k != Kind::Xlb) {
        for (metric, pick) in [
            (
                "p50 latency",
                (|x: &(f64, f64, f64)| x.1) as fn(&(f64, f64, f64)) -> f64,
            ),
            ("p99 latency", |x: &(f64, f64, f64)| x.2),
        ] {
            let (x, b) = (med(xv, pick), med(v, pick));
            println!(
                "xlb / {} at the fixed rate: {metric} {:.2}{}",
                k.name(),
                x / b,
                if *k == Kind::Nginx && metric == "p99 latency" {
                    format!(" (target ≤ 1.0: {})", if x <= b { "met" } else { "MISSED" })
                } else {
                    String::new()
                }
            );
            cases.push(serde_json::json!({
                "case": format!("http/1.1 fixed rate xlb vs {}", k.name()),
                "metric": metric,
                "unit": "ms",
                "value": x / 1e3,
                "baseline": k.name(),
                "baseline_value": b / 1e3,
                "ratio": x / b,
            }));
        }
    }
    cases
}

/// Starts the rate-limited xlb (when xlb is measured) and the cache pair
/// (when xlb and nginx are). The cache pair is skipped, not an error, when
/// `xlb check` refuses the cache config or no hit is seen.
fn start_extras(
    s: &Settings,
    dir: &Path,
    ports: &mut Ports,
    cert: Cert<'_>,
    backend: u16,
) -> anyhow::Result<Extras> {
    let mut listen = || -> anyhow::Result<Listen> {
        Ok(Listen {
            plain: ports.free()?,
            tls: ports.free()?,
        })
    };
    let has = |k| s.kinds.contains(&k);
    let limited = if has(Kind::Xlb) {
        let l = listen()?;
        let extras = XlbExtras {
            rate_limits: true,
            ..XlbExtras::default()
        };
        let conf = configs::xlb_with(&xlb_instance("rl"), l, cert, backend, extras);
        let proc = start_xlb(dir, Kind::XlbLimited.name(), &conf, l, s.proxy_cpu)
            .context("xlb with rate limits could not start")?;
        Some(Running {
            kind: Kind::XlbLimited,
            listen: l,
            proc,
        })
    } else {
        None
    };
    let observed = if has(Kind::Xlb) {
        // The observe port is a listener pair's TLS port, unused as such.
        let l = listen()?;
        let observe_port = listen()?.tls;
        let extras = XlbExtras {
            observe: Some(observe_port),
            ..XlbExtras::default()
        };
        let conf = configs::xlb_with(&xlb_instance("obs"), l, cert, backend, extras);
        let proc = start_xlb(dir, Kind::XlbObserve.name(), &conf, l, s.proxy_cpu)
            .context("xlb with metrics and the access log could not start")?;
        Some(Running {
            kind: Kind::XlbObserve,
            listen: l,
            proc,
        })
    } else {
        None
    };
    let nginx_logged = if has(Kind::Nginx) {
        let l = listen()?;
        let proc = start_nginx_conf(
            dir,
            Kind::NginxLogged.name(),
            &configs::nginx_logged(dir, l, cert, backend),
            l.plain,
            s.proxy_cpu,
        )
        .context("nginx with its access log could not start")?;
        Some(Running {
            kind: Kind::NginxLogged,
            listen: l,
            proc,
        })
    } else {
        None
    };
    let cache = if has(Kind::Xlb) && has(Kind::Nginx) {
        start_cache_pair(s, dir, (listen()?, listen()?), cert, backend)?
    } else {
        Err("needs xlb and nginx (XLB_BENCH_PROXIES)".to_string())
    };
    if let Err(why) = &cache {
        println!("bench l7: cache hits skipped: {why}");
    }
    Ok(Extras {
        limited,
        observed,
        nginx_logged,
        cache,
    })
}

/// `Ok(Err(why))`: skipped.
fn start_cache_pair(
    s: &Settings,
    dir: &Path,
    (xl, nl): (Listen, Listen),
    cert: Cert<'_>,
    backend: u16,
) -> anyhow::Result<Result<(Running, Running), String>> {
    let extras = XlbExtras {
        cache: true,
        ..XlbExtras::default()
    };
    let conf = configs::xlb_with(&xlb_instance("cache"), xl, cert, backend, extras);
    let name = Kind::XlbCache.name();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, &conf)?;
    let checked = procs::run_tool(
        Command::new(xlb_binary()).arg("check").arg("-c").arg(&path),
        &dir.join(format!("{name}-check.txt")),
        Duration::from_secs(20),
    );
    if let Err(e) = checked {
        let why = format!("{e:#}");
        let last = why
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Ok(Err(format!(
            "xlb has no cache config yet (`xlb check` rejects it: {})",
            last.trim()
        )));
    }
    let xproc = start_xlb(dir, name, &conf, xl, s.proxy_cpu).context("xlb with a cache")?;
    let mut x = Running {
        kind: Kind::XlbCache,
        listen: xl,
        proc: xproc,
    };
    let nproc = start_nginx_conf(
        dir,
        Kind::NginxCache.name(),
        &configs::nginx_cache(dir, nl, cert, backend),
        nl.plain,
        s.proxy_cpu,
    )
    .context("nginx with proxy_cache")?;
    let mut n = Running {
        kind: Kind::NginxCache,
        listen: nl,
        proc: nproc,
    };
    if let Err(e) = check_cache_hit(dir, &mut n, "x-cache-status") {
        bail!("nginx's proxy_cache does not hit: {e:#}");
    }
    if let Err(e) = check_cache_hit(dir, &mut x, "x-cache") {
        return Ok(Err(format!("xlb's cache does not hit: {e:#}")));
    }
    Ok(Ok((x, n)))
}

fn xlb_instance(suffix: &str) -> String {
    match suffix {
        "" => format!("bench-l7-{}", std::process::id()),
        s => format!("bench-l7-{}-{s}", std::process::id()),
    }
}

/// Two `curl`s of the cached path: both 200, the second with `header:
/// HIT`.
fn check_cache_hit(dir: &Path, r: &mut Running, header: &str) -> anyhow::Result<()> {
    let url = format!(
        "http://127.0.0.1:{}{}",
        r.listen.plain,
        configs::CACHED_PATH
    );
    let mut last = String::new();
    for i in 0..2 {
        last = procs::run_tool(
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5"])
                .arg(&url),
            &dir.join(format!("{}-curl-{i}.txt", r.kind.name())),
            Duration::from_secs(10),
        )?;
    }
    let status = last.lines().next().unwrap_or("no response").trim();
    let value = last.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(header))
            .map(|(_, v)| v.trim().to_string())
    });
    anyhow::ensure!(
        status.starts_with("HTTP/1.1 200") && value.as_deref() == Some("HIT"),
        "the second GET {} got `{status}` with {}",
        configs::CACHED_PATH,
        match &value {
            Some(v) => format!("`{header}: {v}`"),
            None => format!("no `{header}` header"),
        }
    );
    println!(
        "bench l7: {} answers the second GET {} with {header}: HIT",
        r.kind.name(),
        configs::CACHED_PATH
    );
    anyhow::ensure!(r.proc.exited().is_none(), "exited during the check");
    Ok(())
}

/// One round of the two further measurements: [xlb, xlb with rules] and
/// [xlb with cache, nginx with cache], HTTP/1.1, each pair's order
/// reversed every other round.
/// The POST case: each proxy of the main matrix, in the round's order.
fn measure_post(
    s: &Settings,
    dir: &Path,
    round: usize,
    running: &mut [Running],
    script: &Path,
    out: &mut ExtraSamples,
) -> anyhow::Result<()> {
    let load = H1Load {
        label: "-post",
        no_errors: true,
        script: Some(script),
        ..H1_ROOT
    };
    for i in round_order(running.len(), round) {
        let r = &mut running[i];
        let x = measure_h1(s, dir, r, load)
            .with_context(|| format!("{} (POST), round {}", r.kind.name(), round + 1))?;
        println!(
            "  round {} {:<8} {:<16} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  \
             proxy {:>3.0}% of a CPU, {:>5.1} µs/req ({:.1} user, {:.1} kernel)",
            round + 1,
            r.kind.name(),
            "http/1.1 POST",
            x.load.rps,
            x.load.p50_us / 1e3,
            x.load.p99_us / 1e3,
            x.proxy_share * 100.0,
            x.cpu_us_per_req,
            x.cpu_user_us_per_req,
            x.cpu_kernel_us_per_req,
        );
        match out.post.iter_mut().find(|(k, _)| *k == r.kind) {
            Some((_, v)) => v.push(x),
            None => out.post.push((r.kind, vec![x])),
        }
    }
    Ok(())
}

fn measure_extras(
    s: &Settings,
    dir: &Path,
    round: usize,
    running: &mut [Running],
    extras: &mut Extras,
    backend_log: &Path,
    out: &mut ExtraSamples,
) -> anyhow::Result<()> {
    let flip = round % 2 == 1;
    let print = |kind: &str, what: &str, x: &Sample| {
        let backend = x
            .backend_requests
            .map(|n| format!("  backend saw {n}"))
            .unwrap_or_default();
        println!(
            "  round {} {:<13} {:<20} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  \
             proxy {:>3.0}% of a CPU, {:>5.1} µs/req ({:.1} user, {:.1} kernel), {} \
             non-2xx{backend}",
            round + 1,
            kind,
            what,
            x.load.rps,
            x.load.p50_us / 1e3,
            x.load.p99_us / 1e3,
            x.proxy_share * 100.0,
            x.cpu_us_per_req,
            x.cpu_user_us_per_req,
            x.cpu_kernel_us_per_req,
            x.load.errors,
        );
    };
    // A paired measurement: the main instance of `base` and its variant,
    // the variant first when `variant_first`, both over HTTP/1.1 with no
    // failed request allowed.
    let mut pair = |base: Kind,
                    variant: &mut Running,
                    label: &'static str,
                    what: &str,
                    variant_first: bool,
                    base_out: &mut Vec<Sample>,
                    variant_out: &mut Vec<Sample>|
     -> anyhow::Result<()> {
        let main = running
            .iter_mut()
            .find(|r| r.kind == base)
            .with_context(|| format!("no {}", base.name()))?;
        let strict = H1Load {
            label,
            no_errors: true,
            ..H1_ROOT
        };
        for on in [variant_first, !variant_first] {
            let (r, v) = if on {
                (&mut *variant, &mut *variant_out)
            } else {
                (&mut *main, &mut *base_out)
            };
            let x = measure_h1(s, dir, r, strict)
                .with_context(|| format!("{} ({what}), round {}", r.kind.name(), round + 1))?;
            print(r.kind.name(), "http/1.1 GET /", &x);
            v.push(x);
        }
        Ok(())
    };
    if let Some(limited) = extras.limited.as_mut() {
        let (base, variant) = (&mut out.unlimited, &mut out.limited);
        pair(
            Kind::Xlb,
            limited,
            "-pair",
            "rate limits",
            flip,
            base,
            variant,
        )?;
    }
    if let Some(observed) = extras.observed.as_mut() {
        let (base, variant) = (&mut out.unobserved, &mut out.observed);
        pair(
            Kind::Xlb,
            observed,
            "-obs-pair",
            "observe",
            !flip,
            base,
            variant,
        )?;
    }
    if let Some(logged) = extras.nginx_logged.as_mut() {
        let (base, variant) = (&mut out.nginx_unlogged, &mut out.nginx_logged);
        pair(
            Kind::Nginx,
            logged,
            "-log-pair",
            "access log",
            flip,
            base,
            variant,
        )?;
    }
    if let Ok((x, n)) = extras.cache.as_mut() {
        let load = H1Load {
            path: configs::CACHED_PATH,
            label: "-cached",
            backend_log: Some(backend_log),
            no_errors: false,
            script: None,
        };
        for nginx in [flip, !flip] {
            let (r, v) = if nginx {
                (&mut *n, &mut out.nginx_cache)
            } else {
                (&mut *x, &mut out.xlb_cache)
            };
            let sample = measure_h1(s, dir, r, load)
                .with_context(|| format!("{} (cache), round {}", r.kind.name(), round + 1))?;
            let reached = sample.backend_requests.unwrap_or(0);
            // Hits only: an entry that expires (max-age=60) during a run
            // is fetched again once; more than 0.1 % of the requests
            // reaching the backend would not be a measurement of hits.
            anyhow::ensure!(
                reached as f64 <= MAX_ERROR_SHARE * sample.load.requests as f64 + 2.0,
                "{}: {reached} of {} requests on {} reached the backend: not cache hits",
                r.kind.name(),
                sample.load.requests,
                configs::CACHED_PATH
            );
            print(r.kind.name(), "http/1.1 GET /cached", &sample);
            v.push(sample);
        }
    }
    Ok(())
}

/// Puts this process (and so everything it starts) at nice -20: on a shared
/// machine, other work on the two CPUs then takes from the bench only what
/// it leaves idle, instead of an equal share per runnable thread. Needs
/// root (CAP_SYS_NICE); without it the bench runs as is.
fn raise_priority() -> bool {
    let ok = Command::new("renice")
        .args(["-n", "-20", "-p", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("bench l7: could not renice to -20; other load on the machine will show");
    }
    ok
}

/// With `kernel.sched_autogroup_enabled` (the default on most
/// distributions) CPU time is first shared equally between sessions, and
/// nice only orders threads within one: the bench's session is raised to
/// nice -20 as a whole (/proc/self/autogroup, sched(7)) and put back on
/// drop.
struct AutogroupNice {
    previous: i32,
}

impl AutogroupNice {
    fn read() -> Option<i32> {
        let s = std::fs::read_to_string("/proc/self/autogroup").ok()?;
        s.split_whitespace().last()?.parse().ok()
    }

    fn raise() -> Option<AutogroupNice> {
        let on = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
            .map(|v| v.trim() == "1")
            .unwrap_or(false);
        if !on {
            return None;
        }
        let previous = AutogroupNice::read()?;
        match std::fs::write("/proc/self/autogroup", "-20") {
            Ok(()) => Some(AutogroupNice { previous }),
            Err(e) => {
                eprintln!("bench l7: could not raise the session's autogroup to nice -20: {e}");
                None
            }
        }
    }
}

impl Drop for AutogroupNice {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/self/autogroup", self.previous.to_string());
    }
}

fn fmt_cpu(c: Option<usize>) -> String {
    c.map(|c| c.to_string()).unwrap_or_else(|| "any".into())
}

fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
}

/// A self-signed ECDSA P-256 certificate for `localhost` (rcgen's default
/// algorithm): cert, key, and both in one file.
fn write_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = ck.cert.pem();
    let key = ck.signing_key.serialize_pem();
    let paths = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("cert+key.pem"),
    );
    std::fs::write(&paths.0, &cert)?;
    std::fs::write(&paths.1, &key)?;
    std::fs::write(&paths.2, format!("{cert}{key}"))?;
    Ok(paths)
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").is_file() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn haproxy_binary() -> &'static str {
    if Path::new("/usr/sbin/haproxy").is_file() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

/// `nginx -t` on `conf`, then nginx in the foreground, answering 200 on
/// `port` before this returns.
fn start_nginx_conf(
    dir: &Path,
    name: &str,
    conf: &str,
    port: u16,
    cpu: Option<usize>,
) -> anyhow::Result<Proc> {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let stderr = dir.join(format!("{name}-stderr.log"));
    let args = |c: &mut Command| {
        c.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&stderr)
            .arg("-c")
            .arg(&path);
    };
    let mut test = Command::new(nginx_binary());
    args(&mut test);
    procs::run_tool(
        test.arg("-t"),
        &dir.join(format!("{name}-test.log")),
        Duration::from_secs(10),
    )
    .context("nginx -t rejected the config")?;
    let mut cmd = procs::pinned(cpu, nginx_binary());
    args(&mut cmd);
    let mut proc = procs::spawn_logged(name, &mut cmd, &stderr)?;
    wait_ready(&mut proc, port, &stderr)?;
    Ok(proc)
}

fn wait_ready(proc: &mut Proc, port: u16, log: &Path) -> anyhow::Result<()> {
    procs::wait_http_ok(port, READY_TIMEOUT, || proc.exited().is_none()).with_context(|| {
        format!(
            "waiting for 127.0.0.1:{port}; {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

fn start_backend(dir: &Path, port: u16, cpu: Option<usize>) -> anyhow::Result<Proc> {
    start_nginx_conf(
        dir,
        "backend",
        &configs::backend_nginx(dir, port),
        port,
        cpu,
    )
    .context("the backend (nginx) could not start")
}

fn start_nginx(
    dir: &Path,
    listen: Listen,
    cert: Cert<'_>,
    backend: u16,
    cpu: Option<usize>,
) -> anyhow::Result<Proc> {
    start_nginx_conf(
        dir,
        "nginx",
        &configs::nginx_proxy(dir, listen, cert, backend),
        listen.plain,
        cpu,
    )
}

fn start_haproxy(
    dir: &Path,
    listen: Listen,
    cert: Cert<'_>,
    backend: u16,
    cpu: Option<usize>,
) -> anyhow::Result<Proc> {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, configs::haproxy(listen, cert, backend))?;
    procs::run_tool(
        Command::new(haproxy_binary())
            .arg("-c")
            .arg("-f")
            .arg(&path),
        &dir.join("haproxy-check.log"),
        Duration::from_secs(10),
    )
    .context("haproxy -c rejected the config")?;
    let log = dir.join("haproxy.log");
    let mut cmd = procs::pinned(cpu, haproxy_binary());
    cmd.arg("-db").arg("-f").arg(&path);
    let mut proc = procs::spawn_logged("haproxy", &mut cmd, &log)?;
    wait_ready(&mut proc, listen.plain, &log)?;
    Ok(proc)
}

fn xlb_binary() -> PathBuf {
    match std::env::var_os("XLB_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/xlb"),
    }
}

/// `xlb run -c FILE` on the `l7:` config; returns once it has printed
/// `xlb ready` and answers 200 on the plain listener.
fn start_xlb(
    dir: &Path,
    name: &str,
    config: &str,
    listen: Listen,
    cpu: Option<usize>,
) -> anyhow::Result<Proc> {
    start_xlb_under(dir, name, config, listen, cpu, None)
}

/// [`start_xlb`], with `xlb` run by `wrapper` (a program and its
/// arguments, before xlb's path) when one is given.
fn start_xlb_under(
    dir: &Path,
    name: &str,
    config: &str,
    listen: Listen,
    cpu: Option<usize>,
    wrapper: Option<&[String]>,
) -> anyhow::Result<Proc> {
    let bin = xlb_binary();
    if !bin.is_file() {
        bail!(
            "{} does not exist: run `cargo xtask bench l7` (or build it and set XLB_BIN)",
            bin.display()
        );
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let log = dir.join(format!("{name}-stderr.log"));
    let stderr = std::fs::File::create(&log)?;
    let mut cmd = match wrapper {
        Some([program, args @ ..]) => {
            let mut c = procs::pinned(cpu, program);
            c.args(args).arg(&bin);
            c
        }
        _ => procs::pinned(cpu, &bin),
    };
    let child = cmd
        .arg("run")
        .arg("-c")
        .arg(&path)
        // As nginx's `error_log … warn`: nothing per request.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut proc = Proc::new(name, child);
    let stdout = proc.child_mut().stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let why = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("xlb ready") => break None,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Some("xlb closed its stdout without printing `xlb ready`".to_string())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = proc.exited() {
            break Some(format!(
                "xlb exited ({status}) without printing `xlb ready`"
            ));
        }
        if Instant::now() >= deadline {
            break Some(format!(
                "xlb printed no `xlb ready` within {READY_TIMEOUT:?}"
            ));
        }
    };
    if let Some(why) = why {
        let _ = proc.stop(Duration::from_secs(2));
        bail!(
            "{why}\nconfig {}:\n{}\nstderr:\n{}",
            path.display(),
            std::fs::read_to_string(&path).unwrap_or_default(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    wait_ready(&mut proc, listen.plain, &log)?;
    Ok(proc)
}

/// Before measuring: the plain listener answers 200 (checked when started),
/// and the TLS listener negotiates h2 and answers 100 requests with 2xx.
fn check_proxy(dir: &Path, r: &mut Running) -> anyhow::Result<()> {
    let out = dir.join(format!("{}-check-h2load.txt", r.kind.name()));
    let text = procs::run_tool(
        Command::new("h2load")
            .args(["-n", "100", "-c", "1", "-m", "1"])
            .arg(TLS13_CIPHERS)
            .arg(format!("https://127.0.0.1:{}/", r.listen.tls)),
        &out,
        Duration::from_secs(20),
    )?;
    anyhow::ensure!(
        text.contains("Application protocol: h2"),
        "ALPN did not negotiate h2:\n{text}"
    );
    anyhow::ensure!(
        text.contains("100 succeeded") && text.contains("100 2xx"),
        "not every request succeeded with 2xx:\n{text}"
    );
    anyhow::ensure!(r.proc.exited().is_none(), "exited during the check");
    Ok(())
}

/// One warm-up and one measured run of `proto` against `r` (`GET /`).
fn measure(s: &Settings, dir: &Path, r: &mut Running, proto: Proto) -> anyhow::Result<Sample> {
    measure_load(s, dir, r, proto, H1_ROOT)
}

/// One warm-up and one measured HTTP/1.1 run of `load` against `r`.
fn measure_h1(
    s: &Settings,
    dir: &Path,
    r: &mut Running,
    load: H1Load<'_>,
) -> anyhow::Result<Sample> {
    measure_load(s, dir, r, Proto::H1, load)
}

/// Lines in `path` (0 when it does not exist yet).
fn count_lines(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read(path) {
        Ok(b) => Ok(b.iter().filter(|&&c| c == b'\n').count() as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `h1` applies to HTTP/1.1 only (h2load always asks for `/`).
fn measure_load(
    s: &Settings,
    dir: &Path,
    r: &mut Running,
    proto: Proto,
    h1: H1Load<'_>,
) -> anyhow::Result<Sample> {
    let tag = format!(
        "{}-{}{}",
        r.kind.name(),
        if proto == Proto::H1 { "h1" } else { "h2" },
        h1.label
    );
    let out = dir.join(format!("{tag}.txt"));
    let limit = Duration::from_secs(s.seconds + s.warmup + 60);
    let (mut cmd, main_starts) = match proto {
        Proto::H1 => {
            let url = format!("http://127.0.0.1:{}{}", r.listen.plain, h1.path);
            // wrk has no warm-up option: a separate run first.
            let script: Vec<String> = match h1.script {
                Some(p) => vec!["-s".into(), p.display().to_string()],
                None => Vec::new(),
            };
            procs::run_tool(
                Command::new("wrk")
                    .args(wrk_args(H1_CONNECTIONS, s.warmup))
                    .args(&script)
                    .arg(&url),
                &dir.join(format!("{tag}-warmup.txt")),
                limit,
            )
            .context("wrk warm-up")?;
            let mut c = Command::new("wrk");
            c.args(wrk_args(H1_CONNECTIONS, s.seconds))
                .args(&script)
                .arg("--latency")
                .arg(&url);
            (c, Duration::ZERO)
        }
        Proto::H2 => {
            let mut c = Command::new("h2load");
            c.args(["-t", "1"])
                .args(["-c", &H2_CONNECTIONS.to_string()])
                .args(["-m", &H2_STREAMS.to_string()])
                .args(["-D", &s.seconds.to_string()])
                .arg(format!("--warm-up-time={}", s.warmup))
                .arg(TLS13_CIPHERS)
                .arg(format!(
                    "--log-file={}",
                    dir.join(format!("{tag}.log")).display()
                ))
                .arg(format!("https://127.0.0.1:{}/", r.listen.tls));
            (c, Duration::from_secs(s.warmup))
        }
    };
    // CPU shares over the middle of the measured interval (the tool runs
    // in the background meanwhile). h2load appends to its log.
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(dir.join(format!("{tag}.log")));
    let backend_before = h1.backend_log.map(count_lines).transpose()?;
    let mut tool = procs::spawn_logged(&tag, &mut cmd, &out)?;
    let started = Instant::now();
    let edge = Duration::from_millis(if s.seconds >= 4 { 500 } else { 100 });
    let from = main_starts + edge;
    let to = main_starts + Duration::from_secs(s.seconds) - edge;
    sleep_until(started + from);
    let pid = r.proc.pid();
    let before = (
        cpu_times(s.proxy_cpu)?,
        cpu_times(s.load_cpu)?,
        procs::tree_cpu_seconds(pid)?,
        Instant::now(),
    );
    sleep_until(started + to);
    let after = (
        cpu_times(s.proxy_cpu)?,
        cpu_times(s.load_cpu)?,
        procs::tree_cpu_seconds(pid)?,
        Instant::now(),
    );
    // The counts cover the end of the load's run, outside the timed
    // window: only when the edge left after it is long enough.
    let kernel = match edge > KERNEL_COUNT_WINDOW {
        true => match procs::kernel_events(&procs::tree_pids(pid), KERNEL_COUNT_WINDOW) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("bench l7: {tag}: no system-call counts: {e:#}");
                None
            }
        },
        false => None,
    };
    let deadline = started + limit;
    let status = loop {
        if let Some(st) = tool.exited() {
            break st;
        }
        if Instant::now() >= deadline {
            bail!("{tag} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let backend_requests = match (h1.backend_log, backend_before) {
        (Some(log), Some(before)) => Some(count_lines(log)?.saturating_sub(before)),
        _ => None,
    };
    let text = std::fs::read_to_string(&out)?;
    anyhow::ensure!(status.success(), "{tag} failed ({status}):\n{text}");
    let load = match proto {
        Proto::H1 => parse::wrk(&text),
        Proto::H2 => {
            let log = std::fs::read_to_string(dir.join(format!("{tag}.log")))?;
            let l = parse::h2load(&text, &log)?;
            anyhow::ensure!(
                l.negotiated.ends_with(" h2"),
                "h2load did not negotiate h2 ({})",
                l.negotiated
            );
            Ok(l)
        }
    }
    .with_context(|| format!("reading {tag}'s output:\n{text}"))?;
    anyhow::ensure!(load.requests > 0, "no request completed:\n{text}");
    let share = load.errors as f64 / load.requests as f64;
    anyhow::ensure!(
        share <= MAX_ERROR_SHARE,
        "{} of {} requests failed or were not 2xx/3xx:\n{text}",
        load.errors,
        load.requests
    );
    anyhow::ensure!(
        !h1.no_errors || load.errors == 0,
        "{} requests failed or were not 2xx/3xx (none may be):\n{text}",
        load.errors
    );
    anyhow::ensure!(
        r.proc.exited().is_none(),
        "{} exited during the run",
        r.kind.name()
    );
    let window = (after.3 - before.3).as_secs_f64();
    let proxy_cpu = after.2 - before.2;
    let per_req = |secs: f64| secs * 1e6 / (load.rps * window);
    let rps = load.rps;
    let per_counted = move |n: u64| n as f64 / (rps * KERNEL_COUNT_WINDOW.as_secs_f64());
    Ok(Sample {
        proxy_share: proxy_cpu.total() / window,
        cpu_us_per_req: per_req(proxy_cpu.total()),
        cpu_user_us_per_req: per_req(proxy_cpu.user),
        cpu_kernel_us_per_req: per_req(proxy_cpu.system),
        load,
        proxy_busy: busy(&before.0, &after.0),
        load_busy: busy(&before.1, &after.1),
        backend_requests,
        syscalls_per_req: kernel.map(|(n, _)| per_counted(n)),
        switches_per_req: kernel.map(|(_, n)| per_counted(n)),
    })
}

/// The proxies' order in `round`: as started, reversed every other
/// round, so that no proxy always runs first or last.
fn round_order(proxies: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..proxies).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

fn wrk_args(connections: u32, seconds: u64) -> Vec<String> {
    vec![
        "-t1".into(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--timeout".into(),
        "5s".into(),
    ]
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn cpu_times(cpu: Option<usize>) -> anyhow::Result<Option<CpuTimes>> {
    cpu.map(CpuTimes::read).transpose()
}

fn busy(a: &Option<CpuTimes>, b: &Option<CpuTimes>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.busy_since(a),
        _ => f64::NAN,
    }
}

/// Medians over rounds of one proxy and protocol.
#[derive(Clone, Copy)]
struct Med {
    rps: f64,
    p50: f64,
    p99: f64,
    proxy_share: f64,
    cpu_us_per_req: f64,
    /// Medians of each part on its own: they need not add up to the
    /// median of the total exactly.
    cpu_user_us_per_req: f64,
    cpu_kernel_us_per_req: f64,
    proxy_busy: f64,
    load_busy: f64,
}

fn medians(v: &[Sample]) -> Med {
    let m = |f: &dyn Fn(&Sample) -> f64| parse::median(&v.iter().map(f).collect::<Vec<_>>());
    Med {
        rps: m(&|x| x.load.rps),
        p50: m(&|x| x.load.p50_us),
        p99: m(&|x| x.load.p99_us),
        proxy_share: m(&|x| x.proxy_share),
        cpu_us_per_req: m(&|x| x.cpu_us_per_req),
        cpu_user_us_per_req: m(&|x| x.cpu_user_us_per_req),
        cpu_kernel_us_per_req: m(&|x| x.cpu_kernel_us_per_req),
        proxy_busy: m(&|x| x.proxy_busy),
        load_busy: m(&|x| x.load_busy),
    }
}

fn report(
    s: &Settings,
    kinds: &[Kind],
    samples: &[[Vec<Sample>; 2]],
    extra: &ExtraSamples,
    cache_skipped: Option<&str>,
    fixed: Option<&FixedRate>,
    counted: Option<&instructions::PerRequest>,
) -> anyhow::Result<()> {
    println!(
        "\nmedians of {} round(s) of {} s; {} wrk connections; {} h2load connections × {} \
         streams",
        s.rounds, s.seconds, H1_CONNECTIONS, H2_CONNECTIONS, H2_STREAMS
    );
    println!(
        "{:<16} {:<8} {}  negotiated",
        "protocol",
        "proxy",
        stat_columns()
    );
    for proto in Proto::ALL {
        for (i, k) in kinds.iter().enumerate() {
            let v = &samples[i][proto as usize];
            let m = medians(v);
            println!(
                "{:<16} {:<8} {:>9.0} {:>8.3} {:>8.3} {:>8.0}% {:>8.1} {:>12.1} {:>14.1} \
                 {:>4.0}/{:>3.0}%  {}",
                proto.name(),
                k.name(),
                m.rps,
                m.p50 / 1e3,
                m.p99 / 1e3,
                m.proxy_share * 100.0,
                m.cpu_us_per_req,
                m.cpu_user_us_per_req,
                m.cpu_kernel_us_per_req,
                m.proxy_busy * 100.0,
                m.load_busy * 100.0,
                v.first().map(|x| x.load.negotiated.as_str()).unwrap_or(""),
            );
        }
    }
    println!(
        "\nkernel work per request (perf stat, {} ms after each timed window; medians)",
        KERNEL_COUNT_WINDOW.as_millis()
    );
    println!(
        "{:<16} {:<8} {:>12} {:>18}",
        "protocol", "proxy", "syscalls", "context switches"
    );
    for proto in Proto::ALL {
        for (i, k) in kinds.iter().enumerate() {
            let v = &samples[i][proto as usize];
            let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
                let xs: Vec<f64> = v.iter().filter_map(f).collect();
                (!xs.is_empty()).then(|| parse::median(&xs))
            };
            let show = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.2}"));
            println!(
                "{:<16} {:<8} {:>12} {:>18}",
                proto.name(),
                k.name(),
                show(med(&|x| x.syscalls_per_req)),
                show(med(&|x| x.switches_per_req)),
            );
        }
    }
    let Some(xi) = kinds.iter().position(|k| *k == Kind::Xlb) else {
        println!("\nxlb was not measured (XLB_BENCH_PROXIES): no ratios, no JSON written");
        return Ok(());
    };
    let mut floors = Vec::new();
    for (proto, baseline, target) in FLOORS {
        let Some(bi) = kinds.iter().position(|k| *k == baseline) else {
            continue;
        };
        let x = medians(&samples[xi][proto as usize]);
        let b = medians(&samples[bi][proto as usize]);
        if floors.is_empty() {
            println!();
        }
        floors.push(kernel_floor(proto, baseline, target, &x, &b));
    }
    println!("\nxlb / baseline (rps: higher is better; latency: lower is better)");
    println!(
        "{:<16} {:<9} {:>8} {:>8} {:>8}  target",
        "protocol", "baseline", "rps", "p50", "p99"
    );
    let mut cases = Vec::new();
    for proto in Proto::ALL {
        let x = medians(&samples[xi][proto as usize]);
        for (bi, b) in kinds.iter().enumerate() {
            if bi == xi {
                continue;
            }
            let m = medians(&samples[bi][proto as usize]);
            let target = match (proto, b) {
                (Proto::H1, Kind::Nginx) => {
                    let ok = x.rps >= m.rps;
                    format!("rps ≥ 1.0: {}", if ok { "met" } else { "MISSED" })
                }
                (Proto::H2, Kind::Haproxy) => {
                    let ok = x.rps >= m.rps;
                    format!("rps ≥ 1.0: {}", if ok { "met" } else { "MISSED" })
                }
                _ => "—".into(),
            };
            println!(
                "{:<16} {:<9} {:>8.2} {:>8.2} {:>8.2}  {target}",
                proto.name(),
                b.name(),
                x.rps / m.rps,
                x.p50 / m.p50,
                x.p99 / m.p99
            );
            let case = format!("{} xlb vs {}", proto.name(), b.name());
            cases.extend(json_cases(&case, b.name(), &x, &m));
        }
    }
    cases.extend(floors);
    cases.extend(fixed.map(report_fixed_rate).unwrap_or_default());
    cases.extend(report_post(extra));
    cases.extend(report_rate_limits(extra));
    cases.extend(report_observe(extra));
    cases.extend(report_cache(extra, cache_skipped));
    if let Some(c) = counted {
        println!(
            "\nxlb's instructions per proxied request (callgrind, one worker): \
             http/1.1 {:.0}, h2+tls {:.0}",
            c.h1, c.h2
        );
        for (proto, value) in [(Proto::H1, c.h1), (Proto::H2, c.h2)] {
            cases.push(serde_json::json!({
                "case": format!("{} xlb instructions", proto.name()),
                "metric": "instructions per request",
                "unit": "instructions",
                "value": value,
            }));
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let out = serde_json::json!({"machine": machine(), "cases": cases});
    let path = dir.join("l7.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One line of an extra measurement's table.
fn print_med(label: &str, m: &Med, tail: &str) {
    println!(
        "{:<22} {:>9.0} {:>8.3} {:>8.3} {:>8.0}% {:>8.1} {:>12.1} {:>14.1} {:>4.0}/{:>3.0}%  \
         {tail}",
        label,
        m.rps,
        m.p50 / 1e3,
        m.p99 / 1e3,
        m.proxy_share * 100.0,
        m.cpu_us_per_req,
        m.cpu_user_us_per_req,
        m.cpu_kernel_us_per_req,
        m.proxy_busy * 100.0,
        m.load_busy * 100.0,
    );
}

fn print_med_header(first: &str, last: &str) {
    println!("{:<22} {}  {last}", first, stat_columns());
}

/// The headings of the measured columns every table shares.
fn stat_columns() -> String {
    format!(
        "{:>9} {:>8} {:>8} {:>9} {:>8} {:>12} {:>14} {:>9}",
        "req/s",
        "p50 ms",
        "p99 ms",
        "proxy CPU",
        "µs/req",
        "user µs/req",
        "kernel µs/req",
        "CPUs busy"
    )
}

/// JSON cases of `x` against `b` (DESIGN.md's schema).
fn json_cases(case: &str, baseline: &str, x: &Med, b: &Med) -> Vec<serde_json::Value> {
    [
        ("requests per second", "req/s", x.rps, b.rps),
        ("p50 latency", "us", x.p50, b.p50),
        ("p99 latency", "us", x.p99, b.p99),
        (
            "proxy CPU time per request",
            "us",
            x.cpu_us_per_req,
            b.cpu_us_per_req,
        ),
        (
            "proxy user CPU time per request",
            "us",
            x.cpu_user_us_per_req,
            b.cpu_user_us_per_req,
        ),
        (
            "proxy kernel CPU time per request",
            "us",
            x.cpu_kernel_us_per_req,
            b.cpu_kernel_us_per_req,
        ),
    ]
    .into_iter()
    .map(|(metric, unit, xv, bv)| {
        serde_json::json!({
            "case": case, "metric": metric, "unit": unit,
            "value": xv, "baseline": baseline, "baseline_value": bv,
            "ratio": xv / bv,
        })
    })
    .collect()
}

/// The kernel floors printed after the main table: protocol, baseline, and
/// the xlb ÷ baseline req/s target.
const FLOORS: [(Proto, Kind, f64); 2] = [
    (Proto::H1, Kind::Nginx, 1.0),
    (Proto::H2, Kind::Haproxy, 1.0),
];

/// Prints the kernel floor of xlb against `baseline` and returns it as a
/// JSON case. The floor is the baseline's total CPU µs/req ÷ xlb's kernel
/// µs/req: with each proxy saturating its one CPU, req/s is about
/// 1 / (CPU per request), so this is the most xlb ÷ baseline req/s could
/// be if xlb spent no user time at all and kept this kernel work per
/// request. In the JSON, value and baseline_value are those two inverses
/// (requests per CPU second), so `ratio` is the floor.
fn kernel_floor(proto: Proto, baseline: Kind, target: f64, x: &Med, b: &Med) -> serde_json::Value {
    let floor = b.cpu_us_per_req / x.cpu_kernel_us_per_req;
    // xlb's user time per request at which xlb ÷ baseline reaches `target`
    // (same kernel time): negative when even none is not enough.
    let budget = b.cpu_us_per_req / target - x.cpu_kernel_us_per_req;
    let verdict = if budget >= 0.0 {
        format!(
            "{target:.1}× needs xlb's user time at ≤ {budget:.1} µs/req (now {:.1})",
            x.cpu_user_us_per_req
        )
    } else {
        format!("{target:.1}× is out of reach with this kernel work")
    };
    println!(
        "kernel floor {} vs {}: {} {:.1} CPU µs/req ÷ xlb {:.1} kernel µs/req = {floor:.2}, \
         the most xlb/{} req/s could be if xlb spent no user time at all, with this kernel \
         work per request; {verdict}",
        proto.name(),
        baseline.name(),
        baseline.name(),
        b.cpu_us_per_req,
        x.cpu_kernel_us_per_req,
        baseline.name(),
    );
    let (xv, bv) = (1e6 / x.cpu_kernel_us_per_req, 1e6 / b.cpu_us_per_req);
    serde_json::json!({
        "case": format!("{} xlb kernel floor vs {}", proto.name(), baseline.name()),
        "metric": "requests per CPU second (xlb: kernel time only; baseline: all CPU time)",
        "unit": "req/s per CPU",
        "value": xv, "baseline": baseline.name(), "baseline_value": bv,
        "ratio": xv / bv,
    })
}

/// The POST case: each proxy's medians, xlb ÷ each peer.
fn report_post(extra: &ExtraSamples) -> Vec<serde_json::Value> {
    let of = |k: Kind| {
        extra
            .post
            .iter()
            .find(|(kind, _)| *kind == k)
            .map(|(_, v)| v)
    };
    let Some(xlb) = of(Kind::Xlb) else {
        return Vec::new();
    };
    println!(
        "\nhttp/1.1 POST (wrk, {H1_CONNECTIONS} conns), a {}-byte JSON body per request",
        post_body().len()
    );
    print_med_header("proxy", "");
    let x = medians(xlb);
    print_med("xlb", &x, "");
    let mut cases = Vec::new();
    for peer in [Kind::Nginx, Kind::Haproxy] {
        let Some(runs) = of(peer) else {
            continue;
        };
        let b = medians(runs);
        print_med(peer.name(), &b, "");
        println!(
            "xlb / {}: rps {:.3}, CPU µs/req {:.3}",
            peer.name(),
            x.rps / b.rps,
            x.cpu_us_per_req / b.cpu_us_per_req
        );
        cases.extend(json_cases(
            &format!("http/1.1 POST (wrk) xlb vs {}", peer.name()),
            peer.name(),
            &x,
            &b,
        ));
    }
    cases
}

/// The rate limiter's cost: xlb with three rules ÷ the same xlb without.
fn report_rate_limits(extra: &ExtraSamples) -> Vec<serde_json::Value> {
    if extra.limited.is_empty() {
        return Vec::new();
    }
    let u = medians(&extra.unlimited);
    let l = medians(&extra.limited);
    let non2xx: u64 = extra.limited.iter().map(|x| x.load.errors).sum();
    println!(
        "\nrate limiter cost: http/1.1 (wrk, {H1_CONNECTIONS} conns) GET /, one route with {} \
         rules (keys {}; {} each), paired runs",
        configs::RATE_LIMIT_KEYS.len(),
        configs::RATE_LIMIT_KEYS.join(", "),
        configs::RATE_LIMIT_RATE
    );
    print_med_header("xlb route", "non-2xx");
    print_med("without rules", &u, "");
    print_med(
        &format!("{} rules", configs::RATE_LIMIT_KEYS.len()),
        &l,
        &non2xx.to_string(),
    );
    println!(
        "limited / unlimited: rps {:.3}, CPU µs/req {:.3}, p50 {:.2}, p99 {:.2}",
        l.rps / u.rps,
        l.cpu_us_per_req / u.cpu_us_per_req,
        l.p50 / u.p50,
        l.p99 / u.p99
    );
    json_cases(
        "http/1.1 (wrk) xlb with 3 rate-limit rules vs without",
        "xlb without rate limits",
        &l,
        &u,
    )
}

/// Metrics and access log on ÷ off (goal: rps ratio ≥ 0.97).
fn report_observe(extra: &ExtraSamples) -> Vec<serde_json::Value> {
    if extra.observed.is_empty() {
        return Vec::new();
    }
    let off = medians(&extra.unobserved);
    let on = medians(&extra.observed);
    println!(
        "\nobservability cost: http/1.1 (wrk, {H1_CONNECTIONS} conns) GET /, `observe:` with \
         /metrics and a JSON access log to a file, against the same xlb without it, paired runs"
    );
    print_med_header("xlb", "");
    print_med("observe off", &off, "");
    print_med("observe on", &on, "");
    println!(
        "on / off: rps {:.3} (goal ≥ 0.97), CPU µs/req {:.3}, p50 {:.2}, p99 {:.2}",
        on.rps / off.rps,
        on.cpu_us_per_req / off.cpu_us_per_req,
        on.p50 / off.p50,
        on.p99 / off.p99
    );
    let mut cases = json_cases(
        "http/1.1 (wrk) xlb with metrics and access log vs without",
        "xlb without observe",
        &on,
        &off,
    );
    if !extra.nginx_logged.is_empty() {
        let n_off = medians(&extra.nginx_unlogged);
        let n_on = medians(&extra.nginx_logged);
        println!(
            "the peer, same rounds: nginx with a JSON access log and $request_id (no metrics, \
             no traceparent) against the same nginx with `access_log off`"
        );
        print_med_header("nginx", "");
        print_med("access log off", &n_off, "");
        print_med("access log on", &n_on, "");
        println!(
            "nginx on / off: rps {:.3}, CPU µs/req {:.3}; xlb's on ÷ nginx's on: rps {:.3}",
            n_on.rps / n_off.rps,
            n_on.cpu_us_per_req / n_off.cpu_us_per_req,
            on.rps / n_on.rps
        );
        cases.extend(json_cases(
            "http/1.1 (wrk) nginx with JSON access log vs without",
            "nginx without access log",
            &n_on,
            &n_off,
        ));
    }
    cases
}

/// Cache hits: xlb's cache ÷ nginx's proxy_cache.
fn report_cache(extra: &ExtraSamples, skipped: Option<&str>) -> Vec<serde_json::Value> {
    println!(
        "\ncache hits: http/1.1 (wrk, {H1_CONNECTIONS} conns) GET {} (backend: Cache-Control: \
         max-age=60)",
        configs::CACHED_PATH
    );
    if let Some(why) = skipped {
        println!("skipped: {why}");
        return Vec::new();
    }
    if extra.xlb_cache.is_empty() {
        return Vec::new();
    }
    let x = medians(&extra.xlb_cache);
    let n = medians(&extra.nginx_cache);
    let backend = |v: &[Sample]| -> String {
        let per: Vec<String> = v
            .iter()
            .map(|x| x.backend_requests.unwrap_or(0).to_string())
            .collect();
        per.join("/")
    };
    print_med_header("proxy", "backend requests per measured run");
    print_med("xlb cache", &x, &backend(&extra.xlb_cache));
    print_med("nginx proxy_cache", &n, &backend(&extra.nginx_cache));
    println!(
        "xlb / nginx: rps {:.2}, p50 {:.2}, p99 {:.2}, CPU µs/req {:.2}",
        x.rps / n.rps,
        x.p50 / n.p50,
        x.p99 / n.p99,
        x.cpu_us_per_req / n.cpu_us_per_req
    );
    json_cases(
        "http/1.1 (wrk) cache hits xlb vs nginx",
        "nginx proxy_cache",
        &x,
        &n,
    )
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
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Not available_parallelism(): the bench has pinned itself to one CPU.
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{cpus} cpus, {cpu}, kernel {}", kernel.trim())
}
