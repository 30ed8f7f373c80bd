//! A userspace model of the balancer's decision, written from the
//! documented semantics (lb-common's docs, the RFCs), not from the eBPF
//! code: it parses frames by hand, looks VIPs, the connection table and the
//! Maglev tables up in its own copies, and builds the frame it expects on
//! the wire. The differential test runs it next to the kernel.
//!
//! The semantics it encodes (lb-common's `reasons` docs):
//! - an IP datagram must fit in its frame (RFC 1812 §5.2.2), else
//!   `pass_malformed`; bytes after it are link-layer padding, never read
//!   as the packet's: TCP/UDP ports and IPv6 extension headers must lie
//!   inside the datagram (else `pass_malformed`), and so must an ICMP
//!   header and the quote (see below);
//! - the IPv6 header chain ends right after a Fragment header (RFC 8200
//!   §4.5), whose Next Header is the flow's protocol for every fragment;
//! - an ICMP/ICMPv6 message that is not an error (v4 types 3 and 11, v6
//!   types 1, 2 and 3) is for the local stack: `pass_not_vip`;
//! - an ICMP error whose quote names no TCP/UDP flow from the address the
//!   error is sent to (not TCP/UDP, a later IPv4 fragment, a quoted IPv6
//!   header of another version, too short for the ports), or whose flow is
//!   not to a VIP: `pass_icmp_unknown_flow`;
//! - an ICMP error about a VIP flow goes to the connection table's backend
//!   if it has a valid entry, else to the Maglev table's, as
//!   `tx_icmp_to_backend`; it never adds an entry and never spends the
//!   flood-guard budget;
//! - an ICMP/ICMPv6 echo request (whole, not a fragment) to an address
//!   with an echo entry is answered in place (`tx_echo_reply`): MACs and
//!   addresses swapped, TTL/hop limit 64, type 0/129, checksums updated as
//!   RFC 1624 eqn. 3 says;
//! - a first fragment with its ports is placed like an unfragmented packet
//!   of its flow (`tx_fragment_first`) and remembered by (source,
//!   destination, protocol, identification); a later fragment goes where
//!   its first went (`tx_fragment_followed`), else by the 3-tuple
//!   (`tx_fragment`);
//! - a packet larger than `backend_mtu` once encapsulated (20 bytes of
//!   IPv4, 40 of IPv6 outer header, IPv4 in IPv6 for an IPv4 VIP's IPv6
//!   backend) is answered with ICMP too-big whatever DF says, or dropped
//!   (`drop_too_big`) when the VIP says drop, when it is an ICMP error, or
//!   when its IPv4 header has options;
//! - a connection-table hit reuses the flow hash stored in the entry.
use std::collections::HashMap;

use lb_common::{
    backend::{BackendMeta, BACKEND_F_ACTIVE, BACKEND_F_REDIRECT, BACKEND_F_V6},
    conntrack::{ConnValue, FragKey, FragValue},
    consts::{MAX_BACKENDS, MAX_VIPS, NO_BACKEND},
    flow::{FlowKey, FLOW_HASH_SEED},
    maglev::murmur3_32,
    reasons::Reason,
    settings::{Settings, SETTINGS_F_IPIP_SRC_FROM_FLOW, SETTINGS_F_NO_PORT_WILDCARDS},
    vip::{
        VipKey, VipMeta, FAMILY_FRAGMENTS, FAMILY_V4, FAMILY_V6, VIP_F_HASH_NO_PORTS,
        VIP_F_NO_CONNTRACK, VIP_F_TOO_BIG_DROP, VIP_MODE_DSR, VIP_MODE_IPIP, VIP_MODE_L7,
    },
};

use super::frame::checksum;
use super::loader::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

/// A flow as the model sees it: wire bytes (IPv4 in the first 4 bytes of
/// each address, the rest zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
}

impl Key {
    /// The key without ports.
    pub fn three_tuple(&self) -> Key {
        Key {
            sport: [0; 2],
            dport: [0; 2],
            ..*self
        }
    }

