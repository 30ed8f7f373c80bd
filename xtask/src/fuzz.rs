//! `cargo xtask fuzz NAME`: a long differential run. `l4` sends 10⁶ random
//! and mutated frames through the XDP balancer (BPF_PROG_TEST_RUN) and
//! through the userspace model (`tests/e2e/xdp_harness/model.rs`), and
//! fails on any disagreement, printing the seed and the packet's index so
//! that `XLB_DIFF_SEED=… XLB_DIFF_COUNT=…` replays it. The test binary is
//! the test profile's, which `cargo xtask test` has just built (10⁶ frames
//! take about 80 s here); an optimised build would first compile every
//! dependency again, which costs CI more than it saves.
use crate::{build, exec};

/// Fuzz targets that exist.
pub const NAMES: &[&str] = &["l4"];

/// Packets of a default `l4` run.
const L4_PACKETS: u64 = 1_000_000;

pub fn run(name: &str, count: Option<u64>, seed: Option<String>) -> anyhow::Result<()> {
    if !NAMES.contains(&name) {
        anyhow::bail!("unknown fuzz target `{name}`; known: {}", NAMES.join(", "));
    }
    build::ebpf()?;
    let count = count.unwrap_or(L4_PACKETS);
    let mut cmd = exec::cargo(None);
    cmd.current_dir(exec::workspace_root())
        .args([
            "test",
            "--package",
            "xlb-tests",
            "--test",
            "xdp_differential",
            "--",
            "--nocapture",
        ])
        .env("XLB_DIFF_COUNT", count.to_string());
    // A fresh seed per run explores new frames each time; it is printed
    // first so that a failing run can be replayed with `--seed`.
    let seed = seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}", t.as_nanos() as u64)
    });
    eprintln!("xtask fuzz {name}: {count} frames, seed {seed} (replay: cargo xtask fuzz {name} --count {count} --seed {seed})");
    cmd.env("XLB_DIFF_SEED", &seed);
    exec::run(&mut cmd)
}
