//! Lazy routing (`config_store.routes: lazy`): the node keeps in memory
//! only the routes of the hosts it is asked for.
//!
//! A request whose host is not in the cache starts one load through a
//! [`SlotSource`] (the store: the host's exact and wildcard index in one
//! read); concurrent requests for that host wait for the same load
//! (single-flight); the answer — "no such host" included — goes into a
//! bounded cache ([`moka`]: TinyLFU admission, LRU eviction, so a flood of
//! one-off hosts does not push the hot ones out). The store's watch
//! invalidates entries ([`LazyHosts::invalidate`]); the cache's TTL is only
//! a safety net. Loads are capped in concurrency and in rate, so a flood of
//! random `Host` headers cannot hammer the store: over the cap a miss is
//! answered 503 with `Retry-After` and counted, while cached hosts never
//! reach the cap. A store that does not answer gives the same 503 (errors
//! are not cached).
//!
//! Consistency with writes: a load reads at some revision R. Every watch
//! invalidation records its revision; a load finding that a change newer
//! than R was applied while it read does not install what it read and
//! reads again. So an entry in the cache is never older than a change the
//! node has applied, and read-your-writes (a write is acknowledged once the
//! node applied it) holds for lazy hosts too.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use tokio::sync::Semaphore;

use super::router::{
    best_of, wildcard_suffix, HostSlot, HostTables, Lookup, Match, RequestInfo, Resolver,
    RouteTable, Unresolved,
};

/// The tables of one host slot, by listener index (`None`: that listener
/// serves no route of the slot). All `None`: "no such host".
pub type SlotTables = Arc<[Option<Arc<RouteTable>>]>;

/// What a [`SlotSource`] read for a host.
pub struct Loaded {
    /// The store revision the read saw.
    pub revision: i64,
    /// The host's exact-name routes.
    pub exact: SlotTables,
    /// The routes of the one wildcard that can match the host (`None`
    /// when the host can match no wildcard, e.g. an IP literal).
    pub wildcard: Option<SlotTables>,
}

/// Why a [`SlotSource`] could not read.
#[derive(Debug, Clone)]
pub struct SourceUnavailable(pub String);

/// Where lazy routes come from: one read for a host's exact name and the
/// wildcard `*.suffix`, answered as built tables. The store implements it
/// (`store::lazy`); an embedder may implement its own.
pub trait SlotSource: Send + Sync {
    /// Reads and builds the tables of exact `host` and of wildcard
    /// `suffix`.
    fn load(
        &self,
        host: String,
        suffix: Option<String>,
    ) -> BoxFuture<'static, Result<Loaded, SourceUnavailable>>;
}

/// Limits of lazy routing (`config_store.lazy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LazySettings {
    /// Host slots kept (exact names and wildcards, "no such host" too).
    pub cache_entries: u64,
    /// Safety net: an entry is read again after this long even when no
    /// watch event invalidated it.
    pub ttl: Duration,
    /// Loads running at once; more misses are shed.
    pub max_concurrent_misses: usize,
    /// Loads started per second (burst: one second's worth); more misses
    /// are shed.
    pub misses_per_second: u32,
    /// `Retry-After` of a shed miss or a store outage, seconds.
    pub retry_after_secs: u64,
}

impl Default for LazySettings {
    fn default() -> Self {
        LazySettings {
            cache_entries: 100_000,
            ttl: Duration::from_secs(600),
            max_concurrent_misses: 64,
            misses_per_second: 5_000,
            retry_after_secs: 1,
        }
    }
}

/// Counters of lazy routing.
#[derive(Debug, Default)]
pub struct LazyStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Loads started (one store read each, plus re-reads after a race).
    pub loads: AtomicU64,
    /// Misses that waited for a load another request had started.
    pub joined: AtomicU64,
    /// Misses refused over the cap.
    pub shed: AtomicU64,
    /// Loads that failed because the store did not answer.
    pub store_errors: AtomicU64,
    /// Loads read again because a change landed while they read.
    pub raced: AtomicU64,
}

type SharedLoad = Shared<BoxFuture<'static, Result<Arc<Loaded>, Unresolved>>>;