    /// MurmurHash3 x86_32 (bytewise reference) with the documented seed,
    /// over the short forms `lb_common::flow::flow_hash` documents.
    pub fn hash(&self) -> u32 {
        let mut b = Vec::with_capacity(40);
        // IPv4-shaped keys (nothing past each address's first four bytes)
        // hash only their significant 16 bytes (lb_common::flow::flow_hash).
        if self.src[4..] == [0; 12] && self.dst[4..] == [0; 12] {
            b.extend_from_slice(&self.src[..4]);
            b.extend_from_slice(&self.dst[..4]);
            b.extend_from_slice(&self.sport);
            b.extend_from_slice(&self.dport);
            b.extend_from_slice(&[self.proto, 0, 0, 0]);
            return murmur3_32(&b, FLOW_HASH_SEED);
        }
        // IPv6: each address folded to 8 bytes by XOR of its halves.
        for a in [&self.src, &self.dst] {
            for i in 0..8 {
                b.push(a[i] ^ a[8 + i]);
            }
        }
        b.extend_from_slice(&self.sport);
        b.extend_from_slice(&self.dport);
        b.extend_from_slice(&[self.proto, 0, 0, 0]);
        murmur3_32(&b, FLOW_HASH_SEED)
    }

    /// The same flow as the map key type.
    pub fn flow_key(&self) -> FlowKey {
        let w = |a: &[u8; 16]| {
            [
                u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
                u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
                u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
                u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
            ]
        };
        FlowKey::v6(
            w(&self.src),
            w(&self.dst),
            u16::from_ne_bytes(self.sport),
            u16::from_ne_bytes(self.dport),
            self.proto,
        )
    }
}

/// A model address field from IPv4 octets.
pub fn a4(o: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&o);
    a
}

/// What the model expects the program to do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: u32,
    pub reason: Reason,
    /// The frame after the program (the input itself unless `XDP_TX`).
    pub out: Vec<u8>,
    /// The connection-table key the decision consulted, if any.
    pub ct_key: Option<Key>,
    /// The entry the decision writes.
    pub ct_insert: Option<(Key, ConnValue)>,
    /// The `FRAGMENTS` entry the decision writes (a first fragment).
    pub frag_insert: Option<(FragKey, FragValue)>,
}

/// The model's copy of the datapath's configuration and state.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub settings: Settings,
    pub vips: HashMap<VipKey, VipMeta>,
    pub backends: HashMap<u32, BackendMeta>,
    /// Maglev halves by (VIP row, half); a missing one is all zeros, as an
    /// untouched BPF array is.
    pub tables: HashMap<(u32, u32), Vec<u32>>,
    pub conntrack: HashMap<Key, ConnValue>,
    /// First fragments' choices.
    pub frags: HashMap<FragKey, FragValue>,
    /// `TX_PORTS` slot → that interface's MAC (redirected frames' source).
    pub tx_ports: HashMap<u8, [u8; 6]>,
    /// Connection-table inserts made so far (the model assumes the
    /// configured budget is never reached within one window).
    pub inserts: u64,
}

const ETH: usize = 14;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The result of parsing, before any lookup.
enum Parse {
    Ip(Ip),
    NonIp,
    Malformed,
    Unsupported,
}

/// What an ICMP message says about a flow.
enum Quoted {
    /// Not an error message (echo, neighbour discovery, ...).
    NotAnError,
    /// An error whose quote names no TCP/UDP flow from this address.
    Unusable,
    /// An error about this client → VIP flow.
    Flow(Key),
}

struct Ip {
    l3: usize,
    /// Where reads must stop: the end of the IP datagram (trailing bytes
    /// of the frame are link-layer padding).
    bound: usize,
    l4: usize,
    v6: bool,
    ihl_bytes: usize,
    key: Key,
    fragment: bool,
    /// A first fragment whose ports are in `key`.
    frag_first: bool,
    /// Identification as loaded (IPv4: 16 bits in native order).
    frag_id: u32,
    dont_frag: bool,
    ip_len: u32,
}

