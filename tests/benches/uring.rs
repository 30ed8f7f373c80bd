//! `cargo xtask bench uring`: the io_uring experiment of the L7
//! per-core issue, time-boxed. Would submitting a proxy's socket I/O
//! through io_uring instead of epoll + read/write save at least 2 µs of
//! CPU per request on this kernel? It measures only the mechanism, on the
//! shape of xlb's HTTP/1.1 path: one proxy thread pinned to CPU 0 relays
//! bytes between `CONNECTIONS` client connections and as many backend
//! connections (client → proxy → backend → proxy → client, 100-byte
//! requests, 64-byte responses, like `bench l7`'s wrk against a 64-byte
//! body); clients and backends are blocking threads on CPU 1.
//!
//! - `epoll`: level-triggered epoll; per ready socket one `read` and one
//!   `write` to its peer (what tokio does for xlb: 4 syscalls a request
//!   plus a share of `epoll_wait`).
//! - `io_uring`: a `recv` kept posted on every socket; a completion
//!   queues the `send` to the peer and the next `recv`, and one
//!   `io_uring_enter` submits everything queued and waits for the next
//!   completions (a batch per call, no readiness step); the ring is set up
//!   for a single issuer with deferred task work (kernel 6.1+, else plain).
//!
//! Both relay the same bytes with the same buffers; no HTTP is parsed.
//! Printed: requests/s and the proxy thread's user and kernel µs per
//! request (getrusage of the thread), rounds interleaved; writes
//! target/bench/uring.json. No proxy's own work is in it: the saving, if
//! any, is the most io_uring could give xlb's HTTP/1.1 path.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use io_uring::{opcode, types, IoUring};

/// Client connections (as wrk's in `bench l7`).
const CONNECTIONS: usize = 64;
const REQUEST: usize = 100;
const RESPONSE: usize = 64;
const BUF: usize = 4096;

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only
    // read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// (user, system) CPU time of the calling thread.
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let d = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (d(ru.ru_utime), d(ru.ru_stime))
}

/// A backend: answers every 100 bytes read with 64 bytes, on CPU 1.
fn backend(listener: TcpListener, stop: Arc<AtomicBool>) {
    pin(1);
    for conn in listener.incoming().take(CONNECTIONS) {
        let Ok(mut c) = conn else { return };
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(1);
            let _ = c.set_nodelay(true);
            let mut req = [0u8; REQUEST];
            let resp = [b'r'; RESPONSE];
            while !stop.load(Ordering::Relaxed) {
                if c.read_exact(&mut req).is_err() || c.write_all(&resp).is_err() {
                    return;
                }
            }
        });
    }
}

/// A client: sends a request, waits for the whole response, again.
fn client(mut c: TcpStream, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    pin(1);
    let _ = c.set_nodelay(true);
    let req = [b'q'; REQUEST];
    let mut resp = [0u8; RESPONSE];
    while !stop.load(Ordering::Relaxed) {
        if c.write_all(&req).is_err() || c.read_exact(&mut resp).is_err() {
            return;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The proxy's sockets: `fds[2i]` a client, `fds[2i + 1]` its backend.
struct Pairs {
    _streams: Vec<TcpStream>,
    fds: Vec<RawFd>,
}

fn peer(i: usize) -> usize {
    i ^ 1
}

fn relay_epoll(p: &Pairs, stop: &AtomicBool) {
    // SAFETY: plain epoll calls on descriptors `p` keeps open.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0, "epoll_create1");
        for (i, &fd) in p.fds.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut buf = vec![0u8; BUF];
        while !stop.load(Ordering::Relaxed) {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100);
            for ev in events.iter().take(n.max(0) as usize) {
                let i = ev.u64 as usize;
                let got = libc::read(p.fds[i], buf.as_mut_ptr().cast(), BUF);
                if got > 0 {
                    libc::write(p.fds[peer(i)], buf.as_ptr().cast(), got as usize);
                }
            }
        }
        libc::close(ep);
    }
}

fn relay_uring(p: &Pairs, stop: &AtomicBool) -> std::io::Result<()> {
    let n = p.fds.len();
    // The settings for one thread that owns its ring (kernel 6.1+): task
    // work run when this thread enters the kernel, not by interrupting
    // it. Plain settings where the kernel refuses them.
    let mut ring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)
        .or_else(|_| IoUring::new(1024))?;
    // One receive buffer and one send buffer per socket: a socket's next
    // receive is posted while its last data may still be in flight.
    let mut rbuf = vec![[0u8; BUF]; n];
    let mut sbuf = vec![[0u8; BUF]; n];
    const SEND: u64 = 1 << 32;
    let recv = |i: usize, rbuf: &mut [[u8; BUF]]| {
        opcode::Recv::new(types::Fd(p.fds[i]), rbuf[i].as_mut_ptr(), BUF as u32)
            .build()
            .user_data(i as u64)
    };
    for i in 0..n {
        let e = recv(i, &mut rbuf);
        // SAFETY: the buffer lives until the ring is dropped below.
        unsafe { ring.submission().push(&e) }.expect("room for the first receives");
    }
    while !stop.load(Ordering::Relaxed) {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, res) in done {
            if data & SEND != 0 {
                continue;
            }
            let i = data as usize;
            if res <= 0 {
                continue;
            }
            let len = res as usize;
            let to = peer(i);
            sbuf[to][..len].copy_from_slice(&rbuf[i][..len]);
            let send = opcode::Send::new(types::Fd(p.fds[to]), sbuf[to].as_ptr(), len as u32)
                .build()
                .user_data(SEND | to as u64);
            let again = recv(i, &mut rbuf);
            // SAFETY: both buffers live until the ring is dropped; a
            // socket's send buffer is rewritten only after its peer
            // answered, that is after the previous send completed.
            unsafe {
                let mut sq = ring.submission();
                sq.push(&send).expect("room in the submission queue");
                sq.push(&again).expect("room in the submission queue");
            }
        }
    }
    drop(ring);
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Epoll,
    Uring,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Epoll => "epoll + read/write",
            Mode::Uring => "io_uring",
        }
    }
}

