//! A small, readable frame builder for the XDP tests:
//! `eth(dst, src).vlan(7).ipv4(a, b).df().tcp(1234, 80).payload(b"hi").build()`.
//!
//! Layers are listed outer to inner; `build()` fills in what follows from
//! the layers (EtherTypes, IP protocol numbers, lengths, IHL, checksums)
//! unless a field was set explicitly — which is how the malformed fixtures
//! are made (`.total_len(9000)`, `.ihl(8)`, `.ext_len(10)`). IPv4 header
//! checksums are also checked back with etherparse, so the builder cannot
//! silently produce a wrong one.

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// EtherTypes used by the tests.
pub const ETH_P_IPV4: u16 = 0x0800;
/// See [`ETH_P_IPV4`].
pub const ETH_P_IPV6: u16 = 0x86dd;
/// See [`ETH_P_IPV4`].
pub const ETH_P_8021Q: u16 = 0x8100;
/// See [`ETH_P_IPV4`].
pub const ETH_P_ARP: u16 = 0x0806;

/// IP protocol numbers used by the tests.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_ICMP: u8 = 1;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_IPIP: u8 = 4;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_UDP: u8 = 17;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_IPV6: u8 = 41;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_ROUTING: u8 = 43;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_FRAGMENT: u8 = 44;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_ICMPV6: u8 = 58;
/// See [`IPPROTO_HOPOPTS`].
pub const IPPROTO_DSTOPTS: u8 = 60;
/// An IP protocol nobody here serves (RFC 3692 experimentation value).
pub const IPPROTO_EXPERIMENT: u8 = 253;

