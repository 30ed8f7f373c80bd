//! `/status` as HTML: one self-contained page (inline CSS, no script, no
//! external assets), refreshed by the browser every few seconds, with
//! tables that scroll sideways on a phone instead of shrinking.
use std::fmt::Write as _;

use super::status::{NodeView, Status};

/// Seconds between refreshes (`<meta http-equiv="refresh">`).
const REFRESH_S: u32 = 2;

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn health(up: bool) -> &'static str {
    if up {
        r#"<span class="up">up</span>"#
    } else {
        r#"<span class="down">DOWN</span>"#
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:12px;background:#fafafa;color:#222}\
h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.05em;margin:18px 0 6px}\
.meta{color:#666;font-size:.9em}.scroll{overflow-x:auto}\
table{border-collapse:collapse;background:#fff;min-width:100%}\
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;white-space:nowrap;font-size:.9em}\
th{background:#eee}.up{color:#17692b;font-weight:600}.down{color:#fff;background:#b3261e;padding:0 4px;font-weight:700}\
.none{color:#888;font-style:italic}td.num{text-align:right}";

fn table(out: &mut String, title: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<h2>{}</h2>", esc(title));
    if rows.is_empty() {
        out.push_str(r#"<p class="none">none</p>"#);
        return;
    }
    out.push_str(r#"<div class="scroll"><table><tr>"#);
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for r in rows {
        out.push_str("<tr>");
        for cell in r {
            // Cells are escaped by the callers (some hold markup).
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></div>");
}

fn node_row(first: &str, n: &NodeView) -> Vec<String> {
    vec![
        esc(first),
        esc(&n.address),
        n.weight.to_string(),
        health(n.healthy).to_string(),
        format!("{:.2}", n.requests_per_s),
        format!("{:.2}", n.errors_per_s),
    ]
}

/// The page for `s`.
pub fn render(s: &Status) -> String {
    let t = &s.topology;
    let mut out = String::with_capacity(8192);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>xlb {inst}</title><style>{STYLE}</style></head><body>
<h1>xlb · {inst}</h1><p class="meta">version {ver} · config generation {generation} · up {up} s · rates over the last {win} s · <a href="status.json">JSON</a> · <a href="metrics">metrics</a></p>"#,
        inst = esc(&t.instance),
        ver = esc(&s.version),
        generation = t.generation,
        up = s.uptime_s,
        win = s.rate_window_s,
    );
    let mut vips = Vec::new();
    for v in &t.vips {
        for b in &v.backends {
            vips.push(vec![
                esc(&v.name),
                esc(&v.address),
                esc(&v.mode),
                esc(&b.address),
                b.weight.to_string(),
                health(b.healthy).to_string(),
            ]);
        }
        if v.backends.is_empty() {
            vips.push(vec![
                esc(&v.name),
                esc(&v.address),
                esc(&v.mode),
                "—".into(),
                String::new(),
                String::new(),
            ]);
        }
    }
    table(
        &mut out,
        "L4 VIPs and backends",
        &["VIP", "address", "mode", "backend", "weight", "health"],
        &vips,
    );
    let listeners: Vec<Vec<String>> = t
        .listeners
        .iter()
        .map(|l| {
            vec![
                esc(&l.name),
                esc(&l.address),
                if l.tls { "TLS" } else { "plain" }.into(),
            ]
        })
        .collect();
    table(
        &mut out,
        "Listeners",
        &["name", "address", "protocol"],
        &listeners,
    );
    let routes: Vec<Vec<String>> = t
        .routes
        .iter()
        .map(|r| {
            vec![
                esc(&r.listener),
                esc(&r.id),
                esc(&r.hosts.join(", ")),
                esc(&r.upstream),
                format!("{:.2}", r.requests_per_s),
                format!("{:.2}", r.errors_per_s),
            ]
        })
        .collect();
    table(
        &mut out,
        "Routes",
        &[
            "listener", "route", "hosts", "upstream", "req/s", "errors/s",
        ],
        &routes,
    );
    let mut nodes = Vec::new();
    for u in &t.upstreams {
        for n in &u.nodes {
            nodes.push(node_row(&u.id, n));
        }
    }
    table(
        &mut out,
        "Upstream nodes",
        &["upstream", "node", "weight", "health", "req/s", "errors/s"],
        &nodes,
    );
    let errors: Vec<Vec<String>> = s
        .recent_errors
        .iter()
        .map(|e| {
            vec![
                esc(&e.time),
                e.status.to_string(),
                esc(&e.reason),
                esc(&format!("{} {}{}", e.method, e.host, e.path)),
                esc(e.route.as_deref().unwrap_or("")),
                esc(e.node.as_deref().unwrap_or("")),
                esc(&e.client),
                esc(&e.request_id),
            ]
        })
        .collect();
    table(
        &mut out,
        "Recent errors",
        &[
            "time",
            "status",
            "reason",
            "request",
            "route",
            "node",
            "client",
            "request id",
        ],
        &errors,
    );
    let denied: Vec<Vec<String>> = t
        .denied
        .iter()
        .map(|d| {
            vec![
                esc(&d.prefix),
                d.expires_in_s.map_or("never".into(), |s| format!("{s} s")),
            ]
        })
        .collect();
    table(
        &mut out,
        "Denied sources (dropped at the NIC)",
        &["prefix", "expires in"],
        &denied,
    );
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::{Topology, UpstreamView};

    #[test]
    fn names_are_escaped_and_a_down_node_says_so() {
        let s = Status {
            topology: Topology {
                instance: "<x>".into(),
                upstreams: vec![UpstreamView {
                    id: "u".into(),
                    nodes: vec![NodeView {
                        address: "127.0.0.1:1".into(),
                        healthy: false,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let html = render(&s);
        assert!(html.contains("xlb · &lt;x&gt;"));
        assert!(!html.contains("<x>"));
        assert!(html.contains(r#"<span class="down">DOWN</span>"#));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
    }
}
