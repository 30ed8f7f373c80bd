//! The XDP balancer and decap programs as a fixture table (Katran's
//! `lib/testing/fixtures/` style): each row is a description, a setup, an
//! input frame, the expected action, the expected output frame (built
//! independently with the frame builder) and the expected `REASONS`
//! deltas; each row runs once through `BPF_PROG_TEST_RUN`. After the table
//! the `REASONS` totals must equal the sum of the rows' deltas.
//!
//! Every row runs on a clean connection table, flood-guard window and deny
//! list with the default settings, unless it says `KeepState` (the
//! flood-guard rows form a sequence). All rows run even when one fails; the failures are
//! listed together at the end.

#[path = "xdp_harness/mod.rs"]
mod xdp_harness;

use aya::maps::{Map, MapData};
use lb_common::{
    conntrack::ConnValue,
    deny::DENY_FOREVER,
    flow::{flow_hash, FlowKey},
    reasons::Reason,
    settings::{Settings, SETTINGS_F_NO_PORT_WILDCARDS},
};
use xdp_harness::{check::verify_checksums, config::*, frame::*, loader::*};
use xlb::datapath::deny::{DenyList, Prefix};

/// What the program must do.
enum Expect {
    /// `XDP_PASS`, frame byte-identical.
    Pass,
    /// `XDP_DROP`, frame untouched.
    Drop,
    /// `XDP_TX` of exactly this frame (checksums verified too).
    Tx(Vec<u8>),
    /// `XDP_PASS` of exactly this (rewritten) frame: the decap program.
    PassAs(Vec<u8>),
    /// `BPF_PROG_TEST_RUN` refuses the frame (shorter than Ethernet).
    KernelRefuses,
}

/// State a row needs before it runs.
enum Setup {
    /// Do not clear the connection table, the flood guard and settings.
    KeepState,
    /// Pre-insert a connection-table entry.
    Conntrack(FlowKey, ConnValue),
    /// Replace the settings.
    Settings(Settings),
    /// Deny a source prefix until this CLOCK_MONOTONIC time (ns), through
    /// the daemon's `DenyList`.
    Deny(Prefix, u64),
}

/// State a row checks after it ran.
enum After {
    /// The entry for this key (None: absent).
    Conntrack(FlowKey, Option<ConnValue>),
    /// The connection table holds nothing.
    ConntrackEmpty,
}

struct Row {
    name: &'static str,
    prog: Prog,
    setup: Vec<Setup>,
    input: Vec<u8>,
    expect: Expect,
    reasons: Vec<Reason>,
    after: Vec<After>,
}

fn row(name: &'static str, input: Vec<u8>, expect: Expect, reasons: &[Reason]) -> Row {
    Row {
        name,
        prog: Prog::Balancer,
        setup: Vec::new(),
        input,
        expect,
        reasons: reasons.to_vec(),
        after: Vec::new(),
    }
}

impl Row {
    fn setup(mut self, s: Setup) -> Row {
        self.setup.push(s);
        self
    }
    fn after(mut self, a: After) -> Row {
        self.after.push(a);
        self
    }
    fn decap(mut self) -> Row {
        self.prog = Prog::Decap;
        self
    }
}

/// A frame from the client side to us.
fn from_client(l3: &Frame) -> Vec<u8> {
    eth(LB_MAC, CLIENT_MAC).then(l3).build()
}

/// The same, behind VLAN 42.
fn from_client_vlan(l3: &Frame) -> Vec<u8> {
    eth(LB_MAC, CLIENT_MAC).vlan(42).then(l3).build()
}

/// What DSR sends: the same packet, from our MAC to the backend's.
fn dsr(b: u32, l3: &Frame) -> Vec<u8> {
    eth(bmac(b), LB_MAC).then(l3).build()
}

/// The documented IPv4 outer source: the configured /16, the low 16 bits
/// of the flow hash.
fn outer_src4(key: &FlowKey) -> [u8; 4] {
    let h = flow_hash(key).to_be_bytes();
    [IPIP_SRC4[0], IPIP_SRC4[1], h[2], h[3]]
}

/// The documented IPv6 outer source: the configured /96, the flow hash.
fn outer_src6(key: &FlowKey) -> [u8; 16] {
    let mut a = IPIP_SRC6;
    a[12..].copy_from_slice(&flow_hash(key).to_be_bytes());
    a
}

/// What IPIP sends for an IPv4 packet: our MAC → backend, outer IPv4
/// (TTL 64, id 0, protocol 4, TOS and DF of the inner packet).
fn ipip4(b: u32, src: [u8; 4], inner: &Frame, tos: u8, df: bool) -> Frame {
    let f = eth(bmac(b), LB_MAC).ipv4(src, baddr4(b)).tos(tos);
    let f = if df { f.df() } else { f };
    f.ipip(&inner.build())
}

/// What IPIP sends for an IPv6 packet: outer IPv6 (hop limit 64, next
/// header 41, the inner traffic class, flow label = hash & 0xfffff).
fn ipip6(b: u32, key: &FlowKey, inner: &Frame, tc: u8) -> Frame {
    eth(bmac(b), LB_MAC)
        .ipv6(outer_src6(key), baddr6(b))
        .traffic_class(tc)
        .flow_label(flow_hash(key) & 0xf_ffff)
        .ipip(&inner.build())
}

/// Another backend of the same family than `b`.
fn other(b: u32) -> u32 {
    let set = if B4.contains(&b) { B4 } else { B6 };
    set.into_iter().find(|&x| x != b).unwrap()
}

fn ct(backend: u32, vip: u32) -> ConnValue {
    ConnValue { backend, vip }
}

