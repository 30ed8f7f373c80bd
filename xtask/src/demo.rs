//! `cargo xtask demo`: build xlb, make a namespace topology (client, LB,
//! three backends on one switch), run xlb's XDP Maglev balancer on it with
//! real TCP connections, and print what happened: the distribution beside
//! what the Maglev table predicted, then a backend drained and removed
//! while connections stay up.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use xlb_tests::{
    l4bed::{ask_tcp, tcp_connect_from, L4Bed, CLIENT4, TCP_PORT, VIP4},
    privilege::privileged,
    xlb::Xlb,
};

use crate::{build, deps};

/// Connections the client opens in the first wave.
const CONNECTIONS: u16 = 240;
const TIMEOUT: Duration = Duration::from_secs(2);

pub fn run() -> anyhow::Result<()> {
    deps::ensure_apt(deps::TEST_PACKAGES)?;
    let bin = build::all(false)?;
    // `XLB_DEMO_PART=admin`: only the admin-API part (loopback only, no
    // namespaces, no root needed).
    if std::env::var("XLB_DEMO_PART").as_deref() == Ok("admin") {
        std::env::set_var("XLB_BIN", &bin);
        return crate::demo_admin::run();
    }
    if !privileged("cargo xtask demo") {
        anyhow::bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    std::env::set_var("XLB_BIN", &bin);

    println!("\n== xlb demo: XDP Maglev load balancing (DSR) ==========================");
    let bed = L4Bed::new().context("building the namespace topology")?;
    println!(
        "topology: client {CLIENT4} -- switch -- LB {} (xlb, XDP native) -- backends {}",
        xlb_tests::l4bed::LB4,
        bed.backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.v4))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("VIP {VIP4}:{TCP_PORT}/tcp, mode dsr: the LB rewrites the MAC, backends answer the client directly");
    let weights = |w: [u32; 3]| config(&bed, &w);
    let mut xlb = Xlb::start(&bed.lb, &weights([1, 1, 1]))?;
    println!(
        "xlb running in {} (pid {}), maps pinned in {}\n",
        bed.lb.name(),
        xlb.pid(),
        xlb.pin_dir.display()
    );

    // Wave 1: many connections, each checked against the prediction.
    let vip = SocketAddr::new(VIP4.into(), TCP_PORT);
    let sources: Vec<SocketAddr> = (0..CONNECTIONS)
        .map(|i| SocketAddr::new(CLIENT4.into(), 20000 + i))
        .collect();
    let predicted = predict(&xlb, &sources, vip)?;
    let (mut conns, answered) = open(&bed, &sources, vip)?;
    let mut by_backend: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut agree = 0;
    for (src, got) in sources.iter().zip(&answered) {
        let want = bed.backend_name(predicted[src]).unwrap_or("?").to_string();
        by_backend.entry(want.clone()).or_default().0 += 1;
        if let Some(g) = got {
            by_backend.entry(g.clone()).or_default().1 += 1;
            agree += usize::from(*g == want);
        }
    }
    println!(
        "{CONNECTIONS} TCP connections from {CLIENT4}, ports 20000-{}:",
        20000 + CONNECTIONS - 1
    );
    println!(
        "  {:<10} {:>10} {:>10} {:>8}",
        "backend", "predicted", "observed", "share"
    );
    for (name, (p, o)) in &by_backend {
        println!(
            "  {name:<10} {p:>10} {o:>10} {:>7.1}%",
            100.0 * *o as f64 / CONNECTIONS as f64
        );
    }
    println!(
        "  each connection's backend matched `xlb flow`'s prediction: {agree}/{CONNECTIONS}\n"
    );

    // Drain backend3: weight 0. Its connections stay (connection table).
    let line = xlb.reload(&weights([1, 1, 0]))?;
    println!("drain backend3 (weight 0): {line}");
    let still = ask_all(&mut conns);
    let b3_alive = still
        .iter()
        .filter(|(was, now)| was == "backend3" && now.as_deref() == Some("backend3"))
        .count();
    let b3_total = still.iter().filter(|(was, _)| was == "backend3").count();
    println!("  open connections to backend3 still answered by backend3: {b3_alive}/{b3_total}");
    let fresh: Vec<SocketAddr> = (0..60)
        .map(|i| SocketAddr::new(CLIENT4.into(), 30000 + i))
        .collect();
    let (_fresh_conns, fresh_answers) = open(&bed, &fresh, vip)?;
    let to_b3 = fresh_answers
        .iter()
        .filter(|a| a.as_deref() == Some("backend3"))
        .count();
    println!(
        "  new connections landing on backend3: {to_b3}/{}",
        fresh.len()
    );

    // Remove backend3: connections to the others are untouched.
    let line = xlb.reload(&weights([1, 1, u32::MAX]))?;
    println!("remove backend3: {line}");
    let after = ask_all(&mut conns);
    let others: Vec<_> = after.iter().filter(|(was, _)| was != "backend3").collect();
    let kept = others
        .iter()
        .filter(|(was, now)| now.as_deref() == Some(was.as_str()))
        .count();
    println!(
        "  connections to backend1/backend2 still answered by the same backend: {kept}/{}",
        others.len()
    );
    println!("  (connections that were on backend3 are re-placed and reset: it is gone)\n");

    println!(
        "what the XDP datapath counted (`xlb stats --instance {}`):",
        xlb.instance()
    );
    let table = Command::new(&bin)
        .args(["stats", "--instance", xlb.instance()])
        .output()?;
    print!("{}", String::from_utf8_lossy(&table.stdout));
    drop(conns);
    let status = xlb.stop().context("stopping xlb")?;
    println!("\nxlb stopped ({status}); XDP detached, pins removed; namespaces are deleted now.");
    println!("=======================================================================");
    drop(bed);
    crate::demo_l7::run()?;
    crate::demo_admin::run()
}

