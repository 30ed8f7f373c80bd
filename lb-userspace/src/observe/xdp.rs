//! The XDP datapath's per-CPU counters as Prometheus metrics, summed over
//! CPUs when `/metrics` is scraped (never copied on a timer: a scrape sees
//! the maps as they are).
use std::path::PathBuf;

use lb_common::{counters::ProtoClass, maps, reasons::Reason};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::counter::ConstCounter,
};

use crate::datapath::{counters, state_file::InstanceState};

/// Reads a running instance's pinned counter maps at each scrape.
#[derive(Debug)]
pub struct XdpCollector {
    /// `<bpffs>/xlb/<instance>`.
    pin_dir: PathBuf,
    /// The instance's name, for its state file (VIP and backend names).
    instance: String,
}

impl XdpCollector {
    /// A collector of the instance pinned under `pin_dir`.
    pub fn new(pin_dir: PathBuf, instance: String) -> XdpCollector {
        XdpCollector { pin_dir, instance }
    }
}

/// What a reason's name says the packet's fate was.
fn action(reason: &str) -> &'static str {
    match reason.split('_').next() {
        Some("tx") => "tx",
        Some("drop") => "drop",
        _ => "pass",
    }
}

/// One counter family: `name` with `(label, value)` rows.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let counter = ConstCounter::new(0u64);
    let mut fam = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    for (labels, value) in rows {
        let enc = fam.encode_family(labels)?;
        ConstCounter::new(*value).encode(enc)?;
    }
    Ok(())
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // An unreadable map (instance without L4, a restart between pins)
        // leaves its metrics out of this scrape instead of failing it.
        let Ok(totals) = counters::read_pinned(&self.pin_dir) else {
            return Ok(());
        };
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for r in Reason::ALL {
            let c = totals.reason(r);
            let labels = vec![
                ("action", action(r.name()).to_string()),
                ("reason", r.name().to_string()),
            ];
            packets.push((labels.clone(), c.packets));
            bytes.push((labels, c.bytes));
        }
        family(
            &mut encoder,
            "xlb_xdp_packets",
            "Packets the XDP program handled, by action and reason.",
            &packets,
        )?;
        family(
            &mut encoder,
            "xlb_xdp_bytes",
            "Bytes the XDP program handled, by action and reason.",
            &bytes,
        )?;
        let classes: Vec<_> = ProtoClass::ALL
            .iter()
            .map(|&c| {
                (
                    vec![("class", c.name().to_string())],
                    totals.class(c).packets,
                )
            })
            .collect();
        family(
            &mut encoder,
            "xlb_xdp_class_packets",
            "Packets the XDP program saw, by protocol class.",
            &classes,
        )?;
        let state = InstanceState::read(&self.instance).unwrap_or_default();
        let (mut vp, mut vb, mut bp, mut bb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Ok(map) = counters::open_per_cpu(&self.pin_dir, maps::VIP_STATS) {
            for (row, name) in &state.vips {
                if let Ok(c) = counters::sum_row(&map, *row) {
                    vp.push((vec![("vip", name.clone())], c.packets));
                    vb.push((vec![("vip", name.clone())], c.bytes));
                }
            }
        }
        if let Ok(map) = counters::open_per_cpu(&self.pin_dir, maps::BACKEND_STATS) {
            for (slot, addr) in &state.backends {
                if let Ok(c) = counters::sum_row(&map, *slot) {
                    bp.push((vec![("backend", addr.to_string())], c.packets));
                    bb.push((vec![("backend", addr.to_string())], c.bytes));
                }
            }
        }
        family(
            &mut encoder,
            "xlb_xdp_vip_packets",
            "Packets forwarded to an L4 VIP's backends, by VIP.",
            &vp,
        )?;
        family(
            &mut encoder,
            "xlb_xdp_vip_bytes",
            "Bytes forwarded to an L4 VIP's backends, by VIP.",
            &vb,
        )?;
        family(
            &mut encoder,
            "xlb_xdp_backend_packets",
            "Packets forwarded to an L4 backend.",
            &bp,
        )?;
        family(
            &mut encoder,
            "xlb_xdp_backend_bytes",
            "Bytes forwarded to an L4 backend.",
            &bb,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_name_their_action() {
        assert_eq!(super::action("drop_denied"), "drop");
        assert_eq!(super::action("tx_new_flow"), "tx");
        assert_eq!(super::action("pass_l7"), "pass");
    }
}
