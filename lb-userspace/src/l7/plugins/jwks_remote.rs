//! `jwt-auth`'s keys from a JWKS URL, or from an OpenID Connect issuer's
//! discovery document (`<issuer>/.well-known/openid-configuration` →
//! `jwks_uri`, OpenID Connect Discovery 1.0 §4), kept fresh in the
//! background.
//!
//! - The set is fetched when the first request needs it (building a chain
//!   does no network I/O: `xlb check` and the admin API's validation build
//!   chains too), then refreshed by a background task that ends when the
//!   plugin is dropped (a config change builds a new one).
//! - The next refresh comes after the response's `Cache-Control: max-age`,
//!   held within `[min_refresh, max_refresh]`; without one, after
//!   `refresh`, within the same bounds.
//! - A failed fetch (unreachable, not 200, not a key set, no usable key)
//!   keeps the last good set and is tried again after `min_refresh`.
//! - A token whose key is not in the set (a `kid` the issuer has just
//!   rotated in) makes the request wait for one refetch, at most one per
//!   `min_refresh` across all requests, so a client sending made-up `kid`s
//!   cannot turn xlb into a flood against the issuer.
//! - With discovery, the document's `issuer` must equal the configured one
//!   (§4.3), and `jwks_uri` is looked up again when a key-set fetch fails
//!   (the issuer may have moved it).
//! - Plugins configured alike share one key set ([`RemoteJwks::shared`]):
//!   a global `jwt-auth` over many routes fetches once, not once per
//!   route, and a config reload that keeps the source keeps the keys.
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use http::Uri;
use serde::Deserialize;

use super::{
    http_fetch::Fetcher,
    jwks::{jwks_keys, Key},
};

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS at this URL.
    Jwks(Uri),
    /// The discovery document of this issuer (its `jwks_uri`).
    Discovery {
        /// The issuer, as configured (and as the document must name it).
        issuer: String,
        /// `<issuer>/.well-known/openid-configuration`.
        document: Uri,
    },
}

impl KeySource {
    /// The discovery source of `issuer` (an http(s) URL).
    pub fn discovery(issuer: &str) -> Result<KeySource, String> {
        let document: Uri = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
        .parse()
        .map_err(|e| format!("`{issuer}`: {e}"))?;
        check_url(&document)?;
        Ok(KeySource::Discovery {
            issuer: issuer.to_string(),
            document,
        })
    }

    /// Whether any URL involved is https (the fetcher then needs TLS).
    pub fn https(&self) -> bool {
        let u = match self {
            KeySource::Jwks(u) => u,
            KeySource::Discovery { document, .. } => document,
        };
        u.scheme_str() == Some("https")
    }
}

/// An http(s) URL with a host.
pub fn check_url(u: &Uri) -> Result<(), String> {
    match (u.scheme_str(), u.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!("`{u}` is not an http(s)://host/... URL")),
    }
}

/// How often to fetch.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Without `max-age`.
    pub default: Duration,
    /// Lower bound of any wait, and the spacing of unknown-`kid` refetches
    /// and of retries after a failure.
    pub min: Duration,
    /// Upper bound of any wait.
    pub max: Duration,
}

impl RefreshPolicy {
    /// The wait before the next refresh after a fetch that said `max_age`.
    pub fn after(&self, max_age: Option<Duration>) -> Duration {
        max_age.unwrap_or(self.default).clamp(self.min, self.max)
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct FetchState {
    /// When the last fetch (good or not) started.
    last_attempt: Option<Instant>,
    /// When the background task fetches next.
    next: Instant,
    /// The key set's URL as discovery last gave it.
    jwks_uri: Option<Uri>,
}

/// The remote key set.
pub struct RemoteJwks {
    source: KeySource,
    fetcher: Fetcher,
    policy: RefreshPolicy,
    keys: ArcSwap<Vec<Key>>,
    /// A fetch has succeeded at least once.
    loaded: AtomicBool,
    refresher_started: AtomicBool,
    /// One fetch at a time; holds the schedule.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("source", &self.source)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// A key set from `source` (nothing is fetched yet).
    pub fn new(source: KeySource, fetcher: Fetcher, policy: RefreshPolicy) -> RemoteJwks {
        RemoteJwks {
            source,
            fetcher,
            policy,
            keys: ArcSwap::from_pointee(Vec::new()),
            loaded: AtomicBool::new(false),
            refresher_started: AtomicBool::new(false),
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: None,
                next: Instant::now(),
                jwks_uri: None,
            }),
        }
    }

    /// The live key set configured like this one (same source, policy
    /// and fetcher settings, described by `key`), or a new one.
    pub fn shared(key: String, make: impl FnOnce() -> RemoteJwks) -> Arc<RemoteJwks> {
        static SETS: Mutex<Option<HashMap<String, Weak<RemoteJwks>>>> = Mutex::new(None);
        let mut sets = SETS.lock().unwrap_or_else(|e| e.into_inner());
        let sets = sets.get_or_insert_with(HashMap::new);
        if let Some(live) = sets.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        sets.retain(|_, w| w.strong_count() > 0);
        let made = Arc::new(make());
        sets.insert(key, Arc::downgrade(&made));
        made
    }

