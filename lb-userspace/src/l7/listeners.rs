//! One `SO_REUSEPORT` listening socket per L7 worker, all on one address.
//!
//! The kernel groups sockets bound to the same address and port with
//! `SO_REUSEPORT` set (same owner uid) into one reuseport group and hands
//! each new connection to one of them; `super::steering` replaces its hash
//! with the `sk_reuseport` program. Worker `i` owns socket `i`.
use std::{
    io,
    net::{SocketAddr, TcpListener},
};

use lb_common::reuseport::MAX_WORKERS;
use socket2::{Domain, Protocol, Socket, Type};

/// Accept-queue length of each worker's socket (`listen(2)` backlog; the
/// kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 1024;

/// Why the listeners could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("worker count {0} is out of range (1..={MAX_WORKERS})")]
    Workers(usize),
    #[error("worker {worker}: {step} on {addr}: {source}")]
    Socket {
        worker: usize,
        step: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The listening sockets of one L7 address, in worker order.
#[derive(Debug)]
pub struct Listeners {
    addr: SocketAddr,
    sockets: Vec<TcpListener>,
    /// Inherited sockets beyond the worker count (the predecessor ran more
    /// workers): still served, so the connections already queued on them
    /// are not lost, but not steered to.
    extra: Vec<TcpListener>,
}

/// Listening sockets received from a predecessor process (see
/// `lifecycle::handover`), by the address each group was configured with.
#[derive(Debug, Default)]
pub struct Inherited {
    groups: Vec<(SocketAddr, SocketAddr, Vec<TcpListener>)>,
    /// Single sockets of the node's own listeners (the admin API,
    /// `observe.listen`), by kind: `(kind, configured, local, socket)`.
    singles: Vec<(String, SocketAddr, SocketAddr, TcpListener)>,
    /// The predecessor closed its embedded store for this process
    /// (handover line `S`).
    pub store_released: bool,
    /// These came from a predecessor (`--takeover` found one).
    pub takeover: bool,
}

impl Inherited {
    /// Adds the sockets of one listener group: `configured` is the address
    /// its config named, `local` the one it is bound to.
    pub fn add(&mut self, configured: SocketAddr, local: SocketAddr, sockets: Vec<TcpListener>) {
        self.groups.push((configured, local, sockets));
    }

    /// Takes the group a listener configured on `addr` should use: the one
    /// configured on the same address, or bound to it.
    pub fn take(&mut self, addr: SocketAddr) -> Option<(SocketAddr, Vec<TcpListener>)> {
        let i = self
            .groups
            .iter()
            .position(|(c, l, _)| *c == addr || *l == addr)?;
        let (_, local, sockets) = self.groups.remove(i);
        Some((local, sockets))
    }

    /// Adds the socket of the node listener `kind` (`admin`, `observe`).
    pub fn add_single(
        &mut self,
        kind: &str,
        configured: SocketAddr,
        local: SocketAddr,
        socket: TcpListener,
    ) {
        self.singles
            .push((kind.to_string(), configured, local, socket));
    }

    /// Takes the `kind` socket if it was configured on (or bound to)
    /// `addr`; a listener whose address changed is bound afresh (the
    /// inherited socket closes when this is dropped).
    pub fn take_single(&mut self, kind: &str, addr: SocketAddr) -> Option<TcpListener> {
        let i = self
            .singles
            .iter()
            .position(|(k, c, l, _)| k == kind && (*c == addr || *l == addr))?;
        Some(self.singles.remove(i).3)
    }

    /// How many groups and node sockets were received and not taken
    /// (listeners the new config dropped or moved: their sockets close
    /// when this is dropped).
    pub fn len(&self) -> usize {
        self.groups.len() + self.singles.len()
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.singles.is_empty()
    }
}

impl Listeners {
    /// Binds `workers` nonblocking listeners to `addr`. Port 0 picks a free
    /// port for the first socket and binds the others to that same port.
    pub fn bind(addr: SocketAddr, workers: usize) -> Result<Listeners, ListenError> {
        if workers == 0 || workers > MAX_WORKERS as usize {
            return Err(ListenError::Workers(workers));
        }
        let mut sockets = Vec::with_capacity(workers);
        let mut bound = addr;
        for worker in 0..workers {
            let socket = listen_one(bound).map_err(|(step, source)| ListenError::Socket {
                worker,
                step,
                addr: bound,
                source,
            })?;
            if worker == 0 {
                bound = socket.local_addr().map_err(|source| ListenError::Socket {
                    worker,
                    step: "getsockname",
                    addr: bound,
                    source,
                })?;
            }
            sockets.push(socket);
        }
        Ok(Listeners {
            addr: bound,
            sockets,
            extra: Vec::new(),
        })
    }

    /// Serves `workers` workers from `inherited` sockets bound to `local`
    /// (a predecessor's group, still accepting): no new socket is bound
    /// unless there are more workers than sockets, and those join the same
    /// reuseport group. The group never stops listening, so no connection
    /// is refused across a restart.
    pub fn adopt(
        local: SocketAddr,
        mut inherited: Vec<TcpListener>,
        workers: usize,
    ) -> Result<Listeners, ListenError> {
        if workers == 0 || workers > MAX_WORKERS as usize {
            return Err(ListenError::Workers(workers));
        }
        let extra = if inherited.len() > workers {
            inherited.split_off(workers)
        } else {
            Vec::new()
        };
        for s in &inherited {
            s.set_nonblocking(true)
                .map_err(|source| ListenError::Socket {
                    worker: 0,
                    step: "O_NONBLOCK",
                    addr: local,
                    source,
                })?;
        }
        let mut sockets = inherited;
        while sockets.len() < workers {
            let worker = sockets.len();
            let socket = listen_one(local).map_err(|(step, source)| ListenError::Socket {
                worker,
                step,
                addr: local,
                source,
            })?;
            sockets.push(socket);
        }
        Ok(Listeners {
            addr: local,
            sockets,
            extra,
        })
    }

    /// Inherited sockets beyond the worker count, to be served too.
    pub fn take_extra(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.extra)
    }

    /// The address all workers listen on (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Always false: a group has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Worker `worker`'s listener.
    pub fn get(&self, worker: usize) -> Option<&TcpListener> {
        self.sockets.get(worker)
    }

    /// The listeners in worker order.
    pub fn iter(&self) -> std::slice::Iter<'_, TcpListener> {
        self.sockets.iter()
    }

    /// The listeners in worker order, for handing one to each worker.
    pub fn into_vec(self) -> Vec<TcpListener> {
        self.sockets
    }
}

