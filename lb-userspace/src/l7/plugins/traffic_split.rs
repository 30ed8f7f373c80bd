//! `traffic-split`: sends a share of a route's requests to other
//! upstreams, for canaries and A/B tests. `match` rules come first (a
//! header or cookie value sends the request to a named upstream: testers,
//! internal users); the rest is split by `weights`, where the upstream
//! `"_route"` is the route's own. A weighted pick is random per request, or
//! stable per client address with `sticky: client_ip` (a user stays on one
//! side for as long as the weights do not change).
use std::sync::Arc;

use http::{request, HeaderName};
use serde::Deserialize;

use super::super::{
    headers,
    plugin::{Plugin, RequestCx},
};

/// `plugins.traffic-split`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplitConfig {
    /// Rules checked in order; the first that matches decides.
    #[serde(default, rename = "match")]
    pub rules: Vec<SplitRuleConfig>,
    /// The split of the requests no rule matched.
    #[serde(default)]
    pub weights: Vec<SplitWeightConfig>,
    /// `client_ip`: one client address always lands on the same side.
    #[serde(default)]
    pub sticky: Option<String>,
}

/// One `match` rule: a header or a cookie (exactly one), its value (absent:
/// present with any value), and the upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitRuleConfig {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    pub upstream: String,
}

/// One share of the weighted split.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitWeightConfig {
    /// An upstream id, or `_route` for the route's own.
    pub upstream: String,
    pub weight: u32,
}

/// The route's own upstream in `weights`.
pub const ROUTE_UPSTREAM: &str = "_route";

#[derive(Debug)]
enum Source {
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug)]
struct Rule {
    source: Source,
    value: Option<String>,
    upstream: Arc<str>,
}

#[derive(Debug)]
pub struct TrafficSplit {
    rules: Vec<Rule>,
    /// Cumulative weights; `None` upstream: the route's own.
    shares: Vec<(u64, Option<Arc<str>>)>,
    total: u64,
    sticky: bool,
}

impl TrafficSplit {
    /// `upstream_exists` says whether an upstream id is configured.
    pub fn new(
        c: &TrafficSplitConfig,
        upstream_exists: &dyn Fn(&str) -> bool,
    ) -> Result<TrafficSplit, (String, String)> {
        let mut rules = Vec::new();
        for (i, r) in c.rules.iter().enumerate() {
            let source = match (&r.header, &r.cookie) {
                (Some(h), None) => {
                    Source::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        (
                            format!("match[{i}].header"),
                            format!("`{h}` is not a header name"),
                        )
                    })?)
                }
                (None, Some(c)) => Source::Cookie(c.clone()),
                _ => {
                    return Err((
                        format!("match[{i}]"),
                        "give exactly one of `header` and `cookie`".into(),
                    ))
                }
            };
            if !upstream_exists(&r.upstream) {
                return Err((
                    format!("match[{i}].upstream"),
                    format!("no upstream is named `{}`", r.upstream),
                ));
            }
            rules.push(Rule {
                source,
                value: r.value.clone(),
                upstream: r.upstream.as_str().into(),
            });
        }
        let mut shares = Vec::new();
        let mut total = 0u64;
        for (i, w) in c.weights.iter().enumerate() {
            let up = if w.upstream == ROUTE_UPSTREAM {
                None
            } else if upstream_exists(&w.upstream) {
                Some(Arc::<str>::from(w.upstream.as_str()))
            } else {
                return Err((
                    format!("weights[{i}].upstream"),
                    format!(
                        "no upstream is named `{}` (`_route` is the route's own)",
                        w.upstream
                    ),
                ));
            };
            total += u64::from(w.weight);
            shares.push((total, up));
        }
        if rules.is_empty() && total == 0 {
            return Err((
                "weights".into(),
                "give `match` rules or weights above 0".into(),
            ));
        }
        let sticky = match c.sticky.as_deref() {
            None => false,
            Some("client_ip") => true,
            Some(other) => {
                return Err((
                    "sticky".into(),
                    format!("`{other}`: the only choice is `client_ip`"),
                ))
            }
        };
        Ok(TrafficSplit {
            rules,
            shares,
            total,
            sticky,
        })
    }

    fn by_rule(&self, req: &request::Parts) -> Option<Arc<str>> {
        self.rules.iter().find_map(|r| {
            let got: Option<&[u8]> = match &r.source {
                Source::Header(h) => req.headers.get(h).map(|v| v.as_bytes()),
                Source::Cookie(c) => headers::cookie(&req.headers, c),
            };
            let hit = match (got, &r.value) {
                (Some(g), Some(want)) => g == want.as_bytes(),
                (Some(_), None) => true,
                (None, _) => false,
            };
            hit.then(|| r.upstream.clone())
        })
    }

    /// The side for a point in `0..total`.
    fn share(&self, point: u64) -> Option<Arc<str>> {
        self.shares
            .iter()
            .find(|(upto, _)| point < *upto)
            .and_then(|(_, up)| up.clone())
    }
}

/// FNV-1a over the address bytes: stable across processes and nodes (a
/// client keeps its side when it reaches another node of the fleet).
fn stable_hash(ip: std::net::IpAddr) -> u64 {
    let bytes: Vec<u8> = match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Plugin for TrafficSplit {
    fn name(&self) -> &str {
        "traffic-split"
    }

    fn priority(&self) -> i32 {
        966
    }

    fn upstream(&self, req: &request::Parts, cx: RequestCx<'_>) -> Option<Arc<str>> {
        if let Some(u) = self.by_rule(req) {
            return Some(u);
        }
        if self.total == 0 {
            return None;
        }
        let point = if self.sticky {
            stable_hash(cx.peer.ip()) % self.total
        } else {
            rand::random::<u64>() % self.total
        };
        self.share(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_the_range() {
        let t = TrafficSplit::new(
            &TrafficSplitConfig {
                rules: vec![],
                weights: vec![
                    SplitWeightConfig {
                        upstream: "canary".into(),
                        weight: 10,
                    },
                    SplitWeightConfig {
                        upstream: "_route".into(),
                        weight: 90,
                    },
                ],
                sticky: None,
            },
            &|u| u == "canary",
        )
        .unwrap();
        assert_eq!(t.share(0).as_deref(), Some("canary"));
        assert_eq!(t.share(9).as_deref(), Some("canary"));
        assert_eq!(t.share(10), None);
        assert_eq!(t.share(99), None);
    }

    #[test]
    fn unknown_upstreams_are_named() {
        let e = TrafficSplit::new(
            &TrafficSplitConfig {
                rules: vec![],
                weights: vec![SplitWeightConfig {
                    upstream: "nope".into(),
                    weight: 1,
                }],
                sticky: None,
            },
            &|_| false,
        )
        .unwrap_err();
        assert_eq!(e.0, "weights[0].upstream");
    }
}