    /// The keys as of the last good fetch (none before the first).
    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<Key>>> {
        self.keys.load()
    }

    /// Before keys are read by a request: starts the background refresher
    /// (once) and, until a fetch has succeeded, fetches (rate-limited like
    /// an unknown `kid`).
    pub async fn ready(self: &Arc<Self>) {
        // A load first: the swap (a write to a shared line) happens once.
        if !self.refresher_started.load(Ordering::Acquire)
            && !self.refresher_started.swap(true, Ordering::AcqRel)
        {
            spawn_refresher(Arc::downgrade(self));
        }
        if !self.loaded.load(Ordering::Acquire) {
            self.refetch(Instant::now()).await;
        }
    }

    /// A token's key was not in the set seen at `seen_at`: fetches again
    /// unless a fetch started since then (its result is the answer) or one
    /// started less than `min_refresh` ago.
    pub async fn refetch(&self, seen_at: Instant) {
        let mut st = self.fetch.lock().await;
        if let Some(last) = st.last_attempt {
            if last >= seen_at || last.elapsed() < self.policy.min {
                return;
            }
        }
        self.fetch_locked(&mut st).await;
    }

    /// Fetches now (the caller holds the fetch lock) and sets the next
    /// background refresh.
    async fn fetch_locked(&self, st: &mut FetchState) {
        st.last_attempt = Some(Instant::now());
        let wait = match self.fetch_keys(st).await {
            Ok((keys, max_age)) => {
                log::debug!("jwt-auth: {} keys from {:?}", keys.len(), self.source);
                self.keys.store(Arc::new(keys));
                self.loaded.store(true, Ordering::Release);
                self.policy.after(max_age)
            }
            Err(e) => {
                log::warn!("jwt-auth: keeping the previous keys: {e}");
                if matches!(self.source, KeySource::Discovery { .. }) {
                    st.jwks_uri = None;
                }
                self.policy.min
            }
        };
        st.next = Instant::now() + wait;
    }

    async fn fetch_keys(
        &self,
        st: &mut FetchState,
    ) -> Result<(Vec<Key>, Option<Duration>), String> {
        let uri = match &self.source {
            KeySource::Jwks(u) => u.clone(),
            KeySource::Discovery { issuer, document } => match &st.jwks_uri {
                Some(u) => u.clone(),
                None => {
                    let doc = self.fetcher.get(document).await?;
                    let d: Discovery = serde_json::from_slice(&doc.body)
                        .map_err(|e| format!("{document}: not a discovery document: {e}"))?;
                    if d.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                        return Err(format!(
                            "{document}: names issuer `{}`, not `{issuer}`",
                            d.issuer
                        ));
                    }
                    let u: Uri = d
                        .jwks_uri
                        .parse()
                        .map_err(|e| format!("{document}: jwks_uri: {e}"))?;
                    check_url(&u)?;
                    st.jwks_uri = Some(u.clone());
                    u
                }
            },
        };
        let got = self.fetcher.get(&uri).await?;
        let keys = jwks_keys(&got.body).map_err(|e| format!("{uri}: not a key set: {e}"))?;
        if keys.is_empty() {
            return Err(format!("{uri}: no signing key in the set"));
        }
        Ok((keys, got.max_age))
    }

    /// The background refresh: fetches when the schedule says so.
    async fn refresh_due(&self) -> Duration {
        let mut st = self.fetch.lock().await;
        if Instant::now() >= st.next {
            self.fetch_locked(&mut st).await;
        }
        st.next.saturating_duration_since(Instant::now())
    }
}

/// The refresher task: holds only a weak reference between fetches, so it
/// ends once the plugin (and its key set) is dropped.
fn spawn_refresher(me: Weak<RemoteJwks>) {
    tokio::spawn(async move {
        let mut wait = Duration::ZERO;
        loop {
            tokio::time::sleep(wait).await;
            let Some(jwks) = me.upgrade() else {
                return;
            };
            wait = jwks.refresh_due().await.max(Duration::from_millis(10));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_held_within_the_bounds() {
        let p = RefreshPolicy {
            default: Duration::from_secs(300),
            min: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        };
        assert_eq!(p.after(None), Duration::from_secs(300));
        assert_eq!(
            p.after(Some(Duration::from_secs(5))),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.after(Some(Duration::from_secs(86400))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            p.after(Some(Duration::from_secs(600))),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn discovery_document_url_is_under_the_issuer() {
        let KeySource::Discovery { document, .. } =
            KeySource::discovery("https://auth.example/realms/a/").unwrap()
        else {
            unreachable!()
        };
        assert_eq!(
            document.to_string(),
            "https://auth.example/realms/a/.well-known/openid-configuration"
        );
        assert!(KeySource::discovery("ftp://x").is_err());
    }
}
