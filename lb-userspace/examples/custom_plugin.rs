//! Embedding xlb's proxy with a plugin of your own.
//!
//! `TenantGate` refuses requests without an `X-Tenant` header (400) and
//! marks every response with the tenant it served. It sits in the same
//! chain as the built-in plugins (here, `cors`), ordered by priority.
//!
//! ```sh
//! cargo run -p lb-userspace --example custom_plugin -- 127.0.0.1:8080 127.0.0.1:9000
//! curl -i -H 'X-Tenant: acme' http://127.0.0.1:8080/
//! ```
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use http::{request, HeaderValue, Response, StatusCode};
use xlb::l7::{
    balance::{self, Algorithm, Node, Upstream, UpstreamConfig},
    body::{text_body, ProxyBody},
    options::{RouteOptions, UpstreamOptions},
    plugin::{BoxFuture, Plugin, PluginChain, RequestCx, ResponseCx, Verdict},
    plugins::cors::{Cors, CorsConfig},
    proxy::{Pool, Proxy},
    router::{RouteSpec, RouteTable},
    server::{serve, ConnInfo, ServerLimits},
};

#[derive(Debug)]
struct TenantGate {
    /// What the response phase reads of the request.
    needs: [http::HeaderName; 1],
}

impl Plugin for TenantGate {
    fn name(&self) -> &str {
        "tenant-gate"
    }

    /// After CORS (4000) and the auth plugins, before compression.
    fn priority(&self) -> i32 {
        2000
    }

    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        _cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        let verdict = if req.headers.contains_key("x-tenant") {
            Verdict::Continue
        } else {
            let mut resp = Response::new(text_body("X-Tenant is required\n"));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            Verdict::Respond(resp)
        };
        Box::pin(std::future::ready(verdict))
    }

    fn response_needs(&self) -> &[http::HeaderName] {
        &self.needs
    }

    fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        if let Some(t) = cx.request_headers.get("x-tenant") {
            resp.headers_mut().insert("x-served-tenant", t.clone());
        } else {
            resp.headers_mut()
                .insert("x-served-tenant", HeaderValue::from_static("-"));
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:8080".into()).parse()?;
    let backend: SocketAddr = args.next().unwrap_or("127.0.0.1:9000".into()).parse()?;

    let cors = Cors::new(&CorsConfig {
        allow_origins: vec!["*".into()],
        allow_methods: vec![],
        allow_headers: vec![],
        expose_headers: vec![],
        max_age: None,
        allow_credentials: false,
    })
    .map_err(|(field, msg)| anyhow::anyhow!("cors.{field}: {msg}"))?;
    let mut route = RouteSpec::new("all", "app");
    route.options = std::sync::Arc::new(RouteOptions {
        plugins: PluginChain::new(vec![
            Arc::new(TenantGate {
                needs: [http::HeaderName::from_static("x-tenant")],
            }),
            Arc::new(cors),
        ]),
        ..RouteOptions::default()
    });
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
    let proxy = Arc::new(Proxy::new(Arc::new(RouteTable::build(vec![route])?), pools));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("custom_plugin: {listen} → {backend} (Ctrl-C stops)");
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
