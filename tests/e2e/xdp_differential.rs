//! Differential test of the XDP balancer against a userspace model
//! (`xdp_harness::model`): thousands of random packets — valid TCP, UDP,
//! ICMP errors, fragments, IPv4 options, IPv6 extension headers, to VIPs
//! and not, with and without VLAN tags — a third of them then mutated
//! (byte flips, truncation, trailing bytes), each run once through
//! `BPF_PROG_TEST_RUN` and checked against the model: the action, the
//! output frame (for `XDP_TX`: DSR's MACs and untouched rest, IPIP's outer
//! header and inner bytes, the too-big reply), the `REASONS` counter that
//! moved, and the connection-table entry of the flow. Every IPIP output is
//! also fed to the decap program, which must give back the original packet.
//!
//! The model encodes the documented semantics (see `xdp_harness::model`);
//! when it disagrees with the kernel, the disagreement is recorded under
//! the kind of packet that caused it — or as a read past the IP datagram
//! when the kernel agrees once the frame's bytes after the datagram are
//! cut off — and the model then follows the kernel's connection table so
//! that one disagreement does not cascade. Any disagreement fails the test.
//!
//! `XLB_DIFF_SEED` and `XLB_DIFF_COUNT` override the seed and the count.

#[path = "xdp_harness/mod.rs"]
mod xdp_harness;

use std::collections::BTreeMap;

