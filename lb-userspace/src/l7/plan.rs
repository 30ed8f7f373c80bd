//! What the proxy runs on: the L7 plan that `config` makes from the `l7:`
//! section once it has checked it (listeners with their route specs,
//! upstreams with their nodes and options, the cache store, limits). The
//! types live here, with the proxy, so that the proxy never imports the
//! config model; `config::l7_plan` fills them in.
use std::{net::SocketAddr, time::Duration};

use super::{
    balance::Algorithm, options::UpstreamOptions, ratelimit::RuleConfig, router::RouteSpec,
    server::ServerLimits, tls::ListenerTls,
};
use crate::health::{CheckSpec, PassiveConfig};
use crate::net::Prefix;

/// The planned proxy.
#[derive(Debug, Clone)]
pub struct L7Plan {
    pub workers: usize,
    /// Rate-limit rules by name (routes name them in `RouteOptions::rate_limit_rules`).
    pub rate_rules: Vec<RuleConfig>,
    pub limits: ServerLimits,
    pub listeners: Vec<ListenerPlan>,
    pub upstreams: Vec<UpstreamPlan>,
    /// The response cache's store: `Some` when `l7.cache` is set or a
    /// route caches (then with the defaults).
    pub cache: Option<CachePlan>,
    /// Sources whose forwarding headers are kept (`l7.trusted_proxies`).
    pub trusted_proxies: Vec<Prefix>,
    /// `l7.consumers`, indexed for the auth plugins.
    pub consumers: std::sync::Arc<super::plugins::consumers::Consumers>,
}

/// `l7.cache`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    pub max_bytes: u64,
    pub max_object_bytes: u64,
    /// Sources whose `PURGE` is honoured (empty: none).
    pub purge_from: Vec<Prefix>,
    /// `targeted_field`, lower case.
    pub targeted_field: Option<http::HeaderName>,
}

impl CachePlan {
    /// Whether a store built for `self` can serve `other` (the purge list
    /// is not part of the store; the targeted field is, since the stored
    /// entries' freshness was decided by it).
    pub fn same_store(&self, other: &CachePlan) -> bool {
        self.max_bytes == other.max_bytes
            && self.max_object_bytes == other.max_object_bytes
            && self.targeted_field == other.targeted_field
    }
}

impl L7Plan {
    /// True when there is nothing to serve.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

/// One listener and the routes it serves (in config order).
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: Option<ListenerTls>,
    pub routes: Vec<RouteSpec>,
}

/// Where a node is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeTarget {
    Addr(SocketAddr),
    /// Resolved at start and every `dns_refresh`.
    Dns {
        host: String,
        port: u16,
    },
}

/// One configured node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub target: NodeTarget,
    pub weight: u32,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPlan {
    pub id: String,
    pub algorithm: Algorithm,
    pub options: UpstreamOptions,
    pub nodes: Vec<NodePlan>,
    pub dns_refresh: Duration,
    pub slow_start: Duration,
    pub health: Option<CheckSpec>,
    pub passive: Option<PassiveConfig>,
}
