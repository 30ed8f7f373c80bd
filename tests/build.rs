//! Marks the privileged end-to-end tests `ignored` ("skipped: needs root")
//! in libtest's own report when they are built by a user who cannot run
//! them, so a non-root `cargo test` lists them as skipped rather than
//! passed. Where privilege is required (`CI`, `XLB_REQUIRE_PRIVILEGED`),
//! nothing is ignored: the tests run and fail without root. The runtime
//! check in `privilege::privileged` stays as the guard for a binary built
//! by root and run by someone else.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(xlb_unprivileged)");
    for var in ["CI", "XLB_REQUIRE_PRIVILEGED", "USER", "SUDO_USER"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let required = ["CI", "XLB_REQUIRE_PRIVILEGED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty() && s != "0" && s != "false"));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !required {
        println!("cargo::rustc-cfg=xlb_unprivileged");
    }
}
