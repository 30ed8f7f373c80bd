//! Reading the load generators' reports: wrk's `--latency` summary, h2load's
//! summary, and latency percentiles from h2load's `--log-file` (h2load 1.52,
//! Debian 12's, prints only min/max/mean/sd per request, no percentiles).
use anyhow::{bail, Context as _};

/// What one measured run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadResult {
    /// Completed requests per second over the measured interval.
    pub rps: f64,
    /// Median request latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile request latency, microseconds.
    pub p99_us: f64,
    /// Requests completed in the measured interval.
    pub requests: u64,
    /// Requests that failed or were answered with anything but 2xx/3xx,
    /// plus socket errors.
    pub errors: u64,
    /// What the connection negotiated, where the tool says
    /// (h2load: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 h2").
    pub negotiated: String,
}

/// A wrk duration as printed in its reports (`631.00us`, `1.23ms`, `2.00s`,
/// `1.50m`, `1.00h`), in microseconds.
pub fn wrk_duration_us(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk duration `{s}`"))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("bad number in wrk duration `{s}`"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown unit in wrk duration `{s}`"),
    };
    Ok(v * scale)
}

/// Parses the report of `wrk --latency`.
pub fn wrk(out: &str) -> anyhow::Result<LoadResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0u64;
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, val)) = t.split_once('%') {
                match pct.trim() {
                    "50" => p50 = Some(wrk_duration_us(val)?),
                    "99" => p99 = Some(wrk_duration_us(val)?),
                    _ => {}
                }
                continue;
            }
            in_dist = false;
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("wrk Requests/sec")?);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().context("wrk Non-2xx")?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    errors += n.parse::<u64>().context("wrk Socket errors")?;
                }
            }
        } else if t.contains(" requests in ") {
            requests = Some(
                t.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse::<u64>()
                    .context("wrk request count")?,
            );
        }
    }
    Ok(LoadResult {
        rps: rps.context("no `Requests/sec:` in wrk's output")?,
        p50_us: p50.context("no 50% line in wrk's latency distribution")?,
        p99_us: p99.context("no 99% line in wrk's latency distribution")?,
        requests: requests.context("no request count in wrk's output")?,
        errors,
        negotiated: String::new(),
    })
}

/// The numbers before each of `labels` in a comma-separated h2load line
/// such as "requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed".
fn h2load_counts(line: &str, labels: &[&str]) -> anyhow::Result<Vec<u64>> {
    let body = line.split_once(':').map(|x| x.1).unwrap_or(line);
    let mut out = vec![0; labels.len()];
    for part in body.split(',') {
        let mut w = part.split_whitespace();
        let (Some(n), Some(label)) = (w.next(), w.next()) else {
            continue;
        };
        if let Some(i) = labels.iter().position(|l| *l == label) {
            out[i] = n
                .parse()
                .with_context(|| format!("bad count in h2load line `{line}`"))?;
        }
    }
    Ok(out)
}

/// Parses h2load's summary; latencies come from its per-request log
/// (`log`: the `--log-file` contents, see [`h2load_log_latencies`]).
pub fn h2load(out: &str, log: &str) -> anyhow::Result<LoadResult> {
    let mut rps = None;
    let mut requests = None;
    let mut errors = 0u64;
    let mut negotiated = Vec::new();
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in ") {
            // "finished in 10.00s, 12345.60 req/s, 1.23MB/s"
            let field = rest
                .split(',')
                .find(|f| f.trim_end().ends_with("req/s"))
                .context("no req/s in h2load's `finished in` line")?;
            rps = Some(
                field
                    .trim()
                    .trim_end_matches("req/s")
                    .trim()
                    .parse::<f64>()
                    .context("h2load req/s")?,
            );
        } else if t.starts_with("requests:") {
            let c = h2load_counts(t, &["succeeded", "failed", "errored", "timeout"])?;
            requests = Some(c[0]);
            errors += c[1] + c[2] + c[3];
        } else if t.starts_with("status codes:") {
            let c = h2load_counts(t, &["4xx", "5xx"])?;
            errors += c[0] + c[1];
        } else if let Some(v) = t
            .strip_prefix("TLS Protocol:")
            .or_else(|| t.strip_prefix("Cipher:"))
            .or_else(|| t.strip_prefix("Application protocol:"))
        {
            negotiated.push(v.trim().to_string());
        } else if let Some(v) = t.strip_prefix("Server Temp Key:") {
            negotiated.push(v.split_whitespace().next().unwrap_or_default().to_string());
        }
    }
    let mut lat = h2load_log_latencies(log)?;
    anyhow::ensure!(
        !lat.is_empty(),
        "h2load's log file holds no successful request"
    );
    Ok(LoadResult {
        rps: rps.context("no `finished in … req/s` in h2load's output")?,
        p50_us: percentile(&mut lat, 50.0),
        p99_us: percentile(&mut lat, 99.0),
        requests: requests.context("no `requests:` line in h2load's output")?,
        errors,
        negotiated: negotiated.join(" "),
    })
}

