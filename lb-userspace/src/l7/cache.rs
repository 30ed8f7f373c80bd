//! An HTTP response cache for a shared cache (RFC 9111, plus RFC 5861's
//! `stale-while-revalidate` / `stale-if-error`), wrapped around the
//! proxy's forwarding: [`Cache::serve`] answers from the store or calls
//! the proxy's `fetch` (which keeps its own retries and timeouts).
//!
//! # Calling it
//!
//! ```ignore
//! let resp = cache.serve(&parts, move |cond: Option<HeaderMap>| async move {
//!     // cond == None: forward the client's request unchanged.
//!     // cond == Some(h): drop the client's If-None-Match, If-Modified-Since,
//!     // If-Match, If-Unmodified-Since and If-Range, add `h` (maybe empty):
//!     // `xlb::l7::cache::apply_conditional(&mut up_parts.headers, cond.as_ref())`.
//!     forward(up_parts, body).await // -> Response<ProxyBody>; errors as 5xx
//! }).await;
//! ```
//! `parts` is the client's request head as it arrived (its `Host` / URI
//! authority and path-and-query make the key). `fetch` must be `'static`
//! because a `stale-while-revalidate` refresh runs it after the client has
//! its answer. An upstream failure is any 5xx (xlb's own 502/504 included).
//!
//! # What is decided here
//!
//! * **Key**: lower-cased host (URI authority, else `Host`, port kept) +
//!   path and query, e.g. `example.com/a?b=1`; the scheme is not part of
//!   it. GET and HEAD share entries; only GET responses are stored. With
//!   `Vary`, the key also holds the listed request fields' values (the
//!   primary key then holds a small marker with the field names).
//! * **Stored**: a final status of [`entry::CACHEABLE_BY_DEFAULT`] (206 is
//!   never stored: range requests bypass the cache), or any other status
//!   with `s-maxage`/`max-age`/`Expires` or `public`. Never: request or
//!   response `no-store`, `private` (qualified or not), `Vary: *`, xlb's
//!   own error responses, a request with `Authorization` unless `public`,
//!   `s-maxage` or `must-revalidate`, `Set-Cookie` unless `public` — and
//!   then the stored copy has no `Set-Cookie` (only the client whose
//!   response set it gets it: a shared cache handing one user's cookie to
//!   everyone is the classic leak). `no-cache` is stored only with a
//!   validator, and revalidated on every use.
//! * **Freshness**: `s-maxage` > `max-age` > `Expires − Date`; else,
//!   heuristically, 10 % of `Date − Last-Modified` capped at
//!   [`CacheConfig::heuristic_max`] (only for the default-cacheable
//!   statuses or `public`; `heuristic_fraction: 0` turns it off). Age per
//!   RFC 9111 §4.2.3; every answer from the store carries `Age`.
//! * **Revalidation**: a stale entry with `ETag`/`Last-Modified` makes the
//!   upstream request conditional; a 304 freshens the stored fields and the
//!   client gets the stored response with `X-Cache: REVALIDATED` (or a 304
//!   when its own conditional matches). A fresh entry answers a matching
//!   `If-None-Match` (else `If-Modified-Since`) with 304 itself.
//! * **Stale**: served only under an explicit `stale-while-revalidate`
//!   (then one background refresh per entry at a time) or
//!   `stale-if-error` (upstream 5xx), never under `no-cache`,
//!   `must-revalidate` or `proxy-revalidate`, nor when the request has
//!   `no-cache`/`max-age`/`min-fresh` (swr only).
//! * **Coalescing**: concurrent GETs that must go upstream for one key
//!   (miss, or stale revalidation) send one request; the others wait up to
//!   [`CacheConfig::coalesce_wait`] for the leader's response to be stored
//!   — that is, for its body to reach the leader's client, since the body
//!   is teed, not read ahead — then look again. If the leader's response
//!   is not storable, failed, or the wait ran out, the waiters go upstream
//!   each on its own (a 5xx with a `stale-if-error` entry: they serve it
//!   stale). A key whose response was not storable by its own directives
//!   is not coalesced for [`CacheConfig::pass_memory`] ("hit-for-pass"),
//!   so an uncacheable hot URL does not serialize its clients.
//! * **Memory**: moka's sync cache (below) bounds the weighted size (body +
//!   headers + key + 256 B) at [`CacheConfig::max_bytes`]; bodies over
//!   [`CacheConfig::max_object_bytes`] stream through uncached.
//! * **Unsafe methods** (POST, PUT, DELETE, PATCH…) pass through
//!   (`X-Cache: BYPASS`) and, on a 2xx/3xx, purge their target's key
//!   (RFC 9111 §4.4; `Location`/`Content-Location` are not purged).
//! * Request `no-store`: the response is not stored, but a stored one may
//!   still answer. Request `only-if-cached` without a usable entry: 504.
//!   `max-stale` is ignored.
//!
//! # Why moka
//!
//! The store is `moka::sync::Cache`: a maintained, widely used concurrent
//! cache (a port of Caffeine) whose capacity can be a *weight* (here the
//! entry's bytes), with TinyLFU admission and LRU eviction so one-hit
//! wonders do not flush popular entries, per-entry expiry (entries are
//! dropped once they can no longer be served or revalidated), an eviction
//! listener (for the evicted-bytes counter) and predicate invalidation
//! (purge by prefix). The sync flavour is used because every store
//! operation here is short and non-blocking, and it can be called from a
//! body's `poll_frame` when the teed body completes.
use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header, request, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use moka::notification::RemovalCause;

