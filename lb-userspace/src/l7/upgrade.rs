//! HTTP/1.1 `Upgrade` (WebSocket and any other protocol) through the
//! proxy. `Connection` and `Upgrade` are hop-by-hop, so the proxy strips
//! them like every other and re-adds them on the upstream leg (and on the
//! 101 it relays back); once both sides have switched, the two raw streams
//! are joined byte for byte.
//!
//! An upgraded connection may live for hours: it is closed when both
//! directions have been silent for the route's `idle` timeout, or when
//! either side closes, never by a total deadline.
use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{header, HeaderMap, HeaderValue, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The protocol a request asks to upgrade to: HTTP/1.1 with an `Upgrade`
/// header and `upgrade` among the `Connection` tokens.
pub fn requested(headers: &HeaderMap, version: Version) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    match asked {
        true => headers.get(header::UPGRADE).cloned(),
        false => None,
    }
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back on a message of
/// the next hop (after hop-by-hop headers were stripped).
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Joins the client's and the node's upgraded connections in a task of its
/// own, until one side closes or both are silent for `idle`. `guard` lives
/// as long as the tunnel (the node's in-flight count).
pub fn splice<G: Send + 'static>(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    label: String,
    guard: G,
) {
    tokio::spawn(async move {
        let _guard = guard;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                log::debug!("{label}: upgrade failed: {e}");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut down = Stamped {
            io: TokioIo::new(down),
            activity: activity.clone(),
        };
        let mut up = Stamped {
            io: TokioIo::new(up),
            activity: activity.clone(),
        };
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        loop {
            let deadline = activity.last() + idle;
            tokio::select! {
                done = &mut copy => {
                    match done {
                        Ok((to_node, to_client)) => log::debug!(
                            "{label}: tunnel closed ({to_node} bytes up, {to_client} down)"
                        ),
                        Err(e) => log::debug!("{label}: tunnel: {e}"),
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if activity.last() + idle <= Instant::now() {
                        log::debug!("{label}: tunnel idle for {idle:?}: closed");
                        return;
                    }
                }
            }
        }
    });
}

/// The time of the last byte read from either side.
struct Activity {
    base: Instant,
    nanos: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let n = self.base.elapsed().as_nanos() as u64;
        self.nanos.fetch_max(n, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A stream that records when it last delivered bytes.
struct Stamped<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn an_upgrade_needs_both_headers_and_http11() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested(&ws, Version::HTTP_11).unwrap(), "websocket");
        assert!(requested(&ws, Version::HTTP_10).is_none());
        assert!(requested(&ws, Version::HTTP_2).is_none());
        let no_token = map(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(requested(&no_token, Version::HTTP_11).is_none());
        let no_proto = map(&[("connection", "upgrade")]);
        assert!(requested(&no_proto, Version::HTTP_11).is_none());
    }
}
