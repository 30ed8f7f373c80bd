//! The VIPs, backends and addresses both XDP tests install: every mode
//! and flag of the datapath appears once. Addresses are from the
//! documentation ranges (RFC 5737, RFC 3849).
use lb_common::{
    backend::{BackendMeta, TxPort, BACKEND_F_ACTIVE, BACKEND_F_REDIRECT, BACKEND_F_V6},
    flow::{wire_addr_v4, wire_addr_v6, wire_port, FlowKey},
    vip::{
        VipKey, VipMeta, VIP_F_HASH_NO_PORTS, VIP_F_NO_CONNTRACK, VIP_F_TOO_BIG_DROP, VIP_MODE_DSR,
        VIP_MODE_IPIP, VIP_MODE_L7,
    },
};

use super::frame::Mac;
use super::loader::{BackendSpec, VipSpec};

/// Maglev table size in the tests: a small prime keeps the maps small.
pub const M: u32 = 251;

/// The balancer's own MAC: the destination of every frame it receives.
pub const LB_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// The client's (or its router's) MAC.
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xc1];

/// A client.
pub const C4: [u8; 4] = [203, 0, 113, 7];
/// Another client.
pub const C4B: [u8; 4] = [203, 0, 113, 8];
/// A router on the path that sends ICMP errors.
pub const ROUTER4: [u8; 4] = [203, 0, 113, 254];
/// A client.
pub const C6: [u8; 16] = v6(0x2001_0db8_000c_0000, 7);
/// A router on the path (IPv6).
pub const ROUTER6: [u8; 16] = v6(0x2001_0db8_000c_0000, 0xfe);

/// TCP 80 DSR (row 0).
pub const VIP_A: [u8; 4] = [198, 51, 100, 1];
/// Port-wildcard TCP DSR, plus TCP 443 exact as L7.
pub const VIP_W: [u8; 4] = [198, 51, 100, 2];
/// TCP 80 IPIP.
pub const VIP_I: [u8; 4] = [198, 51, 100, 3];
/// TCP 80 DSR without backends.
pub const VIP_EMPTY: [u8; 4] = [198, 51, 100, 5];
/// TCP 80 DSR, `VIP_F_NO_CONNTRACK`.
pub const VIP_NOCT: [u8; 4] = [198, 51, 100, 6];
/// TCP 80 DSR, `VIP_F_HASH_NO_PORTS`.
pub const VIP_NOPORTS: [u8; 4] = [198, 51, 100, 7];
/// TCP 80 IPIP whose only backend is IPv6 (IPv4 in IPv6).
pub const VIP_MIXED: [u8; 4] = [198, 51, 100, 8];
/// TCP 80 IPIP with `too_big: drop`.
pub const VIP_TBDROP: [u8; 4] = [198, 51, 100, 10];
/// TCP 80 DSR and UDP 53 IPIP to backend 7, behind a second NIC.
pub const VIP_RDR: [u8; 4] = [198, 51, 100, 11];
/// TCP 80 DSR whose table names an inactive backend.
pub const VIP_DEAD: [u8; 4] = [198, 51, 100, 9];
/// Not a VIP.
pub const NOT_VIP4: [u8; 4] = [198, 51, 100, 99];
/// TCP 80 DSR and UDP 53 IPIP (with the fragment alias).
pub const VIP6_A: [u8; 16] = v6(0x2001_0db8_0100_0000, 1);
/// TCP 80 IPIP.
pub const VIP6_I: [u8; 16] = v6(0x2001_0db8_0100_0000, 2);
/// TCP 80 IPIP with `too_big: drop`.
pub const VIP6_TBDROP: [u8; 16] = v6(0x2001_0db8_0100_0000, 0x10);
/// TCP 80 DSR to backend 8, behind the second NIC.
pub const VIP6_RDR: [u8; 16] = v6(0x2001_0db8_0100_0000, 0x11);
/// Not a VIP.
pub const NOT_VIP6: [u8; 16] = v6(0x2001_0db8_0100_0000, 0x99);

/// The fixed IPIP outer source prefix (a /16 for IPv4, a /96 for IPv6).
pub const IPIP_SRC4: [u8; 4] = [172, 16, 0, 0];
/// See [`IPIP_SRC4`].
pub const IPIP_SRC6: [u8; 16] = v6(0x2001_0db8_00ff_0000, 0);

/// An IPv6 address from its top 64 bits and bottom 64 bits.
pub const fn v6(hi: u64, lo: u64) -> [u8; 16] {
    let h = hi.to_be_bytes();
    let l = lo.to_be_bytes();
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// The next-hop MAC of backend `i`.
pub const fn bmac(i: u32) -> Mac {
    [0x02, 0, 0, 0, 0xb0, i as u8]
}

/// The backend behind the second NIC (`TX_PORTS` slot [`RDR_PORT`]).
pub const B_RDR: u32 = 7;
/// The IPv6 backend behind the second NIC.
pub const B6_RDR: u32 = 8;
/// Its `TX_PORTS` / `TX_DEVMAP` slot (both backends').
pub const RDR_PORT: u8 = 1;
/// The second NIC's MAC (the redirected frames' source).
pub const RDR_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];

