//! Phase "request filters": what a route checks before any node is
//! bothered — its downstream rate-limit rules (429/503 with
//! `Retry-After`; a delay verdict just waits), `redirect_https` (308), and
//! a declared body length over `max_body_bytes` (413; a body that only
//! grows past it is cut off on the way).
use http::{header, request, HeaderMap, Response, StatusCode, Uri};
use hyper::body::Body as _;

use super::{
    super::{
        body::ClientBody,
        error::{respond, ErrorKind, ProxyError},
        forward::{empty_body, ProxyBody},
        ratelimit::{RejectReason, Rejection, RequestFacts, Side},
        record::{Note, RateLimitVerdict},
        rewrite,
        server::ConnInfo,
    },
    route::Routed,
};

/// What the upstream-side rate-limit rules key on: the headers and target
/// as received, kept from before the head is rewritten for the node (only
/// when the route has such rules).
pub(super) type UpstreamFacts = Option<(HeaderMap, String)>;

/// Runs the route's request filters; `Err` is the response that ends the
/// request.
pub(super) async fn run(
    routed: &Routed,
    parts: &request::Parts,
    body: &ClientBody,
    conn: &ConnInfo,
    note: &Note,
) -> Result<UpstreamFacts, Response<ProxyBody>> {
    let opts = &routed.route.spec().options;
    // Downstream rate limiting: every request the route matched counts (as
    // received: host without port, target before any rewrite).
    let mut up_facts = None;
    if let Some(limiter) = opts.rate_limit.as_ref().map(|l| &*l.0) {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let facts = RequestFacts::new(
            conn.peer.ip(),
            routed.host.as_ref().map_or("", |h| h.as_str()),
            target,
            &parts.headers,
        );
        let verdict = Box::pin(limiter.admit(Side::Downstream, &facts)).await;
        note.rate_limit(RateLimitVerdict::of(&verdict)); // request record
        if let Err(r) = verdict {
            log::debug!("{}: {r}", conn.peer);
            return Err(rate_limited(&r));
        }
        if limiter.has_side(Side::Upstream) {
            up_facts = Some((parts.headers.clone(), target.to_string()));
        }
    }
    if let Some(port) = opts.redirect_https {
        return Err(redirect(
            routed.host.as_ref().map(|h| h.as_str()),
            port,
            &parts.uri,
        ));
    }
    if let Some(limit) = opts.max_body_bytes {
        if body.size_hint().lower() > limit {
            return Err(respond(ErrorKind::BodyTooLarge));
        }
    }
    Ok(up_facts)
}

/// The answer to a request a rate limit rejected.
pub(super) fn rate_limited(r: &Rejection) -> Response<ProxyBody> {
    let kind = match r.reason {
        RejectReason::OverLimit => ErrorKind::RateLimited,
        RejectReason::Denied => ErrorKind::Denied,
        RejectReason::TableFull => ErrorKind::RateLimitTableFull,
    };
    ProxyError::new(kind)
        .with_status(r.status)
        .with_retry_after(r.retry_after_secs())
        .into_response()
}

/// `308 Permanent Redirect` to the same host and target over `https`.
fn redirect(host: Option<&str>, port: u16, uri: &Uri) -> Response<ProxyBody> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(location) = host.and_then(|h| rewrite::https_location(h, port, target)) else {
        return respond(ErrorKind::NoHostToRedirect);
    };
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}