/// The YAML for one DSR VIP with backends 1..3 at `weights`; `u32::MAX`
/// leaves a backend out.
fn config(bed: &L4Bed, weights: &[u32; 3]) -> String {
    let mut y = String::from(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\nl4:\n  conntrack_size: 65536\n  max_vips: 4\n  max_backends: 16\n  vips:\n",
    );
    y += &format!(
        "    - name: web\n      address: \"{VIP4}\"\n      port: {TCP_PORT}\n      protocol: tcp\n      mode: dsr\n      backends:\n"
    );
    for (b, w) in bed.backends.iter().zip(weights) {
        if *w != u32::MAX {
            y += &format!("        - address: \"{}\"\n          weight: {w}\n", b.v4);
        }
    }
    y
}

/// `xlb flow` for each source: the backend the Maglev table picks.
fn predict(
    xlb: &Xlb,
    sources: &[SocketAddr],
    vip: SocketAddr,
) -> anyhow::Result<BTreeMap<SocketAddr, IpAddr>> {
    let mut out = BTreeMap::new();
    for src in sources {
        let v = xlb.flow(&src.to_string(), &vip.to_string(), "tcp")?;
        let b = v["predicted"]
            .as_str()
            .context("no prediction")?
            .parse()
            .context("prediction is not an address")?;
        out.insert(*src, b);
    }
    Ok(out)
}

/// Opens one connection per source (inside the client namespace) and asks
/// each who answers. Returns the open connections with their first answer.
#[allow(clippy::type_complexity)]
fn open(
    bed: &L4Bed,
    sources: &[SocketAddr],
    vip: SocketAddr,
) -> anyhow::Result<(Vec<(TcpStream, String)>, Vec<Option<String>>)> {
    bed.client.enter(|| {
        let mut conns = Vec::new();
        let mut answers = Vec::new();
        for src in sources {
            let answer = tcp_connect_from(*src, vip, TIMEOUT)
                .ok()
                .and_then(|mut s| ask_tcp(&mut s).ok().map(|a| (s, a)));
            match answer {
                Some((s, a)) => {
                    answers.push(Some(a.clone()));
                    conns.push((s, a));
                }
                None => answers.push(None),
            }
        }
        (conns, answers)
    })
}

/// Asks every open connection again: (first answer, answer now).
fn ask_all(conns: &mut [(TcpStream, String)]) -> Vec<(String, Option<String>)> {
    conns
        .iter_mut()
        .map(|(s, was)| (was.clone(), ask_tcp(s).ok()))
        .collect()
}
