//! The configuration files of the L7 bench: one small-response backend and
//! three proxies (xlb, nginx, HAProxy) set up alike — one worker, plain
//! HTTP/1.1 and TLS (h2 and http/1.1 by ALPN) listeners on loopback, the
//! same ECDSA P-256 certificate, a pool of idle keep-alive connections to
//! the backend at least as large as the load's concurrency (so no proxy
//! opens a connection per request), no access logs, and the same request
//! headers added on the way to the backend (what xlb adds by default:
//! X-Forwarded-For/-Proto/-Host and Via).
use std::{fmt::Write as _, path::Path};

/// The backend's response body: small and fixed (64 bytes).
pub const BODY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";

/// Where one proxy listens (both on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Plain HTTP/1.1 (driven by wrk).
    pub plain: u16,
    /// TLS with ALPN h2, http/1.1 (driven by h2load).
    pub tls: u16,
}

/// The certificate files every proxy serves.
#[derive(Debug, Clone, Copy)]
pub struct Cert<'a> {
    /// PEM certificate.
    pub cert: &'a Path,
    /// PEM private key (PKCS#8).
    pub key: &'a Path,
    /// Certificate then key in one file (HAProxy's `crt`).
    pub combined: &'a Path,
}

/// Idle keep-alive connections each proxy may keep to the backend: above
/// the largest number of requests in flight (wrk's connections, h2load's
/// connections × streams), so that every request finds one.
pub const UPSTREAM_IDLE: u32 = 512;

/// The backend: nginx answering `return 200` from memory, one worker,
/// no logs, keep-alive connections kept open for the whole run.
pub fn backend_nginx(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
pid {d}/backend.pid;
error_log {d}/backend-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8000; }}
http {{
    access_log off;
    client_body_temp_path {d}/backend-body;
    proxy_temp_path {d}/backend-proxy;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 \"{body}\"; }}
        # The cache measurement's path: cacheable for 60 s, and logged, so
        # that the bench can count what reaches the backend.
        location = {cached} {{
            access_log {d}/{CACHED_LOG};
            add_header Cache-Control \"max-age=60\";
            return 200 \"{body}\";
        }}
    }}
}}
",
        body = BODY.replace('\n', "\\n"),
        cached = CACHED_PATH,
    )
}

/// The path the backend answers with `Cache-Control: max-age=60` (the
/// cache measurement's), and its access log in the scratch directory (one
/// line per request that reached the backend on that path).
pub const CACHED_PATH: &str = "/cached";
pub const CACHED_LOG: &str = "backend-cached.log";

/// nginx as the proxy: one worker process (plus its idle master), an
/// upstream `keepalive` pool with HTTP/1.1 and the `Connection` header
/// cleared (without them nginx closes every upstream connection), and
/// client keep-alive without a request limit (nginx's default closes a
/// client connection after 1000 requests; xlb and HAProxy have no limit).
pub fn nginx_proxy(dir: &Path, listen: Listen, cert: Cert<'_>, backend: u16) -> String {
    nginx_conf(dir, "nginx", listen, cert, backend, false, false)
}

/// [`nginx_proxy`] with what xlb's `observe:` case turns on that nginx
/// has (files prefixed `nginx-log`): a JSON access log line per request
/// to a file (`log_format escape=json` with the fields xlb's log has:
/// time, client, method, host, path, protocol, status, bytes both ways,
/// durations, upstream address, request id, TLS version and SNI) and the
/// request id (`$request_id`) sent to the backend and to the client.
/// nginx has no `traceparent` and no metrics beyond `stub_status` without
/// modules, so this is the part of xlb's case that nginx can do.
pub fn nginx_logged(dir: &Path, listen: Listen, cert: Cert<'_>, backend: u16) -> String {
    nginx_conf(dir, "nginx-log", listen, cert, backend, false, true)
}

/// [`nginx_proxy`] with `proxy_cache` (the cache measurement's baseline,
/// files prefixed `nginx-cache`): a cache zone in the scratch directory,
/// freshness from the backend's `Cache-Control` (nginx honours it by
/// default; no `proxy_cache_valid` needed), `proxy_cache_lock` (one fill
/// per key, as xlb coalesces), and `X-Cache-Status` on every response (as
/// xlb's `X-Cache`), so that hits can be checked.
pub fn nginx_cache(dir: &Path, listen: Listen, cert: Cert<'_>, backend: u16) -> String {
    nginx_conf(dir, "nginx-cache", listen, cert, backend, true, false)
}

