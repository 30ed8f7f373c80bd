//! The HTTP response cache (`xlb::l7::cache`) against a counting fake
//! upstream (a closure), on tokio's paused clock; one test with a real
//! hyper backend.
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, request, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use xlb::l7::{
    cache::{Cache, CacheConfig, X_CACHE},
    forward::{text_body, ProxyBody},
};

type Fut = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>;
type Responder = dyn Fn(usize, Option<&HeaderMap>) -> Response<ProxyBody> + Send + Sync;

/// A fake upstream: counts requests (and conditional ones), answers with
/// `respond(n, conditional headers)` after `delay`.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Option<HeaderMap>>>>,
    delay: Duration,
    respond: Arc<Responder>,
}

impl Upstream {
    fn new(
        respond: impl Fn(usize, Option<&HeaderMap>) -> Response<ProxyBody> + Send + Sync + 'static,
    ) -> Upstream {
        Upstream {
            calls: Arc::default(),
            conditional: Arc::default(),
            seen: Arc::default(),
            delay: Duration::ZERO,
            respond: Arc::new(respond),
        }
    }

    /// Always the same response.
    fn fixed(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Upstream {
        let headers: Vec<(&'static str, String)> =
            headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Upstream::new(move |_, _| {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            response(status, &h, body)
        })
    }

    fn with_delay(mut self, d: Duration) -> Upstream {
        self.delay = d;
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn conditionals(&self) -> usize {
        self.conditional.load(Ordering::SeqCst)
    }

    fn fetch(&self) -> impl FnOnce(Option<HeaderMap>) -> Fut + Send + 'static {
        let up = self.clone();
        move |cond: Option<HeaderMap>| -> Fut {
            Box::pin(async move {
                let n = up.calls.fetch_add(1, Ordering::SeqCst);
                if cond.as_ref().is_some_and(|h| {
                    h.contains_key(header::IF_NONE_MATCH)
                        || h.contains_key(header::IF_MODIFIED_SINCE)
                }) {
                    up.conditional.fetch_add(1, Ordering::SeqCst);
                }
                up.seen.lock().unwrap().push(cond.clone());
                if !up.delay.is_zero() {
                    tokio::time::sleep(up.delay).await;
                }
                (up.respond)(n, cond.as_ref())
            })
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(text_body(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(uri: &str) -> request::Parts {
    req(Method::GET, uri, &[])
}

/// Status, X-Cache, Age, body — the body read to its end (which is what
/// lets a teed response reach the store).
async fn run(
    cache: &Cache,
    parts: &request::Parts,
    up: &Upstream,
) -> (u16, String, Option<u64>, String) {
    let resp = cache.serve(parts, up.fetch()).await;
    let status = resp.status().as_u16();
    let x = resp
        .headers()
        .get(X_CACHE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let age = resp
        .headers()
        .get(header::AGE)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, x, age, String::from_utf8(body.to_vec()).unwrap())
}

async fn x_cache(cache: &Cache, parts: &request::Parts, up: &Upstream) -> String {
    run(cache, parts, up).await.1
}

fn cache() -> Cache {
    Cache::new(CacheConfig::default())
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

fn date(cache: &Cache, offset: i64) -> String {
    let now = cache.now();
    let t = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs((-offset) as u64)
    };
    httpdate::fmt_http_date(t)
}

#[tokio::test(start_paused = true)]
async fn max_age_is_fresh_then_stale() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "hello");
    let p = get("http://example.com/a");
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "MISS".into(), None, "hello".into())
    );
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "HIT".into(), Some(0), "hello".into())
    );
    advance(59).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    assert_eq!(up.calls(), 1);
    advance(2).await;
    // Stale without a validator: a full fetch.
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(up.calls(), 2);
    assert_eq!(up.conditionals(), 0);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.stored), (2, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn s_maxage_beats_max_age() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=10, s-maxage=100")], "x");
    let p = get("http://example.com/s");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(50).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    advance(51).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn request_no_store_is_not_stored() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "x");
    let ns = req(
        Method::GET,
        "http://example.com/r",
        &[("cache-control", "no-store")],
    );
    assert_eq!(x_cache(&cache, &ns, &up).await, "MISS");
    assert_eq!(x_cache(&cache, &ns, &up).await, "MISS");
    assert_eq!(up.calls(), 2);
    assert_eq!(cache.stats().stored, 0);
    // A plain request stores; a no-store request may still be answered.
    let p = get("http://example.com/r");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(x_cache(&cache, &ns, &up).await, "HIT");
    assert_eq!(up.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn response_no_store_and_private_are_not_stored() {
    for cc in [
        "no-store, max-age=60",
        "private, max-age=60",
        "private=\"x\", max-age=60",
    ] {
        let cache = cache();
        let up = Upstream::fixed(200, &[("cache-control", cc)], "x");
        let p = get("http://example.com/n");
        assert_eq!(x_cache(&cache, &p, &up).await, "MISS", "{cc}");
        assert_eq!(x_cache(&cache, &p, &up).await, "MISS", "{cc}");
        assert_eq!(up.calls(), 2, "{cc}");
        assert_eq!(cache.stats().stored, 0, "{cc}");
    }
}

/// `no-cache`: stored, but every use is revalidated with the upstream.
#[tokio::test(start_paused = true)]
async fn no_cache_revalidates_every_time() {
    let cache = cache();
    let up = Upstream::new(
        |_, cond| match cond.and_then(|h| h.get(header::IF_NONE_MATCH)) {
            Some(v) if v == "\"v1\"" => response(304, &[("etag", "\"v1\"")], ""),
            _ => response(
                200,
                &[("cache-control", "no-cache"), ("etag", "\"v1\"")],
                "body",
            ),
        },
    );
    let p = get("http://example.com/nc");
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "MISS".into(), None, "body".into())
    );
    for i in 1..=3 {
        assert_eq!(
            run(&cache, &p, &up).await,
            (200, "REVALIDATED".into(), Some(0), "body".into())
        );
        assert_eq!(up.calls(), 1 + i);
        assert_eq!(up.conditionals(), i);
    }
    assert_eq!(cache.stats().revalidated, 3);
}

