//! In-process route lookups for `cargo xtask bench config`: nanoseconds per
//! lookup through the resolvers the proxy uses, without sockets (over HTTP
//! a lookup drowns in the connection). `route_lookup`: per-host tables
//! (what a store-fed node holds, `HostTables`) with 10² and with N hosts;
//! `lazy_hit`: a lazy resolver answering from its cache.
use std::{
    collections::HashSet,
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::{BoxFuture, FutureExt};
use xlb::l7::{
    lazy::{LazyHosts, LazyResolver, LazySettings, Loaded, SlotSource, SourceUnavailable},
    router::{HostSlot, HostTables, Lookup, RequestInfo, Resolver, RouteSpec, RouteTable},
};

fn table(host: &str) -> RouteTable {
    let mut s = RouteSpec::new(format!("r-{host}"), "u");
    s.hosts = vec![host.to_string()];
    RouteTable::build(vec![s]).expect("one-route table")
}

fn parts(host: &str) -> http::request::Parts {
    http::Request::get("/x")
        .header("host", host)
        .body(())
        .expect("request")
        .into_parts()
        .0
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    super::proc_rss(std::process::id())
}

/// Times `rounds` passes over `infos` through `f`; ns per call.
fn time_ns(infos: &[RequestInfo<'_>], rounds: usize, mut f: impl FnMut(&RequestInfo<'_>)) -> f64 {
    let t = Instant::now();
    for _ in 0..rounds {
        for i in infos {
            f(i);
        }
    }
    t.elapsed().as_nanos() as f64 / (rounds * infos.len()) as f64
}

/// Hosts probed per measurement (spread over the whole table).
const PROBES: usize = 10_000;

/// (ns per lookup, bytes of resident memory per host table) with `n`
/// one-route hosts in per-host tables.
pub fn route_lookup(n: usize) -> (f64, f64) {
    let before = rss();
    let tables = HostTables::new();
    for k in 0..n {
        let h = format!("pre-{k}.bench");
        tables.set(&HostSlot::Exact(h.clone()), Some(table(&h)));
    }
    let bytes = rss().saturating_sub(before) as f64 / n as f64;
    let step = (n / PROBES).max(1);
    let ps: Vec<_> = (0..n)
        .step_by(step)
        .take(PROBES)
        .map(|k| parts(&format!("pre-{k}.bench")))
        .collect();
    let infos: Vec<RequestInfo<'_>> = ps
        .iter()
        .map(|p| RequestInfo::from_parts(p).expect("info"))
        .collect();
    let rounds = (1_000_000 / infos.len()).max(1);
    time_ns(&infos, 1, |i| {
        black_box(tables.resolve(i));
    });
    let ns = time_ns(&infos, rounds, |i| {
        assert!(black_box(tables.resolve(i)).is_some());
    });
    drop(tables);
    (ns, bytes)
}

/// A source over a set of host names, each with one route: stands in for
/// the store so that the cache's hit path is timed alone (a hit never
/// consults the source).
struct Names(Arc<HashSet<String>>);

impl SlotSource for Names {
    fn load(
        &self,
        host: String,
        suffix: Option<String>,
    ) -> BoxFuture<'static, Result<Loaded, SourceUnavailable>> {
        let known = self.0.contains(&host);
        async move {
            let exact: Arc<[Option<Arc<RouteTable>>]> = if known {
                Arc::from(vec![Some(Arc::new(table(&host)))])
            } else {
                Arc::from(vec![None])
            };
            Ok(Loaded {
                revision: 1,
                exact,
                wildcard: suffix.map(|_| Arc::from(vec![None])),
            })
        }
        .boxed()
    }
}

/// ns per lazy cache hit with `hot` hosts cached.
pub fn lazy_hit(hot: usize) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let names: HashSet<String> = (0..hot).map(|k| format!("hot-{k}.bench")).collect();
    let hosts = Arc::new(LazyHosts::new(LazySettings {
        cache_entries: (hot as u64) * 4,
        misses_per_second: u32::MAX,
        max_concurrent_misses: 1024,
        ttl: Duration::from_secs(3600),
        ..LazySettings::default()
    }));
    hosts.set_source(Arc::new(Names(Arc::new(names))));
    let resolver = LazyResolver::new(hosts.clone(), 0, Arc::new(HostTables::new()));
    let ps: Vec<_> = (0..hot).map(|k| parts(&format!("hot-{k}.bench"))).collect();
    let infos: Vec<RequestInfo<'_>> = ps
        .iter()
        .map(|p| RequestInfo::from_parts(p).expect("info"))
        .collect();
    // Warm: one load per host.
    rt.block_on(async {
        for i in &infos {
            let m = resolver.lookup(i).wait().await;
            anyhow::ensure!(matches!(m, Ok(Some(_))), "warm-up lookup failed");
        }
        Ok(())
    })?;
    let rounds = (1_000_000 / infos.len()).max(1);
    let ns = time_ns(&infos, rounds, |i| match resolver.lookup(i) {
        Lookup::Ready(m) => {
            assert!(black_box(m).is_some());
        }
        Lookup::Pending(_) => panic!("a warmed host missed the cache"),
    });
    Ok(ns)
}
