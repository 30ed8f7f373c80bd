//! One request's life in the proxy: parse and check the request target,
//! route it, apply the route's options, pick a node of the route's
//! upstream, forward, and retry on another node when that is safe. Every
//! way this can fail is a response with a status and an `x-xlb-error`
//! reason, never a hang or a panic.
//!
//! Phases, in order: target check (400; an absolute-form target's
//! authority replaces `Host`, see [`super::target`]) → route (404, or 421
//! for an absolute-form target) → the route's
//! downstream rate-limit rules (429/503 `rate-limited`, `denied` or
//! `rate-limit-table-full`, with `Retry-After`; a delay verdict just waits)
//! → `redirect_https` (308) → upstream lookup (502 when the config names an
//! unknown upstream, which validation prevents) → body size by
//! `Content-Length` (413) → node pick (503 with the pool's reason, or
//! `upstream-busy` when every eligible node is at `max_requests_per_node`)
//! → the route's upstream rate-limit rules, once per node the request is
//! sent to (keys may use `$upstream` and `$node`) → forward (502/504/413,
//! with retries on other nodes within the route's policy and the
//! upstream's retry budget).
//!
//! On a route with a cache ([`RouteOptions::cache`]), after the body size
//! check: a `PURGE` is answered by the cache and never forwarded (see
//! [`purge`]); an upgrade request bypasses the cache; every other request
//! goes through [`cache::Cache::serve_keyed`], keyed by [`route_key`] on
//! the request as received, with the node pick, forwarding and retries as
//! its `fetch` ([`forward_exchange`], an owned future). Rate limits come
//! before the cache, as in nginx (`limit_req` runs before `proxy_cache`):
//! a rejected client gets its 429 even for a cached URL, and a cache hit
//! still counts against its rules; upstream-side rules only see the
//! requests that reach a node. The route's response header edits and the
//! sticky cookie are applied outside the cache ([`finish`]): edits to
//! every response from a node or from the store, the cookie only when a
//! node was picked for this request.
//!
//! Every attempt's outcome on a node is reported to the pool's passive
//! health tracker, when it has one ([`Pool::with_passive`]): a refused,
//! reset or timed-out connection and a 502/503/504 from the node count as
//! failures, any other response as a success; failures that are the
//! client's (a stalled or malformed body, a body over the limit) are not
//! reported.
//!
//! With the route's `cold_start` set, a refused connection or an upstream
//! whose nodes are all unhealthy holds the request instead of failing it:
//! see [`super::cold_start`]. Held connection attempts are not retries
//! (they consume neither `RetryPolicy` attempts nor the retry budget).
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use http::{
    header, request, uri::PathAndQuery, HeaderMap, HeaderValue, Method, Request, Response,
    StatusCode, Uri,
};
use hyper::{
    body::{Body as _, Incoming},
    upgrade::OnUpgrade,
};

use crate::net::Prefix;

use super::{
    balance::{Balancer, InFlight, PickContext, Unavailable, Upstream},
    cache::{self, x_cache, X_CACHE},
    cold_start::{self, Buffered, Hold, Replay},
    error::{respond, ErrorKind, ProxyError},
    forward::{
        self, empty_body, empty_up_body, request_body, response_body, response_head, text_body,
        ForwardError, ProxyBody, ERROR_HEADER,
    },
    headers::{self, Downstream},
    options::{HashOn, RetryPolicy, RouteCache, RouteOptions, UpstreamOptions},
    ratelimit::{RejectReason, Rejection, RequestFacts, Side},
    record,
    retry_budget::RetryBudget,
    rewrite,
    router::{path_hazard, RequestInfo, Resolver, Route},
    server::ConnInfo,
    target, upgrade,
    upstream_client::{ClientError, UpstreamClient},
};
use crate::health::{FailureKind, Outcome, PassiveTracker};

/// One named upstream: its nodes' shared state, its picking algorithm, how
/// its nodes are reached, and its connections and retry budget.
pub struct Pool {
    /// The upstream's id (for logs).
    pub id: String,
    /// Nodes and their live state.
    pub upstream: Arc<Upstream>,
    /// How a node is picked. With `options.sticky_cookie` set it should be
    /// a sticky balancer (`balance::build(.., sticky: true)`): the proxy
    /// only passes the cookie in and sets it on responses.
    pub balancer: Box<dyn Balancer>,
    /// How nodes are reached.
    pub options: UpstreamOptions,
    client: UpstreamClient,
    budget: Arc<RetryBudget>,
    passive: Option<Arc<PassiveTracker>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id)
            .field("upstream", &self.upstream)
            .field("options", &self.options)
            .field("passive", &self.passive.is_some())
            .finish()
    }
}

