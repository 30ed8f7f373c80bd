//! The plugin chain: code that plugs into named phases of a request's life
//! (see `docs/architecture.md` and `docs/plugins.md`).
//!
//! A [`Plugin`] may act in four phases of the proxy:
//! - **request** (after routing, before the route's rate limits and the
//!   cache): read and edit the request head, or answer it (an auth failure,
//!   a CORS preflight, a denied source);
//! - **body** (after every plugin's request phase, only on routes with a
//!   plugin that asks for it through [`Plugin::body_limit`]): the request
//!   body is read whole, up to the largest limit asked for (413 past it),
//!   shown to [`Plugin::request_body`], and forwarded as read (request
//!   validation);
//! - **upstream** (when the upstream is selected): send the request to
//!   another of the configured upstreams (traffic splits);
//! - **response** (the response filters, after the cache): edit the head
//!   and wrap the body (security headers, CORS, compression).
//!
//! A route's chain is its plugins ordered by [`Plugin::priority`], highest
//! first, the same for every route (like APISIX's priorities), so that, for
//! example, a source denial always runs before authentication and
//! authentication before request validation, whatever order the YAML lists
//! them in. Built-in plugins live in [`super::plugins`]; a program embedding
//! xlb implements this trait and puts its plugins in
//! [`RouteOptions::plugins`](super::options::RouteOptions::plugins).
use std::{fmt, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use std::time::Duration;

use bytes::Bytes;
use http::{request, HeaderMap, Method, Response};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;

use super::{
    body::{ClientBody, ProxyBody},
    error::ErrorKind,
};

/// A boxed future, as the request phase returns (a plugin may need I/O:
/// an auth service).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the request phase decides.
pub enum Verdict {
    /// Go on to the next plugin and phase.
    Continue,
    /// End the request with this response (the response phase of the
    /// plugins that already ran still applies to it).
    Respond(Response<ProxyBody>),
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Continue => f.write_str("Continue"),
            Verdict::Respond(r) => write!(f, "Respond({})", r.status()),
        }
    }
}

/// What a plugin may read about the request besides its head.
#[derive(Debug, Clone, Copy)]
pub struct RequestCx<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The route's id.
    pub route: &'a str,
    /// The request's host (without port), as routed.
    pub host: Option<&'a str>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// What the response phase knows of the request (kept from before the head
/// was rewritten for the node).
#[derive(Debug, Clone)]
pub struct ResponseCx {
    /// The request method.
    pub method: Method,
    /// The request headers the built-in response plugins read (`Origin`,
    /// `Accept-Encoding`); empty when no plugin of the chain reads any.
    pub request_headers: HeaderMap,
}

/// One plugin. Every method has a default that does nothing, so a plugin
/// implements only its phases.
pub trait Plugin: Send + Sync + fmt::Debug + 'static {
    /// The plugin's name (as in the YAML: `jwt-auth`).
    fn name(&self) -> &str;

    /// Order in the chain: higher runs first in the request phase (and its
    /// response phase runs first too).
    fn priority(&self) -> i32;

    /// Request phase: may edit `req` or answer the request.
    fn request<'a>(
        &'a self,
        req: &'a mut request::Parts,
        cx: RequestCx<'a>,
    ) -> BoxFuture<'a, Verdict> {
        let _ = (req, cx);
        Box::pin(std::future::ready(Verdict::Continue))
    }

    /// Body phase: the most request body bytes this plugin needs to see
    /// whole (`None`, the default: it never reads bodies, and routes
    /// whose plugins all say so stream bodies untouched).
    fn body_limit(&self) -> Option<u64> {
        None
    }

    /// Body phase: the whole request body (empty for a bodiless request);
    /// may answer the request.
    fn request_body(&self, req: &request::Parts, body: &Bytes) -> Verdict {
        let _ = (req, body);
        Verdict::Continue
    }

    /// Upstream phase: the id of the upstream to send this request to
    /// instead of the route's; the first plugin that names one wins.
    fn upstream(&self, req: &request::Parts, cx: RequestCx<'_>) -> Option<Arc<str>> {
        let _ = (req, cx);
        None
    }

    /// The request headers the response phase needs to see (copied into
    /// [`ResponseCx::request_headers`] before the head goes to the node).
    fn response_needs(&self) -> &[http::HeaderName] {
        &[]
    }

    /// Response phase: may edit the response head and replace its body.
    fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        let _ = (resp, cx);
    }
}

