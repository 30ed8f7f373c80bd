//! Which of xlb's threads the kernel runs first when they want the same
//! CPU: the proxy workers (and the access-log writer that drains their
//! lines) before the control plane.
//!
//! Why: a route change costs the control plane about 0.4 ms of CPU (the
//! admin call, the store's commit, the check and the apply). On a busy
//! machine a proxy worker woken while a change runs on its CPU waited for
//! the change's time slice (the fair scheduler protects a running task's
//! slice against wakeups), and the proxy's p99 grew by a third to nearly
//! double at 50 changes per second (`cargo xtask bench config`,
//! `change_under_load`). Lowering the control plane's nice value did not
//! help; `SCHED_IDLE` does: the kernel preempts an idle-policy task as
//! soon as a normal one wakes on its CPU (`check_preempt_wakeup_fair`).
//! An idle-policy thread still runs whenever a CPU has nothing better to
//! do and keeps a small share (weight 3 against 1024) of a saturated CPU,
//! so it is never starved outright; on a saturated node admin calls,
//! health probes and scrapes take longer instead of the requests. Opt-in
//! (`control_plane_priority: idle`), see [`ControlPlanePriority::Normal`].
//!
//! Threads inherit their creator's policy, so the control plane's threads
//! are set at their start (the main runtime's `on_thread_start`) and each
//! data-plane thread sets itself back to the normal policy at its start.
//!
//! Written against the raw `sched_setattr` system call because neither
//! `libc` nor `nix` wraps it.
use serde::Deserialize;

/// `control_plane_priority:` in the config.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ControlPlanePriority {
    /// `SCHED_IDLE`: the proxy workers preempt the control plane.
    Idle,
    /// The normal policy for every thread (the default).
    ///
    /// Why not `idle` by default: an idle-policy thread gets 3/1027 of a
    /// CPU that a normal thread keeps busy, and that normal thread may be
    /// any process of the host, not only xlb's workers (unless xlb runs in
    /// a cgroup of its own, as a systemd service with CPU accounting
    /// does). On a shared or saturated host the admin API, health probes
    /// and handovers would crawl; an operator who dedicates the host (or
    /// the cgroup) to xlb turns it on.
    #[default]
    Normal,
}

/// `struct sched_attr` (include/uapi/linux/sched/types.h), first version.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// Sets the calling thread's policy, keeping its nice value (which an
/// idle thread keeps too, and which the operator may have set: `nice`,
/// systemd's `Nice=`, the L7 bench's nice −20).
fn set_policy(policy: u32) -> std::io::Result<()> {
    // SAFETY: no pointers; on Linux PRIO_PROCESS with 0 is the calling
    // thread. -1 is also a valid nice value; an error cannot happen here
    // (the target is this thread), so it is not told apart.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        nice,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `sched_attr` whose
    // `size` field says how much of it the kernel may read; pid 0 is the
    // calling thread; no flags.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts the calling thread under `SCHED_IDLE` (a control-plane thread).
pub fn control_plane_thread() -> std::io::Result<()> {
    set_policy(SCHED_IDLE)
}

/// Puts the calling thread under the normal policy, with the nice value
/// it has, whatever policy it inherited (a process started by an idle
/// thread, as a handover's successor is, inherits idle too).
pub fn normal_thread() -> std::io::Result<()> {
    set_policy(SCHED_OTHER)
}

/// [`normal_thread`] for a data-plane thread. Logs instead of failing: a
/// worker that keeps an inherited idle policy still serves, only slower
/// on a busy CPU.
pub fn data_plane_thread() {
    if let Err(e) = normal_thread() {
        log::warn!("cannot give this proxy thread the normal CPU policy: {e}");
    }
}

/// Whether this process may bring a thread back from `SCHED_IDLE` to the
/// normal policy (root or `CAP_SYS_NICE`; an unprivileged process may go
/// idle but not come back, RLIMIT_NICE permitting). Tried on a thread of
/// its own; without it the control plane must not go idle, or the proxy
/// workers it starts would stay idle too.
pub fn can_restore_normal() -> bool {
    std::thread::spawn(|| control_plane_thread().is_ok() && normal_thread().is_ok())
        .join()
        .unwrap_or(false)
}

/// The calling thread's policy number (`SCHED_OTHER` 0, `SCHED_IDLE` 5).
#[cfg(test)]
fn current_policy() -> i32 {
    // SAFETY: no arguments besides the pid; 0 is the calling thread.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_goes_idle_and_its_children_come_back_to_normal() {
        std::thread::spawn(|| {
            control_plane_thread().expect("SCHED_IDLE needs no privilege");
            assert_eq!(current_policy(), SCHED_IDLE as i32);
            // A thread made by an idle thread inherits idle...
            let inherited = std::thread::spawn(current_policy).join().unwrap();
            assert_eq!(inherited, SCHED_IDLE as i32);
            // ...until it says it is a data-plane thread (which takes root
            // or CAP_SYS_NICE, as the daemon has).
            if !can_restore_normal() {
                assert!(
                    ["CI", "XLB_REQUIRE_PRIVILEGED"]
                        .iter()
                        .all(|v| std::env::var_os(v).is_none()),
                    "CI runs as root: the normal policy must be restorable"
                );
                eprintln!("skipped: returning to SCHED_OTHER needs CAP_SYS_NICE");
                return;
            }
            let reset = std::thread::spawn(|| {
                data_plane_thread();
                current_policy()
            })
            .join()
            .unwrap();
            assert_eq!(reset, SCHED_OTHER as i32);
            // The nice value survives the trip (an operator's `nice`).
            let nice = std::thread::spawn(|| {
                // SAFETY: plain calls on the calling thread.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 7) };
                control_plane_thread().unwrap();
                data_plane_thread();
                unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
            })
            .join()
            .unwrap();
            assert_eq!(nice, 7);
        })
        .join()
        .unwrap();
    }
}