use self::{
    directives::RequestDirectives,
    entry::{evaluate, Head, NotStored, Stored},
    flight::{finish, FlightGuard, Flights, Join, Outcome},
    tee::{Abandoned, TeeBody},
};
use super::{
    body::ProxyBody,
    error::{respond, ErrorKind},
};

pub mod directives;
pub mod entry;
mod flight;
pub mod http_date;
pub mod targeted;
mod tee;

/// The response header that says how the cache answered.
pub const X_CACHE: &str = "x-cache";

/// `X-Cache` values.
pub mod x_cache {
    /// From the store, no upstream request.
    pub const HIT: &str = "HIT";
    /// From the upstream (whether or not it was then stored).
    pub const MISS: &str = "MISS";
    /// A stale entry (`stale-while-revalidate` or `stale-if-error`).
    pub const STALE: &str = "STALE";
    /// The cache was not consulted (unsafe method, range request).
    pub const BYPASS: &str = "BYPASS";
    /// A stale entry the upstream confirmed with a 304.
    pub const REVALIDATED: &str = "REVALIDATED";
}

/// The conditional and range request fields the cache replaces when it
/// sends its own request.
const CLIENT_CONDITIONALS: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Applies what `fetch` was given to the upstream request's fields: `None`
/// leaves them; `Some(h)` drops the client's conditional and range fields
/// and adds `h`.
pub fn apply_conditional(headers: &mut HeaderMap, cond: Option<&HeaderMap>) {
    let Some(cond) = cond else { return };
    for name in &CLIENT_CONDITIONALS {
        headers.remove(name);
    }
    for (name, value) in cond {
        headers.append(name.clone(), value.clone());
    }
}

/// The time the cache reads: wall-clock time, because HTTP's `Date`,
/// `Expires` and `Last-Modified` are.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// Wall-clock time that advances with tokio's clock from the moment it was
/// made: monotonic (a wall-clock step does not age the whole store at
/// once) and paused with tokio's test clock.
#[derive(Debug)]
pub struct TokioClock {
    wall: SystemTime,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> TokioClock {
        TokioClock {
            wall: SystemTime::now(),
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> TokioClock {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.base.elapsed()
    }
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Upper bound of the store's weighted size (bytes).
    pub max_bytes: u64,
    /// Larger bodies stream through uncached.
    pub max_object_bytes: u64,
    /// Fraction of `Date − Last-Modified` used as heuristic freshness;
    /// 0 disables heuristics.
    pub heuristic_fraction: f64,
    /// Cap of the heuristic freshness.
    pub heuristic_max: Duration,
    /// How long a coalesced request waits for its leader.
    pub coalesce_wait: Duration,
    /// How long a stale entry with a validator is kept for conditional
    /// revalidation.
    pub stale_retention: Duration,
    /// How long a key whose response was not storable skips coalescing.
    pub pass_memory: Duration,
    /// A targeted cache-control field aimed at xlb alone (RFC 9213), e.g.
    /// `xlb-cache-control`: it rules over `CDN-Cache-Control`, which
    /// rules over `Cache-Control` (see [`targeted`]); it is removed from
    /// responses to clients.
    pub targeted_field: Option<HeaderName>,
    /// The clock (tests inject one; the default follows tokio's).
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            max_bytes: 256 << 20,
            max_object_bytes: 8 << 20,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86400),
            coalesce_wait: Duration::from_secs(10),
            stale_retention: Duration::from_secs(3600),
            pass_memory: Duration::from_secs(30),
            targeted_field: None,
            clock: Arc::new(TokioClock::new()),
        }
    }
}