/// The second NIC: loopback's index stands in (BPF_PROG_TEST_RUN reports
/// `XDP_REDIRECT` without sending), its MAC [`RDR_MAC`].
pub fn rdr_port() -> TxPort {
    TxPort {
        ifindex: 1,
        mac: RDR_MAC,
        _pad: [0; 2],
    }
}

/// IPv4 backends 1..=3, IPv6 backends 4..=6, inactive backend 9.
pub const B4: [u32; 3] = [1, 2, 3];
/// See [`B4`].
pub const B6: [u32; 3] = [4, 5, 6];
/// See [`B4`].
pub const B_INACTIVE: u32 = 9;

/// Backend `i`'s IPv4 address.
pub const fn baddr4(i: u32) -> [u8; 4] {
    [192, 0, 2, 10 + i as u8]
}

/// Backend `i`'s IPv6 address.
pub const fn baddr6(i: u32) -> [u8; 16] {
    v6(0x2001_0db8_000b_0000, 0x10 + i as u64)
}

/// Every backend.
pub fn backends() -> Vec<BackendSpec> {
    let mut v = Vec::new();
    for i in B4 {
        v.push(BackendSpec {
            index: i,
            meta: BackendMeta {
                addr: [wire_addr_v4(baddr4(i)), 0, 0, 0],
                flags: BACKEND_F_ACTIVE,
                next_hop_mac: bmac(i),
                tx_port: 0,
                _pad: 0,
            },
        });
    }
    for i in B6 {
        v.push(BackendSpec {
            index: i,
            meta: BackendMeta {
                addr: wire_addr_v6(baddr6(i)),
                flags: BACKEND_F_ACTIVE | BACKEND_F_V6,
                next_hop_mac: bmac(i),
                tx_port: 0,
                _pad: 0,
            },
        });
    }
    v.push(BackendSpec {
        index: B_RDR,
        meta: BackendMeta {
            addr: [wire_addr_v4(baddr4(B_RDR)), 0, 0, 0],
            flags: BACKEND_F_ACTIVE | BACKEND_F_REDIRECT,
            next_hop_mac: bmac(B_RDR),
            tx_port: RDR_PORT,
            _pad: 0,
        },
    });
    v.push(BackendSpec {
        index: B6_RDR,
        meta: BackendMeta {
            addr: wire_addr_v6(baddr6(B6_RDR)),
            flags: BACKEND_F_ACTIVE | BACKEND_F_V6 | BACKEND_F_REDIRECT,
            next_hop_mac: bmac(B6_RDR),
            tx_port: RDR_PORT,
            _pad: 0,
        },
    });
    v.push(BackendSpec {
        index: B_INACTIVE,
        meta: BackendMeta {
            addr: [wire_addr_v4(baddr4(B_INACTIVE)), 0, 0, 0],
            flags: 0,
            next_hop_mac: bmac(B_INACTIVE),
            tx_port: 0,
            _pad: 0,
        },
    });
    v
}

/// VIP rows (their `VipMeta::index`).
pub mod row {
    pub const A_TCP: u32 = 0;
    pub const A_UDP_IPIP: u32 = 1;
    pub const W_ANY: u32 = 2;
    pub const W_L7: u32 = 3;
    pub const I_TCP: u32 = 4;
    pub const EMPTY: u32 = 5;
    pub const NOCT: u32 = 6;
    pub const NOPORTS: u32 = 7;
    pub const MIXED: u32 = 8;
    pub const DEAD: u32 = 9;
    pub const A6_TCP: u32 = 10;
    pub const A6_UDP_IPIP: u32 = 11;
    pub const I6_TCP: u32 = 12;
    pub const TBDROP: u32 = 13;
    pub const RDR_TCP: u32 = 14;
    pub const RDR_UDP_IPIP: u32 = 15;
    pub const TBDROP6: u32 = 16;
    pub const RDR6_TCP: u32 = 17;
}

/// Echo entries (`lb_common::vip::ECHO_PORT`): VIP_A and VIP6_A answer
/// ping (counted under their TCP rows); VIP_I does not (`ping: false`).
pub fn echo_entries() -> Vec<(VipKey, VipMeta)> {
    vec![
        (v4(VIP_A, 0, 1), meta(row::A_TCP, 0, VIP_MODE_DSR, 0)),
        (v6key(VIP6_A, 0, 58), meta(row::A6_TCP, 0, VIP_MODE_DSR, 0)),
    ]
}

fn v4(addr: [u8; 4], port: u16, proto: u8) -> VipKey {
    VipKey::v4(wire_addr_v4(addr), wire_port(port), proto)
}

fn v6key(addr: [u8; 16], port: u16, proto: u8) -> VipKey {
    VipKey::v6(wire_addr_v6(addr), wire_port(port), proto)
}

fn meta(index: u32, table: u32, mode: u32, flags: u32) -> VipMeta {
    VipMeta {
        index,
        table,
        mode,
        flags,
    }
}

fn all4() -> Vec<(u32, u32)> {
    B4.iter().map(|&b| (b, 1)).collect()
}

