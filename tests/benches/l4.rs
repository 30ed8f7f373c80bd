//! `cargo xtask bench l4`: the XDP balancer's cost per packet, measured with
//! BPF_PROG_TEST_RUN in live-frames mode on a veth (each repetition gets a
//! fresh copy of the frame and the verdict is carried out: `XDP_TX` really
//! transmits), as a ratio to a bare MAC-swap `XDP_TX` program measured the
//! same way in the same run.
//!
//! Cases: conntrack hit and new flow, DSR and IPIP, IPv4 and IPv6, IPv4 in
//! IPv6, a DSR hit redirected to a second NIC (`XDP_REDIRECT` through the
//! device map into another veth), an echo request answered by XDP, and a
//! non-VIP packet passed to the stack; then, with the connection table
//! filled with 10⁶ flows, the IPIP hit again for one flow and for a
//! different flow every packet (cold). "New flow" runs with the flood guard
//! set to zero inserts, so every repetition misses the connection table and
//! is placed by the Maglev table (the insert itself is not timed: one test
//! run repeats one frame, and only its first repetition could insert).
//!
//! Every case is also timed program-only (BPF_PROG_TEST_RUN without live
//! frames: no transmit), the only mode on kernels that refuse live frames.
//! There every repetition runs on the previous one's buffer, so xlb and
//! Katran are timed through `_undo` entry points that restore the frame
//! head and give back the head room an encapsulation took; the bare
//! baseline is timed with and without that one helper call, and every
//! repetition is checked (outcome counters, the buffer left, one more run
//! on it).
#[path = "l4/katran.rs"]
mod katran;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Context as _;
use aya::{
    maps::{Array, DevMap, HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use etherparse::PacketBuilder;
use lb_common::{
    backend::{BackendMeta, TxPort, BACKEND_F_ACTIVE, BACKEND_F_REDIRECT, BACKEND_F_V6},
    conntrack::{ConnValue, FlowKeyV4},
    counters::{GlobalCounters, PacketCounter},
    flow::{wire_addr_v4, wire_addr_v6, FlowKey},
    maglev, maps,
    settings::{Settings, SETTINGS_F_IPIP_SRC_FROM_FLOW, SETTINGS_F_NO_PORT_WILDCARDS},
    vip::{VipKey, VipMeta, FAMILY_V4, FAMILY_V6, VIP_MODE_DSR, VIP_MODE_IPIP},
};
use xlb_tests::{
    netns::{veth, Netns},
    privilege::privileged,
};

const M: u32 = 65537;
const MAX_VIPS: u32 = 8;
/// Repetitions per measurement and measurements per case (median taken).
const REPEAT: u32 = 1_000_000;
const TRIALS: usize = 9;
/// Program-only trials per case: more than live ones, because each is
/// short (no transmit) and the spread on a shared 2-vCPU machine is wide.
const PROGRAM_TRIALS: usize = 21;
/// Frames per live-frames batch (the kernel's default is 64).
const BATCH: u32 = 64;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: u32,
    /// The program rewrites the IP header in place (echo reply): restore
    /// the frame's first 64 bytes before each repetition, not just 14.
    restore_64: bool,
    /// Cycle the IPv4 source through this many addresses from the frame's
    /// (a different flow each packet).
    vary: u32,
    /// Katran's balancer runs the same frame in the same trials (IPIP
    /// cases: Katran has no DSR mode).
    katran: bool,
}

/// Flows in the large connection table.
const COLD_FLOWS: u32 = 1_000_000;
/// Connection-table capacity: room for the cold flows.
const CONNTRACK_ENTRIES: u32 = 1 << 21;

fn main() {
    if !privileged("bench l4") {
        eprintln!("bench l4: not measured (needs root)");
        std::process::exit(1);
    }
    if let Err(e) = run() {
        eprintln!("bench l4 could not measure: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let ns = Netns::new("bench")?;
    veth(&ns, "bench0", &ns, "bench1")?;
    // The second NIC: redirected frames leave by bench2 towards bench3.
    veth(&ns, "bench2", &ns, "bench3")?;
    let ifindex = ns.ifindex("bench0")?;
    let second = (ns.ifindex("bench2")?, ns.mac("bench2")?);
    let results = ns.enter(move || measure(ifindex, second))??;
    if std::env::var_os("XLB_BENCH_XLATED").is_some() {
        return Ok(());
    }
    report(&results)
}

struct Row {
    case: String,
    /// Live-frames times (xlb, bare, Katran), where the kernel allows them.
    live: Option<Live>,
    /// Program-only times, measured on every kernel.
    program: Program,
}

struct Live {
    ns: f64,
    baseline_ns: f64,
    /// Katran's time for the same frame in the same trials.
    katran_ns: Option<f64>,
}

/// Program-only medians (ns/packet) and the per-trial differences they
/// come from: `bare` is the MAC swap alone, `bare_undo` the MAC swap with
/// the head undo both balancers' program-only entry points pay (one
/// `bpf_xdp_adjust_head`), so "above bare" is `xlb - bare_undo`.
struct Program {
    bare: f64,
    bare_undo: f64,
    xlb: f64,
    katran: Option<f64>,
    /// xlb − bare_undo per trial.
    xlb_above: Vec<f64>,
    /// Katran − bare_undo per trial.
    katran_above: Vec<f64>,
}

fn measure(ifindex: u32, second: (u32, [u8; 6])) -> anyhow::Result<Vec<Row>> {
    // One CPU for the whole run: BPF_PROG_TEST_RUN runs on the calling
    // thread's CPU, and migrations between trials add noise to both sides.
    let mut cpus = nix::sched::CpuSet::new();
    let last = std::thread::available_parallelism()
        .map(|n| n.get() - 1)
        .unwrap_or(0);
    cpus.set(last)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus)?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::MAGLEV, MAX_VIPS * 2 * M)
        .map_max_entries(maps::VIPS, MAX_VIPS * 3)
        .map_max_entries(maps::CONNTRACK, CONNTRACK_ENTRIES)
        .map_max_entries(maps::CONNTRACK_V4, CONNTRACK_ENTRIES)
        .load(xlb::datapath::EBPF_OBJECT)?;
    for name in [
        maps::XDP_PROGRAM,
        "xlb_bench_swap",
        "xlb_bench_balancer",
        "xlb_bench_sink",
        "xlb_bench_swap_undo",
        "xlb_bench_balancer_undo",
    ] {
        let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    // XDP_TX out of bench0 lands on bench1. veth only accepts XDP frames
    // when the receiving end runs XDP (or has GRO on); an XDP_DROP program
    // there makes the transmit real while adding as little as possible to
    // both sides of the ratio (GRO would push every frame up the stack).
    let sink: &mut Xdp = ebpf
        .program_mut("xlb_bench_sink")
        .context("sink")?
        .try_into()?;
    sink.attach("bench1", aya::programs::XdpMode::Driver)
        .context("attaching the sink to bench1")?;
    sink.attach("bench3", aya::programs::XdpMode::Driver)
        .context("attaching the sink to bench3")?;
    let (cases, cold, peer) = setup(&mut ebpf, second)?;
    let mut katran = katran::Katran::load(&peer.backends, &peer.vips, peer.gateway)?;
    print_sizes(&ebpf, &katran)?;
    if let Some(dir) = std::env::var_os("XLB_BENCH_XLATED") {
        dump_xlated(&ebpf, &katran, std::path::Path::new(&dir))?;
        return Ok(Vec::new());
    }

    let baseline_frame = cases[0].frame.clone();
    let live = live_frames_allowed(&ebpf, &baseline_frame, ifindex)?;
    let mut rows = Vec::new();
    for (i, case) in cases.iter().chain(&cold).enumerate() {
        if i == cases.len() {
            let t = std::time::Instant::now();
            let n = fill_conntrack(&mut ebpf, &case.frame)?;
            eprintln!(
                "connection table filled: {n} entries in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        // Check the verdict first: a benchmark of the wrong path is worse
        // than none.
        let verdict = run_single(&ebpf, maps::XDP_PROGRAM, &case.frame)?.0;
        anyhow::ensure!(
            verdict == case.expect,
            "{}: xlb_xdp returned {verdict}, expected {}",
            case.name,
            case.expect
        );
        // The timed program restores this head before each run (see
        // lb-ebpf/src/bench.rs: 64 bytes, then how to restore and cycle).
        let mut head = [0u64; 10];
        for (w, chunk) in head.iter_mut().zip(case.frame.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        let src = u32::from_be_bytes([
            case.frame[26],
            case.frame[27],
            case.frame[28],
            case.frame[29],
        ]);
        head[8] = case.restore_64 as u64 | (case.vary as u64) << 32;
        head[9] = src as u64;
        let mut hm: Array<&mut MapData, [u64; 10]> =
            Array::try_from(ebpf.map_mut("BENCH_HEAD").context("BENCH_HEAD")?)?;
        hm.set(0, head, 0)?;
        if case.katran {
            katran.set_head(&case.frame)?;
            check_katran(&katran, case, &peer)?;
        }
        let mut ours = Vec::new();
        let mut base = Vec::new();
        let mut peer_ns = Vec::new();
        for _ in 0..if live { TRIALS } else { 0 } {
            base.push(run_live(&ebpf, "xlb_bench_swap", &baseline_frame, ifindex)?);
            ours.push(run_live(&ebpf, "xlb_bench_balancer", &case.frame, ifindex)?);
            if case.katran {
                peer_ns.push(run_live(
                    katran.ebpf(),
                    katran::PROGRAM,
                    &case.frame,
                    ifindex,
                )?);
            }
        }
        if std::env::var_os("XLB_BENCH_DEBUG").is_some() {
            let out = std::process::Command::new("ip")
                .args(["-s", "-j", "link", "show"])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            for l in v.as_array().into_iter().flatten() {
                eprintln!(
                    "{}: {} rx {} tx {} rxdrop {} txdrop {}",
                    case.name,
                    l["ifname"],
                    l["stats64"]["rx"]["packets"],
                    l["stats64"]["tx"]["packets"],
                    l["stats64"]["rx"]["dropped"],
                    l["stats64"]["tx"]["dropped"]
                );
            }
        }
        let program = program_only(&ebpf, &katran, case, &peer, &baseline_frame)?;
        rows.push(Row {
            case: case.name.to_string(),
            live: live.then(|| Live {
                ns: median(ours),
                baseline_ns: median(base),
                katran_ns: case.katran.then(|| median(peer_ns)),
            }),
            program,
        });
    }
    Ok(rows)
}

/// Times `case` program-only (BPF_PROG_TEST_RUN without live frames, no
/// transmit: every repetition runs on the previous one's buffer), in
/// interleaved trials of the bare swap, the bare swap with the head undo,
/// xlb's and (IPIP cases) Katran's `_undo` entry points, checking every
/// balancer run (see [`check_program_only`]): a case whose repetitions did
/// not all take the intended path is an error, not a number.
fn program_only(
    ebpf: &Ebpf,
    katran: &katran::Katran,
    case: &Case,
    peer: &Peer,
    baseline_frame: &[u8],
) -> anyhow::Result<Program> {
    let ours = |f: &[u8]| run_single(ebpf, "xlb_bench_balancer", f);
    let theirs = |f: &[u8]| run_single(katran.ebpf(), katran::PROGRAM, f);
    let fresh = ours(&case.frame)?;
    let reason = xlb_outcome(ebpf, 1, case.frame.len(), || ours(&case.frame))?;
    let katran_vip = if case.katran {
        let inner_dst = inner_dst(&case.frame)?;
        let vip = peer
            .vips
            .iter()
            .find(|v| v.addr == inner_dst)
            .context("Katran case without a Katran VIP")?;
        Some((vip.num, theirs(&case.frame)?))
    } else {
        None
    };
    let (mut b, mut bu, mut o, mut k) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PROGRAM_TRIALS {
        for (name, v) in [("xlb_bench_swap", &mut b), ("xlb_bench_swap_undo", &mut bu)] {
            let r = run_program_only(ebpf, name, baseline_frame)?;
            anyhow::ensure!(r.verdict == 3, "{name} returned {}", r.verdict);
            v.push(r.ns);
        }
        let mut run = None;
        let got = xlb_outcome(ebpf, REPEAT as u64, case.frame.len(), || {
            let r = run_program_only(ebpf, "xlb_bench_balancer_undo", &case.frame)?;
            let v = r.verdict;
            run = Some(r);
            Ok((v, Vec::new()))
        })?;
        anyhow::ensure!(
            got == reason,
            "{}: program-only repetitions counted under outcome {got}, a fresh frame under {reason}",
            case.name
        );
        let run = run.context("no run")?;
        check_program_only("xlb", case, &fresh, &run, ours)?;
        o.push(run.ns);
        if let Some((num, fresh)) = &katran_vip {
            let before = katran.counters(*num)?;
            let run = run_program_only(katran.ebpf(), katran::PROGRAM_UNDO, &case.frame)?;
            let after = katran.counters(*num)?;
            anyhow::ensure!(
                after.0 - before.0 == REPEAT as u64 && after.1 == before.1,
                "{}: Katran counted {} packets for the VIP and {} encapsulation failures \
                 in {REPEAT} program-only repetitions",
                case.name,
                after.0 - before.0,
                after.1 - before.1
            );
            check_program_only("Katran", case, fresh, &run, theirs)?;
            k.push(run.ns);
        }
    }
    let xlb_above = o.iter().zip(&bu).map(|(x, b)| x - b).collect();
    let katran_above = k.iter().zip(&bu).map(|(x, b)| x - b).collect();
    Ok(Program {
        bare: median(b),
        bare_undo: median(bu),
        xlb: median(o),
        katran: case.katran.then(|| median(k)),
        xlb_above,
        katran_above,
    })
}

/// The inner destination address of a case's frame.
fn inner_dst(frame: &[u8]) -> anyhow::Result<IpAddr> {
    Ok(match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => IpAddr::from(<[u8; 4]>::try_from(&frame[30..34])?),
        _ => IpAddr::from(<[u8; 16]>::try_from(&frame[38..54])?),
    })
}

/// Runs `f` and returns the one outcome (xlb `Reason` index) xlb counted
/// during it; it must have counted exactly `packets` packets there, of
/// `len` bytes each (every repetition saw the original frame, not one
/// grown by the previous repetition's encapsulation), and nothing else.
fn xlb_outcome(
    ebpf: &Ebpf,
    packets: u64,
    len: usize,
    f: impl FnOnce() -> anyhow::Result<(u32, Vec<u8>)>,
) -> anyhow::Result<usize> {
    let before = xlb_reasons(ebpf)?;
    f()?;
    let after = xlb_reasons(ebpf)?;
    let moved: Vec<(usize, u64, u64)> = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, b.packets - a.packets, b.bytes - a.bytes))
        .collect();
    match moved[..] {
        [(i, p, b)] if p == packets && b == packets * len as u64 => Ok(i),
        _ => anyhow::bail!(
            "xlb counted (outcome, packets, bytes) {moved:?} for {packets} packets of {len} bytes"
        ),
    }
}

/// xlb's outcome counters summed over CPUs.
fn xlb_reasons(ebpf: &Ebpf) -> anyhow::Result<Vec<PacketCounter>> {
    let m: PerCpuArray<&MapData, GlobalCounters> =
        PerCpuArray::try_from(ebpf.map(maps::COUNTERS).context("COUNTERS")?)?;
    let mut sum = GlobalCounters::default();
    for c in m.get(&0, 0)?.iter() {
        sum.add(c);
    }
    Ok(sum.reasons.to_vec())
}

/// After a program-only run of an `_undo` entry point on `case.frame`: the
/// last repetition returned the case's verdict, the buffer is back at the
/// original position and length and holds what one fresh run leaves
/// there (`fresh`: verdict and output of the entry point without undo on
/// the original frame; with an encapsulation, its last `frame.len()`
/// bytes), and one more repetition without the undo (`again`) turns that
/// buffer into exactly the fresh run's output frame. With a cycle of
/// sources (cold case) the outer header depends on the source, so only
/// the inner packet (source aside) is compared.
fn check_program_only(
    side: &str,
    case: &Case,
    fresh: &(u32, Vec<u8>),
    run: &ProgramRun,
    again: impl Fn(&[u8]) -> anyhow::Result<(u32, Vec<u8>)>,
) -> anyhow::Result<()> {
    let name = case.name;
    let (f, e) = (&case.frame, &fresh.1);
    anyhow::ensure!(
        fresh.0 == case.expect && run.verdict == case.expect,
        "{name}: {side} returned {} once and {} after {REPEAT} program-only repetitions, expected {}",
        fresh.0,
        run.verdict,
        case.expect
    );
    anyhow::ensure!(
        run.out.len() == f.len() && e.len() >= f.len(),
        "{name}: {side} left {} bytes after program-only repetitions ({} in, {} out once)",
        run.out.len(),
        f.len(),
        e.len()
    );
    let (v, e2) = again(&run.out)?;
    anyhow::ensure!(
        v == case.expect,
        "{name}: {side} returned {v} on the buffer left"
    );
    if case.vary == 0 {
        anyhow::ensure!(
            run.out[..] == e[e.len() - f.len()..],
            "{name}: {side}'s buffer after program-only repetitions differs from one fresh run's"
        );
        anyhow::ensure!(
            e2 == *e,
            "{name}: {side}'s output from the buffer left differs from a fresh frame's"
        );
    } else {
        let masked = |b: &[u8]| {
            let mut b = b[14..].to_vec();
            b[12..16].fill(0);
            b
        };
        anyhow::ensure!(
            masked(&run.out) == masked(f) && e2.len() == e.len(),
            "{name}: {side}'s inner packet changed over program-only repetitions"
        );
    }
    Ok(())
}

/// The timed programs' sizes after the verifier's rewrites (translated
/// instructions, 8 bytes each): what the two balancers ask the CPU to hold,
/// printed next to the times.
fn print_sizes(ebpf: &Ebpf, katran: &katran::Katran) -> anyhow::Result<()> {
    for (what, e, name) in [
        ("xlb", ebpf, "xlb_bench_balancer"),
        ("katran", katran.ebpf(), katran::PROGRAM),
        ("xlb", ebpf, "xlb_bench_balancer_undo"),
        ("katran", katran.ebpf(), katran::PROGRAM_UNDO),
    ] {
        let p: &Xdp = e.program(name).context(name)?.try_into()?;
        let bytes = p.info()?.size_translated().unwrap_or(0);
        eprintln!("{what}: {name}: {} translated instructions", bytes / 8);
    }
    Ok(())
}

/// With `XLB_BENCH_XLATED=DIR`, writes `bpftool prog dump xlated` of both
/// timed programs into DIR (`xlb.txt`, `katran.txt`) instead of measuring:
/// for reading where each spends its instructions on a path.
fn dump_xlated(ebpf: &Ebpf, katran: &katran::Katran, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, e, name) in [
        ("xlb.txt", ebpf, "xlb_bench_balancer"),
        ("katran.txt", katran.ebpf(), katran::PROGRAM),
    ] {
        let p: &Xdp = e.program(name).context(name)?.try_into()?;
        let id = p.info()?.id().to_string();
        let out = std::process::Command::new("bpftool")
            .args(["prog", "dump", "xlated", "id", &id])
            .output()
            .context("running bpftool")?;
        anyhow::ensure!(out.status.success(), "bpftool failed for {name}");
        std::fs::write(dir.join(file), &out.stdout)?;
    }
    eprintln!("translated programs written to {}", dir.display());
    Ok(())
}

/// Whether this kernel lets the bench run frames live
/// (`BPF_F_TEST_XDP_LIVE_FRAMES`). Some refuse it with `EPERM` even to
/// root (seen on a Firecracker guest kernel, 6.18.44-fc); there the bench
/// says so and reports the program-only times alone (no transmit), which
/// it measures on every kernel.
fn live_frames_allowed(ebpf: &Ebpf, frame: &[u8], ifindex: u32) -> anyhow::Result<bool> {
    match run_live(ebpf, "xlb_bench_swap", frame, ifindex) {
        Ok(_) => Ok(true),
        Err(e) => {
            let eperm = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                    == Some(nix::libc::EPERM)
                    || c.to_string().contains("Operation not permitted")
            });
            if !eperm {
                return Err(e);
            }
            eprintln!(
                "bench l4: this kernel refuses live frames (BPF_F_TEST_XDP_LIVE_FRAMES: {e:#}); \
                 measuring the programs alone (no transmit), with the head undo"
            );
            println!(
                "LIVE FRAMES REFUSED BY THIS KERNEL: program-only times only (no transmit); \
                 the live floors (dsr <= 2.0x bare, ipip <= 3.0x bare) are not measured"
            );
            Ok(false)
        }
    }
}

