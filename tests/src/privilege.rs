//! Deciding whether privileged tests may run, skip, or must fail.

/// True when the privileged test may go on. When it cannot (not root), it
/// returns false so the test can skip — unless `CI` or
/// `XLB_REQUIRE_PRIVILEGED` is set, where it panics: a CI that silently
/// skipped the datapath tests would prove nothing.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let required = ["CI", "XLB_REQUIRE_PRIVILEGED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty() && s != "0" && s != "false"));
    if required {
        panic!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and CI/XLB_REQUIRE_PRIVILEGED is set");
    }
    eprintln!("SKIPPED {test}: needs root; set XLB_REQUIRE_PRIVILEGED=1 to make this a failure");
    false
}