#[tokio::test(start_paused = true)]
async fn expires_minus_date() {
    let cache = cache();
    let (d, e) = (date(&cache, 0), date(&cache, 30));
    let up = Upstream::fixed(200, &[("date", &d), ("expires", &e)], "x");
    let p = get("http://example.com/e");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(20).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    advance(11).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");

    // A response dated 100 s ago that expired 40 s ago: stale on arrival
    // (its apparent age counts), so stored but never a hit.
    let cache2 = self::cache();
    let (d, e) = (date(&cache2, -100), date(&cache2, -40));
    let up = Upstream::fixed(
        200,
        &[("date", &d), ("expires", &e), ("etag", "\"a\"")],
        "x",
    );
    assert_eq!(x_cache(&cache2, &p, &up).await, "MISS");
    assert_eq!(x_cache(&cache2, &p, &up).await, "MISS");
    assert_eq!(up.calls(), 2);
    // An invalid Expires means already expired.
    let cache3 = self::cache();
    let up = Upstream::fixed(200, &[("expires", "0")], "x");
    assert_eq!(x_cache(&cache3, &p, &up).await, "MISS");
    assert_eq!(x_cache(&cache3, &p, &up).await, "MISS");
    assert_eq!(cache3.stats().stored, 0);
}

#[tokio::test(start_paused = true)]
async fn vary_keys_variants_and_vary_star_is_not_stored() {
    let cache = cache();
    let up = Upstream::new(|n, _| {
        let body: &'static str = if n == 0 { "first" } else { "second" };
        response(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            body,
        )
    });
    let en = req(
        Method::GET,
        "http://example.com/v",
        &[("accept-language", "en")],
    );
    let fr = req(
        Method::GET,
        "http://example.com/v",
        &[("accept-language", "fr")],
    );
    assert_eq!(run(&cache, &en, &up).await.1, "MISS");
    assert_eq!(run(&cache, &fr, &up).await.1, "MISS");
    assert_eq!(
        run(&cache, &en, &up).await,
        (200, "HIT".into(), Some(0), "first".into())
    );
    assert_eq!(
        run(&cache, &fr, &up).await,
        (200, "HIT".into(), Some(0), "second".into())
    );
    assert_eq!(up.calls(), 2);
    cache.run_pending_tasks();
    // Two variants and the primary key's marker.
    assert_eq!(cache.stats().entries, 3);
    // No Accept-Language is a third variant.
    assert_eq!(
        x_cache(&cache, &get("http://example.com/v"), &up).await,
        "MISS"
    );
    assert_eq!(up.calls(), 3);

    let star = Upstream::fixed(200, &[("cache-control", "max-age=60"), ("vary", "*")], "x");
    let p = get("http://example.com/star");
    assert_eq!(x_cache(&cache, &p, &star).await, "MISS");
    assert_eq!(x_cache(&cache, &p, &star).await, "MISS");
    assert_eq!(star.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn age_is_set_on_hits() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60"), ("age", "5")], "x");
    let p = get("http://example.com/age");
    let (_, x, age, _) = run(&cache, &p, &up).await;
    assert_eq!((x.as_str(), age), ("MISS", Some(5)));
    advance(7).await;
    let (_, x, age, _) = run(&cache, &p, &up).await;
    assert_eq!((x.as_str(), age), ("HIT", Some(12)));
    // Age counts against max-age: 5 + 54 = 59 < 60, then 61.
    advance(47).await;
    assert_eq!(run(&cache, &p, &up).await.2, Some(59));
    advance(2).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
}

#[tokio::test(start_paused = true)]
async fn stale_entry_is_revalidated_and_refreshed_by_304() {
    let cache = cache();
    let up = Upstream::new(
        |_, cond| match cond.and_then(|h| h.get(header::IF_NONE_MATCH)) {
            Some(v) if v == "\"v1\"" => response(
                304,
                &[
                    ("cache-control", "max-age=20"),
                    ("etag", "\"v1\""),
                    ("x-new", "yes"),
                ],
                "",
            ),
            _ => response(
                200,
                &[
                    ("cache-control", "max-age=10"),
                    ("etag", "\"v1\""),
                    ("content-length", "4"),
                ],
                "body",
            ),
        },
    );
    let p = get("http://example.com/rv");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(11).await;
    let resp = cache.serve(&p, up.fetch()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[X_CACHE], "REVALIDATED");
    assert_eq!(resp.headers()["x-new"], "yes");
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "max-age=20");
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "4");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "body");
    assert_eq!((up.calls(), up.conditionals()), (2, 1));
    let seen = up.seen.lock().unwrap().last().cloned().unwrap().unwrap();
    assert_eq!(seen[header::IF_NONE_MATCH], "\"v1\"");
    // Fresh again for the 304's max-age=20.
    advance(19).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    assert_eq!(up.calls(), 2);
    assert_eq!(cache.stats().revalidated, 1);
}