/// Runs `name` on `frame` REPEAT times in live-frames mode as if received
/// on `ifindex`; returns nanoseconds per packet.
fn run_live(ebpf: &Ebpf, name: &str, frame: &[u8], ifindex: u32) -> anyhow::Result<f64> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex (u32 each).
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let p: &Xdp = ebpf.program(name).context("program")?.try_into()?;
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx[..]),
        repeat: REPEAT,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..Default::default()
    })?;
    Ok(r.duration.as_nanos() as f64)
}

/// One program-only test run: time per repetition, the last repetition's
/// verdict and the buffer it left.
struct ProgramRun {
    ns: f64,
    verdict: u32,
    out: Vec<u8>,
}

/// Runs `name` on `frame` REPEAT times in the ordinary (not live) mode: the
/// program alone, no transmit. Each repetition runs on the previous one's
/// buffer (bytes and data pointers), so a rewriting program must undo its
/// rewrite itself (the `_undo` entry points).
fn run_program_only(ebpf: &Ebpf, name: &str, frame: &[u8]) -> anyhow::Result<ProgramRun> {
    test_run(ebpf, name, frame, REPEAT)
}

/// Runs `name` once (not live) on `frame`: its verdict and output frame.
fn run_single(ebpf: &Ebpf, name: &str, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let r = test_run(ebpf, name, frame, 1)?;
    Ok((r.verdict, r.out))
}

