//! `/run/xlb/<instance>.json`: the names behind the map indices (VIP rows,
//! backend slots) of a running instance, so `xlb stats` and `xlb flow` can
//! label what they read from the pinned maps.
use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Names of a running instance's map indices.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceState {
    /// VIP row → VIP name.
    pub vips: BTreeMap<u32, String>,
    /// Backend slot → backend address.
    pub backends: BTreeMap<u32, IpAddr>,
    /// The config file the instance runs.
    pub config: PathBuf,
    /// VIP name → digest of its live Maglev table (equal on every node
    /// whose backend set agrees).
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
}

/// Where an instance's state file lives.
pub fn path(instance: &str) -> PathBuf {
    PathBuf::from("/run/xlb").join(format!("{instance}.json"))
}

impl InstanceState {
    /// Writes atomically (temp file + rename), so readers never see half.
    pub fn write(&self, instance: &str) -> std::io::Result<()> {
        let p = path(instance);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, p)
    }

    /// Reads a running instance's state, if it has one.
    pub fn read(instance: &str) -> Option<InstanceState> {
        let bytes = std::fs::read(path(instance)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Removes the state file (at shutdown).
    pub fn remove(instance: &str) {
        let _ = std::fs::remove_file(path(instance));
    }
}
