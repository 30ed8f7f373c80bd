//! Node settings that say where resources live and how they are changed:
//! `config_store:` (file, embedded or etcd) and `admin:` (the admin API's
//! listener). Resources themselves — routes, upstreams, certificates,
//! rate-limit rules, L4 VIPs — are checked one at a time in `resource.rs`.
use std::path::PathBuf;

use serde::Deserialize;

use crate::l7::lazy::LazySettings;
use crate::units::Dur;

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
    /// `eager` (default): every route is loaded at start and kept.
    /// `lazy`: only routes without a host are loaded; a host's routes are
    /// read from the store on its first request and kept in a bounded
    /// cache (see `lazy`).
    #[serde(default)]
    pub routes: RouteLoading,
    /// Limits of `routes: lazy`.
    #[serde(default)]
    pub lazy: LazyYaml,
}

/// How a node holds the routes of a store.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteLoading {
    #[default]
    Eager,
    Lazy,
}

/// `config_store.lazy`: the cache and the miss caps of lazy routing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LazyYaml {
    /// Host entries kept (exact names, wildcards and "no such host").
    /// Default 100000.
    pub cache_entries: u64,
    /// An entry is read again after this long even without a change
    /// (a safety net: changes invalidate entries at once). Default 10m.
    pub ttl: Dur,
    /// Store reads for missing hosts at once; more misses get 503.
    /// Default 64.
    pub max_concurrent_misses: usize,
    /// Store reads for missing hosts per second; more misses get 503.
    /// Default 5000.
    pub misses_per_second: u32,
}

impl Default for LazyYaml {
    fn default() -> Self {
        let d = LazySettings::default();
        LazyYaml {
            cache_entries: d.cache_entries,
            ttl: Dur(d.ttl),
            max_concurrent_misses: d.max_concurrent_misses,
            misses_per_second: d.misses_per_second,
        }
    }
}

impl LazyYaml {
    /// The proxy's settings.
    pub fn settings(&self) -> LazySettings {
        LazySettings {
            cache_entries: self.cache_entries,
            ttl: self.ttl.0,
            max_concurrent_misses: self.max_concurrent_misses,
            misses_per_second: self.misses_per_second,
            ..LazySettings::default()
        }
    }
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
        if config.config_store.routes == RouteLoading::Lazy {
            issue(
                "config_store.routes",
                "`lazy` reads routes from a store: use config_store kind `embedded` or `etcd`"
                    .into(),
            );
        }
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
    // `l4.vips` stay allowed in the file beside the store's VIPs (both
    // reach the XDP tables; on a clash the file's wins, see
    // `daemon/store_vips.rs`): an L4 node with a store — e.g. one sharing
    // health verdicts through etcd — may keep its VIPs here.
    for (path, n) in [
        ("l7.routes", config.l7.routes.len()),
        ("l7.upstreams", config.l7.upstreams.len()),
        ("l7.rate_limits", config.l7.rate_limits.len()),
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
    let lazy = &config.config_store.lazy;
    if lazy.cache_entries == 0 {
        issue("config_store.lazy.cache_entries", "at least 1".into());
    }
    if lazy.max_concurrent_misses == 0 {
        issue(
            "config_store.lazy.max_concurrent_misses",
            "at least 1".into(),
        );
    }
    if lazy.misses_per_second == 0 {
        issue("config_store.lazy.misses_per_second", "at least 1".into());
    }
    if lazy.ttl.0.is_zero() {
        issue(
            "config_store.lazy.ttl",
            "a positive duration such as 10m".into(),
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
