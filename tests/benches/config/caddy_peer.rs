//! Caddy as a propagation peer for `cargo xtask bench config`: one server
//! with one route per host (`match: host` → `reverse_proxy` to the bench's
//! backend). The N existing routes are loaded as one config at start (Caddy
//! reloads its whole config on every admin call, so N calls would take
//! N × one reload); each trial then adds one route with
//! `POST /config/apps/http/servers/b/routes` on the admin API — the call is
//! inside the time — and GETs until the new host is served. Caddy persists
//! every admin change (its `autosave.json`, written before the call
//! returns), so it is compared with xlb's durable writes.
//!
//! Caddy answers a host that matches no route with an empty 200, so "served"
//! here means 200 with the backend's body, not just 2xx.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::store_bed;

pub struct Caddy {
    _dir: tempfile::TempDir,
    child: Child,
    web: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
    body: String,
    /// How long Caddy took from spawn to serving the N preloaded routes.
    pub start_time: Duration,
}

fn route(host: &str, backend: SocketAddr) -> String {
    format!(
        r#"{{"match":[{{"host":["{host}"]}}],"handle":[{{"handler":"reverse_proxy","upstreams":[{{"dial":"{backend}"}}]}}]}}"#
    )
}

/// Whether `host` is served at `web` with the backend's `body`.
pub fn serves(web: &SocketAddr, host: &str, body: &str) -> bool {
    matches!(
        store_bed::http(web, "GET", "/", &[("Host", host)], None),
        Ok((200, b)) if b == body
    )
}

impl Caddy {
    /// Caddy `binary` with `n` routes (`pre-K.bench`) to `backend`, whose
    /// answers carry `body`.
    pub fn start(
        binary: &Path,
        n: usize,
        backend: SocketAddr,
        body: &str,
    ) -> anyhow::Result<Caddy> {
        let dir = tempfile::tempdir()?;
        let web: SocketAddr = format!("127.0.0.1:{}", store_bed::free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", store_bed::free_port()).parse()?;
        let mut routes = Vec::with_capacity(n);
        for k in 0..n {
            routes.push(route(&format!("pre-{k}.bench"), backend));
        }
        // No automatic HTTPS: the hosts are not real names and nothing may
        // leave the machine (no ACME).
        let cfg = format!(
            r#"{{"admin":{{"listen":"{admin}"}},"logging":{{"logs":{{"default":{{"level":"ERROR"}}}}}},"apps":{{"http":{{"servers":{{"b":{{"listen":["{web}"],"automatic_https":{{"disable":true}},"routes":[{}]}}}}}}}}}}"#,
            routes.join(",")
        );
        let conf = dir.path().join("caddy.json");
        std::fs::write(&conf, cfg)?;
        let log = std::fs::File::create(dir.path().join("caddy.log"))?;
        let t0 = Instant::now();
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&conf)
            // autosave.json and Caddy's data go to the temp directory.
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut me = Caddy {
            _dir: dir,
            child,
            web,
            admin,
            backend,
            body: body.to_string(),
            start_time: Duration::ZERO,
        };
        let first = if n > 0 {
            "pre-0.bench".to_string()
        } else {
            String::new()
        };
        let ok = store_bed::eventually(Duration::from_secs(300), || {
            if n > 0 {
                serves(&web, &first, body)
            } else {
                store_bed::http(&web, "GET", "/", &[], None).is_ok()
            }
        });
        anyhow::ensure!(ok, "caddy did not start with {n} routes");
        me.start_time = t0.elapsed();
        Ok(me)
    }

    /// One trial: add a route for a new host through the admin API, then
    /// GET (new connection each) until the backend answers for it.
    pub fn trial(&self, name: &str) -> anyhow::Result<(Duration, u32)> {
        let host = format!("{name}.bench");
        let body = route(&host, self.backend);
        let admin_host = self.admin.to_string();
        let t0 = Instant::now();
        let (s, out) = store_bed::http(
            &self.admin,
            "POST",
            "/config/apps/http/servers/b/routes",
            &[("Host", &admin_host)],
            Some(&body),
        )?;
        anyhow::ensure!(s == 200, "caddy admin POST route: {s} {out}");
        let mut tries = 0;
        loop {
            tries += 1;
            if serves(&self.web, &host, &self.body) {
                return Ok((t0.elapsed(), tries));
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "caddy never served {host}"
            );
        }
    }

    /// Resident memory of the Caddy process, bytes.
    pub fn rss(&self) -> u64 {
        super::proc_rss(self.child.id())
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
    }
}