fn nginx_conf(
    dir: &Path,
    name: &str,
    listen: Listen,
    cert: Cert<'_>,
    backend: u16,
    cache: bool,
    logged: bool,
) -> String {
    let d = dir.display();
    let (log, request_id) = if logged {
        (
            format!(
                "log_format xlbjson escape=json '{{\"time\":\"$time_iso8601\",\
                 \"client\":\"$remote_addr:$remote_port\",\"method\":\"$request_method\",\
                 \"host\":\"$host\",\"path\":\"$request_uri\",\"protocol\":\"$server_protocol\",\
                 \"status\":$status,\"bytes_in\":$request_length,\"bytes_out\":$bytes_sent,\
                 \"duration_ms\":$request_time,\"upstream_connect_ms\":\"$upstream_connect_time\",\
                 \"upstream_ms\":\"$upstream_response_time\",\"upstream\":\"$upstream_addr\",\
                 \"request_id\":\"$request_id\",\"tls\":\"$ssl_protocol\",\"sni\":\"$ssl_server_name\"}}';
    access_log {d}/{name}-access.log xlbjson;"
            ),
            "proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id;
            ",
        )
    } else {
        ("access_log off;".to_string(), "")
    };
    let (zone, use_zone) = if cache {
        (
            format!(
                "proxy_cache_path {d}/{name}-store levels=1:2 keys_zone=bench:10m \
                 max_size=256m inactive=10m use_temp_path=off;\n    "
            ),
            "proxy_cache bench;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
            "
            .to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "worker_processes 1;
daemon off;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8000; }}
http {{
    {log}
    client_body_temp_path {d}/{name}-body;
    proxy_temp_path {d}/{name}-proxy;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    ssl_protocols TLSv1.2 TLSv1.3;
    {zone}upstream backend {{
        server 127.0.0.1:{backend};
        keepalive {idle};
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{plain} backlog=4096;
        listen 127.0.0.1:{tls} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            {use_zone}proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Via \"1.1 nginx\";
            {request_id}}}
    }}
}}
",
        idle = UPSTREAM_IDLE,
        plain = listen.plain,
        tls = listen.tls,
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

/// HAProxy as the proxy: one thread, `http-reuse always` (idle backend
/// connections shared by every client, as nginx's and xlb's pools are;
/// HAProxy's default `safe` keeps each client's first request on a new
/// connection), no `log` lines (so no logging at all).
pub fn haproxy(listen: Listen, cert: Cert<'_>, backend: u16) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "global
    nbthread 1
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    option forwardfor
    http-reuse always

frontend plain
    bind 127.0.0.1:{plain} backlog 4096
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via \"1.1 haproxy\"
    default_backend backend

frontend tls
    bind 127.0.0.1:{tls} backlog 4096 ssl crt {combined} alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via \"1.1 haproxy\"
    default_backend backend

backend backend
    server s1 127.0.0.1:{backend} pool-max-conn {idle}
",
        plain = listen.plain,
        tls = listen.tls,
        combined = cert.combined.display(),
        idle = UPSTREAM_IDLE,
    );
    s
}

/// What an xlb instance adds to the plain proxy config of [`xlb`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XlbExtras {
    /// The route carries [`RATE_LIMIT_KEYS`]' rules, at [`RATE_LIMIT_RATE`]
    /// (far above what one worker serves: nothing is delayed or rejected,
    /// so what is measured is the limiter's bookkeeping).
    pub rate_limits: bool,
    /// The route caches (`cache: true`, with an `l7.cache` store).
    pub cache: bool,
    /// Metrics and the JSON access log on (`observe:` listening on this
    /// port, the log in the certificate's folder, the scratch directory).
    pub observe: Option<u16>,
}

/// The rate-limit measurement's rules: their keys (one rule each).
pub const RATE_LIMIT_KEYS: [&str; 3] = ["$src_ip", "$uri", "$src_ip/$host"];
/// Their rate: one request per microsecond, 30× what a worker serves.
pub const RATE_LIMIT_RATE: &str = "1000000/s";

/// xlb as the proxy (the `l7:` section of docs/l7-config.md): one worker,
/// the same two listeners, one route to one upstream with a keep-alive pool.
pub fn xlb(instance: &str, listen: Listen, cert: Cert<'_>, backend: u16) -> String {
    xlb_with(instance, listen, cert, backend, XlbExtras::default())
}

