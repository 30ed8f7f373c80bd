//! Building the eBPF object and the `xlb` binary.
use std::{path::PathBuf, process::Command};

use crate::{exec, toolchain};

/// Ensures the toolchain, then builds lb-ebpf into `target/ebpf/`, where
/// lb-userspace's build script finds it.
pub fn ebpf() -> anyhow::Result<()> {
    let nightly = toolchain::nightly()?;
    toolchain::ensure_rust_src(&nightly)?;
    toolchain::ensure_bpf_linker(&nightly)?;
    let root = exec::workspace_root();
    exec::run(
        exec::cargo(Some("nightly"))
            .current_dir(root.join("lb-ebpf"))
            .args(["build", "--release", "--locked", "--target-dir"])
            .arg(exec::target_dir().join("ebpf")),
    )
}

/// Builds everything and returns the path of the `xlb` binary.
pub fn all(release: bool) -> anyhow::Result<PathBuf> {
    crate::deps::ensure_apt(crate::deps::BUILD_PACKAGES)?;
    ebpf()?;
    exec::run(&mut xlb_command(release))?;
    Ok(exec::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("xlb"))
}

/// The cargo command that builds the `xlb` binary (also the profile-guided
/// build's two builds, which add their flags and target folder).
pub fn xlb_command(release: bool) -> Command {
    let mut cmd = exec::cargo(None);
    cmd.current_dir(exec::workspace_root()).args([
        "build",
        "--package",
        "lb-userspace",
        "--bin",
        "xlb",
    ]);
    if release {
        cmd.arg("--release");
    }
    cmd
}
