//! Request dispatch of the admin API.
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{
    reply::{self, Body},
    Admin, APPLY_WAIT, MAX_BODY,
};
use crate::config::resource::Kind;
use crate::store::resources::{Write, WriteError};

/// Default and largest page of a list.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Answers one admin request.
pub async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    if *admin.paused.borrow() {
        // A handover: the successor answers on a new connection.
        let mut r = reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process is handing over to a successor; retry (a new connection reaches it)",
        );
        let h = r.headers_mut();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        h.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return r;
    }
    if let Some(t) = &admin.token {
        if !t.admits(req.headers()) {
            let mut r = reply::error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token (X-API-KEY or Authorization: Bearer)",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/xlb/v1/") else {
        return reply::error(
            StatusCode::NOT_FOUND,
            "no such endpoint (the API is under /xlb/v1/)",
        );
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["status"]) => status(admin).await,
        (Method::POST, ["txn"]) => txn(admin, req).await,
        (m, [kind, tail @ ..]) => {
            let Some(kind) = Kind::parse(kind) else {
                return reply::error(StatusCode::NOT_FOUND, format!("no resource kind `{kind}` (routes, upstreams, certificates, rate_limits, vips)"));
            };
            match (m, tail) {
                (Method::GET, [] | [""]) => list(admin, kind, req.uri().query()).await,
                (Method::GET, [id]) => get(admin, kind, id).await,
                (Method::PUT, [id]) => {
                    let id = id.to_string();
                    put(admin, kind, id, req).await
                }
                (Method::DELETE, [id]) => {
                    let id = id.to_string();
                    let if_match = match if_match(&req) {
                        Ok(m) => m,
                        Err(r) => return r,
                    };
                    let fleet = match wait_fleet(req.uri().query()) {
                        Ok(f) => f,
                        Err(r) => return r,
                    };
                    write(admin, &[Write::Delete { kind, id, if_match }], fleet).await
                }
                _ => reply::error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET, PUT or DELETE on /xlb/v1/<kind>/<id>, GET on /xlb/v1/<kind>",
                ),
            }
        }
        _ => reply::error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

async fn status(admin: &Admin) -> Response<Body> {
    let applied = *admin.applied.borrow();
    let healthy = admin.resources.store.healthy().await;
    let mut body = json!({
        "pid": std::process::id(),
        "applied_revision": applied.revision,
        "store": {
            "kind": admin.resources.store.kind(),
            "healthy": healthy,
            "watch_connected": applied.connected,
        },
        "routes": if admin.lazy.is_some() { "lazy" } else { "eager" },
    });
    if let Some(lazy) = &admin.lazy {
        let s = lazy.stats();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        body["lazy"] = json!({
            "cached_slots": lazy.entries(),
            "hits": n(&s.hits),
            "loads": n(&s.loads),
            "joined": n(&s.joined),
            "shed": n(&s.shed),
            "store_errors": n(&s.store_errors),
            "raced": n(&s.raced),
        });
    }
    reply::json(StatusCode::OK, &body)
}

async fn get(admin: &Admin, kind: Kind, id: &str) -> Response<Body> {
    match admin.resources.get(kind, id).await {
        Ok(Some(s)) => {
            let mut r = reply::json(StatusCode::OK, &s.value);
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", s.revision)) {
                r.headers_mut().insert(http::header::ETAG, v);
            }
            r
        }
        Ok(None) => reply::error(
            StatusCode::NOT_FOUND,
            format!("no {} named `{id}`", kind.as_str()),
        ),
        Err(e) => reply::store_error(&e),
    }
}

async fn list(admin: &Admin, kind: Kind, query: Option<&str>) -> Response<Body> {
    let mut limit = PAGE;
    let mut after = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    return reply::error(StatusCode::BAD_REQUEST, format!("limit: 1 to {MAX_PAGE}"))
                }
            },
            "after" => after = Some(v.to_string()),
            _ => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter `{k}` (limit, after)"),
                )
            }
        }
    }
    match admin.resources.list(kind, after.as_deref(), limit).await {
        Ok((items, next)) => reply::json(
            StatusCode::OK,
            &json!({
                "items": items.iter().map(|s| json!({"revision": s.revision, "value": s.value})).collect::<Vec<_>>(),
                "next": next,
            }),
        ),
        Err(e) => reply::store_error(&e),
    }
}

