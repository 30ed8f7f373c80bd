//! systemd `Type=notify`: readiness, the main PID after a handover, and the
//! stop. Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.
use sd_notify::NotifyState;

/// Tells systemd that this process is ready and is now the service's main
/// process (a successor after a handover says so itself, which the unit
/// allows with `NotifyAccess=all`).
pub fn ready() {
    let pid = std::process::id();
    send(&[
        NotifyState::MainPid(pid),
        NotifyState::Ready,
        NotifyState::Status("serving"),
    ]);
}

/// Tells systemd that a handover to a successor started.
pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::Status("handing over to a new process"),
    ]);
}

/// Tells systemd that a handover failed and this process goes on.
pub fn resumed() {
    send(&[
        NotifyState::Ready,
        NotifyState::Status("serving (handover failed)"),
    ]);
}

/// Tells systemd that the service is stopping.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    // `false`: keep NOTIFY_SOCKET in the environment, so that a successor
    // started by this process can notify too.
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("sd_notify: {e}");
    }
}