/// Counters (monotonic, since the cache was made) and the store's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answered from a fresh entry (including coalesced waiters and 304s
    /// made by the cache).
    pub hits: u64,
    /// Went upstream without a usable entry.
    pub misses: u64,
    /// Answered from a stale entry (swr or stale-if-error).
    pub stale: u64,
    /// Of `stale`, because the upstream failed.
    pub stale_if_error: u64,
    /// Stale entries freshened by a 304 (foreground or background).
    pub revalidated: u64,
    /// Requests that waited for another's upstream request and were then
    /// answered from the store.
    pub coalesced: u64,
    /// Background (`stale-while-revalidate`) refreshes started.
    pub background_refreshes: u64,
    /// Requests that did not consult the cache.
    pub bypass: u64,
    /// Responses (or freshened entries) written to the store.
    pub stored: u64,
    /// Their weight.
    pub stored_bytes: u64,
    /// Upstream responses not stored because of their directives/status.
    pub not_stored: u64,
    /// Responses over `max_object_bytes`.
    pub too_large: u64,
    /// Entries the store evicted for space / their weight.
    pub evicted: u64,
    pub evicted_bytes: u64,
    /// Entries dropped because they could no longer be used.
    pub expired: u64,
    /// Entries removed on purpose: purges (a prefix purge is counted when
    /// the store applies it), unsafe methods, entries that became
    /// unstorable.
    pub purged: u64,
    /// Entries in the store and their weight (after moka's pending work:
    /// see [`Cache::run_pending_tasks`]).
    pub entries: u64,
    pub weighted_bytes: u64,
    /// Keys with a coalesced upstream request under way.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    stale_if_error: AtomicU64,
    revalidated: AtomicU64,
    coalesced: AtomicU64,
    background_refreshes: AtomicU64,
    bypass: AtomicU64,
    stored: AtomicU64,
    stored_bytes: AtomicU64,
    not_stored: AtomicU64,
    too_large: AtomicU64,
    evicted: AtomicU64,
    evicted_bytes: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the store holds under a key.
#[derive(Debug, Clone)]
enum Slot {
    /// A response.
    Entry(Arc<Stored>),
    /// The primary key of a resource that varies: the request fields its
    /// variants are keyed by, and how long to keep the marker.
    Vary(Arc<(Vec<HeaderName>, Duration)>),
}

impl Slot {
    fn weight(&self, key: &[u8]) -> u32 {
        match self {
            Slot::Entry(e) => e.weight,
            Slot::Vary(v) => {
                (key.len() + v.0.iter().map(|n| n.as_str().len() + 16).sum::<usize>() + 64) as u32
            }
        }
    }
}

struct KeepFor(Duration);

impl moka::Expiry<Vec<u8>, Slot> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &Vec<u8>,
        value: &Slot,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Slot::Entry(e) => e.keep_for(self.0),
            Slot::Vary(v) => v.1,
        })
    }

    fn expire_after_update(
        &self,
        key: &Vec<u8>,
        value: &Slot,
        at: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, at)
    }
}

/// The cache (cheap to clone; clones share the store).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner {
    config: CacheConfig,
    store: moka::sync::Cache<Vec<u8>, Slot>,
    flights: Arc<Flights>,
    /// Keys whose response was not storable: not coalesced for a while.
    passes: moka::sync::Cache<Vec<u8>, ()>,
    counters: Arc<Counters>,
}