#[tokio::test(start_paused = true)]
async fn last_modified_validator_sends_if_modified_since() {
    let cache = cache();
    let lm = date(&cache, -1000);
    let lm2 = lm.clone();
    let up =
        Upstream::new(
            move |_, cond| match cond.and_then(|h| h.get(header::IF_MODIFIED_SINCE)) {
                Some(v) if v.to_str().unwrap() == lm2 => response(304, &[], ""),
                _ => response(
                    200,
                    &[("cache-control", "max-age=10"), ("last-modified", &lm2)],
                    "b",
                ),
            },
        );
    let p = get("http://example.com/lm");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(11).await;
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "REVALIDATED".into(), Some(0), "b".into())
    );
    assert_eq!(up.conditionals(), 1);
    let _ = lm;
}

#[tokio::test(start_paused = true)]
async fn client_conditional_against_fresh_entry_gets_304() {
    let cache = cache();
    let lm = date(&cache, -3600);
    let up = Upstream::fixed(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "W/\"v1\""),
            ("last-modified", &lm),
        ],
        "body",
    );
    let p = get("http://example.com/c");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    let inm = req(
        Method::GET,
        "http://example.com/c",
        &[("if-none-match", "\"v0\", \"v1\"")],
    );
    let resp = cache.serve(&inm, up.fetch()).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()[X_CACHE], "HIT");
    assert_eq!(resp.headers()[header::ETAG], "W/\"v1\"");
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    let other = req(
        Method::GET,
        "http://example.com/c",
        &[("if-none-match", "\"v2\"")],
    );
    assert_eq!(
        run(&cache, &other, &up).await,
        (200, "HIT".into(), Some(0), "body".into())
    );
    let ims = req(
        Method::GET,
        "http://example.com/c",
        &[("if-modified-since", &date(&cache, 0))],
    );
    assert_eq!(run(&cache, &ims, &up).await.0, 304);
    let old = req(
        Method::GET,
        "http://example.com/c",
        &[("if-modified-since", &date(&cache, -7200))],
    );
    assert_eq!(run(&cache, &old, &up).await.0, 200);
    assert_eq!(up.calls(), 1);
}

