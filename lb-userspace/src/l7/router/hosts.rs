//! Routes kept per host, each host's table swapped on its own
//! ([`HostTables`]): the router behind the admin API and the stores, where
//! a change to one route must cost what that route's hosts hold, not what
//! the whole configuration holds.
//!
//! A request consults at most three tables — its exact host, the one
//! wildcard that can match it, and the any-host table — and takes the best
//! of their answers by the module's precedence rules: priority first, then
//! host specificity (exact, wildcard, any). Inside one table the usual
//! rules decide; ties between routes of one table fall to the order the
//! caller built it in (the store keeps routes of a host sorted by id).
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use arc_swap::ArcSwapOption;

use super::{
    host::{parse_host_pattern, wildcard_suffix, HostKey},
    request::RequestInfo,
    spec::Match,
    table::{Resolver, RouteTable},
};

/// Which table of a [`HostTables`] a route host belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostSlot {
    /// One name (normalised: lowercase, no trailing dot).
    Exact(String),
    /// `*.suffix`: the suffix.
    Wildcard(String),
    /// No host, or `*`.
    Any,
}

impl HostSlot {
    /// The slot of a route's `hosts` entry, normalised as the router does,
    /// or why the host is invalid.
    pub fn parse(raw: &str) -> Result<HostSlot, &'static str> {
        Ok(match parse_host_pattern(raw)? {
            HostKey::Exact(h) => HostSlot::Exact(h.into()),
            HostKey::Wildcard(s) => HostSlot::Wildcard(s.into()),
            HostKey::Any => HostSlot::Any,
        })
    }

    /// The slots of a route with these `hosts` (none: any host).
    pub fn of_route(hosts: &[String]) -> Result<Vec<HostSlot>, &'static str> {
        if hosts.is_empty() {
            return Ok(vec![HostSlot::Any]);
        }
        let mut out = Vec::with_capacity(hosts.len());
        for h in hosts {
            let s = HostSlot::parse(h)?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// One route table per host slot; each replaced on its own.
///
/// Lookups take a read lock on a hash map for the moment of one `get`
/// (the table itself is an `Arc` taken out of it), so a writer swapping
/// one host's table never waits for a request in progress and never makes
/// one see half of a table.
#[derive(Debug, Default)]
pub struct HostTables {
    exact: RwLock<HashMap<Box<str>, Arc<RouteTable>>>,
    wildcard: RwLock<HashMap<Box<str>, Arc<RouteTable>>>,
    any: ArcSwapOption<RouteTable>,
}

impl HostTables {
    /// No routes.
    pub fn new() -> HostTables {
        HostTables::default()
    }

    /// Replaces the table of `slot` (`None` or an empty table: the slot
    /// has no routes any more). Every route of `table` has the slot among
    /// its hosts ([`HostSlot::of_route`]): a lookup that reaches the slot
    /// by the request's host takes the host as matched.
    pub fn set(&self, slot: &HostSlot, table: Option<RouteTable>) {
        self.set_shared(slot, table.map(Arc::new));
    }

    /// [`HostTables::set`] with a table that may be shared (by the
    /// listeners that serve the same routes).
    pub fn set_shared(&self, slot: &HostSlot, table: Option<Arc<RouteTable>>) {
        let table = table.filter(|t| !t.is_empty());
        let (map, key) = match slot {
            HostSlot::Any => {
                self.any.store(table);
                return;
            }
            HostSlot::Exact(h) => (&self.exact, h),
            HostSlot::Wildcard(s) => (&self.wildcard, s),
        };
        // A poisoned lock only means a writer panicked between two whole
        // map operations; the map itself is consistent.
        let mut map = map.write().unwrap_or_else(|e| e.into_inner());
        match table {
            Some(t) => {
                map.insert(key.as_str().into(), t);
            }
            None => {
                map.remove(key.as_str());
            }
        }
    }

    /// How many host slots hold routes.
    pub fn slots(&self) -> usize {
        let read = |m: &RwLock<HashMap<Box<str>, Arc<RouteTable>>>| {
            m.read().unwrap_or_else(|e| e.into_inner()).len()
        };
        read(&self.exact) + read(&self.wildcard) + usize::from(self.any.load().is_some())
    }

    fn get(map: &RwLock<HashMap<Box<str>, Arc<RouteTable>>>, key: &str) -> Option<Arc<RouteTable>> {
        map.read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

impl HostTables {
    /// The any-host table, if any route has no host.
    pub fn any(&self) -> Option<Arc<RouteTable>> {
        self.any.load_full()
    }
}

impl Resolver for HostTables {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let host = req.host();
        let exact = host.and_then(|h| Self::get(&self.exact, h));
        let wild = host
            .and_then(wildcard_suffix)
            .and_then(|s| Self::get(&self.wildcard, s));
        best_of(
            req,
            exact.as_deref(),
            wild.as_deref(),
            self.any.load().as_deref(),
        )
    }
}

/// The best answer of a request's three tables — its exact host's, the
/// wildcard's that can match it, the any-host one (each holding only
/// routes with that host entry, as [`HostTables`] does) — by the first two
/// precedence rules (priority, then host rank); the rest were decided
/// inside each table.
pub fn best_of(
    req: &RequestInfo<'_>,
    exact: Option<&RouteTable>,
    wild: Option<&RouteTable>,
    any: Option<&RouteTable>,
) -> Option<Match> {
    let mut best: Option<((i32, u8), Match)> = None;
    for (rank, table) in [(2u8, exact), (1, wild), (0, any)] {
        // The exact and wildcard tables were found by the request's host.
        let found = match rank {
            0 => table.and_then(|t| t.resolve(req)),
            _ => table.and_then(|t| t.resolve_in_host_slot(req)),
        };
        let Some(m) = found else {
            continue;
        };
        let key = (m.route.priority(), rank);
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, m));
        }
    }
    best.map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::router::RouteSpec;

    fn spec(id: &str, hosts: &[&str], priority: i32) -> RouteSpec {
        let mut s = RouteSpec::new(id, "up");
        s.hosts = hosts.iter().map(|h| h.to_string()).collect();
        s.priority = priority;
        s
    }

    fn resolve(t: &HostTables, host: &str) -> Option<String> {
        let req = http::Request::get("/x")
            .header("host", host)
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let info = RequestInfo::from_parts(&parts).unwrap();
        t.resolve(&info).map(|m| m.route.id().to_string())
    }

    fn put(t: &HostTables, slot: HostSlot, specs: Vec<RouteSpec>) {
        t.set(&slot, Some(RouteTable::build(specs).unwrap()));
    }

    #[test]
    fn exact_beats_wildcard_beats_any_unless_priority_says_otherwise() {
        let t = HostTables::new();
        put(&t, HostSlot::Any, vec![spec("any", &[], 0)]);
        put(
            &t,
            HostSlot::Wildcard("example.com".into()),
            vec![spec("wild", &["*.example.com"], 0)],
        );
        put(
            &t,
            HostSlot::Exact("a.example.com".into()),
            vec![spec("exact", &["a.example.com"], 0)],
        );
        assert_eq!(resolve(&t, "a.example.com").as_deref(), Some("exact"));
        assert_eq!(resolve(&t, "b.example.com").as_deref(), Some("wild"));
        assert_eq!(resolve(&t, "other.org").as_deref(), Some("any"));
        put(&t, HostSlot::Any, vec![spec("any", &[], 5)]);
        assert_eq!(resolve(&t, "a.example.com").as_deref(), Some("any"));
    }

    #[test]
    fn a_slot_set_to_none_stops_matching_and_others_stay() {
        let t = HostTables::new();
        put(
            &t,
            HostSlot::Exact("a.test".into()),
            vec![spec("a", &["a.test"], 0)],
        );
        put(
            &t,
            HostSlot::Exact("b.test".into()),
            vec![spec("b", &["b.test"], 0)],
        );
        t.set(&HostSlot::Exact("a.test".into()), None);
        assert_eq!(resolve(&t, "a.test"), None);
        assert_eq!(resolve(&t, "b.test").as_deref(), Some("b"));
        assert_eq!(t.slots(), 1);
    }

    #[test]
    fn slots_are_normalised_like_the_router() {
        assert_eq!(
            HostSlot::of_route(&["A.Test.".into(), "a.test".into(), "*.x.org".into()]).unwrap(),
            vec![
                HostSlot::Exact("a.test".into()),
                HostSlot::Wildcard("x.org".into())
            ]
        );
        assert_eq!(HostSlot::of_route(&[]).unwrap(), vec![HostSlot::Any]);
        assert!(HostSlot::parse("").is_err());
    }
}
