//! `health:`: node settings of health checking that are not per backend.
//!
//! `shared_verdicts` (default off): L4 backends leave the Maglev tables on
//! the verdict of a quorum of the fleet's nodes instead of this node's own
//! (see `health::fleet`). Off by default because it needs `config_store:
//! etcd`, and because it trades reaction for agreement: a backend that
//! only some nodes can reach keeps receiving their share of flows, which
//! is the right trade for an anycast fleet (a table split breaks every
//! flow ECMP moves) but not for a single node, where the local verdict is
//! the only one there is. Votes also cost one etcd write per verdict
//! change per node.
use serde::Deserialize;

use super::node::StoreKind;

/// `health:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Share L4 backends' health verdicts through etcd; a backend is out
    /// when a quorum of live nodes sees it down.
    #[serde(default)]
    pub shared_verdicts: bool,
}

/// `health.shared_verdicts` needs etcd: the votes live there.
pub(super) fn issues(config: &super::Config) -> Vec<super::Issue> {
    let kind = config.config_store.effective_kind(config.admin.is_some());
    if config.health.shared_verdicts && kind != StoreKind::Etcd {
        return vec![super::Issue {
            path: "health.shared_verdicts".into(),
            message: "nodes share verdicts through etcd: set config_store kind `etcd` (with its endpoints), or turn this off".into(),
        }];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// The fields `Config::parse` (which checks) complains about.
    fn issues(yaml: &str) -> Vec<String> {
        match Config::parse(yaml, Path::new("t.yaml")) {
            Ok(_) => Vec::new(),
            Err(crate::config::ConfigError::Invalid(l)) => vec![l.field],
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn shared_verdicts_need_etcd() {
        assert_eq!(
            issues("health: { shared_verdicts: true }\n"),
            vec!["health.shared_verdicts".to_string()]
        );
        assert_eq!(
            issues("config_store: { kind: embedded, path: /tmp/x.redb }\nhealth: { shared_verdicts: true }\n"),
            vec!["health.shared_verdicts".to_string()]
        );
        assert!(issues(
            "config_store: { kind: etcd, endpoints: [\"http://127.0.0.1:2379\"] }\nhealth: { shared_verdicts: true }\n"
        )
        .is_empty());
        assert!(issues("health: { shared_verdicts: false }\n").is_empty());
    }

    #[test]
    fn l4_vips_stay_in_the_file_with_etcd() {
        let yaml = "config_store: { kind: etcd, endpoints: [\"http://127.0.0.1:2379\"] }\n\
                    health: { shared_verdicts: true }\n\
                    l4:\n  vips:\n    - name: web\n      address: 203.0.113.10\n      port: 80\n      protocol: tcp\n      mode: dsr\n      backends: [{address: 192.0.2.11}]\n";
        assert!(issues(yaml).is_empty(), "{:?}", issues(yaml));
    }
}