/// The cache key of a request: lower-cased host (with port, if given) and
/// path and query, e.g. `example.com/a?b=1`.
pub fn cache_key(req: &request::Parts) -> String {
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host).trim();
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut key = host.to_ascii_lowercase();
    key.push_str(path);
    key
}

/// The key of one variant: the primary key, then each `Vary` field's
/// values (field values cannot hold the separators).
fn variant_key(primary: &[u8], names: &[HeaderName], req: &HeaderMap) -> Vec<u8> {
    let mut k = primary.to_vec();
    k.push(0);
    for name in names {
        k.extend_from_slice(name.as_str().as_bytes());
        let mut values = req.get_all(name).iter().peekable();
        if values.peek().is_none() {
            k.push(b'!');
        } else {
            k.push(b':');
            for (i, v) in values.enumerate() {
                if i > 0 {
                    k.push(1);
                }
                k.extend_from_slice(v.as_bytes());
            }
        }
        k.push(2);
    }
    k
}

/// What the store has for a request.
struct Lookup {
    /// The key the request's entry lives (or would live) under.
    key: Vec<u8>,
    entry: Option<Arc<Stored>>,
}

fn same(a: &Option<Arc<Stored>>, b: &Option<Arc<Stored>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn mark(resp: &mut Response<ProxyBody>, x: &'static str) {
    resp.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(x));
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a request needs from the cache (a `request::Parts` is not `Clone`).
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    headers: HeaderMap,
}