/// A route's plugins in chain order; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PluginChain(Arc<[Arc<dyn Plugin>]>);

impl PluginChain {
    /// The chain of `plugins`, ordered by priority (highest first; equal
    /// priorities keep their given order).
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> PluginChain {
        plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
        PluginChain(plugins.into())
    }

    /// True when the route has no plugins (the proxy then skips every
    /// plugin step).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The plugins, in chain order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.0.iter()
    }

    /// Runs the request phase of every plugin in order; stops at the first
    /// answer.
    pub async fn request(&self, req: &mut request::Parts, cx: RequestCx<'_>) -> Verdict {
        for p in self.iter() {
            if let Verdict::Respond(r) = p.request(req, cx).await {
                return Verdict::Respond(r);
            }
        }
        Verdict::Continue
    }

    /// The body phase's read limit: the largest any plugin asks for, or
    /// `None` when no plugin reads bodies.
    pub fn body_limit(&self) -> Option<u64> {
        self.iter().filter_map(|p| p.body_limit()).max()
    }

    /// Runs the body phase of every plugin that reads bodies, in order;
    /// stops at the first answer.
    pub fn request_body(&self, req: &request::Parts, body: &Bytes) -> Verdict {
        for p in self.iter().filter(|p| p.body_limit().is_some()) {
            if let Verdict::Respond(r) = p.request_body(req, body) {
                return Verdict::Respond(r);
            }
        }
        Verdict::Continue
    }

    /// The upstream a plugin chose for this request, if any.
    pub fn upstream(&self, req: &request::Parts, cx: RequestCx<'_>) -> Option<Arc<str>> {
        self.iter().find_map(|p| p.upstream(req, cx))
    }

    /// What the response phase will need of the request.
    pub fn response_cx(&self, req: &request::Parts) -> ResponseCx {
        let mut request_headers = HeaderMap::new();
        for p in self.iter() {
            for name in p.response_needs() {
                for v in req.headers.get_all(name) {
                    request_headers.append(name.clone(), v.clone());
                }
            }
        }
        ResponseCx {
            method: req.method.clone(),
            request_headers,
        }
    }

    /// Runs the response phase of every plugin, in chain order.
    pub fn response(&self, resp: &mut Response<ProxyBody>, cx: &ResponseCx) {
        for p in self.iter() {
            p.response(resp, cx);
        }
    }
}

/// Reads a request body whole for the body phase: at most `limit` bytes
/// (413 `body-too-large` past it, without reading on when the declared
/// length says so), no more than `stall` between two pieces (408
/// `request-body-timeout`), and a broken body is 400 `bad-request-body`.
/// Trailers are not kept.
pub async fn read_body(body: ClientBody, limit: u64, stall: Duration) -> Result<Bytes, ErrorKind> {
    if body.size_hint().lower() > limit {
        return Err(ErrorKind::BodyTooLarge);
    }
    let mut body = body;
    let mut whole = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(ErrorKind::RequestBodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(ErrorKind::BadRequestBody),
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if (whole.len() + data.len()) as u64 > limit {
                return Err(ErrorKind::BodyTooLarge);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

impl PartialEq for PluginChain {
    /// Chains compare by identity (a rebuilt chain is a new chain); all
    /// empty chains are the same.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.is_empty() && other.0.is_empty())
    }
}

impl fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|p| p.name().to_string()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Named(&'static str, i32);

    impl Plugin for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn priority(&self) -> i32 {
            self.1
        }
    }

    #[test]
    fn the_chain_runs_by_priority_whatever_the_given_order() {
        let chain = PluginChain::new(vec![
            Arc::new(Named("cors", 4000)),
            Arc::new(Named("ip-restriction", 3000)),
            Arc::new(Named("jwt-auth", 2510)),
            Arc::new(Named("ip-restriction-2", 3000)),
        ]);
        let names: Vec<&str> = chain.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            ["cors", "ip-restriction", "ip-restriction-2", "jwt-auth"]
        );
    }
}
