//! `ip-restriction`: sources allowed or denied by prefix. A source in
//! `deny`, or outside a non-empty `allow`, gets `403 source-forbidden`.
//! With `xdp_deny_for` set, a denied source is also written into the XDP
//! deny list for that long (through the same path as rate-limit
//! escalation), so the NIC drops its packets before they cost the proxy
//! anything; the XDP entry expires, the plugin's verdict does not.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::request;
use serde::Deserialize;

use super::super::{
    error::{respond, ErrorKind},
    plugin::{BoxFuture, Plugin, RequestCx, Verdict},
    ratelimit::{Escalation, EscalationSink},
};
use crate::{net::Prefix, units::Dur};

/// `plugins.ip-restriction`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// Only these sources (`ADDR/LEN` or `ADDR`); empty: any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these sources.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Also drop a denied source in XDP for this long.
    #[serde(default)]
    pub xdp_deny_for: Option<Dur>,
}

/// Sources escalated recently are not sent again until their XDP entry
/// ends; the memory of them is bounded.
const MAX_REMEMBERED: usize = 65_536;

pub struct IpRestriction {
    allow: Vec<Prefix>,
    deny: Vec<Prefix>,
    xdp: Option<(Duration, EscalationSink, String)>,
    escalated: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for IpRestriction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRestriction")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("xdp", &self.xdp.as_ref().map(|x| x.0))
            .finish()
    }
}

fn prefixes(list: &[String], field: &str) -> Result<Vec<Prefix>, (String, String)> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Prefix>()
                .map_err(|e| (format!("{field}[{i}]"), format!("`{s}`: {e}")))
        })
        .collect()
}

impl IpRestriction {
    /// `sink` (with the route's id, for logs) receives XDP denials; without
    /// one (`xlb check`, or no XDP), `xdp_deny_for` only answers 403.
    pub fn new(
        c: &IpRestrictionConfig,
        sink: Option<(EscalationSink, String)>,
    ) -> Result<IpRestriction, (String, String)> {
        let allow = prefixes(&c.allow, "allow")?;
        let deny = prefixes(&c.deny, "deny")?;
        if allow.is_empty() && deny.is_empty() {
            return Err(("allow".into(), "give `allow` or `deny` (or both)".into()));
        }
        let xdp = match (c.xdp_deny_for, sink) {
            (Some(d), Some((sink, route))) => Some((d.0, sink, route)),
            _ => None,
        };
        Ok(IpRestriction {
            allow,
            deny,
            xdp,
            escalated: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `ip` may call.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|p| p.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.contains(ip)))
    }

    fn escalate(&self, ip: IpAddr) {
        let Some((deny_for, sink, route)) = &self.xdp else {
            return;
        };
        let now = Instant::now();
        {
            let mut seen = self.escalated.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&ip).is_some_and(|until| *until > now) {
                return;
            }
            if seen.len() >= MAX_REMEMBERED {
                seen.retain(|_, until| *until > now);
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
            }
            seen.insert(ip, now + *deny_for);
        }
        sink(Escalation {
            source: ip,
            rule: format!("ip-restriction@{route}"),
            until: now + *deny_for,
        });
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        3000
    }

    fn request<'a>(
        &'a self,
        _req: &'a mut request::Parts,
        cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        let ip = cx.peer.ip();
        let verdict = if self.allows(ip) {
            Verdict::Continue
        } else {
            self.escalate(ip);
            Verdict::Respond(respond(ErrorKind::SourceForbidden))
        };
        Box::pin(std::future::ready(verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_over_allow() {
        let r = IpRestriction::new(
            &IpRestrictionConfig {
                allow: vec!["10.0.0.0/8".into()],
                deny: vec!["10.1.0.0/16".into()],
                xdp_deny_for: None,
            },
            None,
        )
        .unwrap();
        assert!(r.allows("10.2.3.4".parse().unwrap()));
        assert!(!r.allows("10.1.3.4".parse().unwrap()));
        assert!(!r.allows("192.0.2.1".parse().unwrap()));
    }
}
