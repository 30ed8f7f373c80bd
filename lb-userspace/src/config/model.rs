//! The configuration schema. Unknown fields are errors: a typo must not
//! silently turn a setting off. Checks live in the types (`try_from`), so a
//! failing check is reported by the parser with its line and column.
use std::path::PathBuf;

use serde::Deserialize;

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
    pub interfaces: Interfaces,
}

/// A name made of letters, digits, `-` and `_`, safe as a path component.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InstanceName(String);

impl Default for InstanceName {
    fn default() -> Self {
        InstanceName("default".into())
    }
}

impl TryFrom<String> for InstanceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(InstanceName(s))
        } else {
            Err(format!(
                "`{s}` is not a valid instance name (1-64 letters, digits, '-' or '_')"
            ))
        }
    }
}

impl InstanceName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The interfaces list; no interface may appear twice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Vec<InterfaceConfig>")]
pub struct Interfaces(Vec<InterfaceConfig>);

impl TryFrom<Vec<InterfaceConfig>> for Interfaces {
    type Error = String;
    fn try_from(v: Vec<InterfaceConfig>) -> Result<Self, String> {
        for (i, iface) in v.iter().enumerate() {
            if v[..i].iter().any(|o| o.name == iface.name) {
                return Err(format!(
                    "interface `{}` is listed twice (entries {} and {i})",
                    iface.name.0,
                    v[..i]
                        .iter()
                        .position(|o| o.name == iface.name)
                        .unwrap_or(0)
                ));
            }
        }
        Ok(Interfaces(v))
    }
}

impl std::ops::Deref for Interfaces {
    type Target = [InterfaceConfig];
    fn deref(&self) -> &[InterfaceConfig] {
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

/// A kernel interface name: 1 to 15 bytes (IFNAMSIZ - 1), no `/`, no blanks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IfName(String);

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && !s.contains('/')
            && !s.chars().any(|c| c.is_whitespace() || c == ':');
        if ok {
            Ok(IfName(s))
        } else {
            Err(format!(
                "`{s}` is not a valid interface name (1-15 bytes, no '/', ':' or blanks)"
            ))
        }
    }
}

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
