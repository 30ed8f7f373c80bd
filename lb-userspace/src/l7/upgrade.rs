//! HTTP/1.1 `Upgrade` (WebSocket, and other protocols a route allows)
//! through the proxy. `Connection` and `Upgrade` are hop-by-hop, so the
//! proxy strips them like every other and re-adds them on the upstream leg
//! (and on the 101 it relays back); once both sides have switched, the two
//! raw streams are joined byte for byte.
//!
//! Only the protocols in the route's [`AllowedUpgrades`] (`upgrades:`;
//! default `websocket`) are forwarded. Any other token, `h2c` always, is
//! dropped and the request goes on as a plain request: a tunnel is a raw
//! byte stream to the node, so a client inside it can send any request
//! (any Host, any path) past every route rule, rate limit and header edit;
//! an `h2c` tunnel to a backend that accepts it (Go's h2c handler, Jetty,
//! Tomcat, Envoy) is exactly that. Dropping rather than refusing with an
//! error follows RFC 9110 §7.8 (a server may ignore `Upgrade`) and keeps
//! clients working: `curl --http2` on an `http://` URL offers `h2c` on
//! every request and falls back to HTTP/1.1 when it is not taken up. A
//! node that answers 101 to a request that was not forwarded as an upgrade
//! for that protocol gets the client a 502, never a tunnel.
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

/// The upgrade protocols a route forwards, by name (the part of an
/// `Upgrade` token before any `/version`), lowercase. The default is
/// `websocket` alone; `h2c` can never be allowed (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUpgrades(Vec<String>);

impl Default for AllowedUpgrades {
    fn default() -> Self {
        AllowedUpgrades(vec!["websocket".into()])
    }
}

impl AllowedUpgrades {
    /// The protocols `names` (matched case-insensitively). Errors: an
    /// empty name, one that is not an HTTP token, or `h2c`.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<AllowedUpgrades, String> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref().trim();
            if !super::headers::is_token(name) {
                return Err(format!("`{name}` is not a protocol name"));
            }
            if name.eq_ignore_ascii_case("h2c") {
                return Err(
                    "h2c is never tunnelled: a tunnel would take a client past every route rule"
                        .into(),
                );
            }
            out.push(name.to_ascii_lowercase());
        }
        Ok(AllowedUpgrades(out))
    }

    /// Whether the protocol of `token` (`name` or `name/version`) is
    /// allowed.
    pub fn allows(&self, token: &str) -> bool {
        let name = token.split('/').next().unwrap_or("").trim();
        self.0.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// The allowed names.
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

/// What becomes of a request's upgrade offer on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// No upgrade was asked for.
    None,
    /// Forward as an upgrade, offering only these (allowed) protocols.
    Forward(HeaderValue),
    /// Nothing asked for is allowed: the request goes on as a plain one.
    Dropped(HeaderValue),
}

/// The request's upgrade offer ([`requested`]) filtered by `allowed`:
/// tokens of other protocols are left out of what is forwarded.
pub fn offer(headers: &HeaderMap, version: Version, allowed: &AllowedUpgrades) -> Offer {
    let Some(asked) = requested(headers, version) else {
        return Offer::None;
    };
    let kept: Vec<&str> = asked
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| allowed.allows(t))
        .collect();
    match HeaderValue::from_str(&kept.join(", ")) {
        Ok(v) if !kept.is_empty() => Offer::Forward(v),
        _ => Offer::Dropped(asked),
    }
}

/// Whether a 101's `Upgrade` (`switched`) names a protocol that was
/// offered to the node (`offered`).
pub fn switched_to_offered(switched: Option<&HeaderValue>, offered: &HeaderValue) -> bool {
    let Some(name) = switched.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = name.split('/').next().unwrap_or("").trim();
    offered.to_str().unwrap_or("").split(',').any(|t| {
        t.trim()
            .split('/')
            .next()
            .unwrap_or("")
            .eq_ignore_ascii_case(name)
    })
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back on a message of
/// the next hop (after hop-by-hop headers were stripped).
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Tunnels (WebSockets and other upgrades) open in this process. A
/// draining process waits for them (up to its drain timeout) before its
/// workers' runtimes end: a tunnel task dies with its runtime.
static OPEN_TUNNELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The number of upgraded connections still open in this process.
pub fn open_tunnels() -> usize {
    OPEN_TUNNELS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one tunnel in [`OPEN_TUNNELS`] while it lives.
struct OpenTunnel;

impl OpenTunnel {
    fn new() -> OpenTunnel {
        OPEN_TUNNELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenTunnel
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        OPEN_TUNNELS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A raw byte stream on either side of a tunnel.
pub trait TunnelIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> TunnelIo for T {}

/// The node's side of an upgrade, once its `101` is in: hyper's upgraded
/// connection (HTTP/1.1 through hyper) or xlb's own client's.
pub type UpstreamTunnel = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<Box<dyn TunnelIo>, Box<dyn std::error::Error + Send + Sync>>,
            > + Send,
    >,
>;

/// Joins the client's and the node's upgraded connections in a task of its
/// own, until one side closes or both are silent for `idle`. `guard` lives
/// as long as the tunnel (the node's in-flight count).
pub fn splice<G: Send + 'static>(
    downstream: OnUpgrade,
    upstream: UpstreamTunnel,
    idle: Duration,
    label: String,
    guard: G,
) {
    let open = OpenTunnel::new();
    tokio::spawn(async move {
        let _guard = guard;
        let _open = open;
        let (down, up) = match tokio::join!(downstream, upstream) {
            (Ok(down), Ok(up)) => (down, up),
            (Err(e), _) => {
                log::debug!("{label}: client upgrade failed: {e}");
                return;
            }
            (_, Err(e)) => {
                log::debug!("{label}: node upgrade failed: {e}");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut down = Stamped {
            io: TokioIo::new(down),
            activity: activity.clone(),
        };
        let mut up = Stamped {
            io: up,
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

    #[test]
    fn only_allowed_protocols_are_offered_and_h2c_never() {
        let ws = AllowedUpgrades::default();
        let asked = |u: &str| map(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", u)]);
        let offer_of = |u: &str, a: &AllowedUpgrades| offer(&asked(u), Version::HTTP_11, a);
        assert_eq!(
            offer_of("WebSocket", &ws),
            Offer::Forward(HeaderValue::from_static("WebSocket"))
        );
        assert_eq!(
            offer_of("h2c", &ws),
            Offer::Dropped(HeaderValue::from_static("h2c"))
        );
        assert_eq!(
            offer_of("h2c, websocket/13", &ws),
            Offer::Forward(HeaderValue::from_static("websocket/13"))
        );
        assert!(matches!(offer_of("foo", &ws), Offer::Dropped(_)));
        let none = AllowedUpgrades::new::<&str>(&[]).unwrap();
        assert!(matches!(offer_of("websocket", &none), Offer::Dropped(_)));
        let foo = AllowedUpgrades::new(&["Foo"]).unwrap();
        assert!(matches!(offer_of("foo/2", &foo), Offer::Forward(_)));
        assert!(AllowedUpgrades::new(&["H2C"]).is_err());
        assert!(AllowedUpgrades::new(&["a b"]).is_err());
        assert!(AllowedUpgrades::new(&[""]).is_err());
        let offered = HeaderValue::from_static("websocket");
        let ws_back = HeaderValue::from_static("WebSocket");
        let h2c_back = HeaderValue::from_static("h2c");
        assert!(switched_to_offered(Some(&ws_back), &offered));
        assert!(!switched_to_offered(Some(&h2c_back), &offered));
        assert!(!switched_to_offered(None, &offered));
    }
}
