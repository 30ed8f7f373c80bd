//! Steers new connections to L7 workers with the `xlb_reuseport` eBPF
//! program, and drains or undrains workers at run time.
//!
//! [`Steering::attach`] loads the program with its own copy of the maps
//! (one sockarray belongs to one reuseport group), puts worker `i`'s socket
//! at index `i` of `REUSEPORT_SOCKARRAY`, marks every worker active and
//! attaches the program to the group. Where that is not allowed (no
//! CAP_BPF/CAP_NET_ADMIN) or fails, it logs why and returns the reason: the
//! listeners still work, the kernel then spreads connections by its own
//! reuseport hash, and draining is not available.
//!
//! Draining keeps two maps consistent in an order that never lets the
//! program pick a draining worker: `ACTIVE_WORKERS` (the list the program
//! maps the hash onto, replaced whole) and `WORKER_STATE` (per-worker
//! flags, which the program double-checks). A worker leaves the list before
//! its flag says draining, and its flag says active before it rejoins.
use std::{error::Error as StdError, io, net::SocketAddr};

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, ReusePortSockArray},
    programs::{ProgramError, SkReuseport},
    Ebpf, EbpfLoader,
};
use lb_common::{
    maps,
    reuseport::{
        ActiveWorkers, Fallback, ACTIVE_WORKERS_KEY, FALLBACK_REASONS, WORKER_ACTIVE,
        WORKER_DRAINING,
    },
};

use super::listeners::Listeners;
use crate::ebpf_object::EBPF_OBJECT;

/// Why worker steering is left to the kernel's reuseport hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    /// The process may not load BPF programs or create the maps (EPERM):
    /// it lacks CAP_BPF and CAP_NET_ADMIN (or root).
    NoPrivilege,
    /// Anything else: an old kernel, a verifier rejection, a full map.
    Failed,
}

/// What went wrong, at which step; `Display` is the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackReason {
    /// The class of failure.
    pub kind: FallbackKind,
    /// The step that failed (`"loading the eBPF object"`, ...).
    pub step: &'static str,
    /// The error chain, flattened.
    pub detail: String,
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FallbackKind::NoPrivilege => write!(
                f,
                "no BPF privilege (needs CAP_BPF and CAP_NET_ADMIN, or root) for {}: {}",
                self.step, self.detail
            ),
            FallbackKind::Failed => write!(f, "{} failed: {}", self.step, self.detail),
        }
    }
}

impl FallbackReason {
    /// Classifies the error `error` of step `step`: EPERM anywhere in its
    /// source chain means no privilege. (EACCES does not: the verifier
    /// answers EACCES when it rejects a program, also for root.)
    pub fn classify(step: &'static str, error: &(dyn StdError + 'static)) -> FallbackReason {
        let mut detail = error.to_string();
        let mut eperm = false;
        let mut cur = Some(error);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                eperm |= io.raw_os_error() == Some(libc::EPERM);
            }
            cur = e.source();
            if let Some(next) = cur {
                let s = next.to_string();
                if !detail.contains(&s) {
                    detail = format!("{detail}: {s}");
                }
            }
        }
        FallbackReason {
            kind: if eperm {
                FallbackKind::NoPrivilege
            } else {
                FallbackKind::Failed
            },
            step,
            detail,
        }
    }
}

/// Failures of run-time operations on attached steering.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("worker {worker} does not exist (the group has {workers})")]
    NoSuchWorker { worker: usize, workers: usize },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("detaching the program: {0}")]
    Detach(#[source] ProgramError),
}

/// The `xlb_reuseport` program attached to one listener group, with the
/// maps that steer it.
///
/// One per group: the kernel lets a socket sit in one sockarray only
/// (`sk_user_data`), so attaching a second time fails (EBUSY) and falls
/// back, leaving the first attachment in place.
///
/// Dropping it leaves the program attached to the group with the last
/// state written (the kernel holds the program and maps for as long as the
/// group exists); closing all listeners removes both. Call
/// [`Steering::detach`] to hand the group back to the kernel's hash while
/// the listeners stay open.
pub struct Steering {
    ebpf: Ebpf,
    addr: SocketAddr,
    /// Mirror of `WORKER_STATE` (the daemon is its only writer).
    states: Vec<u32>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("addr", &self.addr)
            .field("states", &self.states)
            .finish()
    }
}

/// Maps of the L4 datapath that the same object declares: created small,
/// since this copy of the object only runs the reuseport program.
const L4_MAPS: [&str; 7] = [
    maps::MAGLEV,
    maps::VIPS,
    maps::VIP_STATS,
    maps::BACKENDS,
    maps::BACKEND_STATS,
    maps::CONNTRACK,
    maps::CONNTRACK_V4,
];

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> SteeringError {
    move |source| SteeringError::Map { map, source }
}