impl Model {
    fn parse(&self, f: &[u8]) -> Parse {
        if f.len() < ETH {
            return Parse::Malformed;
        }
        let mut l3 = ETH;
        let mut et = be16(f, 12);
        if et == 0x8100 {
            if f.len() < ETH + 4 {
                return Parse::Malformed;
            }
            et = be16(f, 16);
            l3 += 4;
        }
        match et {
            0x0800 => self.parse_v4(f, l3),
            0x86dd => self.parse_v6(f, l3),
            _ => Parse::NonIp,
        }
    }

    fn parse_v4(&self, f: &[u8], l3: usize) -> Parse {
        if f.len() < l3 + 20 {
            return Parse::Malformed;
        }
        let ihl = (f[l3] & 0x0f) as usize;
        if f[l3] >> 4 != 4 || ihl < 5 {
            return Parse::Malformed;
        }
        let total = be16(f, l3 + 2) as usize;
        if total < ihl * 4 {
            return Parse::Malformed;
        }
        // RFC 1812 §5.2.2: the link layer must hold the whole datagram.
        if l3 + total > f.len() {
            return Parse::Malformed;
        }
        let bound = l3 + total;
        let l4 = l3 + ihl * 4;
        let frag = be16(f, l3 + 6);
        let fragment = frag & 0x3fff != 0;
        let proto = f[l3 + 9];
        let mut key = Key {
            src: a4([f[l3 + 12], f[l3 + 13], f[l3 + 14], f[l3 + 15]]),
            dst: a4([f[l3 + 16], f[l3 + 17], f[l3 + 18], f[l3 + 19]]),
            sport: [0; 2],
            dport: [0; 2],
            proto,
        };
        let mut frag_first = false;
        if !fragment && (proto == 6 || proto == 17) {
            if l4 + 4 > bound {
                return Parse::Malformed;
            }
            key.sport = [f[l4], f[l4 + 1]];
            key.dport = [f[l4 + 2], f[l4 + 3]];
        }
        // A first fragment (offset 0) holding its ports is placed by them;
        // one too short to hold them is placed like a later fragment.
        if fragment && frag & 0x1fff == 0 && (proto == 6 || proto == 17) && l4 + 4 <= bound {
            key.sport = [f[l4], f[l4 + 1]];
            key.dport = [f[l4 + 2], f[l4 + 3]];
            frag_first = true;
        }
        Parse::Ip(Ip {
            l3,
            bound,
            l4,
            v6: false,
            ihl_bytes: ihl * 4,
            key,
            fragment,
            frag_first,
            frag_id: u16::from_ne_bytes([f[l3 + 4], f[l3 + 5]]) as u32,
            dont_frag: frag & 0x4000 != 0,
            ip_len: total as u32,
        })
    }

