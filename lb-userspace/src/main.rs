//! `xlb`: the command-line entry point of the daemon.
/// The proxy allocates and frees a few buffers per request from worker
/// threads; glibc's malloc spent ~12 % of a worker's time in
/// consolidation and chunk unlinking under load, mimalloc's thread-local
/// free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xlb::{
    cmd,
    config::{l4::L4Protocol, Config, XdpModeSetting},
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP-assisted L4+L7 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the datapath and serve until SIGINT/SIGTERM; SIGHUP reloads.
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
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Print a running instance's status page (VIPs, backends, routes,
    /// nodes with live rates, recent errors, denied sources).
    Status {
        /// Read `observe.listen` from this config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The observe listener's address (default 127.0.0.1:9190).
        #[arg(long, conflicts_with = "config")]
        addr: Option<SocketAddr>,
        /// Print the JSON of /status.json.
        #[arg(long)]
        json: bool,
    },
    /// Say which backend a flow goes to (connection table, else Maglev).
    Flow {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Client address and port, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000.
        #[arg(long)]
        src: SocketAddr,
        /// VIP address and port.
        #[arg(long)]
        dst: SocketAddr,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Backend side of IPIP: strip the outer header at XDP, until stopped.
    Decap {
        /// Interface to attach to.
        #[arg(long)]
        iface: String,
        /// native, skb or auto.
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: XdpModeSetting,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Prints one line on stdout and flushes it: scripts and tests wait for
/// these lines.
fn announce(line: String) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run { config, xdp_mode } => {
            let cfg = Config::load(&config)?;
            runtime()?.block_on(xlb::daemon::run(
                cfg,
                &config,
                xdp_mode,
                |info| {
                    let l7: Vec<String> = info
                        .l7
                        .iter()
                        .map(|(name, addr)| format!("{name}@{addr}"))
                        .collect();
                    announce(format!(
                        "xlb ready pins={} xdp={} l7={} observe={}",
                        info.pins
                            .as_ref()
                            .map_or("-".to_string(), |p| p.display().to_string()),
                        info.xdp.join(","),
                        l7.join(","),
                        info.observe.map_or("-".to_string(), |a| a.to_string())
                    ));
                },
                |generation, result| match result {
                    Ok(_) => announce(format!("xlb reloaded generation={generation}")),
                    Err(e) => announce(format!("xlb reload failed: {e:#}")),
                },
            ))
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
            let v = cmd::stats::collect(&bpffs, &instance)?;
            if json {
                println!("{v}");
            } else {
                cmd::stats::print_table(&v);
            }
            Ok(())
        }
        Cmd::Status { config, addr, json } => {
            let addr = match addr {
                Some(a) => a,
                None => cmd::status::address_of(config.as_deref())?,
            };
            let status = runtime()?.block_on(cmd::status::fetch(addr))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                cmd::status::print(&status);
            }
            Ok(())
        }
        Cmd::Flow {
            config,
            src,
            dst,
            proto,
        } => {
            let proto = match proto.as_str() {
                "tcp" => L4Protocol::Tcp,
                "udp" => L4Protocol::Udp,
                other => anyhow::bail!("--proto must be tcp or udp, not `{other}`"),
            };
            let cfg = Config::load(&config)?;
            println!("{}", cmd::flow::query(&cfg, src, dst, proto)?);
            Ok(())
        }
        Cmd::Decap { iface, xdp_mode } => {
            let n = runtime()?.block_on(cmd::decap::run(&iface, xdp_mode, || {
                announce(format!("xlb decap ready iface={iface}"))
            }))?;
            announce(format!("xlb decap done decapsulated={n}"));
            Ok(())
        }
    }
}
