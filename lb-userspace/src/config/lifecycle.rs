//! The `lifecycle:` and `anycast:` sections: how this node stops, hands
//! over to a successor, and tells BIRD which VIP prefixes it serves.
use std::path::PathBuf;

use serde::Deserialize;

use super::units::Dur;

/// `lifecycle:` — stop and handover timing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// On a stop, how long the node keeps forwarding after its BGP routes
    /// were withdrawn (routers move new flows away meanwhile) before the
    /// proxy drains and XDP detaches.
    pub stop_drain: Dur,
    /// How long a running process waits for a successor (`--takeover`) to
    /// be ready before it takes the instance back.
    pub takeover_timeout: Dur,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            stop_drain: Dur(std::time::Duration::from_secs(2)),
            takeover_timeout: Dur(std::time::Duration::from_secs(60)),
        }
    }
}

/// `anycast:` — BGP announcement of the VIPs through a local BIRD 2.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnycastConfig {
    /// The file xlb writes and BIRD's configuration `include`s.
    pub routes_file: PathBuf,
    /// BIRD's control socket (`birdc -s`).
    #[serde(default = "default_bird_socket")]
    pub bird_socket: PathBuf,
    /// The `birdc` program.
    #[serde(default = "default_birdc")]
    pub birdc: PathBuf,
}

fn default_bird_socket() -> PathBuf {
    PathBuf::from("/run/bird/bird.ctl")
}

fn default_birdc() -> PathBuf {
    PathBuf::from("birdc")
}