use lb_common::{
    conntrack::ConnValue,
    consts::NO_BACKEND,
    reasons::Reason,
    vip::{VipKey, FAMILY_FRAGMENTS},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use xdp_harness::{
    check::{verify_checksums, verify_outer_ipv4},
    config::*,
    frame::*,
    loader::*,
    model::{a4, Decision, Key, Model},
};

const DEFAULT_SEED: u64 = 0x786c_6264_6966_6621;
const DEFAULT_COUNT: usize = 5000;

/// One flow the generator may send packets of (and quote in ICMP errors).
#[derive(Clone, Debug)]
struct Flow {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

impl Flow {
    fn key(&self) -> Key {
        Key {
            src: self.src,
            dst: self.dst,
            sport: self.sport.to_be_bytes(),
            dport: self.dport.to_be_bytes(),
            proto: self.proto,
        }
    }
}

fn ip4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Where generated flows go: (address, port or None for any, protocol).
fn targets(v6: bool) -> Vec<([u8; 16], Option<u16>, u8)> {
    if v6 {
        vec![
            (VIP6_A, Some(80), 6),
            (VIP6_A, Some(53), 17),
            (VIP6_I, Some(80), 6),
            (VIP6_I, None, 6),
            (NOT_VIP6, None, 6),
            (NOT_VIP6, None, 17),
            (VIP6_A, None, 17),
        ]
    } else {
        vec![
            (a4(VIP_A), Some(80), 6),
            (a4(VIP_A), Some(53), 17),
            (a4(VIP_W), None, 6),
            (a4(VIP_W), Some(443), 6),
            (a4(VIP_I), Some(80), 6),
            (a4(VIP_EMPTY), Some(80), 6),
            (a4(VIP_NOCT), Some(80), 6),
            (a4(VIP_NOPORTS), Some(80), 6),
            (a4(VIP_MIXED), Some(80), 6),
            (a4(VIP_DEAD), Some(80), 6),
            (a4(NOT_VIP4), None, 6),
            (a4(NOT_VIP4), None, 17),
            (a4(VIP_A), None, 17),
        ]
    }
}

struct Gen {
    rng: StdRng,
    pool: Vec<Flow>,
}

impl Gen {
    fn pick<T: Clone>(&mut self, v: &[T]) -> T {
        v[self.rng.random_range(0..v.len())].clone()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.random()).collect()
    }

    fn new_flow(&mut self) -> Flow {
        let v6 = self.rng.random_bool(0.4);
        let (dst, port, proto) = self.pick(&targets(v6));
        let src = if v6 {
            v6_client(self.rng.random_range(1..60))
        } else {
            a4([203, 0, 113, self.rng.random_range(1..60)])
        };
        Flow {
            v6,
            src,
            dst,
            sport: self.rng.random_range(1024..65535),
            dport: port.unwrap_or_else(|| self.rng.random_range(1..65535)),
            proto,
        }
    }

    /// A flow from the pool (half the time) or a new one added to it.
    fn flow(&mut self) -> Flow {
        if !self.pool.is_empty() && self.rng.random_bool(0.5) {
            let i = self.rng.random_range(0..self.pool.len());
            return self.pool[i].clone();
        }
        let f = self.new_flow();
        self.pool.push(f.clone());
        f
    }

    /// Ethernet (random MACs sometimes) and maybe a VLAN tag.
    fn l2(&mut self) -> Frame {
        let dst = if self.rng.random_bool(0.8) {
            LB_MAC
        } else {
            let b = self.bytes(6);
            [b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]
        };
        let src = if self.rng.random_bool(0.8) {
            CLIENT_MAC
        } else {
            let b = self.bytes(6);
            [b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]
        };
        let f = eth(dst, src);
        if self.rng.random_bool(0.25) {
            f.vlan(self.rng.random_range(1..4095))
        } else {
            f
        }
    }

    /// The IP header (with options / extension headers sometimes).
    fn ip(&mut self, v6: bool, src: [u8; 16], dst: [u8; 16]) -> Frame {
        if v6 {
            let mut f = ipv6(src, dst)
                .traffic_class(self.rng.random())
                .flow_label(self.rng.random());
            if self.rng.random_bool(0.15) {
                for _ in 0..self.rng.random_range(1..4) {
                    let kind = self.pick(&[IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING]);
                    f = f.v6_ext(kind, self.rng.random_range(0..3));
                }
            }
            f
        } else {
            let mut f = ipv4(ip4(&src), ip4(&dst))
                .tos(self.rng.random())
                .ip_id(self.rng.random());
            if self.rng.random_bool(0.5) {
                f = f.df();
            }
            if self.rng.random_bool(0.1) {
                let n = self.rng.random_range(1..5) * 4;
                let mut opts = vec![1u8; n]; // NOPs
                opts[n - 1] = 0; // EOL
                f = f.ip_options(&opts);
            }
            f
        }
    }

    fn l4(&mut self, f: Frame, flow: &Flow, payload: usize) -> Frame {
        let data = self.bytes(payload);
        match flow.proto {
            6 => f.tcp(flow.sport, flow.dport).payload(&data),
            17 => f.udp(flow.sport, flow.dport).payload(&data),
            p => f.proto(p).payload(&data),
        }
    }

    /// One valid packet and what it is.
    fn packet(&mut self) -> (Vec<u8>, &'static str) {
        let l2 = self.l2();
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=44 => {
                let flow = self.flow();
                // Sometimes big enough for the too-big check (IPIP VIPs).
                let payload = if self.rng.random_bool(0.08) {
                    self.rng.random_range(1380..1480)
                } else {
                    self.rng.random_range(0..200)
                };
                let ip = self.ip(flow.v6, flow.src, flow.dst);
                let f = self.l4(ip, &flow, payload);
                (l2.then(&f).build(), "flow")
            }
            45..=54 => {
                let mut flow = self.flow();
                if self.rng.random_bool(0.7) {
                    flow.dst = if flow.v6 { VIP6_A } else { a4(VIP_A) };
                    flow.proto = if self.rng.random_bool(0.8) { 17 } else { 6 };
                }
                let first = self.rng.random_bool(0.5);
                let more = !first || self.rng.random_bool(0.5);
                let offset = if first {
                    0
                } else {
                    self.rng.random_range(1..200)
                };
                let n = self.rng.random_range(8..120);
                let data = self.bytes(n);
                let f = if flow.v6 && self.rng.random_bool(0.2) {
                    // Destination Options in the fragmentable part.
                    let ip = ipv6(flow.src, flow.dst).v6_fragment(offset, more, self.rng.random());
                    if first {
                        self.l4(ip.dst_opts(), &flow, 40)
                    } else {
                        ip.frag_next(IPPROTO_DSTOPTS).payload(&data)
                    }
                } else if flow.v6 {
                    let ip = ipv6(flow.src, flow.dst).v6_fragment(offset, more, self.rng.random());
                    if first {
                        self.l4(ip, &flow, 40)
                    } else {
                        ip.frag_next(flow.proto).payload(&data)
                    }
                } else {
                    let ip = ipv4(ip4(&flow.src), ip4(&flow.dst))
                        .ip_id(self.rng.random())
                        .frag(offset, more);
                    if first {
                        self.l4(ip, &flow, 40)
                    } else {
                        ip.proto(flow.proto).payload(&data)
                    }
                };
                (l2.then(&f).build(), "fragment")
            }
            55..=71 => {
                // An ICMP error quoting the flow's reply direction.
                let flow = if self.rng.random_bool(0.85) {
                    self.flow()
                } else {
                    self.new_flow()
                };
                let router = if flow.v6 {
                    v6_client(0xfe)
                } else {
                    a4(ROUTER4)
                };
                let to = if self.rng.random_bool(0.9) {
                    flow.dst
                } else {
                    let t = self.new_flow();
                    if t.v6 == flow.v6 {
                        t.dst
                    } else {
                        flow.dst
                    }
                };
                let back = Flow {
                    v6: flow.v6,
                    src: flow.dst,
                    dst: flow.src,
                    sport: flow.dport,
                    dport: flow.sport,
                    proto: flow.proto,
                };
                let qip = if flow.v6 {
                    ipv6(back.src, back.dst)
                } else {
                    ipv4(ip4(&back.src), ip4(&back.dst)).df()
                };
                let quoted = self.l4(qip, &back, 64).build();
                let qlen = if flow.v6 { 48 } else { 28 } + self.rng.random_range(0..3) * 8;
                let quoted = &quoted[..qlen.min(quoted.len())];
                let f = if flow.v6 {
                    let kind = self.pick(&[1u8, 2, 3, 4, 1, 2]);
                    ipv6(router, to)
                        .icmp6(kind, self.rng.random_range(0..4), self.rng.random())
                        .payload(quoted)
                } else {
                    let kind = self.pick(&[3u8, 3, 3, 11, 12, 5]);
                    ipv4(ip4(&router), ip4(&to))
                        .icmp4(kind, self.rng.random_range(0..6), [0, 0, 5, 0x78])
                        .payload(quoted)
                };
                (l2.then(&f).build(), "icmp-error")
            }
            72..=76 => {
                let flow = self.flow();
                let f = if flow.v6 {
                    ipv6(flow.src, flow.dst).icmp6_echo(self.rng.random(), 1)
                } else {
                    ipv4(ip4(&flow.src), ip4(&flow.dst)).icmp4_echo(self.rng.random(), 1)
                };
                let data = self.bytes(32);
                (l2.then(&f.payload(&data)).build(), "icmp-echo")
            }
            77..=81 => {
                let flow = self.flow();
                let proto = self.pick(&[47u8, 50, 132]);
                let n = self.rng.random_range(0..80);
                let data = self.bytes(n);
                let f = if flow.v6 {
                    ipv6(flow.src, flow.dst).proto(proto).payload(&data)
                } else {
                    ipv4(ip4(&flow.src), ip4(&flow.dst))
                        .proto(proto)
                        .payload(&data)
                };
                (l2.then(&f).build(), "other-proto")
            }
            82..=88 => {
                let t = self.pick(&[ETH_P_ARP, 0x88cc, 0x88a8, 0x8137, 0x0842]);
                let n = self.rng.random_range(28..64);
                let data = self.bytes(n);
                (l2.ether_type(t).payload(&data).build(), "non-ip")
            }
            _ => {
                let t = self.pick(&[ETH_P_IPV4, ETH_P_IPV6, ETH_P_8021Q]);
                let n = self.rng.random_range(0..90);
                let data = self.bytes(n);
                (
                    eth(LB_MAC, CLIENT_MAC).ether_type(t).payload(&data).build(),
                    "garbage",
                )
            }
        }
    }

    /// Random damage: byte flips (mostly in the headers), truncation,
    /// trailing bytes, "interesting" values.
    fn mutate(&mut self, mut f: Vec<u8>) -> (Vec<u8>, String) {
        let mut ops = Vec::new();
        for _ in 0..self.rng.random_range(1..4) {
            match self.rng.random_range(0..10) {
                0..=3 => {
                    let i = self.rng.random_range(12..f.len().clamp(13, 110));
                    if i < f.len() {
                        let x: u8 = self.rng.random_range(1..=255);
                        f[i] ^= x;
                        ops.push(format!("xor[{i}]^={x:#04x}"));
                    }
                }
                4..=5 => {
                    let i = self.rng.random_range(12..f.len().clamp(13, 110));
                    if i < f.len() {
                        let v =
                            self.pick(&[0u8, 0xff, 1, 4, 5, 6, 17, 41, 43, 44, 58, 60, 0x45, 0x60]);
                        f[i] = v;
                        ops.push(format!("set[{i}]={v:#04x}"));
                    }
                }
                6..=8 => {
                    if f.len() > 14 {
                        let n = self.rng.random_range(14..f.len());
                        f.truncate(n);
                        ops.push(format!("truncate({n})"));
                    }
                }
                _ => {
                    let n = self.rng.random_range(1..24);
                    let extra = self.bytes(n);
                    f.extend_from_slice(&extra);
                    ops.push(format!("append({n})"));
                }
            }
        }
        (f, ops.join(" "))
    }
}

