//! The proxy's one error model: every answer xlb makes itself instead of a
//! node (`x-xlb-error: <reason>`) is an [`ErrorKind`], which says whose
//! fault it is, whether another attempt may help, and the status and reason
//! the client sees. The table of kinds is [`ErrorKind::ALL`];
//! `docs/errors.md` is generated from it and a test keeps the two equal.
//!
//! Detecting code (the router, the rate limiter, the upstream client, the
//! cache) returns or builds a [`ProxyError`]; the response is made in one
//! place, [`ProxyError::into_response`], in the spirit of linkerd2-proxy's
//! `errors/respond.rs`.
use http::{header, HeaderValue, Response, StatusCode};

use super::body::{text_body, ProxyBody};

/// The header that says why xlb itself answered (not the upstream).
pub const ERROR_HEADER: &str = "x-xlb-error";

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client's request: its target, its body, its rate.
    Client,
    /// A node, or the upstream as a whole (none up, all busy).
    Upstream,
    /// xlb's configuration or xlb itself.
    Internal,
}

impl Fault {
    /// The name used in `docs/errors.md` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Internal => "internal",
        }
    }
}

/// Every way a request can end in an answer of xlb's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request target is not origin form (or `*` off `OPTIONS`), or
    /// the host is missing, repeated or malformed.
    BadRequestTarget,
    /// An absolute-form target with a scheme other than http/https.
    UnsupportedScheme,
    /// A path spelled to dodge routing (dot segments, encoded slashes).
    AmbiguousPath,
    /// No route matches.
    NoRoute,
    /// An absolute-form target for an authority no route serves.
    MisdirectedRequest,
    /// `redirect_https` on a request without a usable host.
    NoHostToRedirect,
    /// Over a downstream or upstream rate-limit rule.
    RateLimited,
    /// The source is denied after a hard limit.
    Denied,
    /// A rate-limit rule's key table is full.
    RateLimitTableFull,
    /// The request body is over the route's `max_body_bytes`.
    BodyTooLarge,
    /// The client stopped sending its body for the `send` timeout.
    RequestBodyTimeout,
    /// The request body's framing broke while it was streamed.
    BadRequestBody,
    /// The target could not be turned into an upstream request.
    BadTarget,
    /// `PURGE` on a route whose cache has no `purge_from`.
    PurgeDisabled,
    /// `PURGE` from a source not in `purge_from`.
    PurgeForbidden,
    /// `Cache-Control: only-if-cached` and nothing is stored.
    CacheOnlyIfCached,
    /// The route names an upstream that does not exist (validation
    /// prevents it).
    NoUpstream,
    /// Every node of the upstream is down or excluded.
    NoHealthyNode,
    /// Every eligible node is at `max_requests_per_node`.
    UpstreamBusy,
    /// A cold-start hold ran out before a node came up.
    ColdStartTimeout,
    /// The TLS handshake with the node failed.
    UpstreamTls,
    /// Connecting to the node timed out.
    UpstreamConnectTimeout,
    /// The node refused or could not be reached; nothing was sent.
    UpstreamUnreachable,
    /// The connection broke after the request may have reached the node.
    UpstreamReset,
    /// No response head within the `read` timeout.
    UpstreamTimeout,
    /// The node stopped taking the request body for the `send` timeout.
    UpstreamSendTimeout,
    /// An upgrade the upstream's protocol cannot carry (HTTP/2 nodes).
    UpgradeUnsupported,
    /// The node switched protocols (101) to something not offered to it.
    UnexpectedUpgrade,
    /// An auth plugin found no valid credentials.
    Unauthorized,
    /// `ip-restriction` refused the source.
    SourceForbidden,
    /// `forward-auth`'s service could not be asked.
    AuthUnavailable,
    /// `request-validation`: a header or the body breaks the route's rules.
    RequestInvalid,
    /// Lazy routing: the lookup of a host not in memory was over the miss
    /// cap (concurrency or rate).
    RouteLookupShed,
    /// Lazy routing: the store holding the routes did not answer.
    RouteStoreUnavailable,
}

