//! Next-hop MAC resolution for DSR backends and IPIP next hops.
//!
//! The XDP balancer forwards an L4 packet by rewriting its destination MAC
//! (DSR) or by encapsulating it in IPIP towards a backend; either way the
//! frame leaves with the MAC of the next hop on the way to the backend. This
//! module finds that MAC the way the kernel itself would, through rtnetlink:
//!
//! 1. `RTM_GETROUTE` for the backend's address (as `ip route get ADDR`) gives
//!    the output interface and the gateway, if the backend is not on-link.
//! 2. The next hop is the gateway, or the backend itself. `RTM_GETNEIGH` for
//!    that address on that interface (as `ip neigh get`) gives its MAC when the
//!    entry is in a usable state.
//! 3. Otherwise resolution is triggered as Cilium does: an `RTM_NEWNEIGH` that
//!    creates (or replaces) the entry with the `NTF_EXT_MANAGED` extended flag
//!    (Linux 5.16+). The kernel resolves a managed entry at once and keeps it
//!    fresh afterwards, which matters because XDP-forwarded frames never pass
//!    through the kernel's neighbour code and so never refresh it themselves.
//!    Should the kernel refuse the flag, or the entry be missing or failed
//!    while waiting, resolution is kicked with `NTF_USE` (the netlink form of
//!    "a packet wants to go there": the kernel sends one ARP request or
//!    neighbour solicitation; no data packet is sent).
//! 4. The entry is polled every 20 ms until it is usable or the timeout
//!    passes. A managed entry that this call created for an address that never
//!    answered is deleted again, so that a failed resolution leaves nothing
//!    probing behind.
//!
//! Everything runs in the network namespace of the thread that first polls
//! the future: the netlink socket is opened there, before the first await,
//! and all later requests go through it.
//!
//! rtnetlink 0.24 covers steps 1, 3 and the deletion. Its neighbour `get()`
//! only dumps the whole table (`NLM_F_DUMP`), which would be a full-table
//! copy every 20 ms on a host with many neighbours, so step 2 sends the
//! single-entry `RTM_GETNEIGH` request itself through [`rtnetlink::Handle::request`].
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST},
    packet_route::{
        link::LinkAttribute,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags,
            NeighbourMessage, NeighbourState,
        },
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
        AddressFamily, RouteNetlinkMessage,
    },
    Handle,
};

/// How often the neighbour entry is read while it is being resolved.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long to wait before kicking a missing or failed entry again.
const KICK_INTERVAL: Duration = Duration::from_secs(1);

// Neighbour states (`NUD_*`, a bit mask on the wire).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// States whose link-layer address may be used: the kernel's `NUD_VALID`.
/// (`NOARP` is what the kernel uses itself on links without neighbour
/// discovery: the address is then the one the kernel would send to.)
const NUD_VALID: u16 =
    NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY;

/// Where frames for an address go: the interface, the next hop's MAC, and
/// whether the backend is on-link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The output interface of the route to the address.
    pub ifindex: u32,
    /// The MAC of the next hop: the address's own, or its gateway's.
    pub mac: [u8; 6],
    /// The gateway the route goes through; `None` when the address is on-link.
    pub gateway: Option<IpAddr>,
}

