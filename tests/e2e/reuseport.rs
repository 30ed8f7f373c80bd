//! L7 worker steering on loopback: four `SO_REUSEPORT` listeners, the
//! `xlb_reuseport` program picking the worker, real TCP connections.
//!
//! - 10 000 connections spread within 10% of even, and the program's
//!   per-worker counters equal what each worker accepted;
//! - a draining worker gets no new connection while the others share its
//!   part evenly, and gets connections again once undrained;
//! - without BPF privilege (this binary run again as `nobody`) attaching
//!   reports the fallback to kernel hashing, and the listeners still serve.
use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xlb::l7::{FallbackKind, Listeners, Steering};
use xlb_tests::{names, privilege::privileged};

const WORKERS: usize = 4;
/// Client threads: bounds the connections in flight, so no accept queue
/// fills (a SYN dropped on a full queue would be steered, and counted,
/// twice).
const CLIENTS: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Each worker: a thread accepting on its own listener, counting, closing.
struct Workers {
    counts: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(listeners: &Listeners) -> Workers {
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..listeners.len()).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = listeners
            .iter()
            .enumerate()
            .map(|(worker, l)| {
                // The same socket (a dup of its fd), so the group keeps
                // its members and the test keeps `listeners` for detaching.
                let l: TcpListener = l.try_clone().unwrap();
                let (counts, stop) = (counts.clone(), stop.clone());
                std::thread::spawn(move || accept_loop(worker, l, &counts, &stop))
            })
            .collect();
        Workers {
            counts,
            stop,
            threads,
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Waits until the workers have accepted `total` connections in all.
    fn wait_for(&self, total: u64) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.counts();
            let sum: u64 = c.iter().sum();
            if sum >= total || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(worker: usize, l: TcpListener, counts: &[AtomicU64], stop: &AtomicBool) {
    // The listeners are nonblocking (as the proxy wants them): poll.
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((stream, _)) => {
                counts[worker].fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("worker {worker}: accept: {e}"),
        }
    }
}

/// Opens and closes `n` connections to `addr` from `CLIENTS` threads.
fn connect_many(addr: SocketAddr, n: usize) {
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let share = n / CLIENTS + usize::from(t < n % CLIENTS);
            std::thread::spawn(move || {
                for i in 0..share {
                    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                        .unwrap_or_else(|e| panic!("client {t}, connection {i}: {e}"));
                    drop(s);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
}

/// The host's TCP `ListenDrops` (/proc/net/netstat): SYNs dropped after a
/// listener was chosen, because its queue was full. The client retransmits
/// such a SYN, and the steering program runs (and counts) again for it.
fn listen_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("/proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenDrops")
        .expect("TcpExt has ListenDrops");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The program's per-worker counters against the accepts: never fewer, and
/// more only by SYNs the kernel dropped at a full queue since `drops_before`
/// (each of those was steered twice). On a quiet machine they are equal.
fn assert_steered(counted: &[u64], accepted: &[u64], drops_before: u64) {
    let extra_allowed = listen_drops() - drops_before;
    for (w, (c, a)) in counted.iter().zip(accepted).enumerate() {
        assert!(
            c >= a,
            "worker {w}: the program counted {c}, fewer than the {a} accepts: {counted:?} vs {accepted:?}"
        );
    }
    let extra = counted.iter().sum::<u64>() - accepted.iter().sum::<u64>();
    assert!(
        extra <= extra_allowed,
        "the program's per-worker counters must equal the accepts, apart from {extra_allowed} \
         SYNs dropped at a full queue: {counted:?} vs {accepted:?}"
    );
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Asserts every listed worker's count is within `tolerance` of an even
/// share of `total` among them.
fn assert_even(what: &str, counts: &[u64], workers: &[usize], total: u64, tolerance: f64) {
    let even = total as f64 / workers.len() as f64;
    for &w in workers {
        let off = (counts[w] as f64 - even).abs() / even;
        assert!(
            off <= tolerance,
            "{what}: worker {w} got {} of {total}, {:.1}% off an even {even:.0} (allowed {:.0}%): {counts:?}",
            counts[w],
            off * 100.0,
            tolerance * 100.0
        );
    }
}

fn report(what: &str, counts: &[u64], total: u64) {
    let shares: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(w, &c)| format!("w{w}={c} ({:.1}%)", 100.0 * c as f64 / total as f64))
        .collect();
    println!("{what}: {}", shares.join(" "));
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn steering_spreads_evenly_and_skips_draining_workers() {
    if !privileged("steering_spreads_evenly_and_skips_draining_workers") {
        return;
    }
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), WORKERS).unwrap();
    let addr = listeners.local_addr();
    let mut steering = Steering::attach(&listeners)
        .unwrap_or_else(|r| panic!("as root the eBPF steering must attach: {r}"));
    let workers = Workers::start(&listeners);
    let drops_before = listen_drops();

    // 1. All active: 10 000 connections.
    connect_many(addr, 10_000);
    let c1 = workers.wait_for(10_000);
    report("10000 connections, 4 active", &c1, 10_000);
    assert_eq!(c1.iter().sum::<u64>(), 10_000, "{c1:?}");
    assert_even("all active", &c1, &[0, 1, 2, 3], 10_000, 0.10);
    assert_steered(&steering.accepts().unwrap(), &c1, drops_before);

    // 2. Worker 2 draining: 2 000 more, none to worker 2.
    steering.drain(2).unwrap();
    assert!(steering.is_draining(2));
    connect_many(addr, 2_000);
    let c2 = workers.wait_for(12_000);
    let d2 = delta(&c2, &c1);
    report("2000 connections, worker 2 draining", &d2, 2_000);
    assert_eq!(d2.iter().sum::<u64>(), 2_000, "{d2:?}");
    assert_eq!(d2[2], 0, "a draining worker got connections: {d2:?}");
    assert_even("worker 2 draining", &d2, &[0, 1, 3], 2_000, 0.15);
    assert_steered(&steering.accepts().unwrap(), &c2, drops_before);

    // 3. Undrained: worker 2 takes its share again.
    steering.undrain(2).unwrap();
    connect_many(addr, 2_000);
    let c3 = workers.wait_for(14_000);
    let d3 = delta(&c3, &c2);
    report("2000 connections, worker 2 undrained", &d3, 2_000);
    assert_eq!(d3.iter().sum::<u64>(), 2_000, "{d3:?}");
    assert!(d3[2] > 0, "an undrained worker got nothing: {d3:?}");
    assert_even("undrained", &d3, &[0, 1, 2, 3], 2_000, 0.25);
    let s3 = steering.accepts().unwrap();
    assert_steered(&s3, &c3, drops_before);

    // Every connection was steered: none fell back to the kernel's hash.
    for (reason, n) in steering.fallbacks().unwrap() {
        assert_eq!(n, 0, "fallback {}", reason.name());
    }

    // Draining everything hands the choice to the kernel, counted as such.
    for w in 0..WORKERS {
        steering.drain(w).unwrap();
    }
    connect_many(addr, 100);
    let c4 = workers.wait_for(14_100);
    assert_eq!(c4.iter().sum::<u64>(), 14_100, "{c4:?}");
    assert_eq!(steering.accepts().unwrap(), s3, "nothing steered");
    let no_active = steering.fallbacks().unwrap()[0];
    assert_eq!(no_active.0.name(), "no_active_worker");
    // Each of the 100 counted once, or twice when its first SYN met a full
    // queue.
    let dropped = listen_drops() - drops_before;
    assert!(
        (100..=100 + dropped).contains(&no_active.1),
        "{} fallbacks for 100 connections ({dropped} SYNs dropped at a full queue)",
        no_active.1
    );

    drop(workers);
    steering.detach(&listeners).unwrap();
}

/// Set (to "1") only in the child: without it `child_fallback_probe` does
/// nothing.
const PROBE_ENV: &str = "XLB_REUSEPORT_FALLBACK_PROBE";
const NOBODY: u32 = 65534;

/// The child side, run as `nobody`: attaching must fail as "no privilege",
/// and the listeners must still take connections (kernel hashing).
#[test]
fn child_fallback_probe() {
    if std::env::var_os(PROBE_ENV).is_none_or(|v| v != "1") {
        return;
    }
    println!("XLB_PROBE_START euid={}", nix::unistd::geteuid());
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    match Steering::attach(&listeners) {
        Ok(_) => println!("XLB_PROBE_RESULT attached"),
        Err(reason) => {
            println!("XLB_PROBE_RESULT kind={:?}", reason.kind);
            println!("XLB_PROBE_REASON {reason}");
        }
    }
    let workers = Workers::start(&listeners);
    connect_many(listeners.local_addr(), 20);
    let c = workers.wait_for(20);
    println!("XLB_PROBE_SERVED {}", c.iter().sum::<u64>());
}

/// A 0755 copy of this test binary in a 0755 temporary directory, so that
/// `nobody` can run it wherever the build tree is.
struct ExeCopy(PathBuf);

impl ExeCopy {
    fn new() -> ExeCopy {
        let dir = std::env::temp_dir().join(names::unique("reuseport"));
        std::fs::create_dir(&dir).unwrap();
        let copy = ExeCopy(dir.clone());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("reuseport-probe");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    }

    fn exe(&self) -> PathBuf {
        self.0.join("reuseport-probe")
    }
}

impl Drop for ExeCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unprivileged_attach_falls_back_to_kernel_hashing() {
    if !privileged("unprivileged_attach_falls_back_to_kernel_hashing") {
        return;
    }
    let copy = ExeCopy::new();
    let out = Command::new(copy.exe())
        .args([
            "--exact",
            "child_fallback_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir("/")
        .env(PROBE_ENV, "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the probe as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!(
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "{ctx}");
    assert!(
        stdout.contains(&format!("XLB_PROBE_START euid={NOBODY}\n")),
        "{ctx}"
    );
    assert!(
        stdout.contains(&format!(
            "XLB_PROBE_RESULT kind={:?}\n",
            FallbackKind::NoPrivilege
        )),
        "{ctx}"
    );
    assert!(
        stdout.contains("XLB_PROBE_REASON no BPF privilege"),
        "{ctx}"
    );
    assert!(stdout.contains("XLB_PROBE_SERVED 20\n"), "{ctx}");
}
