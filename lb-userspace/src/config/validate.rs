//! Checks that the schema cannot express. Every problem is collected (not
//! just the first) with the path of the field it is about.
use std::collections::{HashMap, HashSet};

use super::{
    error::Issue,
    l4::{parse_mac, ForwardMode},
    model::Config,
};

/// Largest backend weight; keeps weight sums far from overflow.
const MAX_WEIGHT: u32 = 1_000_000;

/// Smallest IPv4 datagram every host must accept (RFC 791).
const MIN_MTU: u32 = 576;

impl Config {
    /// Every semantic problem of this config outside the `l7:` section, in
    /// file order (the L7 planner reports the rest: see [`Config::check`]).
    pub fn issues(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        let mut issue = |path: String, message: String| out.push(Issue { path, message });

        let inst = self.instance.as_str();
        if inst.is_empty()
            || inst.len() > 64
            || !inst
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            issue(
                "instance".into(),
                format!("`{inst}` is not a valid instance name (1-64 letters, digits, '-' or '_')"),
            );
        }

        let mut seen_ifaces: HashMap<&str, usize> = HashMap::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            let name = iface.name.as_str();
            let ok = !name.is_empty()
                && name.len() <= 15
                && !name.contains('/')
                && !name.chars().any(|c| c.is_whitespace() || c == ':');
            if !ok {
                issue(
                    format!("interfaces[{i}].name"),
                    format!("`{name}` is not a valid interface name (1-15 bytes, no '/', ':' or blanks)"),
                );
            } else if let Some(first) = seen_ifaces.insert(name, i) {
                issue(
                    format!("interfaces[{i}].name"),
                    format!("interface `{name}` is already listed at interfaces[{first}]"),
                );
            }
        }

        let l4 = &self.l4;
        if let Err(e) = lb_common::maglev::validate_table_size(l4.maglev_table_size) {
            issue("l4.maglev_table_size".into(), e.to_string());
        }
        for (field, value) in [
            ("conntrack_size", l4.conntrack_size),
            ("max_vips", l4.max_vips),
            ("max_backends", l4.max_backends),
            ("new_flows_per_cpu_sec", l4.new_flows_per_cpu_sec),
        ] {
            if value == 0 {
                issue(format!("l4.{field}"), "must be at least 1".into());
            }
        }
        if (l4.max_vips as u64) * 2 * (l4.maglev_table_size as u64) > u32::MAX as u64 {
            issue(
                "l4.max_vips".into(),
                format!(
                    "max_vips × 2 × maglev_table_size = {} exceeds the BPF array limit",
                    (l4.max_vips as u64) * 2 * (l4.maglev_table_size as u64)
                ),
            );
        }
        if !(MIN_MTU..=65535).contains(&l4.backend_mtu) {
            issue(
                "l4.backend_mtu".into(),
                format!("{} is outside {MIN_MTU}..=65535", l4.backend_mtu),
            );
        }
        if l4.vips.len() > l4.max_vips as usize {
            issue(
                "l4.vips".into(),
                format!("{} VIPs exceed max_vips = {}", l4.vips.len(), l4.max_vips),
            );
        }

        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut listeners: HashMap<(std::net::IpAddr, u16, u8), usize> = HashMap::new();
        let mut all_backends = HashSet::new();
        for (v, vip) in l4.vips.iter().enumerate() {
            let base = format!("l4.vips[{v}]");
            if vip.name.is_empty() {
                issue(format!("{base}.name"), "must not be empty".into());
            } else if let Some(first) = names.insert(vip.name.as_str(), v) {
                issue(
                    format!("{base}.name"),
                    format!(
                        "VIP name `{}` is already used by l4.vips[{first}]",
                        vip.name
                    ),
                );
            }
            let key = (vip.address, vip.port, vip.protocol.number());
            if let Some(first) = listeners.insert(key, v) {
                issue(
                    format!("{base}.address"),
                    format!(
                        "{} port {} {:?} is already served by l4.vips[{first}]",
                        vip.address, vip.port, vip.protocol
                    ),
                );
            }
            let mut mine = HashSet::new();
            for (b, backend) in vip.backends.iter().enumerate() {
                let bpath = format!("{base}.backends[{b}]");
                // IPv4 in IPv6 serves IPv6-only backend networks; IPv6 in
                // IPv4 would need the IPv6 VIP's packets to fit a smaller
                // outer header budget for no network that needs it.
                let family_ok = backend.address.is_ipv4() == vip.address.is_ipv4()
                    || (vip.mode == ForwardMode::Ipip && vip.address.is_ipv4());
                if !family_ok {
                    let why = match vip.mode {
                        ForwardMode::Ipip => {
                            "IPIP carries IPv4 in IPv4 or IPv6, and IPv6 only in IPv6"
                        }
                        ForwardMode::Dsr => "DSR forwards the packet unchanged",
                    };
                    issue(
                        format!("{bpath}.address"),
                        format!(
                            "backend {} is not of the VIP's address family ({why})",
                            backend.address
                        ),
                    );
                }
                if !mine.insert(backend.address) {
                    issue(
                        format!("{bpath}.address"),
                        format!("backend {} is listed twice in this VIP", backend.address),
                    );
                }
                all_backends.insert(backend.address);
                if backend.weight > MAX_WEIGHT {
                    issue(
                        format!("{bpath}.weight"),
                        format!(
                            "{} exceeds the largest weight, {MAX_WEIGHT}",
                            backend.weight
                        ),
                    );
                }
                if let Some(name) = &backend.interface {
                    if let Err(e) = check_ifname(name) {
                        issue(format!("{bpath}.interface"), e);
                    }
                }
                if let Some(mac) = &backend.mac {
                    if parse_mac(mac).is_none() {
                        issue(
                            format!("{bpath}.mac"),
                            format!("`{mac}` is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                        );
                    }
                }
            }
        }
        if let Some(name) = &l4.backend_interface {
            if let Err(e) = check_ifname(name) {
                issue("l4.backend_interface".into(), e);
            }
        }
        if all_backends.len() > l4.max_backends as usize {
            issue(
                "l4.vips".into(),
                format!(
                    "{} distinct backends exceed max_backends = {}",
                    all_backends.len(),
                    l4.max_backends
                ),
            );
        }
        for (i, vip) in self.l4.vips.iter().enumerate() {
            let Some(hc) = &vip.health_check else {
                continue;
            };
            if let Err((field, msg)) = hc.to_spec() {
                let at = if field.is_empty() {
                    format!("l4.vips[{i}].health_check")
                } else {
                    format!("l4.vips[{i}].health_check.{field}")
                };
                out.push(Issue {
                    path: at,
                    message: msg,
                });
            }
            if vip.port == 0 && hc.port.is_none() {
                out.push(Issue {
                    path: format!("l4.vips[{i}].health_check"),
                    message: "the VIP serves every port: say which one to check (port:)".into(),
                });
            }
        }
        out
    }
}

/// A kernel interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, `:` or
/// blanks.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("`{name}` is not 1 to 15 bytes long"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("`{name}` contains `/`, `:` or a blank"));
    }
    Ok(())
}
