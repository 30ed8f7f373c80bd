//! Driving the real `xlb` binary: start it inside a namespace on a config,
//! wait until it reports ready, read its counters, stop it.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{names, netns::Netns, process::ChildGuard};

/// How long xlb may take to load and attach before a test gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `xlb` binary under test: `$XLB_BIN` (set by `cargo xtask test`), or
/// the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("XLB_BIN") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xlb")
}

/// A running `xlb run`, stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct Xlb {
    child: ChildGuard,
    instance: String,
    dir: PathBuf,
    /// The ready line's `pins=` value.
    pub pin_dir: PathBuf,
    /// Lines the daemon printed on stdout after `xlb ready` (reload results).
    lines: mpsc::Receiver<String>,
    /// The process that took over from the child (SIGUSR2), which is not
    /// our child: stopped by pid on drop.
    successor: Option<u32>,
}

impl Xlb {
    /// Writes `config_yaml` (which must not set `instance`: a unique one is
    /// added) and starts `xlb run` inside `ns`.
    pub fn start(ns: &Netns, config_yaml: &str) -> anyhow::Result<Xlb> {
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        Xlb::start_logged(ns, config_yaml, &level)
    }

    /// As [`Xlb::start`], with `RUST_LOG` set to `level` for the daemon
    /// (which also sets the eBPF programs' log level).
    pub fn start_logged(ns: &Netns, config_yaml: &str, level: &str) -> anyhow::Result<Xlb> {
        let instance = names::unique("xlb");
        Xlb::start_named(ns, &instance, config_yaml, level, &[])
    }

