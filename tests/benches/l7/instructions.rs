//! xlb's user-space instructions per proxied request, counted by callgrind
//! (valgrind): a measure that does not move with the machine's load. On a
//! shared host, wall-clock A/B runs of one binary moved by ±10 % from one
//! minute to the next, while this count repeats to 0.1 %, so a change of a
//! few percent in per-request work is visible here when it is not in
//! requests per second (docs/bench/l7.md).
//!
//! xlb (one worker, the bench's config) runs under callgrind twice per
//! protocol, for [`SHORT`] and for [`LONG`] requests over the same
//! [`CONNECTIONS`] keep-alive connections (h2load); the difference of the
//! two instruction totals, divided by the difference in requests, leaves
//! out start-up, connection set-up (TLS handshakes included) and shutdown.
//! It counts instructions, not time: cache misses and system calls are not
//! in it.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _};
use xlb_tests::bench_l7::{
    configs::{self, Cert, Listen},
    procs::{self, Ports},
};

use super::{start_xlb_under, tool_exists, xlb_instance, Proto, TLS13_CIPHERS};

/// Requests of the short and the long run.
const SHORT: u64 = 2_000;
const LONG: u64 = 10_000;
/// h2load's connections (and streams per connection over HTTP/2).
const CONNECTIONS: u32 = 16;
const STREAMS: u32 = 8;
/// Longest a counted run may take (callgrind slows xlb ~50×).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Instructions per request over HTTP/1.1 and over HTTP/2+TLS.
pub struct PerRequest {
    pub h1: f64,
    pub h2: f64,
}

/// Counts both protocols; `Err` says why it could not (the bench goes on).
pub fn measure(
    dir: &Path,
    ports: &mut Ports,
    cert: Cert<'_>,
    backend: u16,
    cpu: Option<usize>,
) -> anyhow::Result<PerRequest> {
    if !tool_exists("valgrind") {
        bail!("valgrind is not installed (`cargo xtask bench l7` installs it)");
    }
    let mut per = [0.0; 2];
    for proto in Proto::ALL {
        let short = count(dir, ports, cert, backend, cpu, proto, SHORT)?;
        let long = count(dir, ports, cert, backend, cpu, proto, LONG)?;
        if long <= short {
            bail!(
                "{}: {LONG} requests counted {long} instructions, {SHORT} counted {short}",
                proto.name()
            );
        }
        per[proto as usize] = (long - short) as f64 / (LONG - SHORT) as f64;
    }
    Ok(PerRequest {
        h1: per[Proto::H1 as usize],
        h2: per[Proto::H2 as usize],
    })
}

/// One counted run: xlb under callgrind, `n` requests, stopped; the
/// instructions callgrind counted in all of xlb's threads.
fn count(
    dir: &Path,
    ports: &mut Ports,
    cert: Cert<'_>,
    backend: u16,
    cpu: Option<usize>,
    proto: Proto,
    n: u64,
) -> anyhow::Result<u64> {
    let listen = Listen {
        plain: ports.free()?,
        tls: ports.free()?,
    };
    let tag = match proto {
        Proto::H1 => "h1",
        Proto::H2 => "h2",
    };
    let name = format!("xlb-callgrind-{tag}-{n}");
    let out_prefix = dir.join(format!("{name}.callgrind"));
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}.%p", out_prefix.display()),
    ];
    let config = configs::xlb(&xlb_instance("-cg"), listen, cert, backend);
    let mut xlb = start_xlb_under(dir, &name, &config, listen, cpu, Some(&wrapper))?;
    let mut h2load = Command::new("h2load");
    h2load.args(["-n", &n.to_string(), "-c", &CONNECTIONS.to_string()]);
    match proto {
        Proto::H1 => {
            h2load
                .arg("--h1")
                .arg(format!("http://127.0.0.1:{}/", listen.plain));
        }
        Proto::H2 => {
            h2load
                .args(["-m", &STREAMS.to_string(), TLS13_CIPHERS])
                .arg(format!("https://127.0.0.1:{}/", listen.tls));
        }
    }
    let text = procs::run_tool(
        &mut h2load,
        &dir.join(format!("{name}-h2load.txt")),
        RUN_LIMIT,
    )?;
    let succeeded = text
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("requests:")?;
            rest.split(',')
                .find_map(|f| f.trim().strip_suffix(" succeeded"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .with_context(|| format!("no `succeeded` count in h2load's output:\n{text}"))?;
    if succeeded != n {
        bail!("{name}: {succeeded} of {n} requests succeeded:\n{text}");
    }
    // callgrind writes its totals when xlb exits.
    let status = xlb.stop(Duration::from_secs(60))?;
    if !status.success() {
        bail!("{name}: xlb under callgrind exited with {status}");
    }
    let stem = out_prefix
        .file_name()
        .and_then(|s| s.to_str())
        .context("callgrind output name")?
        .to_string();
    let mut total = 0u64;
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
        if !file.starts_with(&stem) {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path)?;
        let summary = text
            .lines()
            .find_map(|l| l.strip_prefix("summary:"))
            .with_context(|| format!("{}: no `summary:` line", path.display()))?;
        total += summary
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("{}: `summary:{summary}`", path.display()))?;
    }
    if files == 0 {
        bail!("{name}: callgrind wrote no output");
    }
    Ok(total)
}
