//! The observe listener: `/metrics`, `/status`, `/status.json` over plain
//! HTTP/1.1 (`observe.listen`, loopback by default).
//!
//! A listener of its own rather than a route on a proxy listener: it must
//! answer when the proxy is overloaded or misconfigured, and what it shows
//! (backends, denied sources) is for operators only. The admin API can
//! later serve on this same socket: it is a handler list, not a port.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use super::Observe;

/// The content type of prometheus-client's text exposition, served to
/// scrapers that ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, served to everyone else.
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.contains("application/openmetrics-text"))
    })
}

fn answer(obs: &Observe, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => match obs.encode_metrics() {
            Ok(text) if wants_openmetrics(req) => reply(StatusCode::OK, OPENMETRICS, text),
            Ok(text) => reply(
                StatusCode::OK,
                TEXT_004,
                super::exposition::to_text_004(&text),
            ),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/status.json" => {
            let body = serde_json::to_vec_pretty(&obs.status()).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        "/status" | "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::status_page::render(&obs.status()),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /status or /status.json\n",
        ),
    }
}

/// Binds `addr` (an error names it), then serves until `shutdown` turns true.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("observe.listen {addr}: {e}"))
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, obs: Arc<Observe>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("observe listener: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        };
        let obs = obs.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = answer(&obs, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}
