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

/// The observe socket across a handover: the one received from the
/// predecessor (taken by [`bind`] when the address matches) and a second
/// handle on the one bound (sent to a successor). One daemon per process,
/// as for the request-record sink.
#[derive(Default)]
struct Handover {
    /// `(configured, bound, socket)` received from the predecessor.
    inherited: Option<(SocketAddr, SocketAddr, std::net::TcpListener)>,
    /// `(configured, bound, socket)` this process serves.
    bound: Option<(SocketAddr, SocketAddr, std::net::TcpListener)>,
}

static HANDOVER: std::sync::Mutex<Handover> = std::sync::Mutex::new(Handover {
    inherited: None,
    bound: None,
});

fn handover() -> std::sync::MutexGuard<'static, Handover> {
    HANDOVER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives [`bind`] the predecessor's observe socket, configured on
/// `configured` and bound to `local`: a `bind` of either address adopts
/// it; another address is bound afresh (and this socket closed).
pub fn inherit(configured: SocketAddr, local: SocketAddr, socket: std::net::TcpListener) {
    handover().inherited = Some((configured, local, socket));
}

/// The observe socket for a successor: configured address, bound
/// address, and a second handle on the socket.
pub fn handover_socket() -> Option<(SocketAddr, SocketAddr, std::net::TcpListener)> {
    let h = handover();
    let (c, l, s) = h.bound.as_ref()?;
    Some((*c, *l, s.try_clone().ok()?))
}

/// Binds `addr` (an error names it), or adopts the socket a predecessor
/// handed over for it ([`inherit`]).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let err = |e: std::io::Error| anyhow::anyhow!("observe.listen {addr}: {e}");
    let inherited = handover().inherited.take();
    let listener = match inherited {
        Some((c, l, socket)) if c == addr || l == addr => {
            log::info!("observe: the previous process's socket for {addr} adopted");
            socket.set_nonblocking(true).map_err(err)?;
            TcpListener::from_std(socket).map_err(err)?
        }
        _ => TcpListener::bind(addr).await.map_err(err)?,
    };
    let local = listener.local_addr().map_err(err)?;
    let second = std::os::fd::AsFd::as_fd(&listener)
        .try_clone_to_owned()
        .map_err(err)?;
    handover().bound = Some((addr, local, std::net::TcpListener::from(second)));
    Ok(listener)
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
