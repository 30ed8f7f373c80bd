//! Builds the runtime parts of the proxy from their plans — an upstream's
//! pool, a route's runtime options — for the file reload (`service`) and
//! the one-at-a-time changes from a store (`dynamic`) alike.
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::{
    balance::{self, Node, Upstream, UpstreamConfig},
    options::{RouteOptions, SharedCache, SharedLimiter},
    plan::UpstreamPlan,
    plugins::{self, consumers::Consumers, PluginEnv},
    proxy::Pool,
    ratelimit::{EscalationSink, RateLimiter, Rule, RuleConfig},
    router::RouteSpec,
};
use crate::health::{HealthEvent, PassiveTracker};

/// The health-check id of node `addr` of upstream `upstream`.
pub fn health_id(upstream: &str, addr: SocketAddr) -> String {
    format!("l7/{upstream}/{addr}")
}

/// Builds the pool of `up` over its resolved `addrs`, keeping the node
/// state and connections of `previous` (the pool it replaces).
pub(super) fn build_pool(
    up: &UpstreamPlan,
    addrs: &[(SocketAddr, u32)],
    previous: Option<&Pool>,
    events: &mpsc::UnboundedSender<HealthEvent>,
) -> anyhow::Result<Pool> {
    let nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(id, &(addr, weight))| Node { id, addr, weight })
        .collect();
    let config = UpstreamConfig {
        slow_start: up.slow_start,
        ..UpstreamConfig::default()
    };
    let upstream = match previous {
        Some(p) => Upstream::with_previous(nodes, config, &p.upstream, Instant::now()),
        None => Upstream::new(nodes, config),
    }
    .with_context(|| format!("upstream {}", up.id))?;
    let upstream = Arc::new(upstream);
    let balancer = balance::build(
        upstream.clone(),
        up.algorithm,
        up.options.sticky_cookie.is_some(),
    )
    .with_context(|| format!("upstream {}", up.id))?;
    let pool = Pool::new(
        up.id.clone(),
        upstream,
        balancer,
        up.options.clone(),
        previous,
    )
    .with_context(|| format!("upstream {}", up.id))?;
    let Some(cfg) = &up.passive else {
        return Ok(pool);
    };
    let ids: Vec<String> = addrs.iter().map(|(a, _)| health_id(&up.id, *a)).collect();
    let tracker = match previous.and_then(|p| p.passive()) {
        Some(old) => PassiveTracker::with_previous(ids, *cfg, events.clone(), old),
        None => PassiveTracker::new(ids, *cfg, events.clone()),
    }
    .map_err(|e| anyhow::anyhow!("upstream {}: passive health: {e}", up.id))?;
    let tracker = Arc::new(tracker);
    // The driver readmits ejected nodes; it ends once the tracker is
    // dropped (after a reload replaced this pool and its requests ended).
    tracker.spawn_driver();
    Ok(pool.with_passive(tracker))
}

/// Gives each route its runtime options: the limiter over the shared
/// rules, the shared cache store, a plugin chain that can reach the XDP
/// deny list.
#[allow(clippy::too_many_arguments)]
pub(super) fn attach_route_options(
    mut routes: Vec<RouteSpec>,
    rules: &HashMap<String, (RuleConfig, Arc<Rule>)>,
    sink: &EscalationSink,
    cache: Option<&SharedCache>,
    consumers: &Arc<Consumers>,
    upstream_exists: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<RouteSpec>> {
    for spec in &mut routes {
        // The plan's chain cannot reach the XDP deny list (planning has no
        // datapath); a route whose ip-restriction pushes denials there gets
        // its chain again, with the sink.
        let rebuilt = match &spec.options.plugins_config {
            Some(pc)
                if pc
                    .ip_restriction
                    .as_ref()
                    .is_some_and(|r| r.xdp_deny_for.is_some()) =>
            {
                let env = PluginEnv {
                    route: &spec.id,
                    consumers: consumers.clone(),
                    upstream_exists,
                    deny_sink: Some(sink.clone()),
                };
                Some(
                    plugins::build(pc, &env)
                        .map_err(|e| anyhow::anyhow!("route {}: plugins: {e:?}", spec.id))?,
                )
            }
            _ => None,
        };
        let limiter = (!spec.options.rate_limit_rules.is_empty()).then(|| {
            let mine: Vec<Arc<Rule>> = spec
                .options
                .rate_limit_rules
                .iter()
                .filter_map(|n| rules.get(n).map(|(_, r)| r.clone()))
                .collect();
            SharedLimiter(Arc::new(
                RateLimiter::new(mine).with_escalation_sink(sink.clone()),
            ))
        });
        let cache = spec.options.cached.then(|| cache.cloned()).flatten();
        // Options are shared: copied only when this route's differ.
        if rebuilt.is_some() || limiter.is_some() || cache.is_some() {
            let options = Arc::make_mut(&mut spec.options);
            if let Some(chain) = rebuilt {
                options.plugins = chain;
            }
            if limiter.is_some() {
                options.rate_limit = limiter;
            }
            if cache.is_some() {
                options.cache = cache;
            }
        }
        spec.options = RouteOptions::dedup(spec.options.clone());
    }
    Ok(routes)
}