/// [`xlb`] plus `extras`; everything else is the same.
pub fn xlb_with(
    instance: &str,
    listen: Listen,
    cert: Cert<'_>,
    backend: u16,
    extras: XlbExtras,
) -> String {
    let mut top = String::new();
    let mut route = String::new();
    if extras.rate_limits {
        top.push_str("  rate_limits:\n");
        let mut names = Vec::new();
        for (i, key) in RATE_LIMIT_KEYS.iter().enumerate() {
            let name = format!("rule{}", i + 1);
            let _ = writeln!(
                top,
                "    - {{name: {name}, key: \"{key}\", rate: {RATE_LIMIT_RATE}, allowance: 1000}}"
            );
            names.push(name);
        }
        let _ = writeln!(route, "      rate_limits: [{}]", names.join(", "));
    }
    if extras.cache {
        top.push_str("  cache: {max_bytes: 64MiB, max_object_bytes: 1MiB}\n");
        route.push_str("      cache: true\n");
    }
    let observe = match extras.observe {
        Some(port) => format!(
            "observe:\n  listen: \"127.0.0.1:{port}\"\n  access_log: {{path: \"{}\"}}\n",
            cert.cert
                .with_file_name(format!("access-{port}.log"))
                .display()
        ),
        None => String::new(),
    };
    format!(
        "instance: {instance}
{observe}l7:
  workers: 1
  limits:
    idle_timeout: 300s
  certificates:
    - id: bench
      names: [localhost]
      cert: {cert}
      key: {key}
      default: true
  listeners:
    - name: plain
      address: \"127.0.0.1:{plain}\"
    - name: tls
      address: \"127.0.0.1:{tls}\"
      tls:
        certificates: [bench]
        alpn: [h2, http/1.1]
{top}  routes:
    - id: all
      upstream: backend
{route}  upstreams:
    - id: backend
      nodes:
        - address: \"127.0.0.1:{backend}\"
      keepalive: {{max_idle_per_node: {idle}, idle_timeout: 300s}}
",
        cert = cert.cert.display(),
        key = cert.key.display(),
        plain = listen.plain,
        tls = listen.tls,
        idle = UPSTREAM_IDLE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_their_ports() {
        let dir = Path::new("/tmp/x");
        let cert = Cert {
            cert: Path::new("/tmp/x/c.pem"),
            key: Path::new("/tmp/x/k.pem"),
            combined: Path::new("/tmp/x/ck.pem"),
        };
        let l = Listen {
            plain: 1001,
            tls: 1002,
        };
        for c in [
            nginx_proxy(dir, l, cert, 1003),
            haproxy(l, cert, 1003),
            xlb("b", l, cert, 1003),
        ] {
            for p in ["1001", "1002", "1003"] {
                assert!(c.contains(p), "{p} missing from\n{c}");
            }
        }
        assert!(backend_nginx(dir, 1003).contains("\\n\";"));
    }

    #[test]
    fn extras_differ_only_where_asked() {
        let cert = Cert {
            cert: Path::new("/tmp/x/c.pem"),
            key: Path::new("/tmp/x/k.pem"),
            combined: Path::new("/tmp/x/ck.pem"),
        };
        let l = Listen {
            plain: 1001,
            tls: 1002,
        };
        let plain = xlb("b", l, cert, 1003);
        assert!(!plain.contains("rate_limits") && !plain.contains("cache"));
        let rl = xlb_with(
            "b",
            l,
            cert,
            1003,
            XlbExtras {
                rate_limits: true,
                ..XlbExtras::default()
            },
        );
        assert!(rl.contains("rate_limits: [rule1, rule2, rule3]"), "{rl}");
        assert!(rl.contains("key: \"$src_ip/$host\""), "{rl}");
        assert!(!rl.contains("cache"));
        // Without the additions, the same lines in the same order.
        let kept: Vec<&str> = rl
            .lines()
            .filter(|x| !x.contains("rate_limits") && !x.contains("name: rule"))
            .collect();
        assert_eq!(kept, plain.lines().collect::<Vec<_>>());
        let c = xlb_with(
            "b",
            l,
            cert,
            1003,
            XlbExtras {
                cache: true,
                ..XlbExtras::default()
            },
        );
        assert!(c.contains("  cache: {max_bytes") && c.contains("      cache: true"));
        let dir = Path::new("/tmp/x");
        let n = nginx_cache(dir, l, cert, 1003);
        assert!(n.contains("proxy_cache bench;") && n.contains("/tmp/x/nginx-cache-store"));
        assert!(n.contains("pid /tmp/x/nginx-cache.pid;"));
        let n = nginx_proxy(dir, l, cert, 1003);
        assert!(!n.contains("proxy_cache") && n.contains("pid /tmp/x/nginx.pid;"));
        assert!(backend_nginx(dir, 1003).contains("location = /cached"));
    }
}
