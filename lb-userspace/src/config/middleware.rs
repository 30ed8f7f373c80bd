//! YAML of the request middleware: named rate-limit rules (referenced by
//! routes), health checks (of L7 upstreams and L4 VIPs), passive health and
//! cold-start holding. Each turns into the library's own settings type in
//! `l7_plan.rs`, where its problems are reported with their field path.
use serde::Deserialize;

use super::units::{Dur, Size};
use crate::{
    health::{CheckKind, CheckSpec, HttpCheck, PassiveConfig, StatusSet, TlsCheck},
    l7::ratelimit::{HardLimit, Overflow, Rate, RuleConfig, Side},
};

/// One rate-limit rule (`l7.rate_limits[]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitYaml {
    pub name: String,
    /// `$src_ip`, `$uri`, `$host`, `$header_NAME`, `$cookie_NAME`,
    /// `$upstream`, `$node`, or composites such as `$src_ip/$uri`.
    pub key: String,
    /// `100/s`, `30/m`, `5/100ms`.
    pub rate: String,
    /// Requests delayed (queued) beyond the rate before rejecting.
    #[serde(default)]
    pub burst: u32,
    /// Requests forwarded at once beyond the rate (nginx `nodelay`).
    #[serde(default)]
    pub allowance: u32,
    #[serde(default)]
    pub max_wait: Option<Dur>,
    /// 429 (default) or 503.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub side: SideYaml,
    #[serde(default)]
    pub max_keys: Option<usize>,
    #[serde(default)]
    pub on_full: OverflowYaml,
    /// A source over this rate is denied at the NIC (XDP) for `deny_for`.
    #[serde(default)]
    pub hard_limit: Option<HardLimitYaml>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SideYaml {
    #[default]
    Downstream,
    Upstream,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverflowYaml {
    #[default]
    Evict,
    Reject,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HardLimitYaml {
    pub rate: String,
    pub deny_for: Dur,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitYaml {
    /// The rule, or what is wrong as (field, message).
    pub fn to_rule(&self) -> Result<RuleConfig, (String, String)> {
        let rate: Rate = self
            .rate
            .parse()
            .map_err(|e| ("rate".to_string(), format!("`{}`: {e}", self.rate)))?;
        let side = match self.side {
            SideYaml::Downstream => Side::Downstream,
            SideYaml::Upstream => Side::Upstream,
        };
        let mut rule = RuleConfig::new(self.name.clone(), side, &self.key, rate)
            .map_err(|e| ("key".to_string(), e.to_string()))?;
        rule.burst = self.burst;
        rule.allowance = self.allowance;
        rule.max_wait = self.max_wait.map(|d| d.0);
        if let Some(s) = self.status {
            rule.reject_status = match http::StatusCode::from_u16(s) {
                Ok(c) if s == 429 || s == 503 => c,
                _ => return Err(("status".into(), format!("{s}: must be 429 or 503"))),
            };
        }
        if let Some(k) = self.max_keys {
            if k == 0 {
                return Err(("max_keys".into(), "must be at least 1".into()));
            }
            rule.max_keys = k;
        }
        rule.on_full = match self.on_full {
            OverflowYaml::Evict => Overflow::Evict,
            OverflowYaml::Reject => Overflow::Reject,
        };
        if let Some(h) = &self.hard_limit {
            let hrate: Rate = h
                .rate
                .parse()
                .map_err(|e| ("hard_limit.rate".to_string(), format!("`{}`: {e}", h.rate)))?;
            let mut hard = HardLimit::new(hrate, h.deny_for.0);
            if let Some(b) = h.burst {
                hard.burst = b;
            }
            if h.deny_for.0.is_zero() {
                return Err(("hard_limit.deny_for".into(), "must not be zero".into()));
            }
            rule.hard_limit = Some(hard);
        }
        // The library's own checks (status, hard limit above the rate...).
        crate::l7::ratelimit::Rule::new(rule.clone())
            .map_err(|e| (String::new(), e.to_string()))?;
        Ok(rule)
    }
}

/// An active health check (`health_check:` of an upstream or an L4 VIP).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckYaml {
    /// `tcp` (default), `http` or `https`.
    #[serde(default, rename = "type")]
    pub kind: CheckType,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// `200-399` (default), `200,204`.
    #[serde(default)]
    pub expected_statuses: Option<String>,
    #[serde(default)]
    pub body_contains: Option<String>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// HTTPS: CA bundle, verification, SNI.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    #[serde(default)]
    pub verify: Option<bool>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// Probe this port instead of the node's (L4: instead of the VIP's).
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    #[default]
    Tcp,
    Http,
    Https,
}

impl HealthCheckYaml {
    /// The check, or what is wrong as (field, message).
    pub fn to_spec(&self) -> Result<CheckSpec, (String, String)> {
        let http = || -> Result<HttpCheck, (String, String)> {
            let mut h = HttpCheck::default();
            if let Some(p) = &self.path {
                if !p.starts_with('/') {
                    return Err(("path".into(), "must start with `/`".into()));
                }
                h.path = p.clone();
            }
            h.host = self.host.clone();
            if let Some(s) = &self.expected_statuses {
                h.expected = s
                    .parse::<StatusSet>()
                    .map_err(|e| ("expected_statuses".to_string(), e.to_string()))?;
            }
            h.body_contains = self.body_contains.clone();
            Ok(h)
        };
        let kind = match self.kind {
            CheckType::Tcp => {
                if self.path.is_some()
                    || self.expected_statuses.is_some()
                    || self.body_contains.is_some()
                {
                    return Err((
                        "type".into(),
                        "path/expected_statuses/body_contains need type http or https".into(),
                    ));
                }
                CheckKind::Tcp
            }
            CheckType::Http => CheckKind::Http(http()?),
            CheckType::Https => CheckKind::Https {
                http: http()?,
                tls: TlsCheck {
                    ca: self.ca.clone(),
                    verify: self.verify.unwrap_or(true),
                    server_name: self.server_name.clone(),
                },
            },
        };
        let mut spec = CheckSpec {
            kind,
            ..CheckSpec::tcp()
        };
        if let Some(d) = self.interval {
            spec.interval = d.0;
        }
        if let Some(d) = self.timeout {
            spec.timeout = d.0;
        }
        if let Some(n) = self.healthy_threshold {
            spec.healthy_threshold = n;
        }
        if let Some(n) = self.unhealthy_threshold {
            spec.unhealthy_threshold = n;
        }
        spec.validate()
            .map_err(|e| (String::new(), e.to_string()))?;
        Ok(spec)
    }
}

/// Passive health of an upstream (`passive:`): ejection on failures.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PassiveYaml {
    /// Consecutive failures that eject a node (default 5).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// First ejection (default 30s), multiplied by the number of ejections.
    #[serde(default)]
    pub base_ejection: Option<Dur>,
    #[serde(default)]
    pub max_ejection: Option<Dur>,
    /// At most this share of the pool ejected at once (default 50).
    #[serde(default)]
    pub max_ejection_percent: Option<u8>,
}

impl PassiveYaml {
    pub fn to_config(&self) -> PassiveConfig {
        let mut c = PassiveConfig::default();
        if let Some(n) = self.consecutive_failures {
            c.consecutive_failures = Some(n);
        }
        if let Some(d) = self.base_ejection {
            c.base_ejection = d.0;
        }
        if let Some(d) = self.max_ejection {
            c.max_ejection = d.0;
        }
        if let Some(p) = self.max_ejection_percent {
            c.max_ejection_percent = p;
        }
        c
    }
}

/// Cold-start holding of a route (`cold_start:`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColdStartYaml {
    pub deadline: Dur,
    #[serde(default)]
    pub max_body_bytes: Option<Size>,
    #[serde(default)]
    pub backoff: Option<Dur>,
    #[serde(default)]
    pub max_backoff: Option<Dur>,
}
