//! The L7 testbed: one throwaway network namespace (loopback up) that holds
//! `xlb run`, the backends and the clients, so that a test may use fixed
//! ports and reaches nothing outside. Clients are real programs run inside
//! the namespace: `curl` (HTTP/1.1, h2c, TLS with ALPN), `openssl s_client`,
//! and the Python peers under `tests/peers/` (gRPC, WebSocket). Everything
//! the bed starts, and its scratch folder, is removed on drop, also when a
//! test panics; the namespace's removal kills any straggler inside it.
//!
//! Only std here: backends written with tokio/hyper live in the test that
//! uses them and bind through [`L7Bed::bind`], which creates the listening
//! socket inside the namespace.
use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{names, netns::Netns, process::ChildGuard};

/// The Python that carries Debian's `python3-grpcio` and
/// `python3-websockets` (not whatever `python3` is first on `PATH`).
pub const PYTHON: &str = "/usr/bin/python3";

/// How long a peer may take to print its ready line.
const PEER_READY: Duration = Duration::from_secs(20);

/// Environment variables that would send a client through a proxy of the
/// host (curl and grpcio read them); clients in the bed never use one.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "grpc_proxy",
    "no_proxy",
    "NO_PROXY",
];

/// Separates a reply's body from curl's `--write-out` fields.
const BODY_END: char = '\u{1e}';
/// Ends one reply in a batch.
const REPLY_END: char = '\u{1f}';

/// One namespace with its scratch folder and the peer processes started in
/// it. Fields drop in order: peers first, the namespace last.
#[derive(Debug)]
pub struct L7Bed {
    peers: Vec<ChildGuard>,
    dir: PathBuf,
    ns: Netns,
}

/// What curl reported for one request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response status; 0 when there was no response.
    pub status: u16,
    /// New connections curl made for this request (0: reused one).
    pub connects: u32,
    /// `1.1`, `2`, … as curl's `%{http_version}`.
    pub version: String,
    /// The response body, as text.
    pub body: String,
}

