//! `privileged()` decides whether a privileged test runs, skips or fails:
//! root runs; anyone else skips, unless `CI` or `XLB_REQUIRE_PRIVILEGED` is
//! set (non-empty, not "0"/"false"), where the test must fail.
//!
//! Tested for real: this test binary runs itself again, filtered to
//! `child_probe`, as root and as `nobody` (uid/gid 65534) with each setting,
//! and checks how that child test ended and what it printed. Switching to
//! `nobody` needs root, so the parent tests obey the very rule under test.
use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use xlb_tests::{names, privilege::privileged};

/// Set (to "1") only in the child: without it `child_probe` does nothing.
const PROBE_ENV: &str = "XLB_PRIVILEGE_PROBE";
const REQUIRE_VARS: [&str; 2] = ["CI", "XLB_REQUIRE_PRIVILEGED"];
const NOBODY: u32 = 65534;

/// The child side. Prints who it runs as before asking, and the answer after,
/// so the parent can tell "skipped" from "panicked" from "never ran".
#[test]
fn child_probe() {
    if std::env::var_os(PROBE_ENV).is_none_or(|v| v != "1") {
        return;
    }
    let euid = nix::unistd::geteuid();
    println!("XLB_PROBE_START euid={euid}");
    let result = privileged("probe");
    println!("XLB_PROBE_RESULT euid={euid} privileged={result}");
}

/// The test binary, where `nobody` can run it: this one if every directory
/// above it is searchable and the file readable and executable by others,
/// else a 0755 copy in a 0755 temporary directory (removed on drop).
struct ProbeExe {
    path: PathBuf,
    copy_dir: Option<PathBuf>,
}

fn usable_by_others(file: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    mode(file).is_ok_and(|m| m & 0o005 == 0o005)
        && file
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
            .all(|d| mode(d).is_ok_and(|m| m & 0o001 != 0))
}

impl ProbeExe {
    fn new() -> ProbeExe {
        let exe = std::env::current_exe().expect("the test binary's path");
        if usable_by_others(&exe) {
            return ProbeExe {
                path: exe,
                copy_dir: None,
            };
        }
        let dir = std::env::temp_dir().join(names::unique("privilege"));
        std::fs::create_dir(&dir).expect("create a directory for the probe copy");
        let copy = ProbeExe {
            path: dir.join("privilege-probe"),
            copy_dir: Some(dir.clone()),
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(&exe, &copy.path).expect("copy the test binary");
        std::fs::set_permissions(&copy.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            usable_by_others(&copy.path),
            "{} is not reachable by uid {NOBODY} either (the temp dir must be searchable by all)",
            copy.path.display()
        );
        copy
    }
}

impl Drop for ProbeExe {
    fn drop(&mut self) {
        if let Some(dir) = &self.copy_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[derive(Debug)]
struct Probe {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Probe {
    fn passed(&self) -> bool {
        self.code == Some(0) && self.stdout.contains("test result: ok. 1 passed")
    }
    fn failed(&self) -> bool {
        self.code == Some(101)
            && self
                .stdout
                .contains("test result: FAILED. 0 passed; 1 failed")
    }
}

/// Runs `child_probe` alone in a fresh process, as `nobody` or as root, with
/// neither `CI` nor `XLB_REQUIRE_PRIVILEGED` set except as in `env`.
fn probe(as_nobody: bool, env: &[(&str, &str)]) -> Probe {
    let exe = ProbeExe::new();
    let mut cmd = Command::new(&exe.path);
    cmd.args(["--exact", "child_probe", "--nocapture", "--test-threads=1"])
        .current_dir("/")
        .env(PROBE_ENV, "1");
    for var in REQUIRE_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if as_nobody {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} (as_nobody={as_nobody}): {e}",
            exe.path.display()
        )
    });
    let p = Probe {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Exactly the probe ran, and it ran as the intended user.
    assert!(p.stdout.contains("running 1 test"), "{p:#?}");
    let euid = if as_nobody { NOBODY } else { 0 };
    assert!(
        p.stdout.contains(&format!("XLB_PROBE_START euid={euid}\n")),
        "the probe did not run as uid {euid}: {p:#?}"
    );
    p
}

/// `nobody` with these settings must fail: a CI run must not skip.
fn assert_nobody_fails(env: &[(&str, &str)]) {
    let p = probe(true, env);
    assert!(p.failed(), "env {env:?}: the probe must fail: {p:#?}");
    assert!(
        p.stderr
            .contains("probe: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"),
        "env {env:?}: the failure must say it needs root: {p:#?}"
    );
    assert!(
        !p.stdout.contains("XLB_PROBE_RESULT"),
        "env {env:?}: privileged() returned instead of panicking: {p:#?}"
    );
    assert!(!p.stderr.contains("SKIPPED"), "{p:#?}");
}

/// `nobody` with these settings must skip: pass, say SKIPPED, return false.
fn assert_nobody_skips(env: &[(&str, &str)]) {
    let p = probe(true, env);
    assert!(p.passed(), "env {env:?}: the probe must pass: {p:#?}");
    assert!(
        p.stderr.contains("SKIPPED probe: needs root"),
        "env {env:?}: a skip must say so: {p:#?}"
    );
    assert!(
        p.stdout.contains(&format!(
            "XLB_PROBE_RESULT euid={NOBODY} privileged=false\n"
        )),
        "env {env:?}: privileged() must return false: {p:#?}"
    );
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unprivileged_with_ci_fails() {
    if !privileged("unprivileged_with_ci_fails") {
        return;
    }
    assert_nobody_fails(&[("CI", "1")]);
    assert_nobody_fails(&[("CI", "true")]);
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unprivileged_with_require_privileged_fails() {
    if !privileged("unprivileged_with_require_privileged_fails") {
        return;
    }
    assert_nobody_fails(&[("XLB_REQUIRE_PRIVILEGED", "1")]);
    // One of the two is enough, whatever the other says.
    assert_nobody_fails(&[("XLB_REQUIRE_PRIVILEGED", "yes"), ("CI", "0")]);
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unprivileged_without_ci_skips() {
    if !privileged("unprivileged_without_ci_skips") {
        return;
    }
    assert_nobody_skips(&[]);
    // Set but empty, "0" or "false" means not required.
    assert_nobody_skips(&[("CI", ""), ("XLB_REQUIRE_PRIVILEGED", "")]);
    assert_nobody_skips(&[("CI", "0"), ("XLB_REQUIRE_PRIVILEGED", "false")]);
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn root_is_privileged() {
    if !privileged("root_is_privileged") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root());
    assert!(privileged("root_is_privileged (again)"));
    // Also in a fresh process, with and without CI: root never skips nor fails.
    for env in [&[("CI", "1"), ("XLB_REQUIRE_PRIVILEGED", "1")][..], &[][..]] {
        let p = probe(false, env);
        assert!(p.passed(), "env {env:?}: {p:#?}");
        assert!(
            p.stdout
                .contains("XLB_PROBE_RESULT euid=0 privileged=true\n"),
            "env {env:?}: {p:#?}"
        );
        assert!(!p.stderr.contains("SKIPPED"), "env {env:?}: {p:#?}");
    }
}
