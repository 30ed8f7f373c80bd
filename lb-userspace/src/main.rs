//! `xlb`: the command-line entry point of the daemon.
/// The proxy allocates and frees a few buffers per request from worker
/// threads; glibc's malloc spent ~12 % of a worker's time in
/// consolidation and chunk unlinking under load, mimalloc's thread-local
/// free lists do not. `xlb::allocator` enters it without the aligned
/// allocation path for the usual alignments.
#[global_allocator]
static GLOBAL: xlb::allocator::Allocator = xlb::allocator::Allocator;

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use xlb::{
    cmd,
    config::{l4::L4Protocol, Config, XdpModeSetting},
    sched::ControlPlanePriority,
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "eBPF/XDP-assisted L4+L7 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the datapath and serve until SIGINT/SIGTERM (a stop:
    /// withdraw, drain, detach); SIGHUP reloads; SIGUSR2 hands over to a
    /// new process (restart or upgrade).
    Run {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Attach mode for every interface, overriding the file.
        #[arg(long, value_enum)]
        xdp_mode: Option<XdpModeSetting>,
        /// Take the instance over from the process running it: receive its
        /// listening sockets, adopt its pinned maps and links, then let it
        /// drain and exit. Starts fresh when none runs.
        #[arg(long)]
        takeover: bool,
    },
    /// Remove a stopped instance's pinned maps and XDP links (detaches XDP
    /// and drops the connection table): the way out when the pins do not
    /// fit a new build.
    Unpin {
        /// Instance name (as in the config's `instance`).
        #[arg(short, long, default_value = "default")]
        instance: String,
        /// Where bpffs is mounted.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
    /// Withdraw this node's anycast routes (it keeps serving what still
    /// arrives), until `xlb undrain`.
    Drain {
        /// Instance name (as in the config's `instance`).
        #[arg(short, long, default_value = "default")]
        instance: String,
    },
    /// Announce this node's routes again after `xlb drain`.
    Undrain {
        /// Instance name (as in the config's `instance`).
        #[arg(short, long, default_value = "default")]
        instance: String,
    },
    /// Parse and validate a configuration file; report every problem.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Move resources between a YAML file and the config store.
    #[command(subcommand)]
    Config(ConfigCmd),
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

#[derive(Subcommand)]
enum ConfigCmd {
    /// Write the resources of FILE (`l7.routes`, `l7.upstreams`,
    /// `l7.certificates`, `l7.rate_limits`, `l4.vips`) into the store.
    Import {
        /// The node's config file (its `config_store:` names the store).
        #[arg(short, long)]
        config: PathBuf,
        /// The YAML file holding the resources.
        file: PathBuf,
    },
    /// Print every resource in the store as YAML in the file's shape.
    Export {
        /// The node's config file (its `config_store:` names the store).
        #[arg(short, long)]
        config: PathBuf,
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

/// The daemon's runtime. With `control_plane_priority: idle` its threads,
/// and the main thread, which runs the daemon's own future, are the
/// control plane (`xlb::sched`); the proxy workers set themselves back to
/// the normal policy. The main thread's policy is set either way: a
/// handover's successor inherits its predecessor's.
fn daemon_runtime(priority: ControlPlanePriority) -> anyhow::Result<tokio::runtime::Runtime> {
    let idle = priority == ControlPlanePriority::Idle && {
        let can = xlb::sched::can_restore_normal();
        if !can {
            log::warn!(
                "control_plane_priority: idle needs root or CAP_SYS_NICE (the proxy workers \
                 could not leave the idle policy); the control plane keeps the normal one"
            );
        }
        can
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if idle {
        xlb::sched::control_plane_thread()?;
        builder.on_thread_start(|| {
            if let Err(e) = xlb::sched::control_plane_thread() {
                log::warn!("a control-plane thread keeps the normal CPU policy: {e}");
            }
        });
    } else if let Err(e) = xlb::sched::normal_thread() {
        log::warn!("the main thread keeps its inherited CPU policy: {e}");
    }
    Ok(builder.build()?)
}

/// Prints one line on stdout and flushes it: scripts and tests wait for
/// these lines.
fn announce(line: String) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run {
            config,
            xdp_mode,
            takeover,
        } => {
            let cfg = Config::load(&config)?;
            daemon_runtime(cfg.control_plane_priority)?.block_on(xlb::daemon::run(
                cfg,
                &config,
                xdp_mode,
                takeover,
                |info| {
                    let l7: Vec<String> = info
                        .l7
                        .iter()
                        .map(|(name, addr)| format!("{name}@{addr}"))
                        .collect();
                    announce(format!(
                        "xlb ready pid={} pins={} xdp={} l7={} admin={} observe={}",
                        std::process::id(),
                        info.pins
                            .as_ref()
                            .map_or("-".to_string(), |p| p.display().to_string()),
                        info.xdp.join(","),
                        l7.join(","),
                        info.admin.map_or("-".to_string(), |a| a.to_string()),
                        info.observe.map_or("-".to_string(), |a| a.to_string()),
                    ));
                },
                |generation, result| match result {
                    Ok(_) => announce(format!("xlb reloaded generation={generation}")),
                    Err(e) => announce(format!("xlb reload failed: {e:#}")),
                },
            ))
        }
        Cmd::Unpin { instance, bpffs } => {
            let dir = xlb::datapath::unpin_instance(&bpffs, &instance)?;
            println!("removed the pins in {}", dir.display());
            Ok(())
        }
        Cmd::Drain { instance } => cmd::drain::set(&instance, true),
        Cmd::Undrain { instance } => cmd::drain::set(&instance, false),
        Cmd::Config(ConfigCmd::Import { config, file }) => {
            let cfg = Config::load(&config)?;
            let n = runtime()?.block_on(xlb::cmd::config_io::import(&cfg, &file))?;
            println!("imported {n} resources from {}", file.display());
            Ok(())
        }
        Cmd::Config(ConfigCmd::Export { config }) => {
            let cfg = Config::load(&config)?;
            print!(
                "{}",
                runtime()?.block_on(xlb::cmd::config_io::export(&cfg))?
            );
            Ok(())
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
