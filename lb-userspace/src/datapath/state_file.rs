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
    /// Shared health verdicts (`health.shared_verdicts`), when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_verdicts: Option<SharedVerdictsState>,
}

/// This node's and the fleet's verdicts on the actively checked L4
/// backends, so an operator can see where a node disagrees with its fleet.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedVerdictsState {
    /// This node's id in the fleet (its key under `<prefix>/nodes/`).
    pub node: String,
    /// Whether the fleet's decision is current (etcd answers).
    pub connected: bool,
    /// Live nodes registered at the last read.
    pub live_nodes: usize,
    /// VIP name → backend → verdicts.
    pub backends: BTreeMap<String, BTreeMap<IpAddr, BackendVerdict>>,
}

/// One backend's verdicts.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendVerdict {
    /// This node's own check: `up` | `down`.
    pub local: String,
    /// The fleet's (last) decision: `up` | `down`.
    pub fleet: String,
    /// Live nodes voting `down`, and voting at all.
    pub down_votes: usize,
    pub voters: usize,
    /// Whether the backend is in this node's table by these verdicts.
    pub in_table: bool,
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