impl Pool {
    /// A pool; `previous` is the pool this one replaces on a reload: its
    /// client (and so its warm connections) is kept when the options that
    /// shape connections are unchanged (and the TLS files too), and its
    /// retry budget when the budget settings are.
    ///
    /// Errors: TLS material that cannot be loaded (CA, client certificate,
    /// no trust roots at all).
    pub fn new(
        id: impl Into<String>,
        upstream: Arc<Upstream>,
        balancer: Box<dyn Balancer>,
        options: UpstreamOptions,
        previous: Option<&Pool>,
    ) -> Result<Pool, ClientError> {
        let client = UpstreamClient::reuse_or_new(previous.map(|p| &p.client), &options)?;
        let budget = match previous {
            Some(p) if p.options.retry_budget == options.retry_budget => p.budget.clone(),
            _ => Arc::new(RetryBudget::new(options.retry_budget)),
        };
        Ok(Pool {
            id: id.into(),
            upstream,
            balancer,
            options,
            client,
            budget,
            passive: None,
        })
    }

    /// The same pool reporting every attempt's outcome to `tracker`
    /// (passive health). The tracker's node `i` must be the upstream's
    /// node `i` (outcomes of nodes beyond the tracker's are dropped). A
    /// pool built on a reload does not inherit its predecessor's tracker:
    /// give it one built with `PassiveTracker::with_previous`.
    pub fn with_passive(mut self, tracker: Arc<PassiveTracker>) -> Pool {
        if tracker.ids().len() != self.upstream.len() {
            log::warn!(
                "upstream {}: passive tracker has {} nodes, the upstream {}",
                self.id,
                tracker.ids().len(),
                self.upstream.len()
            );
        }
        self.passive = Some(tracker);
        self
    }

    /// The passive health tracker, if any.
    pub fn passive(&self) -> Option<&Arc<PassiveTracker>> {
        self.passive.as_ref()
    }

    /// Reports one attempt's outcome on `node` to the passive tracker.
    #[inline]
    fn record(&self, node: usize, outcome: Outcome) {
        if let Some(p) = &self.passive {
            if node < p.ids().len() {
                p.record(node, outcome);
            }
        }
    }

    /// The connections to the nodes.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The retry budget.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }
}

/// The routing table and the upstreams, as one handler.
pub struct Proxy {
    routes: Arc<dyn Resolver>,
    pools: HashMap<String, Arc<Pool>>,
    /// Sources whose forwarding headers are kept (see
    /// [`headers::add_forwarded`]).
    trusted_proxies: Vec<Prefix>,
}

fn default_options() -> &'static RouteOptions {
    static DEFAULT: OnceLock<RouteOptions> = OnceLock::new();
    DEFAULT.get_or_init(RouteOptions::default)
}