/// Why a next hop could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    /// The routing table has no route to the address (or an unreachable or
    /// prohibit route).
    #[error("no route to {addr}: {reason}")]
    NoRoute { addr: IpAddr, reason: String },
    /// The address is routed, but not to a next hop (it is local, broadcast,
    /// multicast, …): there is no neighbour to send frames to.
    #[error("{addr} has a {kind} route, not a unicast route through a next hop")]
    NotUnicast { addr: IpAddr, kind: String },
    /// The next hop did not answer ARP / neighbour solicitation in time.
    #[error(
        "resolving the MAC of {next_hop}{for_addr} on {ifname} (ifindex {ifindex}) timed out \
         after {timeout:?} (neighbour state: {state})",
        for_addr = if next_hop == addr { String::new() } else { format!(" (gateway for {addr})") }
    )]
    Timeout {
        addr: IpAddr,
        next_hop: IpAddr,
        ifindex: u32,
        ifname: String,
        timeout: Duration,
        state: String,
    },
    /// The next hop's link-layer address is not a 6-byte Ethernet MAC.
    #[error(
        "the neighbour entry of {next_hop} on {ifname} (ifindex {ifindex}) has a {len}-byte \
         link-layer address; only Ethernet (6 bytes) can be forwarded to"
    )]
    NotEthernet {
        next_hop: IpAddr,
        ifindex: u32,
        ifname: String,
        len: usize,
    },
    /// A netlink request failed.
    #[error("netlink {op} for {addr} failed: {source}")]
    Netlink {
        op: &'static str,
        addr: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    /// A netlink socket or the runtime could not be set up.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Finds the interface and next-hop MAC for frames to `addr`, triggering
/// neighbour resolution if the kernel does not know the MAC yet and waiting
/// at most about `timeout` for it. See the module documentation for the steps.
///
/// Runs in the network namespace of the thread that first polls the future.
/// Must run inside a tokio runtime with IO and time enabled.
pub async fn resolve(addr: IpAddr, timeout: Duration) -> Result<NextHop, NeighbourError> {
    let deadline = Instant::now() + timeout;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NeighbourError::Io {
        what: "opening a netlink route socket",
        source,
    })?;
    let _conn = AbortOnDrop(tokio::spawn(conn));

    let route = route_get(&handle, addr).await?;
    let next_hop = route.gateway.unwrap_or(addr);
    let ifindex = route.ifindex;
    let found = async |entry: Neighbour, handle: &Handle| match <[u8; 6]>::try_from(
        entry.lladdr.as_slice(),
    ) {
        Ok(mac) => Ok(NextHop {
            ifindex,
            mac,
            gateway: route.gateway,
        }),
        Err(_) => Err(NeighbourError::NotEthernet {
            next_hop,
            ifindex,
            ifname: ifname(handle, ifindex).await,
            len: entry.lladdr.len(),
        }),
    };

    let mut entry = neigh_get(&handle, next_hop, ifindex).await?;
    if let Some(e) = entry.take_if(|e| e.usable()) {
        return found(e, &handle).await;
    }

    // Ask the kernel to resolve the entry and keep it fresh, unless a
    // concurrent call already did (re-adding would restart its probes).
    let already_managed = entry
        .as_ref()
        .is_some_and(|e| e.managed && e.state & NUD_INCOMPLETE != 0);
    let mut created_managed = false;
    // When resolution was last asked for with NTF_USE; `None`: not yet.
    let mut last_kick = None;
    if !already_managed {
        match neigh_add_managed(&handle, next_hop, ifindex).await {
            Ok(()) => created_managed = true,
            Err(e) => {
                log::debug!(
                    "managed neighbour entry for {next_hop} on ifindex {ifindex} refused ({e}); \
                     kicking resolution with NTF_USE instead"
                );
                neigh_kick(&handle, next_hop, ifindex).await?;
                last_kick = Some(Instant::now());
            }
        }
    }

    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
        entry = neigh_get(&handle, next_hop, ifindex).await?;
        if let Some(e) = entry.take_if(|e| e.usable()) {
            return found(e, &handle).await;
        }
        // INCOMPLETE: being resolved, wait. Missing (deleted under us), NONE
        // (a kernel that ignored the managed flag) or FAILED: ask (again).
        let in_progress = entry
            .as_ref()
            .is_some_and(|e| e.state & NUD_INCOMPLETE != 0);
        if !in_progress && last_kick.is_none_or(|t: Instant| t.elapsed() >= KICK_INTERVAL) {
            neigh_kick(&handle, next_hop, ifindex).await?;
            last_kick = Some(Instant::now());
        }
    }

    if created_managed {
        // Nobody answered: do not leave the kernel probing for it forever.
        if let Err(e) = neigh_del(&handle, next_hop, ifindex).await {
            log::debug!("removing the unresolved neighbour entry for {next_hop}: {e}");
        }
    }
    Err(NeighbourError::Timeout {
        addr,
        next_hop,
        ifindex,
        ifname: ifname(&handle, ifindex).await,
        timeout,
        state: entry.map_or_else(|| "no entry".to_string(), |e| state_name(e.state)),
    })
}

/// [`resolve`] on a fresh current-thread tokio runtime, for callers that are
/// not async (the CLI). Do not call it from inside a tokio runtime.
pub fn resolve_blocking(addr: IpAddr, timeout: Duration) -> Result<NextHop, NeighbourError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NeighbourError::Io {
            what: "starting a tokio runtime",
            source,
        })?
        .block_on(resolve(addr, timeout))
}

/// Aborts the netlink connection task when the resolution ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The result of a route lookup.
struct Route {
    ifindex: u32,
    gateway: Option<IpAddr>,
}