    fn parse_v6(&self, f: &[u8], l3: usize) -> Parse {
        if f.len() < l3 + 40 {
            return Parse::Malformed;
        }
        if f[l3] >> 4 != 6 {
            return Parse::Malformed;
        }
        let plen = be16(f, l3 + 4) as usize;
        if l3 + 40 + plen > f.len() {
            return Parse::Malformed;
        }
        let bound = l3 + 40 + plen;
        let mut next = f[l3 + 6];
        let mut off = l3 + 40;
        let mut fragment = false;
        let mut first = false;
        let mut frag_id = 0u32;
        let is_ext = |n: u8| matches!(n, 0 | 43 | 60 | 44);
        // The datapath follows at most four extension headers.
        for _ in 0..4 {
            match next {
                0 | 43 | 60 => {
                    if off + 8 > bound {
                        return Parse::Malformed;
                    }
                    next = f[off];
                    off += (f[off + 1] as usize + 1) * 8;
                }
                44 => {
                    if off + 8 > bound {
                        return Parse::Malformed;
                    }
                    next = f[off];
                    let off_m = u16::from_be_bytes([f[off + 2], f[off + 3]]);
                    off += 8;
                    // RFC 6946 §4: an atomic fragment (offset 0, M clear)
                    // is a whole datagram; parsing goes on behind it.
                    if off_m & 0xfff9 == 0 {
                        continue;
                    }
                    fragment = true;
                    first = off_m & 0xfff8 == 0;
                    frag_id = u32::from_ne_bytes([f[off - 4], f[off - 3], f[off - 2], f[off - 1]]);
                    // RFC 8200 §4.5: after the Fragment header of a
                    // non-first fragment comes fragment data, not headers;
                    // so the chain ends here for every fragment, and all
                    // fragments of a datagram get the same key (its Next
                    // Header; an extension header there is unsupported).
                    break;
                }
                _ => break,
            }
        }
        if is_ext(next) {
            return Parse::Unsupported;
        }
        let mut key = Key {
            src: f[l3 + 8..l3 + 24].try_into().unwrap(),
            dst: f[l3 + 24..l3 + 40].try_into().unwrap(),
            sport: [0; 2],
            dport: [0; 2],
            proto: next,
        };
        if !fragment && (next == 6 || next == 17) {
            if off + 4 > bound {
                return Parse::Malformed;
            }
            key.sport = [f[off], f[off + 1]];
            key.dport = [f[off + 2], f[off + 3]];
        }
        let mut frag_first = false;
        if fragment && first && (next == 6 || next == 17) && off + 4 <= bound {
            key.sport = [f[off], f[off + 1]];
            key.dport = [f[off + 2], f[off + 3]];
            frag_first = true;
        }
        Parse::Ip(Ip {
            l3,
            bound,
            l4: off,
            v6: true,
            ihl_bytes: 40,
            key,
            fragment,
            frag_first,
            frag_id,
            dont_frag: true,
            ip_len: 40 + plen as u32,
        })
    }

    /// What an ICMP message says: not an error, an error whose quote names
    /// no usable flow, or the client → VIP flow of the quoted datagram.
    fn quoted_flow(&self, f: &[u8], ip: &Ip) -> Quoted {
        if ip.fragment || ip.l4 + 8 > ip.bound {
            return Quoted::NotAnError;
        }
        let kind = f[ip.l4];
        let is_error = if ip.v6 {
            matches!(kind, 1..=3)
        } else {
            kind == 3 || kind == 11
        };
        if !is_error {
            return Quoted::NotAnError;
        }
        let inner = ip.l4 + 8;
        let key = if !ip.v6 {
            if inner + 20 > ip.bound {
                return Quoted::Unusable;
            }
            let ihl = (f[inner] & 0x0f) as usize;
            if f[inner] >> 4 != 4 || ihl < 5 {
                return Quoted::Unusable;
            }
            let proto = f[inner + 9];
            if proto != 6 && proto != 17 {
                return Quoted::Unusable;
            }
            // Only a first fragment (offset 0) starts with the L4 header.
            if be16(f, inner + 6) & 0x1fff != 0 {
                return Quoted::Unusable;
            }
            let p = inner + ihl * 4;
            if p + 4 > ip.bound {
                return Quoted::Unusable;
            }
            Key {
                src: a4(f[inner + 16..inner + 20].try_into().unwrap()),
                dst: a4(f[inner + 12..inner + 16].try_into().unwrap()),
                sport: [f[p + 2], f[p + 3]],
                dport: [f[p], f[p + 1]],
                proto,
            }
        } else {
            if inner + 40 > ip.bound {
                return Quoted::Unusable;
            }
            if f[inner] >> 4 != 6 {
                return Quoted::Unusable;
            }
            // No extension headers in the quote: TCP or UDP right after.
            let nh = f[inner + 6];
            if nh != 6 && nh != 17 {
                return Quoted::Unusable;
            }
            let p = inner + 40;
            if p + 4 > ip.bound {
                return Quoted::Unusable;
            }
            Key {
                src: f[inner + 24..inner + 40].try_into().unwrap(),
                dst: f[inner + 8..inner + 24].try_into().unwrap(),
                sport: [f[p + 2], f[p + 3]],
                dport: [f[p], f[p + 1]],
                proto: nh,
            }
        };
        // The error is sent to the source of the quoted datagram (RFC 792,
        // RFC 4443): the VIP.
        if key.dst != ip.key.dst {
            return Quoted::Unusable;
        }
        Quoted::Flow(key)
    }

