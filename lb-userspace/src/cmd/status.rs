//! `xlb status`: what `/status` shows, in the terminal, read from a
//! running instance's observe listener (`/status.json`).
use std::{net::SocketAddr, path::Path};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use crate::{
    config::{observe::DEFAULT_LISTEN, Config},
    observe::status::{NodeView, Status},
};

/// The observe address of the config at `config` (its `observe.listen`),
/// or the default.
pub fn address_of(config: Option<&Path>) -> anyhow::Result<SocketAddr> {
    if let Some(path) = config {
        let c = Config::load(path)?;
        return c.observe.map(|o| o.listen).with_context(|| {
            format!(
                "{}: no `observe:` section, so no status is served",
                path.display()
            )
        });
    }
    Ok(DEFAULT_LISTEN.parse()?)
}

/// Fetches `/status.json` from `addr`.
pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!("connecting to {addr} (is xlb running with this observe.listen?)")
        })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get("/status.json")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{addr}/status.json: {}",
        resp.status()
    );
    let body = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("reading /status.json")
}

fn table(title: &str, head: &[&str], rows: &[Vec<String>]) {
    println!("{title}");
    if rows.is_empty() {
        println!("  (none)\n");
        return;
    }
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            s.push_str(&format!(" {c:<w$}", w = width[i]));
        }
        println!("{}", s.trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    println!();
}

fn health(up: bool) -> String {
    if up { "up" } else { "DOWN" }.to_string()
}

fn node(first: &str, n: &NodeView) -> Vec<String> {
    vec![
        first.to_string(),
        n.address.clone(),
        n.weight.to_string(),
        health(n.healthy),
        format!("{:.2}", n.requests_per_s),
        format!("{:.2}", n.errors_per_s),
    ]
}

/// Prints `s` as tables (the sections of the status page).
pub fn print(s: &Status) {
    let t = &s.topology;
    println!(
        "xlb {} · instance {} · config generation {} · up {} s · rates over {} s\n",
        s.version, t.instance, t.generation, s.uptime_s, s.rate_window_s
    );
    let mut vips = Vec::new();
    for v in &t.vips {
        for b in &v.backends {
            vips.push(vec![
                v.name.clone(),
                v.address.clone(),
                v.mode.clone(),
                b.address.clone(),
                b.weight.to_string(),
                health(b.healthy),
            ]);
        }
    }
    table(
        "L4 VIPs and backends",
        &["vip", "address", "mode", "backend", "weight", "health"],
        &vips,
    );
    let listeners: Vec<_> = t
        .listeners
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.address.clone(),
                if l.tls { "TLS" } else { "plain" }.into(),
            ]
        })
        .collect();
    table("Listeners", &["name", "address", "protocol"], &listeners);
    let routes: Vec<_> = t
        .routes
        .iter()
        .map(|r| {
            vec![
                r.listener.clone(),
                r.id.clone(),
                r.hosts.join(","),
                r.upstream.clone(),
                format!("{:.2}", r.requests_per_s),
                format!("{:.2}", r.errors_per_s),
            ]
        })
        .collect();
    table(
        "Routes",
        &["listener", "route", "hosts", "upstream", "req/s", "err/s"],
        &routes,
    );
    let mut nodes = Vec::new();
    for u in &t.upstreams {
        for n in &u.nodes {
            nodes.push(node(&u.id, n));
        }
    }
    table(
        "Upstream nodes",
        &["upstream", "node", "weight", "health", "req/s", "err/s"],
        &nodes,
    );
    let errors: Vec<_> = s
        .recent_errors
        .iter()
        .take(10)
        .map(|e| {
            vec![
                e.time.clone(),
                e.status.to_string(),
                e.reason.clone(),
                format!("{} {}{}", e.method, e.host, e.path),
                e.node.clone().unwrap_or_default(),
                e.request_id.clone(),
            ]
        })
        .collect();
    table(
        "Recent errors (newest first)",
        &["time", "status", "reason", "request", "node", "request id"],
        &errors,
    );
    let denied: Vec<_> = t
        .denied
        .iter()
        .map(|d| {
            vec![
                d.prefix.clone(),
                d.expires_in_s.map_or("never".into(), |s| format!("{s} s")),
            ]
        })
        .collect();
    table("Denied sources", &["prefix", "expires in"], &denied);
}