/// A cold miss with the client's own If-None-Match: the cache fetches the
/// full response (to store it) and answers the client's condition itself.
#[tokio::test(start_paused = true)]
async fn client_conditional_on_cold_miss_is_answered_after_storing() {
    let cache = cache();
    let up = Upstream::fixed(
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
        "body",
    );
    let inm = req(
        Method::GET,
        "http://example.com/cc",
        &[("if-none-match", "\"v1\"")],
    );
    let (status, x, _, body) = run(&cache, &inm, &up).await;
    assert_eq!((status, x.as_str(), body.as_str()), (304, "MISS", ""));
    // The upstream got an unconditional request.
    assert_eq!(up.conditionals(), 0);
    // The body was read into the store in the background.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        run(&cache, &get("http://example.com/cc"), &up).await,
        (200, "HIT".into(), Some(0), "body".into())
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let cache = cache();
    let up = Upstream::new(|n, _| {
        let body: &'static str = if n == 0 { "old" } else { "new" };
        response(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
            body,
        )
    })
    .with_delay(Duration::from_millis(100));
    let p = get("http://example.com/swr");
    assert_eq!(run(&cache, &p, &up).await.3, "old");
    advance(2).await;
    // Five requests while the refresh is under way: all stale at once.
    for _ in 0..5 {
        assert_eq!(
            run(&cache, &p, &up).await,
            (200, "STALE".into(), Some(2), "old".into())
        );
    }
    assert_eq!(cache.stats().background_refreshes, 1);
    // The refresh task runs once this task yields.
    tokio::task::yield_now().await;
    assert_eq!(up.calls(), 2, "one background refresh");
    assert_eq!(run(&cache, &p, &up).await.1, "STALE");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "HIT".into(), Some(0), "new".into())
    );
    assert_eq!(up.calls(), 2);
    let s = cache.stats();
    assert_eq!((s.stale, s.background_refreshes), (6, 1));
    // Past the window: a plain (foreground) miss.
    advance(100).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_on_5xx_within_the_window() {
    let cache = cache();
    let up = Upstream::new(|n, _| {
        if n == 0 {
            response(
                200,
                &[("cache-control", "max-age=1, stale-if-error=60")],
                "good",
            )
        } else {
            response(503, &[], "down")
        }
    });
    let p = get("http://example.com/sie");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(10).await;
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "STALE".into(), Some(10), "good".into())
    );
    assert_eq!(up.calls(), 2);
    advance(60).await;
    assert_eq!(
        run(&cache, &p, &up).await,
        (503, "MISS".into(), None, "down".into())
    );
    let s = cache.stats();
    assert_eq!((s.stale, s.stale_if_error), (1, 1));

    // must-revalidate forbids it.
    let cache = self::cache();
    let up = Upstream::new(|n, _| {
        if n == 0 {
            response(
                200,
                &[(
                    "cache-control",
                    "max-age=1, stale-if-error=60, must-revalidate",
                )],
                "good",
            )
        } else {
            response(502, &[], "down")
        }
    });
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(10).await;
    assert_eq!(run(&cache, &p, &up).await.0, 502);
}

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_misses_make_one_upstream_request() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "shared")
        .with_delay(Duration::from_millis(50));
    let p = get("http://example.com/hot");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, up, p) = (cache.clone(), up.clone(), get("http://example.com/hot"));
        tasks.push(tokio::spawn(async move { run(&cache, &p, &up).await }));
    }
    let mut xs = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, x, _, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "shared"));
        *xs.entry(x).or_insert(0) += 1;
    }
    assert_eq!(up.calls(), 1);
    assert_eq!(xs.get("MISS"), Some(&1));
    assert_eq!(xs.get("HIT"), Some(&99));
    assert_eq!(cache.stats().coalesced, 99);
    let _ = p;
}