    fn lookup_vip(&self, flow: &Key, v6: bool, fragment: bool) -> Option<VipMeta> {
        let family = if v6 { FAMILY_V6 } else { FAMILY_V4 };
        let k = Key::flow_key(flow);
        let mut vk = VipKey {
            addr: k.dst,
            port: k.dst_port,
            proto: flow.proto,
            family,
        };
        if fragment {
            vk.port = 0;
            vk.family |= FAMILY_FRAGMENTS;
            return self.vips.get(&vk).copied();
        }
        if let Some(v) = self.vips.get(&vk) {
            return Some(*v);
        }
        // The control plane sets this flag when no VIP has port 0.
        if self.settings.flags & SETTINGS_F_NO_PORT_WILDCARDS != 0 {
            return None;
        }
        vk.port = 0;
        self.vips.get(&vk).copied()
    }

    fn backend(&self, index: u32) -> Option<BackendMeta> {
        if index >= MAX_BACKENDS {
            return None;
        }
        Some(self.backends.get(&index).copied().unwrap_or_default())
    }

    /// The `FRAGMENTS` key of a fragment.
    fn frag_key(ip: &Ip) -> FragKey {
        let k = ip.key.flow_key();
        FragKey {
            src: k.src,
            dst: k.dst,
            id: ip.frag_id,
            proto: ip.key.proto,
            _pad: [0; 3],
        }
    }

