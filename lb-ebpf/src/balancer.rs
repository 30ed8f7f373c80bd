//! The XDP L4 balancer: VIP lookup → connection table or Maglev slot →
//! backend → MAC rewrite (DSR) or IP-in-IP encapsulation → `XDP_TX`.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    backend::{BackendMeta, BACKEND_F_ACTIVE, BACKEND_F_REDIRECT, BACKEND_F_V6},
    conntrack::{ConnValue, FlowKeyV4, FragKey, FragValue},
    consts::NO_BACKEND,
    counters::ProtoClass,
    flow::{flow_hash, slot, FlowKey},
    reasons::Reason,
    settings::{Settings, SETTINGS_F_NO_PORT_WILDCARDS},
    vip::{
        VipKey, VipMeta, ECHO_PORT, FAMILY_FRAGMENTS, FAMILY_V4, FAMILY_V6, VIP_F_HASH_NO_PORTS,
        VIP_F_NO_CONNTRACK, VIP_F_TOO_BIG_DROP, VIP_MODE_DSR, VIP_MODE_IPIP, VIP_MODE_L7,
    },
};

use crate::{
    encap,
    hdr::*,
    icmp,
    maps::{
        self, BACKENDS, CONNTRACK, CONNTRACK_V4, FLOOD_GUARD, FRAGMENTS, MAGLEV, SETTINGS,
        TX_DEVMAP, TX_PORTS, VIPS,
    },
    parse::{self, ptr_at, Parsed, Pkt},
};

/// Smallest MTU an IPv6 link may have (RFC 8200 §5): never advertise less.
const IPV6_MIN_MTU: u32 = 1280;

/// Smallest MTU an IPv4 "fragmentation needed" may advertise (RFC 791:
/// every IPv4 module must pass 68-byte datagrams unfragmented).
const IPV4_MIN_MTU: u32 = 68;

/// How the flow to steer was found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An ordinary TCP/UDP/other packet to a VIP.
    Flow,
    /// A first fragment with its ports: placed as `Flow`, remembered in
    /// `FRAGMENTS` for the later ones.
    FirstFragment,
    /// A later fragment (or a first one without ports): 3-tuple.
    Fragment,
    /// An ICMP error quoting a VIP flow.
    IcmpError,
}

#[inline(always)]
fn finish(class: ProtoClass, reason: Reason, len: u64, action: u32) -> u32 {
    maps::count(Some(class), reason, len);
    action
}

/// Runs the balancer on one frame and returns the XDP action.
///
/// Everything after the Ethernet header is written out once per IP
/// version ([`steer`] inlined twice, each copy with the family a
/// constant): with one shared copy, the IPv4 path carried the IPv6
/// address words and family tests through every step, and LLVM spilled
/// and reloaded them around each map lookup.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match parse::l3(ctx) {
        parse::L3::V4(l3_off) => steer(ctx, parse::parse_v4(ctx, l3_off), len),
        parse::L3::V6(l3_off) => steer(ctx, parse::parse_v6(ctx, l3_off), len),
        parse::L3::NonIp => steer(ctx, Parsed::NonIp, len),
        parse::L3::Malformed => steer(ctx, Parsed::Malformed, len),
    }
}