impl ErrorKind {
    /// Every kind, in the order of `docs/errors.md`.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::BadRequestTarget,
        ErrorKind::UnsupportedScheme,
        ErrorKind::AmbiguousPath,
        ErrorKind::NoRoute,
        ErrorKind::MisdirectedRequest,
        ErrorKind::NoHostToRedirect,
        ErrorKind::RateLimited,
        ErrorKind::Denied,
        ErrorKind::RateLimitTableFull,
        ErrorKind::BodyTooLarge,
        ErrorKind::RequestBodyTimeout,
        ErrorKind::BadRequestBody,
        ErrorKind::BadTarget,
        ErrorKind::PurgeDisabled,
        ErrorKind::PurgeForbidden,
        ErrorKind::CacheOnlyIfCached,
        ErrorKind::NoUpstream,
        ErrorKind::NoHealthyNode,
        ErrorKind::UpstreamBusy,
        ErrorKind::ColdStartTimeout,
        ErrorKind::UpstreamTls,
        ErrorKind::UpstreamConnectTimeout,
        ErrorKind::UpstreamUnreachable,
        ErrorKind::UpstreamReset,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamSendTimeout,
        ErrorKind::UpgradeUnsupported,
        ErrorKind::UnexpectedUpgrade,
        ErrorKind::Unauthorized,
        ErrorKind::SourceForbidden,
        ErrorKind::AuthUnavailable,
        ErrorKind::RequestInvalid,
        ErrorKind::RouteLookupShed,
        ErrorKind::RouteStoreUnavailable,
    ];

    /// The `x-xlb-error` value.
    pub fn reason(self) -> &'static str {
        self.row().0
    }

    /// The status answered (a rate-limit rule may choose 429 or 503 itself:
    /// see [`ProxyError::with_status`]).
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.row().1).expect("valid status in the table")
    }

    /// Whose fault it is.
    pub fn fault(self) -> Fault {
        self.row().2
    }

    /// Whether the request may be tried on another node: only when it
    /// certainly never reached one. (A bodiless idempotent request may
    /// also be replayed after a reset or a read timeout: that is decided
    /// per attempt, see `ForwardError::retryable`.)
    pub fn never_sent(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamTls
                | ErrorKind::UpstreamConnectTimeout
                | ErrorKind::UpstreamUnreachable
        )
    }

    /// One line for operators: what happened and what to look at.
    pub fn meaning(self) -> &'static str {
        self.row().3
    }

    /// (reason, status, fault, meaning): the table `docs/errors.md` shows.
    fn row(self) -> (&'static str, u16, Fault, &'static str) {
        use ErrorKind as K;
        use Fault::*;
        match self {
            K::BadRequestTarget => ("bad-request-target", 400, Client, "the target is not a path (or `*` off OPTIONS), or Host is missing, repeated or malformed"),
            K::UnsupportedScheme => ("unsupported-scheme", 400, Client, "an absolute-form target with a scheme other than http or https"),
            K::AmbiguousPath => ("ambiguous-path", 400, Client, "dot segments or encoded slashes that could dodge a route: refused, never normalised"),
            K::NoRoute => ("no-route", 404, Client, "no route of the listener matches host, path, method and headers"),
            K::MisdirectedRequest => ("misdirected-request", 421, Client, "an absolute-form target for an authority no route serves"),
            K::NoHostToRedirect => ("no-host-to-redirect", 400, Client, "redirect_https needs a host to redirect to"),
            K::RateLimited => ("rate-limited", 429, Client, "over a rate-limit rule (the rule may answer 503); Retry-After says when to come back"),
            K::Denied => ("denied", 429, Client, "the source went over a hard limit and is denied for deny_for"),
            K::RateLimitTableFull => ("rate-limit-table-full", 503, Internal, "a rule's key table is full of live buckets (overflow: reject)"),
            K::BodyTooLarge => ("body-too-large", 413, Client, "the body is over the route's max_body_bytes (declared or streamed)"),
            K::RequestBodyTimeout => ("request-body-timeout", 408, Client, "the client sent no body data for the route's send timeout"),
            K::BadRequestBody => ("bad-request-body", 400, Client, "the body's framing broke while it was streamed (e.g. a bad chunk size)"),
            K::BadTarget => ("bad-target", 400, Client, "the target could not be made into an upstream request"),
            K::PurgeDisabled => ("purge-disabled", 405, Client, "PURGE on a caching route whose l7.cache.purge_from is empty"),
            K::PurgeForbidden => ("purge-forbidden", 403, Client, "PURGE from a source not in l7.cache.purge_from"),
            K::CacheOnlyIfCached => ("cache-only-if-cached", 504, Client, "Cache-Control: only-if-cached and nothing fresh is stored"),
            K::NoUpstream => ("no-upstream", 502, Internal, "the route names an upstream that does not exist (validation prevents it)"),
            K::NoHealthyNode => ("no-healthy-node", 503, Upstream, "every node is down (health checks, passive ejection) or was tried"),
            K::UpstreamBusy => ("upstream-busy", 503, Upstream, "every eligible node is at max_requests_per_node"),
            K::ColdStartTimeout => ("cold-start-timeout", 503, Upstream, "a held request saw no node come up within cold_start.deadline"),
            K::UpstreamTls => ("upstream-tls", 502, Upstream, "the TLS handshake with the node failed (certificate, protocol)"),
            K::UpstreamConnectTimeout => ("upstream-connect-timeout", 504, Upstream, "connecting to the node took longer than timeouts.connect"),
            K::UpstreamUnreachable => ("upstream-unreachable", 502, Upstream, "the node refused or could not be reached; nothing was sent"),
            K::UpstreamReset => ("upstream-reset", 502, Upstream, "the connection broke after the request may have reached the node (never replayed unless idempotent and bodiless or with its body held whole)"),
            K::UpstreamTimeout => ("upstream-timeout", 504, Upstream, "no response head within timeouts.read of the request being sent"),
            K::UpstreamSendTimeout => ("upstream-send-timeout", 504, Upstream, "the node stopped taking the request body for timeouts.send"),
            K::UpgradeUnsupported => ("upgrade-unsupported", 502, Internal, "an HTTP/1.1 Upgrade to an upstream that speaks HTTP/2"),
            K::UnexpectedUpgrade => ("unexpected-upgrade", 502, Upstream, "the node answered 101 to a protocol xlb did not offer it (e.g. h2c): never relayed"),
            K::Unauthorized => ("unauthorized", 401, Client, "an auth plugin (key-auth, basic-auth, jwt-auth) found no valid credentials; WWW-Authenticate says which"),
            K::SourceForbidden => ("source-forbidden", 403, Client, "ip-restriction: the source is denied or not allowed"),
            K::AuthUnavailable => ("auth-unavailable", 503, Internal, "forward-auth could not get an answer from its auth service (the request is refused, never let through)"),
            K::RequestInvalid => ("request-invalid", 400, Client, "request-validation: a required header is missing or does not match, or the body is not JSON or breaks the route's JSON Schema; the body names the failing path"),
            K::RouteLookupShed => ("route-lookup-shed", 503, Internal, "routes: lazy — too many lookups of hosts not in memory at once or per second (the miss cap); cached hosts are unaffected; Retry-After says when to come back"),
            K::RouteStoreUnavailable => ("route-store-unavailable", 503, Internal, "routes: lazy — the host is not in memory and the config store did not answer; Retry-After says when to come back"),
        }
    }

    /// `docs/errors.md`, as generated from the table.
    pub fn markdown_table() -> String {
        let mut out = String::from(
            "| reason (`x-xlb-error`) | status | fault | never sent (retried on another node) | meaning |\n|---|---:|---|---|---|\n",
        );
        for k in Self::ALL {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                k.reason(),
                k.status().as_u16(),
                k.fault().as_str(),
                if k.never_sent() { "yes" } else { "no" },
                k.meaning()
            ));
        }
        out
    }
}

