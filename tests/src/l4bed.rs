//! An L4 load-balancing testbed: a switch namespace with a Linux bridge, and
//! a client, an LB and three backend namespaces, each joined to the bridge
//! by a veth pair (the bridge ports live in the switch namespace).
//!
//! ```text
//!                      [switch]  br0
//!        p-cl ─┬─ p-lb ─┬─ p-b1 ─┬─ p-b2 ─┬─ p-b3
//!   [client] eth0   [lb] eth0  [b1] eth0  [b2] eth0  [b3] eth0
//!   192.0.2.1       192.0.2.2  .11        .12        .13
//!   2001:db8::1     ::2        ::11       ::12       ::13
//! ```
//!
//! The client routes the VIPs (203.0.113.10, 2001:db8:ffff::10) via the LB;
//! every backend holds them on `lo` (rp_filter off, arp_ignore=1,
//! arp_announce=2) and serves them: TCP port 80 answers every line it
//! receives with the backend's name, UDP port 53 answers every datagram
//! with it (from the VIP).
//!
//! Two kernel details make `XDP_TX` on the LB's veth deliverable:
//!
//! - The LB's bridge port (`p-lb`) runs a 2-instruction `XDP_PASS`
//!   program, loaded here with raw `bpf(2)` calls and held by a bpf_link.
//!   GRO alone is not enough on this kernel (checked: 6.18): `XDP_TX`
//!   queues the frame on the peer's ring, but `veth_xdp_flush` only kicks
//!   the peer's NAPI when the peer has an XDP program, so with GRO only the
//!   frames sit in the ring until something else schedules that NAPI. The
//!   decap program would do, but it would strip IPIP at the switch.
//! - The client's transmit checksum offload is off (`ethtool -K eth0 tx
//!   off`, through the `SIOCETHTOOL` ioctl, so no `ethtool` binary is
//!   needed). XDP works on frames, not skbs: a TCP/UDP checksum the sender
//!   left to "hardware" (CHECKSUM_PARTIAL, normal between veths) reaches the
//!   backends wrong after `XDP_TX` and they drop the packet. A real NIC never
//!   hands the LB such frames.
//!
//! Everything is removed on drop: server threads stop and are joined, the
//! XDP link is closed, namespaces are deleted.
use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use nix::sys::{
    socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage},
    time::TimeVal,
};

use crate::{
    netns::{veth, Netns},
    process::ChildGuard,
    xlb,
};

/// The client's addresses.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The LB's addresses (the client's next hop for the VIPs).
pub const LB4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The LB's IPv6 address.
pub const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10);
/// Port of the backends' TCP line server.
pub const TCP_PORT: u16 = 80;
/// Port of the backends' UDP name server.
pub const UDP_PORT: u16 = 53;
/// The link name in every namespace but the switch.
pub const IFACE: &str = "eth0";

/// Most connections one TCP listener serves at once; more are closed.
const MAX_CONNS_PER_LISTENER: usize = 1024;
/// How often server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// One backend host.
#[derive(Debug)]
pub struct Backend {
    /// `backend1`…: what its servers answer.
    pub name: String,
    /// Its namespace.
    pub ns: Netns,
    /// Its address on the shared link.
    pub v4: Ipv4Addr,
    /// Its IPv6 address on the shared link.
    pub v6: Ipv6Addr,
}

/// The whole topology. Field order is drop order: the server threads and
/// the XDP link end before the namespaces go. Decap processes
/// ([`L4Bed::start_decap`]) belong to the caller: drop or stop them first
/// (deleting a namespace kills what still runs inside it anyway).
#[derive(Debug)]
pub struct L4Bed {
    servers: Servers,
    /// The bpf_link holding `XDP_PASS` on the LB's bridge port.
    _xdp_pass: Option<OwnedFd>,
    /// The same for the ports of second LB NICs ([`L4Bed::add_lb_nic`]).
    extra_xdp_pass: Vec<OwnedFd>,
    /// The backends, `backend1`, `backend2`, `backend3`.
    pub backends: Vec<Backend>,
    /// Where the test's connections come from.
    pub client: Netns,
    /// Where xlb runs (on [`IFACE`]).
    pub lb: Netns,
    /// Holds the bridge.
    pub switch: Netns,
}