/// The balancer's work on a parsed frame.
#[inline(always)]
fn steer(ctx: &XdpContext, parsed: Parsed, len: u64) -> u32 {
    let class = parse::class_of_failure(&parsed);
    let pkt = match parsed {
        Parsed::Ip(p) => p,
        Parsed::Denied(_) => return finish(class, Reason::DropDenied, len, xdp_action::XDP_DROP),
        Parsed::NonIp => return finish(class, Reason::PassNonIp, len, xdp_action::XDP_PASS),
        Parsed::Malformed => {
            // Off unless the daemon runs at debug level (the level check is
            // one load); at debug it says what the counters cannot: when.
            aya_log_ebpf::debug!(ctx, "malformed frame of {} bytes passed to the stack", len);
            return finish(class, Reason::PassMalformed, len, xdp_action::XDP_PASS);
        }
        Parsed::Unsupported => {
            return finish(
                class,
                Reason::PassUnsupportedHeader,
                len,
                xdp_action::XDP_PASS,
            )
        }
    };
    let icmp_proto = if pkt.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    let (flow, kind) = if pkt.key.proto == icmp_proto {
        match icmp::quoted_flow(ctx, &pkt) {
            icmp::Quoted::Flow(f) => (f, Kind::IcmpError),
            icmp::Quoted::NotAnError => return echo(ctx, &pkt, class, len),
            icmp::Quoted::Unusable => {
                return finish(
                    class,
                    Reason::PassIcmpUnknownFlow,
                    len,
                    xdp_action::XDP_PASS,
                )
            }
        }
    } else if pkt.frag_first {
        (pkt.key, Kind::FirstFragment)
    } else if pkt.fragment {
        if let Some(action) = follow_first_fragment(ctx, &pkt, class, len) {
            return action;
        }
        (pkt.key.three_tuple(), Kind::Fragment)
    } else {
        (pkt.key, Kind::Flow)
    };
    let Some(settings) = SETTINGS.get(0) else {
        // Not configured yet: behave as if no VIP existed.
        return finish(class, Reason::PassNotVip, len, xdp_action::XDP_PASS);
    };
    let wildcards = settings.flags & SETTINGS_F_NO_PORT_WILDCARDS == 0;
    let Some(vip) = lookup_vip(&flow, pkt.v6, kind == Kind::Fragment, wildcards) else {
        let reason = if kind == Kind::IcmpError {
            Reason::PassIcmpUnknownFlow
        } else {
            Reason::PassNotVip
        };
        return finish(class, reason, len, xdp_action::XDP_PASS);
    };
    maps::count_vip(vip.index, len);
    if vip.mode == VIP_MODE_L7 {
        return finish(class, Reason::PassL7, len, xdp_action::XDP_PASS);
    }
    let key = if vip.flags & VIP_F_HASH_NO_PORTS != 0 {
        flow.three_tuple()
    } else {
        flow
    };
    // Later fragments never touch the connection table; ICMP errors read
    // it (the flow's backend, if known) but never add to it: an error about
    // a flow nobody tracks goes where the Maglev table puts that flow. A
    // first fragment is a packet of its flow like any other.
    let use_conntrack = kind != Kind::Fragment && vip.flags & VIP_F_NO_CONNTRACK == 0;
    let may_insert = use_conntrack && (kind == Kind::Flow || kind == Kind::FirstFragment);
    let mut sel = match select(&key, pkt.v6, &vip, settings, use_conntrack, may_insert) {
        Ok(s) => s,
        Err(r) => return finish(class, r, len, xdp_action::XDP_DROP),
    };
    match kind {
        Kind::Fragment => sel.reason = Reason::TxFragment,
        Kind::IcmpError => sel.reason = Reason::TxIcmpToBackend,
        Kind::FirstFragment => {
            sel.reason = Reason::TxFragmentFirst;
            remember_first_fragment(&pkt, &vip, &sel);
        }
        Kind::Flow => {
            if use_conntrack && sel.reason != Reason::TxConntrackHit && midflow_tcp(ctx, &pkt) {
                maps::count_midflow_miss(vip.index, len);
            }
        }
    }
    maps::count_backend(sel.index, len);
    forward(ctx, &pkt, &vip, &sel, settings, kind, len, class)
}

/// An ICMP message that is not an error: an echo request to an address
/// whose VIPs answer ping is answered here; anything else goes to the
/// stack as before.
#[inline(always)]
fn echo(ctx: &XdpContext, pkt: &Pkt, class: ProtoClass, len: u64) -> u32 {
    if !icmp::is_echo_request(ctx, pkt) {
        return finish(class, Reason::PassNotVip, len, xdp_action::XDP_PASS);
    }
    let key = VipKey {
        addr: pkt.key.dst,
        port: ECHO_PORT,
        proto: pkt.key.proto,
        family: if pkt.v6 { FAMILY_V6 } else { FAMILY_V4 },
    };
    let Some(vip) = vip_get(&key) else {
        return finish(class, Reason::PassNotVip, len, xdp_action::XDP_PASS);
    };
    maps::count_vip(vip.index, len);
    match icmp::echo_reply(ctx, pkt) {
        Some(()) => finish(class, Reason::TxEchoReply, len, xdp_action::XDP_TX),
        None => finish(class, Reason::DropEncapFailed, len, xdp_action::XDP_DROP),
    }
}

/// A map key built on the stack one 32-bit word at a time, with volatile
/// stores.
///
/// In the IPv4 copy of the balancer (see [`process`]) the upper address
/// words of a key are known zeros, and LLVM, told that misaligned accesses
/// are fine (lb-ebpf/.cargo), merges two such 4-byte stores into one
/// 8-byte store at a 4-byte-aligned stack offset, which the verifier
/// rejects ("misaligned stack access"). Volatile stores are kept as they
/// are written.
#[repr(C)]
struct StackKey<K> {
    key: core::mem::MaybeUninit<K>,
}