/// One header (or the payload) of a frame under construction.
#[derive(Clone, Debug)]
enum Layer {
    Eth {
        dst: Mac,
        src: Mac,
        ether_type: Option<u16>,
    },
    Vlan {
        tci: u16,
        ether_type: Option<u16>,
    },
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// Hop-by-Hop / Routing / Destination Options header.
    V6Ext {
        kind: u8,
        len: Option<u8>,
        body: Vec<u8>,
    },
    V6Frag {
        offset: u16,
        more: bool,
        id: u32,
        next: Option<u8>,
    },
    Tcp {
        src: u16,
        dst: u16,
        seq: u32,
        flags: u8,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Icmp4 {
        kind: u8,
        code: u8,
        rest: [u8; 4],
    },
    Icmp6 {
        kind: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// An IP packet carried as the payload of the IP layer before it.
    Inner(Vec<u8>),
    /// Opaque bytes (L4 payload, ARP body, quoted datagram, ...).
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Ipv4 {
    src: [u8; 4],
    dst: [u8; 4],
    version: u8,
    ihl: Option<u8>,
    tos: u8,
    total_len: Option<u16>,
    id: u16,
    df: bool,
    mf: bool,
    frag_offset: u16,
    ttl: u8,
    proto: Option<u8>,
    checksum: Option<u16>,
    options: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Ipv6 {
    src: [u8; 16],
    dst: [u8; 16],
    version: u8,
    traffic_class: u8,
    flow_label: u32,
    payload_len: Option<u16>,
    next: Option<u8>,
    hop_limit: u8,
}

/// A frame (or a bare IP packet) described layer by layer.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    layers: Vec<Layer>,
}

/// Starts a frame with an Ethernet II header.
pub fn eth(dst: Mac, src: Mac) -> Frame {
    Frame::default().push(Layer::Eth {
        dst,
        src,
        ether_type: None,
    })
}

/// Starts a bare IPv4 packet (no Ethernet header): for quoted datagrams
/// and IP-in-IP inner packets.
pub fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Frame {
    Frame::default().ipv4(src, dst)
}

/// Starts a bare IPv6 packet (no Ethernet header).
pub fn ipv6(src: [u8; 16], dst: [u8; 16]) -> Frame {
    Frame::default().ipv6(src, dst)
}

impl Frame {
    fn push(mut self, l: Layer) -> Frame {
        self.layers.push(l);
        self
    }

    fn last_v4(&mut self) -> &mut Ipv4 {
        self.layers
            .iter_mut()
            .rev()
            .find_map(|l| match l {
                Layer::Ipv4(ip) => Some(ip),
                _ => None,
            })
            .expect("no IPv4 layer to modify")
    }

    fn last_v6(&mut self) -> &mut Ipv6 {
        self.layers
            .iter_mut()
            .rev()
            .find_map(|l| match l {
                Layer::Ipv6(ip) => Some(ip),
                _ => None,
            })
            .expect("no IPv6 layer to modify")
    }

    /// An 802.1Q tag (priority 0, DEI 0, this VLAN id).
    pub fn vlan(self, vid: u16) -> Frame {
        self.push(Layer::Vlan {
            tci: vid & 0x0fff,
            ether_type: None,
        })
    }

    /// Sets the EtherType of the last Ethernet or VLAN header explicitly.
    pub fn ether_type(mut self, t: u16) -> Frame {
        match self.layers.last_mut() {
            Some(Layer::Eth { ether_type, .. }) | Some(Layer::Vlan { ether_type, .. }) => {
                *ether_type = Some(t)
            }
            _ => panic!("ether_type() must follow eth() or vlan()"),
        }
        self
    }

    /// An IPv4 header: TTL 64, no options, DF clear.
    pub fn ipv4(self, src: [u8; 4], dst: [u8; 4]) -> Frame {
        self.push(Layer::Ipv4(Ipv4 {
            src,
            dst,
            version: 4,
            ihl: None,
            tos: 0,
            total_len: None,
            id: 0,
            df: false,
            mf: false,
            frag_offset: 0,
            ttl: 64,
            proto: None,
            checksum: None,
            options: Vec::new(),
        }))
    }

    /// Sets Don't Fragment on the last IPv4 header.
    pub fn df(mut self) -> Frame {
        self.last_v4().df = true;
        self
    }

    /// Sets TOS on the last IPv4 header.
    pub fn tos(mut self, tos: u8) -> Frame {
        self.last_v4().tos = tos;
        self
    }

    /// Sets the TTL of the last IPv4 header.
    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.last_v4().ttl = ttl;
        self
    }

    /// Sets the identification of the last IPv4 header.
    pub fn ip_id(mut self, id: u16) -> Frame {
        self.last_v4().id = id;
        self
    }

    /// Makes the last IPv4 header a fragment: offset in 8-byte units, MF.
    pub fn frag(mut self, offset: u16, more: bool) -> Frame {
        let ip = self.last_v4();
        ip.frag_offset = offset;
        ip.mf = more;
        self
    }

    /// IPv4 options (padded with zeros to a multiple of 4 bytes).
    pub fn ip_options(mut self, options: &[u8]) -> Frame {
        let ip = self.last_v4();
        ip.options = options.to_vec();
        while !ip.options.len().is_multiple_of(4) {
            ip.options.push(0);
        }
        self
    }

    /// Overrides the IHL field (header length in 32-bit words).
    pub fn ihl(mut self, ihl: u8) -> Frame {
        self.last_v4().ihl = Some(ihl);
        self
    }

    /// Overrides the IPv4 total length.
    pub fn total_len(mut self, len: u16) -> Frame {
        self.last_v4().total_len = Some(len);
        self
    }

    /// Overrides the version nibble of the last IP header.
    pub fn ip_version(mut self, v: u8) -> Frame {
        match self
            .layers
            .iter_mut()
            .rev()
            .find(|l| matches!(l, Layer::Ipv4(_) | Layer::Ipv6(_)))
        {
            Some(Layer::Ipv4(ip)) => ip.version = v,
            Some(Layer::Ipv6(ip)) => ip.version = v,
            _ => panic!("no IP layer"),
        }
        self
    }

    /// Sets the protocol / next header of the last IP header explicitly
    /// (needed when only `payload` follows it).
    pub fn proto(mut self, p: u8) -> Frame {
        match self
            .layers
            .iter_mut()
            .rev()
            .find(|l| matches!(l, Layer::Ipv4(_) | Layer::Ipv6(_)))
        {
            Some(Layer::Ipv4(ip)) => ip.proto = Some(p),
            Some(Layer::Ipv6(ip)) => ip.next = Some(p),
            _ => panic!("no IP layer"),
        }
        self
    }

    /// An IPv6 header: hop limit 64, traffic class 0, flow label 0.
    pub fn ipv6(self, src: [u8; 16], dst: [u8; 16]) -> Frame {
        self.push(Layer::Ipv6(Ipv6 {
            src,
            dst,
            version: 6,
            traffic_class: 0,
            flow_label: 0,
            payload_len: None,
            next: None,
            hop_limit: 64,
        }))
    }

    /// Sets the traffic class of the last IPv6 header.
    pub fn traffic_class(mut self, tc: u8) -> Frame {
        self.last_v6().traffic_class = tc;
        self
    }

    /// Sets the flow label of the last IPv6 header.
    pub fn flow_label(mut self, fl: u32) -> Frame {
        self.last_v6().flow_label = fl & 0xf_ffff;
        self
    }

    /// Sets the hop limit of the last IPv6 header.
    pub fn hop_limit(mut self, h: u8) -> Frame {
        self.last_v6().hop_limit = h;
        self
    }

    /// Overrides the IPv6 payload length.
    pub fn payload_len(mut self, len: u16) -> Frame {
        self.last_v6().payload_len = Some(len);
        self
    }

    /// An IPv6 Hop-by-Hop Options header (8 bytes, one PadN option).
    pub fn hop_by_hop(self) -> Frame {
        self.v6_ext(IPPROTO_HOPOPTS, 0)
    }

    /// An IPv6 Destination Options header (8 bytes, one PadN option).
    pub fn dst_opts(self) -> Frame {
        self.v6_ext(IPPROTO_DSTOPTS, 0)
    }

    /// An options-style IPv6 extension header of `kind` that is
    /// `8 * (extra_units + 1)` bytes long, filled with PadN.
    pub fn v6_ext(self, kind: u8, extra_units: u8) -> Frame {
        let n = 6 + 8 * extra_units as usize;
        // PadN: type 1, length n - 2, zeros (RFC 8200 §4.2).
        let mut body = vec![0u8; n];
        body[0] = 1;
        body[1] = (n - 2) as u8;
        self.push(Layer::V6Ext {
            kind,
            len: None,
            body,
        })
    }

    /// Overrides the Hdr Ext Len of the last options-style header.
    pub fn ext_len(mut self, units: u8) -> Frame {
        match self.layers.last_mut() {
            Some(Layer::V6Ext { len, .. }) => *len = Some(units),
            _ => panic!("ext_len() must follow an extension header"),
        }
        self
    }

    /// An IPv6 Fragment header: offset in 8-byte units, M flag, id.
    pub fn v6_fragment(self, offset: u16, more: bool, id: u32) -> Frame {
        self.push(Layer::V6Frag {
            offset,
            more,
            id,
            next: None,
        })
    }

    /// Sets the next header of the last IPv6 Fragment header (needed when
    /// only `payload` follows it, as in non-first fragments).
    pub fn frag_next(mut self, p: u8) -> Frame {
        match self.layers.last_mut() {
            Some(Layer::V6Frag { next, .. }) => *next = Some(p),
            _ => panic!("frag_next() must follow v6_fragment()"),
        }
        self
    }

    /// A 20-byte TCP header (ACK set, window 65535), checksum computed.
    pub fn tcp(self, src: u16, dst: u16) -> Frame {
        self.push(Layer::Tcp {
            src,
            dst,
            seq: 1,
            flags: 0x10,
        })
    }

    /// A TCP SYN.
    pub fn tcp_syn(self, src: u16, dst: u16) -> Frame {
        self.push(Layer::Tcp {
            src,
            dst,
            seq: 1,
            flags: 0x02,
        })
    }

    /// A UDP header, length and checksum computed.
    pub fn udp(self, src: u16, dst: u16) -> Frame {
        self.push(Layer::Udp { src, dst })
    }

    /// An ICMP header; `rest` is the 4 bytes after the checksum.
    pub fn icmp4(self, kind: u8, code: u8, rest: [u8; 4]) -> Frame {
        self.push(Layer::Icmp4 { kind, code, rest })
    }

    /// ICMP destination unreachable, fragmentation needed, next-hop MTU.
    pub fn icmp4_frag_needed(self, mtu: u16) -> Frame {
        let m = mtu.to_be_bytes();
        self.icmp4(3, 4, [0, 0, m[0], m[1]])
    }

    /// An ICMP echo request.
    pub fn icmp4_echo(self, id: u16, seq: u16) -> Frame {
        let (i, s) = (id.to_be_bytes(), seq.to_be_bytes());
        self.icmp4(8, 0, [i[0], i[1], s[0], s[1]])
    }

    /// An ICMPv6 header; `rest` is the 4 bytes after the checksum.
    pub fn icmp6(self, kind: u8, code: u8, rest: [u8; 4]) -> Frame {
        self.push(Layer::Icmp6 { kind, code, rest })
    }

    /// ICMPv6 packet too big with this MTU.
    pub fn icmp6_too_big(self, mtu: u32) -> Frame {
        self.icmp6(2, 0, mtu.to_be_bytes())
    }

    /// An ICMPv6 echo request.
    pub fn icmp6_echo(self, id: u16, seq: u16) -> Frame {
        let (i, s) = (id.to_be_bytes(), seq.to_be_bytes());
        self.icmp6(128, 0, [i[0], i[1], s[0], s[1]])
    }

    /// An IP packet (built separately) carried inside the last IP header:
    /// the protocol becomes 4 or 41 from the packet's version.
    pub fn ipip(self, inner: &[u8]) -> Frame {
        self.push(Layer::Inner(inner.to_vec()))
    }

    /// A whole IP packet (built separately) right after the Ethernet/VLAN
    /// header: the EtherType follows from its version.
    pub fn ip_packet(self, packet: &[u8]) -> Frame {
        self.push(Layer::Inner(packet.to_vec()))
    }

    /// This frame's layers followed by `other`'s.
    pub fn then(mut self, other: &Frame) -> Frame {
        self.layers.extend(other.layers.iter().cloned());
        self
    }

    /// Opaque payload bytes.
    pub fn payload(self, bytes: &[u8]) -> Frame {
        self.push(Layer::Bytes(bytes.to_vec()))
    }

    /// `n` payload bytes of a recognisable pattern.
    pub fn payload_n(self, n: usize) -> Frame {
        let b: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        self.payload(&b)
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut tail: Vec<u8> = Vec::new();
        for i in (0..self.layers.len()).rev() {
            let next = self.layers.get(i + 1);
            let head = self.serialize(i, next, &tail);
            let mut v = head;
            v.extend_from_slice(&tail);
            tail = v;
        }
        tail
    }

    /// The nearest IP layer before layer `i`: (src, dst) for pseudo-headers.
    fn enclosing_ip(&self, i: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        self.layers[..i].iter().rev().find_map(|l| match l {
            Layer::Ipv4(ip) => Some((ip.src.to_vec(), ip.dst.to_vec())),
            Layer::Ipv6(ip) => Some((ip.src.to_vec(), ip.dst.to_vec())),
            _ => None,
        })
    }

    fn serialize(&self, i: usize, next: Option<&Layer>, tail: &[u8]) -> Vec<u8> {
        match &self.layers[i] {
            Layer::Eth {
                dst,
                src,
                ether_type,
            } => {
                let mut h = Vec::with_capacity(14);
                h.extend_from_slice(dst);
                h.extend_from_slice(src);
                let t = ether_type.unwrap_or_else(|| ether_type_of(next));
                h.extend_from_slice(&t.to_be_bytes());
                h
            }
            Layer::Vlan { tci, ether_type } => {
                let mut h = tci.to_be_bytes().to_vec();
                let t = ether_type.unwrap_or_else(|| ether_type_of(next));
                h.extend_from_slice(&t.to_be_bytes());
                h
            }
            Layer::Ipv4(ip) => {
                let hdr_len = 20 + ip.options.len();
                let ihl = ip.ihl.unwrap_or((hdr_len / 4) as u8);
                let total = ip.total_len.unwrap_or((hdr_len + tail.len()) as u16);
                let proto = ip.proto.unwrap_or_else(|| proto_of(next));
                let frag = (u16::from(ip.df) << 14) | (u16::from(ip.mf) << 13) | ip.frag_offset;
                let mut h = vec![(ip.version << 4) | (ihl & 0x0f), ip.tos];
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&ip.id.to_be_bytes());
                h.extend_from_slice(&frag.to_be_bytes());
                h.push(ip.ttl);
                h.push(proto);
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&ip.src);
                h.extend_from_slice(&ip.dst);
                h.extend_from_slice(&ip.options);
                let c = ip.checksum.unwrap_or_else(|| checksum(&[&h]));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h
            }
            Layer::Ipv6(ip) => {
                let plen = ip.payload_len.unwrap_or(tail.len() as u16);
                let next = ip.next.unwrap_or_else(|| proto_of(next));
                let vtf: u32 = (u32::from(ip.version) << 28)
                    | (u32::from(ip.traffic_class) << 20)
                    | ip.flow_label;
                let mut h = vtf.to_be_bytes().to_vec();
                h.extend_from_slice(&plen.to_be_bytes());
                h.push(next);
                h.push(ip.hop_limit);
                h.extend_from_slice(&ip.src);
                h.extend_from_slice(&ip.dst);
                h
            }
            Layer::V6Ext { len, body, .. } => {
                let units = len.unwrap_or(((body.len() + 2) / 8 - 1) as u8);
                let mut h = vec![proto_of(next), units];
                h.extend_from_slice(body);
                h
            }
            Layer::V6Frag {
                offset,
                more,
                id,
                next: nh,
            } => {
                let mut h = vec![nh.unwrap_or_else(|| proto_of(next)), 0];
                h.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
            Layer::Tcp {
                src,
                dst,
                seq,
                flags,
            } => {
                let mut h = Vec::with_capacity(20);
                h.extend_from_slice(&src.to_be_bytes());
                h.extend_from_slice(&dst.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&0u32.to_be_bytes());
                h.push(5 << 4);
                h.push(*flags);
                h.extend_from_slice(&0xffffu16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                let c = self.l4_checksum(i, IPPROTO_TCP, &h, tail);
                h[16..18].copy_from_slice(&c.to_be_bytes());
                h
            }
            Layer::Udp { src, dst } => {
                let mut h = Vec::with_capacity(8);
                h.extend_from_slice(&src.to_be_bytes());
                h.extend_from_slice(&dst.to_be_bytes());
                h.extend_from_slice(&((8 + tail.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                let mut c = self.l4_checksum(i, IPPROTO_UDP, &h, tail);
                if c == 0 {
                    c = 0xffff;
                }
                h[6..8].copy_from_slice(&c.to_be_bytes());
                h
            }
            Layer::Icmp4 { kind, code, rest } => {
                let mut h = vec![*kind, *code, 0, 0];
                h.extend_from_slice(rest);
                let c = checksum(&[&h, tail]);
                h[2..4].copy_from_slice(&c.to_be_bytes());
                h
            }
            Layer::Icmp6 { kind, code, rest } => {
                let mut h = vec![*kind, *code, 0, 0];
                h.extend_from_slice(rest);
                let c = self.l4_checksum(i, IPPROTO_ICMPV6, &h, tail);
                h[2..4].copy_from_slice(&c.to_be_bytes());
                h
            }
            Layer::Inner(b) | Layer::Bytes(b) => b.clone(),
        }
    }

    fn l4_checksum(&self, i: usize, proto: u8, hdr: &[u8], tail: &[u8]) -> u16 {
        let Some((src, dst)) = self.enclosing_ip(i) else {
            return 0;
        };
        let len = (hdr.len() + tail.len()) as u32;
        let pseudo = pseudo_header(&src, &dst, proto, len);
        checksum(&[&pseudo, hdr, tail])
    }
}

fn ether_type_of(next: Option<&Layer>) -> u16 {
    match next {
        Some(Layer::Vlan { .. }) => ETH_P_8021Q,
        Some(Layer::Ipv4(_)) => ETH_P_IPV4,
        Some(Layer::Ipv6(_)) => ETH_P_IPV6,
        Some(Layer::Inner(b)) if b.first().is_some_and(|v| v >> 4 == 6) => ETH_P_IPV6,
        Some(Layer::Inner(_)) => ETH_P_IPV4,
        _ => panic!("cannot infer the EtherType; use .ether_type()"),
    }
}

fn proto_of(next: Option<&Layer>) -> u8 {
    match next {
        Some(Layer::Tcp { .. }) => IPPROTO_TCP,
        Some(Layer::Udp { .. }) => IPPROTO_UDP,
        Some(Layer::Icmp4 { .. }) => IPPROTO_ICMP,
        Some(Layer::Icmp6 { .. }) => IPPROTO_ICMPV6,
        Some(Layer::Ipv4(_)) => IPPROTO_IPIP,
        Some(Layer::Ipv6(_)) => IPPROTO_IPV6,
        Some(Layer::V6Ext { kind, .. }) => *kind,
        Some(Layer::V6Frag { .. }) => IPPROTO_FRAGMENT,
        Some(Layer::Inner(b)) if b.first().is_some_and(|v| v >> 4 == 6) => IPPROTO_IPV6,
        Some(Layer::Inner(_)) => IPPROTO_IPIP,
        None | Some(Layer::Bytes(_)) => IPPROTO_EXPERIMENT,
        Some(l) => panic!("cannot infer the protocol before {l:?}; use .proto()"),
    }
}

/// The TCP/UDP/ICMPv6 pseudo-header: RFC 768 / RFC 793 for IPv4 (12
/// bytes), RFC 8200 §8.1 for IPv6 (40 bytes).
pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.push(0);
        p.push(proto);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A MAC address's usual notation, for messages.
pub fn mac_str(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A readable description of where two frames differ, for messages.
pub fn diff(want: &[u8], got: &[u8]) -> String {
    let mut s = format!("want {} bytes, got {} bytes", want.len(), got.len());
    let first = want.iter().zip(got).position(|(a, b)| a != b);
    match first {
        Some(i) => {
            let lo = i.saturating_sub(4);
            s += &format!(
                "; first difference at byte {i}: want {:02x?} got {:02x?} (from byte {lo})",
                &want[lo..(i + 12).min(want.len())],
                &got[lo..(i + 12).min(got.len())]
            );
        }
        None if want.len() != got.len() => s += "; one is a prefix of the other",
        None => {}
    }
    s
}
