//! Sending exact Ethernet frames out of an interface (AF_PACKET), for tests
//! that must know every byte that crosses the wire.
//!
//! Written against libc directly: socket2 has no `sockaddr_ll` support, and
//! this is one socket call and one sendto.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::bail;

/// A raw packet socket bound to one interface of the calling thread's netns.
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Opens the socket; call it inside `Netns::enter` for a namespace's link.
    pub fn open(ifindex: u32) -> anyhow::Result<RawSender> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RawSender {
            fd,
            ifindex: ifindex as i32,
        })
    }

    /// Sends one whole frame (Ethernet header included, no FCS).
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            bail!("short send: {n} of {} bytes", frame.len());
        }
        Ok(())
    }
}
