//! One resource at a time — a route, upstream, certificate, rate-limit
//! rule or L4 VIP — as the admin API and the stores see it: its kind, its
//! id, and its check. A resource is the same object as in the YAML file
//! (as JSON) and is checked by the same code as `xlb check`: the planner
//! runs over a small configuration made of the node's listeners, the
//! resource, and the resources it names, and the problems it finds about
//! the resource are reported with their field path inside the resource.
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    error::Issue,
    l4::VipConfig,
    l7::{CertificateConfig, L7Config, RouteConfig, UpstreamYaml},
    l7_plan,
    middleware::RateLimitYaml,
    model::Config,
};
use crate::l7::plan::{L7Plan, UpstreamPlan};
use crate::l7::ratelimit::RuleConfig;

/// The kinds of resources, named as in the admin API's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Routes,
    Upstreams,
    Certificates,
    RateLimits,
    Vips,
}

impl Kind {
    /// Every kind, in the order an import writes them (what is referenced
    /// before what references it).
    pub const ALL: [Kind; 5] = [
        Kind::Certificates,
        Kind::RateLimits,
        Kind::Upstreams,
        Kind::Routes,
        Kind::Vips,
    ];

    /// The kind named `s` in a path (`routes`, `rate_limits`, ...).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The path segment and key segment of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Upstreams => "upstreams",
            Kind::Certificates => "certificates",
            Kind::RateLimits => "rate_limits",
            Kind::Vips => "vips",
        }
    }

    /// One resource of this kind, in messages.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Upstreams => "upstream",
            Kind::Certificates => "certificate",
            Kind::RateLimits => "rate limit",
            Kind::Vips => "vip",
        }
    }

    /// The field that holds the id (rate-limit rules and VIPs are named).
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::RateLimits | Kind::Vips => "name",
            _ => "id",
        }
    }

    /// Where this kind sits in the file (`l7.routes`, `l4.vips`).
    pub fn file_section(self) -> &'static str {
        match self {
            Kind::Vips => "l4.vips",
            Kind::Routes => "l7.routes",
            Kind::Upstreams => "l7.upstreams",
            Kind::Certificates => "l7.certificates",
            Kind::RateLimits => "l7.rate_limits",
        }
    }
}

/// Whether `id` may be a resource id: 1-200 bytes of letters, digits and
/// `-_.:@`. Ids are key segments, so `/` is out.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
}

/// `value` with its id field set to `id` (added when missing), or an
/// issue when the body names another id.
pub fn with_id(kind: Kind, id: &str, mut value: Value) -> Result<Value, Issue> {
    let field = kind.id_field();
    let Value::Object(map) = &mut value else {
        return Err(Issue {
            path: String::new(),
            message: format!("a {} must be a JSON object", kind.as_str()),
        });
    };
    match map.get(field) {
        None => {
            map.insert(field.into(), Value::String(id.into()));
        }
        Some(Value::String(s)) if s == id => {}
        Some(other) => {
            return Err(Issue {
                path: field.into(),
                message: format!("is {other}, but the path names `{id}`"),
            })
        }
    }
    Ok(value)
}

/// Parses `value` as a `T`; the issue names the field path.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, Issue> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        Issue {
            path: if path == "." { String::new() } else { path },
            message,
        }
    })
}

/// What a resource check plans over: the node's own part of the file and
/// the resources that the checked ones name.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The node's `l7:` section without resources (listeners, limits,
    /// certificates of the file, cache).
    pub node: L7Config,
    pub upstreams: Vec<UpstreamYaml>,
    pub rate_limits: Vec<RateLimitYaml>,
}

impl Context {
    /// The node part of `config` (its `l7:` section without routes,
    /// upstreams and rate-limit rules).
    pub fn of_node(config: &Config) -> Context {
        let mut node = config.l7.clone();
        node.routes.clear();
        node.upstreams.clear();
        node.rate_limits.clear();
        Context {
            node,
            ..Context::default()
        }
    }

    fn l7(&self, routes: Vec<RouteConfig>) -> L7Config {
        let mut l7 = self.node.clone();
        l7.routes = routes;
        l7.upstreams = self.upstreams.clone();
        l7.rate_limits = self.rate_limits.clone();
        l7
    }
}

/// Keeps the issues under `prefix` (`l7.routes[0]`), with the prefix
/// removed, or, when none is, all of them as they are.
fn issues_under(issues: Vec<Issue>, prefix: &str) -> Vec<Issue> {
    let mine: Vec<Issue> = issues
        .iter()
        .filter_map(|i| {
            let rest = i.path.strip_prefix(prefix)?;
            let rest = match rest.strip_prefix('.') {
                Some(r) => r,
                None if rest.is_empty() || rest.starts_with('[') => rest,
                None => return None,
            };
            Some(Issue {
                path: rest.to_string(),
                message: i.message.clone(),
            })
        })
        .collect();
    if mine.is_empty() {
        issues
    } else {
        mine
    }
}

