//! `cargo xtask build --release --pgo`: the `xlb` binary built with a
//! profile of its own proxy under load (profile-guided optimisation).
//!
//! Why: in callgrind's cache simulation of one proxied HTTP/1.1 GET
//! (docs/bench/l7.md), the plain release build missed the first-level
//! instruction cache 1 710 times per request, nginx 748 times: xlb's hot
//! path is spread over ~110 KiB of code (async state machines with their
//! cold branches inlined beside the hot ones). With a profile, LLVM lays
//! the hot blocks out together and inlines by measured counts. Trained on
//! the mix below, with the plain HTTP/1.1 requests on their own copy of
//! the request path (`lb-userspace/src/l7/lane.rs`), a GET misses 830
//! times and runs 19 474 instructions (25 985 without the profile).
//!
//! The steps, each in its own folder under `target/pgo/` so the plain
//! build in `target/release/` is left alone:
//! 1. an instrumented build (`-Cprofile-generate`) in `instrumented/`;
//! 2. the training run: `bench l7` in its training mode
//!    (`XLB_BENCH_TRAIN=1`) drives that binary over HTTP/1.1 (GET and
//!    POST), HTTP/2+TLS, and with rate limits, metrics and the access log
//!    on, each for a few seconds, against the bench's nginx backend; every
//!    xlb process writes its counts into `raw/` when it exits;
//! 3. `llvm-profdata merge` (from rustup's `llvm-tools`, the same LLVM as
//!    rustc) into `xlb.profdata`;
//! 4. the optimised build (`-Cprofile-use`) in `optimized/`.
//!
//! Paths the training does not run (the cache, WebSockets, plugins, gRPC)
//! are compiled as cold code: still correct, laid out away from the hot
//! path.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{build, deps, exec};

/// Builds the profile-guided `xlb` and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    deps::ensure_apt(deps::BUILD_PACKAGES)?;
    deps::ensure_apt(deps::TEST_PACKAGES)?;
    deps::ensure_apt(deps::BENCH_PACKAGES)?;
    build::ebpf()?;
    let profdata_tool = llvm_profdata()?;
    let root = exec::target_dir().join("pgo");
    let raw = root.join("raw");
    // Counts of an earlier training would be merged with this one's.
    let _ = std::fs::remove_dir_all(&raw);
    std::fs::create_dir_all(&raw)?;

    let instrumented = xlb_build(
        &root.join("instrumented"),
        &format!("-Cprofile-generate={}", raw.display()),
    )?;
    exec::run(
        exec::cargo(None)
            .current_dir(exec::workspace_root())
            .args(["bench", "--package", "xlb-tests", "--bench", "l7"])
            .env("XLB_BIN", &instrumented)
            .env("XLB_BENCH_TRAIN", "1"),
    )
    .context("the training run failed")?;
    let raws: Vec<PathBuf> = std::fs::read_dir(&raw)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if raws.is_empty() {
        bail!(
            "the training run left no profile in {}: did xlb exit cleanly?",
            raw.display()
        );
    }
    let profdata = root.join("xlb.profdata");
    exec::run(
        Command::new(&profdata_tool)
            .arg("merge")
            .arg("-o")
            .arg(&profdata)
            .args(&raws),
    )?;
    xlb_build(
        &root.join("optimized"),
        &format!("-Cprofile-use={}", profdata.display()),
    )
}

/// Builds the release `xlb` into `target_dir` with `rustflags`.
fn xlb_build(target_dir: &Path, rustflags: &str) -> anyhow::Result<PathBuf> {
    exec::run(
        build::xlb_command(true)
            .env("CARGO_TARGET_DIR", target_dir)
            // The eBPF object stays where `build-ebpf` put it.
            .env(
                "XLB_EBPF_OBJECT",
                exec::target_dir().join("ebpf/bpfel-unknown-none/release/lb-ebpf"),
            )
            .env("RUSTFLAGS", rustflags),
    )?;
    Ok(target_dir.join("release").join("xlb"))
}

/// The `llvm-profdata` of the toolchain that builds xlb (rustup's
/// `llvm-tools` component, added when missing).
fn llvm_profdata() -> anyhow::Result<PathBuf> {
    let sysroot = exec::output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let vv = exec::output(Command::new("rustc").arg("-vV"))?;
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(str::trim)
        .context("rustc -vV printed no host")?;
    let tool = PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !tool.is_file() {
        eprintln!("xtask: installing rustup's llvm-tools (llvm-profdata)");
        exec::run(Command::new("rustup").args(["component", "add", "llvm-tools"]))
            .context("a profile-guided build needs llvm-profdata")?;
    }
    if !tool.is_file() {
        bail!(
            "{} is still missing after adding llvm-tools",
            tool.display()
        );
    }
    Ok(tool)
}
