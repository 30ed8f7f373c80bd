//! Phase "cache lookup", on a route with a cache
//! ([`RouteOptions::cache`](super::super::options::RouteOptions::cache)):
//! a `PURGE` is answered by the cache and never forwarded (see [`purge`]);
//! an upgrade request bypasses the cache; every other request goes through
//! [`cache::Cache::serve_keyed`], keyed by [`route_key`] on the request as
//! received, with the upstream phases ([`attempts::forward`]) as its
//! `fetch`. A route without a cache goes straight to the upstream phases
//! (`Proxy::handle` calls them itself).
use std::net::IpAddr;

use http::{header, request, HeaderMap, HeaderValue, Request, Response};

use super::{
    super::{
        body::ClientBody,
        cache::{self, x_cache, X_CACHE},
        error::{respond, ErrorKind},
        forward::{text_body, ProxyBody},
        options::{RouteCache, SharedCache},
        upgrade,
    },
    attempts,
    context::RequestCtx,
};

/// Answers from the route's `cache` or through the upstream phases; the
/// flag says whether the response came through the cache.
pub(super) async fn run(
    shared: SharedCache,
    ctx: RequestCtx,
    parts: request::Parts,
    body: ClientBody,
) -> (Response<ProxyBody>, bool) {
    // Boxed, here and below: an async fn's future is as large as its
    // largest state, and a caller that holds one inline is larger still
    // (and copied whole when it moves). Each level boxed once keeps every
    // request's futures at a few KiB (measured: 23 KiB for `handle`
    // before).
    let rc = &shared.0;
    if parts.method.as_str() == "PURGE" {
        return (purge(rc, ctx.route.id(), &parts, ctx.conn.peer.ip()), false);
    }
    if matches!(
        upgrade::offer(&parts.headers, parts.version, &ctx.opts().upgrades),
        upgrade::Offer::Forward(_)
    ) {
        // A protocol switch is an exchange, not a representation.
        let mut resp = Box::pin(attempts::forward(ctx, parts, body)).await;
        resp.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(x_cache::BYPASS));
        return (resp, false);
    }
    // The key and the cache's view are the request as the client sent it
    // (before any rewrite); the owned parts go to `fetch`.
    let view = head_view(&parts);
    let key = route_key(ctx.route.id(), &view);
    let resp = Box::pin(rc.cache.serve_keyed(
        key.as_bytes(),
        &view,
        move |cond: Option<HeaderMap>| {
            let mut parts = parts;
            cache::apply_conditional(&mut parts.headers, cond.as_ref());
            attempts::forward(ctx, parts, body)
        },
    ))
    .await;
    (resp, true)
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
