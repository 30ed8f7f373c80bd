//! Loads the eBPF object, attaches XDP to the configured interfaces, pins the
//! maps under the instance's folder, and undoes all of it on drop.
use std::path::{Path, PathBuf};

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use lb_common::maps;

use crate::config::{Config, XdpModeSetting};

use super::{ensure_bpffs, instance_lock::InstanceLock, instance_pin_dir, EBPF_OBJECT};

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("bpffs: {0:#}")]
    Bpffs(anyhow::Error),
    #[error("instance `{instance}` is already running (lock {lock} is held)", lock = lock.display())]
    InstanceBusy { instance: String, lock: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "attaching XDP to `{iface}` in {mode} mode failed: {source}{hint}",
        hint = if *mode == "native" {
            "\n  hint: this driver may lack native XDP; use `xdp_mode: skb` (or `--xdp-mode skb`)"
        } else { "" }
    )]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning map {map} at {path}: {source}", path = path.display())]
    Pin {
        map: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

/// A loaded and attached datapath. Dropping it detaches the programs and
/// removes the pinned maps.
pub struct Datapath {
    // Field order matters: the logger holds the log map, which must outlive
    // nothing but must be dropped with the object.
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    ebpf: Ebpf,
    pin_dir: PathBuf,
    _lock: InstanceLock,
    attached: Vec<(String, &'static str)>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pin_dir)
            .field("attached", &self.attached)
            .finish()
    }
}

impl Datapath {
    /// Loads the object with maps sized by `config` and pins the maps, but
    /// attaches nothing: the caller fills the maps first, so the very first
    /// packet already sees the VIPs.
    pub fn load(config: &Config) -> Result<Datapath, DatapathError> {
        let instance = config.instance.as_str();
        let lock = InstanceLock::take(instance)?;
        ensure_bpffs(&config.bpffs).map_err(DatapathError::Bpffs)?;
        let pin_dir = instance_pin_dir(&config.bpffs, instance);
        // We hold the lock, so anything left here is from a crashed run.
        remove_pins(&pin_dir);
        std::fs::create_dir_all(&pin_dir).map_err(|source| DatapathError::Io {
            what: format!("creating {}", pin_dir.display()),
            source,
        })?;

        let level = ebpf_log_level();
        let l4 = &config.l4;
        let maglev_entries = l4.max_vips * 2 * l4.maglev_table_size;
        // Each VIP, its fragment entry and its echo entry.
        let vip_entries = l4.max_vips * 3;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, false)
            .map_max_entries(maps::MAGLEV, maglev_entries)
            .map_max_entries(maps::VIPS, vip_entries)
            .map_max_entries(maps::VIP_STATS, l4.max_vips)
            .map_max_entries(maps::BACKENDS, l4.max_backends)
            .map_max_entries(maps::BACKEND_STATS, l4.max_backends)
            .map_max_entries(maps::CONNTRACK, l4.conntrack_size)
            .load(EBPF_OBJECT)?;
        // Keep the logger alive for as long as the programs: dropping it
        // closes the log map the programs write to.
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::warn!("eBPF logging unavailable: {e}");
                None
            }
        };

        let mut dp = Datapath {
            logger,
            ebpf,
            pin_dir,
            _lock: lock,
            attached: Vec::new(),
        };
        dp.pin_maps()?;
        dp.load_program(maps::XDP_PROGRAM)?;
        Ok(dp)
    }

    fn load_program(&mut self, name: &'static str) -> Result<(), DatapathError> {
        self.xdp_program(name)?
            .load()
            .map_err(|source| DatapathError::Program { name, source })
    }

    /// The XDP program `name` of the object.
    fn xdp_program(&mut self, name: &'static str) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(name)
            .ok_or(DatapathError::Program {
                name,
                source: aya::programs::ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    fn pin_maps(&mut self) -> Result<(), DatapathError> {
        for (name, map) in self.ebpf.maps() {
            // Internal maps (.rodata, the log ring), benchmark and L7 maps
            // are not part of the pinned API.
            if !maps::PINNED.contains(&name) {
                continue;
            }
            let path = self.pin_dir.join(name);
            map.pin(&path).map_err(|source| DatapathError::Pin {
                map: name.to_string(),
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Attaches the balancer to every configured interface.
    pub fn attach(
        &mut self,
        config: &Config,
        mode_override: Option<XdpModeSetting>,
    ) -> Result<(), DatapathError> {
        let mut done = Vec::new();
        let prog = self.xdp_program(maps::XDP_PROGRAM)?;
        for iface in config.interfaces.iter() {
            let setting = mode_override.unwrap_or(iface.xdp_mode);
            let iface = iface.name.as_str();
            let mode = match setting {
                XdpModeSetting::Native => attach(prog, iface, XdpMode::Driver, "native")?,
                XdpModeSetting::Skb => attach(prog, iface, XdpMode::Skb, "skb")?,
                XdpModeSetting::Auto => match attach(prog, iface, XdpMode::Driver, "native") {
                    Ok(m) => m,
                    Err(e) => {
                        log::warn!("{e}; falling back to skb mode on {iface}");
                        attach(prog, iface, XdpMode::Skb, "skb")?
                    }
                },
            };
            log::info!("XDP attached to {iface} in {mode} mode");
            done.push((iface.to_string(), mode));
        }
        self.attached.extend(done);
        Ok(())
    }

    /// Takes the eBPF log reader so the caller can poll it; it must be kept
    /// alive as long as this datapath.
    pub fn take_logger(&mut self) -> Option<EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// The folder holding this instance's pinned maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Interfaces and the mode each is attached in.
    pub fn attached(&self) -> &[(String, &'static str)] {
        &self.attached
    }

    /// The loaded object, for map access.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        // The XDP links are owned by `ebpf` and detach when it drops; the
        // pins would outlive us, so remove them explicitly.
        remove_pins(&self.pin_dir);
        for (iface, _) in &self.attached {
            log::info!("XDP detached from {iface}");
        }
    }
}

fn attach(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
    mode_name: &'static str,
) -> Result<&'static str, DatapathError> {
    prog.attach(iface, mode)
        .map(|_| mode_name)
        .map_err(|source| DatapathError::Attach {
            iface: iface.to_string(),
            mode: mode_name,
            source,
        })
}

/// Removes the instance's pins and folder, and the `xlb` parent folder if it
/// is left empty. Errors are ignored: this is cleanup of what may not exist.
fn remove_pins(pin_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    if let Some(parent) = pin_dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The eBPF-side log level (aya_log_common::Level: 1 = error … 5 = trace),
/// taken from the userspace logger so `RUST_LOG=debug` enables both.
fn ebpf_log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}
