//! `cargo xtask bench NAME`: build, then run the named benchmark (a
//! `harness = false` bench of the xlb-tests crate). Each prints a table and
//! writes `target/bench/NAME.json` (see DESIGN.md for the format).
//!
//! `l7` measures the profile-guided build (`cargo xtask build --release
//! --pgo`), the one README.md names for production, since that is the
//! binary users compare with nginx and HAProxy; `XLB_BENCH_PGO=0` measures
//! the plain release build instead (one build instead of two and a
//! training run, for iterating on the code).
use crate::{build, deps, exec, pgo};

/// Benchmarks that exist.
pub const NAMES: &[&str] = &["l4", "l7", "config", "plugins", "uring"];

pub fn run(name: &str) -> anyhow::Result<()> {
    if !NAMES.contains(&name) {
        anyhow::bail!("unknown benchmark `{name}`; known: {}", NAMES.join(", "));
    }
    deps::ensure_apt(deps::TEST_PACKAGES)?;
    deps::ensure_apt(deps::BENCH_PACKAGES)?;
    let peers = if name == "config" {
        deps::ensure_pypi_peers()
    } else {
        None
    };
    let pgo = name == "l7" && std::env::var("XLB_BENCH_PGO").map_or(true, |v| v.trim() != "0");
    let xlb = match pgo {
        true => pgo::build()?,
        false => build::all(true)?,
    };
    let mut cmd = exec::cargo(None);
    cmd.current_dir(exec::workspace_root())
        .args(["bench", "--package", "xlb-tests", "--bench", name])
        .env("XLB_BIN", &xlb);
    if let Some(dir) = peers {
        cmd.env("XLB_BENCH_PEER_BIN", dir);
    }
    exec::run(&mut cmd)
}
