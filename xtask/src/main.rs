//! `cargo xtask`: one subcommand per module; shared process helpers in `exec`.
mod bench;
mod build;
mod demo;
mod demo_admin;
mod demo_l7;
mod deps;
mod exec;
mod fuzz;
mod imports;
mod pgo;
mod test;
mod toolchain;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "xlb's build, test and demo driver")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install rust-src and bpf-linker if needed, then build the eBPF object.
    BuildEbpf,
    /// build-ebpf, then the self-contained `xlb` binary.
    Build {
        /// Build userspace in release mode.
        #[arg(long)]
        release: bool,
        /// With --release: profile-guided, trained on the l7 bench's
        /// cases (the build for production; into target/pgo/optimized/).
        #[arg(long, requires = "release")]
        pgo: bool,
    },
    /// Build, then run `xlb` with the given arguments (e.g. `run -c xlb.yaml`).
    Run {
        /// Arguments passed to xlb.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, create a namespace topology, run xlb on it with real traffic,
    /// and print what happened.
    Demo,
    /// Unit tests of every crate, then the privileged end-to-end tests.
    Test,
    /// Fail on import circles or upward imports in lb-userspace.
    CheckImports,
    /// Run a benchmark (`l4`) and write target/bench/NAME.json.
    Bench {
        /// Which benchmark.
        name: String,
    },
    /// A long differential run (`l4`: 10⁶ frames, XDP against the model).
    Fuzz {
        /// Which target.
        name: String,
        /// Frames to send (default 10⁶).
        #[arg(long)]
        count: Option<u64>,
        /// Seed in hex, to replay a run (default: a fresh one, printed).
        #[arg(long)]
        seed: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::BuildEbpf => build::ebpf(),
        Cmd::Build { pgo: true, .. } => pgo::build().map(|p| println!("{}", p.display())),
        Cmd::Build { release, .. } => build::all(release).map(|_| ()),
        Cmd::Run { args } => {
            let xlb = build::all(false)?;
            exec::run(std::process::Command::new(xlb).args(args))
        }
        Cmd::Demo => demo::run(),
        Cmd::Test => test::run(),
        Cmd::CheckImports => imports::run(),
        Cmd::Bench { name } => bench::run(&name),
        Cmd::Fuzz { name, count, seed } => fuzz::run(&name, count, seed),
    }
}