/// One BPF_PROG_TEST_RUN of `name` on `frame` without live frames,
/// `repeat` times.
fn test_run(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<ProgramRun> {
    let p: &Xdp = ebpf.program(name).context(name.to_string())?.try_into()?;
    let mut out = vec![0u8; frame.len() + 256];
    let r = p.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok(ProgramRun {
        ns: r.duration.as_nanos() as f64,
        verdict: r.return_value,
        out,
    })
}

/// Runs Katran once (not live) on the case's frame: it must transmit, to
/// the primed backend on a hit and to one of the VIP's backends on a new
/// flow (a peer measured on a wrong path is no peer).
fn check_katran(k: &katran::Katran, case: &Case, peer: &Peer) -> anyhow::Result<()> {
    let (verdict, out) = run_single(k.ebpf(), katran::PROGRAM, &case.frame)?;
    anyhow::ensure!(
        verdict == 3,
        "{}: Katran returned {verdict}, expected XDP_TX",
        case.name
    );
    let inner_dst = inner_dst(&case.frame)?;
    let outer_dst: IpAddr = match u16::from_be_bytes([out[12], out[13]]) {
        0x0800 => IpAddr::from(<[u8; 4]>::try_from(&out[30..34])?),
        0x86dd => IpAddr::from(<[u8; 16]>::try_from(&out[38..54])?),
        t => anyhow::bail!("{}: Katran sent ethertype {t:#x}", case.name),
    };
    let vip = peer
        .vips
        .iter()
        .find(|v| v.addr == inner_dst)
        .context("Katran case without a Katran VIP")?;
    let sport = u16::from_be_bytes(match inner_dst {
        IpAddr::V4(_) => [case.frame[34], case.frame[35]],
        IpAddr::V6(_) => [case.frame[54], case.frame[55]],
    });
    let allowed: Vec<IpAddr> = if sport == vip.hit.1 {
        vec![peer.backends[vip.hit.2 as usize]]
    } else {
        vip.table
            .iter()
            .map(|b| peer.backends[*b as usize])
            .collect()
    };
    anyhow::ensure!(
        allowed.contains(&outer_dst),
        "{}: Katran encapsulated towards {outer_dst}, not {allowed:?}",
        case.name
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn v4_frame(dst: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([198, 51, 100, 7], dst.octets(), 64)
        .tcp(sport, 80, 1, 64240)
        .ack(1)
        .write(&mut f, &[0u8; 64])
        .unwrap();
    f
}

fn v6_frame(dst: Ipv6Addr, sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    let src: Ipv6Addr = "2001:db8:c::7".parse().unwrap();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, 80, 1, 64240)
        .ack(1)
        .write(&mut f, &[0u8; 64])
        .unwrap();
    f
}

fn flow_of(frame_src: IpAddr, dst: IpAddr, sport: u16) -> FlowKey {
    match (frame_src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(
            wire_addr_v4(s.octets()),
            wire_addr_v4(d.octets()),
            sport.to_be(),
            80u16.to_be(),
            6,
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => FlowKey::v6(
            wire_addr_v6(s.octets()),
            wire_addr_v6(d.octets()),
            sport.to_be(),
            80u16.to_be(),
            6,
        ),
        _ => unreachable!("same family"),
    }
}

/// Four VIPs (DSR/IPIP × v4/v6) with three backends each, an IPv4 VIP
/// with the IPv6 backends (IPv4 in IPv6), a DSR VIP whose backend is
/// behind the second NIC, an echo entry; the connection table primed for
/// the "hit" flows, and the flood guard at zero so other flows are always
/// new. Returns the cases, then the cases run after the table is filled.
/// What Katran is given: the same backends (in xlb's backend-array order),
/// the IPIP VIPs with xlb's Maglev tables and primed flows, and the next
/// hop's MAC.
struct Peer {
    backends: Vec<IpAddr>,
    vips: Vec<katran::Vip>,
    gateway: [u8; 6],
}

fn setup(ebpf: &mut Ebpf, second: (u32, [u8; 6])) -> anyhow::Result<(Vec<Case>, Vec<Case>, Peer)> {
    let mut settings: Array<&mut MapData, Settings> =
        Array::try_from(ebpf.map_mut(maps::SETTINGS).context("SETTINGS")?)?;
    settings.set(
        0,
        Settings {
            maglev_size: M,
            flags: SETTINGS_F_IPIP_SRC_FROM_FLOW | SETTINGS_F_NO_PORT_WILDCARDS,
            ipip_src_v4: wire_addr_v4([172, 16, 0, 0]),
            backend_mtu: 9000,
            ipip_src_v6: wire_addr_v6("fd00:786c:6200::".parse::<Ipv6Addr>()?.octets()),
            new_flows_per_cpu_sec: 0,
            _pad: 0,
        },
        0,
    )?;
    let v4_backends: Vec<IpAddr> = (11..14)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
        .collect();
    let v6_backends: Vec<IpAddr> = (0x11..0x14)
        .map(|i| IpAddr::V6(format!("2001:db8::{i:x}").parse().unwrap()))
        .collect();
    let far_backends: Vec<IpAddr> = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20))];
    let mut index: HashMap<IpAddr, u32> = HashMap::new();
    {
        let mut backends: Array<&mut MapData, BackendMeta> =
            Array::try_from(ebpf.map_mut(maps::BACKENDS).context("BACKENDS")?)?;
        for (i, a) in v4_backends
            .iter()
            .chain(&v6_backends)
            .chain(&far_backends)
            .enumerate()
        {
            let (addr, mut flags) = match a {
                IpAddr::V4(v) => ([wire_addr_v4(v.octets()), 0, 0, 0], BACKEND_F_ACTIVE),
                IpAddr::V6(v) => (wire_addr_v6(v.octets()), BACKEND_F_ACTIVE | BACKEND_F_V6),
            };
            if far_backends.contains(a) {
                flags |= BACKEND_F_REDIRECT;
            }
            backends.set(
                i as u32,
                BackendMeta {
                    addr,
                    flags,
                    next_hop_mac: [0x02, 0, 0, 0, 1, i as u8],
                    tx_port: 0,
                    _pad: 0,
                },
                0,
            )?;
            index.insert(*a, i as u32);
        }
    }
    {
        let mut ports: Array<&mut MapData, TxPort> =
            Array::try_from(ebpf.map_mut(maps::TX_PORTS).context("TX_PORTS")?)?;
        ports.set(
            0,
            TxPort {
                ifindex: second.0,
                mac: second.1,
                _pad: [0; 2],
            },
            0,
        )?;
        let mut dev: DevMap<&mut MapData> =
            DevMap::try_from(ebpf.map_mut(maps::TX_DEVMAP).context("TX_DEVMAP")?)?;
        dev.set(0, second.0, None, 0)?;
    }
    let vips: [(IpAddr, u32, &Vec<IpAddr>); 6] = [
        (
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
            VIP_MODE_DSR,
            &v4_backends,
        ),
        (
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)),
            VIP_MODE_IPIP,
            &v4_backends,
        ),
        (
            IpAddr::V6("2001:db8:ffff::10".parse()?),
            VIP_MODE_DSR,
            &v6_backends,
        ),
        (
            IpAddr::V6("2001:db8:ffff::11".parse()?),
            VIP_MODE_IPIP,
            &v6_backends,
        ),
        (
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 12)),
            VIP_MODE_IPIP,
            &v6_backends,
        ),
        (
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 13)),
            VIP_MODE_DSR,
            &far_backends,
        ),
    ];
    let mut peer_vips = Vec::new();
    for (row, (addr, mode, backends)) in vips.iter().enumerate() {
        let keys: Vec<Vec<u8>> = backends
            .iter()
            .map(xlb::datapath::predict::backend_key)
            .collect();
        let input: Vec<maglev::Backend<'_>> = backends
            .iter()
            .zip(&keys)
            .map(|(a, k)| maglev::Backend {
                id: index[a],
                key: k,
                weight: 1,
            })
            .collect();
        let table = maglev::build(&input, M)?;
        if *mode == VIP_MODE_IPIP {
            let client = if addr.is_ipv4() {
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
            } else {
                IpAddr::V6("2001:db8:c::7".parse()?)
            };
            peer_vips.push(katran::Vip {
                addr: *addr,
                port: 80,
                num: row as u32,
                table: table.clone(),
                hit: (client, 1000, index[&backends[1 % backends.len()]]),
            });
        }
        let mut mag: Array<&mut MapData, u32> =
            Array::try_from(ebpf.map_mut(maps::MAGLEV).context("MAGLEV")?)?;
        for (i, v) in table.iter().enumerate() {
            mag.set(row as u32 * 2 * M + i as u32, *v, 0)?;
        }
        let mut vipmap: BpfHashMap<&mut MapData, VipKey, VipMeta> =
            BpfHashMap::try_from(ebpf.map_mut(maps::VIPS).context("VIPS")?)?;
        let key = match addr {
            IpAddr::V4(a) => VipKey {
                addr: [wire_addr_v4(a.octets()), 0, 0, 0],
                port: 80u16.to_be(),
                proto: 6,
                family: FAMILY_V4,
            },
            IpAddr::V6(a) => VipKey {
                addr: wire_addr_v6(a.octets()),
                port: 80u16.to_be(),
                proto: 6,
                family: FAMILY_V6,
            },
        };
        vipmap.insert(
            key,
            VipMeta {
                index: row as u32,
                table: 0,
                mode: *mode,
                flags: 0,
            },
            0,
        )?;
    }
    // The first VIP's address answers ping.
    {
        let mut vipmap: BpfHashMap<&mut MapData, VipKey, VipMeta> =
            BpfHashMap::try_from(ebpf.map_mut(maps::VIPS).context("VIPS")?)?;
        let IpAddr::V4(a) = vips[0].0 else {
            unreachable!("an IPv4 VIP")
        };
        vipmap.insert(
            VipKey {
                addr: [wire_addr_v4(a.octets()), 0, 0, 0],
                port: 0,
                proto: 1,
                family: FAMILY_V4,
            },
            VipMeta {
                index: 0,
                table: 0,
                mode: VIP_MODE_DSR,
                flags: 0,
            },
            0,
        )?;
    }
    // Prime the connection tables for the "hit" flows (source port 1000).
    let c4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let c6: IpAddr = IpAddr::V6("2001:db8:c::7".parse()?);
    for (row, (addr, _, backends)) in vips.iter().enumerate() {
        let client = if addr.is_ipv4() { c4 } else { c6 };
        let key = flow_of(client, *addr, 1000);
        let value = ConnValue {
            backend: index[&backends[1 % backends.len()]],
            vip: row as u32,
            hash: lb_common::flow::flow_hash(&key),
        };
        if addr.is_ipv4() {
            let mut ct: BpfHashMap<&mut MapData, FlowKeyV4, ConnValue> =
                BpfHashMap::try_from(ebpf.map_mut(maps::CONNTRACK_V4).context("CONNTRACK_V4")?)?;
            ct.insert(FlowKeyV4::of(&key), value, 0)?;
        } else {
            let mut ct: BpfHashMap<&mut MapData, FlowKey, ConnValue> =
                BpfHashMap::try_from(ebpf.map_mut(maps::CONNTRACK).context("CONNTRACK")?)?;
            ct.insert(key, value, 0)?;
        }
    }
    let tx = 3; // XDP_TX
    let pass = 2; // XDP_PASS
    let v = |i: usize| vips[i].0;
    let f4 = |a: IpAddr, p| match a {
        IpAddr::V4(a) => v4_frame(a, p),
        _ => unreachable!(),
    };
    let f6 = |a: IpAddr, p| match a {
        IpAddr::V6(a) => v6_frame(a, p),
        _ => unreachable!(),
    };
    let cases = vec![
        // The first case's frame is also the baseline's input.
        Case {
            name: "dsr v4 conntrack hit",
            frame: f4(v(0), 1000),
            expect: tx,
            ..plain()
        },
        Case {
            name: "dsr v4 new flow",
            frame: f4(v(0), 2000),
            expect: tx,
            ..plain()
        },
        Case {
            name: "ipip v4 conntrack hit",
            frame: f4(v(1), 1000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "ipip v4 new flow",
            frame: f4(v(1), 2000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "dsr v6 conntrack hit",
            frame: f6(v(2), 1000),
            expect: tx,
            ..plain()
        },
        Case {
            name: "dsr v6 new flow",
            frame: f6(v(2), 2000),
            expect: tx,
            ..plain()
        },
        Case {
            name: "ipip v6 conntrack hit",
            frame: f6(v(3), 1000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "ipip v6 new flow",
            frame: f6(v(3), 2000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "ipip v4-in-v6 conntrack hit",
            frame: f4(v(4), 1000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "ipip v4-in-v6 new flow",
            frame: f4(v(4), 2000),
            expect: tx,
            katran: true,
            ..plain()
        },
        Case {
            name: "dsr v4 hit, redirect to 2nd NIC",
            frame: f4(v(5), 1000),
            expect: 4, // XDP_REDIRECT
            ..plain()
        },
        Case {
            name: "echo request to a VIP (reply)",
            frame: echo_frame(v(0)),
            expect: tx,
            restore_64: true,
            vary: 0,
            katran: false,
        },
        Case {
            name: "non-VIP pass (v4, to the stack)",
            frame: v4_frame(Ipv4Addr::new(192, 0, 2, 200), 3000),
            expect: pass,
            ..plain()
        },
    ];
    let cold = vec![
        Case {
            name: "ipip v4 hit, 10^6-entry table",
            frame: f4(v(1), 1000),
            expect: tx,
            ..plain()
        },
        Case {
            name: "ipip v4 hit, 10^6 entries, cold",
            frame: f4(v(1), 1000),
            expect: tx,
            restore_64: false,
            vary: COLD_FLOWS,
            katran: false,
        },
    ];
    let mut all: Vec<(u32, IpAddr)> = index.iter().map(|(a, i)| (*i, *a)).collect();
    all.sort();
    let peer = Peer {
        backends: all.into_iter().map(|(_, a)| a).collect(),
        vips: peer_vips,
        // xlb sends to each backend's own next-hop MAC; Katran to one
        // gateway: the same six bytes written either way.
        gateway: [0x02, 0, 0, 0, 1, 0],
    };
    Ok((cases, cold, peer))
}

/// A case's defaults: restore 14 bytes, one flow.
fn plain() -> Case {
    Case {
        name: "",
        frame: Vec::new(),
        expect: 0,
        restore_64: false,
        vary: 0,
        katran: false,
    }
}

/// An ICMP echo request (56 bytes of data, as `ping` sends) to `dst`.
fn echo_frame(dst: IpAddr) -> Vec<u8> {
    let IpAddr::V4(dst) = dst else {
        unreachable!("an IPv4 VIP")
    };
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([198, 51, 100, 7], dst.octets(), 64)
        .icmpv4_echo_request(0x1234, 1)
        .write(&mut f, &[0u8; 56])
        .unwrap();
    f
}

/// Fills the connection table with [`COLD_FLOWS`] flows: the flow of
/// `frame` (IPv4, to the IPIP VIP, row 1) with its source address counted
/// up from the frame's, as `restore_eth` cycles them. Returns the entries
/// the table holds afterwards.
fn fill_conntrack(ebpf: &mut Ebpf, frame: &[u8]) -> anyhow::Result<usize> {
    let mut ct: BpfHashMap<&mut MapData, FlowKeyV4, ConnValue> =
        BpfHashMap::try_from(ebpf.map_mut(maps::CONNTRACK_V4).context("CONNTRACK_V4")?)?;
    let src = u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]]);
    let dst = [frame[30], frame[31], frame[32], frame[33]];
    let sport = u16::from_be_bytes([frame[34], frame[35]]);
    for i in 0..COLD_FLOWS {
        let key = FlowKey::v4(
            wire_addr_v4(src.wrapping_add(i).to_be_bytes()),
            wire_addr_v4(dst),
            sport.to_be(),
            80u16.to_be(),
            6,
        );
        ct.insert(
            FlowKeyV4::of(&key),
            ConnValue {
                backend: i % 3,
                vip: 1,
                hash: lb_common::flow::flow_hash(&key),
            },
            0,
        )?;
    }
    Ok(ct.keys().count())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} cpus, {cpu}, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim()
    )
}

