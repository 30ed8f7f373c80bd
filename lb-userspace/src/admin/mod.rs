//! The admin API: HTTP/JSON on its own listener (default 127.0.0.1:9180),
//! `/xlb/v1/<kind>/<id>` for routes, upstreams, certificates, rate-limit
//! rules and VIPs, `POST /xlb/v1/txn` for an atomic batch, and
//! `GET /xlb/v1/status`. Reference: docs/admin-api.md.
//!
//! A write returns once this node has applied the revision it committed
//! at (read-your-writes): the next request to this node sees it.

mod auth;
mod handler;
mod reply;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::store::{apply::Applied, resources::Resources};

pub use auth::Token;

/// How long a write waits for this node to apply it before answering
/// 504 (the write itself is committed).
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;

/// What the handlers share.
pub struct Admin {
    pub resources: Resources,
    pub applied: watch::Receiver<Applied>,
    pub token: Option<Token>,
    /// Lazy routing's cache, when routes are lazy (its counters are shown
    /// by `GET /xlb/v1/status`).
    pub lazy: Option<Arc<crate::l7::lazy::LazyHosts>>,
    /// True while this process hands the API to a successor (handover):
    /// it accepts no connection, and a request on a connection it already
    /// has gets 503 with `Retry-After: 1` and `Connection: close`.
    pub paused: watch::Receiver<bool>,
    /// Requests being answered now (a process that hands over or stops
    /// waits for them before it exits).
    pub inflight: Arc<std::sync::atomic::AtomicUsize>,
    /// This node's XDP datapath, asked whether it can serve a VIP before
    /// the VIP is stored (`None`: the node runs none, and VIPs are only
    /// checked as `xlb check` checks them).
    pub vips: Option<crate::store::apply::VipSink>,
}

/// Counts one request in flight while it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// The admin address `address` names (checked as [`bind`] checks it).
pub fn address(address: &str, token: Option<&Token>) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = address
        .parse()
        .with_context(|| format!("admin.address: `{address}` is not ip:port"))?;
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "admin.address: {addr} is not a loopback address; set admin.token (or token_file) to listen there"
        );
    }
    Ok(addr)
}

/// Binds the admin listener. A non-loopback address without a token is
/// refused: the API changes what the proxy serves.
pub async fn bind(address: &str, token: Option<&Token>) -> anyhow::Result<tokio::net::TcpListener> {
    bind_or_adopt(address, token, None).await
}

/// As [`bind`], but adopts `inherited` (the predecessor's socket for the
/// same address, handed over) instead of binding.
pub async fn bind_or_adopt(
    address: &str,
    token: Option<&Token>,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = self::address(address, token)?;
    if let Some(l) = inherited {
        l.set_nonblocking(true)
            .with_context(|| format!("admin.address: the inherited socket of {addr}"))?;
        return tokio::net::TcpListener::from_std(l)
            .with_context(|| format!("admin.address: the inherited socket of {addr}"));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin.address: binding {addr}"))
}

/// Serves the admin API on `listener` until the task is dropped; accepts
/// nothing while `admin.paused` (connections wait in the kernel's queue,
/// for this process or the successor that holds the same socket).
pub async fn serve(listener: tokio::net::TcpListener, admin: Arc<Admin>) {
    let mut paused = admin.paused.clone();
    loop {
        if *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
            continue;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = paused.changed() => continue,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                log::warn!("admin: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                let counted = InFlight::new(&admin.inflight);
                async move {
                    let r = handler::handle(&admin, req).await;
                    drop(counted);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                log::debug!("admin: connection: {e}");
            }
        });
    }
}
