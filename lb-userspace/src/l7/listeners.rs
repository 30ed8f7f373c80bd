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
        })
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
