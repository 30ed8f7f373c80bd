//! What the admin API and config store tests (and `cargo xtask bench
//! config`) run on: a real etcd the test starts and always stops, `xlb`
//! processes with an admin API, a plain HTTP backend, and a small HTTP/1.1
//! client (one request per connection, so each answer is the proxy's
//! routing decision at that moment, not a reused connection's).
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// SIGTERM, up to `grace` to exit, then SIGKILL; reaped either way.
pub fn stop_child(child: &mut std::process::Child, grace: Duration) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The `xlb` to run: `XLB_BIN` (what `cargo xtask bench` builds), else
/// the binary cargo built for these tests.
pub fn xlb_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("XLB_BIN") {
        return PathBuf::from(p);
    }
    match option_env!("CARGO_BIN_EXE_xlb") {
        Some(p) => PathBuf::from(p),
        None => panic!("set XLB_BIN to the xlb binary"),
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The etcd binary, or `None` when it is not installed; in CI (where
/// `cargo xtask test` installs Debian's etcd-server) a missing etcd fails.
pub fn etcd_binary(test: &str) -> Option<PathBuf> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).is_file() {
            return Some(PathBuf::from(p));
        }
    }
    if ["CI", "XLB_REQUIRE_PRIVILEGED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        panic!(
            "{test}: etcd is not installed (Debian etcd-server; `cargo xtask test` installs it)"
        );
    }
    eprintln!("SKIPPED {test}: etcd is not installed (apt-get install etcd-server)");
    None
}

/// A single-member etcd on loopback (or on an address inside a network
/// namespace); killed and its data removed on drop.
pub struct Etcd {
    child: Option<Child>,
    binary: PathBuf,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    /// The address it listens on.
    host: std::net::IpAddr,
    /// The namespace it runs in (`/run/netns/NAME`); `None`: this one.
    netns: Option<PathBuf>,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start(binary: &Path) -> Etcd {
        Etcd::start_at(binary, [127, 0, 0, 1].into(), None)
    }

    /// Starts etcd on `host` inside the network namespace `netns` (its
    /// `/run/netns` file; `None`: this namespace), for xlb nodes that run
    /// in namespaces of their own, and waits until it answers. Deleting
    /// the namespace also kills it; drop kills it first anyway.
    pub fn start_at(binary: &Path, host: std::net::IpAddr, netns: Option<&Path>) -> Etcd {
        let mut e = Etcd {
            child: None,
            binary: binary.to_path_buf(),
            dir: tempfile::tempdir().expect("etcd data dir"),
            client_port: free_port(),
            peer_port: free_port(),
            host,
            netns: netns.map(Path::to_path_buf),
        };
        e.restart();
        e
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", SocketAddr::new(self.host, self.client_port))
    }

