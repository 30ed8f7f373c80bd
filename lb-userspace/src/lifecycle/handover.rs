//! Handing a running instance to a new process (restart, binary upgrade)
//! without closing a listening socket or leaving the maps unowned.
//!
//! The running process listens on `/run/xlb/<instance>.handover`, a
//! `SOCK_SEQPACKET` Unix socket (message boundaries kept, so each group of
//! descriptors arrives with the line that names it). A successor started
//! with `xlb run --takeover` connects and the two speak:
//!
//! ```text
//! old → new   G <configured addr> <bound addr>   + SCM_RIGHTS: the group's sockets
//!             … one G per L7 listener group …
//! old → new   N <kind> <configured addr> <bound addr>  + SCM_RIGHTS: one socket
//!             … one N per node listener: `admin` (the admin API), `observe` …
//! old → new   S          (embedded store only: old stopped its admin API and
//!                         closed the database file; new may open it)
//! old → new   R          (old stopped writing the maps and let go of the instance lock)
//! new → old   OK <pid>   (new serves everything: old stops accepting, drains, exits)
//! ```
//!
//! The successor adopts each socket whose configured (or bound) address
//! its own config names, and binds afresh a listener whose address
//! changed.
//!
//! If the successor closes the connection (or stays silent past the
//! timeout) without `OK`, the old process takes the instance lock back
//! and goes on as before: its listeners never stopped accepting.
//! Descriptors are passed with SCM_RIGHTS (unix(7)), the way HAProxy,
//! Envoy and Pingora hand sockets over; the kernel keeps one socket with
//! one accept queue, so nothing queued is lost.
use std::{
    io::{IoSlice, IoSliceMut},
    net::{SocketAddr, TcpListener},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::socket::{
    accept, bind, connect, listen, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily,
    Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::l7::Inherited;

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD` is
/// 253); a group larger than this is sent as several `G` messages.
const FDS_PER_MESSAGE: usize = 250;

/// Longest control line.
const MAX_LINE: usize = 512;

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("handover protocol: {0}")]
    Protocol(String),
    #[error("no running instance to take over at {path}", path = path.display())]
    NoPredecessor { path: PathBuf },
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> HandoverError {
    move |source| HandoverError::Sys { step, source }
}

/// Where instance `instance` listens for a successor.
pub fn socket_path(instance: &str) -> PathBuf {
    PathBuf::from("/run/xlb").join(format!("{instance}.handover"))
}

/// A bound handover socket, waiting for a successor.
#[derive(Debug)]
pub struct HandoverListener {
    fd: OwnedFd,
    path: PathBuf,
    /// The socket file's (device, inode) when this process put it there,
    /// so that a stop removes its own file and never a newer process's.
    file: (u64, u64),
}

impl HandoverListener {
    /// Binds the instance's handover socket and puts it at the instance's
    /// path, replacing what is there (a stale file, or the socket of the
    /// process this one takes over from).
    ///
    /// The socket is bound under a name of its own (pid and a counter), then
    /// renamed into place: rename(2) replaces atomically, so two processes
    /// starting at once never fail with EADDRINUSE between one's unlink
    /// and the other's bind, and the path always names a live socket.
    pub fn bind(instance: &str) -> Result<HandoverListener, HandoverError> {
        HandoverListener::bind_at(socket_path(instance))
    }

    fn bind_at(path: PathBuf) -> Result<HandoverListener, HandoverError> {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        static STAGED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = path.with_extension(format!("handover.{}.{n}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sys("socket"))?;
        let addr = UnixAddr::new(&staged).map_err(sys("socket path"))?;
        bind(fd.as_raw_fd(), &addr).map_err(sys("bind"))?;
        listen(&fd, Backlog::new(4).map_err(sys("backlog"))?).map_err(sys("listen"))?;
        // Only root (the daemon's user) may take the instance over.
        let _ = std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600));
        let placed = std::fs::metadata(&staged)
            .and_then(|m| std::fs::rename(&staged, &path).map(|()| (m.dev(), m.ino())));
        let file = placed.map_err(|source| {
            let _ = std::fs::remove_file(&staged);
            HandoverError::Io {
                step: "placing the handover socket",
                source,
            }
        })?;
        Ok(HandoverListener { fd, path, file })
    }

    /// A second handle on the same socket (for the accepting thread).
    pub fn try_clone(&self) -> std::io::Result<HandoverListener> {
        Ok(HandoverListener {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            file: self.file,
        })
    }

    /// Waits for a successor to connect (blocking).
    pub fn accept(&self) -> Result<OwnedFd, HandoverError> {
        let raw = accept(self.fd.as_raw_fd()).map_err(sys("accept"))?;
        // SAFETY: accept returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file on a stop, if it is still this process's:
    /// after a handover (or when another run of the same instance name
    /// started later) the path names another process's socket.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.file => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {}
        }
    }
}

/// The old process's side, part one: sends every listener group.
pub fn send_groups(
    conn: &OwnedFd,
    groups: &[(SocketAddr, SocketAddr, &[TcpListener])],
) -> Result<(), HandoverError> {
    for (configured, local, sockets) in groups {
        for chunk in sockets.chunks(FDS_PER_MESSAGE) {
            let fds: Vec<RawFd> = chunk.iter().map(|s| s.as_raw_fd()).collect();
            send(conn, &format!("G {configured} {local}"), &fds)?;
        }
    }
    Ok(())
}

/// The old process's side: sends the socket of a node listener (`admin`,
/// `observe`).
pub fn send_single(
    conn: &OwnedFd,
    kind: &str,
    configured: SocketAddr,
    local: SocketAddr,
    socket: &TcpListener,
) -> Result<(), HandoverError> {
    send(
        conn,
        &format!("N {kind} {configured} {local}"),
        &[socket.as_raw_fd()],
    )
}

/// The old process's side: says the embedded store's file is closed.
pub fn send_store_released(conn: &OwnedFd) -> Result<(), HandoverError> {
    send(conn, "S", &[])
}

/// The old process's side, part two: says the maps and lock are released.
pub fn send_released(conn: &OwnedFd) -> Result<(), HandoverError> {
    send(conn, "R", &[])
}

/// The old process's side, part three: waits for the successor's `OK`.
/// Returns its pid, or an error when it went away or stayed silent.
pub fn wait_ready(conn: &OwnedFd, timeout: Duration) -> Result<u32, HandoverError> {
    setsockopt(conn, sockopt::ReceiveTimeout, &timeval(timeout)).map_err(sys("SO_RCVTIMEO"))?;
    let (line, _) = recv(conn)?;
    match line.strip_prefix("OK ").map(str::parse::<u32>) {
        Some(Ok(pid)) => Ok(pid),
        _ if line.is_empty() => Err(HandoverError::Protocol(
            "the successor went away before it was ready".into(),
        )),
        _ => Err(HandoverError::Protocol(format!("unexpected `{line}`"))),
    }
}

/// A successor's connection to its predecessor, between receiving the
/// sockets and saying it is ready.
#[derive(Debug)]
pub struct Takeover {
    conn: OwnedFd,
}

impl Takeover {
    /// Connects to the running `instance` and receives its listener groups;
    /// returns once it has let go of the maps and the instance lock.
    pub fn begin(
        instance: &str,
        timeout: Duration,
    ) -> Result<(Takeover, Inherited), HandoverError> {
        let path = socket_path(instance);
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sys("socket"))?;
        let addr = UnixAddr::new(&path).map_err(sys("socket path"))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED) => {
                return Err(HandoverError::NoPredecessor { path })
            }
            Err(e) => return Err(sys("connect")(e)),
        }
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(timeout)).map_err(sys("SO_RCVTIMEO"))?;
        let mut inherited = Inherited::default();
        inherited.takeover = true;
        loop {
            let (line, fds) = recv(&fd)?;
            let mut words = line.split_whitespace();
            match words.next() {
                Some("R") => break,
                Some("S") => inherited.store_released = true,
                Some("N") => {
                    let bad = || HandoverError::Protocol(format!("bad node line `{line}`"));
                    let kind = words.next().ok_or_else(bad)?.to_string();
                    let mut addr = || -> Result<SocketAddr, HandoverError> {
                        words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)
                    };
                    let configured = addr()?;
                    let local = addr()?;
                    let socket = fds.into_iter().next().ok_or_else(bad)?;
                    inherited.add_single(&kind, configured, local, TcpListener::from(socket));
                }
                Some("G") => {
                    let mut addr = || -> Result<SocketAddr, HandoverError> {
                        words.next().and_then(|w| w.parse().ok()).ok_or_else(|| {
                            HandoverError::Protocol(format!("bad group line `{line}`"))
                        })
                    };
                    let configured = addr()?;
                    let local = addr()?;
                    let sockets = fds.into_iter().map(TcpListener::from).collect();
                    inherited.add(configured, local, sockets);
                }
                _ if line.is_empty() => {
                    return Err(HandoverError::Protocol(
                        "the running instance closed the handover".into(),
                    ))
                }
                _ => return Err(HandoverError::Protocol(format!("unexpected `{line}`"))),
            }
        }
        Ok((Takeover { conn: fd }, inherited))
    }

    /// Tells the predecessor that this process serves everything now.
    pub fn finish(self) -> Result<(), HandoverError> {
        send(&self.conn, &format!("OK {}", std::process::id()), &[])
    }
}

fn timeval(d: Duration) -> nix::sys::time::TimeVal {
    nix::sys::time::TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

fn send(conn: &OwnedFd, line: &str, fds: &[RawFd]) -> Result<(), HandoverError> {
    let iov = [IoSlice::new(line.as_bytes())];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(
        conn.as_fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("sendmsg"))?;
    Ok(())
}

/// One message: its line (empty at end of stream) and its descriptors.
fn recv(conn: &OwnedFd) -> Result<(String, Vec<OwnedFd>), HandoverError> {
    let mut buf = [0u8; MAX_LINE];
    let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("recvmsg"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(sys("control messages"))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel installed these descriptors for us; nothing
            // else owns them.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(HandoverError::Protocol("descriptors were truncated".into()));
    }
    let n = msg.bytes;
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok((line, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole exchange over a socketpair, with real listening sockets:
    /// a connection queued before the handover is accepted after it.
    #[test]
    fn a_later_run_replaces_the_socket_and_an_earlier_stop_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.handover");
        // Many binds at once: none fails, and the path names a live socket.
        let listeners: Vec<HandoverListener> = std::thread::scope(|s| {
            let joins: Vec<_> = (0..8)
                .map(|_| s.spawn(|| HandoverListener::bind_at(path.clone())))
                .collect();
            joins
                .into_iter()
                .map(|j| j.join().unwrap())
                .collect::<Vec<_>>()
        })
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every concurrent bind succeeds");
        let first = HandoverListener::bind_at(path.clone()).unwrap();
        let later = HandoverListener::bind_at(path.clone()).unwrap();
        first.remove();
        for l in &listeners {
            l.remove();
        }
        assert!(
            path.exists(),
            "an earlier run's stop removed a later run's socket"
        );
        let probe = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        connect(probe.as_raw_fd(), &UnixAddr::new(&path).unwrap()).expect("later socket answers");
        later
            .accept()
            .expect("the later run accepts the connection");
        later.remove();
        assert!(!path.exists(), "a run's stop removes its own socket");
        let staged: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(staged.is_empty(), "staged socket files left: {staged:?}");
    }

    #[test]
    fn groups_and_ready_cross_a_socketpair() {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l1.local_addr().unwrap();
        let queued = std::net::TcpStream::connect(addr).unwrap();
        let configured: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let socks = [l1];
        send_groups(&a, &[(configured, addr, &socks)]).unwrap();
        send_released(&a).unwrap();
        drop(socks);
        let new = std::thread::spawn(move || {
            let mut inherited = Inherited::default();
            loop {
                let (line, fds) = recv(&b).unwrap();
                if line == "R" {
                    break;
                }
                let mut w = line.split_whitespace().skip(1);
                let c: SocketAddr = w.next().unwrap().parse().unwrap();
                let l: SocketAddr = w.next().unwrap().parse().unwrap();
                inherited.add(c, l, fds.into_iter().map(TcpListener::from).collect());
            }
            let (local, mut got) = inherited.take(configured).unwrap();
            let s = got.remove(0);
            let (conn, _) = s.accept().unwrap();
            Takeover { conn: b }.finish().unwrap();
            (local, conn.peer_addr().unwrap())
        });
        let pid = wait_ready(&a, Duration::from_secs(5)).unwrap();
        assert_eq!(pid, std::process::id());
        let (local, peer) = new.join().unwrap();
        assert_eq!(local, addr);
        assert_eq!(peer, queued.local_addr().unwrap());
    }

    #[test]
    fn a_successor_that_goes_away_is_not_ready() {
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        drop(b);
        assert!(wait_ready(&a, Duration::from_secs(1)).is_err());
    }
}