/// Uncacheable leader: the waiters go upstream themselves, and the key is
/// then not coalesced (hit-for-pass).
#[tokio::test(start_paused = true)]
async fn uncacheable_leader_releases_waiters() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "no-store")], "private")
        .with_delay(Duration::from_millis(50));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (cache, up) = (cache.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            run(&cache, &get("http://example.com/u"), &up).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().3, "private");
    }
    assert_eq!(up.calls(), 10);
    assert_eq!(cache.stats().coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn eviction_keeps_the_store_under_its_bound() {
    let bound = 64 * 1024;
    let cache = Cache::new(CacheConfig {
        max_bytes: bound,
        ..CacheConfig::default()
    });
    static BODY: [u8; 4000] = [b'x'; 4000];
    let up = Upstream::new(|_, _| {
        let mut r = Response::new(text_body(Bytes::from_static(&BODY)));
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=600"),
        );
        r
    });
    for i in 0..100 {
        let p = get(&format!("http://example.com/obj/{i}"));
        assert_eq!(run(&cache, &p, &up).await.3.len(), 4000);
        // Make some keys popular so the policy has something to keep.
        if i % 10 == 0 {
            run(&cache, &p, &up).await;
        }
    }
    cache.run_pending_tasks();
    let s = cache.stats();
    assert_eq!(s.stored, 100);
    assert!(s.weighted_bytes <= bound, "{s:?}");
    assert!(s.entries < 100 && s.entries > 0, "{s:?}");
    assert!(s.evicted_bytes > 0, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn large_objects_stream_through_uncached() {
    let cache = Cache::new(CacheConfig {
        max_object_bytes: 1000,
        ..CacheConfig::default()
    });
    static BIG: [u8; 5000] = [b'y'; 5000];
    // Without Content-Length: the copy is abandoned on the way.
    let up = Upstream::new(|_, _| {
        let mut r = Response::new(text_body(Bytes::from_static(&BIG)));
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=600"),
        );
        r
    });
    let p = get("http://example.com/big");
    assert_eq!(run(&cache, &p, &up).await.3.len(), 5000);
    assert_eq!(run(&cache, &p, &up).await.3.len(), 5000);
    assert_eq!(up.calls(), 2);
    // With Content-Length: not even teed.
    let up = Upstream::fixed(
        200,
        &[("cache-control", "max-age=600"), ("content-length", "5000")],
        "",
    );
    assert_eq!(
        x_cache(&cache, &get("http://example.com/big2"), &up).await,
        "MISS"
    );
    let s = cache.stats();
    assert_eq!((s.stored, s.too_large), (0, 3));
}

#[tokio::test(start_paused = true)]
async fn purge_by_key_and_prefix() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=600")], "x");
    let vary = Upstream::fixed(
        200,
        &[("cache-control", "max-age=600"), ("vary", "accept")],
        "x",
    );
    for u in ["/a", "/static/1.css", "/static/2.css", "/staticky"] {
        run(&cache, &get(&format!("http://example.com{u}")), &up).await;
    }
    run(
        &cache,
        &req(Method::GET, "http://example.com/v", &[("accept", "a")]),
        &vary,
    )
    .await;
    run(&cache, &get("http://other.example/static/1.css"), &up).await;
    assert!(cache.purge_key("example.com/a"));
    assert!(!cache.purge_key("example.com/a"));
    assert!(cache.purge_key("example.com/v"));
    cache.purge_prefix("example.com/static/");
    let hit = |u: &'static str| {
        let cache = cache.clone();
        async move { cache.contains(&get(u)) }
    };
    assert!(!hit("http://example.com/a").await);
    assert!(!hit("http://example.com/static/1.css").await);
    assert!(!hit("http://example.com/static/2.css").await);
    assert!(hit("http://example.com/staticky").await);
    assert!(hit("http://other.example/static/1.css").await);
    assert!(!cache.contains(&req(
        Method::GET,
        "http://example.com/v",
        &[("accept", "a")]
    )));
    cache.run_pending_tasks();
    assert_eq!(cache.stats().entries, 2);
    // Host header form (origin-form URI) makes the same key.
    let p = req(Method::GET, "/staticky", &[("host", "EXAMPLE.com")]);
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
}

