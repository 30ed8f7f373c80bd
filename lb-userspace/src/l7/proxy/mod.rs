//! One request's life in the proxy, as named phases over one per-request
//! context. Every way a phase can fail is a response with a status and an
//! `x-xlb-error` reason from [`super::error`], never a hang or a panic.
//!
//! ```text
//!  request received ─► route resolved ─► request filters ─► upstream selected
//!   (target check)      (router;          (plugins: request   (the route's pool;
//!                        400/404/421)      and body phases;    context built)
//!                                          downstream rate           │
//!                                          limits, https             │
//!                                          redirect, 413)            │
//!                      ┌─────────────────────────────────────────────┘
//!                      ▼
//!                cache lookup ──hit──────────────────────────────┐
//!              (PURGE answered,                                   │
//!               upgrades bypass)                                  │
//!                      │ miss / no cache                          │
//!                      ▼                                          │
//!   ┌──► pick a node ──► upstream request ──► upstream response ──┤
//!   │    (balancer,       (upstream rate      (101 check,         │
//!   │     busy limit)      limits, retry       passive health,    │
//!   │        │             budget, send)       body watch)        │
//!   │        ▼                  │ failed                          ▼
//!   └── hold (cold start) ◄─────┴─► retry / send again ──► response filters
//!                                                         (header edits,
//!                                                          sticky cookie)
//! ```
//!
//! The files follow the phases: [`route`] (request received → route
//! resolved), [`request_filters`], [`context`] (what every later phase
//! reads), [`cache_lookup`], [`attempts`] (the node pick / hold / send /
//! retry state machine), [`upstream_request`] (the head a node gets),
//! [`upstream_response`] (what comes back, passive health), and
//! [`response_filters`]. [`pool`] is the upstream as the phases use it.
//!
//! Rate limits come before the cache, as in nginx (`limit_req` runs
//! before `proxy_cache`): a rejected client gets its 429 even for a cached
//! URL, and a cache hit still counts against its rules; upstream-side rules
//! only see the requests that reach a node. The route's response header
//! edits and the sticky cookie are applied outside the cache: edits to
//! every response from a node or from the store, the cookie only when a
//! node was picked for this request (the upstream response phase tags the
//! node's response with [`response_filters::ServedBy`], which travels
//! through the cache with it).
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
mod attempts;
mod cache_lookup;
mod context;
mod pool;
mod request_filters;
mod response_filters;
mod route;
mod upstream_request;
mod upstream_response;

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use http::{Request, Response};
use http_body_util::Full;

use crate::net::Prefix;

use super::{
    body::ClientBody,
    box_in_place::box_in_place,
    error::{respond, ErrorKind},
    forward::ProxyBody,
    lane::{General, Lane},
    plugin::{read_body, RequestCx, Verdict},
    record,
    router::Resolver,
    server::ConnInfo,
};

pub use cache_lookup::{route_key, PURGE_PREFIX_HEADER};
pub use pool::Pool;

/// The routing table and the upstreams, as one handler.
pub struct Proxy {
    routes: Arc<dyn Resolver>,
    /// Looked up once per request: foldhash, not SipHash (the names come
    /// from the config).
    pools: HashMap<String, Arc<Pool>, foldhash::fast::RandomState>,
    /// Sources whose forwarding headers are kept (see
    /// [`super::headers::add_forwarded`]).
    trusted_proxies: Vec<Prefix>,
}

impl Proxy {
    /// A proxy over `routes` and `pools` (by upstream id; pools may be
    /// shared by the proxies of several listeners).
    pub fn new(routes: Arc<dyn Resolver>, pools: HashMap<String, Arc<Pool>>) -> Proxy {
        Proxy {
            routes,
            pools: pools.into_iter().collect(),
            trusted_proxies: Vec::new(),
        }
    }

    /// This proxy, keeping the forwarding headers of requests from
    /// `trusted` sources (`l7.trusted_proxies`); none by default.
    pub fn with_trusted_proxies(mut self, trusted: Vec<Prefix>) -> Proxy {
        self.trusted_proxies = trusted;
        self
    }

