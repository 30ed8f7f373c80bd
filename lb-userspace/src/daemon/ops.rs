//! The daemon's operations side: handing the instance to a successor,
//! stopping in order (withdraw, drain, detach), and keeping BIRD's
//! announcements in line with health and the drain flag.
use std::{collections::BTreeSet, net::IpAddr, os::fd::OwnedFd, path::PathBuf, time::Duration};

use tokio::sync::mpsc;

use crate::{
    anycast::{bird::Announcer, prefixes},
    lifecycle::{
        handover::{self, HandoverListener},
        notify,
    },
};

use super::Daemon;

/// Where `xlb drain` leaves its flag: while it exists, the node announces
/// nothing (it keeps serving what still reaches it).
pub fn drain_flag(instance: &str) -> PathBuf {
    PathBuf::from("/run/xlb").join(format!("{instance}.drained"))
}

/// Where the daemon reports what it announces (`xlb drain` waits on it).
pub fn anycast_status(instance: &str) -> PathBuf {
    PathBuf::from("/run/xlb").join(format!("{instance}.anycast.json"))
}

/// Accepts successors on the instance's handover socket (a thread that
/// blocks in `accept`) and passes their connections to the daemon loop.
pub(super) fn listen_for_successors(
    instance: &str,
) -> anyhow::Result<(HandoverListener, mpsc::UnboundedReceiver<OwnedFd>)> {
    let listener = HandoverListener::bind(instance)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let accepting = listener.try_clone()?;
    std::thread::Builder::new()
        .name("xlb-handover".into())
        .spawn(move || loop {
            match accepting.accept() {
                Ok(conn) => {
                    if tx.send(conn).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("handover socket: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })?;
    Ok((listener, rx))
}

impl Daemon {
    /// Hands everything to the successor on `conn`: the L7 listening
    /// sockets, then the instance lock (this process stops writing the
    /// maps). Returns true once the successor says it serves; on any
    /// failure this process takes the instance back and goes on.
    pub(super) async fn hand_over(&mut self, conn: OwnedFd) -> bool {
        notify::reloading();
        log::info!("handover: a successor connected; handing over the listeners");
        let sent = match &self.l7 {
            Some(svc) => handover::send_groups(&conn, &svc.handover_sockets()),
            None => Ok(()),
        };
        // The node's own listeners: the admin API and /metrics.
        let sent = sent.and_then(|()| {
            if let Some((c, l, s)) = self.resources.as_ref().and_then(|r| r.admin_socket()) {
                handover::send_single(&conn, super::resources::ADMIN, c, l, s)?;
            }
            if let Some((c, l, s)) = crate::observe::server::handover_socket() {
                handover::send_single(&conn, super::OBSERVE, c, l, &s)?;
            }
            Ok(())
        });
        if let Err(e) = sent {
            log::error!("handover: sending the listeners failed, going on: {e}");
            notify::resumed();
            return false;
        }
        // An embedded store's file can be open in one process only: this
        // one stops its admin API (new connections wait in the socket's
        // queue for the successor) and closes the database; a write in
        // progress commits first, so nothing acknowledged is lost.
        let mut released_at = None;
        if let Some(r) = &self.resources {
            match r.release_store().await {
                None => {}
                Some(Ok(rev)) => {
                    log::info!("handover: embedded store released at revision {rev}");
                    released_at = Some(rev);
                }
                Some(Err(e)) => {
                    log::error!("handover: releasing the embedded store failed, going on: {e:#}");
                    r.pause_admin(false);
                    notify::resumed();
                    return false;
                }
            }
        }
        if released_at.is_some() {
            if let Err(e) = handover::send_store_released(&conn) {
                log::error!("handover: telling the successor failed, going on: {e}");
                if let (Some(r), Some(rev)) = (&self.resources, released_at) {
                    r.reopen_store(rev).await;
                }
                notify::resumed();
                return false;
            }
        }
        if let Some(h) = &mut self.l4 {
            h.dp.release_lock();
        }
        let timeout = self.config.lifecycle.takeover_timeout.0;
        let result = match handover::send_released(&conn) {
            Ok(()) => tokio::task::spawn_blocking(move || handover::wait_ready(&conn, timeout))
                .await
                .unwrap_or_else(|e| Err(handover::HandoverError::Protocol(e.to_string()))),
            Err(e) => Err(e),
        };
        match result {
            Ok(pid) => {
                log::info!("handover: process {pid} serves now; draining and leaving");
                true
            }
            Err(e) => {
                log::error!("handover failed ({e}); this process goes on serving");
                self.take_instance_back().await;
                if let (Some(r), Some(rev)) = (&self.resources, released_at) {
                    r.reopen_store(rev).await;
                }
                notify::resumed();
                false
            }
        }
    }

    /// Retakes the instance lock a failed successor held (it is released
    /// when that process exits, which may take a moment).
    async fn take_instance_back(&mut self) {
        let Some(h) = &mut self.l4 else { return };
        for _ in 0..100 {
            match h.dp.retake_lock() {
                Ok(()) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        log::error!("handover: the instance lock is still held by another process");
    }

    /// The prefixes this node should announce now.
    fn wanted_prefixes(&self, drained: bool) -> BTreeSet<IpAddr> {
        let l4 = self.effective_l4(&self.config.l4);
        let l7: Vec<IpAddr> = self
            .l7
            .as_ref()
            .map(|s| s.addresses().into_iter().map(|(_, a)| a.ip()).collect())
            .unwrap_or_default();
        prefixes::announced(&l4, &l7, drained)
    }

    /// Brings BIRD in line with health and the drain flag (no-op without
    /// `anycast:`).
    pub(super) fn sync_announcements(&mut self, announcer: &mut Option<Announcer>) {
        let Some(a) = announcer else { return };
        let instance = self.config.instance.as_str().to_string();
        let drained = drain_flag(&instance).exists();
        let wanted = self.wanted_prefixes(drained);
        match a.set(wanted) {
            // Written every time (once a second at most): `xlb drain` waits
            // for `drained` even when the set of routes did not change.
            Ok(_) => write_status(&instance, drained, a.announced()),
            Err(e) => log::error!("anycast: {e:#}"),
        }
    }

    /// A stop, step one: withdraw every route, then keep forwarding for
    /// `lifecycle.stop_drain` while the routers move flows elsewhere.
    pub(super) async fn withdraw_before_stop(&mut self, announcer: &mut Option<Announcer>) {
        let Some(a) = announcer else { return };
        notify::stopping("withdrawing routes");
        match a.set(BTreeSet::new()) {
            Ok(_) => {
                let instance = self.config.instance.as_str();
                write_status(instance, true, a.announced());
                log::info!(
                    "anycast: routes withdrawn; forwarding {:?} more before detaching",
                    self.config.lifecycle.stop_drain.0
                );
            }
            Err(e) => log::error!("anycast: withdrawing before the stop: {e:#}"),
        }
        tokio::time::sleep(self.config.lifecycle.stop_drain.0).await;
    }
}

/// `{"drained": bool, "announced": [...]}` for `xlb drain` and operators.
fn write_status(instance: &str, drained: bool, announced: Option<&BTreeSet<IpAddr>>) {
    let v = serde_json::json!({
        "drained": drained,
        "announced": announced.map(|s| s.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
    });
    let path = anycast_status(instance);
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, v.to_string())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .is_err()
    {
        log::warn!("writing {}", path.display());
    }
}

/// Removes the status file (at a stop).
pub(super) fn remove_status(instance: &str) {
    let _ = std::fs::remove_file(anycast_status(instance));
}