    /// Runs `f` in etcd's namespace (on a thread that entered it).
    fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let Some(ns) = &self.netns else {
            return f();
        };
        let file = std::fs::File::open(ns).expect("etcd's network namespace");
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("entering etcd's network namespace");
                f()
            })
            .join()
            .expect("a thread in etcd's namespace")
        })
    }

    /// Starts it again (after [`Etcd::kill`]) on the same data and ports.
    pub fn restart(&mut self) {
        let peer = format!("http://{}", SocketAddr::new(self.host, self.peer_port));
        // `nsenter --net` rather than `ip netns exec`, as for every
        // process the tests put in a namespace.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = cmd
            .arg("--name=xlb-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=xlb-test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = SocketAddr::new(self.host, self.client_port);
        loop {
            if let Ok((200, body)) = self.in_netns(|| http(&health, "GET", "/health", &[], None)) {
                if body.contains("true") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Compacts the history up to `revision` (through etcd's JSON
    /// gateway), so a watch from an older revision is refused.
    pub fn compact(&self, revision: i64) {
        let addr = SocketAddr::new(self.host, self.client_port);
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let (s, b) = self
            .in_netns(|| http(&addr, "POST", "/v3/kv/compaction", &[], Some(&body)))
            .expect("compaction call");
        assert_eq!(s, 200, "compaction: {b}");
    }

    /// SIGKILLs etcd (an outage, not a clean stop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `xlb` with one L7 listener and an admin API.
pub struct Node {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub web: SocketAddr,
    pub admin: SocketAddr,
    pub token: String,
}

/// `config_store:` of a node.
pub enum StoreAt<'a> {
    Etcd { endpoint: &'a str, prefix: &'a str },
    Embedded { durable: bool },
}

impl Node {
    /// Starts `xlb run` and waits for its ready line.
    pub fn start(store: StoreAt<'_>, token: &str) -> Node {
        Node::start_with(store, token, "")
    }

    /// [`Node::start`] with more lines under `config_store:` (each
    /// indented by two spaces), e.g. `  routes: lazy\n`.
    pub fn start_with(store: StoreAt<'_>, token: &str, store_extra: &str) -> Node {
        let dir = tempfile::tempdir().expect("node dir");
        let store_yaml = match store {
            StoreAt::Etcd { endpoint, prefix } => format!(
                "config_store:\n  kind: etcd\n  endpoints: [\"{endpoint}\"]\n  prefix: \"{prefix}\"\n  snapshot: {}\n",
                dir.path().join("snapshot.json").display()
            ),
            StoreAt::Embedded { durable } => format!(
                "config_store:\n  kind: embedded\n  path: {}\n  durable: {durable}\n",
                dir.path().join("store.redb").display()
            ),
        };
        // An instance name of its own (kept across restarts): tests run in
        // parallel, and runs of one name share /run/xlb paths.
        static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = format!("store-bed-{}-{n}", std::process::id());
        let yaml = format!(
            "instance: {instance}\nl7:\n  workers: 1\n  listeners:\n    - name: web\n      address: 127.0.0.1:0\n{store_yaml}{store_extra}admin:\n  address: 127.0.0.1:0\n  token: \"{token}\"\n"
        );
        std::fs::write(dir.path().join("xlb.yaml"), yaml).expect("write node config");
        let mut node = Node {
            child: None,
            _dir: dir,
            web: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            token: token.to_string(),
        };
        node.spawn();
        node
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process (SIGTERM) and starts it again on the same
    /// config and files; the addresses are new.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let path = self._dir.path().join("xlb.yaml");
        let mut child = Command::new(xlb_binary())
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start xlb");
        let stdout = child.stdout.take().expect("stdout");
        self.child = Some(child);
        let mut lines = BufReader::new(stdout).lines();
        let line = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("xlb ready") => break l,
                Some(Ok(_)) => continue,
                _ => panic!("xlb exited before it was ready"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        for word in line.split_whitespace() {
            if let Some(v) = word.strip_prefix("l7=web@") {
                self.web = v.parse().expect("listener address");
            }
            if let Some(v) = word.strip_prefix("admin=") {
                self.admin = v.parse().expect("admin address");
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// Sends `sig` to the process (SIGSTOP/SIGCONT to cut it off for a
    /// while without closing anything).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Resident memory of the process, bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        let Some(c) = &self.child else { return 0 };
        std::fs::read_to_string(format!("/proc/{}/status", c.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// An admin call with the token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_with(method, path, &[("X-API-KEY", &self.token)], body)
    }

    /// An admin call with exactly `headers`.
    pub fn api_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        http(&self.admin, method, path, headers, body).expect("admin call")
    }

    /// The status of `GET /` for `host` through the proxy.
    pub fn get(&self, host: &str) -> u16 {
        http(&self.web, "GET", "/", &[("Host", host)], None).map_or(0, |(s, _)| s)
    }

    /// The status and body of `GET /` for `host` through the proxy.
    pub fn get_body(&self, host: &str) -> (u16, String) {
        http(&self.web, "GET", "/", &[("Host", host)], None).unwrap_or((0, String::new()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A backend answering every request with 200 and `name` as the body;
/// stops accepting on drop.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("backend bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let body = name.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut s) = conn else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(s.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" || line == "\n" => break,
                                Ok(_) => {}
                            }
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Backend { addr, stop }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`); the
/// status and body.
pub fn http(
    addr: &SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_with_head(addr, method, path, headers, body).map(|(s, _, b)| (s, b))
}

/// [`http`], with the response head (status line and header lines) too.
pub fn http_with_head(
    addr: &SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let _ = s.set_nodelay(true);
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "PUT" || method == "POST" {
        req.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

/// Polls `f` every 5 ms until it is true or `limit` passed; whether it
/// became true. (A bound, not a speed assertion: propagation speed is
/// measured by `cargo xtask bench config`.)
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
