//! What a route says ([`RouteSpec`]), what a table holds ([`Route`]), what
//! a lookup returns ([`Match`]) and why a table cannot be built
//! ([`RouteError`]).
use std::sync::Arc;

use http::{header::HeaderName, HeaderMap, Method};

use super::request::RequestInfo;
use crate::l7::options::RouteOptions;

/// One route as configured: what it matches and where it sends requests.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Unique, non-empty name of the route.
    pub id: String,
    /// Explicit precedence: higher wins over every other rule.
    pub priority: i32,
    /// `api.example.com`, `*.example.com` (one label) or `*`; empty: any host.
    pub hosts: Vec<String>,
    /// Empty: any path.
    pub paths: Vec<PathMatch>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// All must match.
    pub headers: Vec<HeaderMatch>,
    /// Name of the upstream the route sends requests to.
    pub upstream: String,
    /// What the proxy does with a matched request (timeouts, rewrites,
    /// header edits, rate limits, cache, ...); the router carries it,
    /// untouched, to the [`Match`]. A typed field rather than a type-map:
    /// a route cannot lose a piece of its settings to a missing entry.
    /// Shared: most routes say the same (some 500 bytes), and the runtime
    /// makes routes with equal options share one copy
    /// ([`RouteOptions::dedup`]).
    pub options: Arc<RouteOptions>,
}

impl RouteSpec {
    /// A route named `id` that sends every request to `upstream`; fill in
    /// the matchers with struct update syntax.
    pub fn new(id: impl Into<String>, upstream: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            priority: 0,
            hosts: Vec::new(),
            paths: Vec::new(),
            methods: Vec::new(),
            headers: Vec::new(),
            upstream: upstream.into(),
            options: RouteOptions::shared_default(),
        }
    }
}

/// How a route matches the request path (without the query).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The path equals this string (`*` matches the `OPTIONS *` target).
    Exact(String),
    /// The path starts with this string (a string prefix: `/api` also
    /// matches `/apiary`).
    Prefix(String),
    /// A `matchit` pattern: `/users/{id}`, `/static/{*rest}`.
    Pattern(String),
}

impl PathMatch {
    /// The configured string.
    pub fn as_str(&self) -> &str {
        match self {
            PathMatch::Exact(s) | PathMatch::Prefix(s) | PathMatch::Pattern(s) => s,
        }
    }
}

/// A condition on one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// The header's name.
    pub name: HeaderName,
    /// What its value must be.
    pub value: HeaderValueMatch,
}

/// What a header's value must be. With several field lines of the header,
/// one matching line is enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueMatch {
    /// The header is there, with any value.
    Present,
    /// The value equals this string, byte for byte (case-sensitive).
    Exact(String),
    /// The value starts with this string (case-sensitive).
    Prefix(String),
}

impl HeaderMatch {
    /// Whether `headers` satisfy this condition.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.value {
            HeaderValueMatch::Present => values.next().is_some(),
            HeaderValueMatch::Exact(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            HeaderValueMatch::Prefix(want) => {
                values.any(|v| v.as_bytes().starts_with(want.as_bytes()))
            }
        }
    }
}

/// A route in a [`RouteTable`](super::RouteTable): its spec as configured
/// and its place in the list.
#[derive(Debug)]
pub struct Route {
    spec: RouteSpec,
    index: usize,
    constraints: u32,
    /// The id and upstream as shared strings for the request record and
    /// the metrics' labels, made on the first request (so that routes no
    /// request reaches cost no memory for them) and then only cloned: a
    /// request allocates no label strings.
    labels: std::sync::OnceLock<RouteLabels>,
}

/// A route's id and upstream as shared strings (see [`Route::labels`]).
#[derive(Debug, Clone)]
pub struct RouteLabels {
    pub id: std::sync::Arc<str>,
    pub upstream: std::sync::Arc<str>,
}

impl Route {
    pub(super) fn new(spec: RouteSpec, index: usize) -> Self {
        let constraints = u32::from(!spec.methods.is_empty())
            + u32::try_from(spec.headers.len()).unwrap_or(u32::MAX);
        Self {
            spec,
            index,
            constraints,
            labels: std::sync::OnceLock::new(),
        }
    }