    /// Answers one request: the phases in order. Each phase either hands
    /// the next one what it found or ends the request with a response;
    /// every response after routing goes through the response filters.
    ///
    /// Takes the proxy by `Arc`: the caller's future is this one, with no
    /// wrapper that would hold the `Arc` beside it (a wrapper cost one
    /// more move of this ~3 KiB future per request).
    pub fn handle(
        self: Arc<Self>,
        req: Request<ClientBody>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
        self.handle_in::<General>(req, conn)
    }

    /// [`Proxy::handle`] compiled for lane `L` (see `l7::lane`): the
    /// server's handler calls this with the lane the request came by.
    pub async fn handle_in<L: Lane>(
        self: Arc<Self>,
        req: Request<ClientBody>,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let note = record::Note::of(&parts); // request record (l7::record)
                                             // request received → route resolved
        let routed = match route::resolve(&*self.routes, &mut parts, &conn).await {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        let route = routed.route.clone();
        let labels = route.labels();
        note.route(&labels.id, &labels.upstream); // request record
        let opts = &route.spec().options;
        // A cold-start hold's deadline counts from here (plugins and a
        // rate-limit delay included); the clock is read only for routes
        // that hold.
        let arrived = opts.cold_start.map(|_| Instant::now());
        let cx = RequestCx {
            peer: conn.peer,
            route: route.id(),
            host: routed.host.as_ref().map(|h| h.as_str()),
            tls: conn.tls,
        };
        // request filters: the route's plugins, then its rate limits,
        // redirect and body size
        let verdict = match opts.plugins.is_empty() {
            true => Verdict::Continue,
            false => opts.plugins.request(&mut parts, cx).await,
        };
        // The response filters' view of the request is taken after the
        // plugins' request phase: a header a plugin set (`request-id`) is
        // seen by the response phase.
        let mut after = response_filters::After::new(route.clone(), &parts);
        if let Verdict::Respond(resp) = verdict {
            return after.apply(resp, false);
        }
        // body phase: only on routes whose plugins read bodies
        let body = match opts.plugins.body_limit() {
            None => body,
            Some(limit) => {
                let whole = match read_body(body, limit, opts.timeouts.send).await {
                    Ok(b) => b,
                    Err(kind) => return after.apply(respond(kind), false),
                };
                if let Verdict::Respond(resp) = opts.plugins.request_body(&parts, &whole) {
                    return after.apply(resp, false);
                }
                ClientBody::Buffered(Full::new(whole))
            }
        };
        let up_facts = match request_filters::run(&routed, &parts, &body, &conn, &note).await {
            Ok(f) => f,
            Err(resp) => return after.apply(resp, false),
        };
        // upstream selected: the route's, or the one a plugin chose
        let chosen = match opts.plugins.is_empty() {
            true => None,
            false => opts.plugins.upstream(&parts, cx),
        };
        let upstream = chosen.as_deref().unwrap_or(route.upstream());
        if let Some(chosen) = &chosen {
            // request record: a plugin's choice (its shared string)
            note.route(&route.labels().id, chosen);
        }
        let Some(pool) = self.pools.get(upstream) else {
            return after.apply(respond(ErrorKind::NoUpstream), false);
        };
        let trusted = self
            .trusted_proxies
            .iter()
            .any(|p| p.contains(conn.peer.ip()));
        let ctx = context::RequestCtx {
            sticky_in: context::sticky_cookie(pool, &parts),
            host: routed.host,
            route: routed.route,
            pool: pool.clone(),
            conn,
            trusted,
            arrived,
            up_facts,
            note,
        };
        after.upstream_selected(&ctx);
        // cache lookup, then the upstream phases (or a stored response)
        let (resp, through_cache, served) = match ctx.opts().cache.clone() {
            // Boxed: inline, the cache phase's 1.4 KiB future made every
            // request's future (this one) 3 KiB instead of 2, and it is
            // moved and allocated once per request, on routes without a
            // cache too.
            Some(cache) => {
                let (resp, through_cache) =
                    Box::pin(cache_lookup::run(cache, ctx, parts, body)).await;
                (resp, through_cache, None)
            }
            // Built in its box (see `box_in_place`): through the cache
            // phase's future the request was moved in and out once more.
            None => {
                let (resp, served) =
                    box_in_place(|| attempts::forward_served::<L>(ctx, parts, body)).await;
                (resp, false, served)
            }
        };
        // response filters
        after.apply_served(resp, through_cache, served)
    }
}
