//! Processes, ports and CPUs for the L7 bench: free loopback ports checked by
//! binding them, commands pinned to a CPU with `taskset`, tools run to
//! completion under a deadline, readiness probes, CPU busy time read from
//! /proc/stat, and a process tree's user and system time from
//! /proc/PID/stat. Every child is owned by a [`Proc`], so nothing outlives
//! the bench, also when it panics.
use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use nix::{sys::signal, unistd::Pid};

/// Owns a child process: dropping it stops the child (SIGTERM, SIGKILL
/// after 5 s) unless it has already exited. Unlike signalling a stored pid,
/// this never signals a pid the child has given back (std's `Child`
/// remembers that it was reaped).
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Takes ownership of `child`; `name` is for messages.
    pub fn new(name: impl Into<String>, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child itself (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        let _ = signal::kill(
            Pid::from_raw(self.child.id() as i32),
            signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench l7: {} ignored SIGTERM; killing it", self.name);
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

/// Hands out 127.0.0.1 ports the kernel says are free (bound to port 0,
/// then released), never the same one twice.
#[derive(Debug, Default)]
pub struct Ports {
    given: HashSet<u16>,
}

impl Ports {
    /// A port that was free a moment ago and that this allocator has not
    /// handed out before.
    pub fn free(&mut self) -> anyhow::Result<u16> {
        for _ in 0..100 {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
            let port = l.local_addr()?.port();
            drop(l);
            // Bind again: the port must be bindable by someone else now.
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && self.given.insert(port) {
                return Ok(port);
            }
        }
        bail!("no free 127.0.0.1 port after 100 tries")
    }
}

/// `program` run through `taskset -c CPU` when `cpu` is given.
pub fn pinned(cpu: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Starts `cmd` (called `name` in messages) with stdout and stderr going
/// to `log` (appended).
pub fn spawn_logged(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name} ({cmd:?})"))?;
    Ok(Proc::new(name, child))
}

/// Runs `cmd` to completion (killed after `limit`), with stdout and stderr
/// in `out` (overwritten); returns what it printed, or an error naming the
/// exit status and its output.
pub fn run_tool(cmd: &mut Command, out: &Path, limit: Duration) -> anyhow::Result<String> {
    let _ = std::fs::remove_file(out);
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut guard = spawn_logged(&name, cmd, out)?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = guard.exited() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = guard.stop(Duration::from_secs(2));
            bail!(
                "{:?} did not finish within {limit:?}; its output:\n{}",
                cmd.get_program(),
                std::fs::read_to_string(out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out)?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}):\n{text}");
    }
    Ok(text)
}

/// One `GET /` over plain HTTP/1.1 with `Connection: close`; returns the
/// status code.
pub fn http_get_status(port: u16) -> anyhow::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP/1.1 response: {:?}", text.lines().next()))?;
    Ok(code)
}

/// Waits until a `GET /` on `port` is answered with 200, or fails after
/// `limit` (also when `alive` says the server exited).
pub fn wait_http_ok(
    port: u16,
    limit: Duration,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        if !alive() {
            bail!("the server exited before answering on port {port}");
        }
        match http_get_status(port) {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("status {code}"),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no 200 from 127.0.0.1:{port} within {limit:?} (last: {last})")
}

/// Busy and total jiffies of one CPU, from /proc/stat.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Reads the line of `cpu` in /proc/stat.
    pub fn read(cpu: usize) -> anyhow::Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let tag = format!("cpu{cpu} ");
        let line = stat
            .lines()
            .find(|l| l.starts_with(&tag))
            .with_context(|| format!("no {tag} in /proc/stat"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        anyhow::ensure!(v.len() >= 5, "short /proc/stat line `{line}`");
        // user nice system idle iowait irq softirq steal (guest is in user).
        let total: u64 = v.iter().take(8).sum();
        let idle = v[3] + v[4];
        Ok(CpuTimes {
            busy: total - idle,
            total,
        })
    }

    /// The busy fraction (0‥1) between `earlier` and `self`.
    pub fn busy_since(&self, earlier: &CpuTimes) -> f64 {
        let t = self.total.saturating_sub(earlier.total);
        if t == 0 {
            return f64::NAN;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / t as f64
    }
}

/// CPU time of a process tree in seconds, split into user and system
/// (kernel) time as /proc/PID/stat reports them (utime and stime).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    pub user: f64,
    pub system: f64,
}

impl CpuSplit {
    /// User + system.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuSplit {
    type Output = CpuSplit;

    /// The time used between `rhs` (earlier) and `self`.
    fn sub(self, rhs: CpuSplit) -> CpuSplit {
        CpuSplit {
            user: self.user - rhs.user,
            system: self.system - rhs.system,
        }
    }
}

/// CPU time (user and system, in seconds) used so far by process `pid` and
/// its descendants (nginx's worker is its master's child), from
/// /proc/PID/stat. Exited descendants are not counted.
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<CpuSplit> {
    // /proc counts in USER_HZ ticks, which the kernel fixes at 100 for
    // userspace on every architecture (include/asm-generic/param.h).
    let tck = 100.0;
    let mut procs = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let Ok(e) = e else { continue };
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Processes come and go while we read: skip the ones that went.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some(st) = parse_stat(&stat) {
                procs.push((p, st));
            }
        }
    }
    let mut tree = vec![pid];
    let (mut user, mut system) = (0u64, 0u64);
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        for &(p, st) in &procs {
            if p == cur {
                user += st.utime;
                system += st.stime;
            }
            if st.ppid == cur && !tree.contains(&p) {
                tree.push(p);
            }
        }
        i += 1;
    }
    anyhow::ensure!(
        procs.iter().any(|&(p, _)| p == pid),
        "no process {pid} in /proc"
    );
    Ok(CpuSplit {
        user: user as f64 / tck,
        system: system as f64 / tck,
    })
}

