//! Turns the `l7:` section into what the proxy runs on (route specs with
//! their options, upstream options, listener TLS settings, limits) and, on
//! the way, finds every problem the schema could not: the planner *is* the
//! validator, so what `xlb check` accepts is exactly what `xlb run` builds.
//! No file is read here (certificates are loaded when the proxy is built).
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    str::FromStr as _,
    sync::Arc,
    time::Duration,
};

use http::{HeaderName, HeaderValue, Method};

use super::{
    error::Issue,
    l7::{
        CacheYaml, HeaderEditsConfig, L7Config, PassHostConfig, ProtocolConfig, RouteConfig,
        UpstreamYaml,
    },
};
use crate::l7::plan::{CachePlan, L7Plan, ListenerPlan, NodePlan, NodeTarget, UpstreamPlan};
use crate::l7::ratelimit::RuleConfig;
use crate::l7::upgrade::AllowedUpgrades;
use crate::l7::{
    balance::Algorithm,
    options::{
        ColdStart, HashOn, HeaderEdits, PassHost, PathRewrite, RetryBudgetConfig, RetryPolicy,
        RouteOptions, Timeouts, UpstreamOptions, UpstreamProtocol, UpstreamTls,
    },
    router::{HeaderMatch, HeaderValueMatch, PathMatch, RouteSpec, RouteTable},
    server::ServerLimits,
    tls::{CertSpec, ClientAuthSpec, ListenerTls, TlsVersion},
};
use crate::l7::{
    plugin::PluginChain,
    plugins::{self, consumers::Consumers, PluginEnv, PluginsConfig},
};
use crate::net::Prefix;

/// Largest node weight (as for L4 backends).
const MAX_WEIGHT: u32 = 1_000_000;

/// Largest `l7.cache.max_object_bytes` (an entry's weight is a `u32`).
const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Plans `l7`, or returns every problem found (paths start with `l7.`).
pub fn plan(l7: &L7Config) -> Result<L7Plan, Vec<Issue>> {
    let mut p = Planner::default();
    let plan = p.plan(l7);
    if p.issues.is_empty() {
        Ok(plan)
    } else {
        Err(p.issues)
    }
}

#[derive(Default)]
struct Planner {
    issues: Vec<Issue>,
}

