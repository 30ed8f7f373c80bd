//! Active health checks of L4 backends, end to end: the L4 testbed
//! (`xlb_tests::l4bed`) with a DSR VIP over three backends and a TCP health
//! check (200 ms interval, 100 ms timeout, 2 failures / 2 successes). Every
//! backend runs the test's own line server on port 8080 (all addresses, so
//! both the VIP and the health probes to the backend's address reach it).
//!
//! Long-lived connections go to every backend first. Then backend 2's
//! listener is closed (its established connections stay): within
//! interval × threshold plus a margin it owns no slot of the VIP's live
//! Maglev table, read from the instance's pinned maps (`VIPS`, `MAGLEV`,
//! `BACKENDS`), and that table is exactly the one of the config with
//! backend 2 at weight 0. The established connections, backend 2's
//! included, keep answering from the same backend (connection table), and
//! new flows never reach backend 2. Restarting its listener puts it back:
//! the table is again the original one and flows predicted to it reach it.
//! The times from kill to removal and from restart to return are printed
//! (`--nocapture`).
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use lb_common::{
    backend::{BackendMeta, BACKEND_F_ACTIVE},
    consts::NO_BACKEND,
    flow::wire_addr_v4,
    maps,
    vip::{VipKey, VipMeta},
};
use xlb::{
    config::{l4::L4Protocol, Config},
    datapath::predict,
};
use xlb_tests::{
    l4bed::{self, L4Bed, CLIENT4, VIP4},
    netns::{self, Netns},
    privilege::privileged,
    process::pid_alive,
    xlb::Xlb,
};

/// The VIP's port, served by the test's own servers in every backend.
const PORT: u16 = 8080;
/// Maglev table size (prime): small, so one read of the table is quick.
const M: u32 = 4093;
const INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const UNHEALTHY_THRESHOLD: u32 = 2;
const HEALTHY_THRESHOLD: u32 = 2;
/// Beyond interval × threshold (+ one probe timeout): scheduling, the
/// event channel, the table write.
const MARGIN: Duration = Duration::from_secs(3);
/// Connect and read bound of the test's own connections.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Long-lived connections opened before the kill.
const LONG_LIVED: u16 = 60;
/// New flows after the removal, and after the return.
const NEW_FLOWS: u16 = 90;

// ------------------------------------------------------------ the servers

