//! Phase "upstream request": the head a node gets, built once per request
//! (path rewrite, hop-by-hop fields removed, forwarding headers, the
//! route's request header edits, HTTP/1.1 to the node) and finished per
//! attempt (the `Host` for that node, the offered `Upgrade`).
use std::net::SocketAddr;

use http::{header, request, uri::PathAndQuery, HeaderValue, Method, Uri};
use hyper::{body::Body as _, upgrade::OnUpgrade};

use super::{
    super::{
        body::ClientBody,
        headers::{self, Downstream},
        options::{HashOn, PassHost},
        recycled_maps, rewrite, upgrade,
        upstream_head::{AddedFields, UpstreamHead},
    },
    context::RequestCtx,
    route::RoutedHost,
};

/// The request as every attempt sends it, and what the attempts need to
/// know about it.
pub(super) struct Outgoing {
    /// The rewritten head; its `Host` is the client's until set per node.
    head: request::Parts,
    /// The forwarding fields, when they are written after the head's own.
    added: AddedFields,
    /// The `Upgrade` protocols offered to the node (only allowed ones).
    pub upgrade: Option<HeaderValue>,
    /// The client side of an upgrade, when one is offered.
    pub on_upgrade: Option<OnUpgrade>,
    /// What the balancer hashes on, when the pool hashes on the request.
    pub hash_key: Option<Vec<u8>>,
    /// What the client asked for, port included (`pass_host: pass`).
    client_host: Option<HeaderValue>,
    /// The head's `Host` is the client's, as sent: with `pass_host: pass`
    /// no attempt has anything to change.
    host_is_clients: bool,
    /// Whether the request may be sent twice: an idempotent one (whose
    /// repetition is harmless) without a body or with one read whole
    /// before forwarding (the own HTTP/1.1 path's, a plugin's), which can
    /// be sent again from memory, as nginx resends its buffered bodies.
    /// A streamed body is gone once sent.
    pub replayable: bool,
}

/// Methods whose replay cannot do harm (RFC 9110 §9.2.2).
pub(super) fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Outgoing {
    /// Builds the node's view of the request from the client's.
    pub fn prepare(ctx: &RequestCtx, mut parts: request::Parts, body: &ClientBody) -> Outgoing {
        let opts = ctx.opts();
        let upgrade = match upgrade::offer(&parts.headers, parts.version, &opts.upgrades) {
            upgrade::Offer::Forward(p) => Some(p),
            upgrade::Offer::Dropped(p) => {
                log::debug!(
                    "{}: upgrade to {p:?} not allowed on route {}: forwarded as a plain request",
                    ctx.conn.peer,
                    ctx.route.id()
                );
                None
            }
            upgrade::Offer::None => None,
        };
        let on_upgrade = match upgrade {
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let hash_key: Option<Vec<u8>> = match &ctx.pool.options.hash_on {
            HashOn::ClientIp => None,
            HashOn::Header(name) => parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
            HashOn::Cookie(name) => headers::cookie(&parts.headers, name).map(<[u8]>::to_vec),
            HashOn::Uri => parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().as_bytes().to_vec()),
        };
        let host_field = parts.headers.get(header::HOST).cloned();
        let host_in_head = host_field.is_some();
        let client_host = host_field.or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let replayable = idempotent(&parts.method)
            && (body.is_end_stream() || matches!(body, ClientBody::Buffered(_)));

        let target = opts
            .path_rewrite
            .as_ref()
            .and_then(|rw| rewrite::rewrite_path(&parts.uri, rw))
            .or_else(|| parts.uri.path_and_query().cloned())
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let down = Downstream {
            client: &ctx.conn.peer_ip,
            proto: if ctx.conn.tls { "https" } else { "http" },
            host: ctx.host.as_ref().map(RoutedHost::as_str),
            host_field: ctx.host.as_ref().and_then(RoutedHost::field),
            version: parts.version,
            trusted: ctx.trusted,
        };
        parts.uri = Uri::from(target);
        headers::strip_hop_by_hop(&mut parts.headers);
        // The forwarding fields written after the head's own when that is
        // where they would go (no route edits to apply after them, no
        // such field from the client): four hashed insertions saved.
        let edits = !opts.request_headers.is_empty();
        let forwarded = match edits {
            false => headers::forwarded_fields(&parts.headers, &down),
            true => None,
        };
        let added = match forwarded {
            Some(added) => added,
            None => {
                headers::add_forwarded(&mut parts.headers, &down);
                headers::apply_edits(&mut parts.headers, &opts.request_headers);
                AddedFields::new()
            }
        };
        // `Host` stays: an attempt replaces it (or removes it) in the head
        // it is lent, unless it is the client's and stays so. A route's
        // edits may have set or removed it.
        let host_is_clients = host_in_head && !edits;
        parts.extensions = http::Extensions::new();
        parts.version = http::Version::HTTP_11;
        Outgoing {
            head: parts,
            added,
            upgrade,
            on_upgrade,
            hash_key,
            client_host,
            host_is_clients,
            replayable,
        }
    }

    /// The head for one attempt on the node at `addr`: the same head,
    /// lent to the attempt (the upstream client only reads it), with this
    /// node's `Host` and the offered `Upgrade`. Not a copy per attempt:
    /// cloning and dropping it was ~1 000 instructions per request.
    pub fn head_for(&mut self, ctx: &RequestCtx, addr: SocketAddr) -> UpstreamHead<'_> {
        let head = &mut self.head;
        let pass = &ctx.opts().pass_host;
        // The usual case, `pass` with the client's `Host` in place: no
        // hashed replacement of a value by the same value.
        if !(self.host_is_clients && *pass == PassHost::Pass) {
            match rewrite::upstream_host(pass, self.client_host.as_ref(), addr) {
                Some(h) => head.headers.insert(header::HOST, h),
                None => head.headers.remove(header::HOST),
            };
        }
        if let Some(protocol) = &self.upgrade {
            upgrade::restore(&mut head.headers, protocol.clone());
        }
        UpstreamHead {
            parts: head,
            added: &self.added,
        }
    }

    /// Hands the head's field map back for a later request, once no
    /// attempt will send it again.
    pub fn recycle(&mut self) {
        recycled_maps::give(std::mem::take(&mut self.head.headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_replayed() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(idempotent(&m));
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m));
        }
    }
}