fn report(rows: &[Row]) -> anyhow::Result<()> {
    let mut cases = Vec::new();
    if rows.iter().any(|r| r.live.is_some()) {
        report_live(rows, &mut cases);
    }
    report_program_only(rows, &mut cases);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let out = serde_json::json!({"machine": machine(), "cases": cases});
    std::fs::write(dir.join("l4.json"), serde_json::to_string_pretty(&out)?)?;
    println!("wrote {}", dir.join("l4.json").display());
    Ok(())
}

/// The live-frames tables (as before program-only timing was added).
fn report_live(rows: &[Row], cases: &mut Vec<serde_json::Value>) {
    println!(
        "{:<34} {:>10} {:>12} {:>12} {:>8}",
        "case", "ns/pkt", "Mpps", "bare ns/pkt", "ratio"
    );
    let live = || {
        rows.iter()
            .filter_map(|r| Some((&r.case, r.live.as_ref()?)))
    };
    for (case, r) in live() {
        let ratio = r.ns / r.baseline_ns;
        println!(
            "{:<34} {:>10.1} {:>12.2} {:>12.1} {:>8.2}",
            case,
            r.ns,
            1e3 / r.ns,
            r.baseline_ns,
            ratio
        );
        cases.push(serde_json::json!({
            "case": case, "metric": "time per packet", "unit": "ns",
            "value": r.ns, "baseline": "bare MAC-swap XDP_TX", "baseline_value": r.baseline_ns,
            "ratio": ratio,
        }));
        cases.push(serde_json::json!({
            "case": case, "metric": "packets per second", "unit": "pps",
            "value": 1e9 / r.ns, "baseline": "bare MAC-swap XDP_TX", "baseline_value": 1e9 / r.baseline_ns,
            "ratio": r.baseline_ns / r.ns,
        }));
    }
    println!("\nKatran's balancer, same frames, same trials (above bare = ns/pkt - bare ns/pkt):");
    println!(
        "{:<34} {:>8} {:>8} {:>8} {:>12} {:>12} {:>10} {:>12}",
        "case", "xlb", "katran", "bare", "xlb above", "katran above", "xlb/katran", "above ratio"
    );
    for (case, r) in live() {
        let Some(k) = r.katran_ns else { continue };
        let (xa, ka) = (r.ns - r.baseline_ns, k - r.baseline_ns);
        println!(
            "{:<34} {:>8.1} {:>8.1} {:>8.1} {:>12.1} {:>12.1} {:>10.2} {:>12.2}",
            case,
            r.ns,
            k,
            r.baseline_ns,
            xa,
            ka,
            r.ns / k,
            xa / ka
        );
        cases.push(serde_json::json!({
            "case": case, "metric": "time per packet", "unit": "ns",
            "value": r.ns, "baseline": "Katran balancer (same trials)", "baseline_value": k,
            "ratio": r.ns / k,
        }));
        cases.push(serde_json::json!({
            "case": case, "metric": "time per packet above bare MAC-swap", "unit": "ns",
            "value": xa, "baseline": "Katran balancer above bare (same trials)", "baseline_value": ka,
            "ratio": xa / ka,
        }));
    }
    println!();
}

