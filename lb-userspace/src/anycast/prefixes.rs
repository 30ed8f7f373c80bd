//! Which prefixes a node announces: the pure part of anycast.
use std::{collections::BTreeSet, net::IpAddr};

use crate::config::l4::L4Config;

/// The host prefixes to announce: every L4 VIP address with at least one
/// backend in its table (weight above zero after health), and every L7
/// listener address that is a concrete unicast address (a wildcard bind
/// is no VIP). Nothing while `drained`.
pub fn announced(effective_l4: &L4Config, l7_addrs: &[IpAddr], drained: bool) -> BTreeSet<IpAddr> {
    if drained {
        return BTreeSet::new();
    }
    let mut out = BTreeSet::new();
    for v in &effective_l4.vips {
        if v.backends.iter().any(|b| b.weight > 0) {
            out.insert(v.address);
        }
    }
    for a in l7_addrs {
        if !a.is_unspecified() && !a.is_loopback() {
            out.insert(*a);
        }
    }
    out
}

/// The BIRD fragment announcing `prefixes` (host routes, `blackhole`
/// because the node's BIRD exports them to BGP only, never to its kernel).
pub fn render(prefixes: &BTreeSet<IpAddr>) -> String {
    let mut out = String::from(
        "# Written by xlb: the VIP prefixes this node announces. Do not edit;\n\
         # the node's BIRD configuration includes this file.\n",
    );
    for (proto, channel, v6) in [("xlb_vips4", "ipv4", false), ("xlb_vips6", "ipv6", true)] {
        out.push_str(&format!("protocol static {proto} {{\n  {channel};\n"));
        for p in prefixes.iter().filter(|p| p.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            out.push_str(&format!("  route {p}/{len} blackhole;\n"));
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l4(yaml: &str) -> L4Config {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const TWO_VIPS: &str = "
vips:
  - name: web
    address: 10.0.0.1
    port: 80
    protocol: tcp
    mode: dsr
    backends: [{address: 10.1.0.1}, {address: 10.1.0.2}]
  - name: dns
    address: 10.0.0.2
    port: 53
    protocol: udp
    mode: dsr
    backends: [{address: 10.1.0.3}]
";

    #[test]
    fn a_vip_whose_backends_are_all_out_is_not_announced() {
        let mut c = l4(TWO_VIPS);
        let all = announced(&c, &[], false);
        assert_eq!(all.len(), 2);
        c.vips[1].backends[0].weight = 0;
        let some = announced(&c, &[], false);
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_drained_node_announces_nothing() {
        assert!(announced(&l4(TWO_VIPS), &["10.0.0.9".parse().unwrap()], true).is_empty());
    }

    #[test]
    fn wildcard_listeners_are_not_vips() {
        let a = announced(
            &L4Config::default(),
            &["0.0.0.0".parse().unwrap(), "10.0.0.9".parse().unwrap()],
            false,
        );
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn renders_one_static_protocol_per_family_even_when_empty() {
        let s = render(&BTreeSet::new());
        assert!(s.contains("protocol static xlb_vips4 {\n  ipv4;\n}"), "{s}");
        assert!(s.contains("protocol static xlb_vips6 {\n  ipv6;\n}"), "{s}");
        let s = render(&["10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()].into());
        assert!(s.contains("route 10.0.0.1/32 blackhole;"), "{s}");
        assert!(s.contains("route 2001:db8::1/128 blackhole;"), "{s}");
    }
}
