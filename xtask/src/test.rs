//! `cargo xtask test`: the module-layering check, every crate's unit
//! tests, then the privileged end-to-end tests against the freshly built
//! `xlb`.
use crate::{build, deps, exec, imports};

pub fn run() -> anyhow::Result<()> {
    // First: it takes a second and names the file that brought a circle
    // back, before minutes of building.
    imports::run()?;
    deps::ensure_apt(deps::TEST_PACKAGES)?;
    let xlb = build::all(false)?;
    let root = exec::workspace_root();
    // Unit and in-process tests of every crate (the e2e crate's tests are
    // run below, with the binary they drive).
    exec::run(exec::cargo(None).current_dir(&root).args([
        "test",
        "--workspace",
        "--exclude",
        "xlb-tests",
    ]))?;
    // The benchmarks are not run here (`cargo xtask bench`), but they must
    // keep compiling.
    exec::run(exec::cargo(None).current_dir(&root).args([
        "build",
        "--package",
        "xlb-tests",
        "--benches",
    ]))?;
    exec::run(
        exec::cargo(None)
            .current_dir(&root)
            .args(["test", "--package", "xlb-tests"])
            .env("XLB_BIN", &xlb),
    )
}