/// Process `pid` and its descendants, from /proc.
pub fn tree_pids(pid: u32) -> Vec<u32> {
    let mut procs = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(st) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                procs.push((p, st.ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        for &(p, ppid) in &procs {
            if ppid == cur && !tree.contains(&p) {
                tree.push(p);
            }
        }
        i += 1;
    }
    tree
}

/// System calls entered and context switches of the processes `pids`
/// (all their threads) over `window`, counted by `perf stat` on the
/// `raw_syscalls:sys_enter` tracepoint and the `context-switches`
/// software event. The counting itself adds a little kernel work per
/// system call, so the bench runs it outside the window it times.
pub fn kernel_events(pids: &[u32], window: std::time::Duration) -> anyhow::Result<(u64, u64)> {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let out = std::process::Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter,context-switches",
        ])
        .args(["-p", &list.join(",")])
        .args(["--", "sleep", &format!("{:.3}", window.as_secs_f64())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .context("running perf stat")?;
    let text = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "perf stat failed: {text}");
    let count = |event: &str| -> anyhow::Result<u64> {
        text.lines()
            .find(|l| l.split(',').nth(2) == Some(event))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no count of {event} in perf's output: {text}"))
    };
    Ok((count("raw_syscalls:sys_enter")?, count("context-switches")?))
}

/// The fields of a /proc/PID/stat line the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// User and system time, in ticks.
    utime: u64,
    stime: u64,
}

/// The parent pid, utime and stime (ticks) of a /proc/PID/stat line. The
/// command name (field 2) may hold spaces and parentheses: fields are
/// counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let mut p = Ports::default();
        let a = p.free().unwrap();
        let b = p.free().unwrap();
        assert_ne!(a, b);
        TcpListener::bind((Ipv4Addr::LOCALHOST, a)).unwrap();
    }

    #[test]
    fn cpu_times_read() {
        let a = CpuTimes::read(0).unwrap();
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let b = CpuTimes::read(0).unwrap();
        let f = b.busy_since(&a);
        assert!(f.is_nan() || (0.0..=1.0).contains(&f), "{f}");
    }

    #[test]
    fn stat_lines() {
        let l = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(
            parse_stat(l),
            Some(Stat {
                ppid: 7,
                utime: 250,
                stime: 50
            })
        );
        // A real line (a shell), fields 14 and 15 distinct.
        let l = "1234 (bash) S 1200 1234 1234 34816 1250 4194304 5012 30811 0 3 \
                 117 42 61 20 20 0 1 0 102938 9093120 1322 18446744073709551615 1 1 0 0 0 0 \
                 65536 3686404 1266761467 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(l),
            Some(Stat {
                ppid: 1200,
                utime: 117,
                stime: 42
            })
        );
        assert_eq!(parse_stat("1 (short) S 0 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        let me = tree_cpu_seconds(std::process::id()).unwrap();
        assert!(me.user >= 0.0 && me.system >= 0.0, "{me:?}");
        assert_eq!(me.total(), me.user + me.system);
    }

    #[test]
    fn own_cpu_time_is_counted() {
        // Burn CPU (bounded) until at least one tick has been charged.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut x = 0u64;
        let me = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i) * i);
            }
            let me = tree_cpu_seconds(std::process::id()).unwrap();
            if me.total() > 0.0 || Instant::now() >= deadline {
                break me;
            }
        };
        std::hint::black_box(x);
        assert!(me.total() > 0.0, "{me:?}");
        let d = me - CpuSplit::default();
        assert_eq!(d, me);
    }

    #[test]
    fn run_tool_reports_failure_and_output() {
        let dir = std::env::temp_dir().join(format!("bench-l7-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("o.txt");
        let ok = run_tool(
            Command::new("sh").args(["-c", "echo hi"]),
            &out,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(ok.trim(), "hi");
        let err = run_tool(
            Command::new("sh").args(["-c", "echo bad; exit 3"]),
            &out,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("bad"));
        let slow = run_tool(
            Command::new("sleep").arg("10"),
            &out,
            Duration::from_millis(200),
        );
        assert!(slow.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