impl Steering {
    /// Loads and attaches steering for `listeners` with every worker
    /// active. On failure, logs that the group falls back to the kernel's
    /// reuseport hashing and returns why; the listeners are unaffected.
    pub fn attach(listeners: &Listeners) -> Result<Steering, FallbackReason> {
        match Steering::try_attach(listeners) {
            Ok(s) => {
                log::info!(
                    "worker steering on {}: eBPF sk_reuseport program over {} workers",
                    listeners.local_addr(),
                    listeners.len()
                );
                Ok(s)
            }
            Err(reason) => {
                log::warn!(
                    "worker steering on {} falls back to the kernel's SO_REUSEPORT hashing \
                     (connections are spread by the kernel; draining a worker is not \
                     available): {reason}",
                    listeners.local_addr()
                );
                Err(reason)
            }
        }
    }

    /// [`Steering::attach`] without the log line.
    pub fn try_attach(listeners: &Listeners) -> Result<Steering, FallbackReason> {
        let fail = |step| move |e: &(dyn StdError + 'static)| FallbackReason::classify(step, e);

        let mut loader = EbpfLoader::new();
        for name in L4_MAPS {
            loader.map_max_entries(name, 1);
        }
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| fail("loading the eBPF object")(&e))?;
        let mut s = Steering {
            ebpf,
            addr: listeners.local_addr(),
            states: vec![WORKER_ACTIVE; listeners.len()],
        };

        // Maps first, so the first connection after attaching is steered.
        {
            let map = s
                .ebpf
                .map_mut(maps::REUSEPORT_SOCKARRAY)
                .ok_or_else(|| missing(maps::REUSEPORT_SOCKARRAY))?;
            let mut socks: ReusePortSockArray<&mut MapData> = map
                .try_into()
                .map_err(|e| fail("opening REUSEPORT_SOCKARRAY")(&e))?;
            for (worker, listener) in listeners.iter().enumerate() {
                socks
                    .set(worker as u32, listener, 0)
                    .map_err(|e| fail("adding a listener to REUSEPORT_SOCKARRAY")(&e))?;
            }
        }
        for worker in 0..s.states.len() {
            s.write_state(worker)
                .map_err(|e| fail("writing WORKER_STATE")(&e))?;
        }
        s.write_active()
            .map_err(|e| fail("writing ACTIVE_WORKERS")(&e))?;

        let prog: &mut SkReuseport = s
            .ebpf
            .program_mut(maps::REUSEPORT_PROGRAM)
            .ok_or_else(|| missing(maps::REUSEPORT_PROGRAM))?
            .try_into()
            .map_err(|e| fail("finding the sk_reuseport program")(&e))?;
        prog.load()
            .map_err(|e| fail("loading the sk_reuseport program")(&e))?;
        let first = listeners
            .get(0)
            .ok_or_else(|| missing("a listener (the group is empty)"))?;
        prog.attach(first)
            .map_err(|e| fail("attaching to the SO_REUSEPORT group")(&e))?;
        Ok(s)
    }

    /// Hands the group back to the kernel's reuseport hash (through any of
    /// its listeners).
    pub fn detach(self, listeners: &Listeners) -> Result<(), SteeringError> {
        let first = listeners.get(0).ok_or(SteeringError::NoSuchWorker {
            worker: 0,
            workers: 0,
        })?;
        SkReuseport::detach(first).map_err(SteeringError::Detach)
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.states.len()
    }

    /// Whether `worker` is marked draining.
    pub fn is_draining(&self, worker: usize) -> bool {
        self.states.get(worker) == Some(&WORKER_DRAINING)
    }

    /// Stops steering new connections to `worker`; the others share its
    /// part evenly. Draining every worker leaves the choice to the kernel's
    /// hash (all workers again): stop accepting by closing listeners.
    pub fn drain(&mut self, worker: usize) -> Result<(), SteeringError> {
        self.set(worker, WORKER_DRAINING)
    }

    /// Steers new connections to `worker` again.
    pub fn undrain(&mut self, worker: usize) -> Result<(), SteeringError> {
        self.set(worker, WORKER_ACTIVE)
    }

    fn set(&mut self, worker: usize, state: u32) -> Result<(), SteeringError> {
        self.check(worker)?;
        let old = self.states[worker];
        self.states[worker] = state;
        // Draining: out of the list first, then flagged. Undraining: flag
        // cleared first, then back in the list. Either way the program
        // never finds a flagged worker in the list (it would count that as
        // stale and leave the connection to the kernel's hash).
        let written = self.write_in_order(worker);
        if written.is_err() {
            // Put the maps back as they were (best effort: one of the
            // writes failed already), so the mirror stays true.
            self.states[worker] = old;
            let _ = self.write_in_order(worker);
        }
        written
    }

    /// Writes `worker`'s flag and the active list in the order that keeps
    /// them consistent for its new state (see `set`).
    fn write_in_order(&mut self, worker: usize) -> Result<(), SteeringError> {
        if self.states[worker] == WORKER_DRAINING {
            self.write_active()?;
            self.write_state(worker)
        } else {
            self.write_state(worker)?;
            self.write_active()
        }
    }

