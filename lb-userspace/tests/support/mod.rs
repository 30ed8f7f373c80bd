//! Support shared by the in-process L7 tests (each test file includes it
//! with `mod support;`): the proxy served on a loopback port.
use std::{net::SocketAddr, sync::Arc};

use hyper::Request;
use tokio::{net::TcpListener, sync::watch};
use xlb::l7::{
    body::ClientBody,
    proxy::Proxy,
    server::{serve, ConnInfo, ServerLimits},
};

/// Serves `proxy` on a fresh loopback port with the default limits, on the
/// current runtime. Returns the address and the stop switch: the server
/// stops when the sender is dropped or set.
pub async fn serve_proxy(proxy: Proxy) -> (SocketAddr, watch::Sender<bool>) {
    let proxy = Arc::new(proxy);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(serve(
        listener,
        None,
        ServerLimits::default(),
        move |req: Request<ClientBody>, info: ConnInfo| {
            let proxy = proxy.clone();
            async move { proxy.handle(req, info).await }
        },
        rx,
    ));
    (addr, tx)
}