impl L4Bed {
    /// Builds the topology with three backends and starts their servers.
    pub fn new() -> anyhow::Result<L4Bed> {
        Self::with_backends(3)
    }

    /// Builds the topology with `n` (1..=9) backends and starts their
    /// servers.
    pub fn with_backends(n: u8) -> anyhow::Result<L4Bed> {
        assert!((1..=9).contains(&n), "1 to 9 backends");
        let switch = Netns::new("l4sw")?;
        let client = Netns::new("l4cl")?;
        let lb = Netns::new("l4lb")?;
        let mut backends = Vec::new();
        for i in 1..=n {
            backends.push(Backend {
                name: format!("backend{i}"),
                ns: Netns::new(&format!("l4b{i}"))?,
                v4: Ipv4Addr::new(192, 0, 2, 10 + i),
                v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + i as u16),
            });
        }
        let mut bed = L4Bed {
            servers: Servers::default(),
            _xdp_pass: None,
            extra_xdp_pass: Vec::new(),
            backends,
            client,
            lb,
            switch,
        };
        bed._xdp_pass = Some(bed.wire().context("building the L4 testbed")?);
        bed.servers = Servers::start(&bed.backends).context("starting the backend servers")?;
        Ok(bed)
    }

    /// Makes the links and addresses; returns the link fd of the
    /// `XDP_PASS` program on `p-lb`.
    fn wire(&self) -> anyhow::Result<OwnedFd> {
        let all: Vec<&Netns> = [&self.switch, &self.client, &self.lb]
            .into_iter()
            .chain(self.backends.iter().map(|b| &b.ns))
            .collect();
        // Fresh links must be usable at once: without a DAD-completed
        // link-local address the kernel sends no neighbour solicitation.
        for ns in &all {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        let sw = &self.switch;
        sw.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"])?;
        // No multicast snooping: neighbour discovery must flood.
        sw.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "forward_delay",
            "0",
        ])?;
        sw.up("br0")?;
        let mut ports: Vec<(&Netns, String)> =
            vec![(&self.client, "p-cl".into()), (&self.lb, "p-lb".into())];
        for (i, b) in self.backends.iter().enumerate() {
            ports.push((&b.ns, format!("p-b{}", i + 1)));
        }
        for (ns, port) in &ports {
            veth(sw, port, ns, IFACE)?;
            sw.ip(&["link", "set", port, "master", "br0"])?;
        }
        // XDP_TX out of the LB's eth0 lands on p-lb: it needs an XDP
        // program of its own (see the module documentation).
        let xdp_pass = attach_xdp_pass(sw, "p-lb")?;

        let c = &self.client;
        c.addr(IFACE, &format!("{CLIENT4}/24"))?;
        c.addr(IFACE, &format!("{CLIENT6}/64"))?;
        c.ip(&[
            "route",
            "add",
            &format!("{VIP4}/32"),
            "via",
            &LB4.to_string(),
        ])?;
        c.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP6}/128"),
            "via",
            &LB6.to_string(),
        ])?;
        set_offload(c, IFACE, Offload::TxChecksum, false)?;

        self.lb.addr(IFACE, &format!("{LB4}/24"))?;
        self.lb.addr(IFACE, &format!("{LB6}/64"))?;

        for b in &self.backends {
            let ns = &b.ns;
            for (key, value) in [
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.lo.rp_filter", "0"),
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
            ] {
                ns.sysctl(key, value)?;
            }
            ns.sysctl(&format!("net.ipv4.conf.{IFACE}.rp_filter"), "0")?;
            ns.addr(IFACE, &format!("{}/24", b.v4))?;
            ns.addr(IFACE, &format!("{}/64", b.v6))?;
            ns.addr("lo", &format!("{VIP4}/32"))?;
            ns.addr("lo", &format!("{VIP6}/128"))?;
        }
        Ok(xdp_pass)
    }

    /// Gives the LB a second NIC, `dev`, joined to the same bridge (port
    /// `port`, which runs `XDP_PASS` so that frames redirected into `dev`
    /// are delivered). It has no address: xlb only sends through it, and
    /// the LB answers ARP only on the interface that holds the address
    /// asked for, so the client keeps sending to eth0.
    pub fn add_lb_nic(&mut self, dev: &str, port: &str) -> anyhow::Result<()> {
        self.lb.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        self.lb.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        veth(&self.switch, port, &self.lb, dev)?;
        self.switch.ip(&["link", "set", port, "master", "br0"])?;
        self.extra_xdp_pass
            .push(attach_xdp_pass(&self.switch, port)?);
        Ok(())
    }

    /// The backend with this address (either family).
    pub fn backend_by_addr(&self, addr: IpAddr) -> Option<&Backend> {
        self.backends
            .iter()
            .find(|b| IpAddr::V4(b.v4) == addr || IpAddr::V6(b.v6) == addr)
    }

    /// The name of the backend with this address.
    pub fn backend_name(&self, addr: IpAddr) -> Option<&str> {
        self.backend_by_addr(addr).map(|b| b.name.as_str())
    }

    /// Starts `xlb decap --iface eth0` in every backend, waiting for each
    /// to be attached.
    pub fn start_decap(&self) -> anyhow::Result<Vec<Decap>> {
        self.backends
            .iter()
            .map(|b| Decap::start(&b.ns, IFACE).with_context(|| format!("decap on {}", b.name)))
            .collect()
    }
}