    /// Connections steered to each worker so far (summed over CPUs), in
    /// worker order. One per SYN that reached the listener lookup: a SYN
    /// dropped on a full accept queue and retransmitted counts twice.
    pub fn accepts(&self) -> Result<Vec<u64>, SteeringError> {
        let name = maps::WORKER_ACCEPTS;
        let map = self.ebpf.map(name).ok_or(SteeringError::Map {
            map: name,
            source: MapError::InvalidName {
                name: name.to_string(),
            },
        })?;
        let counts: PerCpuArray<&MapData, u64> = map.try_into().map_err(map_err(name))?;
        (0..self.states.len() as u32)
            .map(|w| {
                counts
                    .get(&w, 0)
                    .map(|v| v.iter().sum())
                    .map_err(map_err(name))
            })
            .collect()
    }

    /// Connections left to the kernel's hash, per [`Fallback`] reason (in
    /// `Fallback::ALL` order).
    pub fn fallbacks(&self) -> Result<[(Fallback, u64); FALLBACK_REASONS as usize], SteeringError> {
        let name = maps::REUSEPORT_FALLBACKS;
        let map = self.ebpf.map(name).ok_or(SteeringError::Map {
            map: name,
            source: MapError::InvalidName {
                name: name.to_string(),
            },
        })?;
        let counts: PerCpuArray<&MapData, u64> = map.try_into().map_err(map_err(name))?;
        let mut out = Fallback::ALL.map(|r| (r, 0));
        for (reason, n) in out.iter_mut() {
            *n = counts
                .get(&(*reason as u32), 0)
                .map_err(map_err(name))?
                .iter()
                .sum();
        }
        Ok(out)
    }

    fn check(&self, worker: usize) -> Result<(), SteeringError> {
        if worker < self.states.len() {
            Ok(())
        } else {
            Err(SteeringError::NoSuchWorker {
                worker,
                workers: self.states.len(),
            })
        }
    }

    fn write_state(&mut self, worker: usize) -> Result<(), SteeringError> {
        let name = maps::WORKER_STATE;
        let state = self.states[worker];
        let map = self.ebpf.map_mut(name).ok_or_else(|| invalid_name(name))?;
        let mut flags: Array<&mut MapData, u32> = map.try_into().map_err(map_err(name))?;
        flags.set(worker as u32, state, 0).map_err(map_err(name))
    }

    /// Replaces the active list in one update (an RCU swap in the kernel).
    fn write_active(&mut self) -> Result<(), SteeringError> {
        let name = maps::ACTIVE_WORKERS;
        let list = ActiveWorkers::from_states(&self.states);
        let map = self.ebpf.map_mut(name).ok_or_else(|| invalid_name(name))?;
        let mut active: HashMap<&mut MapData, u32, ActiveWorkers> =
            map.try_into().map_err(map_err(name))?;
        active
            .insert(ACTIVE_WORKERS_KEY, list, 0)
            .map_err(map_err(name))
    }
}

fn invalid_name(name: &'static str) -> SteeringError {
    SteeringError::Map {
        map: name,
        source: MapError::InvalidName {
            name: name.to_string(),
        },
    }
}

/// The embedded object lacks something it must have: a build mismatch.
fn missing(what: &str) -> FallbackReason {
    FallbackReason {
        kind: FallbackKind::Failed,
        step: "finding the steering program and maps in the eBPF object",
        detail: format!("{what} is missing (rebuild the eBPF object)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn eperm_creating_a_map_is_no_privilege() {
        let e = aya::EbpfError::MapError(MapError::CreateError {
            name: "REUSEPORT_SOCKARRAY".into(),
            io_error: os(libc::EPERM),
        });
        let r = FallbackReason::classify("loading the eBPF object", &e);
        assert_eq!(r.kind, FallbackKind::NoPrivilege);
        assert!(r.detail.contains("REUSEPORT_SOCKARRAY"), "{r}");
        assert!(r.to_string().starts_with("no BPF privilege"), "{r}");
    }

    #[test]
    fn eperm_loading_the_program_is_no_privilege() {
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: os(libc::EPERM),
        });
        let r = FallbackReason::classify("loading the sk_reuseport program", &e);
        assert_eq!(r.kind, FallbackKind::NoPrivilege);
        let e = ProgramError::SkReuseportError(
            aya::programs::sk_reuseport::SkReuseportError::SetsockoptError {
                option: "SO_ATTACH_REUSEPORT_EBPF",
                io_error: os(libc::EPERM),
            },
        );
        let r = FallbackReason::classify("attaching to the SO_REUSEPORT group", &e);
        assert_eq!(r.kind, FallbackKind::NoPrivilege);
        assert!(r.detail.contains("SO_ATTACH_REUSEPORT_EBPF"), "{r}");
    }

    #[test]
    fn a_verifier_rejection_is_not_a_privilege_problem() {
        // The verifier answers EACCES (also to root) when it rejects.
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: os(libc::EACCES),
        });
        let r = FallbackReason::classify("loading the sk_reuseport program", &e);
        assert_eq!(r.kind, FallbackKind::Failed);
        assert!(
            r.to_string()
                .starts_with("loading the sk_reuseport program failed"),
            "{r}"
        );
        let e = os(libc::EINVAL);
        assert_eq!(
            FallbackReason::classify("attaching", &e).kind,
            FallbackKind::Failed
        );
    }
}