impl Cache {
    /// A cache with `config`.
    pub fn new(config: CacheConfig) -> Cache {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &Vec<u8>, v: &Slot| v.weight(k))
            .expire_after(KeepFor(config.stale_retention))
            .support_invalidation_closures()
            .eviction_listener(move |k: Arc<Vec<u8>>, v: Slot, cause| {
                let c = &listener_counters;
                match cause {
                    RemovalCause::Size => {
                        inc(&c.evicted);
                        c.evicted_bytes
                            .fetch_add(u64::from(v.weight(&k)), Ordering::Relaxed);
                    }
                    RemovalCause::Expired => inc(&c.expired),
                    RemovalCause::Explicit => inc(&c.purged),
                    RemovalCause::Replaced => {}
                }
            })
            .build();
        let passes = moka::sync::Cache::builder()
            .max_capacity(65536)
            .time_to_live(config.pass_memory.max(Duration::from_millis(1)))
            .build();
        Cache {
            inner: Arc::new(Inner {
                config,
                store,
                flights: Arc::new(Flights::default()),
                passes,
                counters,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The cache's current time (its clock).
    pub fn now(&self) -> SystemTime {
        self.inner.config.clock.now()
    }

    /// Answers a request from the store or through `fetch` (see the module
    /// doc for what `fetch` must do with its argument). Every response
    /// carries `X-Cache`.
    pub async fn serve<F, Fut>(&self, req: &request::Parts, fetch: F) -> Response<ProxyBody>
    where
        F: FnOnce(Option<HeaderMap>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let key = cache_key(req);
        self.serve_keyed(key.as_bytes(), req, fetch).await
    }

    /// [`Cache::serve`] with a key of the caller's (e.g. one that also
    /// names the route); purges then take that key's form.
    pub async fn serve_keyed<F, Fut>(
        &self,
        primary: &[u8],
        req: &request::Parts,
        fetch: F,
    ) -> Response<ProxyBody>
    where
        F: FnOnce(Option<HeaderMap>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let mut resp = self.serve_inner(primary, req, fetch).await;
        // xlb's own targeted field has no target after xlb.
        if let Some(own) = &self.inner.config.targeted_field {
            resp.headers_mut().remove(own);
        }
        resp
    }

    async fn serve_inner<F, Fut>(
        &self,
        primary: &[u8],
        req: &request::Parts,
        fetch: F,
    ) -> Response<ProxyBody>
    where
        F: FnOnce(Option<HeaderMap>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let inner = &self.inner;
        let c = &inner.counters;
        let method = req.method.clone();
        if method != Method::GET && method != Method::HEAD {
            let mut resp = fetch(None).await;
            let safe = matches!(method, Method::OPTIONS | Method::TRACE | Method::CONNECT);
            if !safe && (resp.status().is_success() || resp.status().is_redirection()) {
                self.purge_bytes(primary);
            }
            inc(&c.bypass);
            mark(&mut resp, x_cache::BYPASS);
            return resp;
        }
        if req.headers.contains_key(header::RANGE) {
            let mut resp = fetch(None).await;
            inc(&c.bypass);
            mark(&mut resp, x_cache::BYPASS);
            return resp;
        }
        let rcc = RequestDirectives::parse(&req.headers);
        let r = Req {
            method: method.clone(),
            headers: req.headers.clone(),
        };
        let mut waited = false;
        let mut leader: Option<FlightGuard> = None;
        loop {
            let found = inner.lookup(primary, &r.headers);
            let now = inner.config.clock.now();
            if let Some(e) = &found.entry {
                let age = e.age(now);
                if e.fresh_for(age, &rcc) {
                    inc(&c.hits);
                    if waited {
                        inc(&c.coalesced);
                    }
                    finish(leader, Outcome::Stored);
                    return e.respond(&method, &r.headers, age, x_cache::HIT);
                }
                if e.while_revalidate_ok(age, &rcc) {
                    inc(&c.stale);
                    finish(leader, Outcome::Stored);
                    inner.refresh_in_background(primary, &found.key, e, &r, fetch);
                    return e.respond(&method, &r.headers, age, x_cache::STALE);
                }
            }
            if rcc.only_if_cached {
                inc(&c.misses);
                let mut resp = respond(ErrorKind::CacheOnlyIfCached);
                mark(&mut resp, x_cache::MISS);
                return resp;
            }
            // HEAD misses pass through; only GETs coalesce.
            let coalesce = method == Method::GET && !inner.passes.contains_key(&found.key);
            if leader.is_none() && !waited && coalesce {
                let before = found.entry.clone();
                match inner.flights.join(&found.key, || {
                    !same(&before, &inner.lookup(primary, &r.headers).entry)
                }) {
                    Join::Retry => continue,
                    Join::Leader(g) => leader = Some(g),
                    Join::Waiter(mut rx) => {
                        waited = true;
                        let outcome = tokio::time::timeout(
                            inner.config.coalesce_wait,
                            rx.wait_for(|o| *o != Outcome::Pending),
                        )
                        .await
                        .ok()
                        .and_then(|r| r.ok().map(|o| *o));
                        if outcome == Some(Outcome::Error) {
                            let again = inner.lookup(primary, &r.headers);
                            if let Some(e) = again.entry {
                                let age = e.age(inner.config.clock.now());
                                if e.if_error_ok(age) {
                                    inc(&c.stale);
                                    inc(&c.stale_if_error);
                                    return e.respond(&method, &r.headers, age, x_cache::STALE);
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            return inner
                .clone()
                .upstream(primary, found, &r, &rcc, leader, fetch)
                .await;
        }
    }

    /// Removes the entry of `key` (as [`cache_key`] makes it, e.g.
    /// `example.com/a?b=1`) and all its variants. True if there was one.
    pub fn purge_key(&self, key: &str) -> bool {
        self.purge_bytes(key.as_bytes())
    }

    fn purge_bytes(&self, key: &[u8]) -> bool {
        let removed = self.inner.store.remove(key);
        if let Some(Slot::Vary(_)) = &removed {
            let mut prefix = key.to_vec();
            prefix.push(0);
            self.invalidate_prefix(prefix);
        }
        removed.is_some()
    }

    /// Removes every entry whose key starts with `prefix` (host + path
    /// prefix, e.g. `example.com/static/`). Matching entries are gone for
    /// lookups at once; the store frees them in its maintenance.
    pub fn purge_prefix(&self, prefix: &str) {
        self.invalidate_prefix(prefix.as_bytes().to_vec());
    }

    fn invalidate_prefix(&self, prefix: Vec<u8>) {
        // Cannot fail: invalidation closures are enabled at build time.
        let _ = self
            .inner
            .store
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix));
    }

    /// Removes everything.
    pub fn purge_all(&self) {
        self.inner.store.invalidate_all();
    }

    /// Runs the store's pending maintenance (eviction, expiry, purges by
    /// prefix) now rather than on a later operation.
    pub fn run_pending_tasks(&self) {
        self.inner.store.run_pending_tasks();
    }

    /// Counters and size.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: l(&c.hits),
            misses: l(&c.misses),
            stale: l(&c.stale),
            stale_if_error: l(&c.stale_if_error),
            revalidated: l(&c.revalidated),
            coalesced: l(&c.coalesced),
            background_refreshes: l(&c.background_refreshes),
            bypass: l(&c.bypass),
            stored: l(&c.stored),
            stored_bytes: l(&c.stored_bytes),
            not_stored: l(&c.not_stored),
            too_large: l(&c.too_large),
            evicted: l(&c.evicted),
            evicted_bytes: l(&c.evicted_bytes),
            expired: l(&c.expired),
            purged: l(&c.purged),
            entries: self.inner.store.entry_count(),
            weighted_bytes: self.inner.store.weighted_size(),
            in_flight: self.inner.flights.in_flight() as u64,
        }
    }

    /// Whether a fresh-or-stale entry exists for a request (for tests and
    /// the admin API).
    pub fn contains(&self, req: &request::Parts) -> bool {
        let key = cache_key(req);
        self.inner
            .lookup(key.as_bytes(), &req.headers)
            .entry
            .is_some()
    }
}

impl Inner {
    fn lookup(&self, primary: &[u8], req: &HeaderMap) -> Lookup {
        match self.store.get(primary) {
            Some(Slot::Entry(e)) => Lookup {
                key: primary.to_vec(),
                entry: Some(e),
            },
            Some(Slot::Vary(v)) => {
                let key = variant_key(primary, &v.0, req);
                let entry = match self.store.get(&key) {
                    Some(Slot::Entry(e)) => Some(e),
                    _ => None,
                };
                Lookup { key, entry }
            }
            None => Lookup {
                key: primary.to_vec(),
                entry: None,
            },
        }
    }

    /// Writes an entry (and the `Vary` marker of its primary key).
    fn insert(&self, primary: &[u8], req: &HeaderMap, head: Head, body: Bytes) -> Arc<Stored> {
        let key = if head.vary.is_empty() {
            primary.to_vec()
        } else {
            variant_key(primary, &head.vary, req)
        };
        let entry = Arc::new(Stored::new(head, body, key.len()));
        let keep = entry.keep_for(self.config.stale_retention);
        if entry.head.vary.is_empty() {
            if let Some(Slot::Vary(_)) = self.store.get(primary) {
                // The resource stopped varying: its variants are dead.
                let mut prefix = primary.to_vec();
                prefix.push(0);
                let _ = self
                    .store
                    .invalidate_entries_if(move |k, _| k.starts_with(&prefix));
            }
        } else {
            let marker = match self.store.get(primary) {
                Some(Slot::Vary(v)) if v.0 == entry.head.vary && v.1 >= keep => None,
                Some(Slot::Vary(v)) if v.0 == entry.head.vary => Some((v.0.clone(), keep)),
                _ => Some((entry.head.vary.clone(), keep)),
            };
            if let Some(m) = marker {
                self.store.insert(primary.to_vec(), Slot::Vary(Arc::new(m)));
            }
        }
        self.store.insert(key.clone(), Slot::Entry(entry.clone()));
        inc(&self.counters.stored);
        self.counters
            .stored_bytes
            .fetch_add(u64::from(entry.weight), Ordering::Relaxed);
        self.passes.invalidate(&key);
        entry
    }

    /// The request that goes upstream (miss, or revalidation of a stale
    /// entry), and what becomes of its response.
    async fn upstream<F, Fut>(
        self: Arc<Self>,
        primary: &[u8],
        found: Lookup,
        r: &Req,
        rcc: &RequestDirectives,
        leader: Option<FlightGuard>,
        fetch: F,
    ) -> Response<ProxyBody>
    where
        F: FnOnce(Option<HeaderMap>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let c = &self.counters;
        let clock = &self.config.clock;
        let passing = self.passes.contains_key(&found.key);
        let cond = match &found.entry {
            Some(e) if e.has_validator() => Some(e.conditional_headers()),
            // A full response to store: the client's own conditionals are
            // answered from it afterwards.
            Some(_) => Some(HeaderMap::new()),
            None if r.method == Method::GET && !passing => Some(HeaderMap::new()),
            None => None,
        };
        let validating = cond.as_ref().is_some_and(|h| !h.is_empty());
        let request_time = clock.now();
        let resp = fetch(cond).await;
        let response_time = clock.now();
        let status = resp.status();

        if let Some(e) = &found.entry {
            if status == StatusCode::NOT_MODIFIED && validating {
                let (parts, _) = resp.into_parts();
                return match e.freshened(
                    &parts.headers,
                    &r.headers,
                    request_time,
                    response_time,
                    &self.config,
                ) {
                    Ok(head) => {
                        let fresh = self.insert(primary, &r.headers, head, e.body.clone());
                        inc(&c.revalidated);
                        finish(leader, Outcome::Stored);
                        let age = fresh.age(clock.now());
                        fresh.respond(&r.method, &r.headers, age, x_cache::REVALIDATED)
                    }
                    Err(why) => {
                        // Valid, but no longer storable: serve it once
                        // (and drop it, unless only this request is to
                        // blame).
                        if why.is_resource_policy() {
                            self.store.invalidate(&found.key);
                        }
                        inc(&c.revalidated);
                        finish(leader, Outcome::NotStored);
                        let age = e.age(clock.now());
                        e.respond(&r.method, &r.headers, age, x_cache::REVALIDATED)
                    }
                };
            }
            if status.is_server_error() {
                let age = e.age(clock.now());
                if e.if_error_ok(age) {
                    inc(&c.stale);
                    inc(&c.stale_if_error);
                    finish(leader, Outcome::Error);
                    return e.respond(&r.method, &r.headers, age, x_cache::STALE);
                }
            }
            if r.method == Method::HEAD && status.is_success() {
                // RFC 9111 §4.3.5: a HEAD response that disagrees with the
                // stored one invalidates it.
                if resp.headers().get(header::ETAG) != e.etag() {
                    self.store.invalidate(&found.key);
                }
            }
        }
        inc(&c.misses);
        self.admit(primary, r, rcc, resp, request_time, response_time, leader)
    }

    /// Passes an upstream response to the client, teeing it into the
    /// store when it is storable.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        self: Arc<Self>,
        primary: &[u8],
        r: &Req,
        rcc: &RequestDirectives,
        resp: Response<ProxyBody>,
        request_time: SystemTime,
        response_time: SystemTime,
        leader: Option<FlightGuard>,
    ) -> Response<ProxyBody> {
        let c = &self.counters;
        let (mut parts, body) = resp.into_parts();
        let verdict = if r.method != Method::GET {
            Err(NotStored::Method)
        } else {
            evaluate(
                &r.headers,
                rcc,
                parts.status,
                &parts.headers,
                request_time,
                response_time,
                &self.config,
            )
        };
        let head = match verdict {
            Ok(head) => head,
            Err(why) => {
                inc(&c.not_stored);
                let outcome = if parts.status.is_server_error() {
                    Outcome::Error
                } else {
                    if why.is_resource_policy() {
                        self.pass(primary, &r.headers);
                    }
                    Outcome::NotStored
                };
                finish(leader, outcome);
                parts
                    .headers
                    .insert(X_CACHE, HeaderValue::from_static(x_cache::MISS));
                return Response::from_parts(parts, body);
            }
        };
        let expect = content_length(&parts.headers);
        if expect.is_some_and(|l| l > self.config.max_object_bytes) {
            inc(&c.too_large);
            self.pass(primary, &r.headers);
            finish(leader, Outcome::NotStored);
            parts
                .headers
                .insert(X_CACHE, HeaderValue::from_static(x_cache::MISS));
            return Response::from_parts(parts, body);
        }
        // The client's conditional matches the new response: it gets a
        // 304 and the body is read into the store without it.
        let client_304 = r.headers.contains_key(header::IF_NONE_MATCH)
            || r.headers.contains_key(header::IF_MODIFIED_SINCE);
        let probe = client_304.then(|| Stored::new(head.clone(), Bytes::new(), 0));
        let client_304 = probe
            .as_ref()
            .is_some_and(|p| p.not_modified_for(&r.headers));

        let this = self.clone();
        let primary_owned = primary.to_vec();
        let req_headers = r.headers.clone();
        let sink: tee::Sink = Box::new(move |result: Result<Bytes, Abandoned>| {
            let outcome = match result {
                Ok(body) => {
                    this.insert(&primary_owned, &req_headers, head, body);
                    Outcome::Stored
                }
                Err(Abandoned::TooLarge) => {
                    inc(&this.counters.too_large);
                    this.pass(&primary_owned, &req_headers);
                    Outcome::NotStored
                }
                Err(_) => Outcome::Abandoned,
            };
            finish(leader, outcome);
        });
        let tee = TeeBody::new(body, self.config.max_object_bytes, expect, sink);
        if client_304 {
            let probe = probe.expect("probed above");
            tokio::spawn(async move {
                // Reading the body to its end stores it; once the copy is
                // abandoned (too large) the rest is not worth reading.
                let mut tee = tee;
                while tee.is_copying() {
                    match tee.frame().await {
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            });
            let method = r.method.clone();
            return probe.respond(&method, &r.headers, Duration::ZERO, x_cache::MISS);
        }
        parts
            .headers
            .insert(X_CACHE, HeaderValue::from_static(x_cache::MISS));
        Response::from_parts(parts, ProxyBody::new(tee))
    }

    /// Remembers that the key's response is not storable.
    fn pass(&self, primary: &[u8], req: &HeaderMap) {
        let key = self.lookup(primary, req).key;
        self.passes.insert(key, ());
    }

    /// Starts the `stale-while-revalidate` refresh of `entry`, unless one
    /// is under way.
    fn refresh_in_background<F, Fut>(
        self: &Arc<Self>,
        primary: &[u8],
        key: &[u8],
        entry: &Arc<Stored>,
        r: &Req,
        fetch: F,
    ) where
        F: FnOnce(Option<HeaderMap>) -> Fut + Send + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        if entry
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        inc(&self.counters.background_refreshes);
        let this = self.clone();
        let primary = primary.to_vec();
        let key = key.to_vec();
        let entry = entry.clone();
        let r = r.clone();
        tokio::spawn(async move {
            let clock = this.config.clock.clone();
            let cond = if entry.has_validator() {
                entry.conditional_headers()
            } else {
                HeaderMap::new()
            };
            let validating = !cond.is_empty();
            let request_time = clock.now();
            let resp = fetch(Some(cond)).await;
            let response_time = clock.now();
            let status = resp.status();
            let (parts, body) = resp.into_parts();
            let done = if status == StatusCode::NOT_MODIFIED && validating {
                match entry.freshened(
                    &parts.headers,
                    &r.headers,
                    request_time,
                    response_time,
                    &this.config,
                ) {
                    Ok(head) => {
                        this.insert(&primary, &r.headers, head, entry.body.clone());
                        inc(&this.counters.revalidated);
                        true
                    }
                    Err(why) => {
                        if why.is_resource_policy() {
                            this.store.invalidate(&key);
                        }
                        true
                    }
                }
            } else if r.method == Method::GET && !status.is_server_error() {
                match evaluate(
                    &r.headers,
                    &RequestDirectives::default(),
                    status,
                    &parts.headers,
                    request_time,
                    response_time,
                    &this.config,
                ) {
                    Ok(head) => {
                        let limit =
                            usize::try_from(this.config.max_object_bytes).unwrap_or(usize::MAX);
                        match http_body_util::Limited::new(body, limit).collect().await {
                            Ok(b) => {
                                this.insert(&primary, &r.headers, head, b.to_bytes());
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    Err(why) => {
                        // The resource is no longer cacheable.
                        if why.is_resource_policy() {
                            this.store.invalidate(&key);
                        }
                        true
                    }
                }
            } else {
                false
            };
            if !done {
                // Let a later request try again.
                entry.refreshing.store(false, Ordering::Release);
            }
        });
    }
}