/// `If-Match: "<revision>"` (quotes optional); 0 means "must not exist".
#[allow(clippy::result_large_err)]
fn if_match<B>(req: &Request<B>) -> Result<Option<i64>, Response<Body>> {
    let Some(v) = req.headers().get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|r| *r >= 0)
        .map(Some)
        .ok_or_else(|| {
            reply::error(
                StatusCode::BAD_REQUEST,
                "If-Match: a revision as returned in ETag, e.g. \"42\"",
            )
        })
}

#[allow(clippy::result_large_err)]
async fn body_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes or cut short"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        reply::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("body is not JSON: {e}"), "issues": [{"field": "", "message": e.to_string()}]}),
        )
    })
}

/// `?wait=fleet`: the write returns once every live node of the fleet
/// applied it (not only this one).
#[allow(clippy::result_large_err)]
fn wait_fleet(query: Option<&str>) -> Result<bool, Response<Body>> {
    let mut fleet = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair {
            "wait=fleet" => fleet = true,
            "wait=local" => fleet = false,
            _ => {
                return Err(reply::error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter `{pair}` (wait=local | wait=fleet)"),
                ))
            }
        }
    }
    Ok(fleet)
}

async fn put(admin: &Admin, kind: Kind, id: String, req: Request<Incoming>) -> Response<Body> {
    let if_match = match if_match(&req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let fleet = match wait_fleet(req.uri().query()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let value = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    write(
        admin,
        &[Write::Put {
            kind,
            id,
            value,
            if_match,
        }],
        fleet,
    )
    .await
}

async fn txn(admin: &Admin, req: Request<Incoming>) -> Response<Body> {
    let fleet = match wait_fleet(req.uri().query()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let body = match body_json(req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(list) = body.get("writes").and_then(Value::as_array) else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "writes: a list of {op, kind, id, value?, if_match?}",
        );
    };
    let mut writes = Vec::with_capacity(list.len());
    for (i, w) in list.iter().enumerate() {
        let field = |f: &str| w.get(f).and_then(Value::as_str);
        let Some(kind) = field("kind").and_then(Kind::parse) else {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "writes[{i}].kind: one of routes, upstreams, certificates, rate_limits, vips"
                ),
            );
        };
        let Some(id) = field("id").map(str::to_string) else {
            return reply::error(StatusCode::BAD_REQUEST, format!("writes[{i}].id: missing"));
        };
        let if_match = w.get("if_match").and_then(Value::as_i64);
        writes.push(match field("op") {
            Some("put") => match w.get("value") {
                Some(v) => Write::Put {
                    kind,
                    id,
                    value: v.clone(),
                    if_match,
                },
                None => {
                    return reply::error(
                        StatusCode::BAD_REQUEST,
                        format!("writes[{i}].value: missing"),
                    )
                }
            },
            Some("delete") => Write::Delete { kind, id, if_match },
            _ => {
                return reply::error(
                    StatusCode::BAD_REQUEST,
                    format!("writes[{i}].op: put or delete"),
                )
            }
        });
    }
    write(admin, &writes, fleet).await
}