    /// The id and upstream as shared strings (made once per route).
    pub fn labels(&self) -> &RouteLabels {
        self.labels.get_or_init(|| RouteLabels {
            id: self.spec.id.as_str().into(),
            upstream: self.spec.upstream.as_str().into(),
        })
    }

    /// The route's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The name of the upstream.
    pub fn upstream(&self) -> &str {
        &self.spec.upstream
    }

    /// The spec the route was built from, as given.
    pub fn spec(&self) -> &RouteSpec {
        &self.spec
    }

    /// Position in the list given to [`RouteTable::build`](super::RouteTable::build).
    pub fn index(&self) -> usize {
        self.index
    }

    pub(super) fn priority(&self) -> i32 {
        self.spec.priority
    }

    /// Method list (one) plus header matchers (one each).
    pub(super) fn constraints(&self) -> u32 {
        self.constraints
    }

    /// Whether the method and every header matcher accept the request
    /// (host and path are decided by the table's indexes).
    pub(super) fn accepts(&self, req: &RequestInfo<'_>) -> bool {
        (self.spec.methods.is_empty() || self.spec.methods.contains(req.method()))
            && self.spec.headers.iter().all(|h| h.matches(req.headers()))
    }
}

/// The route chosen for a request.
#[derive(Debug, Clone)]
pub struct Match {
    /// The winning route.
    pub route: Arc<Route>,
    /// Path parameters of a [`PathMatch::Pattern`], in pattern order (a
    /// catch-all's value has no leading slash); empty otherwise.
    pub params: Vec<(String, String)>,
    /// Which of the route's `paths` matched; `None` for a route without
    /// paths.
    pub path_index: Option<usize>,
}

impl Match {
    /// The value of path parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path matcher that matched, if the route has paths.
    pub fn matched_path(&self) -> Option<&PathMatch> {
        self.path_index.and_then(|i| self.route.spec.paths.get(i))
    }
}

/// Why a list of routes does not make a table. `index` is the route's
/// position in the list given to [`RouteTable::build`](super::RouteTable::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route without an id.
    #[error("route #{index}: the id is empty")]
    EmptyId {
        /// Position of the route.
        index: usize,
    },
    /// Two routes with one id.
    #[error("route {id:?} (#{index}): duplicate id, already used by route #{first}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Position of the second route.
        index: usize,
        /// Position of the first route with that id.
        first: usize,
    },
    /// A host that is neither a name, a one-label wildcard, `*`, nor an IP
    /// literal.
    #[error("route {id:?}: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The route.
        id: String,
        /// Position of the route.
        index: usize,
        /// The host as configured.
        host: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An exact or prefix path that can never match a request path.
    #[error("route {id:?}: invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The route.
        id: String,
        /// Position of the route.
        index: usize,
        /// The path as configured.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A pattern that `matchit` does not accept on its own.
    #[error("route {id:?}: invalid path pattern {pattern:?}: {source}")]
    InvalidPattern {
        /// The route.
        id: String,
        /// Position of the route.
        index: usize,
        /// The pattern.
        pattern: String,
        /// matchit's reason.
        source: matchit::InsertError,
    },
    /// Two different patterns for one host that one path can match, with
    /// neither more specific than the other.
    #[error(
        "route {id:?}: path pattern {pattern:?} conflicts with pattern {other_pattern:?} of route \
         {other_id:?} on host {host}: one path can match both and neither is more specific \
         (such as the same shape with other parameter names); spell both the same way or make \
         one more specific"
    )]
    PatternConflict {
        /// The route whose pattern was refused (the later one).
        id: String,
        /// Its position.
        index: usize,
        /// The refused pattern.
        pattern: String,
        /// The route that has the pattern it conflicts with (the earlier one).
        other_id: String,
        /// Its position.
        other_index: usize,
        /// The pattern it conflicts with.
        other_pattern: String,
        /// The host group: `"api.example.com"`, `"*.example.com"` or `"*"` (any).
        host: String,
    },
}

impl RouteError {
    /// Position in the list of the route the error is about.
    pub fn index(&self) -> usize {
        match self {
            RouteError::EmptyId { index }
            | RouteError::DuplicateId { index, .. }
            | RouteError::InvalidHost { index, .. }
            | RouteError::InvalidPath { index, .. }
            | RouteError::InvalidPattern { index, .. }
            | RouteError::PatternConflict { index, .. } => *index,
        }
    }
}