/// One listener; on failure, the step that failed.
fn listen_one(addr: SocketAddr) -> Result<TcpListener, (&'static str, io::Error)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| ("socket", e))?;
    // Before bind: the kernel joins a reuseport group only at bind time.
    socket
        .set_reuse_port(true)
        .map_err(|e| ("SO_REUSEPORT", e))?;
    // Rebinding while old connections sit in TIME_WAIT (a restart).
    socket
        .set_reuse_address(true)
        .map_err(|e| ("SO_REUSEADDR", e))?;
    if addr.is_ipv6() {
        // A v6 listener takes only v6: a v4 VIP gets its own listeners, and
        // `[::]` must not silently capture v4 connections.
        socket.set_only_v6(true).map_err(|e| ("IPV6_V6ONLY", e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| ("O_NONBLOCK", e))?;
    socket.bind(&addr.into()).map_err(|e| ("bind", e))?;
    socket.listen(BACKLOG).map_err(|e| ("listen", e))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_worker_on_one_port() {
        let l = Listeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(l.len(), 3);
        let port = l.local_addr().port();
        assert_ne!(port, 0);
        for s in l.iter() {
            assert_eq!(s.local_addr().unwrap(), l.local_addr());
        }
        // A socket without SO_REUSEPORT cannot join the group.
        assert!(TcpListener::bind(l.local_addr()).is_err());
    }

    #[test]
    fn v6_listeners_are_v6_only() {
        let Ok(l) = Listeners::bind("[::1]:0".parse().unwrap(), 2) else {
            return; // no IPv6 loopback on this host
        };
        let s: Socket = l.into_vec().remove(0).into();
        assert!(s.only_v6().unwrap());
        assert!(s.nonblocking().unwrap_or(true));
    }

    #[test]
    fn adopted_sockets_keep_their_queued_connections() {
        let old = Listeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = old.local_addr();
        // A client connects while the old process still owns the group.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let handed: Vec<TcpListener> = old.iter().map(|s| s.try_clone().unwrap()).collect();
        drop(old);
        let mut new = Listeners::adopt(addr, handed, 3).unwrap();
        assert_eq!(new.len(), 3);
        assert!(new.take_extra().is_empty());
        // The queued connection is accepted by the new owner.
        let mut accepted = None;
        for _ in 0..100 {
            for s in new.iter() {
                if let Ok((c, _)) = s.accept() {
                    accepted = Some(c);
                }
            }
            if accepted.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let accepted = accepted.expect("the queued connection was accepted");
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    }

    #[test]
    fn refuses_zero_or_too_many_workers() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(matches!(
            Listeners::bind(a, 0),
            Err(ListenError::Workers(0))
        ));
        let too_many = MAX_WORKERS as usize + 1;
        assert!(matches!(
            Listeners::bind(a, too_many),
            Err(ListenError::Workers(n)) if n == too_many
        ));
    }
}
