//! Makes sure the eBPF toolchain is present: nightly with rust-src, and a
//! bpf-linker built against that nightly's own LLVM. Idempotent, and fast
//! (two version probes) when everything is already there.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};

use crate::exec;

/// What `rustc +nightly -vV` says about itself.
pub struct Nightly {
    /// e.g. `1.97.0-nightly`.
    pub release: String,
    /// e.g. `22.1.4`.
    pub llvm: String,
    /// The toolchain's root folder.
    pub sysroot: PathBuf,
}

impl Nightly {
    fn llvm_major(&self) -> &str {
        self.llvm.split('.').next().unwrap_or(&self.llvm)
    }
}

/// Probes the nightly toolchain the machine carries.
pub fn nightly() -> anyhow::Result<Nightly> {
    let vv = exec::output(
        Command::new("rustc")
            .args(["+nightly", "-vV"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context(
        "the nightly toolchain is required to build eBPF (rustup toolchain install nightly)",
    )?;
    let field = |k: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    let release = field("release:").context("rustc -vV printed no release")?;
    let llvm = field("LLVM version:").context("rustc -vV printed no LLVM version")?;
    let sysroot = exec::output(
        Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    Ok(Nightly {
        release,
        llvm,
        sysroot: PathBuf::from(sysroot.trim()),
    })
}

/// Installs rust-src into nightly if missing: first with rustup, then from
/// the copy in `../shared/toolchain/` when the download fails.
pub fn ensure_rust_src(n: &Nightly) -> anyhow::Result<()> {
    let rustlib = n.sysroot.join("lib/rustlib");
    if rustlib.join("src/rust/library/core/Cargo.toml").is_file() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    let via_rustup = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status();
    if matches!(via_rustup, Ok(s) if s.success())
        && rustlib.join("src/rust/library/core/Cargo.toml").is_file()
    {
        return Ok(());
    }
    let shared = exec::workspace_root().join("../shared/toolchain");
    let tarball = std::fs::read_dir(&shared)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("rust-src-") && f.ends_with(".tar.xz"))
        })
        .with_context(|| {
            format!(
                "rustup could not add rust-src and {} has no rust-src tarball",
                shared.display()
            )
        })?;
    eprintln!("xtask: unpacking {}", tarball.display());
    exec::run(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&rustlib),
    )?;
    let components = rustlib.join("components");
    let listed = std::fs::read_to_string(&components).unwrap_or_default();
    if !listed.lines().any(|l| l.trim() == "rust-src") {
        std::fs::write(
            &components,
            format!("{}rust-src\n", ensure_newline(&listed)),
        )?;
    }
    Ok(())
}

fn ensure_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// Installs bpf-linker linked against the nightly's own libLLVM unless a
/// working one is already on PATH.
///
/// The linker must use the same LLVM major as rustc's bitcode; building it
/// against the toolchain's shared libLLVM guarantees that without a system
/// LLVM. The prefix folder is kept under ~/.cache/xlb because the binary's
/// rpath points into it.
pub fn ensure_bpf_linker(n: &Nightly) -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let major = n.llvm_major();
    let lib_name = std::fs::read_dir(n.sysroot.join("lib"))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|f| f.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}/lib", n.sysroot.display()))?;
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(format!(".cache/xlb/llvm-{major}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let target = n.sysroot.join("lib").join(&lib_name);
    for link in ["libLLVM.so".to_string(), lib_name.clone()] {
        let path = lib.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&target, &path)
            .with_context(|| format!("linking {}", path.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker against nightly {} LLVM {} (about a minute)",
        n.release, n.llvm
    );
    exec::run(
        exec::cargo(None)
            .args([
                "install",
                "bpf-linker",
                "--version",
                "~0.13",
                "--no-default-features",
            ])
            .arg("--features")
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}