fn rows(h: &Harness) -> Vec<Row> {
    use Expect::*;
    use Reason::*;
    let pick = |vip_row: u32, key: &FlowKey| h.maglev_pick(vip_row, key);
    let mut v = Vec::new();

    // ---- DSR, IPv4 ------------------------------------------------------
    let p = ipv4(C4, VIP_A).tcp_syn(40001, 80).payload(b"hello");
    let k = fk4(C4, VIP_A, 40001, 80, 6);
    let b = pick(row::A_TCP, &k);
    v.push(
        row(
            "dsr v4 tcp, new flow: MACs rewritten towards Maglev's backend, entry inserted",
            from_client(&p),
            Tx(dsr(b, &p)),
            &[TxNewFlow],
        )
        .after(After::Conntrack(k, Some(ct(b, row::A_TCP)))),
    );
    v.push(row(
        "dsr v4 tcp behind VLAN 42: tag kept",
        from_client_vlan(&p),
        Tx(eth(bmac(b), LB_MAC).vlan(42).then(&p).build()),
        &[TxNewFlow],
    ));
    v.push(
        row(
            "dsr v4 conntrack hit: the entry's backend wins over Maglev's",
            from_client(&p),
            Tx(dsr(other(b), &p)),
            &[TxConntrackHit],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP)))
        .after(After::Conntrack(k, Some(ct(other(b), row::A_TCP)))),
    );
    v.push(
        row(
            "dsr v4 conntrack entry of another VIP row: ignored, Maglev re-places the flow",
            from_client(&p),
            Tx(dsr(b, &p)),
            &[TxNewFlow],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::W_ANY)))
        .after(After::Conntrack(k, Some(ct(b, row::A_TCP)))),
    );
    v.push(
        row(
            "dsr v4 conntrack entry naming an inactive backend: re-placed by Maglev",
            from_client(&p),
            Tx(dsr(b, &p)),
            &[TxNewFlow],
        )
        .setup(Setup::Conntrack(k, ct(B_INACTIVE, row::A_TCP)))
        .after(After::Conntrack(k, Some(ct(b, row::A_TCP)))),
    );
    let pw = ipv4(C4, VIP_W).tcp(40002, 2222).payload(b"ssh?");
    let kw = fk4(C4, VIP_W, 40002, 2222, 6);
    v.push(row(
        "dsr v4 port-wildcard VIP (any port, here 2222)",
        from_client(&pw),
        Tx(dsr(pick(row::W_ANY, &kw), &pw)),
        &[TxNewFlow],
    ));
    let mut no_wild = settings();
    no_wild.flags |= SETTINGS_F_NO_PORT_WILDCARDS;
    v.push(
        row(
            "SETTINGS_F_NO_PORT_WILDCARDS: the port-wildcard entry is not looked up, passed \
             (pass_not_vip)",
            from_client(&pw),
            Pass,
            &[PassNotVip],
        )
        .setup(Setup::Settings(no_wild))
        .after(After::ConntrackEmpty),
    );
    v.push(row(
        "exact port beats the wildcard: VIP_W:443 is an L7 VIP, passed untouched",
        from_client(&ipv4(C4, VIP_W).tcp(40003, 443)),
        Pass,
        &[PassL7],
    ));
    let po = ipv4(C4, VIP_A)
        .ip_options(&[0x94, 0x04, 0, 0, 1, 1, 1, 0])
        .tcp(40004, 80)
        .payload(b"opt");
    let ko = fk4(C4, VIP_A, 40004, 80, 6);
    v.push(row(
        "dsr v4 with IPv4 options (IHL 7): ports found after the options, forwarded",
        from_client(&po),
        Tx(dsr(pick(row::A_TCP, &ko), &po)),
        &[TxNewFlow],
    ));

    // ---- DSR, IPv6 ------------------------------------------------------
    let p6 = ipv6(C6, VIP6_A).tcp_syn(40001, 80).payload(b"hello6");
    let k6 = fk6(C6, VIP6_A, 40001, 80, 6);
    let b6 = pick(row::A6_TCP, &k6);
    v.push(
        row(
            "dsr v6 tcp, new flow",
            from_client(&p6),
            Tx(dsr(b6, &p6)),
            &[TxNewFlow],
        )
        .after(After::Conntrack(k6, Some(ct(b6, row::A6_TCP)))),
    );
    v.push(row(
        "dsr v6 tcp behind VLAN 42",
        from_client_vlan(&p6),
        Tx(eth(bmac(b6), LB_MAC).vlan(42).then(&p6).build()),
        &[TxNewFlow],
    ));
    let ph = ipv6(C6, VIP6_A).hop_by_hop().tcp(40005, 80).payload(b"hbh");
    let kh = fk6(C6, VIP6_A, 40005, 80, 6);
    v.push(row(
        "dsr v6 with a Hop-by-Hop header: ports read after it, forwarded",
        from_client(&ph),
        Tx(dsr(pick(row::A6_TCP, &kh), &ph)),
        &[TxNewFlow],
    ));
    let pd = ipv6(C6, VIP6_A)
        .dst_opts()
        .v6_ext(IPPROTO_ROUTING, 1)
        .tcp(40006, 80);
    let kd = fk6(C6, VIP6_A, 40006, 80, 6);
    v.push(row(
        "dsr v6 with Destination Options + a 16-byte Routing header",
        from_client(&pd),
        Tx(dsr(pick(row::A6_TCP, &kd), &pd)),
        &[TxNewFlow],
    ));
    v.push(
        row(
            "dsr v6 conntrack hit",
            from_client(&p6),
            Tx(dsr(other(b6), &p6)),
            &[TxConntrackHit],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );

    // ---- IPIP, IPv4 -----------------------------------------------------
    let pu = ipv4(C4, VIP_A).udp(5353, 53).payload(b"query");
    let ku = fk4(C4, VIP_A, 5353, 53, 17);
    let bu = pick(row::A_UDP_IPIP, &ku);
    v.push(
        row(
            "ipip v4 udp (table half 1): outer IPv4 to the backend, source from the flow hash",
            from_client(&pu),
            Tx(ipip4(bu, outer_src4(&ku), &pu, 0, false).build()),
            &[TxNewFlow],
        )
        .after(After::Conntrack(ku, Some(ct(bu, row::A_UDP_IPIP)))),
    );
    let pt = ipv4(C4, VIP_I)
        .tos(0x28)
        .df()
        .tcp(40007, 80)
        .payload(b"get");
    let kt = fk4(C4, VIP_I, 40007, 80, 6);
    let bt = pick(row::I_TCP, &kt);
    v.push(row(
        "ipip v4 tcp: TOS and DF copied to the outer header",
        from_client(&pt),
        Tx(ipip4(bt, outer_src4(&kt), &pt, 0x28, true).build()),
        &[TxNewFlow],
    ));
    let mut fixed = settings();
    fixed.flags = 0;
    v.push(
        row(
            "ipip v4 with SETTINGS_F_IPIP_SRC_FROM_FLOW clear: the fixed outer source",
            from_client(&pt),
            Tx(ipip4(bt, IPIP_SRC4, &pt, 0x28, true).build()),
            &[TxNewFlow],
        )
        .setup(Setup::Settings(fixed)),
    );
    v.push(row(
        "ipip v4 behind VLAN 42: the tag stays in front of the outer header",
        from_client_vlan(&pt),
        Tx(eth(bmac(bt), LB_MAC)
            .vlan(42)
            .ipv4(outer_src4(&kt), baddr4(bt))
            .tos(0x28)
            .df()
            .ipip(&pt.build())
            .build()),
        &[TxNewFlow],
    ));
    let pto = ipv4(C4, VIP_I)
        .ip_options(&[0x01, 0x01, 0x01, 0x00])
        .tcp(40008, 80)
        .payload(b"nop");
    let kto = fk4(C4, VIP_I, 40008, 80, 6);
    v.push(row(
        "ipip v4 with IPv4 options inside: the whole inner header is carried",
        from_client(&pto),
        Tx(ipip4(pick(row::I_TCP, &kto), outer_src4(&kto), &pto, 0, false).build()),
        &[TxNewFlow],
    ));
    let at_mtu = ipv4(C4, VIP_I).df().tcp(40009, 80).payload_n(1480 - 40);
    let km = fk4(C4, VIP_I, 40009, 80, 6);
    v.push(row(
        "ipip v4 DF packet of 1480 bytes: 1480 + 20 = backend_mtu, encapsulated",
        from_client(&at_mtu),
        Tx(ipip4(pick(row::I_TCP, &km), outer_src4(&km), &at_mtu, 0, true).build()),
        &[TxNewFlow],
    ));
    let big_nodf = ipv4(C4, VIP_I).tcp(40010, 80).payload_n(1490 - 40);
    let kn = fk4(C4, VIP_I, 40010, 80, 6);
    v.push(row(
        "ipip v4 1490-byte packet without DF: encapsulated (outer DF clear)",
        from_client(&big_nodf),
        Tx(ipip4(pick(row::I_TCP, &kn), outer_src4(&kn), &big_nodf, 0, false).build()),
        &[TxNewFlow],
    ));

    // ---- IPIP, IPv6 -----------------------------------------------------
    let pu6 = ipv6(C6, VIP6_A).udp(5353, 53).payload(b"query6");
    let ku6 = fk6(C6, VIP6_A, 5353, 53, 17);
    v.push(row(
        "ipip v6 udp (table half 1): outer IPv6, next header 41, flow label from the hash",
        from_client(&pu6),
        Tx(ipip6(pick(row::A6_UDP_IPIP, &ku6), &ku6, &pu6, 0).build()),
        &[TxNewFlow],
    ));
    let pt6 = ipv6(C6, VIP6_I)
        .traffic_class(0xb8)
        .flow_label(0x12345)
        .tcp(40011, 80)
        .payload(b"get6");
    let kt6 = fk6(C6, VIP6_I, 40011, 80, 6);
    v.push(row(
        "ipip v6 tcp: traffic class copied to the outer header",
        from_client(&pt6),
        Tx(ipip6(pick(row::I6_TCP, &kt6), &kt6, &pt6, 0xb8).build()),
        &[TxNewFlow],
    ));
    let ph6 = ipv6(C6, VIP6_I).hop_by_hop().tcp(40012, 80);
    let kh6 = fk6(C6, VIP6_I, 40012, 80, 6);
    v.push(row(
        "ipip v6 with a Hop-by-Hop header",
        from_client(&ph6),
        Tx(ipip6(pick(row::I6_TCP, &kh6), &kh6, &ph6, 0).build()),
        &[TxNewFlow],
    ));
    v.push(row(
        "ipip v6 behind VLAN 42",
        from_client_vlan(&pt6),
        Tx(eth(bmac(pick(row::I6_TCP, &kt6)), LB_MAC)
            .vlan(42)
            .ipv6(outer_src6(&kt6), baddr6(pick(row::I6_TCP, &kt6)))
            .traffic_class(0xb8)
            .flow_label(flow_hash(&kt6) & 0xf_ffff)
            .ipip(&pt6.build())
            .build()),
        &[TxNewFlow],
    ));

    // ---- Fragments ------------------------------------------------------
    let k3 = fk4(C4, VIP_A, 0, 0, 17);
    let b3 = pick(row::A_UDP_IPIP, &k3);
    let first = ipv4(C4, VIP_A)
        .ip_id(7)
        .frag(0, true)
        .udp(5353, 53)
        .payload_n(64);
    let later = ipv4(C4, VIP_A)
        .ip_id(7)
        .frag(9, false)
        .proto(IPPROTO_UDP)
        .payload_n(20);
    v.push(
        row(
            "v4 first fragment: fragment alias entry, 3-tuple hash, no conntrack entry",
            from_client(&first),
            Tx(ipip4(b3, outer_src4(&k3), &first, 0, false).build()),
            &[TxFragment],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "v4 non-first fragment (no UDP header): the same backend as the first",
            from_client(&later),
            Tx(ipip4(b3, outer_src4(&k3), &later, 0, false).build()),
            &[TxFragment],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(row(
        "v4 TCP fragment to VIP_A (no fragment alias for TCP there): passed",
        from_client(&ipv4(C4, VIP_A).frag(0, true).tcp(40013, 80)),
        Pass,
        &[PassNotVip],
    ));
    let k36 = fk6(C6, VIP6_A, 0, 0, 17);
    let b36 = pick(row::A6_UDP_IPIP, &k36);
    let first6 = ipv6(C6, VIP6_A)
        .v6_fragment(0, true, 0xabcd)
        .udp(5353, 53)
        .payload_n(64);
    let later6 = ipv6(C6, VIP6_A)
        .v6_fragment(9, false, 0xabcd)
        .frag_next(IPPROTO_UDP)
        .payload_n(20);
    v.push(
        row(
            "v6 Fragment header, first fragment: alias entry, 3-tuple hash",
            from_client(&first6),
            Tx(ipip6(b36, &k36, &first6, 0).build()),
            &[TxFragment],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(row(
        "v6 Fragment header, non-first fragment: the same backend",
        from_client(&later6),
        Tx(ipip6(b36, &k36, &later6, 0).build()),
        &[TxFragment],
    ));

    // Fragments whose Fragment header names Destination Options: the
    // non-first fragment carries data where the first carries the options
    // and the UDP header, so only the Fragment header is common to both
    // (RFC 8200 §4.5). The chain must end there for all fragments alike.
    let first_do = ipv6(C6, VIP6_A)
        .v6_fragment(0, true, 77)
        .dst_opts()
        .udp(5353, 53)
        .payload_n(32);
    let mut later_data = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0];
    later_data.extend_from_slice(&[0x55; 24]);
    let later_do = ipv6(C6, VIP6_A)
        .v6_fragment(6, false, 77)
        .frag_next(IPPROTO_DSTOPTS)
        .payload(&later_data);
    v.push(row(
        "v6 first fragment, Fragment header → Destination Options → UDP: the chain ends at \
         the Fragment header (pass_unsupported_header), as for its other fragments",
        from_client(&first_do),
        Pass,
        &[PassUnsupportedHeader],
    ));
    v.push(row(
        "v6 non-first fragment of the same datagram: its data is not parsed as headers \
         (pass_unsupported_header, like the first)",
        from_client(&later_do),
        Pass,
        &[PassUnsupportedHeader],
    ));

    // ---- ICMP errors ----------------------------------------------------
    // The quoted datagram went VIP → client; the flow is client → VIP.
    let quoted4 = ipv4(VIP_A, C4).df().tcp(80, 40001).payload_n(100).build();
    let icmp4 = ipv4(ROUTER4, VIP_A)
        .icmp4_frag_needed(1400)
        .payload(&quoted4[..28]);
    v.push(
        row(
            "icmp frag-needed quoting a VIP_A flow: to the flow's backend (conntrack), DSR",
            from_client(&icmp4),
            Tx(dsr(other(b), &icmp4)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    let quoted6 = ipv6(VIP6_A, C6).tcp(80, 40001).payload_n(100).build();
    let icmp6 = ipv6(ROUTER6, VIP6_A)
        .icmp6_too_big(1280)
        .payload(&quoted6[..48]);
    v.push(
        row(
            "icmpv6 packet-too-big quoting a VIP6_A flow: to the flow's backend",
            from_client(&icmp6),
            Tx(dsr(other(b6), &icmp6)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    let quoted_i = ipv4(VIP_I, C4).df().tcp(80, 40007).build();
    let icmp_i = ipv4(ROUTER4, VIP_I)
        .icmp4_frag_needed(1400)
        .payload(&quoted_i[..28]);
    v.push(
        row(
            "icmp error to an IPIP VIP: encapsulated, outer source from the quoted flow's hash",
            from_client(&icmp_i),
            Tx(ipip4(other(bt), outer_src4(&kt), &icmp_i, 0, false).build()),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(kt, ct(other(bt), row::I_TCP))),
    );
    v.push(
        row(
            "icmp time exceeded quoting a VIP_A flow: to the flow's backend",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .icmp4(11, 0, [0; 4])
                    .payload(&quoted4[..36]),
            ),
            Tx(dsr(
                other(b),
                &ipv4(ROUTER4, VIP_A)
                    .icmp4(11, 0, [0; 4])
                    .payload(&quoted4[..36]),
            )),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    let icmp6_te = ipv6(ROUTER6, VIP6_A)
        .icmp6(3, 0, [0; 4])
        .payload(&quoted6[..56]);
    v.push(
        row(
            "icmpv6 time exceeded quoting a VIP6_A flow: to the flow's backend",
            from_client(&icmp6_te),
            Tx(dsr(other(b6), &icmp6_te)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    v.push(
        row(
            "icmp error whose quote stops before the ports: pass_icmp_unknown_flow",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .icmp4_frag_needed(1400)
                    .payload(&quoted4[..22]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(
        row(
            "icmpv6 error whose quote stops before the ports (42 bytes): pass_icmp_unknown_flow",
            from_client(
                &ipv6(ROUTER6, VIP6_A)
                    .icmp6_too_big(1280)
                    .payload(&quoted6[..42]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    let quoted_n = ipv4(NOT_VIP4, C4).tcp(80, 40001).build();
    v.push(row(
        "icmp error about a non-VIP flow: passed, pass_icmp_unknown_flow",
        from_client(
            &ipv4(ROUTER4, NOT_VIP4)
                .icmp4_frag_needed(1400)
                .payload(&quoted_n[..28]),
        ),
        Pass,
        &[PassIcmpUnknownFlow],
    ));
    v.push(
        row(
            "icmp error about a VIP flow not in the connection table: to the backend Maglev \
             gives the flow (DSR), tx_icmp_to_backend, nothing inserted",
            from_client(&icmp4),
            Tx(dsr(b, &icmp4)),
            &[TxIcmpToBackend],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "icmpv6 error about a VIP flow not in the connection table: to Maglev's backend, \
             nothing inserted",
            from_client(&icmp6),
            Tx(dsr(b6, &icmp6)),
            &[TxIcmpToBackend],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "icmp error, the flow's entry belongs to another VIP row: Maglev's backend, the \
             entry left as it was",
            from_client(&icmp4),
            Tx(dsr(b, &icmp4)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::W_ANY)))
        .after(After::Conntrack(k, Some(ct(other(b), row::W_ANY)))),
    );
    v.push(
        row(
            "icmp error, the flow's entry names an inactive backend: Maglev's backend, the \
             entry left as it was",
            from_client(&icmp4),
            Tx(dsr(b, &icmp4)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k, ct(B_INACTIVE, row::A_TCP)))
        .after(After::Conntrack(k, Some(ct(B_INACTIVE, row::A_TCP)))),
    );
    v.push(
        row(
            "icmp error to an IPIP VIP about an unknown flow: encapsulated to Maglev's backend, \
             nothing inserted",
            from_client(&icmp_i),
            Tx(ipip4(bt, outer_src4(&kt), &icmp_i, 0, false).build()),
            &[TxIcmpToBackend],
        )
        .after(After::ConntrackEmpty),
    );
    // Errors are never answered with "too big" (RFC 1122 §3.2.2: no ICMP
    // error about an ICMP error): over the backend MTU they are still
    // encapsulated.
    let mut tiny_mtu = settings();
    tiny_mtu.backend_mtu = 64;
    let icmp_i_df = ipv4(ROUTER4, VIP_I)
        .df()
        .icmp4_frag_needed(1400)
        .payload(&quoted_i[..28]);
    v.push(
        row(
            "icmp error (DF) to an IPIP VIP over backend_mtu 64: encapsulated, never a too-big \
             reply",
            from_client(&icmp_i_df),
            Tx(ipip4(bt, outer_src4(&kt), &icmp_i_df, 0, true).build()),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Settings(tiny_mtu))
        .after(After::ConntrackEmpty),
    );
    let quoted_i6 = ipv6(VIP6_I, C6).tcp(80, 40011).payload_n(40).build();
    let icmp_i6 = ipv6(ROUTER6, VIP6_I)
        .icmp6_too_big(1280)
        .payload(&quoted_i6[..48]);
    let mut tiny_mtu6 = settings();
    tiny_mtu6.backend_mtu = 100;
    v.push(
        row(
            "icmpv6 error to an IPIP VIP over backend_mtu 100: encapsulated to Maglev's \
             backend, never a too-big reply",
            from_client(&icmp_i6),
            Tx(ipip6(pick(row::I6_TCP, &kt6), &kt6, &icmp_i6, 0).build()),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Settings(tiny_mtu6))
        .after(After::ConntrackEmpty),
    );
    let knc4 = fk4(C4, VIP_NOCT, 40021, 80, 6);
    let icmp_nc = ipv4(ROUTER4, VIP_NOCT)
        .icmp4(11, 0, [0; 4])
        .payload(&ipv4(VIP_NOCT, C4).tcp(80, 40021).build()[..28]);
    v.push(
        row(
            "icmp error to a VIP_F_NO_CONNTRACK VIP: Maglev's backend, nothing inserted",
            from_client(&icmp_nc),
            Tx(dsr(pick(row::NOCT, &knc4), &icmp_nc)),
            &[TxIcmpToBackend],
        )
        .after(After::ConntrackEmpty),
    );
    let knp3 = fk4(C4, VIP_NOPORTS, 0, 0, 6);
    let bnp3 = pick(row::NOPORTS, &knp3);
    let icmp_np = ipv4(ROUTER4, VIP_NOPORTS)
        .icmp4_frag_needed(1400)
        .payload(&ipv4(VIP_NOPORTS, C4).tcp(80, 40022).build()[..28]);
    v.push(
        row(
            "icmp error to a VIP_F_HASH_NO_PORTS VIP: the entry of (client, VIP, proto) wins",
            from_client(&icmp_np),
            Tx(dsr(other(bnp3), &icmp_np)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(knp3, ct(other(bnp3), row::NOPORTS)))
        .after(After::Conntrack(knp3, Some(ct(other(bnp3), row::NOPORTS))))
        .after(After::Conntrack(fk4(C4, VIP_NOPORTS, 40022, 80, 6), None)),
    );
    let kw2 = fk4(C4, VIP_W, 40002, 2222, 6);
    let icmp_w = ipv4(ROUTER4, VIP_W)
        .icmp4(3, 1, [0; 4])
        .payload(&ipv4(VIP_W, C4).tcp(2222, 40002).build()[..28]);
    v.push(
        row(
            "icmp error about a port-wildcard VIP's flow: Maglev's backend of that row",
            from_client(&icmp_w),
            Tx(dsr(pick(row::W_ANY, &kw2), &icmp_w)),
            &[TxIcmpToBackend],
        )
        .after(After::ConntrackEmpty),
    );
    let mut no_wild_icmp = settings();
    no_wild_icmp.flags |= SETTINGS_F_NO_PORT_WILDCARDS;
    v.push(
        row(
            "icmp error about a port-wildcard flow with SETTINGS_F_NO_PORT_WILDCARDS: no VIP \
             found, pass_icmp_unknown_flow",
            from_client(&icmp_w),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Settings(no_wild_icmp)),
    );
    v.push(row(
        "icmp error about an L7 VIP's flow (VIP_W:443): for the local proxy, pass_l7",
        from_client(
            &ipv4(ROUTER4, VIP_W)
                .icmp4_frag_needed(1400)
                .payload(&ipv4(VIP_W, C4).tcp(443, 40003).build()[..28]),
        ),
        Pass,
        &[PassL7],
    ));
    v.push(row(
        "icmp error about a flow of a VIP without backends: dropped, drop_no_backend",
        from_client(
            &ipv4(ROUTER4, VIP_EMPTY)
                .icmp4_frag_needed(1400)
                .payload(&ipv4(VIP_EMPTY, C4).tcp(80, 40018).build()[..28]),
        ),
        Drop,
        &[DropNoBackend],
    ));
    v.push(
        row(
            "icmp error sent to another address than the quoted datagram's source (the VIP): \
             not usable, pass_icmp_unknown_flow",
            from_client(
                &ipv4(ROUTER4, NOT_VIP4)
                    .icmp4_frag_needed(1400)
                    .payload(&quoted4[..28]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(
        row(
            "icmpv6 error sent to VIP6_I quoting a datagram from VIP6_A: not usable, \
             pass_icmp_unknown_flow",
            from_client(
                &ipv6(ROUTER6, VIP6_I)
                    .icmp6_too_big(1280)
                    .payload(&quoted6[..48]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    // A quoted non-first fragment: its first 8 bytes are data, here data
    // that looks like the ports 80 → 40001 of an established flow.
    let mut frag_data = vec![0, 80, 0x9c, 0x41];
    frag_data.extend_from_slice(&[0xaa; 28]);
    let quoted_frag = ipv4(VIP_A, C4)
        .frag(10, false)
        .proto(IPPROTO_TCP)
        .payload(&frag_data)
        .build();
    v.push(
        row(
            "icmp error quoting a non-first fragment (no L4 header in the quote): \
             pass_icmp_unknown_flow",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .icmp4(11, 1, [0; 4])
                    .payload(&quoted_frag[..28]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    let quoted_first = ipv4(VIP_A, C4)
        .frag(0, true)
        .tcp(80, 40001)
        .payload_n(40)
        .build();
    let icmp_first = ipv4(ROUTER4, VIP_A)
        .icmp4(11, 1, [0; 4])
        .payload(&quoted_first[..28]);
    v.push(
        row(
            "icmp error quoting a first fragment (MF, offset 0): the ports are there, to the \
             flow's backend",
            from_client(&icmp_first),
            Tx(dsr(other(b), &icmp_first)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    let quoted_v4ish = ipv6(VIP6_A, C6).ip_version(4).tcp(80, 40001).build();
    v.push(
        row(
            "icmpv6 error whose quoted header is not IPv6 (version 4): pass_icmp_unknown_flow",
            from_client(
                &ipv6(ROUTER6, VIP6_A)
                    .icmp6_too_big(1280)
                    .payload(&quoted_v4ish[..48]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    v.push(row(
        "icmp error quoting an ICMP echo reply (not TCP/UDP): pass_icmp_unknown_flow",
        from_client(
            &ipv4(ROUTER4, VIP_A)
                .icmp4(3, 1, [0; 4])
                .payload(&ipv4(VIP_A, C4).icmp4(0, 0, [0, 1, 0, 1]).build()[..28]),
        ),
        Pass,
        &[PassIcmpUnknownFlow],
    ));
    let quoted_hbh = ipv6(VIP6_A, C6).hop_by_hop().tcp(80, 40001).build();
    v.push(
        row(
            "icmpv6 error whose quote has an extension header before TCP: \
             pass_icmp_unknown_flow",
            from_client(
                &ipv6(ROUTER6, VIP6_A)
                    .icmp6(1, 3, [0; 4])
                    .payload(&quoted_hbh[..56]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    // Only destination unreachable / time exceeded (and ICMPv6 packet too
    // big) are steered; other types, errors or not, go to the local stack.
    v.push(
        row(
            "icmp parameter problem (type 12) quoting a VIP_A flow: not steered, pass_not_vip",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .icmp4(12, 0, [20, 0, 0, 0])
                    .payload(&quoted4[..28]),
            ),
            Pass,
            &[PassNotVip],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(
        row(
            "icmp redirect (type 5) quoting a VIP_A flow: not steered, pass_not_vip",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .icmp4(5, 1, ROUTER4)
                    .payload(&quoted4[..28]),
            ),
            Pass,
            &[PassNotVip],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(
        row(
            "icmpv6 parameter problem (type 4) quoting a VIP6_A flow: not steered, pass_not_vip",
            from_client(
                &ipv6(ROUTER6, VIP6_A)
                    .icmp6(4, 0, [0, 0, 0, 6])
                    .payload(&quoted6[..48]),
            ),
            Pass,
            &[PassNotVip],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    v.push(row(
        "icmp echo request to a VIP: for the local stack",
        from_client(&ipv4(C4, VIP_A).icmp4_echo(1, 1).payload(b"ping")),
        Pass,
        &[PassNotVip],
    ));
    v.push(row(
        "icmpv6 echo request to a VIP: for the local stack",
        from_client(&ipv6(C6, VIP6_A).icmp6_echo(1, 1).payload(b"ping")),
        Pass,
        &[PassNotVip],
    ));

    // ---- Too big --------------------------------------------------------
    let big = ipv4(C4, VIP_I).df().tcp(40014, 80).payload_n(1490 - 40);
    let big_b = big.build();
    v.push(row(
        "too big v4: DF 1490 + 20 > 1500 → ICMP 3/4 to the client, MTU 1480, quote 28 bytes",
        from_client(&big),
        Tx(eth(CLIENT_MAC, LB_MAC)
            .ipv4(VIP_I, C4)
            .icmp4_frag_needed(1480)
            .payload(&big_b[..28])
            .build()),
        &[TxIcmpTooBig],
    ));
    v.push(row(
        "too big v4 behind VLAN 42: the reply keeps the tag",
        from_client_vlan(&big),
        Tx(eth(CLIENT_MAC, LB_MAC)
            .vlan(42)
            .ipv4(VIP_I, C4)
            .icmp4_frag_needed(1480)
            .payload(&big_b[..28])
            .build()),
        &[TxIcmpTooBig],
    ));
    let big6 = ipv6(C6, VIP6_I).tcp(40015, 80).payload_n(1461 - 40 - 20);
    let big6_b = big6.build();
    v.push(row(
        "too big v6: 1461 + 40 > 1500 → ICMPv6 type 2, MTU 1460, quote 48 bytes",
        from_client(&big6),
        Tx(eth(CLIENT_MAC, LB_MAC)
            .ipv6(VIP6_I, C6)
            .icmp6_too_big(1460)
            .payload(&big6_b[..48])
            .build()),
        &[TxIcmpTooBig],
    ));
    let mut small_mtu = settings();
    small_mtu.backend_mtu = 1300;
    let mid6 = ipv6(C6, VIP6_I).tcp(40016, 80).payload_n(1270 - 60);
    let mid6_b = mid6.build();
    v.push(
        row(
            "too big v6 with backend_mtu 1300: advertises 1280, never less (RFC 8200 §5)",
            from_client(&mid6),
            Tx(eth(CLIENT_MAC, LB_MAC)
                .ipv6(VIP6_I, C6)
                .icmp6_too_big(1280)
                .payload(&mid6_b[..48])
                .build()),
            &[TxIcmpTooBig],
        )
        .setup(Setup::Settings(small_mtu)),
    );
    v.push(row(
        "too big v4 with IP options: dropped (drop_encap_failed, documented)",
        from_client(
            &ipv4(C4, VIP_I)
                .df()
                .ip_options(&[1, 1, 1, 0])
                .tcp(40017, 80)
                .payload_n(1480),
        ),
        Drop,
        &[DropEncapFailed],
    ));

    // ---- Drops and flags ------------------------------------------------
    v.push(row(
        "VIP without backends: dropped",
        from_client(&ipv4(C4, VIP_EMPTY).tcp(40018, 80)),
        Drop,
        &[DropNoBackend],
    ));
    v.push(row(
        "table naming an inactive backend: dropped",
        from_client(&ipv4(C4, VIP_DEAD).tcp(40019, 80)),
        Drop,
        &[DropBadBackend],
    ));
    v.push(row(
        "ipip v4 VIP whose backend is IPv6: dropped",
        from_client(&ipv4(C4, VIP_MIXED).tcp(40020, 80)),
        Drop,
        &[DropBadBackend],
    ));
    let mut no_table = settings();
    no_table.maglev_size = 0;
    v.push(
        row(
            "SETTINGS.maglev_size 0 (no table): dropped, drop_no_backend",
            from_client(&p),
            Drop,
            &[DropNoBackend],
        )
        .setup(Setup::Settings(no_table)),
    );
    let pnc = ipv4(C4, VIP_NOCT).tcp(40021, 80);
    let knc = fk4(C4, VIP_NOCT, 40021, 80, 6);
    v.push(
        row(
            "VIP_F_NO_CONNTRACK: forwarded by Maglev, nothing inserted",
            from_client(&pnc),
            Tx(dsr(pick(row::NOCT, &knc), &pnc)),
            &[TxNewFlow],
        )
        .after(After::ConntrackEmpty),
    );
    let pnp = ipv4(C4, VIP_NOPORTS).tcp(40022, 80);
    let knp = fk4(C4, VIP_NOPORTS, 0, 0, 6);
    let bnp = pick(row::NOPORTS, &knp);
    v.push(
        row(
            "VIP_F_HASH_NO_PORTS: hashed and remembered by (src, dst, proto)",
            from_client(&pnp),
            Tx(dsr(bnp, &pnp)),
            &[TxNewFlow],
        )
        .after(After::Conntrack(knp, Some(ct(bnp, row::NOPORTS))))
        .after(After::Conntrack(fk4(C4, VIP_NOPORTS, 40022, 80, 6), None)),
    );

    // ---- Not for us -----------------------------------------------------
    v.push(row(
        "non-VIP v4 tcp: passed byte-identical",
        from_client(&ipv4(C4, NOT_VIP4).tcp(40023, 80).payload(b"x")),
        Pass,
        &[PassNotVip],
    ));
    v.push(row(
        "non-VIP v6 udp behind VLAN: passed byte-identical",
        from_client_vlan(&ipv6(C6, NOT_VIP6).udp(40024, 53)),
        Pass,
        &[PassNotVip],
    ));
    v.push(row(
        "VIP address, other protocol (UDP to the TCP VIP port 80): passed",
        from_client(&ipv4(C4, VIP_A).udp(40025, 80)),
        Pass,
        &[PassNotVip],
    ));
    v.push(row(
        "VIP address, other port (TCP 81): passed",
        from_client(&ipv4(C4, VIP_A).tcp(40026, 81)),
        Pass,
        &[PassNotVip],
    ));
    v.push(row(
        "ARP: passed (pass_non_ip)",
        eth([0xff; 6], CLIENT_MAC)
            .ether_type(ETH_P_ARP)
            .payload(&[0, 1, 8, 0, 6, 4, 0, 1])
            .payload_n(20)
            .build(),
        Pass,
        &[PassNonIp],
    ));
    v.push(row(
        "ARP behind VLAN 42: passed (pass_non_ip)",
        eth([0xff; 6], CLIENT_MAC)
            .vlan(42)
            .ether_type(ETH_P_ARP)
            .payload_n(28)
            .build(),
        Pass,
        &[PassNonIp],
    ));
    v.push(row(
        "802.1ad outer tag (0x88a8): not parsed, non-IP",
        eth(LB_MAC, CLIENT_MAC)
            .ether_type(0x88a8)
            .payload(&[0, 42, 0x81, 0, 0, 7, 0x08, 0])
            .payload_n(40)
            .build(),
        Pass,
        &[PassNonIp],
    ));

    // ---- Truncated or invalid ------------------------------------------
    let full = from_client(&ipv4(C4, VIP_A).tcp(40027, 80));
    v.push(row(
        "13-byte frame: BPF_PROG_TEST_RUN refuses frames shorter than Ethernet",
        full[..13].to_vec(),
        KernelRefuses,
        &[],
    ));
    v.push(row(
        "Ethernet header only, EtherType IPv4: malformed",
        full[..14].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    let vl = from_client_vlan(&ipv4(C4, VIP_A).tcp(40027, 80));
    v.push(row(
        "VLAN tag cut after 2 bytes: malformed",
        vl[..16].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv4 header cut at 19 bytes: malformed",
        full[..14 + 19].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    let ihl8 = from_client(&ipv4(C4, VIP_A).ihl(8).total_len(36).tcp(40027, 80));
    v.push(row(
        "IPv4 IHL 8 claims 12 option bytes, frame ends 2 bytes after the fixed header: malformed",
        ihl8[..14 + 22].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv4 version 6 under EtherType IPv4: malformed",
        from_client(&ipv4(C4, VIP_A).ip_version(6).tcp(40027, 80)),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv4 IHL 4: malformed",
        from_client(&ipv4(C4, VIP_A).ihl(4).tcp(40027, 80)),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv4 total length 16, shorter than the header: malformed",
        from_client(&ipv4(C4, VIP_A).total_len(16).tcp(40027, 80)),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "TCP cut after 3 bytes (no destination port): malformed",
        full[..14 + 20 + 3].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    let full6 = from_client(&ipv6(C6, VIP6_A).udp(40028, 53));
    v.push(row(
        "IPv6 header cut at 39 bytes: malformed",
        full6[..14 + 39].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv6 version 4 under EtherType IPv6: malformed",
        from_client(&ipv6(C6, VIP6_A).ip_version(4).udp(40028, 53)),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "UDP over IPv6 cut after 2 bytes: malformed",
        full6[..14 + 40 + 2].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    let hbh = from_client(&ipv6(C6, VIP6_A).hop_by_hop().tcp(40029, 80));
    v.push(row(
        "IPv6 Hop-by-Hop header cut at 4 of 8 bytes: malformed",
        hbh[..14 + 40 + 4].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv6 Hop-by-Hop length (88 bytes) points past the frame: malformed",
        from_client(&ipv6(C6, VIP6_A).hop_by_hop().ext_len(10).tcp(40029, 80)),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv6 Fragment header cut: malformed",
        from_client(&ipv6(C6, VIP6_A).v6_fragment(0, true, 1).udp(1, 53))[..14 + 40 + 6].to_vec(),
        Pass,
        &[PassMalformed],
    ));
    v.push(row(
        "IPv6 with five extension headers: beyond the parser (pass_unsupported_header)",
        from_client(
            &ipv6(C6, VIP6_A)
                .hop_by_hop()
                .dst_opts()
                .v6_ext(IPPROTO_ROUTING, 0)
                .dst_opts()
                .dst_opts()
                .tcp(40030, 80),
        ),
        Pass,
        &[PassUnsupportedHeader],
    ));
    // RFC 1812 §5.2.2: a packet whose link-layer length is below its IP
    // total length is invalid; forwarding it encapsulates a lie (the outer
    // total length) or answers "too big" for bytes that never arrived.
    let cut = from_client(&ipv4(C4, VIP_A).tcp(40031, 80).payload_n(100));
    v.push(
        row(
            "IPv4 to a VIP, total length 140 but only 64 bytes of IP arrived: malformed",
            cut[..14 + 64].to_vec(),
            Pass,
            &[PassMalformed],
        )
        .after(After::ConntrackEmpty),
    );
    let cut6 = from_client(&ipv6(C6, VIP6_I).tcp(40032, 80).payload_n(100));
    v.push(
        row(
            "IPv6 to a VIP, payload length 120 but only 30 bytes arrived: malformed",
            cut6[..14 + 70].to_vec(),
            Pass,
            &[PassMalformed],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(row(
        "too-big check on a cut DF packet claiming 9000 bytes: malformed, no ICMP reply",
        from_client(
            &ipv4(C4, VIP_I)
                .df()
                .total_len(9000)
                .tcp(40033, 80)
                .payload_n(20),
        ),
        Pass,
        &[PassMalformed],
    ));

    // Frames longer than their datagram: the rest is link-layer padding
    // (RFC 1812 §5.2.2 / RFC 894), never part of the packet.
    let mut padded = from_client(&p);
    padded.extend_from_slice(&[0u8; 10]);
    let mut padded_out = dsr(b, &p);
    padded_out.extend_from_slice(&[0u8; 10]);
    v.push(
        row(
            "v4 tcp to a VIP with 10 bytes of padding after the datagram: forwarded (DSR), the \
             padding carried along",
            padded,
            Tx(padded_out),
            &[TxNewFlow],
        )
        .after(After::Conntrack(k, Some(ct(b, row::A_TCP)))),
    );
    v.push(
        row(
            "UDP whose IPv4 total length ends 2 bytes into the UDP header (the ports trail in \
             the padding): malformed",
            from_client(&ipv4(C4, VIP_A).total_len(22).udp(5353, 53).payload_n(20)),
            Pass,
            &[PassMalformed],
        )
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "TCP whose IPv6 payload length (2) ends before the ports (in the padding): malformed",
            from_client(&ipv6(C6, VIP6_A).payload_len(2).tcp(40034, 80)),
            Pass,
            &[PassMalformed],
        )
        .after(After::ConntrackEmpty),
    );
    // The same for an ICMP error: the quote is the datagram's, not the
    // padding's.
    v.push(
        row(
            "icmp error whose IPv4 total length (48) ends before the quoted ports, which trail \
             in the padding: quote too short, pass_icmp_unknown_flow",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .total_len(48)
                    .icmp4_frag_needed(1400)
                    .payload(&quoted4[..28]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(
        row(
            "icmpv6 error whose payload length (8 + 42) ends before the quoted ports: quote too \
             short, pass_icmp_unknown_flow",
            from_client(
                &ipv6(ROUTER6, VIP6_A)
                    .payload_len(50)
                    .icmp6_too_big(1280)
                    .payload(&quoted6[..48]),
            ),
            Pass,
            &[PassIcmpUnknownFlow],
        )
        .setup(Setup::Conntrack(k6, ct(other(b6), row::A6_TCP))),
    );
    v.push(
        row(
            "IPv4 protocol ICMP with total length 20 (no ICMP header in the datagram), an icmp \
             error in the padding: not an error message, pass_not_vip",
            from_client(
                &ipv4(ROUTER4, VIP_A)
                    .total_len(20)
                    .icmp4_frag_needed(1400)
                    .payload(&quoted4[..28]),
            ),
            Pass,
            &[PassNotVip],
        )
        .setup(Setup::Conntrack(k, ct(other(b), row::A_TCP))),
    );
    v.push(row(
        "IPv6 payload length 8 holds a Hop-by-Hop header naming Destination Options, which \
         lie in the padding: malformed",
        from_client(
            &ipv6(C6, VIP6_A)
                .payload_len(8)
                .hop_by_hop()
                .dst_opts()
                .payload_n(8),
        ),
        Pass,
        &[PassMalformed],
    ));

    // ---- Flood guard ----------------------------------------------------
    let mut tight = settings();
    tight.new_flows_per_cpu_sec = 2;
    let flows: Vec<(Frame, FlowKey)> = (0..3)
        .map(|i| {
            (
                ipv4(C4B, VIP_A).tcp_syn(41000 + i, 80),
                fk4(C4B, VIP_A, 41000 + i, 80, 6),
            )
        })
        .collect();
    // An ICMP error about an unknown flow opens the window: it is forwarded
    // but spends none of the budget, so both new flows after it still fit.
    let icmp_first_flood = ipv4(ROUTER4, VIP_A)
        .icmp4_frag_needed(1400)
        .payload(&ipv4(VIP_A, C4B).tcp(80, 41000).build()[..28]);
    v.push(
        row(
            "flood guard at 2 new flows/s: an icmp error about an unknown flow spends no budget \
             (tx_icmp_to_backend, nothing inserted)",
            from_client(&icmp_first_flood),
            Tx(dsr(pick(row::A_TCP, &flows[0].1), &icmp_first_flood)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::Settings(tight))
        .after(After::ConntrackEmpty),
    );
    for (i, (p, k)) in flows.iter().enumerate() {
        let bk = pick(row::A_TCP, k);
        let name = [
            "flood guard: first new flow inserted (the icmp error took none of the budget)",
            "flood guard: second new flow inserted",
            "flood guard: third new flow forwarded by Maglev but not inserted (tx_flood_guard)",
        ][i];
        let r = row(
            name,
            from_client(p),
            Tx(dsr(bk, p)),
            &[if i < 2 { TxNewFlow } else { TxFloodGuard }],
        )
        .setup(Setup::KeepState)
        .after(After::Conntrack(*k, (i < 2).then_some(ct(bk, row::A_TCP))));
        v.push(r);
    }
    let icmp_late_flood = ipv4(ROUTER4, VIP_A)
        .icmp4_frag_needed(1400)
        .payload(&ipv4(VIP_A, C4B).tcp(80, 41002).build()[..28]);
    v.push(
        row(
            "flood guard, budget spent: an icmp error about the unremembered third flow still \
             goes to Maglev's backend (tx_icmp_to_backend, not tx_flood_guard), nothing inserted",
            from_client(&icmp_late_flood),
            Tx(dsr(pick(row::A_TCP, &flows[2].1), &icmp_late_flood)),
            &[TxIcmpToBackend],
        )
        .setup(Setup::KeepState)
        .after(After::Conntrack(flows[2].1, None)),
    );

    // ---- Deny list ------------------------------------------------------
    // Checked right after the IP header (before ports, extension headers
    // and the VIP lookup), for every destination. A neighbour just outside
    // a denied prefix gets the verdict it gets without a deny list.
    let deny = |s: &str| Setup::Deny(s.parse().unwrap(), DENY_FOREVER);
    let expired = |s: &str| Setup::Deny(s.parse().unwrap(), 1);
    v.push(
        row(
            "deny 203.0.113.7/32: the client's SYN to VIP_A is dropped (drop_denied), nothing \
             inserted",
            from_client(&p),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.7/32"))
        .after(After::ConntrackEmpty),
    );
    let pb = ipv4(C4B, VIP_A).tcp_syn(40001, 80).payload(b"hello");
    let kb = fk4(C4B, VIP_A, 40001, 80, 6);
    v.push(
        row(
            "deny 203.0.113.7/32: the neighbour 203.0.113.8 is untouched (forwarded, new flow)",
            from_client(&pb),
            Tx(dsr(pick(row::A_TCP, &kb), &pb)),
            &[TxNewFlow],
        )
        .setup(deny("203.0.113.7/32"))
        .after(After::Conntrack(
            kb,
            Some(ct(pick(row::A_TCP, &kb), row::A_TCP)),
        )),
    );
    v.push(
        row(
            "deny /32: the client's UDP to a non-VIP address (the local stack) is dropped too",
            from_client(&ipv4(C4, NOT_VIP4).udp(5353, 53).payload(b"q")),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.7/32")),
    );
    v.push(
        row(
            "deny /32: the client's SYN to the L7 VIP VIP_W:443 (the proxy's listener) is dropped",
            from_client(&ipv4(C4, VIP_W).tcp_syn(40003, 443)),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.7/32")),
    );
    v.push(
        row(
            "deny /32 behind VLAN 42: dropped",
            from_client_vlan(&p),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.7/32")),
    );
    v.push(
        row(
            "deny /32 of 203.0.113.7 written as IPv4-mapped ::ffff:203.0.113.7: the IPv4 \
             packet is dropped",
            from_client(&p),
            Drop,
            &[DropDenied],
        )
        .setup(deny("::ffff:203.0.113.7")),
    );
    v.push(
        row(
            "deny 203.0.113.0/24: 203.0.113.8 inside it is dropped",
            from_client(&pb),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.0/24"))
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "deny 203.0.113.0/24: 203.0.113.254 (top of the prefix), an ICMP echo to a non-VIP, \
             dropped",
            from_client(&ipv4(ROUTER4, NOT_VIP4).icmp4_echo(1, 1).payload(b"ping")),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.0/24")),
    );
    for (name, src) in [
        (
            "deny 203.0.113.0/24: 203.0.114.0, just above it, is untouched (forwarded)",
            [203, 0, 114, 0],
        ),
        (
            "deny 203.0.113.0/24: 203.0.112.255, just below it, is untouched (forwarded)",
            [203, 0, 112, 255],
        ),
    ] {
        let pn = ipv4(src, VIP_A).tcp_syn(40001, 80);
        let kn = fk4(src, VIP_A, 40001, 80, 6);
        v.push(
            row(
                name,
                from_client(&pn),
                Tx(dsr(pick(row::A_TCP, &kn), &pn)),
                &[TxNewFlow],
            )
            .setup(deny("203.0.113.0/24")),
        );
    }
    v.push(
        row(
            "deny 203.0.113.0/24: a non-VIP packet from outside it passes as before \
             (pass_not_vip)",
            from_client(&ipv4([203, 0, 114, 0], NOT_VIP4).udp(5353, 53)),
            Pass,
            &[PassNotVip],
        )
        .setup(deny("203.0.113.0/24")),
    );
    v.push(
        row(
            "deny 2001:db8:c::/64: the client's SYN to VIP6_A is dropped",
            from_client(&p6),
            Drop,
            &[DropDenied],
        )
        .setup(deny("2001:db8:c::/64"))
        .after(After::ConntrackEmpty),
    );
    v.push(
        row(
            "deny 2001:db8:c::/64: 2001:db8:c::ffff:ffff:ffff:ffff (top of the prefix) to a \
             non-VIP, dropped",
            from_client(
                &ipv6(v6(0x2001_0db8_000c_0000, u64::MAX), NOT_VIP6)
                    .udp(5353, 53)
                    .payload(b"q6"),
            ),
            Drop,
            &[DropDenied],
        )
        .setup(deny("2001:db8:c::/64")),
    );
    v.push(
        row(
            "deny 2001:db8:c::/64: five extension headers from inside it are dropped (the check \
             comes before them; without it: pass_unsupported_header)",
            from_client(
                &ipv6(C6, VIP6_A)
                    .hop_by_hop()
                    .dst_opts()
                    .v6_ext(IPPROTO_ROUTING, 0)
                    .dst_opts()
                    .dst_opts()
                    .tcp(40030, 80),
            ),
            Drop,
            &[DropDenied],
        )
        .setup(deny("2001:db8:c::/64")),
    );
    for (name, src) in [
        (
            "deny 2001:db8:c::/64: 2001:db8:c:1::7 in the next /64 is untouched (forwarded)",
            v6(0x2001_0db8_000c_0001, 7),
        ),
        (
            "deny 2001:db8:c::/64: 2001:db8:b:ffff:ffff:ffff:ffff:ffff just below is untouched",
            v6(0x2001_0db8_000b_ffff, u64::MAX),
        ),
    ] {
        let pn = ipv6(src, VIP6_A).tcp_syn(40001, 80);
        let kn = fk6(src, VIP6_A, 40001, 80, 6);
        v.push(
            row(
                name,
                from_client(&pn),
                Tx(dsr(pick(row::A6_TCP, &kn), &pn)),
                &[TxNewFlow],
            )
            .setup(deny("2001:db8:c::/64")),
        );
    }
    v.push(
        row(
            "deny 2001:db8:c::/64 (IPv6 only): the IPv4 client is untouched",
            from_client(&p),
            Tx(dsr(b, &p)),
            &[TxNewFlow],
        )
        .setup(deny("2001:db8:c::/64")),
    );
    v.push(
        row(
            "deny 203.0.113.0/24 (IPv4 only): the IPv6 client is untouched",
            from_client(&p6),
            Tx(dsr(b6, &p6)),
            &[TxNewFlow],
        )
        .setup(deny("203.0.113.0/24")),
    );
    v.push(
        row(
            "an expired deny of 203.0.113.7/32 (not yet removed by userspace) drops nothing: \
             forwarded as before",
            from_client(&p),
            Tx(dsr(b, &p)),
            &[TxNewFlow],
        )
        .setup(expired("203.0.113.7/32"))
        .after(After::Conntrack(k, Some(ct(b, row::A_TCP)))),
    );
    v.push(
        row(
            "an expired deny of 2001:db8:c::/64 drops nothing: forwarded as before",
            from_client(&p6),
            Tx(dsr(b6, &p6)),
            &[TxNewFlow],
        )
        .setup(expired("2001:db8:c::/64")),
    );
    v.push(
        row(
            "an expired /32 inside a live /24: the /24 still drops (the lookup goes on to the \
             covering prefix)",
            from_client(&p),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.113.0/24"))
        .setup(expired("203.0.113.7/32")),
    );
    v.push(
        row(
            "an expired /64 inside a live /48 (IPv6): the /48 still drops",
            from_client(&p6),
            Drop,
            &[DropDenied],
        )
        .setup(deny("2001:db8:c::/48"))
        .setup(expired("2001:db8:c::/64")),
    );
    v.push(
        row(
            "expired /32, expired /24 around it, live /8 around both: the /8 drops (3 lookups)",
            from_client(&p),
            Drop,
            &[DropDenied],
        )
        .setup(deny("203.0.0.0/8"))
        .setup(expired("203.0.113.0/24"))
        .setup(expired("203.0.113.7/32")),
    );
    v.push(
        row(
            "a live /32 inside an expired /24: the neighbour 203.0.113.8 is forwarded",
            from_client(&pb),
            Tx(dsr(pick(row::A_TCP, &kb), &pb)),
            &[TxNewFlow],
        )
        .setup(expired("203.0.113.0/24"))
        .setup(deny("203.0.113.7/32")),
    );

    // ---- Decap ----------------------------------------------------------
    let inner4 = ipv4(C4, VIP_A).tcp(40001, 80).payload(b"inner");
    let inner6 = ipv6(C6, VIP6_A).udp(5353, 53).payload(b"inner6");
    let bmac1 = bmac(1);
    v.push(
        row(
            "decap ipip v4: the inner packet behind the original Ethernet header",
            eth(bmac1, LB_MAC)
                .ipv4(IPIP_SRC4, baddr4(1))
                .ipip(&inner4.build())
                .build(),
            PassAs(eth(bmac1, LB_MAC).then(&inner4).build()),
            &[PassDecapsulated],
        )
        .decap(),
    );
    v.push(
        row(
            "decap ipip v6",
            eth(bmac(4), LB_MAC)
                .ipv6(IPIP_SRC6, baddr6(4))
                .ipip(&inner6.build())
                .build(),
            PassAs(eth(bmac(4), LB_MAC).then(&inner6).build()),
            &[PassDecapsulated],
        )
        .decap(),
    );
    v.push(
        row(
            "decap ipip v4 behind VLAN 42: tag kept",
            eth(bmac1, LB_MAC)
                .vlan(42)
                .ipv4(IPIP_SRC4, baddr4(1))
                .ipip(&inner4.build())
                .build(),
            PassAs(eth(bmac1, LB_MAC).vlan(42).then(&inner4).build()),
            &[PassDecapsulated],
        )
        .decap(),
    );
    v.push(
        row(
            "decap ipip v4 whose outer header has options",
            eth(bmac1, LB_MAC)
                .ipv4(IPIP_SRC4, baddr4(1))
                .ip_options(&[1, 1, 1, 0])
                .ipip(&inner4.build())
                .build(),
            PassAs(eth(bmac1, LB_MAC).then(&inner4).build()),
            &[PassDecapsulated],
        )
        .decap(),
    );
    // The stack reassembles fragments before any tunnel sees them; an
    // outer fragment stripped here leaves a cut inner packet (or, for a
    // non-first fragment, data taken for an IP header).
    v.push(
        row(
            "decap: an outer IPv4 first fragment (MF) is left to the stack: untouched",
            eth(bmac1, LB_MAC)
                .ipv4(IPIP_SRC4, baddr4(1))
                .frag(0, true)
                .ipip(&inner4.build())
                .build(),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v.push(
        row(
            "decap: an outer IPv4 last fragment (offset 185, MF clear) is left to the stack: \
             untouched",
            eth(bmac1, LB_MAC)
                .ipv4(IPIP_SRC4, baddr4(1))
                .frag(185, false)
                .ipip(&inner4.build())
                .build(),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v.push(
        row(
            "decap: EtherType IPv6 but outer version 4 (next-header byte 41): untouched",
            eth(bmac(4), LB_MAC)
                .ipv6(IPIP_SRC6, baddr6(4))
                .ip_version(4)
                .ipip(&inner6.build())
                .build(),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v.push(
        row(
            "decap: plain TCP untouched",
            from_client(&inner4),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v.push(
        row(
            "decap: IPv4 protocol 4 carrying an IPv6 packet: untouched",
            eth(bmac1, LB_MAC)
                .ipv4(IPIP_SRC4, baddr4(1))
                .proto(IPPROTO_IPIP)
                .payload(&inner6.build())
                .build(),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v.push(
        row(
            "decap: ARP untouched",
            eth([0xff; 6], CLIENT_MAC)
                .ether_type(ETH_P_ARP)
                .payload_n(28)
                .build(),
            Pass,
            &[PassNotVip],
        )
        .decap(),
    );
    v
}

/// The deny list over the harness's maps. The harness keeps its `Ebpf`
/// private, so the maps are found among this process's file descriptors by
/// name (this test binary loads one object; the newest map wins should
/// there be more).
fn harness_deny_list() -> anyhow::Result<DenyList> {
    use std::os::fd::BorrowedFd;
    let names = [
        lb_common::maps::DENY_V4,
        lb_common::maps::DENY_V6,
        lb_common::maps::DENY_STATE,
    ];
    let mut found: [Option<(u32, MapData)>; 3] = [None, None, None];
    for e in std::fs::read_dir("/proc/self/fd")? {
        let e = e?;
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        match std::fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy() == "anon_inode:bpf-map" => {}
            _ => continue,
        }
        // SAFETY: `fd` is open (just listed) and stays open for the dup.
        let Ok(dup) = nix::unistd::dup(unsafe { BorrowedFd::borrow_raw(fd) }) else {
            continue;
        };
        let Ok(data) = MapData::from_fd(dup) else {
            continue;
        };
        let info = data.info()?;
        let Some(i) = names.iter().position(|n| info.name_as_str() == Some(*n)) else {
            continue;
        };
        if found[i].as_ref().is_none_or(|(id, _)| *id < info.id()) {
            found[i] = Some((info.id(), data));
        }
    }
    let [Some((_, v4)), Some((_, v6)), Some((_, state))] = found else {
        anyhow::bail!("the harness's deny maps are not among this process's descriptors");
    };
    DenyList::from_maps(Map::LpmTrie(v4), Map::LpmTrie(v6), Map::Array(state))
}

/// Runs one row; `Err` says what differed.
fn run_row(h: &mut Harness, deny: &mut DenyList, r: &Row) -> Result<(), String> {
    if !r.setup.iter().any(|s| matches!(s, Setup::KeepState)) {
        h.ct_clear().map_err(|e| e.to_string())?;
        h.reset_flood_guard().map_err(|e| e.to_string())?;
        h.set_settings(&settings()).map_err(|e| e.to_string())?;
        deny.clear().map_err(|e| e.to_string())?;
    }
    for s in &r.setup {
        match s {
            Setup::KeepState => {}
            Setup::Conntrack(k, v) => h.ct_insert(*k, *v).map_err(|e| e.to_string())?,
            Setup::Settings(s) => h.set_settings(s).map_err(|e| e.to_string())?,
            Setup::Deny(p, until) => {
                deny.deny_until(*p, *until, 7)
                    .map_err(|e| format!("deny {p}: {e:#}"))?;
            }
        }
    }
    let before = h.reasons().map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    match (h.run(r.prog, &r.input), &r.expect) {
        (Err(_), Expect::KernelRefuses) => {}
        (Err(e), _) => return Err(format!("test run failed: {e}")),
        (Ok(run), Expect::KernelRefuses) => {
            problems.push(format!("the kernel ran it: {}", action_name(run.action)))
        }
        (Ok(run), expect) => {
            let (action, frame) = match expect {
                Expect::Pass => (XDP_PASS, &r.input),
                Expect::Drop => (XDP_DROP, &r.input),
                Expect::Tx(f) => (XDP_TX, f),
                Expect::PassAs(f) => (XDP_PASS, f),
                Expect::KernelRefuses => unreachable!(),
            };
            if run.action != action {
                problems.push(format!(
                    "action {} (want {})",
                    action_name(run.action),
                    action_name(action)
                ));
            }
            if run.out != *frame {
                problems.push(format!("output frame: {}", diff(frame, &run.out)));
            }
            if let Expect::Tx(f) | Expect::PassAs(f) = expect {
                if let Err(e) = verify_checksums(f) {
                    problems.push(format!("the expected frame itself is wrong: {e}"));
                }
                if run.action == action {
                    if let Err(e) = verify_checksums(&run.out) {
                        problems.push(format!("output checksum: {e}"));
                    }
                }
            }
        }
    }
    let after = h.reasons().map_err(|e| e.to_string())?;
    for reason in Reason::ALL {
        let i = reason as usize;
        let want = r.reasons.iter().filter(|&&x| x == reason).count() as u64;
        let got = after[i].packets - before[i].packets;
        let got_bytes = after[i].bytes - before[i].bytes;
        if got != want || got_bytes != want * r.input.len() as u64 {
            problems.push(format!(
                "{}: +{got} packets/+{got_bytes} bytes (want +{want}/+{})",
                reason.name(),
                want * r.input.len() as u64
            ));
        }
    }
    for a in &r.after {
        match a {
            After::Conntrack(k, want) => {
                let got = h.ct_get(k);
                if got != *want {
                    problems.push(format!("conntrack[{k:?}] = {got:?}, want {want:?}"));
                }
            }
            After::ConntrackEmpty => {
                let n = h.ct_dump().map_err(|e| e.to_string())?;
                if !n.is_empty() {
                    problems.push(format!("conntrack holds {} entries: {n:?}", n.len()));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n      "))
    }
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn xdp_fixture_table() {
    if !xlb_tests::privilege::privileged("xdp_fixture_table") {
        return;
    }
    let cpu = pin_to_current_cpu().expect("pinning the test to one CPU");
    let mut h = Harness::load(M, 4096).expect("loading xlb's eBPF object");
    h.set_settings(&settings()).unwrap();
    h.install(&backends(), &vips()).unwrap();
    let mut deny = harness_deny_list().expect("the harness's deny maps");
    let table = rows(&h);
    eprintln!("running {} fixture rows on CPU {cpu}", table.len());

    let mut failures = Vec::new();
    let mut expected_totals = vec![(0u64, 0u64); Reason::ALL.len()];
    for (i, r) in table.iter().enumerate() {
        for reason in &r.reasons {
            let t = &mut expected_totals[*reason as usize];
            t.0 += 1;
            t.1 += r.input.len() as u64;
        }
        match run_row(&mut h, &mut deny, r) {
            Ok(()) => eprintln!("  ok   {i:2} {}", r.name),
            Err(e) => {
                eprintln!("  FAIL {i:2} {}\n      {e}", r.name);
                failures.push(format!("row {i} \"{}\":\n      {e}", r.name));
            }
        }
    }

    // The totals after the whole table, against the rows' sum.
    let totals = h.reasons().unwrap();
    eprintln!("REASONS after the table (packets/bytes, want):");
    for reason in Reason::ALL {
        let got = totals[reason as usize];
        let want = expected_totals[reason as usize];
        let mark = if (got.packets, got.bytes) == want {
            ""
        } else {
            "   <-- differs"
        };
        eprintln!(
            "  {:24} {:4}/{:6}  ({:4}/{:6}){mark}",
            reason.name(),
            got.packets,
            got.bytes,
            want.0,
            want.1
        );
        if (got.packets, got.bytes) != want {
            failures.push(format!(
                "REASONS total {}: {}/{} (want {}/{})",
                reason.name(),
                got.packets,
                got.bytes,
                want.0,
                want.1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures ({} rows, then the REASONS totals):\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}