/// Methods whose replay cannot do harm (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The wait before retry number `retry` (0 for the first): doubled each
/// time up to the cap, then "equal jitter" (half fixed, half random) so
/// that clients that failed together do not come back together.
fn backoff(policy: &RetryPolicy, retry: usize) -> Duration {
    let full = policy
        .backoff
        .saturating_mul(1u32 << retry.min(16))
        .min(policy.max_backoff);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

impl Proxy {
    /// A proxy over `routes` and `pools` (by upstream id; pools may be
    /// shared by the proxies of several listeners).
    pub fn new(routes: Arc<dyn Resolver>, pools: HashMap<String, Arc<Pool>>) -> Proxy {
        Proxy {
            routes,
            pools,
            trusted_proxies: Vec::new(),
        }
    }

    /// This proxy, keeping the forwarding headers of requests from
    /// `trusted` sources (`l7.trusted_proxies`); none by default.
    pub fn with_trusted_proxies(mut self, trusted: Vec<Prefix>) -> Proxy {
        self.trusted_proxies = trusted;
        self
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let note = record::Note::of(&parts); // request record (l7::record)
        if !target::scheme_served(&parts.uri) {
            return respond(ErrorKind::UnsupportedScheme);
        }
        let (host, route): (Option<String>, Arc<Route>) = {
            let info = match RequestInfo::from_parts(&parts) {
                Ok(i) => i,
                Err(e) => {
                    log::debug!("{}: bad request target: {e}", conn.peer);
                    return respond(ErrorKind::BadRequestTarget);
                }
            };
            // Routing matches the raw path: a path spelled to dodge a
            // route (dot segments, encoded slashes) is refused rather than
            // guessed.
            if path_hazard(info.path()).is_some() {
                return respond(ErrorKind::AmbiguousPath);
            }
            let Some(matched) = self.routes.resolve(&info) else {
                if target::is_absolute_form(&parts) {
                    return respond(ErrorKind::MisdirectedRequest);
                }
                return respond(ErrorKind::NoRoute);
            };
            (info.host().map(str::to_string), matched.route)
        };
        note.route(route.id(), route.upstream()); // request record
                                                  // Routing and the cache key used the target's authority; the node
                                                  // gets it as `Host` too (RFC 9112 §3.2.2).
        if let Some(received) = target::adopt_authority(&mut parts) {
            log::debug!(
                "{}: absolute-form target {} with Host {received:?}: Host replaced",
                conn.peer,
                parts.uri
            );
        }
        let opts = route
            .spec()
            .extensions
            .get::<RouteOptions>()
            .unwrap_or_else(|| default_options());
        // A cold-start hold's deadline counts from here (a rate-limit delay
        // included); the clock is read only for routes that hold.
        let arrived = opts.cold_start.map(|_| Instant::now());

        // Downstream rate limiting: every request the route matched counts
        // (as received: host without port, target before any rewrite).
        let limiter = opts.rate_limit.as_ref().map(|l| &*l.0);
        // What the upstream-side rules key on, kept from before the headers
        // are rewritten for the node (only when there are such rules).
        let mut up_facts: Option<(HeaderMap, String)> = None;
        if let Some(limiter) = limiter {
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let facts = RequestFacts::new(
                conn.peer.ip(),
                host.as_deref().unwrap_or(""),
                target,
                &parts.headers,
            );
            let verdict = Box::pin(limiter.admit(Side::Downstream, &facts)).await;
            note.rate_limit(record::RateLimitVerdict::of(&verdict)); // request record
            if let Err(r) = verdict {
                log::debug!("{}: {r}", conn.peer);
                return rate_limited(&r);
            }
            if limiter.has_side(Side::Upstream) {
                up_facts = Some((parts.headers.clone(), target.to_string()));
            }
        }

        if let Some(port) = opts.redirect_https {
            return redirect(host.as_deref(), port, &parts.uri);
        }
        let Some(pool) = self.pools.get(route.upstream()) else {
            return respond(ErrorKind::NoUpstream);
        };
        // A declared length over the limit is refused before any node is
        // bothered; a body that only grows past it is cut off on the way.
        if let Some(limit) = opts.max_body_bytes {
            if body.size_hint().lower() > limit {
                return respond(ErrorKind::BodyTooLarge);
            }
        }

        let pool = pool.clone();
        let sticky_in: Option<Vec<u8>> = pool
            .options
            .sticky_cookie
            .as_deref()
            .and_then(|name| headers::cookie(&parts.headers, name))
            .map(<[u8]>::to_vec);
        let trusted = self
            .trusted_proxies
            .iter()
            .any(|p| p.contains(conn.peer.ip()));
        let exchange = Exchange {
            pool: pool.clone(),
            route: route.clone(),
            conn: conn.clone(),
            trusted,
            host,
            arrived,
            up_facts,
            sticky_in: sticky_in.clone(),
        };
        let sticky_in = sticky_in.as_deref();
        let Some(rc) = &opts.cache else {
            // Boxed, here and below: an async fn's future is as large as
            // its largest state, and a caller that holds one inline is
            // larger still (and copied whole when it moves). Each level
            // boxed once keeps every request's futures at a few KiB
            // (measured: 23 KiB for `handle` before).
            let resp = Box::pin(forward_exchange(exchange, parts, body)).await;
            return finish(resp, opts, &pool, sticky_in, false);
        };
        let rc = &rc.0;
        if parts.method.as_str() == "PURGE" {
            return purge(rc, route.id(), &parts, conn.peer.ip());
        }
        if matches!(
            upgrade::offer(&parts.headers, parts.version, &opts.upgrades),
            upgrade::Offer::Forward(_)
        ) {
            // A protocol switch is an exchange, not a representation.
            let mut resp = Box::pin(forward_exchange(exchange, parts, body)).await;
            resp.headers_mut()
                .insert(X_CACHE, HeaderValue::from_static(x_cache::BYPASS));
            return finish(resp, opts, &pool, sticky_in, false);
        }
        // The key and the cache's view are the request as the client sent
        // it (before any rewrite); the owned parts go to `fetch`.
        let view = head_view(&parts);
        let key = route_key(route.id(), &view);
        let resp = Box::pin(rc.cache.serve_keyed(
            key.as_bytes(),
            &view,
            move |cond: Option<HeaderMap>| {
                let mut parts = parts;
                cache::apply_conditional(&mut parts.headers, cond.as_ref());
                forward_exchange(exchange, parts, body)
            },
        ))
        .await;
        finish(resp, opts, &pool, sticky_in, true)
    }
}

/// What [`forward_exchange`] needs besides the request: owned, so that the
/// forwarding can run as a `'static` future (the cache runs it after the
/// client has its answer when it refreshes in the background).
struct Exchange {
    pool: Arc<Pool>,
    route: Arc<Route>,
    conn: ConnInfo,
    /// Whether the client is a trusted proxy.
    trusted: bool,
    /// The request's host (without port), as routed.
    host: Option<String>,
    /// When a cold-start hold's deadline counts from.
    arrived: Option<Instant>,
    /// What upstream-side rate-limit rules key on (headers and target as
    /// received), when the route has such rules.
    up_facts: Option<(HeaderMap, String)>,
    /// The sticky cookie's value the client sent.
    sticky_in: Option<Vec<u8>>,
}

/// The node a response came from (a response extension set by
/// [`forward_exchange`], taken off by [`finish`]).
#[derive(Debug, Clone, Copy)]
struct FromNode(usize);

/// Picks a node of the route's upstream and forwards the request, retrying
/// on other nodes within the route's policy (and holding it for a cold
/// start): everything after the route's checks. The response is the
/// node's (with [`FromNode`]) or one of xlb's errors; response header
/// edits and the sticky cookie are not applied yet.
async fn forward_exchange(
    x: Exchange,
    mut parts: request::Parts,
    body: Incoming,
) -> Response<ProxyBody> {
    let Exchange {
        pool,
        route,
        conn,
        trusted,
        host,
        arrived,
        up_facts,
        sticky_in,
    } = x;
    let pool_ref = &pool;
    let pool = &**pool_ref;
    let opts = route
        .spec()
        .extensions
        .get::<RouteOptions>()
        .unwrap_or_else(|| default_options());
    let limiter = opts.rate_limit.as_ref().map(|l| &*l.0);
    let note = record::Note::of(&parts); // request record (before the extensions go)
    let upgrade = match upgrade::offer(&parts.headers, parts.version, &opts.upgrades) {
        upgrade::Offer::Forward(p) => Some(p),
        upgrade::Offer::Dropped(p) => {
            log::debug!(
                "{}: upgrade to {p:?} not allowed on route {}: forwarded as a plain request",
                conn.peer,
                route.id()
            );
            None
        }
        upgrade::Offer::None => None,
    };
    let on_upgrade = match upgrade {
        Some(_) => parts.extensions.remove::<OnUpgrade>(),
        None => None,
    };
    let hash_key: Option<Vec<u8>> = match &pool.options.hash_on {
        HashOn::ClientIp => None,
        HashOn::Header(name) => parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => headers::cookie(&parts.headers, name).map(<[u8]>::to_vec),
        HashOn::Uri => parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().as_bytes().to_vec()),
    };
    // What the client asked for, port included (`pass_host: pass`).
    let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // Only a bodiless idempotent request may be sent twice: its whole
    // content is the head, which is still here, and doing it twice is
    // harmless.
    let replayable = idempotent(&parts.method) && body.is_end_stream();

    let target = opts
        .path_rewrite
        .as_ref()
        .and_then(|rw| rewrite::rewrite_path(&parts.uri, rw))
        .or_else(|| parts.uri.path_and_query().cloned())
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let down = Downstream {
        client_ip: conn.peer.ip(),
        proto: if conn.tls { "https" } else { "http" },
        host: host.as_deref(),
        version: parts.version,
        trusted,
    };
    parts.uri = Uri::from(target);
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarded(&mut parts.headers, &down);
    headers::apply_edits(&mut parts.headers, &opts.request_headers);
    parts.headers.remove(header::HOST);
    parts.extensions = http::Extensions::new();
    parts.version = http::Version::HTTP_11;
    let (up_body, mut watch) = request_body(body, opts.max_body_bytes);

    pool.budget.record_request();
    let mut body = Some(up_body);
    let mut tried: Vec<usize> = Vec::new();
    let mut busy: Vec<usize> = Vec::new();
    let mut last_error: Option<ForwardError> = None;
    let mut retries = 0;
    let cold = opts.cold_start;
    let mut hold: Option<Hold> = None;
    // The buffered body, once the request is held.
    let mut replay: Option<Replay> = None;
    // Nodes that refused the connection since the last wait.
    let mut refused: Vec<usize> = Vec::new();
    let mut refusal: Option<ForwardError> = None;
    // Nodes the upstream-side rate limit admitted this request to.
    let mut admitted: Vec<usize> = Vec::new();
    // Whether a replayable request was sent again after a pooled
    // connection closed under it (see `closed_on_reuse`).
    let mut reuse_retried = false;
    loop {
        let exclude: Vec<usize> = tried.iter().chain(&busy).chain(&refused).copied().collect();
        let ctx = PickContext::new(conn.peer.ip())
            .with_exclude(&exclude)
            .with_hash_key(hash_key.as_deref())
            .with_sticky(sticky_in.as_deref());
        let Some(node) = pool.balancer.pick(&ctx) else {
            if let Some(cfg) = cold {
                // Nodes refuse or are all down: they may be starting.
                let starting = !refused.is_empty()
                    || pool.upstream.unavailable(&exclude) == Some(Unavailable::AllUnhealthy);
                if starting {
                    let hold = hold.get_or_insert_with(|| {
                        Hold::new(cfg, arrived.unwrap_or_else(Instant::now))
                    });
                    let held = match (&replay, body.take()) {
                        (Some(_), _) => true,
                        // The body went to a node that failed after it
                        // was sent: nothing left to hold.
                        (None, None) if !replayable => false,
                        (None, b) => {
                            let b = b.unwrap_or_else(empty_up_body);
                            let buffering =
                                cold_start::buffer(b, cfg.max_body_bytes, opts.timeouts.send);
                            let buffering =
                                Box::pin(tokio::time::timeout_at(hold.deadline(), buffering));
                            match buffering.await {
                                Err(_) => return hold.timeout_response(),
                                Ok(Buffered::Failed(e)) => return e.into_response(),
                                Ok(Buffered::Whole(r)) => {
                                    replay = Some(r);
                                    true
                                }
                                Ok(Buffered::TooLarge(b)) => {
                                    body = Some(b);
                                    false
                                }
                            }
                        }
                    };
                    if held {
                        if !Box::pin(hold.wait()).await {
                            log::debug!(
                                "upstream {}: no node up within {:?} (cold start)",
                                pool.id,
                                cfg.deadline
                            );
                            return hold.timeout_response();
                        }
                        refused.clear();
                        busy.clear();
                        continue;
                    }
                    // Not held (a body too large to buffer): as
                    // without cold start.
                }
            }
            // Every node was tried: the client gets the last failure
            // (a 502 says more than "no node" would).
            if let Some(e) = last_error.or(refusal) {
                return e.into_response();
            }
            if !busy.is_empty() {
                log::debug!(
                    "upstream {}: every node is at max_requests_per_node",
                    pool.id
                );
                return unavailable(ErrorKind::UpstreamBusy);
            }
            let reason = pool
                .upstream
                .unavailable(&exclude)
                .map(|u| u.to_string())
                .unwrap_or_else(|| "no node available".into());
            log::debug!("upstream {}: {reason}", pool.id);
            return unavailable(ErrorKind::NoHealthyNode);
        };
        let flight = pool.upstream.begin(node);
        if let Some(max) = pool.options.max_requests_per_node {
            // Counted first, checked after: concurrent requests cannot
            // all slip under the limit together.
            if pool.upstream.state(node).in_flight() > u64::from(max) {
                drop(flight);
                busy.push(node);
                continue;
            }
        }
        let addr = pool.upstream.nodes()[node].addr;
        note.attempt(addr); // request record
        if let (Some(limiter), Some((headers, target))) = (limiter, &up_facts) {
            if !admitted.contains(&node) {
                let facts = RequestFacts::new(
                    conn.peer.ip(),
                    host.as_deref().unwrap_or(""),
                    target,
                    headers,
                )
                .with_upstream(&pool.id, addr);
                let verdict = Box::pin(limiter.admit(Side::Upstream, &facts)).await;
                note.rate_limit(record::RateLimitVerdict::of(&verdict)); // request record
                if let Err(r) = verdict {
                    log::debug!("{} → {addr}: {r}", conn.peer);
                    return rate_limited(&r);
                }
                admitted.push(node);
            }
        }
        if let Some(e) = last_error.take() {
            if !pool.budget.try_retry() {
                log::debug!("upstream {}: retry budget exhausted: {e}", pool.id);
                return e.into_response();
            }
            note.retry(e.kind().reason()); // request record: a retry is sent
            Box::pin(tokio::time::sleep(backoff(&opts.retry, retries - 1))).await;
        }
        tried.push(node);
        let mut head = parts.clone();
        if let Some(h) = rewrite::upstream_host(&opts.pass_host, client_host.as_ref(), addr) {
            head.headers.insert(header::HOST, h);
        }
        if let Some(protocol) = &upgrade {
            upgrade::restore(&mut head.headers, protocol.clone());
        }
        let attempt_body = match &replay {
            Some(r) => {
                let (b, w) = request_body(r.body(), None);
                watch = w;
                b
            }
            None => body.take().unwrap_or_else(empty_up_body),
        };
        let req = Request::from_parts(head, attempt_body);
        let started = Instant::now();
        let sent = Box::pin(forward::send(
            &pool.client,
            addr,
            req,
            upgrade.is_some(),
            &opts.timeouts,
            &watch,
        ))
        .await;
        match sent {
            Ok(mut resp) => {
                note.response_head(
                    Some(watch.connect_time(started)),
                    started.elapsed(),
                    watch.bytes(),
                ); // request record
                let status = resp.status();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    let offered = match (&upgrade, &on_upgrade) {
                        (Some(p), Some(_)) => {
                            upgrade::switched_to_offered(resp.headers().get(header::UPGRADE), p)
                        }
                        _ => false,
                    };
                    if !offered {
                        // A tunnel the route did not allow (h2c to a node
                        // that switches on its own): never relayed.
                        log::debug!(
                            "{addr}: 101 to {:?} not offered to it: 502",
                            resp.headers().get(header::UPGRADE)
                        );
                        return respond(ErrorKind::UnexpectedUpgrade);
                    }
                }
                let now = Instant::now();
                pool.upstream.observe(
                    node,
                    now.saturating_duration_since(started),
                    !status.is_server_error(),
                    now,
                );
                let outcome = response_outcome(status);
                // A success is recorded when the body is done (or the
                // client leaves), so that a node failing mid-body counts
                // as one failure, not a success and a failure.
                let deferred = match (outcome, pool.passive.is_some()) {
                    (Outcome::Success, true) if upgrade.is_none() => Some(BodyOutcome {
                        pool: pool_ref.clone(),
                        node,
                        failed: false,
                    }),
                    _ => {
                        pool.record(node, outcome);
                        None
                    }
                };
                let upgraded = match (&on_upgrade, status) {
                    (Some(_), StatusCode::SWITCHING_PROTOCOLS) => {
                        Some(hyper::upgrade::on(&mut resp))
                    }
                    _ => None,
                };
                let (mut parts, incoming) = resp.into_parts();
                let protocol = parts.headers.get(header::UPGRADE).cloned();
                response_head(&mut parts);
                let body = match (upgraded, on_upgrade) {
                    (Some(up), Some(down)) => {
                        if let Some(p) = protocol {
                            upgrade::restore(&mut parts.headers, p);
                        }
                        let label = format!("{} ↔ {addr}", conn.peer);
                        upgrade::splice(down, up, opts.timeouts.idle, label, flight);
                        empty_body()
                    }
                    _ => response_body(incoming, opts.timeouts.idle, (flight, deferred)),
                };
                // Response header edits and the sticky cookie are the
                // caller's (outside the cache): see `finish`.
                parts.extensions.insert(FromNode(node));
                return Response::from_parts(parts, body);
            }
            Err((e, back)) if cold.is_some() && e.is_refusal() => {
                // Cold start: nothing was sent; another node now, or
                // a wait when every node refuses. Not a retry, and
                // not a passive-health failure (the node may be
                // starting).
                pool.upstream
                    .observe(node, started.elapsed(), false, Instant::now());
                drop(flight);
                log::debug!("{addr}: {e}; cold start");
                tried.pop();
                refused.push(node);
                if replay.is_none() {
                    body = back.map(Request::into_body);
                }
                refusal = Some(e);
            }
            Err((e, _)) if replayable && !reuse_retried && e.closed_on_reuse() => {
                // A pooled connection the node closed as idle while the
                // request was on its way: an idempotent bodiless request
                // goes again, once, on another connection (this node may
                // be picked again). Not a retry of the route's policy and
                // not a node failure.
                reuse_retried = true;
                drop(flight);
                log::debug!("{addr}: {e}; pooled connection closed, sending again");
                tried.pop();
            }
            Err((e, back)) => {
                if let Some(kind) = e.node_failure() {
                    pool.upstream
                        .observe(node, started.elapsed(), false, Instant::now());
                    pool.record(node, Outcome::Failure(kind));
                }
                drop(flight);
                let retry = retries < opts.retry.attempts
                    && e.retryable(replayable)
                    && (back.is_some() || replayable || replay.is_some());
                log::debug!("{addr}: {e}{}", if retry { "; retrying" } else { "" });
                if !retry {
                    return e.into_response();
                }
                retries += 1;
                if replay.is_none() {
                    body = back.map(Request::into_body);
                }
                last_error = Some(e);
            }
        }
    }
}