impl<K> StackKey<K> {
    #[inline(always)]
    fn uninit() -> StackKey<K> {
        StackKey {
            key: core::mem::MaybeUninit::uninit(),
        }
    }

    /// Writes the key in place, `words` in memory order (`N` words must be
    /// exactly the size of `K`), and returns it. In place: a key returned
    /// by value would be copied, and the copy's stores merged again.
    #[inline(always)]
    fn set<const N: usize>(&mut self, words: [u32; N]) -> &K {
        const { assert!(core::mem::size_of::<K>() == N * 4) };
        let w = self.key.as_mut_ptr() as *mut u32;
        let mut i = 0;
        while i < N {
            // SAFETY: `w` points at N words of this key (size checked above;
            // every key type here is 4-aligned).
            unsafe { core::ptr::write_volatile(w.add(i), words[i]) };
            i += 1;
        }
        // SAFETY: every byte written just above.
        unsafe { self.key.assume_init_ref() }
    }
}

/// The words of the `FRAGMENTS` key of a fragment's datagram (a
/// `FragKey`: addresses, identification, protocol, three zero bytes), for
/// [`StackKey::set`].
#[inline(always)]
fn frag_key(pkt: &Pkt) -> [u32; 10] {
    const {
        use core::mem::offset_of;
        assert!(offset_of!(FragKey, id) == 32 && offset_of!(FragKey, proto) == 36);
    };
    let (s, d) = (pkt.key.src, pkt.key.dst);
    [
        s[0],
        s[1],
        s[2],
        s[3],
        d[0],
        d[1],
        d[2],
        d[3],
        pkt.frag_id,
        pkt.key.proto as u32,
    ]
}

/// Looks `key` up in `VIPS` (through a [`StackKey`]), copying the value
/// out.
#[inline(always)]
fn vip_get(key: &VipKey) -> Option<VipMeta> {
    let a = key.addr;
    // VipKey: the address, then port (u16), protocol, family (little-endian).
    const {
        use core::mem::offset_of;
        assert!(offset_of!(VipKey, port) == 16);
        assert!(offset_of!(VipKey, proto) == 18 && offset_of!(VipKey, family) == 19);
    };
    let last = key.port as u32 | (key.proto as u32) << 16 | (key.family as u32) << 24;
    let mut k = StackKey::<VipKey>::uninit();
    let k = k.set([a[0], a[1], a[2], a[3], last]);
    // SAFETY: NO_PREALLOC map; the value is copied out at once.
    unsafe { VIPS.get(k) }.copied()
}

/// Remembers where a first fragment went, for its datagram's others.
#[inline(always)]
fn remember_first_fragment(pkt: &Pkt, vip: &VipMeta, sel: &Selected) {
    let value = FragValue {
        backend: sel.index,
        hash: sel.hash,
        vip: *vip,
    };
    let mut k = StackKey::<FragKey>::uninit();
    let _ = FRAGMENTS.insert(k.set(frag_key(pkt)), &value, 0);
}

/// A later fragment whose first fragment was seen: sent where that one
/// went. `None` when there is no usable entry (the caller falls back to the
/// 3-tuple).
#[inline(always)]
fn follow_first_fragment(ctx: &XdpContext, pkt: &Pkt, class: ProtoClass, len: u64) -> Option<u32> {
    let mut k = StackKey::<FragKey>::uninit();
    let f = FRAGMENTS.get_ptr(k.set(frag_key(pkt)))?;
    // SAFETY: copied out at once; a stale value is checked below.
    let f: FragValue = unsafe { *f };
    let backend = BACKENDS.get(f.backend)?;
    if backend.flags & BACKEND_F_ACTIVE == 0 {
        return None;
    }
    let settings = SETTINGS.get(0)?;
    maps::count_vip(f.vip.index, len);
    maps::count_backend(f.backend, len);
    let sel = Selected {
        index: f.backend,
        backend,
        reason: Reason::TxFragmentFollowed,
        hash: f.hash,
    };
    Some(forward(
        ctx,
        pkt,
        &f.vip,
        &sel,
        settings,
        Kind::Fragment,
        len,
        class,
    ))
}