/// A token bucket for the miss rate. Hand-written: it is one bucket read
/// under a lock that is taken only on a miss; a rate-limiting crate would
/// add a dependency for fifteen lines.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The cache of host slots shared by every listener, and the machinery
/// that fills it.
pub struct LazyHosts {
    cache: Cache<HostSlot, SlotTables>,
    inflight: Mutex<HashMap<String, SharedLoad>>,
    /// The revision of the newest invalidation; held while installing so
    /// that an invalidation and an install never interleave.
    changed_at: Mutex<i64>,
    source: OnceLock<Arc<dyn SlotSource>>,
    permits: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
    settings: LazySettings,
    stats: LazyStats,
}

impl std::fmt::Debug for LazyHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyHosts")
            .field("settings", &self.settings)
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// How many loads a [`LazyHosts`] tries before it answers from a read
/// that raced a change without caching it.
const LOAD_ATTEMPTS: usize = 4;

impl LazyHosts {
    /// An empty cache; misses fail as "store unavailable" until
    /// [`LazyHosts::set_source`].
    pub fn new(settings: LazySettings) -> LazyHosts {
        LazyHosts {
            cache: Cache::builder()
                .max_capacity(settings.cache_entries)
                .time_to_live(settings.ttl)
                .build(),
            inflight: Mutex::new(HashMap::new()),
            changed_at: Mutex::new(0),
            source: OnceLock::new(),
            permits: Arc::new(Semaphore::new(settings.max_concurrent_misses.max(1))),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(settings.misses_per_second),
                at: Instant::now(),
            }),
            settings,
            stats: LazyStats::default(),
        }
    }

    /// Where misses are read from (set once; later calls are ignored).
    pub fn set_source(&self, source: Arc<dyn SlotSource>) {
        let _ = self.source.set(source);
    }

    /// The counters.
    pub fn stats(&self) -> &LazyStats {
        &self.stats
    }

    /// Host slots in the cache (approximate: moka counts lazily).
    pub fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Forgets `slot`: a change at `revision` touched its routes.
    pub fn invalidate(&self, slot: &HostSlot, revision: i64) {
        let mut changed = lock(&self.changed_at);
        *changed = (*changed).max(revision);
        self.cache.invalidate(slot);
    }

    /// Forgets every slot: a change at `revision` may touch any route (an
    /// upstream appeared, a rate-limit rule changed, a full re-read).
    pub fn invalidate_all(&self, revision: i64) {
        let mut changed = lock(&self.changed_at);
        *changed = (*changed).max(revision);
        self.cache.invalidate_all();
    }

    fn cached(&self, host: &str, suffix: Option<&str>) -> Option<(SlotTables, Option<SlotTables>)> {
        let exact = self.cache.get(&HostSlot::Exact(host.to_string()))?;
        let wild = match suffix {
            Some(s) => Some(self.cache.get(&HostSlot::Wildcard(s.to_string()))?),
            None => None,
        };
        Some((exact, wild))
    }

    fn take_token(&self) -> bool {
        let rate = f64::from(self.settings.misses_per_second);
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The load of `host`: the one running, or a new one within the caps.
    fn miss(self: &Arc<Self>, host: &str, suffix: Option<&str>) -> Result<SharedLoad, Unresolved> {
        let retry_after_secs = self.settings.retry_after_secs;
        let mut inflight = lock(&self.inflight);
        if let Some(running) = inflight.get(host) {
            self.stats.joined.fetch_add(1, Relaxed);
            return Ok(running.clone());
        }
        let Some(source) = self.source.get().cloned() else {
            return Err(Unresolved::StoreUnavailable { retry_after_secs });
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) if self.take_token() => p,
            _ => {
                self.stats.shed.fetch_add(1, Relaxed);
                return Err(Unresolved::Shed { retry_after_secs });
            }
        };
        let this = self.clone();
        let host = host.to_string();
        let suffix = suffix.map(str::to_string);
        let key = host.clone();
        // The load runs on its own task: a client that goes away does not
        // cancel it for the requests waiting on it.
        let task = tokio::spawn(async move {
            let result = this.load(source, host.clone(), suffix).await;
            lock(&this.inflight).remove(&host);
            drop(permit);
            result
        });
        let shared = async move {
            task.await
                .unwrap_or(Err(Unresolved::StoreUnavailable { retry_after_secs }))
        }
        .boxed()
        .shared();
        inflight.insert(key, shared.clone());
        Ok(shared)
    }

    async fn load(
        &self,
        source: Arc<dyn SlotSource>,
        host: String,
        suffix: Option<String>,
    ) -> Result<Arc<Loaded>, Unresolved> {
        let retry_after_secs = self.settings.retry_after_secs;
        for attempt in 1..=LOAD_ATTEMPTS {
            self.stats.loads.fetch_add(1, Relaxed);
            let loaded = source
                .load(host.clone(), suffix.clone())
                .await
                .map_err(|e| {
                    self.stats.store_errors.fetch_add(1, Relaxed);
                    log::warn!("lazy routes: host {host}: {}", e.0);
                    Unresolved::StoreUnavailable { retry_after_secs }
                })?;
            let changed = lock(&self.changed_at);
            if *changed > loaded.revision {
                self.stats.raced.fetch_add(1, Relaxed);
                if attempt < LOAD_ATTEMPTS {
                    continue;
                }
                // Changes keep landing: answer from this read (it is as
                // new as the store was when it was made) without caching.
                return Ok(Arc::new(loaded));
            }
            self.cache
                .insert(HostSlot::Exact(host.clone()), loaded.exact.clone());
            if let (Some(s), Some(w)) = (&suffix, &loaded.wildcard) {
                self.cache.insert(HostSlot::Wildcard(s.clone()), w.clone());
            }
            return Ok(Arc::new(loaded));
        }
        unreachable!("the last attempt returns")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its value consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn of(tables: Option<&SlotTables>, listener: usize) -> Option<&RouteTable> {
    tables
        .and_then(|t| t.get(listener))
        .and_then(|t| t.as_deref())
}

/// One listener's view of the lazy cache, plus its any-host table (routes
/// without a host are few and always loaded).
pub struct LazyResolver {
    hosts: Arc<LazyHosts>,
    listener: usize,
    tables: Arc<HostTables>,
}

impl LazyResolver {
    /// Listener number `listener` of `hosts`, with `tables` holding its
    /// any-host routes.
    pub fn new(hosts: Arc<LazyHosts>, listener: usize, tables: Arc<HostTables>) -> LazyResolver {
        LazyResolver {
            hosts,
            listener,
            tables,
        }
    }
}

impl Resolver for LazyResolver {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let any = self.tables.any();
        let cached = req
            .host()
            .and_then(|h| self.hosts.cached(h, wildcard_suffix(h)));
        let (exact, wild) = match &cached {
            Some((e, w)) => (Some(e), w.as_ref()),
            None => (None, None),
        };
        best_of(
            req,
            of(exact, self.listener),
            of(wild, self.listener),
            any.as_deref(),
        )
    }

    fn lookup<'a>(&'a self, req: &'a RequestInfo<'a>) -> Lookup<'a> {
        let any = self.tables.any();
        let Some(host) = req.host() else {
            return Lookup::Ready(best_of(req, None, None, any.as_deref()));
        };
        let suffix = wildcard_suffix(host);
        let l = self.listener;
        if let Some((exact, wild)) = self.hosts.cached(host, suffix) {
            self.hosts.stats.hits.fetch_add(1, Relaxed);
            return Lookup::Ready(best_of(
                req,
                of(Some(&exact), l),
                of(wild.as_ref(), l),
                any.as_deref(),
            ));
        }
        match self.hosts.miss(host, suffix) {
            Err(u) => Lookup::Pending(async move { Err(u) }.boxed()),
            Ok(load) => Lookup::Pending(
                async move {
                    let loaded = load.await?;
                    Ok(best_of(
                        req,
                        of(Some(&loaded.exact), l),
                        of(loaded.wildcard.as_ref(), l),
                        any.as_deref(),
                    ))
                }
                .boxed(),
            ),
        }
    }
}
