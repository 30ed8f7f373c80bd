//! Next-hop resolution over real namespaces: from inside a fresh LB
//! namespace, `xlb::datapath::neighbour` must find the MAC of an on-link
//! backend (IPv4 and IPv6) and of the router in front of an off-link one,
//! with no neighbour entry present beforehand, and fail clearly for an
//! address with no route and for an on-link address nobody answers for.
//!
//! Topology (documentation addresses, all inside namespaces made here):
//!
//! ```text
//! [lb] bk0 192.0.2.1/25 2001:db8::1/64  <-->  eth0 192.0.2.2/25 2001:db8::2/64 [backend]
//! [lb] rt0 192.0.2.129/25               <-->  eth0 192.0.2.254/25              [router]
//! [lb] route 198.51.100.0/24 via 192.0.2.254
//! ```
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use xlb::datapath::neighbour::{resolve_blocking, NeighbourError, NextHop};
use xlb_tests::{
    netns::{veth, Netns},
    privilege::privileged,
};

const TIMEOUT: Duration = Duration::from_millis(500);

struct Testbed {
    lb: Netns,
    backend: Netns,
    router: Netns,
}

impl Testbed {
    fn new() -> Testbed {
        let lb = Netns::new("nlb").unwrap();
        let backend = Netns::new("nbk").unwrap();
        let router = Netns::new("nrt").unwrap();
        // Links here are seconds old, where a real LB's are not: without a
        // usable (DAD-completed) link-local address the kernel sends no
        // neighbour solicitation at all, so skip DAD on the new links.
        for ns in [&lb, &backend, &router] {
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0").unwrap();
        }
        veth(&lb, "bk0", &backend, "eth0").unwrap();
        veth(&lb, "rt0", &router, "eth0").unwrap();
        lb.addr("bk0", "192.0.2.1/25").unwrap();
        lb.addr("bk0", "2001:db8::1/64").unwrap();
        backend.addr("eth0", "192.0.2.2/25").unwrap();
        backend.addr("eth0", "2001:db8::2/64").unwrap();
        lb.addr("rt0", "192.0.2.129/25").unwrap();
        router.addr("eth0", "192.0.2.254/25").unwrap();
        lb.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"])
            .unwrap();
        Testbed {
            lb,
            backend,
            router,
        }
    }

    /// `resolve_blocking` on a thread inside the LB namespace.
    fn resolve(&self, addr: &str) -> Result<NextHop, NeighbourError> {
        let addr: IpAddr = addr.parse().unwrap();
        self.lb
            .enter(move || resolve_blocking(addr, TIMEOUT))
            .unwrap()
    }

    /// The LB's neighbour entry for `ip` on `dev`, as `ip -j neigh` prints it.
    fn neigh(&self, ip: &str, dev: &str) -> Option<serde_json::Value> {
        let json = self
            .lb
            .ip(&["-j", "neigh", "show", ip, "dev", dev])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_array().unwrap().first().cloned()
    }
}

/// Resolves an on-link backend that the LB has never talked to, and checks
/// the entry is left for the kernel to keep fresh.
fn on_link(bed: &Testbed, backend: &str) {
    assert_eq!(
        bed.neigh(backend, "bk0"),
        None,
        "fresh namespace should have no entry"
    );
    let hop = bed.resolve(backend).unwrap();
    assert_eq!(
        hop,
        NextHop {
            ifindex: bed.lb.ifindex("bk0").unwrap(),
            mac: bed.backend.mac("eth0").unwrap(),
            gateway: None,
        }
    );
    let entry = bed.neigh(backend, "bk0").expect("entry after resolution");
    assert!(
        entry.get("managed").is_some(),
        "entry should be managed: {entry}"
    );
    // A second call finds it without waiting.
    let started = Instant::now();
    assert_eq!(bed.resolve(backend).unwrap(), hop);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn resolves_on_link_ipv4_backend() {
    if !privileged("resolves_on_link_ipv4_backend") {
        return;
    }
    on_link(&Testbed::new(), "192.0.2.2");
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn resolves_on_link_ipv6_backend() {
    if !privileged("resolves_on_link_ipv6_backend") {
        return;
    }
    on_link(&Testbed::new(), "2001:db8::2");
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn resolves_the_router_of_an_off_link_backend() {
    if !privileged("resolves_the_router_of_an_off_link_backend") {
        return;
    }
    let bed = Testbed::new();
    assert_eq!(bed.neigh("192.0.2.254", "rt0"), None);
    let hop = bed.resolve("198.51.100.7").unwrap();
    assert_eq!(
        hop,
        NextHop {
            ifindex: bed.lb.ifindex("rt0").unwrap(),
            mac: bed.router.mac("eth0").unwrap(),
            gateway: Some("192.0.2.254".parse().unwrap()),
        }
    );
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn uses_an_existing_permanent_entry() {
    if !privileged("uses_an_existing_permanent_entry") {
        return;
    }
    let bed = Testbed::new();
    bed.lb
        .ip(&[
            "neigh",
            "add",
            "192.0.2.99",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "bk0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let hop = bed.resolve("192.0.2.99").unwrap();
    assert_eq!(hop.mac, [2, 0, 0, 0, 0, 0x99]);
    assert_eq!(hop.gateway, None);
    let entry = bed.neigh("192.0.2.99", "bk0").unwrap();
    assert_eq!(entry["state"][0], "PERMANENT", "left untouched: {entry}");
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn no_route_and_local_addresses_are_errors() {
    if !privileged("no_route_and_local_addresses_are_errors") {
        return;
    }
    let bed = Testbed::new();
    for addr in ["203.0.113.9", "2001:db8:ffff::1"] {
        let started = Instant::now();
        let err = bed.resolve(addr).unwrap_err();
        assert!(
            matches!(err, NeighbourError::NoRoute { .. }),
            "{addr}: {err:?}"
        );
        assert!(err.to_string().contains(addr), "{err}");
        assert!(started.elapsed() < TIMEOUT, "no route must fail at once");
    }
    let err = bed.resolve("192.0.2.1").unwrap_err();
    assert!(
        matches!(err, NeighbourError::NotUnicast { ref kind, .. } if kind == "local"),
        "{err:?}"
    );
}

#[cfg_attr(
    xlb_unprivileged,
    ignore = "skipped: needs root (CAP_BPF, CAP_NET_ADMIN)"
)]
#[test]
fn unanswered_on_link_address_times_out_and_leaves_nothing() {
    if !privileged("unanswered_on_link_address_times_out_and_leaves_nothing") {
        return;
    }
    let bed = Testbed::new();
    for addr in ["192.0.2.77", "2001:db8::77"] {
        let started = Instant::now();
        let err = bed.resolve(addr).unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(err, NeighbourError::Timeout { .. }),
            "{addr}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(addr) && msg.contains("bk0"), "{msg}");
        assert!(
            elapsed >= TIMEOUT && elapsed < TIMEOUT + Duration::from_millis(300),
            "{addr}: took {elapsed:?}"
        );
        assert_eq!(
            bed.neigh(addr, "bk0"),
            None,
            "the managed entry made for {addr} should be gone"
        );
    }
}