struct Sample {
    rps: f64,
    user_us: f64,
    sys_us: f64,
}

/// One measured run of `mode` for `secs` (after a second of warm-up).
fn run(mode: Mode, secs: u64) -> anyhow::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let back = TcpListener::bind("127.0.0.1:0")?;
    let back_addr = back.local_addr()?;
    let front = TcpListener::bind("127.0.0.1:0")?;
    let front_addr = front.local_addr()?;
    let b = {
        let stop = stop.clone();
        std::thread::spawn(move || backend(back, stop))
    };
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let c = TcpStream::connect(front_addr)?;
        let (from_client, _) = front.accept()?;
        let to_backend = TcpStream::connect(back_addr)?;
        from_client.set_nodelay(true)?;
        to_backend.set_nodelay(true)?;
        if mode == Mode::Epoll {
            from_client.set_nonblocking(true)?;
            to_backend.set_nonblocking(true)?;
        }
        streams.push(from_client);
        streams.push(to_backend);
        let (stop, done) = (stop.clone(), done.clone());
        clients.push(std::thread::spawn(move || client(c, stop, done)));
    }
    let fds = streams.iter().map(|s| s.as_raw_fd()).collect();
    let pairs = Pairs {
        _streams: streams,
        fds,
    };
    let relay_stop = Arc::new(AtomicBool::new(false));
    let measured = std::thread::scope(|s| {
        let rs = relay_stop.clone();
        let pairs = &pairs;
        let h = s.spawn(move || -> anyhow::Result<(Duration, Duration)> {
            pin(0);
            let t0 = thread_cpu();
            match mode {
                Mode::Epoll => relay_epoll(pairs, &rs),
                Mode::Uring => relay_uring(pairs, &rs)?,
            }
            let t1 = thread_cpu();
            Ok((t1.0 - t0.0, t1.1 - t0.1))
        });
        std::thread::sleep(Duration::from_secs(1));
        let from = done.load(Ordering::Relaxed);
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let count = done.load(Ordering::Relaxed) - from;
        let elapsed = t.elapsed();
        relay_stop.store(true, Ordering::Relaxed);
        let cpu = h.join().map_err(|_| anyhow::anyhow!("relay panicked"))??;
        anyhow::Ok((count, elapsed, cpu))
    });
    stop.store(true, Ordering::Relaxed);
    drop(pairs);
    for c in clients {
        let _ = c.join();
    }
    let _ = b.join();
    let (count, elapsed, (user, sys)) = measured?;
    // The relay's CPU covers the warm-up second too: divide by all the
    // requests it relayed, counted the same way.
    let total = done.load(Ordering::Relaxed).max(1) as f64;
    Ok(Sample {
        rps: count as f64 / elapsed.as_secs_f64(),
        user_us: user.as_secs_f64() * 1e6 / total,
        sys_us: sys.as_secs_f64() * 1e6 / total,
    })
}

/// CPU model, CPU count and kernel release.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown cpu", str::trim);
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, kernel {}", kernel.trim())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let secs = std::env::var("XLB_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rounds = std::env::var("XLB_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let mut out: Vec<(Mode, Vec<Sample>)> = vec![(Mode::Epoll, vec![]), (Mode::Uring, vec![])];
    for round in 0..rounds {
        for (mode, samples) in &mut out {
            let s = run(*mode, secs)?;
            println!(
                "round {}: {:<20} {:>9.0} req/s, relay CPU {:.2} µs/req (user {:.2}, kernel {:.2})",
                round + 1,
                mode.name(),
                s.rps,
                s.user_us + s.sys_us,
                s.user_us,
                s.sys_us
            );
            samples.push(s);
        }
    }
    let med = |s: &[Sample], f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
    let (e, u) = (&out[0].1, &out[1].1);
    let cpu = |s: &Sample| s.user_us + s.sys_us;
    let saved = med(e, cpu) - med(u, cpu);
    println!(
        "\nmedians: epoll {:.2} µs/req ({:.0} req/s), io_uring {:.2} µs/req ({:.0} req/s); io_uring saves {saved:.2} µs per request (keep threshold: 2 µs)",
        med(e, cpu),
        med(e, |s| s.rps),
        med(u, cpu),
        med(u, |s| s.rps)
    );
    let case = |name: &str, metric: &str, value: f64, baseline: f64| {
        serde_json::json!({
            "case": name, "metric": metric, "unit": "µs/request", "value": value,
            "baseline": "epoll + read/write", "baseline_value": baseline,
            "ratio": if baseline > 0.0 { value / baseline } else { 0.0 },
        })
    };
    let cases = vec![
        case(
            "relay CPU per request, io_uring vs epoll",
            "median",
            med(u, cpu),
            med(e, cpu),
        ),
        case(
            "relay kernel CPU per request, io_uring vs epoll",
            "median",
            med(u, |s| s.sys_us),
            med(e, |s| s.sys_us),
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("uring.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&serde_json::json!({"machine": machine(), "cases": cases}))?,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