/// Checks route `route` together with `others` (the routes that share a
/// host with it, whose patterns it must not conflict with) in `ctx`.
pub fn check_route(
    route: &RouteConfig,
    others: &[RouteConfig],
    ctx: &Context,
) -> Result<(), Vec<Issue>> {
    // The router reports a bad host against the whole route; here the
    // field is known.
    let bad_hosts: Vec<Issue> = route
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            crate::l7::router::HostSlot::parse(h)
                .err()
                .map(|why| Issue {
                    path: format!("hosts[{i}]"),
                    message: format!("{h:?}: {why}"),
                })
        })
        .collect();
    if !bad_hosts.is_empty() {
        return Err(bad_hosts);
    }
    let mut routes = vec![route.clone()];
    routes.extend(others.iter().filter(|r| r.id != route.id).cloned());
    match l7_plan::plan(&ctx.l7(routes)) {
        Ok(_) => Ok(()),
        Err(issues) => Err(issues_under(issues, "l7.routes[0]")),
    }
}

/// Plans the routes of one host slot (with the upstreams and rules they
/// name in `ctx`): the specs per listener, in the plan's order.
pub fn plan_routes(routes: Vec<RouteConfig>, ctx: &Context) -> Result<L7Plan, Vec<Issue>> {
    l7_plan::plan(&ctx.l7(routes))
}

/// Checks and plans one upstream.
pub fn check_upstream(up: &UpstreamYaml) -> Result<UpstreamPlan, Vec<Issue>> {
    let l7 = L7Config {
        upstreams: vec![up.clone()],
        ..L7Config::default()
    };
    match l7_plan::plan(&l7) {
        Ok(mut plan) => Ok(plan.upstreams.remove(0)),
        Err(issues) => Err(issues_under(issues, "l7.upstreams[0]")),
    }
}

/// Checks and plans one rate-limit rule.
pub fn check_rate_limit(rule: &RateLimitYaml) -> Result<RuleConfig, Vec<Issue>> {
    let l7 = L7Config {
        rate_limits: vec![rule.clone()],
        ..L7Config::default()
    };
    match l7_plan::plan(&l7) {
        Ok(mut plan) => Ok(plan.rate_rules.remove(0)),
        Err(issues) => Err(issues_under(issues, "l7.rate_limits[0]")),
    }
}

/// Checks one certificate entry (the files are read when a listener
/// loads it).
pub fn check_certificate(cert: &CertificateConfig) -> Result<(), Vec<Issue>> {
    let l7 = L7Config {
        certificates: vec![cert.clone()],
        ..L7Config::default()
    };
    l7_plan::plan(&l7)
        .map(|_| ())
        .map_err(|issues| issues_under(issues, "l7.certificates[0]"))
}

/// Checks one L4 VIP as `xlb check` checks the `l4:` section.
pub fn check_vip(vip: &VipConfig) -> Result<(), Vec<Issue>> {
    let mut config: Config = parse(&serde_json::json!({})).map_err(|i| vec![i])?;
    config.l4.vips = vec![vip.clone()];
    let issues = config.issues();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues_under(issues, "l4.vips[0]"))
    }
}

/// Parses and checks `value` as a resource of `kind` on its own (routes
/// need their context: [`check_route`]); returns the parsed object's
/// references: the upstream and rate-limit rules a route names.
pub fn check_alone(kind: Kind, value: &Value) -> Result<(), Vec<Issue>> {
    match kind {
        Kind::Routes => parse::<RouteConfig>(value).map(|_| ()).map_err(|i| vec![i]),
        Kind::Upstreams => check_upstream(&parse(value).map_err(|i| vec![i])?).map(|_| ()),
        Kind::RateLimits => check_rate_limit(&parse(value).map_err(|i| vec![i])?).map(|_| ()),
        Kind::Certificates => check_certificate(&parse(value).map_err(|i| vec![i])?),
        Kind::Vips => check_vip(&parse(value).map_err(|i| vec![i])?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_route_field_is_named_inside_the_route() {
        let r: RouteConfig =
            parse(&json!({"id": "r", "hosts": ["a..b"], "upstream": "u"})).unwrap();
        let ctx = Context {
            upstreams: vec![
                parse(&json!({"id": "u", "nodes": [{"address": "127.0.0.1:1"}]})).unwrap(),
            ],
            ..Context::default()
        };
        let issues = check_route(&r, &[], &ctx).unwrap_err();
        assert_eq!(issues[0].path, "hosts[0]", "{issues:?}");
        assert!(issues[0].message.contains("a..b"), "{issues:?}");
    }

    #[test]
    fn a_route_naming_a_missing_upstream_is_refused() {
        let r: RouteConfig =
            parse(&json!({"id": "r", "hosts": ["a.test"], "upstream": "nope"})).unwrap();
        let issues = check_route(&r, &[], &Context::default()).unwrap_err();
        assert_eq!(issues[0].path, "upstream", "{issues:?}");
    }

    #[test]
    fn a_type_error_names_its_path() {
        let e = parse::<RouteConfig>(&json!({"id": "r", "hosts": "a.test"})).unwrap_err();
        assert_eq!(e.path, "hosts");
        let e = parse::<UpstreamYaml>(
            &json!({"id": "u", "nodes": [{"address": "127.0.0.1:1"}], "bogus": 1}),
        )
        .unwrap_err();
        assert!(e.message.contains("bogus"), "{e:?}");
    }

    #[test]
    fn an_id_in_the_body_must_match_the_path() {
        assert!(with_id(Kind::Routes, "a", json!({"id": "b"})).is_err());
        assert_eq!(
            with_id(Kind::RateLimits, "a", json!({})).unwrap(),
            json!({"name": "a"})
        );
    }
}