/// The program-only table: every case, xlb and (IPIP) Katran side by side.
fn report_program_only(rows: &[Row], cases: &mut Vec<serde_json::Value>) {
    println!(
        "program only (BPF_PROG_TEST_RUN without live frames: no transmit; {PROGRAM_TRIALS} interleaved \
         trials of {REPEAT}, medians):\n\
         bare = MAC swap; +undo = MAC swap + the one bpf_xdp_adjust_head that both balancers' \
         program-only entry points add to give back the encapsulation's head room;\n\
         above = balancer - (bare+undo) per trial, median [min..max]; ratio = xlb above / \
         katran above.\n\
         Ratios to bare here are NOT comparable with the live-frames floors (dsr <= 2.0x, \
         ipip <= 3.0x bare), which include the transmit."
    );
    println!(
        "{:<34} {:>6} {:>6} {:>7} {:>7} {:>18} {:>18} {:>6}",
        "case", "bare", "+undo", "xlb", "katran", "xlb above", "katran above", "ratio"
    );
    let spread = |v: &[f64]| {
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.1} [{lo:.0}..{hi:.0}]", median(v.to_vec()))
    };
    for r in rows {
        let p = &r.program;
        let xa = median(p.xlb_above.clone());
        let (k, ka, ratio) = match p.katran {
            Some(k) => {
                let ka = median(p.katran_above.clone());
                (
                    format!("{k:.1}"),
                    spread(&p.katran_above),
                    format!("{:.2}", xa / ka),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<34} {:>6.1} {:>6.1} {:>7.1} {:>7} {:>18} {:>18} {:>6}",
            r.case,
            p.bare,
            p.bare_undo,
            p.xlb,
            k,
            spread(&p.xlb_above),
            ka,
            ratio
        );
        let case = format!("{} (program only)", r.case);
        cases.push(serde_json::json!({
            "case": case, "metric": "time per packet", "unit": "ns",
            "value": p.xlb, "baseline": "bare MAC-swap XDP_TX + head undo (program only)",
            "baseline_value": p.bare_undo, "ratio": p.xlb / p.bare_undo,
            "bare_without_undo": p.bare,
        }));
        if let Some(k) = p.katran {
            let ka = median(p.katran_above.clone());
            cases.push(serde_json::json!({
                "case": case, "metric": "time per packet above bare MAC-swap + head undo", "unit": "ns",
                "value": xa, "baseline": "Katran above bare + head undo (same trials)",
                "baseline_value": ka, "ratio": xa / ka, "katran_ns": k,
            }));
        }
    }
    let undo: Vec<f64> = rows
        .iter()
        .map(|r| r.program.bare_undo - r.program.bare)
        .collect();
    println!(
        "head undo (bare+undo - bare), median over the cases: {:.1} ns",
        median(undo)
    );
}
