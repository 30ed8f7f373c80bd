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
    /// `etcd`. Default: `embedded` when `admin:` is set, else `file`.
    #[serde(default)]
    pub kind: Option<StoreKind>,
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
    /// `etcd`: where the node keeps a copy of what it applied, to serve
    /// it when restarted while etcd is down. Default
    /// `/var/lib/xlb/<instance>/etcd-snapshot.json`.
    #[serde(default)]
    pub snapshot: Option<PathBuf>,
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

impl ConfigStoreYaml {
    /// The kind in force: the one written, else `embedded` with an admin
    /// API (whose writes must go somewhere durable), else `file`.
    pub fn effective_kind(&self, admin: bool) -> StoreKind {
        self.kind.unwrap_or(if admin {
            StoreKind::Embedded
        } else {
            StoreKind::File
        })
    }
}

/// Problems of the node settings: resources in the file while a store
/// holds them, an admin API over the file.
pub(super) fn issues(config: &super::Config) -> Vec<super::Issue> {
    let mut out = Vec::new();
    let kind = config.config_store.effective_kind(config.admin.is_some());
    let mut issue = |path: &str, message: String| {
        out.push(super::Issue {
            path: path.into(),
            message,
        })
    };
    if kind == StoreKind::File {
        if config.admin.is_some() {
            issue(
                "config_store.kind",
                "the admin API writes to a store: use `embedded` or `etcd`".into(),
            );
        }
        return out;
    }
    let word = if kind == StoreKind::Etcd {
        "etcd"
    } else {
        "embedded"
    };
    for (path, n) in [
        ("l7.routes", config.l7.routes.len()),
        ("l7.upstreams", config.l7.upstreams.len()),
        ("l7.rate_limits", config.l7.rate_limits.len()),
        ("l4.vips", config.l4.vips.len()),
    ] {
        if n > 0 {
            issue(path, format!("with config_store `{word}` resources live in the store; move them there with `xlb config import`"));
        }
    }
    if kind == StoreKind::Etcd && config.config_store.endpoints.is_empty() {
        issue(
            "config_store.endpoints",
            "etcd needs at least one endpoint, e.g. http://127.0.0.1:2379".into(),
        );
    }
    if !config.config_store.prefix.starts_with('/') || config.config_store.prefix.len() < 2 {
        issue("config_store.prefix", "a key prefix such as /xlb".into());
    }
    out
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