/// The CPUs this process may use (the default worker count), read once:
/// `available_parallelism` reads cgroup files and asks for the affinity
/// mask on every call (some 30 syscalls), and a store-fed node plans on
/// every route change.
fn usable_cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Planner {
    fn issue(&mut self, path: String, message: impl Into<String>) {
        self.issues.push(Issue {
            path,
            message: message.into(),
        });
    }

    fn plan(&mut self, l7: &L7Config) -> L7Plan {
        let max_workers = lb_common::reuseport::MAX_WORKERS as usize;
        let workers = match l7.workers {
            Some(0) => {
                self.issue("l7.workers".into(), "must be at least 1");
                1
            }
            Some(n) if n > max_workers => {
                self.issue("l7.workers".into(), format!("at most {max_workers}"));
                1
            }
            Some(n) => n,
            None => usable_cpus().min(max_workers),
        };
        let limits = self.limits(l7);
        let rate_rules = self.rate_rules(l7);
        let rule_names: HashSet<&str> = rate_rules.iter().map(|r| r.name.as_str()).collect();
        let upstreams = self.upstreams(l7);
        let upstream_ids: HashSet<&str> = l7.upstreams.iter().map(|u| u.id.as_str()).collect();
        let consumers = self.consumers(l7);
        let global_plugins = l7.plugins.clone().unwrap_or_default();
        self.check_plugins(
            "l7.plugins",
            "*",
            &global_plugins,
            &consumers,
            &upstream_ids,
        );
        let default_body = match l7.limits.max_body_bytes.0 {
            0 => None,
            n => Some(n),
        };
        let routes: Vec<(Vec<String>, RouteSpec)> = l7
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut spec = self.route(i, r, &upstream_ids, default_body);
                self.route_plugins(i, r, &global_plugins, &consumers, &upstream_ids, &mut spec);
                for (j, n) in r.rate_limits.iter().enumerate() {
                    if !rule_names.contains(n.as_str()) {
                        self.issue(
                            format!("l7.routes[{i}].rate_limits[{j}]"),
                            format!("no rule in l7.rate_limits is named `{n}`"),
                        );
                    }
                }
                if r.cache && r.redirect_https.is_some() {
                    self.issue(
                        format!("l7.routes[{i}].cache"),
                        "a route that only redirects has nothing to cache",
                    );
                }
                (r.listeners.clone(), spec)
            })
            .collect();
        // Every route in one table, so that each problem is reported once
        // with the route's own index (listeners' tables are subsets).
        if let Err(errors) = RouteTable::build_all(routes.iter().map(|(_, s)| s.clone()).collect())
        {
            for e in errors {
                self.issue(format!("l7.routes[{}]", e.index()), e.to_string());
            }
        }
        let listeners = self.listeners(l7, &routes);
        let cache = match &l7.cache {
            Some(c) => Some(self.cache(c)),
            None if l7.routes.iter().any(|r| r.cache) => Some(self.cache(&CacheYaml::default())),
            None => None,
        };
        let trusted_proxies = self.prefixes("l7.trusted_proxies", &l7.trusted_proxies);
        L7Plan {
            workers,
            rate_rules,
            limits,
            listeners,
            upstreams,
            cache,
            trusted_proxies,
            consumers,
        }
    }

    /// `l7.consumers`, indexed.
    fn consumers(&mut self, l7: &L7Config) -> Arc<Consumers> {
        match Consumers::build(&l7.consumers) {
            Ok(c) => Arc::new(c),
            Err(errors) => {
                for (field, msg) in errors {
                    self.issue(format!("l7.consumers{field}"), msg);
                }
                Arc::new(Consumers::default())
            }
        }
    }

    /// Builds the plugins of `c` alone, to report their problems at `path`;
    /// the chain, when they are fine.
    fn check_plugins(
        &mut self,
        path: &str,
        route: &str,
        c: &PluginsConfig,
        consumers: &Arc<Consumers>,
        upstreams: &HashSet<&str>,
    ) -> Option<PluginChain> {
        let env = PluginEnv {
            route,
            consumers: consumers.clone(),
            upstream_exists: &|u| upstreams.contains(u),
            deny_sink: None,
        };
        match plugins::build(c, &env) {
            Ok(chain) => Some(chain),
            Err(errors) => {
                for (field, msg) in errors {
                    self.issue(format!("{path}.{field}"), msg);
                }
                None
            }
        }
    }

    /// The route's plugins over the global ones, checked and built.
    fn route_plugins(
        &mut self,
        i: usize,
        r: &RouteConfig,
        global: &PluginsConfig,
        consumers: &Arc<Consumers>,
        upstreams: &HashSet<&str>,
        spec: &mut RouteSpec,
    ) {
        let own = r.plugins.clone().unwrap_or_default();
        let path = format!("l7.routes[{i}].plugins");
        if self
            .check_plugins(&path, &r.id, &own, consumers, upstreams)
            .is_none()
        {
            return;
        }
        let effective = own.over(global);
        if effective.is_empty() {
            return;
        }
        // Each part was checked on its own: the merge only fails where the
        // global list already reported.
        if let Some(chain) = self.check_plugins(&path, &r.id, &effective, consumers, upstreams) {
            let options = Arc::make_mut(&mut spec.options);
            options.plugins = chain;
            options.plugins_config = Some(Arc::new(effective));
        }
    }

    /// Source prefixes (`ADDR/LEN` or `ADDR`) of the list at `path`.
    fn prefixes(&mut self, path: &str, list: &[String]) -> Vec<Prefix> {
        let mut out = Vec::new();
        for (j, p) in list.iter().enumerate() {
            match p.trim().parse::<Prefix>() {
                Ok(p) => out.push(p),
                Err(e) => self.issue(format!("{path}[{j}]"), e.to_string()),
            }
        }
        out
    }

    fn cache(&mut self, c: &CacheYaml) -> CachePlan {
        if c.max_bytes.0 < 1 << 20 {
            self.issue("l7.cache.max_bytes".into(), "must be at least 1MiB");
        }
        if c.max_object_bytes.0 == 0 {
            self.issue("l7.cache.max_object_bytes".into(), "must not be zero");
        } else if c.max_object_bytes.0 > MAX_OBJECT_BYTES {
            self.issue("l7.cache.max_object_bytes".into(), "at most 1GiB");
        } else if c.max_object_bytes.0 > c.max_bytes.0 {
            self.issue(
                "l7.cache.max_object_bytes".into(),
                "larger than max_bytes: such an object could never be stored",
            );
        }
        let purge_from = self.prefixes("l7.cache.purge_from", &c.purge_from);
        let targeted_field = c.targeted_field.as_deref().and_then(|f| {
            let path = "l7.cache.targeted_field".to_string();
            match http::HeaderName::from_bytes(f.trim().as_bytes()) {
                Err(_) => {
                    self.issue(path, format!("{f:?} is not a header field name"));
                    None
                }
                // Fields with meanings of their own cannot be xlb's.
                Ok(n) if n == http::header::CACHE_CONTROL
                    || n == crate::l7::cache::targeted::CDN_CACHE_CONTROL
                    || n == http::header::EXPIRES =>
                {
                    self.issue(path, format!("{n} has its own meaning; name a field of xlb's own such as Xlb-Cache-Control"));
                    None
                }
                Ok(n) => Some(n),
            }
        });
        CachePlan {
            max_bytes: c.max_bytes.0,
            max_object_bytes: c.max_object_bytes.0,
            purge_from,
            targeted_field,
        }
    }

    fn rate_rules(&mut self, l7: &L7Config) -> Vec<RuleConfig> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, r) in l7.rate_limits.iter().enumerate() {
            let path = format!("l7.rate_limits[{i}]");
            if r.name.is_empty() {
                self.issue(format!("{path}.name"), "must not be empty");
            } else if let Some(first) = names.insert(&r.name, i) {
                self.issue(
                    format!("{path}.name"),
                    format!(
                        "`{}` is already the name of l7.rate_limits[{first}]",
                        r.name
                    ),
                );
            }
            match r.to_rule() {
                Ok(rule) => out.push(rule),
                Err((field, msg)) => {
                    let at = if field.is_empty() {
                        path
                    } else {
                        format!("{path}.{field}")
                    };
                    self.issue(at, msg);
                }
            }
        }
        out
    }

    fn limits(&mut self, l7: &L7Config) -> ServerLimits {
        let l = &l7.limits;
        for (field, zero) in [
            ("header_read_timeout", l.header_read_timeout.0.is_zero()),
            ("max_header_bytes", l.max_header_bytes.0 < 1024),
            ("max_headers", l.max_headers == 0),
            ("idle_timeout", l.idle_timeout.0.is_zero()),
            ("max_connections", l.max_connections == 0),
            ("max_concurrent_streams", l.max_concurrent_streams == 0),
            ("tls_handshake_timeout", l.tls_handshake_timeout.0.is_zero()),
        ] {
            if zero {
                let what = if field == "max_header_bytes" {
                    "must be at least 1KiB"
                } else {
                    "must not be zero"
                };
                self.issue(format!("l7.limits.{field}"), what);
            }
        }
        ServerLimits {
            header_read_timeout: l.header_read_timeout.0,
            max_header_bytes: usize::try_from(l.max_header_bytes.0).unwrap_or(usize::MAX),
            max_concurrent_streams: l.max_concurrent_streams,
            max_pending_reset_streams: l.max_pending_reset_streams,
            tls_handshake_timeout: l.tls_handshake_timeout.0,
            drain_timeout: l.drain_timeout.0,
            max_headers: l.max_headers,
            idle_timeout: l.idle_timeout.0,
            max_connections: l.max_connections,
            max_connections_per_source: l.max_connections_per_source,
            own_http1: l.own_http1,
            ..ServerLimits::default()
        }
    }

    fn listeners(
        &mut self,
        l7: &L7Config,
        routes: &[(Vec<String>, RouteSpec)],
    ) -> Vec<ListenerPlan> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        let cert_ids: HashMap<&str, usize> = l7
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        self.certificates(l7);
        let mut out = Vec::new();
        for (i, l) in l7.listeners.iter().enumerate() {
            let path = format!("l7.listeners[{i}]");
            if l.name.is_empty() {
                self.issue(format!("{path}.name"), "must not be empty");
            } else if let Some(first) = names.insert(&l.name, i) {
                self.issue(
                    format!("{path}.name"),
                    format!("`{}` is already the name of l7.listeners[{first}]", l.name),
                );
            }
            let addr = match l.address.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.issue(
                        format!("{path}.address"),
                        format!(
                            "`{}` is not ip:port (e.g. 0.0.0.0:443 or [::]:443)",
                            l.address
                        ),
                    );
                    continue;
                }
            };
            if let Some(first) = addrs.insert(addr, i) {
                self.issue(
                    format!("{path}.address"),
                    format!("{addr} is already the address of l7.listeners[{first}]"),
                );
            }
            let tls = l.tls.as_ref().map(|t| {
                let ids: Vec<usize> = if t.certificates.is_empty() {
                    (0..l7.certificates.len()).collect()
                } else {
                    t.certificates
                        .iter()
                        .enumerate()
                        .filter_map(|(j, id)| {
                            let found = cert_ids.get(id.as_str()).copied();
                            if found.is_none() {
                                self.issue(
                                    format!("{path}.tls.certificates[{j}]"),
                                    format!("no certificate has id `{id}`"),
                                );
                            }
                            found
                        })
                        .collect()
                };
                if ids.is_empty() && t.certificates.is_empty() {
                    self.issue(
                        format!("{path}.tls"),
                        "a TLS listener needs a certificate, and l7.certificates is empty",
                    );
                }
                let mut lt = ListenerTls::new(
                    ids.iter()
                        .map(|&c| {
                            let c = &l7.certificates[c];
                            CertSpec {
                                names: c.names.clone(),
                                cert_path: c.cert.clone(),
                                key_path: c.key.clone(),
                                default: c.default,
                            }
                        })
                        .collect(),
                );
                if let Some(alpn) = &t.alpn {
                    for (j, a) in alpn.iter().enumerate() {
                        if !matches!(a.as_str(), "h2" | "http/1.1") {
                            self.issue(
                                format!("{path}.tls.alpn[{j}]"),
                                format!("`{a}`: xlb speaks `h2` and `http/1.1`"),
                            );
                        }
                    }
                    lt.alpn = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
                }
                match t.min_version.as_deref() {
                    None | Some("1.2") => {}
                    Some("1.3") => lt.min_version = TlsVersion::Tls13,
                    Some(v) => self.issue(
                        format!("{path}.tls.min_version"),
                        format!("`{v}`: must be \"1.2\" or \"1.3\""),
                    ),
                }
                if let Some(ca) = &t.client_ca {
                    lt.client_auth = Some(ClientAuthSpec {
                        ca_path: ca.clone(),
                        required: t.client_cert_required.unwrap_or(true),
                    });
                } else if t.client_cert_required.is_some() {
                    self.issue(
                        format!("{path}.tls.client_cert_required"),
                        "needs client_ca (the CAs client certificates are checked against)",
                    );
                }
                lt
            });
            if l.redirect_https == Some(0) {
                self.issue(format!("{path}.redirect_https"), "port 0 is not a port");
            }
            let mine: Vec<RouteSpec> = match l.redirect_https {
                // A redirecting listener answers everything with the
                // redirect, whatever the routes say.
                Some(port) => {
                    let mut spec = RouteSpec::new(format!("{}:redirect-https", l.name), "");
                    spec.options = Arc::new(RouteOptions {
                        redirect_https: Some(port),
                        ..RouteOptions::default()
                    });
                    vec![spec]
                }
                None => routes
                    .iter()
                    .filter(|(ls, _)| ls.is_empty() || ls.iter().any(|n| n == &l.name))
                    .map(|(_, s)| s.clone())
                    .collect(),
            };
            out.push(ListenerPlan {
                name: l.name.clone(),
                addr,
                tls,
                routes: mine,
            });
        }
        for (i, r) in l7.routes.iter().enumerate() {
            for (j, n) in r.listeners.iter().enumerate() {
                if !names.contains_key(n.as_str()) {
                    self.issue(
                        format!("l7.routes[{i}].listeners[{j}]"),
                        format!("no listener is named `{n}`"),
                    );
                }
            }
        }
        out
    }

    fn certificates(&mut self, l7: &L7Config) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut defaults = Vec::new();
        for (i, c) in l7.certificates.iter().enumerate() {
            let path = format!("l7.certificates[{i}]");
            if c.id.is_empty() {
                self.issue(format!("{path}.id"), "must not be empty");
            } else if let Some(first) = ids.insert(&c.id, i) {
                self.issue(
                    format!("{path}.id"),
                    format!("`{}` is already the id of l7.certificates[{first}]", c.id),
                );
            }
            if c.names.is_empty() && !c.default {
                self.issue(
                    format!("{path}.names"),
                    "a certificate with no names must be the default (default: true)",
                );
            }
            if c.default {
                defaults.push(i);
            }
        }
        if defaults.len() > 1 {
            self.issue(
                format!("l7.certificates[{}].default", defaults[1]),
                format!("l7.certificates[{}] is already the default", defaults[0]),
            );
        }
    }

    fn route(
        &mut self,
        i: usize,
        r: &RouteConfig,
        upstreams: &HashSet<&str>,
        default_body: Option<u64>,
    ) -> RouteSpec {
        let path = format!("l7.routes[{i}]");
        let upstream = match (&r.upstream, r.redirect_https) {
            (Some(u), _) => {
                if !upstreams.contains(u.as_str()) {
                    self.issue(
                        format!("{path}.upstream"),
                        format!("no upstream has id `{u}`"),
                    );
                }
                u.clone()
            }
            (None, Some(_)) => String::new(),
            (None, None) => {
                self.issue(
                    format!("{path}.upstream"),
                    "missing: a route needs an upstream (or redirect_https)",
                );
                String::new()
            }
        };
        let mut spec = RouteSpec::new(r.id.clone(), upstream);
        spec.priority = r.priority;
        spec.hosts = r.hosts.clone();
        spec.paths = r
            .paths
            .iter()
            .map(|p| {
                if p.contains('{') {
                    PathMatch::Pattern(p.clone())
                } else if let Some(prefix) = p.strip_suffix('*') {
                    PathMatch::Prefix(prefix.to_string())
                } else {
                    PathMatch::Exact(p.clone())
                }
            })
            .collect();
        for (j, m) in r.methods.iter().enumerate() {
            match Method::from_str(&m.to_ascii_uppercase()) {
                Ok(m) => spec.methods.push(m),
                Err(_) => self.issue(
                    format!("{path}.methods[{j}]"),
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        for (j, h) in r.headers.iter().enumerate() {
            let hpath = format!("{path}.headers[{j}]");
            let Some(name) = self.header_name(&format!("{hpath}.name"), &h.name) else {
                continue;
            };
            let value = match (&h.value, &h.prefix) {
                (Some(_), Some(_)) => {
                    self.issue(hpath, "give `value` or `prefix`, not both");
                    continue;
                }
                (Some(v), None) => HeaderValueMatch::Exact(v.clone()),
                (None, Some(p)) => HeaderValueMatch::Prefix(p.clone()),
                (None, None) => HeaderValueMatch::Present,
            };
            spec.headers.push(HeaderMatch { name, value });
        }
        spec.options = Arc::new(self.route_options(&path, r, default_body));
        spec
    }

    fn route_options(
        &mut self,
        path: &str,
        r: &RouteConfig,
        default_body: Option<u64>,
    ) -> RouteOptions {
        let d = Timeouts::default();
        let t = &r.timeouts;
        let timeouts = Timeouts {
            connect: t.connect.map_or(d.connect, |x| x.0),
            send: t.send.map_or(d.send, |x| x.0),
            read: t.read.map_or(d.read, |x| x.0),
            idle: t.idle.map_or(d.idle, |x| x.0),
        };
        for (field, v) in [
            ("connect", timeouts.connect),
            ("send", timeouts.send),
            ("read", timeouts.read),
            ("idle", timeouts.idle),
        ] {
            if v.is_zero() {
                self.issue(format!("{path}.timeouts.{field}"), "must not be zero");
            }
        }
        let pass_host = match (r.pass_host, &r.upstream_host) {
            (PassHostConfig::Rewrite, Some(h)) => match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() && !h.contains(['/', ' ', '@']) => PassHost::Rewrite(v),
                _ => {
                    self.issue(
                        format!("{path}.upstream_host"),
                        format!("`{h}` is not a host name (host or host:port)"),
                    );
                    PassHost::Pass
                }
            },
            (PassHostConfig::Rewrite, None) => {
                self.issue(
                    format!("{path}.upstream_host"),
                    "missing: pass_host: rewrite needs upstream_host",
                );
                PassHost::Pass
            }
            (_, Some(_)) => {
                self.issue(
                    format!("{path}.upstream_host"),
                    "only used with pass_host: rewrite",
                );
                PassHost::Pass
            }
            (PassHostConfig::Pass, None) => PassHost::Pass,
            (PassHostConfig::Node, None) => PassHost::Node,
        };
        let path_rewrite = match (&r.strip_prefix, &r.replace_prefix) {
            (Some(strip), replace) => {
                if !strip.starts_with('/') {
                    self.issue(format!("{path}.strip_prefix"), "must start with `/`");
                }
                let replace = replace.clone().unwrap_or_default();
                if !(replace.is_empty() || replace.starts_with('/')) {
                    self.issue(
                        format!("{path}.replace_prefix"),
                        "must be empty or start with `/`",
                    );
                }
                Some(PathRewrite {
                    strip_prefix: strip.clone(),
                    replace_with: replace,
                })
            }
            (None, Some(_)) => {
                self.issue(
                    format!("{path}.replace_prefix"),
                    "needs strip_prefix (the prefix it replaces)",
                );
                None
            }
            (None, None) => None,
        };
        let mut retry = RetryPolicy::default();
        if let Some(n) = r.retries {
            if n > 16 {
                self.issue(format!("{path}.retries"), "at most 16");
            }
            retry.attempts = n;
        }
        if let Some(b) = r.retry_backoff {
            retry.backoff = b.0;
            retry.max_backoff = retry.max_backoff.max(b.0);
        }
        if r.redirect_https == Some(0) {
            self.issue(format!("{path}.redirect_https"), "port 0 is not a port");
        }
        let upgrades = match r.upgrades.as_deref().map(AllowedUpgrades::new) {
            None => AllowedUpgrades::default(),
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                self.issue(format!("{path}.upgrades"), e);
                AllowedUpgrades::default()
            }
        };
        RouteOptions {
            upgrades,
            timeouts,
            pass_host,
            request_headers: self.edits(&format!("{path}.request_headers"), &r.request_headers),
            response_headers: self.edits(&format!("{path}.response_headers"), &r.response_headers),
            path_rewrite,
            retry,
            redirect_https: r.redirect_https,
            max_body_bytes: match r.max_body_bytes {
                Some(s) if s.0 == 0 => None,
                Some(s) => Some(s.0),
                None => default_body,
            },
            plugins_config: None,
            plugins: PluginChain::default(),
            rate_limit_rules: r.rate_limits.clone(),
            rate_limit: None,
            cached: r.cache,
            cache: None,
            cold_start: r.cold_start.as_ref().map(|c| {
                let d = ColdStart::default();
                let cs = ColdStart {
                    deadline: c.deadline.0,
                    max_body_bytes: c.max_body_bytes.map_or(d.max_body_bytes, |s| s.0),
                    backoff: c.backoff.map_or(d.backoff, |b| b.0),
                    max_backoff: c.max_backoff.map_or(d.max_backoff, |b| b.0),
                };
                if cs.deadline.is_zero() || cs.backoff.is_zero() || cs.max_backoff < cs.backoff {
                    self.issue(
                        format!("{path}.cold_start"),
                        "deadline and backoff must not be zero, max_backoff ≥ backoff",
                    );
                }
                cs
            }),
        }
    }

    fn edits(&mut self, path: &str, e: &HeaderEditsConfig) -> HeaderEdits {
        let mut out = HeaderEdits::default();
        for (j, n) in e.remove.iter().enumerate() {
            if let Some(n) = self.header_name(&format!("{path}.remove[{j}]"), n) {
                out.remove.push(n);
            }
        }
        for (kind, map) in [("set", &e.set), ("add", &e.add)] {
            for (n, v) in map {
                let field = format!("{path}.{kind}.{n}");
                let Some(name) = self.header_name(&field, n) else {
                    continue;
                };
                let Ok(value) = HeaderValue::from_str(v) else {
                    self.issue(field, format!("`{v}` is not a valid header value"));
                    continue;
                };
                if kind == "set" {
                    out.set.push((name, value));
                } else {
                    out.add.push((name, value));
                }
            }
        }
        out
    }

    fn header_name(&mut self, path: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.issue(
                    path.to_string(),
                    format!("`{name}` is not a valid header name"),
                );
                None
            }
        }
    }

    fn upstreams(&mut self, l7: &L7Config) -> Vec<UpstreamPlan> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, u) in l7.upstreams.iter().enumerate() {
            let path = format!("l7.upstreams[{i}]");
            if u.id.is_empty() {
                self.issue(format!("{path}.id"), "must not be empty");
            } else if let Some(first) = ids.insert(&u.id, i) {
                self.issue(
                    format!("{path}.id"),
                    format!("`{}` is already the id of l7.upstreams[{first}]", u.id),
                );
            }
            if let Some(up) = self.upstream(&path, u) {
                out.push(up);
            }
        }
        out
    }

    fn upstream(&mut self, path: &str, u: &UpstreamYaml) -> Option<UpstreamPlan> {
        let algorithm = match Algorithm::from_str(&u.algorithm) {
            Ok(a) => a,
            Err(e) => {
                self.issue(format!("{path}.algorithm"), e.to_string());
                Algorithm::RoundRobin
            }
        };
        let hash_on = match u.hash_on.as_deref() {
            None | Some("client_ip") => HashOn::ClientIp,
            Some("uri") => HashOn::Uri,
            Some(h) => {
                if let Some(name) = h.strip_prefix("header:") {
                    self.header_name(&format!("{path}.hash_on"), name)
                        .map_or(HashOn::ClientIp, HashOn::Header)
                } else if let Some(name) = h.strip_prefix("cookie:").filter(|n| cookie_name_ok(n)) {
                    HashOn::Cookie(name.to_string())
                } else {
                    self.issue(
                        format!("{path}.hash_on"),
                        format!("`{h}`: expected client_ip, uri, header:NAME or cookie:NAME"),
                    );
                    HashOn::ClientIp
                }
            }
        };
        if u.hash_on.is_some() && algorithm != Algorithm::ConsistentHash {
            self.issue(
                format!("{path}.hash_on"),
                "only used with algorithm: consistent_hash",
            );
        }
        if let Some(c) = &u.sticky_cookie {
            if !cookie_name_ok(c) {
                self.issue(
                    format!("{path}.sticky_cookie"),
                    format!("`{c}` is not a cookie name"),
                );
            }
        }
        let protocol = match u.protocol {
            ProtocolConfig::Http1 => UpstreamProtocol::Http1,
            ProtocolConfig::H2c => UpstreamProtocol::H2c,
            ProtocolConfig::Https => UpstreamProtocol::Https,
            ProtocolConfig::Https1 => UpstreamProtocol::Https1,
            ProtocolConfig::Https2 => UpstreamProtocol::Https2,
        };
        let t = &u.tls;
        let tls_set = t.server_name.is_some()
            || t.ca.is_some()
            || !t.verify
            || t.client_cert.is_some()
            || t.client_key.is_some();
        if tls_set && !protocol.is_tls() {
            self.issue(
                format!("{path}.tls"),
                "set, but protocol is not https, https1 or https2",
            );
        }
        let client_cert = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                self.issue(
                    format!("{path}.tls"),
                    "client_cert and client_key go together",
                );
                None
            }
        };
        if !t.verify {
            log::warn!("{path}: upstream TLS certificates are not verified (tls.verify: false)");
        }
        let mut nodes = Vec::new();
        let mut seen = HashMap::new();
        for (j, n) in u.nodes.iter().enumerate() {
            let npath = format!("{path}.nodes[{j}]");
            if n.weight > MAX_WEIGHT {
                self.issue(
                    format!("{npath}.weight"),
                    format!("{} exceeds the largest weight, {MAX_WEIGHT}", n.weight),
                );
            }
            let Some(target) = node_target(&n.address) else {
                self.issue(
                    format!("{npath}.address"),
                    format!("`{}` is not ip:port or name:port", n.address),
                );
                continue;
            };
            if let Some(first) = seen.insert(target.clone(), j) {
                self.issue(
                    format!("{npath}.address"),
                    format!("`{}` is already {path}.nodes[{first}]", n.address),
                );
            }
            nodes.push(NodePlan {
                target,
                weight: n.weight,
            });
        }
        if u.keepalive.idle_timeout.0.is_zero() {
            self.issue(format!("{path}.keepalive.idle_timeout"), "must not be zero");
        }
        let b = &u.retry_budget;
        if !(0.0..=10.0).contains(&b.ratio) {
            self.issue(
                format!("{path}.retry_budget.ratio"),
                "must be between 0 and 10",
            );
        }
        if b.window.0.is_zero() {
            self.issue(format!("{path}.retry_budget.window"), "must not be zero");
        }
        let options = UpstreamOptions {
            protocol,
            tls: UpstreamTls {
                server_name: t.server_name.clone(),
                ca: t.ca.clone(),
                verify: t.verify,
                client_cert,
            },
            max_requests_per_node: (u.max_requests_per_node > 0).then_some(u.max_requests_per_node),
            max_idle_per_node: u.keepalive.max_idle_per_node,
            idle_timeout: u.keepalive.idle_timeout.0,
            hash_on,
            sticky_cookie: u.sticky_cookie.clone(),
            retry_budget: RetryBudgetConfig {
                ratio: b.ratio,
                min_per_sec: b.min_per_sec,
                window: b.window.0,
            },
        };
        let dns_refresh = u.dns_refresh.map_or(Duration::from_secs(30), |d| d.0);
        if dns_refresh < Duration::from_secs(1) {
            self.issue(format!("{path}.dns_refresh"), "at least 1s");
        }
        let health = u.health_check.as_ref().and_then(|h| match h.to_spec() {
            Ok(spec) => Some(spec),
            Err((field, msg)) => {
                let at = if field.is_empty() {
                    format!("{path}.health_check")
                } else {
                    format!("{path}.health_check.{field}")
                };
                self.issue(at, msg);
                None
            }
        });
        if u.health_check.as_ref().is_some_and(|h| h.port.is_some()) {
            self.issue(
                format!("{path}.health_check.port"),
                "an upstream's nodes are checked on their own port",
            );
        }
        Some(UpstreamPlan {
            id: u.id.clone(),
            algorithm,
            options,
            nodes,
            dns_refresh,
            slow_start: u.slow_start.map_or(Duration::ZERO, |d| d.0),
            health,
            passive: u.passive.as_ref().map(|p| p.to_config()),
        })
    }
}