/// The output of one finished client process.
#[derive(Debug, Clone)]
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for failure messages.
    pub fn both(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl L7Bed {
    /// A new namespace `xlbt-<role>-…` with `lo` up, and an empty scratch
    /// folder.
    pub fn new(role: &str) -> anyhow::Result<L7Bed> {
        let ns = Netns::new(role)?;
        let dir = std::env::temp_dir().join(format!("{}-files", ns.name()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(L7Bed {
            peers: Vec::new(),
            dir,
            ns,
        })
    }

    /// The namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The scratch folder (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in the scratch folder; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// A TCP listener bound to `addr` inside the namespace (it stays there
    /// whichever thread accepts on it).
    pub fn bind(&self, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        self.ns
            .enter(move || TcpListener::bind(addr))?
            .with_context(|| format!("binding {addr} in {}", self.ns.name()))
    }

    /// Waits until something accepts TCP connections on `addr` in the
    /// namespace.
    pub fn wait_listening(&self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.ns.enter(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on {addr} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command running `program` inside the namespace, with no proxy
    /// variables in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.ns.command(program);
        for v in PROXY_VARS {
            cmd.env_remove(v);
        }
        cmd
    }

    /// `/usr/bin/python3 tests/peers/SCRIPT` inside the namespace,
    /// unbuffered.
    pub fn python(&self, script: &str) -> Command {
        let mut cmd = self.command(PYTHON);
        cmd.arg(peers_dir().join(script))
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }

    /// Fails with a clear message when `/usr/bin/python3` cannot import
    /// `modules` (`cargo xtask test` installs the Debian packages).
    pub fn require_python(&self, modules: &[&str], packages: &str) -> anyhow::Result<()> {
        let code = format!("import {}", modules.join(", "));
        let run = self.run(
            self.command(PYTHON).args(["-c", &code]),
            Duration::from_secs(30),
        )?;
        if !run.success {
            bail!(
                "{PYTHON} cannot `{code}`: install {packages} (cargo xtask test does): {}",
                run.stderr.trim()
            );
        }
        Ok(())
    }

    /// Starts a long-running peer (a server) and waits until it prints a
    /// line starting with `ready`; the peer is stopped when the bed drops.
    /// Returns the ready line.
    pub fn spawn_peer(&mut self, mut cmd: Command) -> anyhow::Result<String> {
        let name = names::unique("peer");
        let err_path = self.dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&err_path)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut guard = ChildGuard::new(child);
        let stdout = guard.child_mut().stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PEER_READY;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("ready") => {
                    self.peers.push(guard);
                    return Ok(line);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    drop(guard);
                    bail!(
                        "{cmd:?} exited before it was ready; its stderr:\n{}",
                        std::fs::read_to_string(&err_path).unwrap_or_default()
                    );
                }
            }
            if Instant::now() >= deadline {
                drop(guard);
                bail!(
                    "{cmd:?} printed no ready line within {PEER_READY:?}; its stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
        }
    }

    /// Starts a client in the background (e.g. a request that the backend
    /// holds); it is stopped when the returned guard drops.
    pub fn spawn(&self, mut cmd: Command) -> anyhow::Result<ChildGuard> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(ChildGuard::new(child))
    }

    /// Runs a client to completion, killing it after `timeout`.
    pub fn run(&self, cmd: &mut Command, timeout: Duration) -> anyhow::Result<Run> {
        let name = names::unique("run");
        let out_path = self.dir.join(format!("{name}.stdout"));
        let err_path = self.dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = guard.child_mut().try_wait()? {
                // Reaped: nothing left for the guard to stop.
                std::mem::forget(guard);
                break status;
            }
            if Instant::now() >= deadline {
                let _ = guard.terminate(Duration::from_secs(1));
                bail!(
                    "{cmd:?} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let run = Run {
            success: status.success(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&std::fs::read(&out_path)?).into_owned(),
            stderr: String::from_utf8_lossy(&std::fs::read(&err_path)?).into_owned(),
        };
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        Ok(run)
    }

    /// `curl -sS ARGS…` inside the namespace (60 s at most), whatever its
    /// exit status.
    pub fn curl(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut cmd = self.command("curl");
        cmd.args(["-sS", "--noproxy", "*", "--max-time", "30"])
            .args(args);
        self.run(&mut cmd, Duration::from_secs(60))
    }

    /// Runs `requests` in one curl process, one after the other (curl's
    /// `--next`): each is its own list of curl arguments (URL, `-H`,
    /// `--http2-prior-knowledge`, …). Connections are reused between them
    /// as curl does (add `-H 'Connection: close'` for a new connection per
    /// request). Returns one [`Reply`] per request.
    pub fn curl_batch(&self, requests: &[Vec<String>]) -> anyhow::Result<Vec<Reply>> {
        let write_out =
            format!("{BODY_END}%{{http_code}} %{{num_connects}} %{{http_version}}{REPLY_END}");
        let mut cmd = self.command("curl");
        for (i, req) in requests.iter().enumerate() {
            if i > 0 {
                cmd.arg("--next");
            }
            cmd.args([
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "30",
                "-w",
                &write_out,
            ]);
            cmd.args(req);
        }
        let timeout = Duration::from_secs(60 + requests.len() as u64 / 10);
        let run = self.run(&mut cmd, timeout)?;
        let replies = parse_batch(&run.stdout);
        if replies.len() != requests.len() {
            bail!(
                "curl answered {} of {} requests:\n{}",
                replies.len(),
                requests.len(),
                run.both()
            );
        }
        Ok(replies)
    }

    /// `curl` the same arguments `n` times in one process (see
    /// [`L7Bed::curl_batch`]).
    pub fn curl_repeat(&self, n: usize, args: &[&str]) -> anyhow::Result<Vec<Reply>> {
        let req: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.curl_batch(&vec![req; n])
    }
}

impl Drop for L7Bed {
    fn drop(&mut self) {
        // Peers first (each SIGTERM, then SIGKILL after 5 s).
        self.peers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the Python peers live.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

fn parse_batch(out: &str) -> Vec<Reply> {
    out.split(REPLY_END)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let (body, fields) = r.rsplit_once(BODY_END)?;
            let mut f = fields.split(' ');
            Some(Reply {
                status: f.next()?.parse().ok()?,
                connects: f.next()?.parse().ok()?,
                version: f.next()?.to_string(),
                body: body.to_string(),
            })
        })
        .collect()
}

/// Counts how many replies have each body, sorted by body.
pub fn tally<'a>(
    replies: impl IntoIterator<Item = &'a Reply>,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in replies {
        *m.entry(r.body.clone()).or_default() += 1;
    }
    m
}
