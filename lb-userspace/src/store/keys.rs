//! The key layout: every write O(1) keys, every host lookup one range.
//!
//! ```text
//! <prefix>/<kind>/<id>                       the resource (JSON)
//! <prefix>/idx/host/<host>/<route>           a route on an exact host (value: the route)
//! <prefix>/idx/wild/<suffix>/<route>         a route on *.<suffix> (value: the route)
//! <prefix>/idx/any/<route>                   a route on any host (value: the route)
//! <prefix>/refs/upstreams/<upstream>/<route> a route naming an upstream
//! <prefix>/refs/rate_limits/<rule>/<route>   a route naming a rule
//! <prefix>/nodes/<node>                      a live node's applied revision (etcd, leased)
//! <prefix>/health/<vip>/<backend>/<node>     a node's verdict on an L4 backend, `up` | `down`
//!                                            (etcd, leased with the node's key)
//! ```
//!
//! Index and reference keys are written in the transaction that writes the
//! route, so they are never out of step with it. Ids and hosts hold no
//! `/` (ids are checked by `config::resource::valid_id`, hosts by the
//! router), so a key splits unambiguously.
use crate::config::resource::Kind;
use crate::l7::router::HostSlot;

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOf {
    Resource(Kind, String),
    /// Index, reference or node keys: derived data.
    Other,
}

impl Layout {
    /// Keys under `prefix` (a trailing `/` is dropped).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Every key of this configuration.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The key of a resource.
    pub fn resource(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{id}", self.prefix, kind.as_str())
    }

    /// The prefix of every resource of `kind`.
    pub fn kind(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.as_str())
    }

    /// The prefix of the index keys of one host slot.
    pub fn slot(&self, slot: &HostSlot) -> String {
        match slot {
            HostSlot::Exact(h) => format!("{}/idx/host/{h}/", self.prefix),
            HostSlot::Wildcard(s) => format!("{}/idx/wild/{s}/", self.prefix),
            HostSlot::Any => format!("{}/idx/any/", self.prefix),
        }
    }

    /// The index key of `route` in `slot`.
    pub fn slot_entry(&self, slot: &HostSlot, route: &str) -> String {
        format!("{}{route}", self.slot(slot))
    }

    /// The prefix of the routes referencing `target` of `kind`.
    pub fn refs(&self, kind: Kind, target: &str) -> String {
        format!("{}/refs/{}/{target}/", self.prefix, kind.as_str())
    }

    /// The key saying that `route` references `target` of `kind`.
    pub fn ref_entry(&self, kind: Kind, target: &str, route: &str) -> String {
        format!("{}{route}", self.refs(kind, target))
    }

    /// The prefix of the nodes' leased announcements.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// The prefix of every node's verdicts on L4 backends.
    pub fn verdicts(&self) -> String {
        format!("{}/health/", self.prefix)
    }

    /// The key of `node`'s verdict on backend `backend` of VIP `vip`.
    pub fn verdict(&self, vip: &str, backend: std::net::IpAddr, node: &str) -> String {
        format!("{}{vip}/{backend}/{node}", self.verdicts())
    }

    /// `(vip, backend, node)` of a verdict key. Split from the right: node
    /// ids and addresses hold no `/`, a VIP name might.
    pub fn parse_verdict(&self, key: &str) -> Option<(String, std::net::IpAddr, String)> {
        let rest = key.strip_prefix(&self.verdicts())?;
        let (rest, node) = rest.rsplit_once('/')?;
        let (vip, backend) = rest.rsplit_once('/')?;
        if vip.is_empty() || node.is_empty() {
            return None;
        }
        Some((vip.to_string(), backend.parse().ok()?, node.to_string()))
    }

    /// The node id of a node key.
    pub fn parse_node<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.nodes())
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// What `key` is.
    pub fn parse(&self, key: &str) -> KeyOf {
        let Some(rest) = key
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return KeyOf::Other;
        };
        match rest.split_once('/') {
            Some((kind, id)) if !id.contains('/') => match Kind::parse(kind) {
                Some(k) => KeyOf::Resource(k, id.to_string()),
                None => KeyOf::Other,
            },
            _ => KeyOf::Other,
        }
    }

    /// The host slot of an index key (`None` for any other key).
    pub fn parse_slot(&self, key: &str) -> Option<HostSlot> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("/idx/")?;
        let (kind, rest) = rest.split_once('/')?;
        match kind {
            "any" => Some(HostSlot::Any),
            "host" => Some(HostSlot::Exact(rest.split_once('/')?.0.to_string())),
            "wild" => Some(HostSlot::Wildcard(rest.split_once('/')?.0.to_string())),
            _ => None,
        }
    }

    /// The last segment of an index or reference key: the route id.
    pub fn last_segment(key: &str) -> &str {
        key.rsplit('/').next().unwrap_or(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let l = Layout::new("/xlb/");
        assert_eq!(l.resource(Kind::Routes, "r1"), "/xlb/routes/r1");
        assert_eq!(
            l.parse("/xlb/routes/r1"),
            KeyOf::Resource(Kind::Routes, "r1".into())
        );
        assert_eq!(l.parse("/xlb/idx/host/a.test/r1"), KeyOf::Other);
        assert_eq!(l.parse("/other/routes/r1"), KeyOf::Other);
        assert_eq!(
            l.slot_entry(&HostSlot::Wildcard("example.com".into()), "r"),
            "/xlb/idx/wild/example.com/r"
        );
        assert_eq!(Layout::last_segment("/xlb/refs/upstreams/u/r9"), "r9");
        assert_eq!(
            l.parse_slot("/xlb/idx/host/a.test/r1"),
            Some(HostSlot::Exact("a.test".into()))
        );
        assert_eq!(
            l.parse_slot("/xlb/idx/wild/x.org/r1"),
            Some(HostSlot::Wildcard("x.org".into()))
        );
        assert_eq!(l.parse_slot("/xlb/idx/any/r1"), Some(HostSlot::Any));
        assert_eq!(l.parse_slot("/xlb/routes/r1"), None);
        assert_eq!(l.parse_slot("/xlb/refs/upstreams/u/r1"), None);
    }

    #[test]
    fn verdict_keys_parse_back() {
        let l = Layout::new("/xlb");
        let b6: std::net::IpAddr = "2001:db8::11".parse().unwrap();
        let k = l.verdict("dns/v6", b6, "edge1-00ff");
        assert_eq!(k, "/xlb/health/dns/v6/2001:db8::11/edge1-00ff");
        assert_eq!(
            l.parse_verdict(&k),
            Some(("dns/v6".into(), b6, "edge1-00ff".into()))
        );
        assert_eq!(l.parse_verdict("/xlb/health/web/not-an-ip/n"), None);
        assert_eq!(l.parse_verdict("/xlb/nodes/n"), None);
        assert_eq!(l.parse_node("/xlb/nodes/edge1-00ff"), Some("edge1-00ff"));
        // A verdict key is derived data to the resource applier.
        assert_eq!(l.parse(&k), KeyOf::Other);
    }
}
