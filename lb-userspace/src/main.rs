//! `xlb`: the command-line entry point of the daemon.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xlb::{
    config::{Config, XdpModeSetting},
    datapath::{counters, instance_pin_dir},
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP-assisted L4+L7 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the datapath and serve until SIGINT/SIGTERM.
    Run {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Attach mode for every interface, overriding the file.
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeSetting>,
    },
    /// Parse and validate a configuration file; report every problem.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print a running instance's XDP counters.
    Stats {
        /// Instance name (as in the config's `instance`).
        #[arg(short, long, default_value = "default")]
        instance: String,
        /// Where bpffs is mounted.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run { config, xdp_mode } => {
            let cfg = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(xlb::daemon::run(cfg, xdp_mode, |dp| {
                // One machine-readable line on stdout when traffic is being
                // handled: scripts and tests wait for it.
                let ifaces: Vec<String> = dp
                    .attached()
                    .iter()
                    .map(|(i, m)| format!("{i}:{m}"))
                    .collect();
                println!(
                    "xlb ready pins={} xdp={}",
                    dp.pin_dir().display(),
                    ifaces.join(",")
                );
                let _ = std::io::stdout().flush();
            }))
        }
        Cmd::Check { config } => {
            Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Cmd::Stats {
            instance,
            bpffs,
            json,
        } => {
            let totals = counters::read_pinned(&instance_pin_dir(&bpffs, &instance))?;
            if json {
                let obj: serde_json::Map<String, serde_json::Value> = totals
                    .0
                    .iter()
                    .map(|(name, p, b)| {
                        (
                            (*name).to_string(),
                            serde_json::json!({"packets": p, "bytes": b}),
                        )
                    })
                    .collect();
                println!("{}", serde_json::Value::Object(obj));
            } else {
                println!("{:<10} {:>14} {:>16}", "class", "packets", "bytes");
                for (name, p, b) in &totals.0 {
                    println!("{name:<10} {p:>14} {b:>16}");
                }
            }
            Ok(())
        }
    }
}