fn v6_client(i: u8) -> [u8; 16] {
    let mut a = C6;
    a[15] = i;
    a
}

/// What the kernel did with one frame.
struct Observed {
    action: u32,
    out: Vec<u8>,
    /// (reason, packets, bytes) that moved.
    moved: Vec<(Reason, u64, u64)>,
}

/// Whether the kernel's behaviour is `d`; `Err` says how it differs.
fn compare(
    h: &Harness,
    model: &Model,
    frame: &[u8],
    k: &Observed,
    d: &Decision,
) -> Result<(), String> {
    let mut why = Vec::new();
    if k.action != d.action {
        why.push(format!(
            "action {} (model {})",
            action_name(k.action),
            action_name(d.action)
        ));
    }
    if k.out != d.out {
        why.push(format!("frame: {}", diff(&d.out, &k.out)));
    }
    let want = vec![(d.reason, 1, frame.len() as u64)];
    if k.moved != want {
        why.push(format!(
            "reasons {:?} (model {:?})",
            k.moved
                .iter()
                .map(|(r, p, b)| format!("{}+{p}/{b}", r.name()))
                .collect::<Vec<_>>(),
            d.reason.name()
        ));
    }
    if let Some(key) = d.ct_key {
        let want = match d.ct_insert {
            Some((ik, v)) if ik == key => Some(v),
            _ => model.conntrack.get(&key).copied(),
        };
        let got = h.ct_get(&key.flow_key());
        if got != want {
            why.push(format!("conntrack {got:?} (model {want:?})"));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn moved(
    before: &[lb_common::counters::PacketCounter],
    after: &[lb_common::counters::PacketCounter],
) -> Vec<(Reason, u64, u64)> {
    Reason::ALL
        .iter()
        .filter_map(|&r| {
            let i = r as usize;
            let p = after[i].packets - before[i].packets;
            let b = after[i].bytes - before[i].bytes;
            (p != 0 || b != 0).then_some((r, p, b))
        })
        .collect()
}

/// The model's configuration: the same VIPs (with fragment aliases),
/// backends and live tables the harness installed.
fn model_for(h: &Harness) -> Model {
    let mut m = Model {
        settings: settings(),
        ..Model::default()
    };
    for b in backends() {
        m.backends.insert(b.index, b.meta);
    }
    for v in vips() {
        m.vips.insert(v.key, v.meta);
        if v.fragments {
            m.vips.insert(
                VipKey {
                    port: 0,
                    family: v.key.family | FAMILY_FRAGMENTS,
                    ..v.key
                },
                v.meta,
            );
        }
        let live = v.meta.table & 1;
        m.tables
            .insert((v.meta.index, live), h.tables[&v.meta.index].clone());
        m.tables
            .insert((v.meta.index, live ^ 1), vec![NO_BACKEND; M as usize]);
    }
    m
}

#[derive(Default)]
struct Mismatches {
    /// cause → (count, examples)
    by_cause: BTreeMap<String, (usize, Vec<String>)>,
}

impl Mismatches {
    fn add(&mut self, cause: &str, example: String) {
        let e = self.by_cause.entry(cause.to_string()).or_default();
        e.0 += 1;
        if e.1.len() < 3 {
            e.1.push(example);
        }
    }
    fn total(&self) -> usize {
        self.by_cause.values().map(|v| v.0).sum()
    }
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn xdp_differential_against_model() {
    if !xlb_tests::privilege::privileged("xdp_differential_against_model") {
        return;
    }
    let seed = std::env::var("XLB_DIFF_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(DEFAULT_SEED);
    let count = std::env::var("XLB_DIFF_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_COUNT);
    eprintln!("xdp differential: seed {seed:#x} (XLB_DIFF_SEED), {count} packets (XLB_DIFF_COUNT)");

    let cpu = pin_to_current_cpu().expect("pinning to one CPU");
    // A connection table far larger than the flows sent: no LRU eviction,
    // which the model does not simulate.
    let mut h = Harness::load(M, 1 << 16).expect("loading xlb's eBPF object");
    h.set_settings(&settings()).unwrap();
    h.install(&backends(), &vips()).unwrap();
    let mut model = model_for(&h);

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        pool: Vec::new(),
    };
    // Established flows, some pointing elsewhere than Maglev would, some at
    // an inactive backend, some recorded under another VIP row.
    for i in 0..40 {
        let f = g.new_flow();
        g.pool.push(f.clone());
        let key = f.key();
        let backend = match i % 4 {
            0 => B_INACTIVE,
            _ if f.v6 => B6[i % 3],
            _ => B4[i % 3],
        };
        let vip = if i % 5 == 0 { 3 } else { i as u32 % 13 };
        let v = ConnValue { backend, vip };
        h.ct_insert(key.flow_key(), v).unwrap();
        model.conntrack.insert(key, v);
    }

    let mut mism = Mismatches::default();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let (mut mutated_n, mut decap_checked) = (0usize, 0usize);
    let mut before = h.reasons().unwrap();

    for i in 0..count {
        if i == count / 2 {
            // Second half: fixed outer sources and a smaller backend MTU.
            let mut s = settings();
            s.flags = 0;
            s.backend_mtu = 1400;
            h.set_settings(&s).unwrap();
            model.settings = s;
        }
        let (mut frame, kind) = g.packet();
        let mut ops = String::new();
        if g.rng.random_bool(0.35) {
            (frame, ops) = g.mutate(frame);
            mutated_n += 1;
        }
        *kinds.entry(kind).or_default() += 1;
        let run = h.run(Prog::Balancer, &frame).expect("test run");
        let after = h.reasons().unwrap();
        let obs = Observed {
            action: run.action,
            out: run.out,
            moved: moved(&before, &after),
        };
        before = after;

        let want = model.decide(&frame);
        let describe = |why: &str| {
            format!(
                "#{i} {kind}{}{ops}: {why}\n        frame {}",
                if ops.is_empty() { "" } else { ", mutated " },
                hex(&frame)
            )
        };
        let taken = match compare(&h, &model, &frame, &obs, &want) {
            Ok(()) => {
                *outcomes
                    .entry(format!(
                        "{} {}",
                        action_name(want.action),
                        want.reason.name()
                    ))
                    .or_default() += 1;
                Some(want)
            }
            Err(why) => {
                // Bytes after the IP datagram are link-layer padding and
                // must not change the decision: if the kernel agrees with
                // the model once they are cut off, they are the cause.
                let padding_read = datagram_end(&frame).is_some_and(|end| {
                    let cut = &frame[..end];
                    let before = h.reasons().unwrap();
                    let run = h.run(Prog::Balancer, cut).expect("test run");
                    let obs = Observed {
                        action: run.action,
                        out: run.out,
                        moved: moved(&before, &h.reasons().unwrap()),
                    };
                    compare(&h, &model, cut, &obs, &model.decide(cut)).is_ok()
                });
                let cause = if padding_read {
                    "datapath reads past the IP datagram (its trailing bytes decide)".to_string()
                } else if ops.is_empty() {
                    format!("UNEXPLAINED {kind}")
                } else {
                    format!("UNEXPLAINED {kind} (mutated)")
                };
                mism.add(&cause, describe(&why));
                before = h.reasons().unwrap();
                None
            }
        };
        match taken {
            Some(d) => model.apply(&d),
            None => {
                // Follow the kernel's connection table from here on.
                model.conntrack.clear();
                for (k, v) in h.ct_dump().unwrap() {
                    model.conntrack.insert(key_of(&k), v);
                }
            }
        }

        // A too-big reply is the datapath's own packet: every checksum.
        if obs.action == XDP_TX && obs.moved.first().map(|m| m.0) == Some(Reason::TxIcmpTooBig) {
            if let Err(e) = verify_checksums(&obs.out) {
                mism.add("too-big-checksum", describe(&e));
            }
        }

        // IPIP outputs must decapsulate back to the original packet.
        if obs.action == XDP_TX && is_ipip(&obs.out) {
            let l3 = if u16::from_be_bytes([obs.out[12], obs.out[13]]) == ETH_P_8021Q {
                18
            } else {
                14
            };
            let outer = if obs.out[l3] >> 4 == 6 { 40 } else { 20 };
            let mut want = obs.out[..l3].to_vec();
            want.extend_from_slice(&obs.out[l3 + outer..]);
            let d = h.run(Prog::Decap, &obs.out).expect("decap test run");
            if d.action != XDP_PASS || d.out != want {
                mism.add(
                    "decap-roundtrip",
                    describe(&format!(
                        "decap gave {} {}",
                        action_name(d.action),
                        diff(&want, &d.out)
                    )),
                );
            }
            // The outer header is the datapath's own: its checksum must hold
            // (inner checksums are the sender's, and mutated ones are bad).
            if let Err(e) = verify_outer_ipv4(&obs.out) {
                mism.add("outer-checksum", describe(&e));
            }
            decap_checked += 1;
            before = h.reasons().unwrap();
        }
    }

    // The whole connection table, against the model's.
    let kernel_ct: BTreeMap<String, ConnValue> = h
        .ct_dump()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (format!("{k:?}"), v))
        .collect();
    let model_ct: BTreeMap<String, ConnValue> = model
        .conntrack
        .iter()
        .map(|(k, v)| (format!("{:?}", k.flow_key()), *v))
        .collect();
    if kernel_ct != model_ct {
        let only_k = kernel_ct
            .keys()
            .filter(|k| !model_ct.contains_key(*k))
            .count();
        let only_m = model_ct
            .keys()
            .filter(|k| !kernel_ct.contains_key(*k))
            .count();
        mism.add(
            "conntrack-final",
            format!(
                "kernel {} entries, model {}; {only_k} only in the kernel, {only_m} only in the model",
                kernel_ct.len(),
                model_ct.len()
            ),
        );
    }

    eprintln!("\n== xdp differential: seed {seed:#x}, {count} packets on CPU {cpu} ==");
    eprintln!(
        "generated: {kinds:?}; mutated: {mutated_n}; IPIP outputs decapsulated: {decap_checked}"
    );
    eprintln!("conntrack entries at the end: {}", kernel_ct.len());
    eprintln!(
        "agreed with the model ({} packets):",
        outcomes.values().sum::<usize>()
    );
    for (o, n) in &outcomes {
        eprintln!("  {n:5}  {o}");
    }
    eprintln!("disagreements: {}", mism.total());
    for (cause, (n, examples)) in &mism.by_cause {
        eprintln!("  {n:5}  {cause}");
        for e in examples {
            eprintln!("         {e}");
        }
    }
    assert!(
        mism.total() == 0,
        "seed {seed:#x}: {} of {count} packets disagree with the model: {:?}",
        mism.total(),
        mism.by_cause
            .iter()
            .map(|(c, (n, _))| format!("{c}: {n}"))
            .collect::<Vec<_>>()
    );
}

/// Where the IPv4/IPv6 datagram in `f` ends (its total length / 40 +
/// payload length), if bytes of the frame follow it.
fn datagram_end(f: &[u8]) -> Option<usize> {
    let (mut l3, mut et) = (14, u16::from_be_bytes([*f.get(12)?, *f.get(13)?]));
    if et == ETH_P_8021Q {
        et = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        l3 = 18;
    }
    let end = match et {
        ETH_P_IPV4 => l3 + usize::from(u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?])),
        ETH_P_IPV6 => l3 + 40 + usize::from(u16::from_be_bytes([*f.get(l3 + 4)?, *f.get(l3 + 5)?])),
        _ => return None,
    };
    (end > l3 && end < f.len()).then_some(end)
}

/// Whether an output frame is IP-in-IP (outer protocol 4 / next header 41).
fn is_ipip(f: &[u8]) -> bool {
    let l3 = if f.len() > 18 && u16::from_be_bytes([f[12], f[13]]) == ETH_P_8021Q {
        18
    } else {
        14
    };
    match f.get(l3).map(|b| b >> 4) {
        Some(4) => f.get(l3 + 9) == Some(&IPPROTO_IPIP),
        Some(6) => f.get(l3 + 6) == Some(&IPPROTO_IPV6),
        _ => false,
    }
}

/// The model's key for a map key.
fn key_of(k: &lb_common::flow::FlowKey) -> Key {
    let b = |w: [u32; 4]| {
        let mut a = [0u8; 16];
        for (i, x) in w.iter().enumerate() {
            a[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
        }
        a
    };
    Key {
        src: b(k.src),
        dst: b(k.dst),
        sport: k.src_port.to_ne_bytes(),
        dport: k.dst_port.to_ne_bytes(),
        proto: k.proto,
    }
}
