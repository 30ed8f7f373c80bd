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
}
