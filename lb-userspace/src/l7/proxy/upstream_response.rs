//! Phase "upstream response": what a node answered becomes the client's
//! response — a `101` only for a protocol that was offered (an h2c switch
//! the route did not allow is never relayed), the node's latency and
//! outcome reported to the balancer and to passive health, the body
//! streamed with the idle timeout, or the upgraded connection spliced.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::{header, Response, StatusCode};

use super::{
    super::{
        balance::InFlight,
        error::{respond, ErrorKind},
        forward::{self, empty_body, response_body, response_head, ProxyBody},
        upgrade,
        upstream_client::{self, UpstreamBody},
    },
    context::RequestCtx,
    pool::Pool,
    upstream_request::Outgoing,
};
use crate::health::{FailureKind, Outcome};

/// One attempt that reached a node.
pub(super) struct Answered {
    pub node: usize,
    pub flight: InFlight,
    /// The attempt's latency: from when it was sent to its response head.
    pub latency: Duration,
    /// When the response head came (one clock read for the record, the
    /// balancer and passive health).
    pub at: Instant,
    pub resp: Response<UpstreamBody>,
}

/// Turns a node's response into the client's (without the response
/// filters: see [`super::response_filters`]).
pub(super) fn accept(ctx: &RequestCtx, out: &mut Outgoing, a: Answered) -> Response<ProxyBody> {
    let Answered {
        node,
        flight,
        latency,
        at,
        mut resp,
    } = a;
    let pool = &*ctx.pool;
    let addr = pool.upstream.nodes()[node].addr;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let offered = match (&out.upgrade, &out.on_upgrade) {
            (Some(p), Some(_)) => {
                upgrade::switched_to_offered(resp.headers().get(header::UPGRADE), p)
            }
            _ => false,
        };
        if !offered {
            // A tunnel the route did not allow (h2c to a node that
            // switches on its own): never relayed.
            log::debug!(
                "{addr}: 101 to {:?} not offered to it: 502",
                resp.headers().get(header::UPGRADE)
            );
            return respond(ErrorKind::UnexpectedUpgrade);
        }
    }
    pool.upstream
        .observe(node, latency, !status.is_server_error(), at);
    let outcome = response_outcome(status);
    // A success is recorded when the body is done (or the client leaves),
    // so that a node failing mid-body counts as one failure, not a success
    // and a failure.
    let deferred = match (outcome, pool.passive.is_some()) {
        (Outcome::Success, true) if out.upgrade.is_none() => Some(BodyOutcome {
            pool: ctx.pool.clone(),
            node,
            failed: false,
        }),
        _ => {
            pool.record(node, outcome);
            None
        }
    };
    let upgraded = match (&out.on_upgrade, status) {
        (Some(_), StatusCode::SWITCHING_PROTOCOLS) => Some(upstream_client::upgraded(&mut resp)),
        _ => None,
    };
    let idle: Duration = ctx.opts().timeouts.idle;
    let (mut parts, incoming) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    response_head(&mut parts);
    let body = match (upgraded, out.on_upgrade.take()) {
        (Some(up), Some(down)) => {
            if let Some(p) = protocol {
                upgrade::restore(&mut parts.headers, p);
            }
            let label = format!("{} ↔ {addr}", ctx.conn.peer);
            upgrade::splice(down, up, idle, label, flight);
            empty_body()
        }
        _ => response_body(incoming, idle, (flight, deferred)),
    };
    Response::from_parts(parts, body)
}

/// The passive-health reading of a node's response: a gateway error
/// (502/503/504: the node, or a proxy in front of it, could not serve) is
/// a failure; anything else, a 500 included (the application answered),
/// is a success.
fn response_outcome(status: StatusCode) -> Outcome {
    match status.as_u16() {
        s @ (502..=504) => Outcome::Failure(FailureKind::Status(s)),
        _ => Outcome::Success,
    }
}

/// A node's successful response head, whose passive-health outcome is
/// recorded when its body ends: a failure if the node breaks the body or
/// falls silent (the idle timeout), else a success when the body is done
/// or dropped (a client leaving is not the node's fault).
struct BodyOutcome {
    pool: Arc<Pool>,
    node: usize,
    failed: bool,
}

impl Drop for BodyOutcome {
    fn drop(&mut self) {
        if !self.failed {
            self.pool.record(self.node, Outcome::Success);
        }
    }
}

impl forward::OnBodyFailure for (InFlight, Option<BodyOutcome>) {
    fn body_failed(&mut self, kind: FailureKind) {
        if let Some(o) = &mut self.1 {
            if !o.failed {
                o.failed = true;
                o.pool.record(o.node, Outcome::Failure(kind));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_errors_count_against_a_node() {
        for s in [502, 503, 504] {
            let status = StatusCode::from_u16(s).unwrap();
            assert_eq!(
                response_outcome(status),
                Outcome::Failure(FailureKind::Status(s))
            );
        }
        for s in [200, 101, 304, 404, 429, 500, 501, 505] {
            let status = StatusCode::from_u16(s).unwrap();
            assert_eq!(response_outcome(status), Outcome::Success, "{s}");
        }
    }
}