fn all6() -> Vec<(u32, u32)> {
    B6.iter().map(|&b| (b, 1)).collect()
}

/// Every VIP. Some use table half 1, so reading the wrong half (which is
/// full of `NO_BACKEND`) would show as a drop.
pub fn vips() -> Vec<VipSpec> {
    use row::*;
    let spec = |key, meta, backends, fragments| VipSpec {
        key,
        meta,
        backends,
        fragments,
    };
    vec![
        spec(
            v4(VIP_A, 80, 6),
            meta(A_TCP, 0, VIP_MODE_DSR, 0),
            all4(),
            false,
        ),
        spec(
            v4(VIP_A, 53, 17),
            meta(A_UDP_IPIP, 1, VIP_MODE_IPIP, 0),
            vec![(1, 1), (2, 2), (3, 1)],
            true,
        ),
        spec(
            v4(VIP_W, 0, 6),
            meta(W_ANY, 0, VIP_MODE_DSR, 0),
            all4(),
            false,
        ),
        spec(
            v4(VIP_W, 443, 6),
            meta(W_L7, 0, VIP_MODE_L7, 0),
            all4(),
            false,
        ),
        spec(
            v4(VIP_I, 80, 6),
            meta(I_TCP, 1, VIP_MODE_IPIP, 0),
            all4(),
            false,
        ),
        spec(
            v4(VIP_EMPTY, 80, 6),
            meta(EMPTY, 0, VIP_MODE_DSR, 0),
            vec![],
            false,
        ),
        spec(
            v4(VIP_NOCT, 80, 6),
            meta(NOCT, 0, VIP_MODE_DSR, VIP_F_NO_CONNTRACK),
            all4(),
            false,
        ),
        spec(
            v4(VIP_NOPORTS, 80, 6),
            meta(NOPORTS, 0, VIP_MODE_DSR, VIP_F_HASH_NO_PORTS),
            all4(),
            false,
        ),
        spec(
            v4(VIP_MIXED, 80, 6),
            meta(MIXED, 0, VIP_MODE_IPIP, 0),
            vec![(4, 1)],
            false,
        ),
        spec(
            v4(VIP_DEAD, 80, 6),
            meta(DEAD, 0, VIP_MODE_DSR, 0),
            vec![(B_INACTIVE, 1)],
            false,
        ),
        spec(
            v6key(VIP6_A, 80, 6),
            meta(A6_TCP, 0, VIP_MODE_DSR, 0),
            all6(),
            false,
        ),
        spec(
            v6key(VIP6_A, 53, 17),
            meta(A6_UDP_IPIP, 1, VIP_MODE_IPIP, 0),
            all6(),
            true,
        ),
        spec(
            v6key(VIP6_I, 80, 6),
            meta(I6_TCP, 0, VIP_MODE_IPIP, 0),
            all6(),
            false,
        ),
        spec(
            v4(VIP_TBDROP, 80, 6),
            meta(TBDROP, 0, VIP_MODE_IPIP, VIP_F_TOO_BIG_DROP),
            all4(),
            false,
        ),
        spec(
            v4(VIP_RDR, 80, 6),
            meta(RDR_TCP, 0, VIP_MODE_DSR, 0),
            vec![(B_RDR, 1)],
            false,
        ),
        spec(
            v4(VIP_RDR, 53, 17),
            meta(RDR_UDP_IPIP, 1, VIP_MODE_IPIP, 0),
            vec![(B_RDR, 1)],
            true,
        ),
        spec(
            v6key(VIP6_TBDROP, 80, 6),
            meta(TBDROP6, 0, VIP_MODE_IPIP, VIP_F_TOO_BIG_DROP),
            all6(),
            false,
        ),
        spec(
            v6key(VIP6_RDR, 80, 6),
            meta(RDR6_TCP, 0, VIP_MODE_DSR, 0),
            vec![(B6_RDR, 1)],
            false,
        ),
    ]
}

/// An IPv4 flow key from octets and host-order ports.
pub fn fk4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey::v4(
        wire_addr_v4(src),
        wire_addr_v4(dst),
        wire_port(sport),
        wire_port(dport),
        proto,
    )
}

/// An IPv6 flow key from octets and host-order ports.
pub fn fk6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey::v6(
        wire_addr_v6(src),
        wire_addr_v6(dst),
        wire_port(sport),
        wire_port(dport),
        proto,
    )
}

/// The settings both tests start from: outer sources derived from the
/// flow, backend MTU 1500, the default new-flow budget.
pub fn settings() -> lb_common::settings::Settings {
    lb_common::settings::Settings {
        maglev_size: M,
        flags: lb_common::settings::SETTINGS_F_IPIP_SRC_FROM_FLOW,
        ipip_src_v4: wire_addr_v4(IPIP_SRC4),
        backend_mtu: 1500,
        ipip_src_v6: wire_addr_v6(IPIP_SRC6),
        new_flows_per_cpu_sec: lb_common::consts::DEFAULT_NEW_FLOWS_PER_CPU_SEC,
        _pad: 0,
    }
}