/// Offloads this testbed changes.
#[derive(Debug, Clone, Copy)]
pub enum Offload {
    /// Generic receive offload (`ethtool -K DEV gro on|off`).
    Gro,
    /// Transmit checksum offload (`ethtool -K DEV tx on|off`).
    TxChecksum,
}

/// `ethtool -K DEV gro|tx on|off` inside `ns`, through the legacy
/// `SIOCETHTOOL` ioctl (no `ethtool` binary needed).
pub fn set_offload(ns: &Netns, dev: &str, what: Offload, on: bool) -> anyhow::Result<()> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if dev.len() >= libc::IFNAMSIZ {
        bail!("interface name {dev} too long");
    }
    let cmd = match what {
        Offload::Gro => ETHTOOL_SGRO,
        Offload::TxChecksum => ETHTOOL_STXCSUM,
    };
    let dev_owned = dev.to_string();
    ns.enter(move || -> anyhow::Result<()> {
        let sock = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("socket for SIOCETHTOOL")?;
        let mut value = EthtoolValue {
            cmd,
            data: on as u32,
        };
        let mut req = Ifreq {
            name: [0; libc::IFNAMSIZ],
            data: &mut value as *mut EthtoolValue as *mut libc::c_void,
            _pad: [0; 16],
        };
        for (d, s) in req.name.iter_mut().zip(dev_owned.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: `req` is a valid ifreq whose data points at a live
        // ethtool_value for the duration of the call.
        let rc = unsafe {
            libc::ioctl(
                sock.as_fd().as_raw_fd(),
                libc::SIOCETHTOOL as _,
                &mut req as *mut Ifreq,
            )
        };
        if rc < 0 {
            bail!(
                "SIOCETHTOOL {what:?}={on} on {dev_owned}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    })?
    .with_context(|| format!("in namespace {}", ns.name()))
}

/// More LB nodes on `bed`'s switch, one per address (`<role><n>`
/// namespaces, `eth0` with the address in the bed's /24, its switch port
/// `p-lb<n>` with an `XDP_PASS` program so that `XDP_TX` out of the node
/// lands there, see [`attach_xdp_pass`]). `first` numbers the first node.
pub fn extra_lb_nodes(
    bed: &L4Bed,
    role: &str,
    addrs: &[&str],
    first: usize,
) -> anyhow::Result<(Vec<Netns>, Vec<OwnedFd>)> {
    let sw = &bed.switch;
    let (mut nodes, mut passes) = (Vec::new(), Vec::new());
    for (i, addr) in addrs.iter().enumerate() {
        let n = first + i;
        let ns = Netns::new(&format!("{role}{n}"))?;
        let port = format!("p-lb{n}");
        veth(sw, &port, &ns, "eth0")?;
        sw.ip(&["link", "set", &port, "master", "br0"])?;
        passes.push(attach_xdp_pass(sw, &port)?);
        ns.addr("eth0", &format!("{addr}/24"))?;
        nodes.push(ns);
    }
    Ok((nodes, passes))
}

/// Loads a two-instruction program that returns `XDP_PASS` and attaches it
/// in native mode to `dev` in `ns` through a bpf_link (raw `bpf(2)`: this
/// library does not depend on aya). Closing the returned fd detaches it.
pub fn attach_xdp_pass(ns: &Netns, dev: &str) -> anyhow::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    fn put(attr: &mut [u8], at: usize, bytes: &[u8]) {
        attr[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
        // SAFETY: `attr` is a zero-padded bpf_attr for `cmd`, and every
        // pointer in it refers to memory alive for the duration of the call.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
    let ifindex = ns.ifindex(dev)?;
    let dev = dev.to_string();
    ns.enter(move || -> anyhow::Result<OwnedFd> {
        // r0 = 2 (XDP_PASS); exit.
        let insns: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 2, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
        put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 48, b"xlbt_pass");
        put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading an XDP_PASS program")?;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 4, &ifindex.to_ne_bytes());
        put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
        put(&mut attr, 12, &XDP_FLAGS_DRV_MODE.to_ne_bytes());
        bpf(BPF_LINK_CREATE, &mut attr).with_context(|| format!("attaching XDP_PASS to {dev}"))
    })?
    .with_context(|| format!("in namespace {}", ns.name()))
}

/// The backends' server threads; dropping this stops and joins them.
#[derive(Debug, Default)]
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(backends: &[Backend]) -> anyhow::Result<Servers> {
        let mut servers = Servers::default();
        for b in backends {
            // Bound inside the backend's namespace; they stay there.
            let (tcp, udp) = b.ns.enter(|| -> std::io::Result<_> {
                let tcp = vec![
                    TcpListener::bind(SocketAddr::from((VIP4, TCP_PORT)))?,
                    TcpListener::bind(SocketAddr::from((VIP6, TCP_PORT)))?,
                ];
                let udp = vec![
                    UdpSocket::bind(SocketAddr::from((VIP4, UDP_PORT)))?,
                    UdpSocket::bind(SocketAddr::from((VIP6, UDP_PORT)))?,
                ];
                Ok((tcp, udp))
            })??;
            for l in tcp {
                l.set_nonblocking(true)?;
                let stop = servers.stop.clone();
                let name = b.name.clone();
                servers
                    .threads
                    .push(std::thread::spawn(move || tcp_server(l, name, stop)));
            }
            for s in udp {
                s.set_read_timeout(Some(POLL))?;
                let stop = servers.stop.clone();
                let name = b.name.clone();
                servers
                    .threads
                    .push(std::thread::spawn(move || udp_server(s, name, stop)));
            }
        }
        Ok(servers)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_server(listener: TcpListener, name: String, stop: Arc<AtomicBool>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                conns.retain(|c| !c.is_finished());
                if conns.len() >= MAX_CONNS_PER_LISTENER {
                    continue; // dropped: closed
                }
                if s.set_nonblocking(false).is_err() || s.set_read_timeout(Some(POLL)).is_err() {
                    continue;
                }
                let stop = stop.clone();
                let reply = format!("{name}\n");
                conns.push(std::thread::spawn(move || serve_lines(s, reply, stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Answers every line with `reply` until EOF, an error, or `stop`.
fn serve_lines(mut s: TcpStream, reply: String, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                for _ in buf[..n].iter().filter(|&&b| b == b'\n') {
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn udp_server(s: UdpSocket, name: String, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // A timeout just means: look at the flag again.
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), peer);
        }
    }
}

/// Opens a TCP connection from exactly `src` (address and port) to `dst`,
/// giving up after `timeout`. Call it inside the source's namespace
/// ([`Netns::enter`]).
pub fn tcp_connect_from(
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<TcpStream> {
    let family = if src.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let tv = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    // connect(2) honours the send timeout.
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(src))
        .with_context(|| format!("bind {src}"))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) => {}
        // What connect(2) returns when the send timeout expires first.
        Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN) => {
            bail!("connect {src} -> {dst}: no answer within {timeout:?}")
        }
        Err(e) => bail!("connect {src} -> {dst}: {e}"),
    }
    Ok(TcpStream::from(fd))
}

/// A UDP socket bound to exactly `src` and connected to `dst`, with
/// `timeout` on reads. Call it inside the source's namespace.
pub fn udp_from(src: SocketAddr, dst: SocketAddr, timeout: Duration) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind(src).with_context(|| format!("bind udp {src}"))?;
    s.connect(dst)?;
    s.set_read_timeout(Some(timeout))?;
    Ok(s)
}

/// Sends one line on `s` and reads one line back (the backend's name).
/// Fails on a reset, EOF, or when nothing comes within the socket's read
/// timeout.
pub fn ask_tcp(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"who\n")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match s.read(&mut byte)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => line.push(byte[0]),
        }
    }
    Err(std::io::Error::other("reply line too long"))
}