/// A TCP line server in one backend namespace, on 0.0.0.0:[`PORT`]: answers
/// every line with the backend's name. Its listener can be closed and
/// reopened while the connections it accepted go on.
struct LineServer {
    name: String,
    /// Stops everything (connections too): the end of the test.
    stop_all: Arc<AtomicBool>,
    /// Stops the accept loop only, which drops the listener.
    stop_listener: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl LineServer {
    fn start(ns: &Netns, name: &str) -> anyhow::Result<LineServer> {
        let mut s = LineServer {
            name: name.to_string(),
            stop_all: Arc::new(AtomicBool::new(false)),
            stop_listener: Arc::new(AtomicBool::new(false)),
            listener: None,
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        s.listen(ns)?;
        Ok(s)
    }

    /// Binds the listener (again) and starts accepting.
    fn listen(&mut self, ns: &Netns) -> anyhow::Result<()> {
        assert!(self.listener.is_none(), "{} already listening", self.name);
        // std sets SO_REUSEADDR: the port's established connections do not
        // keep a new listener from binding.
        let l =
            ns.enter(|| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT))))??;
        l.set_nonblocking(true)?;
        let stop_listener = Arc::new(AtomicBool::new(false));
        self.stop_listener = stop_listener.clone();
        let stop_all = self.stop_all.clone();
        let conns = self.conns.clone();
        let reply = format!("{}\n", self.name);
        self.listener = Some(std::thread::spawn(move || {
            while !stop_listener.load(Ordering::Relaxed) && !stop_all.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        if s.set_nonblocking(false).is_err()
                            || s.set_read_timeout(Some(Duration::from_millis(50))).is_err()
                        {
                            continue;
                        }
                        let stop = stop_all.clone();
                        let reply = reply.clone();
                        let mut c = conns.lock().unwrap();
                        c.retain(|h| !h.is_finished());
                        c.push(std::thread::spawn(move || serve_lines(s, reply, stop)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // `l` drops here: the port stops listening, new SYNs get RST.
        }));
        Ok(())
    }

    /// Closes the listener (waits until it is closed); accepted
    /// connections go on.
    fn kill(&mut self) {
        self.stop_listener.store(true, Ordering::Relaxed);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop_all.store(true, Ordering::Relaxed);
        self.kill();
        let conns: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for c in conns {
            let _ = c.join();
        }
    }
}

fn serve_lines(mut s: TcpStream, reply: String, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                for _ in buf[..n].iter().filter(|&&b| b == b'\n') {
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

// ------------------------------------------------- the live Maglev table

/// The VIP's live Maglev table as backend addresses (`None`: no backend),
/// read from the pinned maps.
fn live_table(pin_dir: &Path) -> Vec<Option<IpAddr>> {
    let open = |name: &str| {
        MapData::from_pin(pin_dir.join(name))
            .unwrap_or_else(|e| panic!("opening pinned {name} in {}: {e}", pin_dir.display()))
    };
    let vips: BpfHashMap<MapData, VipKey, VipMeta> =
        BpfHashMap::try_from(Map::HashMap(open(maps::VIPS))).expect("VIPS as a hash map");
    let maglev: Array<MapData, u32> =
        Array::try_from(Map::Array(open(maps::MAGLEV))).expect("MAGLEV as an array");
    let backends: Array<MapData, BackendMeta> =
        Array::try_from(Map::Array(open(maps::BACKENDS))).expect("BACKENDS as an array");
    let key = VipKey::v4(wire_addr_v4(VIP4.octets()), PORT.to_be(), 6);
    // A table flip between reading the meta and the slots would mix two
    // tables: read until the meta is the same before and after.
    for _ in 0..20 {
        let meta = vips.get(&key, 0).expect("the VIP in the pinned VIPS map");
        let base = (meta.index * 2 + meta.table) * M;
        let mut names: BTreeMap<u32, Option<IpAddr>> = BTreeMap::new();
        let mut table = Vec::with_capacity(M as usize);
        for i in 0..M {
            let b = maglev.get(&(base + i), 0).expect("a MAGLEV slot");
            let addr = if b == NO_BACKEND {
                None
            } else {
                *names.entry(b).or_insert_with(|| {
                    let m = backends.get(&b, 0).expect("a BACKENDS entry");
                    assert!(
                        m.flags & BACKEND_F_ACTIVE != 0,
                        "slot {i} names inactive backend {b}"
                    );
                    Some(IpAddr::V4(Ipv4Addr::from(m.addr[0].to_ne_bytes())))
                })
            };
            table.push(addr);
        }
        if vips.get(&key, 0).expect("the VIP") == meta {
            return table;
        }
    }
    panic!("the VIP's table flipped 20 times while being read");
}

/// Slots per backend.
fn owners(table: &[Option<IpAddr>]) -> BTreeMap<Option<IpAddr>, usize> {
    let mut m = BTreeMap::new();
    for b in table {
        *m.entry(*b).or_insert(0) += 1;
    }
    m
}

/// The table the config's Maglev builder makes, with `zero` at weight 0.
fn config_table(config: &Config, zero: Option<IpAddr>) -> Vec<Option<IpAddr>> {
    let mut vip = config.l4.vips[0].clone();
    for b in &mut vip.backends {
        if Some(b.address) == zero {
            b.weight = 0;
        }
    }
    predict::table(&vip, M)
        .unwrap()
        .into_iter()
        .map(|p| match p {
            NO_BACKEND => None,
            p => Some(vip.backends[p as usize].address),
        })
        .collect()
}

/// Polls the live table until `done` holds; the time it took.
fn wait_table(
    pin_dir: &Path,
    since: Instant,
    bound: Duration,
    what: &str,
    xlb: &Xlb,
    done: impl Fn(&[Option<IpAddr>]) -> bool,
) -> (Duration, Vec<Option<IpAddr>>) {
    loop {
        let t = live_table(pin_dir);
        if done(&t) {
            return (since.elapsed(), t);
        }
        if since.elapsed() > bound {
            panic!(
                "{what}: not within {bound:?}; slots per backend now {:?}; xlb stderr:\n{}",
                owners(&t),
                xlb.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------ the flows

/// An open connection and the backend that answered it.
struct Conn {
    src: SocketAddr,
    backend: String,
    sock: TcpStream,
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.into(), PORT)
}

/// The slot of a new flow from `src` to the VIP.
fn slot_of(config: &Config, src: SocketAddr) -> usize {
    predict::predict(&config.l4, src, vip(), L4Protocol::Tcp)
        .unwrap()
        .expect("the VIP is in the config")
        .slot as usize
}

/// Opens one connection per source and asks it once; every answer must
/// name the backend that `table` holds for the flow's slot.
fn open(
    bed: &L4Bed,
    config: &Config,
    table: &[Option<IpAddr>],
    srcs: &[SocketAddr],
    what: &str,
) -> Vec<Conn> {
    let owned = srcs.to_vec();
    let answers = bed
        .client
        .enter(move || {
            owned
                .into_iter()
                .map(|src| {
                    l4bed::tcp_connect_from(src, vip(), TIMEOUT).and_then(|mut s| {
                        let name = l4bed::ask_tcp(&mut s)?;
                        Ok((s, name))
                    })
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    srcs.iter()
        .zip(answers)
        .map(|(src, r)| {
            let (sock, name) =
                r.unwrap_or_else(|e| panic!("{what}: TCP {src} -> {}: {e:#}", vip()));
            let want = table[slot_of(config, *src)]
                .and_then(|a| bed.backend_name(a))
                .expect("a backend in that slot");
            assert_eq!(
                name, want,
                "{what}: {src} reached {name}, the live table says {want}"
            );
            Conn {
                src: *src,
                backend: name,
                sock,
            }
        })
        .collect()
}

fn spread(conns: &[Conn]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        *m.entry(c.backend.clone()).or_insert(0) += 1;
    }
    m
}

/// Every connection answers again, from its backend.
fn assert_unchanged(what: &str, conns: &mut [Conn]) {
    for c in conns.iter_mut() {
        match l4bed::ask_tcp(&mut c.sock) {
            Ok(name) => assert_eq!(
                name, c.backend,
                "{what}: {} moved from {} to {name}",
                c.src, c.backend
            ),
            Err(e) => panic!("{what}: {} (on {}) broke: {e}", c.src, c.backend),
        }
    }
}

fn sources(base: u16, n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::new(CLIENT4.into(), base + i))
        .collect()
}

fn config_yaml(bed: &L4Bed) -> String {
    let mut y = format!(
        "interfaces:\n  - name: eth0\n    xdp_mode: native\n\
         l4:\n  maglev_table_size: {M}\n  conntrack_size: 65536\n  max_vips: 8\n  max_backends: 64\n  vips:\n\
         \x20   - name: web\n      address: \"{VIP4}\"\n      port: {PORT}\n      protocol: tcp\n      mode: dsr\n\
         \x20     health_check: {{type: tcp, interval: {}ms, timeout: {}ms, unhealthy_threshold: {UNHEALTHY_THRESHOLD}, healthy_threshold: {HEALTHY_THRESHOLD}}}\n\
         \x20     backends:\n",
        INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    );
    for b in &bed.backends {
        y += &format!("        - address: \"{}\"\n          weight: 1\n", b.v4);
    }
    y
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unhealthy_l4_backend_leaves_the_maglev_table_and_returns() {
    if !privileged("unhealthy_l4_backend_leaves_the_maglev_table_and_returns") {
        return;
    }
    let created: (Vec<String>, u32, PathBuf);
    {
        // Drop order on a panic: xlb, the servers, then the testbed.
        let bed = L4Bed::new().unwrap();
        let mut servers: Vec<LineServer> = bed
            .backends
            .iter()
            .map(|b| LineServer::start(&b.ns, &b.name).unwrap())
            .collect();
        let mut xlb = Xlb::start(&bed.lb, &config_yaml(&bed)).unwrap();
        let pin_dir = xlb.pin_dir.clone();
        let config = Config::load(&xlb.config_path()).unwrap();
        let b2 = &bed.backends[1];
        let b2_addr = IpAddr::V4(b2.v4);

        // 1. All healthy: the live table is the config's, every backend
        // owns slots.
        let original = config_table(&config, None);
        let live = live_table(&pin_dir);
        println!("slots at start: {:?}", owners(&live));
        assert_eq!(live, original, "the live table at start is the config's");
        for b in &bed.backends {
            assert!(
                live.contains(&Some(IpAddr::V4(b.v4))),
                "{} owns no slot at start",
                b.name
            );
        }
        // Healthy backends stay in for several probe rounds.
        std::thread::sleep(INTERVAL * (UNHEALTHY_THRESHOLD + 2));
        assert_eq!(
            live_table(&pin_dir),
            original,
            "the table changed while every backend was healthy; xlb stderr:\n{}",
            xlb.stderr()
        );

        // 2. Long-lived connections to every backend.
        let mut long = open(
            &bed,
            &config,
            &original,
            &sources(20000, LONG_LIVED),
            "long-lived",
        );
        let s = spread(&long);
        println!("long-lived connections: {s:?}");
        for b in &bed.backends {
            assert!(
                s.get(&b.name).copied().unwrap_or(0) > 0,
                "{} got no connection: {s:?}",
                b.name
            );
        }

        // 3. Backend 2 stops listening: out of the table in time.
        let killed = Instant::now();
        servers[1].kill();
        let expected = INTERVAL * UNHEALTHY_THRESHOLD + PROBE_TIMEOUT;
        let (removal, drained) = wait_table(
            &pin_dir,
            killed,
            expected + MARGIN,
            "backend2 out of the table",
            &xlb,
            |t| !t.contains(&Some(b2_addr)),
        );
        println!(
            "kill -> backend2 owns no slot: {removal:?} (interval x unhealthy_threshold = {:?}); slots now {:?}",
            INTERVAL * UNHEALTHY_THRESHOLD,
            owners(&drained)
        );
        // Two failed probes, started at least (threshold - 1) jittered
        // intervals apart (±10 % jitter), both after the kill: one
        // failure alone must not remove the backend.
        let earliest = (INTERVAL * (UNHEALTHY_THRESHOLD - 1)).mul_f64(0.9);
        assert!(
            removal >= earliest,
            "backend2 removed {removal:?} after the kill, before {UNHEALTHY_THRESHOLD} probes can have failed ({earliest:?})"
        );
        assert_eq!(
            drained,
            config_table(&config, Some(b2_addr)),
            "the drained table is the config's with backend2 at weight 0"
        );
        assert!(
            xlb.stderr()
                .contains(&format!("l4/web/{b2_addr} out of its VIP's table")),
            "the daemon logs the removal; stderr:\n{}",
            xlb.stderr()
        );
        // Only backend 2 left; nothing flaps while it stays down.
        std::thread::sleep(INTERVAL * (HEALTHY_THRESHOLD + 2));
        assert_eq!(
            live_table(&pin_dir),
            drained,
            "the table while backend2 stays down"
        );

        // 4. Established connections keep their backend (backend 2's
        // too: its accepted connections still run, and the connection
        // table keeps them).
        assert_unchanged("after the removal", &mut long);
        println!(
            "after the removal: {} long-lived connections answered by the same backend",
            long.len()
        );

        // 5. New flows never reach backend 2, also those it owned before.
        let srcs = sources(30000, NEW_FLOWS);
        let were_b2 = srcs
            .iter()
            .filter(|s| original[slot_of(&config, **s)] == Some(b2_addr))
            .count();
        let fresh = open(
            &bed,
            &config,
            &drained,
            &srcs,
            "new flows while backend2 is down",
        );
        let s = spread(&fresh);
        println!("{NEW_FLOWS} new flows while backend2 is down: {s:?} ({were_b2} of them were backend2's before)");
        assert!(
            !s.contains_key(&b2.name),
            "a new flow reached backend2: {s:?}"
        );
        assert!(
            were_b2 > 0,
            "no new flow would have gone to backend2: the check proves nothing"
        );
        drop(fresh);

        // 6. Backend 2 listens again: back in the table, the original one.
        let restarted = Instant::now();
        servers[1].listen(&b2.ns).unwrap();
        let back_expected = INTERVAL * HEALTHY_THRESHOLD;
        let (back, restored) = wait_table(
            &pin_dir,
            restarted,
            back_expected + MARGIN,
            "backend2 back in the table",
            &xlb,
            |t| t.contains(&Some(b2_addr)),
        );
        println!(
            "restart -> backend2 owns slots again: {back:?}; slots now {:?}",
            owners(&restored)
        );
        let earliest = (INTERVAL * (HEALTHY_THRESHOLD - 1)).mul_f64(0.9);
        assert!(
            back >= earliest,
            "backend2 back {back:?} after the restart, before {HEALTHY_THRESHOLD} probes can have passed ({earliest:?})"
        );
        assert_eq!(restored, original, "the restored table is the original one");

        // 7. Flows predicted to backend 2 reach it again; the old
        // connections still answer from their backend.
        let srcs: Vec<SocketAddr> = sources(40000, NEW_FLOWS);
        let fresh = open(
            &bed,
            &config,
            &original,
            &srcs,
            "new flows after the return",
        );
        let s = spread(&fresh);
        println!("{NEW_FLOWS} new flows after the return: {s:?}");
        assert!(
            s.get(&b2.name).copied().unwrap_or(0) > 0,
            "no new flow reached backend2: {s:?}"
        );
        assert_unchanged("after the return", &mut long);
        drop(fresh);
        drop(long);

        let pid = xlb.pid();
        let status = xlb.stop().unwrap();
        assert!(
            status.success(),
            "xlb exited with {status}; stderr:\n{}",
            xlb.stderr()
        );
        drop(xlb);
        drop(servers);
        let mut names = vec![
            bed.switch.name().to_string(),
            bed.client.name().to_string(),
            bed.lb.name().to_string(),
        ];
        names.extend(bed.backends.iter().map(|b| b.ns.name().to_string()));
        created = (names, pid, pin_dir);
    }
    let (namespaces, pid, pin_dir) = created;
    let existing = netns::list().unwrap();
    for ns in &namespaces {
        assert!(!existing.contains(ns), "namespace {ns} left behind");
    }
    assert!(!pid_alive(pid), "xlb process {pid} left behind");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
}