/// `ip:port`, `[v6]:port`, or `name:port` with a DNS name.
fn node_target(s: &str) -> Option<NodeTarget> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(NodeTarget::Addr(a));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        });
    ok.then(|| NodeTarget::Dns {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// RFC 6265 cookie-name: a token.
fn cookie_name_ok(name: &str) -> bool {
    crate::l7::headers::is_token(name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// Every `l7.limits` key reaches the server's limits.
    #[test]
    fn limits_reach_the_server() {
        let yaml = "\
l7:
  workers: 1
  limits:
    max_connections: 77
    max_connections_per_source: 5
    max_headers: 40
    idle_timeout: 7s
  listeners:
    - {name: web, address: 127.0.0.1:0}
  routes:
    - {id: all, upstream: app}
  upstreams:
    - {id: app, nodes: [{address: \"127.0.0.1:9\"}]}
";
        let cfg = Config::parse(yaml, Path::new("x.yaml")).expect("valid");
        let plan = super::plan(&cfg.l7).expect("plans");
        let l = &plan.limits;
        assert_eq!(l.max_connections, 77);
        assert_eq!(l.max_connections_per_source, 5);
        assert_eq!(l.max_headers, 40);
        assert_eq!(l.idle_timeout, std::time::Duration::from_secs(7));
        let plain = Config::parse(
            &yaml.replace("    max_connections_per_source: 5\n", ""),
            Path::new("x.yaml"),
        )
        .expect("valid");
        assert_eq!(
            super::plan(&plain.l7)
                .unwrap()
                .limits
                .max_connections_per_source,
            0
        );
    }

    /// `upgrades:` reaches the route; `h2c` is refused with the field named.
    #[test]
    fn route_upgrades_are_checked_and_reach_the_route() {
        let yaml = |upgrades: &str| {
            format!(
                "\
l7:
  listeners:
    - {{name: web, address: 127.0.0.1:0}}
  routes:
    - {{id: all, upstream: app{upgrades}}}
  upstreams:
    - {{id: app, nodes: [{{address: \"127.0.0.1:9\"}}]}}
"
            )
        };
        let allowed = |upgrades: &str| {
            let cfg = Config::parse(&yaml(upgrades), Path::new("x.yaml")).expect("valid");
            let plan = super::plan(&cfg.l7).expect("plans");
            let spec = &plan.listeners[0].routes[0];
            let opts = &spec.options;
            opts.upgrades.names().to_vec()
        };
        assert_eq!(allowed(""), vec!["websocket"]);
        assert_eq!(allowed(", upgrades: []"), Vec::<String>::new());
        assert_eq!(
            allowed(", upgrades: [WebSocket, foo]"),
            vec!["websocket", "foo"]
        );
        let cfg = Config::parse(&yaml(", upgrades: [websocket, h2c]"), Path::new("x.yaml"));
        let err = match cfg {
            Err(e) => e.to_string(),
            Ok(cfg) => match super::plan(&cfg.l7) {
                Err(e) => format!("{e:?}"),
                Ok(_) => panic!("h2c was accepted"),
            },
        };
        assert!(err.contains("upgrades") && err.contains("h2c"), "{err}");
    }
}