#[tokio::test(start_paused = true)]
async fn head_is_served_from_a_get_entry() {
    let cache = cache();
    let up = Upstream::fixed(
        200,
        &[("cache-control", "max-age=60"), ("content-length", "5")],
        "hello",
    );
    assert_eq!(
        x_cache(&cache, &get("http://example.com/h"), &up).await,
        "MISS"
    );
    let head = req(Method::HEAD, "http://example.com/h", &[]);
    let resp = cache.serve(&head, up.fetch()).await;
    assert_eq!(resp.headers()[X_CACHE], "HIT");
    assert_eq!(resp.headers()[header::CONTENT_LENGTH], "5");
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    assert_eq!(up.calls(), 1);
    // A HEAD miss passes through and stores nothing.
    let up2 = Upstream::fixed(200, &[("cache-control", "max-age=60")], "");
    let head2 = req(Method::HEAD, "http://example.com/h2", &[]);
    assert_eq!(x_cache(&cache, &head2, &up2).await, "MISS");
    assert_eq!(x_cache(&cache, &head2, &up2).await, "MISS");
    assert_eq!(up2.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn authorization_needs_public_or_s_maxage() {
    let auth = req(
        Method::GET,
        "http://example.com/auth",
        &[("authorization", "Bearer t")],
    );
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "x");
    assert_eq!(x_cache(&cache, &auth, &up).await, "MISS");
    assert_eq!(x_cache(&cache, &auth, &up).await, "MISS");
    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "max-age=60, must-revalidate",
    ] {
        let cache = self::cache();
        let up = Upstream::fixed(200, &[("cache-control", cc)], "x");
        assert_eq!(x_cache(&cache, &auth, &up).await, "MISS", "{cc}");
        assert_eq!(x_cache(&cache, &auth, &up).await, "HIT", "{cc}");
    }
}

#[tokio::test(start_paused = true)]
async fn set_cookie_is_stored_only_when_public_and_without_the_cookie() {
    let cache = cache();
    let p = get("http://example.com/ck");
    let up = Upstream::fixed(
        200,
        &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
        "x",
    );
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    let cache = self::cache();
    let up = Upstream::fixed(
        200,
        &[
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "s=1"),
        ],
        "x",
    );
    let first = cache.serve(&p, up.fetch()).await;
    assert!(first.headers().contains_key(header::SET_COOKIE));
    first.into_body().collect().await.unwrap();
    let hit = cache.serve(&p, up.fetch()).await;
    assert_eq!(hit.headers()[X_CACHE], "HIT");
    assert!(!hit.headers().contains_key(header::SET_COOKIE));
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_from_last_modified() {
    let cache = cache();
    let (d, lm) = (date(&cache, 0), date(&cache, -100));
    let up = Upstream::fixed(200, &[("date", &d), ("last-modified", &lm)], "x");
    let p = get("http://example.com/heur");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    advance(9).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    advance(2).await;
    // Stale; Last-Modified is a validator: a conditional request (the
    // fake answers it with a full 200).
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(up.conditionals(), 1);
    // Not for a status that is not cacheable by default.
    let up = Upstream::fixed(302, &[("date", &d), ("last-modified", &lm)], "x");
    let p = get("http://example.com/heur302");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_bypass_and_invalidate() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "x");
    let p = get("http://example.com/doc");
    run(&cache, &p, &up).await;
    assert_eq!(x_cache(&cache, &p, &up).await, "HIT");
    let post = req(Method::POST, "http://example.com/doc", &[]);
    assert_eq!(x_cache(&cache, &post, &up).await, "BYPASS");
    assert_eq!(x_cache(&cache, &p, &up).await, "MISS");
    let range = req(
        Method::GET,
        "http://example.com/doc",
        &[("range", "bytes=0-1")],
    );
    assert_eq!(x_cache(&cache, &range, &up).await, "BYPASS");
    assert_eq!(cache.stats().bypass, 2);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_without_entry_is_504() {
    let cache = cache();
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "x");
    let p = req(
        Method::GET,
        "http://example.com/oic",
        &[("cache-control", "only-if-cached")],
    );
    assert_eq!(run(&cache, &p, &up).await.0, 504);
    assert_eq!(up.calls(), 0);
}