/// Sends one datagram on `s` and returns the answer, trying up to
/// `attempts` times (each bounded by the socket's read timeout).
pub fn ask_udp(s: &UdpSocket, attempts: u32) -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    let mut last = std::io::Error::from(ErrorKind::TimedOut);
    for _ in 0..attempts {
        s.send(b"who")?;
        match s.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A running `xlb decap --iface IF` inside a backend namespace.
#[derive(Debug)]
pub struct Decap {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    iface: String,
}

impl Decap {
    /// Starts it and waits (up to 30 s) for `xlb decap ready iface=IF`.
    pub fn start(ns: &Netns, iface: &str) -> anyhow::Result<Decap> {
        let bin = xlb::binary();
        if !bin.is_file() {
            bail!(
                "{} does not exist: run `cargo xtask build` (or set XLB_BIN)",
                bin.display()
            );
        }
        let child = ns
            .command(&bin)
            .args(["decap", "--iface", iface])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} decap", bin.display()))?;
        let mut child = ChildGuard::new(child);
        let stdout = child.child_mut().stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = format!("xlb decap ready iface={iface}");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == want => break,
                Ok(_) => continue,
                Err(_) => bail!("`xlb decap --iface {iface}` did not print `{want}` within 30 s"),
            }
        }
        Ok(Decap {
            child,
            lines: rx,
            iface: iface.into(),
        })
    }

    /// SIGTERM; returns N from the final `xlb decap done decapsulated=N`.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        let status = self.child.terminate(Duration::from_secs(10))?;
        if !status.success() {
            bail!("xlb decap on {} exited with {status}", self.iface);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!("xlb decap on {} printed no `done` line", self.iface)
            })?;
            if let Some(n) = line.trim().strip_prefix("xlb decap done decapsulated=") {
                return n.parse().with_context(|| format!("bad count in `{line}`"));
            }
        }
    }
}