    /// The echo reply to the request in `f` (RFC 792, RFC 4443 §4.2).
    fn echo_reply(f: &[u8], ip: &Ip) -> Vec<u8> {
        let mut out = f.to_vec();
        out[..6].copy_from_slice(&f[6..12]);
        out[6..12].copy_from_slice(&f[..6]);
        let l3 = ip.l3;
        let l4 = ip.l4;
        // RFC 1624 eqn. 3 on one 16-bit word.
        let replace = |check: u16, old: u16, new: u16| -> u16 {
            let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            !(sum as u16)
        };
        if ip.v6 {
            out[l3 + 8..l3 + 24].copy_from_slice(&f[l3 + 24..l3 + 40]);
            out[l3 + 24..l3 + 40].copy_from_slice(&f[l3 + 8..l3 + 24]);
            out[l3 + 7] = 64;
            let code = f[l4 + 1];
            out[l4] = 129;
            let c = replace(
                be16(f, l4 + 2),
                u16::from_be_bytes([128, code]),
                u16::from_be_bytes([129, code]),
            );
            out[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        } else {
            out[l3 + 12..l3 + 16].copy_from_slice(&f[l3 + 16..l3 + 20]);
            out[l3 + 16..l3 + 20].copy_from_slice(&f[l3 + 12..l3 + 16]);
            out[l3 + 8] = 64;
            let c = replace(
                be16(f, l3 + 10),
                u16::from_be_bytes([f[l3 + 8], f[l3 + 9]]),
                u16::from_be_bytes([64, f[l3 + 9]]),
            );
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let code = f[l4 + 1];
            out[l4] = 0;
            let c = replace(
                be16(f, l4 + 2),
                u16::from_be_bytes([8, code]),
                u16::from_be_bytes([0, code]),
            );
            out[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
        }
        out
    }

    /// What the program should do with `f`; does not change the model
    /// (see [`Model::apply`]).
    pub fn decide(&self, f: &[u8]) -> Decision {
        let pass = |reason| Decision {
            action: XDP_PASS,
            reason,
            out: f.to_vec(),
            ct_key: None,
            ct_insert: None,
            frag_insert: None,
        };
        let ip = match self.parse(f) {
            Parse::Ip(ip) => ip,
            Parse::NonIp => return pass(Reason::PassNonIp),
            Parse::Malformed => return pass(Reason::PassMalformed),
            Parse::Unsupported => return pass(Reason::PassUnsupportedHeader),
        };
        #[derive(PartialEq, Clone, Copy)]
        enum Kind {
            Flow,
            FirstFragment,
            Fragment,
            IcmpError,
        }
        let icmp = if ip.v6 { 58 } else { 1 };
        // A later fragment whose first was seen follows it.
        let mut followed: Option<(VipMeta, u32, BackendMeta, u32)> = None;
        let (flow, kind) = if ip.key.proto == icmp {
            match self.quoted_flow(f, &ip) {
                Quoted::Flow(k) => (k, Kind::IcmpError),
                Quoted::NotAnError => {
                    let echo = !ip.fragment
                        && ip.l4 + 8 <= ip.bound
                        && f[ip.l4] == if ip.v6 { 128 } else { 8 };
                    let ek = VipKey {
                        addr: ip.key.flow_key().dst,
                        port: 0,
                        proto: icmp,
                        family: if ip.v6 { FAMILY_V6 } else { FAMILY_V4 },
                    };
                    if echo && self.vips.contains_key(&ek) {
                        return Decision {
                            action: XDP_TX,
                            reason: Reason::TxEchoReply,
                            out: Self::echo_reply(f, &ip),
                            ct_key: None,
                            ct_insert: None,
                            frag_insert: None,
                        };
                    }
                    return pass(Reason::PassNotVip);
                }
                Quoted::Unusable => return pass(Reason::PassIcmpUnknownFlow),
            }
        } else if ip.frag_first {
            (ip.key, Kind::FirstFragment)
        } else if ip.fragment {
            if let Some(v) = self.frags.get(&Self::frag_key(&ip)) {
                if let Some(b) = self.backend(v.backend) {
                    if b.flags & BACKEND_F_ACTIVE != 0 {
                        followed = Some((v.vip, v.backend, b, v.hash));
                    }
                }
            }
            (ip.key.three_tuple(), Kind::Fragment)
        } else {
            (ip.key, Kind::Flow)
        };
        let mut ct_insert = None;
        let mut frag_insert = None;
        let mut ct_key = None;
        let (vip, backend, reason, hash) = if let Some((vip, _, b, hash)) = followed {
            (vip, b, Reason::TxFragmentFollowed, hash)
        } else {
            let Some(vip) = self.lookup_vip(&flow, ip.v6, kind == Kind::Fragment) else {
                // An error about a flow to no VIP is not ours to steer either.
                return pass(if kind == Kind::IcmpError {
                    Reason::PassIcmpUnknownFlow
                } else {
                    Reason::PassNotVip
                });
            };
            if vip.mode == VIP_MODE_L7 {
                return pass(Reason::PassL7);
            }
            let drop = |reason| Decision {
                action: XDP_DROP,
                reason,
                out: f.to_vec(),
                ct_key: None,
                ct_insert: None,
                frag_insert: None,
            };
            let key = if vip.flags & VIP_F_HASH_NO_PORTS != 0 {
                flow.three_tuple()
            } else {
                flow
            };
            // Later fragments never touch the connection table; ICMP
            // errors read it but never add to it (nor spend the new-flow
            // budget); a first fragment is a packet of its flow.
            let use_ct = kind != Kind::Fragment && vip.flags & VIP_F_NO_CONNTRACK == 0;
            let may_insert = use_ct && matches!(kind, Kind::Flow | Kind::FirstFragment);

            // Connection table first, then the Maglev table.
            let mut chosen: Option<(u32, BackendMeta, Reason, u32)> = None;
            if use_ct {
                if let Some(c) = self.conntrack.get(&key) {
                    if c.vip == vip.index {
                        if let Some(b) = self.backend(c.backend) {
                            if b.flags & BACKEND_F_ACTIVE != 0 {
                                chosen = Some((c.backend, b, Reason::TxConntrackHit, c.hash));
                            }
                        }
                    }
                }
            }
            if chosen.is_none() {
                let m = self.settings.maglev_size;
                if m == 0 {
                    return drop(Reason::DropNoBackend);
                }
                if vip.index >= MAX_VIPS {
                    return drop(Reason::DropNoBackend);
                }
                let hash = key.hash();
                let slot = lb_common::flow::slot(hash, m);
                let index = self
                    .tables
                    .get(&(vip.index, vip.table & 1))
                    .map(|t| t[slot as usize])
                    .unwrap_or(0);
                if index == NO_BACKEND {
                    return drop(Reason::DropNoBackend);
                }
                let b = match self.backend(index) {
                    Some(b) if b.flags & BACKEND_F_ACTIVE != 0 => b,
                    _ => return drop(Reason::DropBadBackend),
                };
                let reason = if !may_insert {
                    Reason::TxNewFlow
                } else if self.inserts >= u64::from(self.settings.new_flows_per_cpu_sec) {
                    Reason::TxFloodGuard
                } else {
                    ct_insert = Some((
                        key,
                        ConnValue {
                            backend: index,
                            vip: vip.index,
                            hash,
                        },
                    ));
                    Reason::TxNewFlow
                };
                chosen = Some((index, b, reason, hash));
            }
            let (index, backend, mut reason, hash) = chosen.unwrap();
            match kind {
                Kind::Fragment => reason = Reason::TxFragment,
                Kind::IcmpError => reason = Reason::TxIcmpToBackend,
                Kind::FirstFragment => {
                    reason = Reason::TxFragmentFirst;
                    frag_insert = Some((
                        Self::frag_key(&ip),
                        FragValue {
                            backend: index,
                            hash,
                            vip,
                        },
                    ));
                }
                Kind::Flow => {}
            }
            if use_ct {
                ct_key = Some(key);
            }
            (vip, backend, reason, hash)
        };
        let tx = |out: Vec<u8>, reason| Decision {
            action: XDP_TX,
            reason,
            out,
            ct_key,
            ct_insert,
            frag_insert,
        };
        let dropped = |reason| Decision {
            action: XDP_DROP,
            reason,
            out: f.to_vec(),
            ct_key,
            ct_insert,
            frag_insert,
        };

        // Forwarded frames leave by the backend's interface: redirected
        // with that interface's MAC as the source, or sent back out.
        let fwd = |mut out: Vec<u8>, reason| {
            if backend.flags & BACKEND_F_REDIRECT == 0 {
                return tx(out, reason);
            }
            match self.tx_ports.get(&backend.tx_port) {
                Some(mac) => {
                    out[6..12].copy_from_slice(mac);
                    Decision {
                        action: XDP_REDIRECT,
                        ..tx(out, reason)
                    }
                }
                None => dropped(Reason::DropBadBackend),
            }
        };
        // L2 towards the next hop: our MAC (the old destination) becomes the
        // source; a VLAN tag stays.
        let l2 = |dst: &[u8]| {
            let mut h = f[..ip.l3].to_vec();
            let ours: Vec<u8> = f[..6].to_vec();
            h[..6].copy_from_slice(dst);
            h[6..12].copy_from_slice(&ours);
            h
        };
        if vip.mode == VIP_MODE_DSR {
            let mut out = f.to_vec();
            out[..ip.l3].copy_from_slice(&l2(&backend.next_hop_mac));
            return fwd(out, reason);
        }
        let outer_v6 = backend.flags & BACKEND_F_V6 != 0;
        if vip.mode != VIP_MODE_IPIP || (ip.v6 && !outer_v6) {
            return dropped(Reason::DropBadBackend);
        }
        let outer = if outer_v6 { 40 } else { 20 };
        let mtu = self.settings.backend_mtu;
        if ip.ip_len + outer > mtu {
            if kind == Kind::IcmpError || vip.flags & VIP_F_TOO_BIG_DROP != 0 {
                return dropped(Reason::DropTooBig);
            }
            let back = l2(&f[6..12]);
            if !ip.v6 {
                // Quotes of a fixed size only: no IPv4 options.
                if ip.ihl_bytes != 20 || f.len() < ip.l3 + 28 {
                    return dropped(Reason::DropTooBig);
                }
                let quoted = &f[ip.l3..ip.l3 + 28];
                let adv = (mtu.saturating_sub(outer)).clamp(68, 0xffff) as u16;
                let mut icmp = vec![3, 4, 0, 0, 0, 0];
                icmp.extend_from_slice(&adv.to_be_bytes());
                let c = checksum(&[&icmp, quoted]);
                icmp[2..4].copy_from_slice(&c.to_be_bytes());
                let mut iph = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
                iph.extend_from_slice(&quoted[16..20]);
                iph.extend_from_slice(&quoted[12..16]);
                let c = checksum(&[&iph]);
                iph[10..12].copy_from_slice(&c.to_be_bytes());
                let mut out = back;
                out.extend_from_slice(&iph);
                out.extend_from_slice(&icmp);
                out.extend_from_slice(quoted);
                return tx(out, Reason::TxIcmpTooBig);
            }
            if f.len() < ip.l3 + 48 {
                return dropped(Reason::DropTooBig);
            }
            let quoted = &f[ip.l3..ip.l3 + 48];
            // RFC 8200 §5: never advertise less than 1280.
            let adv = mtu.saturating_sub(40).max(1280);
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&adv.to_be_bytes());
            let (client, vipa) = (&quoted[8..24], &quoted[24..40]);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(vipa);
            pseudo.extend_from_slice(client);
            pseudo.extend_from_slice(&56u32.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            let c = checksum(&[&pseudo, &icmp, quoted]);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut out = back;
            out.extend_from_slice(&[0x60, 0, 0, 0, 0, 56, 58, 64]);
            out.extend_from_slice(vipa);
            out.extend_from_slice(client);
            out.extend_from_slice(&icmp);
            out.extend_from_slice(quoted);
            return tx(out, Reason::TxIcmpTooBig);
        }

        // IP-in-IP (Katran's scheme; IPv4 in IPv6 for an IPv6 backend).
        let s = &self.settings;
        let from_flow = s.flags & SETTINGS_F_IPIP_SRC_FROM_FLOW != 0;
        let mut out = l2(&backend.next_hop_mac);
        if !outer_v6 {
            let mut src = s.ipip_src_v4.to_ne_bytes();
            if from_flow {
                src[2..4].copy_from_slice(&hash.to_be_bytes()[2..4]);
            }
            let total = (ip.ip_len + 20) as u16;
            let mut h = vec![0x45, f[ip.l3 + 1]];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            h.extend_from_slice(&(if ip.dont_frag { 0x4000u16 } else { 0 }).to_be_bytes());
            h.extend_from_slice(&[64, 4, 0, 0]);
            h.extend_from_slice(&src);
            h.extend_from_slice(&backend.addr[0].to_ne_bytes());
            let c = checksum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        } else {
            let n = out.len();
            out[n - 2..].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut src = [0u8; 16];
            for (i, w) in s.ipip_src_v6.iter().enumerate() {
                src[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            if from_flow {
                src[12..16].copy_from_slice(&hash.to_be_bytes());
            }
            let (tc, next) = if ip.v6 {
                ((f[ip.l3] << 4) | (f[ip.l3 + 1] >> 4), 41)
            } else {
                (f[ip.l3 + 1], 4)
            };
            let vtf = (6u32 << 28) | (u32::from(tc) << 20) | (hash & 0xf_ffff);
            out.extend_from_slice(&vtf.to_be_bytes());
            out.extend_from_slice(&(ip.ip_len as u16).to_be_bytes());
            out.extend_from_slice(&[next, 64]);
            out.extend_from_slice(&src);
            for w in backend.addr {
                out.extend_from_slice(&w.to_ne_bytes());
            }
        }
        out.extend_from_slice(&f[ip.l3..]);
        fwd(out, reason)
    }

    /// Records a decision's effect on the connection and fragment tables.
    pub fn apply(&mut self, d: &Decision) {
        if let Some((k, v)) = d.ct_insert {
            self.conntrack.insert(k, v);
            self.inserts += 1;
        }
        if let Some((k, v)) = d.frag_insert {
            self.frags.insert(k, v);
        }
    }
}