/// A node's successful response head, whose passive-health outcome is
/// recorded when its body ends: a failure if the node breaks the body or
/// falls silent (the idle timeout), else a success when the body is done
/// or dropped (a client leaving is not the node's fault).
struct BodyOutcome {
    pool: Arc<Pool>,
    node: usize,
    failed: bool,
}

impl Drop for BodyOutcome {
    fn drop(&mut self) {
        if !self.failed {
            self.pool.record(self.node, Outcome::Success);
        }
    }
}

impl forward::OnBodyFailure for (InFlight, Option<BodyOutcome>) {
    fn body_failed(&mut self, kind: FailureKind) {
        if let Some(o) = &mut self.1 {
            if !o.failed {
                o.failed = true;
                o.pool.record(o.node, Outcome::Failure(kind));
            }
        }
    }
}

/// Applies what comes after forwarding, outside the cache: the route's
/// response header edits (on a node's response, or one from the store;
/// not on xlb's own errors) and the sticky cookie (only when a node was
/// picked for this request).
fn finish(
    mut resp: Response<ProxyBody>,
    opts: &RouteOptions,
    pool: &Pool,
    sticky_in: Option<&[u8]>,
    cached: bool,
) -> Response<ProxyBody> {
    let node = resp.extensions_mut().remove::<FromNode>();
    let content = node.is_some() || (cached && !resp.headers().contains_key(ERROR_HEADER));
    if content {
        headers::apply_edits(resp.headers_mut(), &opts.response_headers);
    }
    if let (Some(name), Some(FromNode(node))) = (&pool.options.sticky_cookie, node) {
        let value = pool.upstream.cookie_value(node);
        if sticky_in != Some(value.as_bytes()) {
            if let Some(c) = headers::session_cookie(name, value) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
    }
    resp
}

/// A copy of the request head without its extensions (what the cache
/// reads: method, target, version, fields).
fn head_view(parts: &request::Parts) -> request::Parts {
    let (mut view, ()) = Request::new(()).into_parts();
    view.method = parts.method.clone();
    view.uri = parts.uri.clone();
    view.version = parts.version;
    view.headers = parts.headers.clone();
    view
}

/// The cache key of a request on a route: the route's id, a NUL, then
/// [`cache::cache_key`] (host + path and query). Naming the route keeps
/// apart two routes that see the same URL (header-matched canaries,
/// listeners with their own routes) and so different upstreams.
pub fn route_key(route: &str, parts: &request::Parts) -> String {
    let mut key = String::with_capacity(route.len() + 64);
    key.push_str(route);
    key.push('\0');
    key.push_str(&cache::cache_key(parts));
    key
}

/// The header that turns a `PURGE` into a purge of every key starting
/// with the request's host and path.
pub const PURGE_PREFIX_HEADER: &str = "x-purge-prefix";

/// A `PURGE` on a caching route: never forwarded. From a source in
/// `l7.cache.purge_from`, removes the URL's entry (all its variants), or
/// with `x-purge-prefix: 1` every entry under it, and answers 200 with a
/// JSON line saying what; else 405 (`purge_from` empty) or 403.
fn purge(rc: &RouteCache, route: &str, parts: &request::Parts, ip: IpAddr) -> Response<ProxyBody> {
    if rc.purge_from.is_empty() {
        let mut resp = respond(ErrorKind::PurgeDisabled);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if !rc.may_purge(ip) {
        log::debug!("{ip}: PURGE refused (not in l7.cache.purge_from)");
        return respond(ErrorKind::PurgeForbidden);
    }
    let url = cache::cache_key(parts);
    let key = route_key(route, parts);
    let by_prefix = parts
        .headers
        .get(PURGE_PREFIX_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    let js = |s: &str| serde_json::Value::from(s).to_string();
    let text = if by_prefix {
        rc.cache.purge_prefix(&key);
        format!(
            r#"{{"purged":"prefix","route":{},"prefix":{}}}"#,
            js(route),
            js(&url)
        )
    } else {
        let removed = rc.cache.purge_key(&key);
        format!(
            r#"{{"purged":"key","route":{},"key":{},"removed":{}}}"#,
            js(route),
            js(&url),
            u8::from(removed)
        )
    };
    log::info!("{ip}: PURGE {text}");
    let mut resp = Response::new(text_body(format!("{text}\n")));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The passive-health reading of a node's response: a gateway error
/// (502/503/504: the node, or a proxy in front of it, could not serve)
/// is a failure; anything else, a 500 included (the application
/// answered), is a success.
fn response_outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        s @ (502..=504) => Outcome::Failure(FailureKind::Status(s)),
        _ => Outcome::Success,
    }
}

/// The answer to a request a rate limit rejected.
fn rate_limited(r: &Rejection) -> Response<ProxyBody> {
    let kind = match r.reason {
        RejectReason::OverLimit => ErrorKind::RateLimited,
        RejectReason::Denied => ErrorKind::Denied,
        RejectReason::TableFull => ErrorKind::RateLimitTableFull,
    };
    ProxyError::new(kind)
        .with_status(r.status)
        .with_retry_after(r.retry_after_secs())
        .into_response()
}

fn unavailable(kind: ErrorKind) -> Response<ProxyBody> {
    ProxyError::new(kind).with_retry_after(1).into_response()
}

/// `308 Permanent Redirect` to the same host and target over `https`.
fn redirect(host: Option<&str>, port: u16, uri: &Uri) -> Response<ProxyBody> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(location) = host.and_then(|h| rewrite::https_location(h, port, target)) else {
        return respond(ErrorKind::NoHostToRedirect);
    };
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        for (retry, full) in [(0, 10), (1, 20), (2, 40), (3, 50), (9, 50), (100, 50)] {
            let d = backoff(&p, retry);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn only_gateway_errors_count_against_a_node() {
        for s in [502, 503, 504] {
            let status = StatusCode::from_u16(s).unwrap();
            assert_eq!(
                response_outcome(status),
                Outcome::Failure(FailureKind::Status(s))
            );
        }
        for s in [200, 101, 304, 404, 429, 500, 501, 505] {
            let status = StatusCode::from_u16(s).unwrap();
            assert_eq!(response_outcome(status), Outcome::Success, "{s}");
        }
    }

    #[test]
    fn only_safe_methods_are_replayed() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(idempotent(&m));
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m));
        }
    }
}