/// `ip route get ADDR`.
async fn route_get(handle: &Handle, addr: IpAddr) -> Result<Route, NeighbourError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(addr);
    msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(addr)));

    let mut replies = handle.route().get(msg).execute();
    let reply = match replies.next().await {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => {
            return Err(match errno(&e) {
                Some(code @ (libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES)) => {
                    NeighbourError::NoRoute {
                        addr,
                        reason: std::io::Error::from_raw_os_error(code).to_string(),
                    }
                }
                _ => NeighbourError::Netlink {
                    op: "route lookup (RTM_GETROUTE)",
                    addr,
                    source: e,
                },
            })
        }
        None => {
            return Err(NeighbourError::NoRoute {
                addr,
                reason: "the kernel returned no route".into(),
            })
        }
    };
    // Drain the (single-message) reply.
    while replies.next().await.is_some() {}

    if reply.header.kind != RouteType::Unicast {
        return Err(NeighbourError::NotUnicast {
            addr,
            kind: format!("{:?}", reply.header.kind).to_lowercase(),
        });
    }
    let mut ifindex = None;
    let mut gateway = None;
    for attr in &reply.attributes {
        match attr {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            // An IPv4 route through an IPv6 gateway (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            _ => {}
        }
    }
    let ifindex = ifindex.ok_or_else(|| NeighbourError::NoRoute {
        addr,
        reason: "the route has no output interface".into(),
    })?;
    Ok(Route { ifindex, gateway })
}

/// What matters of a neighbour entry.
#[derive(Default)]
struct Neighbour {
    state: u16,
    lladdr: Vec<u8>,
    /// Carries `NTF_EXT_MANAGED`: the kernel keeps it resolved.
    managed: bool,
}

impl Neighbour {
    fn usable(&self) -> bool {
        self.state & NUD_VALID != 0
    }
}

/// `ip neigh get IP dev IF`: the entry, or `None` when there is none.
async fn neigh_get(
    handle: &Handle,
    ip: IpAddr,
    ifindex: u32,
) -> Result<Option<Neighbour>, NeighbourError> {
    let netlink_err = |source| NeighbourError::Netlink {
        op: "neighbour lookup (RTM_GETNEIGH)",
        addr: ip,
        source,
    };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(neigh_message(
        ip, ifindex,
    )));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = handle.clone().request(req).map_err(netlink_err)?;
    let mut found = None;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                let mut entry = Neighbour {
                    state: n.header.state.into(),
                    ..Neighbour::default()
                };
                for attr in n.attributes {
                    match attr {
                        NeighbourAttribute::LinkLayerAddress(l) => entry.lladdr = l,
                        NeighbourAttribute::ExtFlags(f) => {
                            entry.managed = f.contains(NeighbourExtFlags::Managed)
                        }
                        _ => {}
                    }
                }
                found = Some(entry);
            }
            NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => return Ok(None),
            NetlinkPayload::Error(e) => return Err(netlink_err(rtnetlink::Error::NetlinkError(e))),
            _ => {}
        }
    }
    Ok(found)
}

/// `ip neigh replace IP dev IF managed`: creates the entry (or takes over a
/// failed one) as managed, which makes the kernel resolve it now and keep
/// it resolved.
async fn neigh_add_managed(
    handle: &Handle,
    ip: IpAddr,
    ifindex: u32,
) -> Result<(), rtnetlink::Error> {
    let mut req = handle
        .neighbours()
        .add(ifindex, ip)
        .state(NeighbourState::None)
        .replace();
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    req.execute().await
}

/// `NTF_USE` on the entry (creating it if needed): the kernel treats it as
/// if a packet were waiting for it and sends a solicitation.
async fn neigh_kick(handle: &Handle, ip: IpAddr, ifindex: u32) -> Result<(), NeighbourError> {
    handle
        .neighbours()
        .add(ifindex, ip)
        .state(NeighbourState::None)
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
        .map_err(|source| NeighbourError::Netlink {
            op: "neighbour resolution request (RTM_NEWNEIGH, NTF_USE)",
            addr: ip,
            source,
        })
}

/// `ip neigh del IP dev IF`.
async fn neigh_del(handle: &Handle, ip: IpAddr, ifindex: u32) -> Result<(), rtnetlink::Error> {
    handle
        .neighbours()
        .del(neigh_message(ip, ifindex))
        .execute()
        .await
}

/// A neighbour message naming one entry: family, interface and address.
fn neigh_message(ip: IpAddr, ifindex: u32) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(ip);
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    msg
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The positive errno of a netlink error reply, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() < 0 => Some(-m.raw_code()),
        _ => None,
    }
}

/// The interface's name for messages (asked over the netlink socket, so
/// from the right namespace), or `ifindex N` if that fails.
async fn ifname(handle: &Handle, ifindex: u32) -> String {
    let mut links = handle.link().get().match_index(ifindex).execute();
    while let Some(Ok(link)) = links.next().await {
        if let Some(name) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) {
            return name;
        }
    }
    format!("ifindex {ifindex}")
}

/// `ip neigh`'s name for a state.
fn state_name(state: u16) -> String {
    NeighbourState::from(state).to_string().to_uppercase()
}