/// One failure of a request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    kind: ErrorKind,
    status: StatusCode,
    /// `Retry-After` in seconds, when waiting helps.
    retry_after: Option<u64>,
    /// What exactly failed, for the client (one line).
    detail: Option<String>,
}

impl ProxyError {
    /// The failure `kind` with its table status.
    pub fn new(kind: ErrorKind) -> ProxyError {
        ProxyError {
            kind,
            status: kind.status(),
            retry_after: None,
            detail: None,
        }
    }

    /// The same failure answered with `status` (a rate-limit rule's own
    /// `reject_status`).
    pub fn with_status(mut self, status: StatusCode) -> ProxyError {
        self.status = status;
        self
    }

    /// The same failure with a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> ProxyError {
        self.retry_after = Some(secs);
        self
    }

    /// The same failure with `detail` after the reason in the body (what
    /// exactly failed, e.g. the path of a JSON value that broke a schema);
    /// line breaks are replaced by spaces.
    pub fn with_detail(mut self, detail: impl Into<String>) -> ProxyError {
        self.detail = Some(detail.into().replace(['\r', '\n'], " "));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response: status, `x-xlb-error`, a one-line text body, and
    /// `Retry-After` when set.
    pub fn into_response(self) -> Response<ProxyBody> {
        let reason = self.kind.reason();
        let text = match &self.detail {
            None => format!("{} {reason}\n", self.status.as_u16()),
            Some(d) => format!("{} {reason}: {d}\n", self.status.as_u16()),
        };
        let mut resp = Response::new(text_body(text));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(ERROR_HEADER, HeaderValue::from_static(reason));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<ErrorKind> for ProxyError {
    fn from(kind: ErrorKind) -> ProxyError {
        ProxyError::new(kind)
    }
}

/// The response for `kind` (shorthand for the common case).
pub fn respond(kind: ErrorKind) -> Response<ProxyBody> {
    ProxyError::new(kind).into_response()
}

/// The kind whose reason is `reason`, if any (for tests and log readers).
pub fn kind_of(reason: &str) -> Option<ErrorKind> {
    ErrorKind::ALL
        .iter()
        .copied()
        .find(|k| k.reason() == reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_unique_and_statuses_are_errors() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.reason()), "{} twice", k.reason());
            assert!(k.status().as_u16() >= 400, "{k:?}");
            assert_eq!(kind_of(k.reason()), Some(*k));
        }
    }

    #[test]
    fn docs_errors_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
        let doc = std::fs::read_to_string(path).expect("docs/errors.md");
        let table = ErrorKind::markdown_table();
        if std::env::var_os("XLB_BLESS").is_some() {
            let start = doc.find("| reason").expect("a table in docs/errors.md");
            let end = doc[start..]
                .find("\n\n")
                .map_or(doc.len(), |e| start + e + 1);
            let new = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, new).unwrap();
            return;
        }
        assert!(
            doc.contains(&table),
            "docs/errors.md is not the table in src/l7/error.rs: run \
             `XLB_BLESS=1 cargo test -p lb-userspace --lib docs_errors_md` and commit it.\n{table}"
        );
    }

    #[test]
    fn a_response_carries_reason_status_and_retry_after() {
        let r = ProxyError::new(ErrorKind::RateLimited)
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_retry_after(3)
            .into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[ERROR_HEADER], "rate-limited");
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
