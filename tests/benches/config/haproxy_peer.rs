//! HAProxy as a propagation peer for `cargo xtask bench config`: routing by
//! a host map (`use_backend %[req.hdr(host),lower,map(...)]`), a new host
//! added with the runtime API's `add map` over the stats socket (in memory
//! only, and only to a backend that already exists: HAProxy's runtime API
//! cannot create one), then GETs until 2xx.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::store_bed;

pub struct Haproxy {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl Haproxy {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// HAProxy with `n` hosts in its map, all to one backend at `backend`.
    pub fn start(n: usize, backend: std::net::SocketAddr) -> anyhow::Result<Haproxy> {
        let dir = tempfile::tempdir()?;
        let port = store_bed::free_port();
        let map = dir.path().join("hosts.map");
        let mut m = String::with_capacity(n * 24);
        for k in 0..n {
            m.push_str(&format!("pre-{k}.bench be\n"));
        }
        std::fs::write(&map, m)?;
        let cfg = format!(
            "global\n  stats socket {sock} mode 600 level admin\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend web\n  bind 127.0.0.1:{port}\n  use_backend %[req.hdr(host),lower,map({map})]\nbackend be\n  server s1 {backend}\n",
            sock = dir.path().join("admin.sock").display(),
            map = map.display(),
        );
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, cfg)?;
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&conf)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let me = Haproxy { dir, child, port };
        let addr = me.addr();
        anyhow::ensure!(
            store_bed::eventually(Duration::from_secs(60), || matches!(
                store_bed::http(&addr, "GET", "/", &[("Host", "pre-0.bench")], None),
                Ok((200, _))
            )),
            "haproxy did not start"
        );
        Ok(me)
    }

    fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().expect("address")
    }

    fn command(&self, line: &str) -> anyhow::Result<String> {
        let mut s = UnixStream::connect(self.socket())?;
        s.write_all(format!("{line}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// One trial: `add map` for a new host, then GETs until 2xx.
    pub fn trial(&self, name: &str) -> anyhow::Result<(Duration, u32)> {
        let host = format!("{name}.bench");
        let map = self.dir.path().join("hosts.map");
        let t0 = Instant::now();
        let out = self.command(&format!("add map {} {host} be", map.display()))?;
        anyhow::ensure!(out.trim().is_empty(), "add map: {out}");
        let addr = self.addr();
        let mut tries = 0;
        loop {
            tries += 1;
            if matches!(
                store_bed::http(&addr, "GET", "/", &[("Host", &host)], None),
                Ok((200, _))
            ) {
                return Ok((t0.elapsed(), tries));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "haproxy never served {host}"
            );
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
