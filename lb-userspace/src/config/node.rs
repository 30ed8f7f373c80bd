//! Node settings that say where resources live and how they are changed:
//! `config_store:` (file, embedded or etcd) and `admin:` (the admin API's
//! listener). Resources themselves — routes, upstreams, certificates,
//! rate-limit rules, L4 VIPs — are checked one at a time in `resource.rs`.
use std::path::PathBuf;

use serde::Deserialize;

/// Where routes, upstreams, certificates, rate-limit rules and VIPs live.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigStoreYaml {
    /// `file` (the resources are in this file, as before), `embedded` or
    /// `etcd`.
    #[serde(default)]
    pub kind: StoreKind,
    /// `embedded`: the database file. Default
    /// `/var/lib/xlb/<instance>/store.redb`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `embedded`: acknowledge a write only after it reached the disk
    /// (default). `false` acknowledges before the fsync: a crash may lose
    /// the last acknowledged writes, for operators who choose speed.
    #[serde(default = "yes")]
    pub durable: bool,
    /// `etcd`: client URLs, e.g. `http://127.0.0.1:2379`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix of this configuration (several configurations may share
    /// one etcd). Default `/xlb`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn yes() -> bool {
    true
}

fn default_prefix() -> String {
    "/xlb".into()
}

/// The kind of store.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Resources are read from this YAML file; no admin writes.
    #[default]
    File,
    /// A redb database on this node.
    Embedded,
    /// An etcd v3 cluster shared by a fleet.
    Etcd,
}

/// `admin:`: the admin API listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminYaml {
    /// `ip:port`. Default `127.0.0.1:9180`. A non-loopback address needs a
    /// token.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// The API token (`X-API-KEY: T` or `Authorization: Bearer T`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (first line), instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_admin_address() -> String {
    "127.0.0.1:9180".into()
}

impl AdminYaml {
    /// The token, read from `token_file` when that is set.
    pub fn token(&self) -> std::io::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        match &self.token_file {
            Some(f) => Ok(std::fs::read_to_string(f)?
                .lines()
                .next()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())),
            None => Ok(None),
        }
    }
}
