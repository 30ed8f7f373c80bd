//! Traefik as a propagation peer for `cargo xtask bench config`, with two of
//! its providers: one router per host (``Host(`h`)``) to one shared service
//! (the bench's backend).
//!
//! - HTTP provider: Traefik polls an endpoint that the bench serves from
//!   memory, every 500 ms (`providers.http.pollInterval`; Traefik's default
//!   is 5 s). A trial puts the new router into the served config and GETs
//!   until the host is served; the bench waits a spread of 0–495 ms before
//!   each trial so that changes land at all points of the poll cycle.
//! - File provider: a watched directory with one YAML file whose routers
//!   section comes last; a trial appends the new router to the file (inside
//!   the time) and GETs until the host is served.
//!
//! Both run with `providers.providersThrottleDuration=0s` (default 2 s: the
//! least time between two applied configurations, which back-to-back trials
//! would otherwise wait for), so each figure is Traefik's own reaction.
//! Version checks and usage reports are off: nothing leaves the machine.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::store_bed;

#[derive(Clone, Copy, PartialEq)]
pub enum Provider {
    Http,
    File,
}

impl Provider {
    pub fn label(self) -> &'static str {
        match self {
            Provider::Http => "traefik http provider",
            Provider::File => "traefik file provider",
        }
    }
}

pub struct Traefik {
    dir: tempfile::TempDir,
    child: Child,
    web: SocketAddr,
    body: String,
    provider: Provider,
    /// HTTP provider: the routers served (JSON members, comma-joined) and
    /// the server's stop flag and address.
    routers: Arc<Mutex<String>>,
    endpoint: Option<(Arc<AtomicBool>, SocketAddr)>,
    pub start_time: Duration,
}

fn json_config(backend: SocketAddr, routers: &str) -> String {
    format!(
        r#"{{"http":{{"services":{{"be":{{"loadBalancer":{{"servers":[{{"url":"http://{backend}"}}]}}}}}},"routers":{{{routers}}}}}}}"#
    )
}

fn json_router(name: &str, host: &str) -> String {
    format!(r#""{name}":{{"rule":"Host(`{host}`)","service":"be","entryPoints":["web"]}}"#)
}

fn yaml_router(name: &str, host: &str) -> String {
    format!("    {name}:\n      rule: \"Host(`{host}`)\"\n      service: be\n      entryPoints: [web]\n")
}

/// Serves `GET` of anything with the current config until `stop`.
fn serve_config(
    backend: SocketAddr,
    routers: Arc<Mutex<String>>,
) -> anyhow::Result<(Arc<AtomicBool>, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(match s.try_clone() {
                Ok(r) => r,
                Err(_) => continue,
            });
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {}
                }
            }
            let body = json_config(backend, &routers.lock().expect("routers"));
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    Ok((stop, addr))
}

impl Traefik {
    /// Traefik `binary` with `n` routers (`pre-K.bench`) from `provider`.
    pub fn start(
        binary: &Path,
        provider: Provider,
        n: usize,
        backend: SocketAddr,
        body: &str,
    ) -> anyhow::Result<Traefik> {
        let dir = tempfile::tempdir()?;
        let web: SocketAddr = format!("127.0.0.1:{}", store_bed::free_port()).parse()?;
        let routers = Arc::new(Mutex::new(String::new()));
        let mut endpoint = None;
        let mut cmd = Command::new(binary);
        cmd.args([
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=ERROR",
            "--providers.providersThrottleDuration=0s",
        ])
        .arg(format!("--entryPoints.web.address={web}"));
        match provider {
            Provider::Http => {
                {
                    let mut r = routers.lock().expect("routers");
                    for k in 0..n {
                        if k > 0 {
                            r.push(',');
                        }
                        r.push_str(&json_router(&format!("pre-{k}"), &format!("pre-{k}.bench")));
                    }
                }
                let (stop, addr) = serve_config(backend, routers.clone())?;
                endpoint = Some((stop, addr));
                cmd.arg(format!("--providers.http.endpoint=http://{addr}/config"))
                    .arg("--providers.http.pollInterval=500ms")
                    .arg("--providers.http.pollTimeout=5s");
            }
            Provider::File => {
                let dyn_dir = dir.path().join("dynamic");
                std::fs::create_dir_all(&dyn_dir)?;
                let mut y = format!(
                    "http:\n  services:\n    be:\n      loadBalancer:\n        servers:\n          - url: \"http://{backend}\"\n  routers:\n"
                );
                for k in 0..n {
                    y.push_str(&yaml_router(&format!("pre-{k}"), &format!("pre-{k}.bench")));
                }
                std::fs::write(dyn_dir.join("routes.yml"), y)?;
                cmd.arg(format!("--providers.file.directory={}", dyn_dir.display()))
                    .arg("--providers.file.watch=true");
            }
        }
        let log = std::fs::File::create(dir.path().join("traefik.log"))?;
        let t0 = Instant::now();
        let child = cmd
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut me = Traefik {
            dir,
            child,
            web,
            body: body.to_string(),
            provider,
            routers,
            endpoint,
            start_time: Duration::ZERO,
        };
        if n > 0 {
            let ok = store_bed::eventually(Duration::from_secs(300), || {
                super::config_caddy::serves(&web, "pre-0.bench", body)
            });
            anyhow::ensure!(
                ok,
                "traefik ({}) did not serve with {n} routers",
                provider.label()
            );
        }
        me.start_time = t0.elapsed();
        Ok(me)
    }

    /// One trial: the new router into the provider's source, then GETs
    /// (new connection each) until the backend answers for its host.
    pub fn trial(&self, name: &str) -> anyhow::Result<(Duration, u32)> {
        let host = format!("{name}.bench");
        let t0 = Instant::now();
        match self.provider {
            Provider::Http => {
                let mut r = self.routers.lock().expect("routers");
                if !r.is_empty() {
                    r.push(',');
                }
                r.push_str(&json_router(name, &host));
            }
            Provider::File => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.dir.path().join("dynamic/routes.yml"))?;
                f.write_all(yaml_router(name, &host).as_bytes())?;
            }
        }
        let mut tries = 0;
        loop {
            tries += 1;
            if super::config_caddy::serves(&self.web, &host, &self.body) {
                return Ok((t0.elapsed(), tries));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "traefik ({}) never served {host}",
                self.provider.label()
            );
        }
    }

    /// Resident memory of the Traefik process, bytes.
    pub fn rss(&self) -> u64 {
        super::proc_rss(self.child.id())
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
        if let Some((stop, addr)) = &self.endpoint {
            stop.store(true, Ordering::Relaxed);
            let _ = std::net::TcpStream::connect(addr);
        }
    }
}