/// A real hyper backend on loopback, reached with hyper's client.
#[tokio::test]
async fn real_hyper_backend() {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::{
        client::legacy::Client,
        rt::{TokioExecutor, TokioIo},
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let served = hits.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from(format!(
                            "n={n} path={}",
                            req.uri().path()
                        ))));
                        r.headers_mut().insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("max-age=60"),
                        );
                        r.headers_mut()
                            .insert(header::ETAG, HeaderValue::from_static("\"e\""));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let cache = cache();
    let fetch = |client: Client<_, http_body_util::Empty<Bytes>>, path: &'static str| {
        move |cond: Option<HeaderMap>| async move {
            let mut up = Request::get(format!("http://{addr}{path}"))
                .body(http_body_util::Empty::new())
                .unwrap();
            xlb::l7::cache::apply_conditional(up.headers_mut(), cond.as_ref());
            let resp = client.request(up).await.unwrap();
            resp.map(|b| b.boxed())
        }
    };
    let p = get("http://example.com/real");
    for (i, want) in ["MISS", "HIT", "HIT"].into_iter().enumerate() {
        let resp = cache.serve(&p, fetch(client.clone(), "/real")).await;
        assert_eq!(resp.headers()[X_CACHE], want, "request {i}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "n=0 path=/real");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.abort();
}

/// Concurrent requests for a stale entry: one conditional request.
#[tokio::test(start_paused = true)]
async fn concurrent_revalidations_coalesce() {
    let cache = cache();
    let up = Upstream::new(
        |_, cond| match cond.and_then(|h| h.get(header::IF_NONE_MATCH)) {
            Some(_) => response(304, &[("cache-control", "max-age=10")], ""),
            None => response(
                200,
                &[("cache-control", "max-age=10"), ("etag", "\"e\"")],
                "body",
            ),
        },
    )
    .with_delay(Duration::from_millis(20));
    assert_eq!(
        x_cache(&cache, &get("http://example.com/st"), &up).await,
        "MISS"
    );
    advance(11).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, up) = (cache.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            run(&cache, &get("http://example.com/st"), &up).await
        }));
    }
    let mut revalidated = 0;
    for t in tasks {
        let (status, x, _, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "body"));
        revalidated += usize::from(x == "REVALIDATED");
    }
    assert_eq!((up.calls(), up.conditionals(), revalidated), (2, 1, 1));
    let s = cache.stats();
    assert_eq!((s.coalesced, s.in_flight), (19, 0));
}

/// The client gets each chunk as it arrives; the copy is stored at the end.
#[tokio::test(start_paused = true)]
async fn body_is_teed_not_buffered_before_the_client() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let cache = cache();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let up = Upstream::new(move |_, _| {
        let rx = rx.lock().unwrap().take().unwrap();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, hyper::Error>(Frame::data(b)), rx))
        });
        let mut r = Response::new(StreamBody::new(stream).boxed());
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        r
    });
    let p = get("http://example.com/stream");
    let resp = cache.serve(&p, up.fetch()).await;
    assert_eq!(resp.headers()[X_CACHE], "MISS");
    let mut body = resp.into_body();
    tx.send(Bytes::from_static(b"one ")).await.unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "one ");
    // Not stored before the end.
    assert!(!cache.contains(&p));
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "two");
    assert_eq!(
        run(&cache, &p, &up).await,
        (200, "HIT".into(), Some(0), "one two".into())
    );
    assert_eq!(up.calls(), 1);
}

/// A leader whose client does not read its body holds the waiters only
/// for `coalesce_wait`; then they go upstream themselves.
#[tokio::test(start_paused = true)]
async fn waiters_give_up_after_the_coalesce_wait() {
    let cache = Cache::new(CacheConfig {
        coalesce_wait: Duration::from_secs(1),
        ..CacheConfig::default()
    });
    let up = Upstream::fixed(200, &[("cache-control", "max-age=60")], "x");
    let p = get("http://example.com/slow");
    let held = cache.serve(&p, up.fetch()).await;
    assert_eq!(held.headers()[X_CACHE], "MISS");
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (cache, up) = (cache.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            run(&cache, &get("http://example.com/slow"), &up).await.1
        }));
    }
    for t in tasks {
        // The first to go upstream stores; the others may hit it.
        assert!(["MISS", "HIT"].contains(&t.await.unwrap().as_str()));
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(up.calls() >= 2);
    drop(held);
}