/// A TCP segment without SYN: one that belongs to a flow already under way.
#[inline(always)]
fn midflow_tcp(ctx: &XdpContext, pkt: &Pkt) -> bool {
    /// Offset of the flags byte in the TCP header (RFC 9293 §3.1).
    const TCP_FLAGS_OFF: usize = 13;
    const TCP_SYN: u8 = 0x02;
    if pkt.key.proto != IPPROTO_TCP {
        return false;
    }
    match ptr_at::<u8>(ctx, pkt.l4_off + TCP_FLAGS_OFF) {
        // SAFETY: ptr_at checked the byte lies inside the frame.
        Some(p) => (unsafe { *p } & TCP_SYN) == 0,
        None => false,
    }
}

/// The backend a packet goes to, and what was learnt choosing it.
struct Selected {
    /// Index into `BACKENDS`.
    index: u32,
    backend: &'static BackendMeta,
    reason: Reason,
    /// The flow hash (from the connection table on a hit, else computed
    /// for the Maglev slot), reused for the IPIP outer source.
    hash: u32,
}

/// Exact (address, port, protocol), then the port wildcard; fragments use
/// their own entry (see `FAMILY_FRAGMENTS`).
#[inline(always)]
fn lookup_vip(flow: &FlowKey, v6: bool, fragment: bool, wildcards: bool) -> Option<VipMeta> {
    let family = if v6 { FAMILY_V6 } else { FAMILY_V4 };
    let mut key = VipKey {
        addr: flow.dst,
        port: flow.dst_port,
        proto: flow.proto,
        family,
    };
    if fragment {
        key.port = 0;
        key.family = family | FAMILY_FRAGMENTS;
        return vip_get(&key);
    }
    if let Some(v) = vip_get(&key) {
        return Some(v);
    }
    if !wildcards {
        return None;
    }
    key.port = 0;
    vip_get(&key)
}

/// Picks the backend: the connection table's, if it still stands, else the
/// Maglev table's (remembered for next time unless the flood guard says no).
#[inline(always)]
fn select(
    key: &FlowKey,
    v6: bool,
    vip: &VipMeta,
    settings: &Settings,
    use_conntrack: bool,
    may_insert: bool,
) -> Result<Selected, Reason> {
    if use_conntrack {
        let found = if v6 {
            CONNTRACK.get_ptr(key)
        } else {
            CONNTRACK_V4.get_ptr(&FlowKeyV4::of(key))
        };
        if let Some(c) = found {
            // SAFETY: copied out immediately; a concurrent LRU eviction can
            // at worst hand us a stale value, which the checks below reject.
            let c: ConnValue = unsafe { *c };
            if c.vip == vip.index {
                if let Some(b) = BACKENDS.get(c.backend) {
                    if b.flags & BACKEND_F_ACTIVE != 0 {
                        return Ok(Selected {
                            index: c.backend,
                            backend: b,
                            reason: Reason::TxConntrackHit,
                            hash: c.hash,
                        });
                    }
                }
            }
        }
    }
    let m = settings.maglev_size;
    if m == 0 {
        return Err(Reason::DropNoBackend);
    }
    let row = vip.index * 2 + (vip.table & 1);
    let hash = flow_hash(key);
    let Some(&index) = MAGLEV.get(row * m + slot(hash, m)) else {
        return Err(Reason::DropNoBackend);
    };
    if index == NO_BACKEND {
        return Err(Reason::DropNoBackend);
    }
    let Some(b) = BACKENDS.get(index) else {
        return Err(Reason::DropBadBackend);
    };
    if b.flags & BACKEND_F_ACTIVE == 0 {
        return Err(Reason::DropBadBackend);
    }
    let placed = |reason| Selected {
        index,
        backend: b,
        reason,
        hash,
    };
    if !may_insert {
        return Ok(placed(Reason::TxNewFlow));
    }
    if !flood_budget() {
        return Ok(placed(Reason::TxFloodGuard));
    }
    let value = ConnValue {
        backend: index,
        vip: vip.index,
        hash,
    };
    let _ = if v6 {
        CONNTRACK.insert(key, &value, 0)
    } else {
        CONNTRACK_V4.insert(&FlowKeyV4::of(key), &value, 0)
    };
    Ok(placed(Reason::TxNewFlow))
}

/// Takes one connection-table insert from this CPU's budget (refilled by
/// the daemon, see `FloodBudget`); false when it is spent.
#[inline(always)]
fn flood_budget() -> bool {
    let Some(b) = FLOOD_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: per-CPU slot, pointer from a successful lookup. The daemon's
    // refill may overwrite it concurrently; a lost decrement only lets one
    // more flow in.
    unsafe {
        if (*b).remaining == 0 {
            return false;
        }
        (*b).remaining -= 1;
    }
    true
}

