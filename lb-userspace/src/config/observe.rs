//! The `observe:` section: where `/metrics`, `/status` and `/status.json`
//! are served, and the JSON access log.
//!
//! Without an `observe:` section nothing is served and nothing is logged:
//! several instances on one host (tests, canaries) must not fight over a
//! default port. With the section, `listen` defaults to
//! `127.0.0.1:9190`, loopback only, because the status page names
//! backends and denied sources.
use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::Issue;

/// The default observe listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9190";

/// `observe:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObserveConfig {
    /// Where the metrics and status endpoints listen.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The access log; absent: none.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("a valid default")
}

/// `observe.access_log:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (appended to, reopened on SIGUSR1) or `-` for stdout.
    pub path: PathBuf,
    /// Lines waiting for the writer; when full, lines are dropped and
    /// counted (`xlb_access_log_dropped_total`), never waited for.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The share of requests logged, 0 < sample <= 1 (errors, status >= 500
    /// and xlb's own error answers, are always logged).
    #[serde(default = "default_sample")]
    pub sample: f64,
}

fn default_queue() -> usize {
    65_536
}

fn default_sample() -> f64 {
    1.0
}

impl ObserveConfig {
    /// Problems the schema cannot express, with their field paths.
    pub fn issues(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        if let Some(log) = &self.access_log {
            if log.path.as_os_str().is_empty() {
                out.push(Issue {
                    path: "observe.access_log.path".into(),
                    message: "must name a file or `-` (stdout)".into(),
                });
            }
            if log.queue == 0 || log.queue > 16 * 1024 * 1024 {
                out.push(Issue {
                    path: "observe.access_log.queue".into(),
                    message: format!("{} is not within 1..=16777216 lines", log.queue),
                });
            }
            if !(log.sample > 0.0 && log.sample <= 1.0) {
                out.push(Issue {
                    path: "observe.access_log.sample".into(),
                    message: format!("{} is not within (0, 1]", log.sample),
                });
            }
        }
        out
    }
}
