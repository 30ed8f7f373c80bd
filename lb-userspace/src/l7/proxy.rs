//! One request's life in the proxy: parse and check the request target,
//! route it, pick a node of the route's upstream, forward, and retry on
//! another node when that is safe. Every way this can fail is a response
//! with a status and an `x-xlb-error` reason, never a hang or a panic.
//!
//! Phases, in order: target check (400) → route (404) → upstream lookup
//! (502 when the config names an unknown upstream, which validation
//! prevents) → node pick (503 with the pool's reason) → forward (502/504,
//! with retries on other nodes).
use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};

use super::{
    balance::{Balancer, PickContext, Upstream},
    forward::{empty_body, error_response, ForwardError, Forwarder, ProxyBody},
    headers::Downstream,
    router::{path_hazard, RequestInfo, Resolver},
    server::ConnInfo,
};

/// One named upstream: its nodes' shared state and its picking algorithm.
pub struct Pool {
    /// Nodes and their live state.
    pub upstream: Arc<Upstream>,
    /// How a node is picked.
    pub balancer: Box<dyn Balancer>,
    /// How its nodes are reached.
    pub options: super::options::UpstreamOptions,
    forwarder: Forwarder,
}

impl Pool {
    /// A pool over `upstream`; reuses `previous`'s connections.
    pub fn new(
        _id: String,
        upstream: Arc<Upstream>,
        balancer: Box<dyn Balancer>,
        options: super::options::UpstreamOptions,
        previous: Option<&Pool>,
    ) -> Result<Pool, std::convert::Infallible> {
        let forwarder = match previous {
            Some(p) => p.forwarder.clone(),
            None => Forwarder::new(super::forward::ForwarderConfig::default()),
        };
        Ok(Pool {
            upstream,
            balancer,
            options,
            forwarder,
        })
    }
}

/// The routing table, the upstreams and the forwarder, as one handler.
pub struct Proxy {
    routes: Arc<dyn Resolver>,
    pools: HashMap<String, Arc<Pool>>,
    /// Further nodes tried after the first, when retrying is safe.
    retries: usize,
}

impl Proxy {
    /// A proxy over `routes` and `pools`.
    pub fn new(routes: Arc<dyn Resolver>, pools: HashMap<String, Arc<Pool>>) -> Proxy {
        Proxy {
            routes,
            pools,
            retries: 2,
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let info = match RequestInfo::from_parts(&parts) {
            Ok(i) => i,
            Err(e) => {
                log::debug!("{}: bad request target: {e}", conn.peer);
                return error_response(e.status(), "bad-request-target");
            }
        };
        // Routing matches the raw path: a path spelled to dodge a route
        // (dot segments, encoded slashes) is refused rather than guessed.
        if path_hazard(info.path()).is_some() {
            return error_response(StatusCode::BAD_REQUEST, "ambiguous-path");
        }
        let Some(matched) = self.routes.resolve(&info) else {
            return error_response(StatusCode::NOT_FOUND, "no-route");
        };
        let host = info.host().map(str::to_string);
        let Some(pool) = self.pools.get(matched.route.upstream()) else {
            return error_response(StatusCode::BAD_GATEWAY, "no-upstream");
        };
        let down = Downstream {
            client_ip: conn.peer.ip(),
            proto: if conn.tls { "https" } else { "http" },
            host: host.as_deref(),
            version: parts.version,
        };
        // Only a request without a body can be sent again: its whole
        // content is the head, which is still here.
        let replayable = body.is_end_stream();
        let mut body = Some(body.boxed());
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        loop {
            let Some(node) = pick(pool, conn.peer.ip(), &tried) else {
                // Every node was tried: the client gets the last failure
                // (a 502 says more than "no node" would).
                if let Some(e) = last_error {
                    return ForwardError::into_response(e);
                }
                let reason = pool
                    .upstream
                    .unavailable(&tried)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "no node available".into());
                log::debug!("upstream {}: {reason}", matched.route.upstream());
                let mut resp = error_response(StatusCode::SERVICE_UNAVAILABLE, "no-healthy-node");
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            };
            tried.push(node);
            let addr = pool.upstream.nodes()[node].addr;
            let mut attempt = Request::from_parts(parts.clone(), ());
            *attempt.extensions_mut() = http::Extensions::new();
            let b = body.take().unwrap_or_else(empty_body);
            let request = attempt.map(|()| b);
            let started = Instant::now();
            let flight = pool.upstream.begin(node);
            match pool.forwarder.forward(request, addr, &down).await {
                Ok(resp) => {
                    flight.finish(started.elapsed(), !resp.status().is_server_error());
                    return resp;
                }
                Err(e) => {
                    flight.finish(started.elapsed(), false);
                    let retry = replayable && e.never_sent() && tried.len() <= self.retries;
                    log::debug!("{addr}: {e}{}", if retry { "; retrying" } else { "" });
                    if !retry {
                        return e.into_response();
                    }
                    last_error = Some(e);
                    body = Some(empty_body());
                }
            }
        }
    }
}

fn pick(pool: &Pool, client: IpAddr, tried: &[usize]) -> Option<usize> {
    pool.balancer
        .pick(&PickContext::new(client).with_exclude(tried))
}
