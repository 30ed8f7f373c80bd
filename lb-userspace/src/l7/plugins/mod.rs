//! The built-in plugins (see [`super::plugin`] for the chain and
//! `docs/plugins.md` for the reference) and how a route's chain is built
//! from its `plugins:` YAML.
//!
//! | plugin | priority | phases |
//! |---|---:|---|
//! | `request-id` | 12015 | request, response |
//! | `cors` | 4000 | request (preflight), response |
//! | `ip-restriction` | 3000 | request |
//! | `basic-auth` | 2520 | request |
//! | `jwt-auth` | 2510 | request |
//! | `key-auth` | 2500 | request |
//! | `forward-auth` | 2002 | request |
//! | `request-validation` | 1900 | request (headers), body (JSON Schema) |
//! | `compression` | 990 | response |
//! | `traffic-split` | 966 | upstream |
//! | `response-headers` | 900 | response |
pub mod auth;
pub mod basic_auth;
pub mod compression;
pub mod consumers;
pub mod cors;
pub mod forward_auth;
pub mod http_fetch;
pub mod ip_restriction;
pub mod jwks;
pub mod jwks_remote;
pub mod jwt_auth;
pub mod key_auth;
pub mod request_id;
pub mod request_validation;
pub mod response_headers;
pub mod traffic_split;

use std::sync::Arc;

use serde::Deserialize;

use super::{
    plugin::{Plugin, PluginChain},
    ratelimit::EscalationSink,
};

/// `plugins:` of a route, or `l7.plugins` for every route (a route's entry
/// for a plugin replaces the global one).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginsConfig {
    #[serde(default)]
    pub request_id: Option<request_id::RequestIdConfig>,
    #[serde(default)]
    pub cors: Option<cors::CorsConfig>,
    #[serde(default)]
    pub ip_restriction: Option<ip_restriction::IpRestrictionConfig>,
    #[serde(default)]
    pub basic_auth: Option<basic_auth::BasicAuthConfig>,
    #[serde(default)]
    pub jwt_auth: Option<jwt_auth::JwtAuthConfig>,
    #[serde(default)]
    pub key_auth: Option<key_auth::KeyAuthConfig>,
    #[serde(default)]
    pub forward_auth: Option<forward_auth::ForwardAuthConfig>,
    #[serde(default)]
    pub request_validation: Option<request_validation::RequestValidationConfig>,
    #[serde(default)]
    pub compression: Option<compression::CompressionConfig>,
    #[serde(default)]
    pub traffic_split: Option<traffic_split::TrafficSplitConfig>,
    #[serde(default)]
    pub response_headers: Option<response_headers::ResponseHeadersConfig>,
}

impl PluginsConfig {
    /// `self` (a route's) over `global`: each plugin from the route when it
    /// names it, else from the global list.
    pub fn over(&self, global: &PluginsConfig) -> PluginsConfig {
        fn pick<T: Clone>(mine: &Option<T>, theirs: &Option<T>) -> Option<T> {
            mine.clone().or_else(|| theirs.clone())
        }
        PluginsConfig {
            request_id: pick(&self.request_id, &global.request_id),
            cors: pick(&self.cors, &global.cors),
            ip_restriction: pick(&self.ip_restriction, &global.ip_restriction),
            basic_auth: pick(&self.basic_auth, &global.basic_auth),
            jwt_auth: pick(&self.jwt_auth, &global.jwt_auth),
            key_auth: pick(&self.key_auth, &global.key_auth),
            forward_auth: pick(&self.forward_auth, &global.forward_auth),
            request_validation: pick(&self.request_validation, &global.request_validation),
            compression: pick(&self.compression, &global.compression),
            traffic_split: pick(&self.traffic_split, &global.traffic_split),
            response_headers: pick(&self.response_headers, &global.response_headers),
        }
    }

    /// True when no plugin is configured.
    pub fn is_empty(&self) -> bool {
        *self == PluginsConfig::default()
    }
}

/// What building a chain needs besides the YAML.
pub struct PluginEnv<'a> {
    /// The route's id (for logs and XDP denial records).
    pub route: &'a str,
    /// The consumers the auth plugins know.
    pub consumers: Arc<consumers::Consumers>,
    /// Whether an upstream id exists (traffic splits name upstreams).
    pub upstream_exists: &'a dyn Fn(&str) -> bool,
    /// Where `ip-restriction` sends XDP denials; `None` when planning.
    pub deny_sink: Option<EscalationSink>,
}

/// Builds the chain; every problem as `(field path under plugins, message)`.
pub fn build(c: &PluginsConfig, env: &PluginEnv<'_>) -> Result<PluginChain, Vec<(String, String)>> {
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut errors = Vec::new();
    fn add<P: Plugin>(
        name: &str,
        made: Result<P, (String, String)>,
        plugins: &mut Vec<Arc<dyn Plugin>>,
        errors: &mut Vec<(String, String)>,
    ) {
        match made {
            Ok(p) => plugins.push(Arc::new(p)),
            Err((field, msg)) => errors.push((format!("{name}.{field}"), msg)),
        }
    }
    if let Some(x) = &c.request_id {
        add(
            "request-id",
            request_id::RequestId::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.cors {
        add("cors", cors::Cors::new(x), &mut plugins, &mut errors);
    }
    if let Some(x) = &c.ip_restriction {
        let sink = env.deny_sink.clone().map(|s| (s, env.route.to_string()));
        add(
            "ip-restriction",
            ip_restriction::IpRestriction::new(x, sink),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.basic_auth {
        add(
            "basic-auth",
            Ok(basic_auth::BasicAuth::new(x, env.consumers.clone())),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.jwt_auth {
        add(
            "jwt-auth",
            jwt_auth::JwtAuth::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.key_auth {
        add(
            "key-auth",
            key_auth::KeyAuth::new(x, env.consumers.clone()),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.forward_auth {
        add(
            "forward-auth",
            forward_auth::ForwardAuth::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.request_validation {
        add(
            "request-validation",
            request_validation::RequestValidation::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.compression {
        add(
            "compression",
            compression::Compression::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.traffic_split {
        add(
            "traffic-split",
            traffic_split::TrafficSplit::new(x, env.upstream_exists),
            &mut plugins,
            &mut errors,
        );
    }
    if let Some(x) = &c.response_headers {
        add(
            "response-headers",
            response_headers::ResponseHeaders::new(x),
            &mut plugins,
            &mut errors,
        );
    }
    if errors.is_empty() {
        Ok(PluginChain::new(plugins))
    } else {
        Err(errors)
    }
}
