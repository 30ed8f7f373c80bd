//! The `l4:` section: XDP datapath sizing and the L4 VIPs with their
//! backends.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::consts;
use serde::Deserialize;

/// `l4:`: sizes of the datapath's tables and the VIPs it serves.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct L4Config {
    /// Maglev table size per VIP (prime; default 65537).
    pub maglev_table_size: u32,
    /// Connection-table entries (LRU).
    pub conntrack_size: u32,
    /// Most VIPs (including L7 ones), fixed at start.
    pub max_vips: u32,
    /// Most distinct backends over all VIPs, fixed at start.
    pub max_backends: u32,
    /// Largest IP packet the path to the backends carries: a packet that
    /// would exceed it once encapsulated (IPIP) never leaves as is; what
    /// happens instead is `too_big`.
    pub backend_mtu: u32,
    /// What happens to a packet too big for `backend_mtu` once
    /// encapsulated, for every VIP that does not say otherwise.
    pub too_big: TooBig,
    /// The interface towards the backends when it is not the one packets
    /// arrive on (a second NIC): frames leave by it with `XDP_REDIRECT`.
    /// A backend's own `interface:` wins.
    pub backend_interface: Option<String>,
    /// Connection-table inserts allowed per CPU per second (flood guard).
    pub new_flows_per_cpu_sec: u32,
    /// Outer source addresses for IPIP.
    pub ipip_source: IpipSource,
    /// The VIPs.
    pub vips: Vec<VipConfig>,
}

impl Default for L4Config {
    fn default() -> Self {
        L4Config {
            maglev_table_size: consts::DEFAULT_MAGLEV_SIZE,
            conntrack_size: consts::CONNTRACK_SIZE,
            max_vips: consts::MAX_VIPS,
            max_backends: consts::MAX_BACKENDS,
            backend_mtu: consts::DEFAULT_BACKEND_MTU,
            too_big: TooBig::default(),
            backend_interface: None,
            new_flows_per_cpu_sec: consts::DEFAULT_NEW_FLOWS_PER_CPU_SEC,
            ipip_source: IpipSource::default(),
            vips: Vec::new(),
        }
    }
}

/// `ipip_source:`: how the outer source address of encapsulated packets is
/// chosen.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IpipSource {
    /// `flow`: derived from the flow hash inside the given prefixes
    /// (`v4`'s /16, `v6`'s /96), so backends' NICs spread flows over their
    /// receive queues (Katran's scheme). `fixed`: always `v4` / `v6`.
    pub mode: IpipSourceMode,
    /// IPv4 prefix (flow) or address (fixed).
    pub v4: Ipv4Addr,
    /// IPv6 prefix (flow) or address (fixed).
    pub v6: Ipv6Addr,
}

impl Default for IpipSource {
    fn default() -> Self {
        IpipSource {
            mode: IpipSourceMode::Flow,
            // Katran's default range for derived sources.
            v4: Ipv4Addr::new(172, 16, 0, 0),
            v6: "fd00:786c:6200::".parse().expect("valid literal"),
        }
    }
}

/// See [`IpipSource::mode`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpipSourceMode {
    /// Derived from the flow hash.
    Flow,
    /// One fixed address per family.
    Fixed,
}

/// One L4 VIP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// Unique name, used in stats and by `xlb flow`.
    pub name: String,
    /// The virtual address clients connect to.
    pub address: IpAddr,
    /// Destination port; 0 or absent serves every port.
    #[serde(default)]
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: L4Protocol,
    /// How packets reach the backends.
    pub mode: ForwardMode,
    /// Which fields place a flow on a backend.
    #[serde(default)]
    pub hash: HashFields,
    /// Remember each flow's backend (default). Without it every packet is
    /// placed by the Maglev table alone.
    #[serde(default = "yes")]
    pub conntrack: bool,
    /// The backends.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Active health check of the backends: an unhealthy backend leaves
    /// the Maglev table (as with weight 0) until it recovers.
    #[serde(default)]
    pub health_check: Option<super::middleware::HealthCheckYaml>,
    /// Answer ICMP/ICMPv6 echo requests to the VIP's address from XDP
    /// (default). The address answers when any of its VIPs says yes.
    #[serde(default = "yes")]
    pub ping: bool,
    /// This VIP's `too_big` (default: `l4.too_big`).
    #[serde(default)]
    pub too_big: Option<TooBig>,
}

/// What happens to a packet that would exceed `backend_mtu` once
/// encapsulated. XDP cannot fragment, so it is never sent as is.
///
/// The default is `icmp`, as in Katran's too-big build: the sender gets
/// "fragmentation needed" (IPv4, whatever its DF flag says) or "packet too
/// big" (IPv6) advertising `backend_mtu` minus the outer header, lowers
/// its path MTU and sends smaller packets (or fragments them itself, which
/// the datapath then places consistently), so the flow recovers. `drop`
/// only counts the drop (`drop_too_big`), for networks that filter ICMP
/// towards clients anyway.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TooBig {
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" to the sender.
    #[default]
    Icmp,
    /// A counted drop.
    Drop,
}

fn yes() -> bool {
    true
}

/// One backend of a VIP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The backend's address (same family as the VIP).
    pub address: IpAddr,
    /// Relative share of new flows; 0 drains the backend: no new flows,
    /// established flows stay through the connection table.
    #[serde(default = "one")]
    pub weight: u32,
    /// Next-hop MAC, `aa:bb:cc:dd:ee:ff`; resolved from the kernel's
    /// neighbour table when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// The interface the backend is reached by, when it is not the one
    /// packets arrive on (default: `l4.backend_interface`): frames leave
    /// by it with `XDP_REDIRECT` through a device map.
    #[serde(default)]
    pub interface: Option<String>,
}

fn one() -> u32 {
    1
}

/// L4 protocol of a VIP.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum L4Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
}

impl L4Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
        }
    }
}

/// How a VIP's packets reach its backends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// Rewrite the destination MAC; backends are on-link and hold the VIP
    /// on a loopback interface.
    Dsr,
    /// IP-in-IP to the backend's address (it decapsulates: `xlb decap`):
    /// IPv4 in IPv4, IPv6 in IPv6, or IPv4 in IPv6 for an IPv4 VIP with
    /// IPv6 backends.
    Ipip,
}

/// Which packet fields choose a flow's backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HashFields {
    /// Addresses, ports and protocol.
    #[default]
    FiveTuple,
    /// Addresses and protocol: one client address always reaches one
    /// backend.
    ThreeTuple,
}

impl VipConfig {
    /// The `too_big` in force for this VIP.
    pub fn too_big(&self, l4: &L4Config) -> TooBig {
        self.too_big.unwrap_or(l4.too_big)
    }
}

impl BackendConfig {
    /// The interface this backend's frames leave by, if not the receiving
    /// one.
    pub fn interface<'a>(&'a self, l4: &'a L4Config) -> Option<&'a str> {
        self.interface
            .as_deref()
            .or(l4.backend_interface.as_deref())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
