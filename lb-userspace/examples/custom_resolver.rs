//! Embedding xlb's proxy with a route resolver of your own.
//!
//! `TenantDirectory` routes `<tenant>.tenants.test` to the backend when the
//! tenant is listed in a directory file (one name per line), read
//! asynchronously on the first request for that tenant and then cached;
//! other hosts get xlb's 404. It implements [`Resolver::lookup`], the async
//! step the proxy awaits before the synchronous match — the same hook
//! xlb's own lazy store resolver (`routes: lazy`) uses.
//!
//! ```sh
//! echo acme > /tmp/tenants
//! cargo run -p lb-userspace --example custom_resolver -- 127.0.0.1:8080 127.0.0.1:9000 /tmp/tenants
//! curl -i -H 'Host: acme.tenants.test' http://127.0.0.1:8080/   # proxied
//! curl -i -H 'Host: other.tenants.test' http://127.0.0.1:8080/  # 404 no-route
//! ```
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use futures_util::FutureExt;
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    options::UpstreamOptions,
    proxy::{Pool, Proxy},
    router::{Lookup, Match, RequestInfo, Resolver, RouteSpec, RouteTable},
    server::{serve, ConnInfo, ServerLimits},
};

/// Tenants from a file; each tenant's table is built once, on its first
/// request (`None` cached for names that are not listed).
struct TenantDirectory {
    file: PathBuf,
    tables: Mutex<HashMap<String, Option<Arc<RouteTable>>>>,
}

impl TenantDirectory {
    fn cached(&self, host: &str) -> Option<Option<Arc<RouteTable>>> {
        self.tables.lock().ok()?.get(host).cloned()
    }

    async fn load(&self, host: &str) -> Option<Arc<RouteTable>> {
        let tenant = host.strip_suffix(".tenants.test")?;
        // File reads block: off the request's worker thread.
        let file = self.file.clone();
        let listed = tokio::task::spawn_blocking(move || std::fs::read_to_string(file))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|text| text.lines().any(|l| l.trim() == tenant));
        let table = listed.then(|| {
            let mut route = RouteSpec::new(format!("tenant-{tenant}"), "app");
            route.hosts = vec![host.to_string()];
            Arc::new(RouteTable::build(vec![route]).expect("one route builds"))
        });
        if let Ok(mut t) = self.tables.lock() {
            t.insert(host.to_string(), table.clone());
        }
        table
    }
}

impl Resolver for TenantDirectory {
    /// What is in memory only.
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        self.cached(req.host()?)?.and_then(|t| t.resolve(req))
    }

    /// A cached tenant answers at once; a new one reads the directory.
    fn lookup<'a>(&'a self, req: &'a RequestInfo<'a>) -> Lookup<'a> {
        let Some(host) = req.host() else {
            return Lookup::Ready(None);
        };
        match self.cached(host) {
            Some(table) => Lookup::Ready(table.and_then(|t| t.resolve(req))),
            None => Lookup::Pending(
                async move { Ok(self.load(host).await.and_then(|t| t.resolve(req))) }.boxed(),
            ),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:8080".into()).parse()?;
    let backend: SocketAddr = args.next().unwrap_or("127.0.0.1:9000".into()).parse()?;
    let file = PathBuf::from(args.next().unwrap_or("/tmp/tenants".into()));

    let upstream = Arc::new(Upstream::new(
        vec![Node {
            id: 0,
            addr: backend,
            weight: 1,
        }],
        UpstreamConfig::default(),
    )?);
    let balancer = balance::build(upstream.clone(), Algorithm::RoundRobin, false)?;
    let pool = Pool::new("app", upstream, balancer, UpstreamOptions::default(), None)?;
    let pools = HashMap::from([("app".to_string(), Arc::new(pool))]);
    let resolver = TenantDirectory {
        file,
        tables: Mutex::new(HashMap::new()),
    };
    let proxy = Arc::new(Proxy::new(Arc::new(resolver), pools));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("custom_resolver: {listen} → {backend} (Ctrl-C stops)");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    serve(
        listener,
        None,
        ServerLimits::default(),
        move |req, info: ConnInfo| {
            let proxy = proxy.clone();
            async move { proxy.handle(req, info).await }
        },
        stopped,
    )
    .await;
    Ok(())
}
