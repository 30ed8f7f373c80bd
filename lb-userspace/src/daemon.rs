//! `xlb run`: load the datapath, write the L4 tables, attach, then serve
//! until SIGINT/SIGTERM; SIGHUP reloads the config file.
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use anyhow::Context as _;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::{Config, XdpModeSetting},
    datapath::{
        flood_refill::FloodRefill,
        l4_tables::{ApplyReport, L4Tables},
        next_hops,
        state_file::InstanceState,
        Datapath,
    },
};

/// The running daemon's datapath and what it was configured with.
pub struct Daemon {
    dp: Datapath,
    flood_rate: Arc<AtomicU32>,
    flood_task: tokio::task::JoinHandle<()>,
    tables: L4Tables,
    config: Config,
    config_path: PathBuf,
    generation: u64,
}

impl Daemon {
    /// Loads the datapath, fills the L4 tables from `config`, and attaches.
    pub async fn start(
        config: Config,
        config_path: &Path,
        mode_override: Option<XdpModeSetting>,
    ) -> anyhow::Result<Daemon> {
        let mut dp = Datapath::load(&config)?;
        let refill = FloodRefill::new(dp.ebpf_mut(), config.l4.new_flows_per_cpu_sec)?;
        let flood_rate = refill.rate();
        let flood_task = tokio::spawn(refill.run());
        let macs = next_hops::resolve_all(&config.l4).await?;
        let mut tables = L4Tables::new(&config.l4);
        let report = tables.apply(dp.ebpf_mut(), &config.l4, &macs)?;
        log_report(&report);
        dp.attach(&config, mode_override)?;
        let d = Daemon {
            dp,
            flood_rate,
            flood_task,
            tables,
            config,
            config_path: config_path.to_path_buf(),
            generation: 1,
        };
        d.write_state();
        Ok(d)
    }

    /// The datapath.
    pub fn datapath(&self) -> &Datapath {
        &self.dp
    }

    /// Re-reads the config file and applies what changed. On any error the
    /// running configuration stays exactly as it was.
    pub async fn reload(&mut self) -> anyhow::Result<ApplyReport> {
        let new = Config::load(&self.config_path)?;
        let restart_only = [
            ("instance", new.instance != self.config.instance),
            ("bpffs", new.bpffs != self.config.bpffs),
            ("interfaces", new.interfaces != self.config.interfaces),
            (
                "l4.maglev_table_size",
                new.l4.maglev_table_size != self.config.l4.maglev_table_size,
            ),
            (
                "l4.conntrack_size",
                new.l4.conntrack_size != self.config.l4.conntrack_size,
            ),
            ("l4.max_vips", new.l4.max_vips != self.config.l4.max_vips),
            (
                "l4.max_backends",
                new.l4.max_backends != self.config.l4.max_backends,
            ),
        ];
        let changed: Vec<&str> = restart_only
            .iter()
            .filter(|(_, c)| *c)
            .map(|(f, _)| *f)
            .collect();
        if !changed.is_empty() {
            anyhow::bail!(
                "{}: {} cannot change while running (restart xlb); nothing was changed",
                self.config_path.display(),
                changed.join(", ")
            );
        }
        let macs = next_hops::resolve_all(&new.l4).await?;
        let report = self.tables.apply(self.dp.ebpf_mut(), &new.l4, &macs)?;
        self.flood_rate
            .store(new.l4.new_flows_per_cpu_sec, Ordering::Relaxed);
        self.config = new;
        self.generation += 1;
        self.write_state();
        Ok(report)
    }

    fn write_state(&self) {
        let state = InstanceState {
            vips: self.tables.vip_names(),
            backends: self.tables.backend_names(),
            config: self.config_path.clone(),
        };
        if let Err(e) = state.write(self.config.instance.as_str()) {
            log::warn!("writing the instance state file: {e}");
        }
    }
}

fn log_report(r: &ApplyReport) {
    log::info!(
        "L4 tables: +vips {:?} ~vips {:?} -vips {:?} +backends {:?} -backends {:?}, {} slots written",
        r.vips_added,
        r.vips_changed,
        r.vips_removed,
        r.backends_added,
        r.backends_removed,
        r.slots_written
    );
}

/// Runs the daemon until a termination signal arrives.
///
/// `ready` is called once the datapath is attached, so callers (and tests)
/// know when traffic is being handled; `reloaded` after each SIGHUP.
pub async fn run(
    config: Config,
    config_path: &Path,
    mode_override: Option<XdpModeSetting>,
    ready: impl FnOnce(&Datapath),
    mut reloaded: impl FnMut(u64, &anyhow::Result<ApplyReport>),
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let instance = config.instance.as_str().to_string();
    let mut daemon = Daemon::start(config, config_path, mode_override).await?;
    let log_task = daemon.dp.take_logger().map(|logger| {
        tokio::spawn(async move {
            // SAFETY: the logger owns its ring-buffer fd and never closes or
            // replaces it while the AsyncFd holds it.
            let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
            let Ok(mut fd) = registered else {
                log::warn!("cannot poll the eBPF log ring; eBPF logs are off");
                return;
            };
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        })
    });
    log::info!(
        "instance {instance} running; maps pinned in {}",
        daemon.dp.pin_dir().display()
    );
    ready(&daemon.dp);

    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                let result = daemon.reload().await;
                match &result {
                    Ok(r) => { log::info!("SIGHUP: config reloaded (generation {})", daemon.generation); log_report(r); }
                    Err(e) => log::error!("SIGHUP: reload failed, running config unchanged: {e:#}"),
                }
                reloaded(daemon.generation, &result);
            }
        }
    }
    if let Some(t) = log_task {
        t.abort();
        let _ = t.await;
    }
    daemon.flood_task.abort();
    drop(daemon);
    InstanceState::remove(&instance);
    log::info!("detached; bye");
    Ok(())
}
