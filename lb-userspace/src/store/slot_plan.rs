//! Plans the routes of one host slot against the upstreams and rate-limit
//! rules they name: for the applier (a slot changed) and for lazy routing
//! (a host was asked for) alike.
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::config::{
    l7::{RouteConfig, UpstreamYaml},
    middleware::RateLimitYaml,
    resource::{self, Context},
};
use crate::l7::router::{HostSlot, RouteSpec};

/// The upstreams and rules a node has applied, by id: what a slot's
/// routes are planned against.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub upstreams: HashMap<String, UpstreamYaml>,
    pub rules: HashMap<String, RateLimitYaml>,
}

/// The planned routes of `slot`, by listener name; `None` when nothing
/// could be planned. A route that does not plan (its upstream is missing,
/// say, after writes through another path) is left out and logged; the
/// others are kept.
pub fn plan_slot(
    slot: &HostSlot,
    mut routes: Vec<RouteConfig>,
    node: &Context,
    upstreams: &HashMap<String, UpstreamYaml>,
    rules: &HashMap<String, RateLimitYaml>,
) -> Option<Vec<(String, Vec<RouteSpec>)>> {
    let mut ctx = node.clone();
    let mut seen = HashSet::new();
    for r in &routes {
        if let Some(u) = &r.upstream {
            if seen.insert(("u", u.clone())) {
                ctx.upstreams.extend(upstreams.get(u).cloned());
            }
        }
        for n in &r.rate_limits {
            if seen.insert(("r", n.clone())) {
                ctx.rate_limits.extend(rules.get(n).cloned());
            }
        }
    }
    for _ in 0..3 {
        match resource::plan_routes(routes.clone(), &ctx) {
            Ok(plan) => {
                return Some(
                    plan.listeners
                        .into_iter()
                        .map(|l| (l.name, l.routes))
                        .collect(),
                )
            }
            Err(issues) => {
                let bad: BTreeSet<usize> = issues
                    .iter()
                    .filter_map(|i| {
                        let rest = i.path.strip_prefix("l7.routes[")?;
                        rest.split(']').next()?.parse().ok()
                    })
                    .collect();
                for i in &issues {
                    log::error!(
                        "config store: host {slot:?}: {}: {} (route left out)",
                        i.path,
                        i.message
                    );
                }
                if bad.is_empty() {
                    return None;
                }
                routes = routes
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !bad.contains(i))
                    .map(|(_, r)| r)
                    .collect();
            }
        }
    }
    None
}