/// Sends the frame on its way: `XDP_TX` out of the receiving NIC, or
/// `XDP_REDIRECT` to the backend's interface, with the source MAC of the
/// interface it leaves by.
#[inline(always)]
fn send(
    backend: &BackendMeta,
    class: ProtoClass,
    reason: Reason,
    len: u64,
    ctx: &XdpContext,
) -> u32 {
    if backend.flags & BACKEND_F_REDIRECT == 0 {
        return finish(class, reason, len, xdp_action::XDP_TX);
    }
    let port = backend.tx_port as u32;
    let Some(p) = TX_PORTS.get(port) else {
        return finish(class, Reason::DropBadBackend, len, xdp_action::XDP_DROP);
    };
    if encap::set_src_mac(ctx, &p.mac).is_none() {
        return finish(class, Reason::DropEncapFailed, len, xdp_action::XDP_DROP);
    }
    match TX_DEVMAP.redirect(port, 0) {
        Ok(action) => finish(class, reason, len, action),
        // An empty device-map slot: the daemon has not written the port.
        Err(_) => finish(class, Reason::DropBadBackend, len, xdp_action::XDP_DROP),
    }
}

/// A packet too big for the path to the backends once encapsulated:
/// answered with ICMP "fragmentation needed" / "packet too big" (the
/// default, whatever DF says: XDP cannot fragment, and a sender that gets
/// the error lowers its path MTU or fragments itself), or dropped when the
/// VIP says `too_big: drop`, when the packet is itself an ICMP error
/// (RFC 1122 §3.2.2: never an error about an error) or when its IPv4
/// header has options (the reply's quote would not have a fixed size).
#[inline(always)]
fn too_big(
    ctx: &XdpContext,
    pkt: &Pkt,
    vip: &VipMeta,
    settings: &Settings,
    outer: u32,
    kind: Kind,
    len: u64,
    class: ProtoClass,
) -> u32 {
    if kind == Kind::IcmpError || vip.flags & VIP_F_TOO_BIG_DROP != 0 {
        return finish(class, Reason::DropTooBig, len, xdp_action::XDP_DROP);
    }
    let mtu = settings.backend_mtu.saturating_sub(outer);
    let done = if pkt.v6 {
        icmp::too_big_v6(ctx, pkt, mtu.max(IPV6_MIN_MTU))
    } else {
        icmp::too_big_v4(ctx, pkt, mtu.max(IPV4_MIN_MTU))
    };
    match done {
        Some(()) => finish(class, Reason::TxIcmpTooBig, len, xdp_action::XDP_TX),
        None => finish(class, Reason::DropTooBig, len, xdp_action::XDP_DROP),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward(
    ctx: &XdpContext,
    pkt: &Pkt,
    vip: &VipMeta,
    sel: &Selected,
    settings: &Settings,
    kind: Kind,
    len: u64,
    class: ProtoClass,
) -> u32 {
    let (backend, reason) = (sel.backend, sel.reason);
    if vip.mode == VIP_MODE_DSR {
        return match encap::rewrite_macs(ctx, &backend.next_hop_mac) {
            Some(()) => send(backend, class, reason, len, ctx),
            None => finish(class, Reason::DropEncapFailed, len, xdp_action::XDP_DROP),
        };
    }
    let outer_v6 = backend.flags & BACKEND_F_V6 != 0;
    // IPv6 in IPv4 is not offered: an IPv6 VIP needs IPv6 backends.
    if vip.mode != VIP_MODE_IPIP || (pkt.v6 && !outer_v6) {
        return finish(class, Reason::DropBadBackend, len, xdp_action::XDP_DROP);
    }
    let outer = if outer_v6 { 40 } else { 20 };
    if pkt.ip_len + outer > settings.backend_mtu {
        return too_big(ctx, pkt, vip, settings, outer, kind, len, class);
    }
    let done = if outer_v6 {
        // `pkt.v6` is a constant in each per-family copy of the balancer.
        let inner = if pkt.v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
        encap::ipip_v6(
            ctx, pkt.l3_off, backend, settings, sel.hash, pkt.ip_len, pkt.tos, inner,
        )
    } else {
        encap::ipip_v4(
            ctx,
            pkt.l3_off,
            backend,
            settings,
            sel.hash,
            pkt.ip_len,
            pkt.tos,
            pkt.dont_frag,
        )
    };
    match done {
        Some(()) => send(backend, class, reason, len, ctx),
        None => finish(class, Reason::DropEncapFailed, len, xdp_action::XDP_DROP),
    }
}
