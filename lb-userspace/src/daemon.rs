//! `xlb run`: start the datapath, serve until SIGINT/SIGTERM, then detach.
use anyhow::Context as _;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::{Config, XdpModeSetting},
    datapath::Datapath,
};

/// Runs the daemon until a termination signal arrives.
///
/// `ready` is called once the datapath is attached, so callers (and tests)
/// know when traffic is being counted.
pub async fn run(
    config: Config,
    mode_override: Option<XdpModeSetting>,
    ready: impl FnOnce(&Datapath),
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    let mut dp = Datapath::start(&config, mode_override)?;
    let log_task = dp.take_logger().map(|logger| {
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
        "instance {} running; maps pinned in {}",
        config.instance.as_str(),
        dp.pin_dir().display()
    );
    ready(&dp);

    tokio::select! {
        _ = sigterm.recv() => log::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => log::info!("SIGINT: shutting down"),
    }
    if let Some(t) = log_task {
        t.abort();
        let _ = t.await;
    }
    drop(dp);
    log::info!("detached; bye");
    Ok(())
}
