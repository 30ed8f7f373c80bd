//! `xlb decap --iface IF`: the backend side of IPIP. Attaches the XDP
//! decapsulation program and runs until SIGINT/SIGTERM, since this kernel
//! has no IPIP device and many edge backends prefer not to run one.
use anyhow::Context as _;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    EbpfLoader,
};
use lb_common::{counters::GlobalCounters, maps, reasons::Reason};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::XdpModeSetting,
    datapath::{counters::read_totals, EBPF_OBJECT},
};

/// Attaches the decap program to `iface`, calls `ready`, waits for a signal,
/// and returns how many packets it decapsulated.
pub async fn run(iface: &str, mode: XdpModeSetting, ready: impl FnOnce()) -> anyhow::Result<u64> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // The balancer's big maps are unused here: keep them minimal.
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::MAGLEV, 1)
        .map_max_entries(maps::CONNTRACK, 1)
        .map_max_entries(maps::CONNTRACK_V4, 1)
        .map_max_entries(maps::VIPS, 1)
        .map_max_entries(maps::BACKENDS, 1)
        .map_max_entries(maps::VIP_STATS, 1)
        .map_max_entries(maps::BACKEND_STATS, 1)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(maps::XDP_DECAP_PROGRAM)
        .context("no decap program in the object")?
        .try_into()?;
    prog.load().context("loading xlb_decap")?;
    let modes: &[(XdpMode, &str)] = match mode {
        XdpModeSetting::Native => &[(XdpMode::Driver, "native")],
        XdpModeSetting::Skb => &[(XdpMode::Skb, "skb")],
        XdpModeSetting::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "skb")],
    };
    let mut last_err = None;
    for (m, name) in modes {
        match prog.attach(iface, *m) {
            Ok(_) => {
                log::info!("decap attached to {iface} in {name} mode");
                last_err = None;
                break;
            }
            Err(e) => last_err = Some(anyhow::anyhow!("attaching decap to {iface} ({name}): {e}")),
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    ready();
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    let counters: PerCpuArray<&MapData, GlobalCounters> =
        PerCpuArray::try_from(ebpf.map(maps::COUNTERS).context("COUNTERS map")?)?;
    let done = read_totals(&counters)?
        .reason(Reason::PassDecapsulated)
        .packets;
    log::info!("decap on {iface}: {done} packets decapsulated; detaching");
    Ok(done)
}
