//! Loads the eBPF object, attaches XDP to the configured interfaces and pins
//! the maps and the XDP links under the instance's folder.
//!
//! The pins outlive the process on purpose: a crash, a restart or an
//! upgrade leaves the kernel forwarding with the last tables. The next
//! start adopts them (after checking every map's shape, see `super::pins`)
//! and swaps its program into the pinned links with `BPF_LINK_UPDATE`, so
//! there is never a moment without a program on the interface. Only an
//! explicit [`Datapath::detach`] (a stop) removes the pins.
use std::path::{Path, PathBuf};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use lb_common::maps;

use crate::config::{Config, XdpModeSetting};

use super::{
    conntrack_split, ensure_bpffs,
    instance_lock::InstanceLock,
    instance_pin_dir,
    pins::{self, ShapeMismatch},
    EBPF_OBJECT,
};

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
    #[error("pinning {what} at {path}: {source}", path = path.display())]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("reading pinned map {path}: {source}", path = path.display())]
    PinInfo {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}: {source}")]
    Migrate {
        what: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading the eBPF object's map definitions: {0}")]
    Object(#[from] aya_obj::ParseError),
    #[error(transparent)]
    Mismatch(#[from] Box<ShapeMismatch>),
    #[error("adopting the pinned XDP link {path}: {reason}", path = path.display())]
    Link { path: PathBuf, reason: String },
}

/// A loaded and attached datapath. Dropping it leaves the pins (and so the
/// forwarding) in place; [`Datapath::detach`] removes them.
pub struct Datapath {
    // Field order matters: the logger holds the log map, which must outlive
    // nothing but must be dropped with the object.
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    ebpf: Ebpf,
    pin_dir: PathBuf,
    instance: String,
    /// `None` while handed to a successor (see [`Datapath::release_lock`]).
    lock: Option<InstanceLock>,
    attached: Vec<(String, &'static str)>,
    /// Links this run created and pinned (adopted ones belong to the program).
    links: Vec<PinnedLink>,
    /// Whether maps pinned by an earlier run were adopted.
    adopted: bool,
    /// The adopted `CONNTRACK` came from a version that kept IPv4 flows in
    /// it: moved again once the new program runs (`conntrack_split`).
    move_v4_after_attach: bool,
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
        // We hold the lock, so pins here are from a run that crashed or
        // handed over: adopt them, after checking that they fit.
        std::fs::create_dir_all(&pin_dir).map_err(|source| DatapathError::Io {
            what: format!("creating {}", pin_dir.display()),
            source,
        })?;

        let level = ebpf_log_level();
        let l4 = &config.l4;
        let sizes = [
            (maps::MAGLEV, l4.max_vips * 2 * l4.maglev_table_size),
            // Each VIP, its fragment entry and its echo entry.
            (maps::VIPS, l4.max_vips * 3),
            (maps::VIP_STATS, l4.max_vips),
            (maps::MIDFLOW_MISSES, l4.max_vips),
            (maps::BACKENDS, l4.max_backends),
            (maps::BACKEND_STATS, l4.max_backends),
            (maps::CONNTRACK, l4.conntrack_size),
            (maps::CONNTRACK_V4, l4.conntrack_size),
        ];
        let adopted = check_pins(&pin_dir, instance, &sizes)?;
        let split_conntrack = adopted
            && pin_dir.join(maps::CONNTRACK).exists()
            && !pin_dir.join(maps::CONNTRACK_V4).exists();
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &level, false);
        for (name, entries) in sizes {
            loader.map_max_entries(name, entries);
        }
        // Every pinned map is opened from its pin when one exists and
        // created and pinned there otherwise (aya's by-name pinning).
        let paths: Vec<(&str, PathBuf)> = maps::PINNED
            .iter()
            .map(|name| (*name, pin_dir.join(name)))
            .collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        if split_conntrack {
            move_v4_flows(&mut ebpf, "before the program swap")?;
        }
        if adopted {
            log::info!(
                "adopted the pinned maps in {} (connection table, counters and deny list kept)",
                pin_dir.display()
            );
        }
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
            instance: instance.to_string(),
            lock: Some(lock),
            attached: Vec::new(),
            links: Vec::new(),
            adopted,
            move_v4_after_attach: split_conntrack,
        };
        dp.load_program(maps::XDP_PROGRAM)?;
        Ok(dp)
    }

    /// Whether this run adopted maps pinned by an earlier one.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Lets a successor process take the instance (it waits for this lock
    /// before it adopts the pins). Nothing is detached: the pins keep the
    /// program forwarding. This process must not write the maps any more.
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// Takes the instance back after a successor failed to start.
    pub fn retake_lock(&mut self) -> Result<(), DatapathError> {
        if self.lock.is_none() {
            self.lock = Some(InstanceLock::take(&self.instance)?);
        }
        Ok(())
    }

    /// A stop: unpins the links and the maps, so the programs detach when
    /// this process lets go of them (it drops `self`).
    pub fn detach(mut self) {
        self.links.clear();
        remove_pins(&self.pin_dir);
        for (iface, _) in &self.attached {
            log::info!("XDP detached from {iface}");
        }
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

    /// Attaches the balancer to every configured interface: through the
    /// pinned link when an earlier run left one (the program is replaced in
    /// place, never detached), else with a new link that is pinned. Links
    /// pinned for interfaces the config no longer names are removed.
    pub fn attach(
        &mut self,
        config: &Config,
        mode_override: Option<XdpModeSetting>,
    ) -> Result<(), DatapathError> {
        let mut done = Vec::new();
        let mut new_links = Vec::new();
        let pin_dir = self.pin_dir.clone();
        let wanted: Vec<PathBuf> = config
            .interfaces
            .iter()
            .map(|i| pins::link_pin(&pin_dir, i.name.as_str()))
            .collect();
        remove_stale_links(&pin_dir, &wanted);
        let prog = self.xdp_program(maps::XDP_PROGRAM)?;
        for iface in config.interfaces.iter() {
            let setting = mode_override.unwrap_or(iface.xdp_mode);
            let iface = iface.name.as_str();
            let link_path = pins::link_pin(&pin_dir, iface);
            if link_path.exists() {
                replace_through_link(prog, &link_path)?;
                log::info!("XDP program replaced in place on {iface} (pinned link adopted)");
                done.push((iface.to_string(), "kept"));
                continue;
            }
            let (id, mode) = match setting {
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
            new_links.push(pin_new_link(prog, id, &link_path)?);
            done.push((iface.to_string(), mode));
        }
        self.attached.extend(done);
        self.links.extend(new_links);
        if std::mem::take(&mut self.move_v4_after_attach) {
            move_v4_flows(&mut self.ebpf, "after the program swap")?;
        }
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

/// Moves the IPv4 flows of an adopted one-table `CONNTRACK` to
/// `CONNTRACK_V4`, saying how many.
fn move_v4_flows(ebpf: &mut Ebpf, when: &str) -> Result<(), DatapathError> {
    let n = conntrack_split::move_v4_flows(ebpf).map_err(|source| DatapathError::Migrate {
        what: "moving IPv4 flows from CONNTRACK to CONNTRACK_V4",
        source,
    })?;
    log::info!(
        "connection table from an earlier version: {n} IPv4 flows moved to CONNTRACK_V4 {when}"
    );
    Ok(())
}

/// Checks every pinned map in `pin_dir` against the object's declaration
/// (`sizes`: the capacities the config sets); returns whether any existed.
fn check_pins(
    pin_dir: &Path,
    instance: &str,
    sizes: &[(&str, u32)],
) -> Result<bool, DatapathError> {
    let shapes = pins::declared_shapes(EBPF_OBJECT, sizes)?;
    let mut any = false;
    for name in maps::PINNED {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let pinned = pins::pinned_shape(&path).map_err(|source| DatapathError::PinInfo {
            path: path.clone(),
            source,
        })?;
        let Some(wanted) = shapes.get(*name) else {
            continue;
        };
        if let Some((field, p, w)) = pins::first_difference(&pinned, wanted) {
            return Err(Box::new(ShapeMismatch {
                map: name.to_string(),
                path,
                instance: instance.to_string(),
                field,
                pinned: p,
                wanted: w,
            })
            .into());
        }
    }
    Ok(any)
}

/// Swaps `prog` into the link pinned at `path` (`BPF_LINK_UPDATE`).
fn replace_through_link(prog: &mut Xdp, path: &Path) -> Result<(), DatapathError> {
    let fail = |reason: String| DatapathError::Link {
        path: path.to_path_buf(),
        reason,
    };
    let pinned = PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| fail(e.to_string()))?;
    prog.attach_to_link(link)
        .map_err(|e| fail(format!("BPF_LINK_UPDATE: {e}")))?;
    Ok(())
}

/// Takes the link `prog` was just attached with out of the program and
/// pins it at `path`, so it outlives this process.
fn pin_new_link(prog: &mut Xdp, id: XdpLinkId, path: &Path) -> Result<PinnedLink, DatapathError> {
    let fail = |reason: String| DatapathError::Link {
        path: path.to_path_buf(),
        reason,
    };
    let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
    let fd = FdLink::try_from(link)
        .map_err(|e| fail(format!("not a bpf_link (kernel before 5.9?): {e}")))?;
    fd.pin(path).map_err(|source| DatapathError::Pin {
        what: "XDP link".into(),
        path: path.to_path_buf(),
        source,
    })
}

/// Removes link pins in `pin_dir` that are not in `wanted` (interfaces the
/// config dropped): the program leaves those interfaces.
fn remove_stale_links(pin_dir: &Path, wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_link = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(pins::LINK_PREFIX));
        if is_link && !wanted.contains(&path) {
            log::info!(
                "{}: interface no longer configured, XDP detached",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Removes an instance's pins when no process runs it (`xlb unpin`): the
/// way out when pins do not fit a new build. Detaches XDP.
pub fn unpin_instance(bpffs: &Path, instance: &str) -> Result<PathBuf, DatapathError> {
    let _lock = InstanceLock::take(instance)?;
    let dir = instance_pin_dir(bpffs, instance);
    remove_pins(&dir);
    Ok(dir)
}

fn attach(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
    mode_name: &'static str,
) -> Result<(XdpLinkId, &'static str), DatapathError> {
    prog.attach(iface, mode)
        .map(|id| (id, mode_name))
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