/// Commits `writes`, then waits until this node (with `fleet`, every
/// live node) has applied them.
async fn write(admin: &Admin, writes: &[Write], fleet: bool) -> Response<Body> {
    if let Err(r) = check_vips(admin, writes).await {
        return r;
    }
    let revision = match admin.resources.write(writes).await {
        Ok(r) => r,
        Err(e) => {
            if !matches!(e, WriteError::Store(_)) {
                log::debug!("admin: write refused: {e}");
            }
            return reply::write_error(&e);
        }
    };
    let mut applied = admin.applied.clone();
    // The borrow `wait_for` returns is not `Send`: keep only the verdict.
    let applied_here = match tokio::time::timeout(
        APPLY_WAIT,
        applied.wait_for(|a| a.revision >= revision),
    )
    .await
    {
        Ok(Ok(a)) => Some(a.vip_failed == Some(revision)),
        _ => None,
    };
    match applied_here {
        None => {
            return reply::json(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({"error": format!("committed at revision {revision}, but this node has not applied it within {APPLY_WAIT:?}"), "revision": revision}),
            )
        }
        // Checked before it was stored, and still refused when written
        // (the neighbour went away, another write took the last row).
        Some(true) => {
            return reply::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("committed at revision {revision}, but this node's datapath could not write its VIPs (the tables are unchanged; the reason is in its log)"), "revision": revision}),
            )
        }
        Some(false) => {}
    }
    let mut answer = json!({"revision": revision});
    if fleet {
        match wait_for_fleet(admin, revision).await {
            Ok(n) => answer["fleet_nodes"] = json!(n),
            Err(r) => return r,
        }
    }
    let mut r = reply::json(StatusCode::OK, &answer);
    if writes.len() == 1 {
        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{revision}\"")) {
            r.headers_mut().insert(http::header::ETAG, v);
        }
    }
    r
}

/// How long the datapath may take to answer a VIP check (it resolves
/// the backends' next hops, up to 3 s each, concurrently).
const VIP_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks this node's XDP datapath whether it can serve each VIP the writes
/// create or replace; 422 naming the write when it cannot, and nothing is
/// stored. (Stored first, such a VIP was acknowledged and then only
/// logged as not applied.) A VIP that does not parse or validate is left
/// to the store's write, which names the field. Each VIP of a batch is
/// checked against what the node serves now, not against the others.
async fn check_vips(admin: &Admin, writes: &[Write]) -> Result<(), Response<Body>> {
    let Some(sink) = &admin.vips else {
        return Ok(());
    };
    let many = writes.len() > 1;
    for (i, w) in writes.iter().enumerate() {
        let Write::Put {
            kind: Kind::Vips,
            id,
            value,
            ..
        } = w
        else {
            continue;
        };
        use crate::config::{l4::VipConfig, resource};
        let parsed = resource::with_id(Kind::Vips, id, value.clone())
            .and_then(|v| resource::parse::<VipConfig>(&v));
        let Ok(vip) = parsed else { continue };
        if resource::check_vip(&vip).is_err() {
            continue;
        }
        let (answer, verdict) = tokio::sync::oneshot::channel();
        let asked = sink.send(crate::store::apply::VipRequest::Check(Box::new(
            crate::store::apply::VipCheck { vip, answer },
        )));
        let field = if many {
            format!("writes[{i}].value")
        } else {
            "value".to_string()
        };
        let reason = match asked {
            Err(_) => Some("the datapath is not running".to_string()),
            Ok(()) => match tokio::time::timeout(VIP_CHECK_WAIT, verdict).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(reason))) => Some(reason),
                Ok(Err(_)) => Some("the datapath did not answer".to_string()),
                Err(_) => Some(format!(
                    "the datapath did not answer within {VIP_CHECK_WAIT:?}"
                )),
            },
        };
        if let Some(reason) = reason {
            return Err(reply::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": format!("vips/{id}: this node cannot serve it, not stored: {reason}"),
                    "issues": [{"field": field, "message": reason}],
                }),
            ));
        }
    }
    Ok(())
}

/// Waits until every node announced under `<prefix>/nodes/` has applied
/// `revision`; how many nodes that was. Polls every 2 ms (one range read
/// of a few keys) up to [`APPLY_WAIT`].
async fn wait_for_fleet(admin: &Admin, revision: i64) -> Result<usize, Response<Body>> {
    let prefix = admin.resources.layout.nodes();
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    loop {
        let (nodes, _) = match admin.resources.store.range(&prefix, None, None).await {
            Ok(r) => r,
            Err(e) => return Err(reply::store_error(&e)),
        };
        let behind: Vec<String> = nodes
            .iter()
            .filter(|kv| {
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_none_or(|r| r < revision)
            })
            .map(|kv| kv.key.trim_start_matches(&prefix).to_string())
            .collect();
        if behind.is_empty() {
            return Ok(nodes.len());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(reply::json(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({"error": format!("committed at revision {revision}; applied here, but not by every node within {APPLY_WAIT:?}"), "revision": revision, "behind": behind}),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