/// The latencies (µs) of the successful (2xx/3xx) requests in h2load's
/// `--log-file`: tab-separated start time (µs since the epoch), status
/// (-1 for a failed stream), µs until the end of the response.
pub fn h2load_log_latencies(log: &str) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (_, Some(status), Some(us)) = (cols.next(), cols.next(), cols.next()) else {
            bail!("h2load log line `{line}` has fewer than 3 columns");
        };
        let status: i32 = status.trim().parse().context("h2load log status")?;
        if (200..400).contains(&status) {
            v.push(us.trim().parse::<f64>().context("h2load log latency")?);
        }
    }
    Ok(v)
}

/// The `p`-th percentile (nearest rank) of `v`, which is sorted in place.
/// NaN for an empty slice.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:18081/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   300.91us  183.79us   5.89ms   89.26%
    Req/Sec   117.50k     1.79k  119.72k    83.87%
  Latency Distribution
     50%  264.00us
     75%  277.00us
     90%  508.00us
     99%    1.56ms
  362374 requests in 3.10s, 73.26MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec: 116844.86
Transfer/sec:     23.62MB
";

    #[test]
    fn wrk_report() {
        let r = wrk(WRK).unwrap();
        assert_eq!(r.rps, 116844.86);
        assert_eq!(r.p50_us, 264.0);
        assert_eq!(r.p99_us, 1560.0);
        assert_eq!(r.requests, 362374);
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn wrk_units() {
        assert_eq!(wrk_duration_us("2.00s").unwrap(), 2e6);
        assert_eq!(wrk_duration_us("1.50m").unwrap(), 90e6);
        assert!(wrk_duration_us("12").is_err());
        assert!(wrk_duration_us("1.0xs").is_err());
    }

    #[test]
    fn wrk_without_latency_is_an_error() {
        assert!(wrk("Requests/sec: 10\n 10 requests in 1.00s, 1KB read\n").is_err());
    }

    const H2LOAD: &str = "starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 1s warm-up time and 3s main duration
Warm-up started for thread #0.
progress: 10% of clients started
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.00s, 41234.33 req/s, 3.71MB/s
requests: 123703 total, 123831 started, 123703 done, 123700 succeeded, 3 failed, 0 errored, 0 timeout
status codes: 123700 2xx, 0 3xx, 2 4xx, 1 5xx
traffic: 11.12MB (11660532) total, 1.45MB (1521234) headers (space savings 90.12%), 7.55MB (7917056) data
                     min         max         mean         sd        +/- sd
time for request:      145us     11.33ms      3.07ms       708us    80.01%
";

    #[test]
    fn h2load_report() {
        let log = "1700000000000000\t200\t100\n\
                   1700000000000001\t200\t300\n\
                   1700000000000002\t-1\t5\n\
                   1700000000000003\t200\t200\n";
        let r = h2load(H2LOAD, log).unwrap();
        assert_eq!(r.rps, 41234.33);
        assert_eq!(r.requests, 123700);
        assert_eq!(r.errors, 6);
        assert_eq!(r.p50_us, 200.0);
        assert_eq!(r.p99_us, 300.0);
        assert_eq!(r.negotiated, "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 h2");
    }

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 100.0), 100.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert!(percentile(&mut [], 50.0).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