    /// As [`Xlb::start_logged`] for a given instance name and with extra
    /// `xlb run` arguments (e.g. `--takeover`); the stderr log is appended
    /// to, so several runs of one instance share it.
    pub fn start_named(
        ns: &Netns,
        instance: &str,
        config_yaml: &str,
        level: &str,
        args: &[&str],
    ) -> anyhow::Result<Xlb> {
        let instance = instance.to_string();
        let dir = std::env::temp_dir().join(&instance);
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("xlb.yaml");
        std::fs::write(&config, format!("instance: {instance}\n{config_yaml}"))?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))?;
        let bin = binary();
        if !bin.is_file() {
            bail!(
                "{} does not exist: run `cargo xtask build` (or set XLB_BIN)",
                bin.display()
            );
        }
        let child = ns
            .command(&bin)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::channel();
        let mut xlb = Xlb {
            child: ChildGuard::new(child),
            instance,
            dir,
            pin_dir: PathBuf::new(),
            lines: rx,
            successor: None,
        };
        let stdout = xlb.child.child_mut().stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("xlb ") {
                    let _ = tx.send(line);
                }
            }
        });
        let rx = &xlb.lines;
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => {
                let pins = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("pins="))
                    .context("ready line has no pins=")?;
                xlb.pin_dir = PathBuf::from(pins);
                Ok(xlb)
            }
            Err(_) => bail!(
                "xlb did not become ready within {READY_TIMEOUT:?}; its stderr:\n{}",
                xlb.stderr()
            ),
        }
    }

    /// The config file the daemon runs.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("xlb.yaml")
    }

    /// Replaces the config file with `config_yaml` (the instance line is
    /// kept), sends SIGHUP, and returns the daemon's answer line
    /// (`xlb reloaded …` or `xlb reload failed: …`).
    pub fn reload(&self, config_yaml: &str) -> anyhow::Result<String> {
        std::fs::write(
            self.config_path(),
            format!("instance: {}\n{config_yaml}", self.instance),
        )?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        self.lines
            .recv_timeout(READY_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("no reload answer; stderr:\n{}", self.stderr()))
    }

    /// `xlb flow` for this instance's config: the JSON answer.
    pub fn flow(&self, src: &str, dst: &str, proto: &str) -> anyhow::Result<serde_json::Value> {
        let out = std::process::Command::new(binary())
            .arg("flow")
            .arg("-c")
            .arg(self.config_path())
            .args(["--src", src, "--dst", dst, "--proto", proto])
            .output()?;
        if !out.status.success() {
            bail!("xlb flow failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The instance name, unique to this run.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The pid of the process serving the instance now: the child, or
    /// the successor that took over from it.
    pub fn pid(&self) -> u32 {
        self.successor.unwrap_or_else(|| self.child.pid())
    }

    /// Sends SIGUSR2 (restart/upgrade: the daemon starts a successor with
    /// `--takeover`) and waits for the successor's ready line (the
    /// successor inherits the daemon's stdout); returns its pid.
    pub fn hand_over(&mut self) -> anyhow::Result<u32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGUSR2,
        )?;
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("no successor became ready; stderr:\n{}", self.stderr())
            })?;
            if !line.starts_with("xlb ready") {
                continue;
            }
            let pid: u32 = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pid="))
                .and_then(|p| p.parse().ok())
                .context("ready line without pid=")?;
            self.successor = Some(pid);
            return Ok(pid);
        }
    }

    /// Whether the process this `Xlb` started has exited (after it handed
    /// the instance to a successor, it drains and exits).
    pub fn first_exited(&mut self) -> bool {
        self.child.exited()
    }

    /// Records `pid` as the process serving the instance now (a successor
    /// started by other means than [`Xlb::hand_over`], e.g. the unit's
    /// `ExecReload`).
    pub fn adopt_successor(&mut self, pid: u32) {
        self.successor = Some(pid);
    }

    /// SIGKILLs whichever process serves the instance now and waits until
    /// it is gone (a crash: nothing is cleaned up).
    pub fn kill9(&mut self) {
        let pid = self.pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        if self.successor.take().is_some() {
            wait_gone(pid, Duration::from_secs(10));
        } else {
            let _ = self.child.terminate(Duration::from_secs(10));
        }
    }

    /// What the daemon has logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// `xlb stats --json` for this instance, run from the host namespace
    /// (the pinned maps live in the host's bpffs).
    pub fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let out = std::process::Command::new(binary())
            .args(["stats", "--json", "--instance", &self.instance])
            .output()?;
        if !out.status.success() {
            bail!("xlb stats failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(pid) = self.successor.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            wait_gone(pid, Duration::from_secs(20));
            if crate::process::pid_alive(pid) {
                bail!("successor {pid} did not stop within 20 s");
            }
        }
        Ok(self.child.terminate(Duration::from_secs(10))?)
    }

    /// Starts `xlb run` inside `ns` on a config without XDP (only `l7:`):
    /// as [`Xlb::start`], but the `xlb ready` line need not carry `pins=`
    /// (then [`Xlb::pin_dir`] stays empty), and a daemon that exits before
    /// it is ready fails at once with its stderr instead of after the
    /// timeout.
    pub fn start_l7(ns: &Netns, config_yaml: &str) -> anyhow::Result<Xlb> {
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let mut bin = binary();
        // A relative `XLB_BIN` (`XLB_BIN=target/debug/xlb cargo test …`
        // from the workspace) is relative to the workspace, not to this
        // package's folder where cargo runs the tests.
        if bin.is_relative() && !bin.is_file() {
            let in_workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&bin);
            if in_workspace.is_file() {
                bin = in_workspace;
            }
        }
        if !bin.is_file() {
            bail!(
                "{} does not exist: run `cargo xtask build` (or set XLB_BIN)",
                bin.display()
            );
        }
        let instance = names::unique("xlb");
        let dir = std::env::temp_dir().join(&instance);
        let spawned = (|| {
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("xlb.yaml");
            std::fs::write(&config, format!("instance: {instance}\n{config_yaml}"))?;
            let stderr = std::fs::File::create(dir.join("stderr.log"))?;
            ns.command(&bin)
                .arg("run")
                .arg("-c")
                .arg(&config)
                .env("RUST_LOG", level)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))
        })();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel();
        let mut xlb = Xlb {
            child: ChildGuard::new(child),
            instance,
            dir,
            pin_dir: PathBuf::new(),
            lines: rx,
            successor: None,
        };
        let stdout = xlb.child.child_mut().stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("xlb ") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            match xlb.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("xlb ready") => {
                    if let Some(pins) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("pins="))
                    {
                        xlb.pin_dir = PathBuf::from(pins);
                    }
                    return Ok(xlb);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the daemon is gone (or going); it is
                    // not reaped yet, so signalling its pid is safe.
                    let status = xlb.child.terminate(Duration::from_secs(2));
                    bail!(
                        "xlb exited before it was ready ({status:?}); its stderr:\n{}",
                        xlb.stderr()
                    );
                }
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "xlb did not become ready within {READY_TIMEOUT:?}; its stderr:\n{}",
                    xlb.stderr()
                );
            }
        }
    }
}

/// Waits until `pid` no longer exists (a process that is not our child).
fn wait_gone(pid: u32, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while crate::process::pid_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Xlb {
    fn drop(&mut self) {
        if let Some(pid) = self.successor.take() {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            wait_gone(pid, Duration::from_secs(15));
            if crate::process::pid_alive(pid) {
                let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                wait_gone(pid, Duration::from_secs(5));
            }
        }
        drop(std::mem::replace(&mut self.child, ChildGuard::empty()));
        // A test that killed the daemon leaves its pins (that is the
        // point); remove them so no test leaves state behind.
        let unpinned = std::process::Command::new(binary())
            .args(["unpin", "--instance", &self.instance])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unpinned {
            // Another process runs this instance now (a test replaced this
            // one): its files are its own.
            return;
        }
        for ext in ["json", "handover", "drained", "anycast.json", "lock"] {
            let _ = std::fs::remove_file(format!("/run/xlb/{}.{ext}", self.instance));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
