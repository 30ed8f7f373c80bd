//! The configuration schema. Unknown fields are errors: a typo must not
//! silently turn a setting off. Checks that the schema cannot express live
//! in `validate.rs` and are reported with the same file:line:column.
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    l4::L4Config,
    l7::L7Config,
    lifecycle::{AnycastConfig, LifecycleConfig},
};

/// The whole `xlb.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this daemon's pinned objects (`<bpffs>/xlb/<instance>/`), so
    /// several instances can share a host.
    #[serde(default)]
    pub instance: InstanceName,
    /// Where bpffs is (or will be) mounted.
    #[serde(default = "default_bpffs")]
    pub bpffs: PathBuf,
    /// Interfaces the XDP program is attached to.
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
    /// L4 (XDP) load balancing.
    #[serde(default)]
    pub l4: L4Config,
    /// The L7 proxy.
    #[serde(default)]
    pub l7: L7Config,
    /// Reload when the file changes (checked every second), as on SIGHUP.
    #[serde(default)]
    pub watch: bool,
    /// Stop and handover timing.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// BGP announcement of the served VIPs through BIRD (off when absent).
    #[serde(default)]
    pub anycast: Option<AnycastConfig>,
    /// Where resources live (`kind: file | embedded | etcd`). Absent:
    /// `file`.
    #[serde(default)]
    pub config_store: super::node::ConfigStoreYaml,
    /// The admin API listener. Absent: no admin API.
    #[serde(default)]
    pub admin: Option<super::node::AdminYaml>,
    /// Metrics, status page and access log (`config::observe`).
    #[serde(default)]
    pub observe: Option<super::observe::ObserveConfig>,
    /// The L7 plan, made by `Config::check` (not part of the file).
    /// Node settings of health checking (`shared_verdicts`).
    #[serde(default)]
    pub health: super::fleet_health::HealthSettings,
    /// CPU priority of the control plane (admin API, store, applier,
    /// health checks, metrics and status) against the proxy workers:
    /// `normal` (default) or `idle` (`crate::sched`). Read at start.
    #[serde(default)]
    pub control_plane_priority: crate::sched::ControlPlanePriority,
    #[serde(skip)]
    pub(super) planned: Planned,
}

/// The L7 plan a checked config carries. Two configs with equal sections
/// have equal plans, so it takes no part in comparisons.
#[derive(Debug, Clone, Default)]
pub(super) struct Planned(pub(super) Option<std::sync::Arc<crate::l7::plan::L7Plan>>);

impl PartialEq for Planned {
    fn eq(&self, _: &Planned) -> bool {
        true
    }
}

/// A name made of letters, digits, `-` and `_`, safe as a path component
/// (checked in `validate.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct InstanceName(pub(super) String);

impl Default for InstanceName {
    fn default() -> Self {
        InstanceName("default".into())
    }
}

impl InstanceName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One interface the XDP balancer runs on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Kernel interface name, e.g. `eth0`.
    pub name: IfName,
    /// How the program is attached.
    #[serde(default)]
    pub xdp_mode: XdpModeSetting,
}

/// A kernel interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, `:` or
/// blanks (checked in `validate.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct IfName(pub(super) String);

impl IfName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How XDP is attached to an interface.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// In the driver: fastest; fails clearly where the driver lacks it.
    #[default]
    Native,
    /// Generic XDP in the stack: works on any interface, slower.
    Skb,
    /// Native, falling back to skb with a warning.
    Auto,
}

fn default_bpffs() -> PathBuf {
    PathBuf::from("/sys/fs/bpf")
}
