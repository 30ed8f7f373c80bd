//! The request router of the L7 proxy: which route, and so which upstream,
//! serves a request. Pure logic, no I/O.
//!
//! A [`RouteTable`] is compiled from a list of [`RouteSpec`]s
//! ([`RouteTable::build`]) and answers [`RouteTable::resolve`] for a
//! [`RequestInfo`] (host, path, method, headers) with a [`Match`]: the route
//! and the path parameters. The proxy only sees the [`Resolver`] trait, so a
//! store-backed lazy resolver can replace the static table later;
//! [`SwappableRoutes`] swaps whole tables atomically on reload (a request
//! resolves against exactly one table, never half of one).
//!
//! # When a route matches
//!
//! A route matches a request when its host, path, method and every header
//! matcher match:
//!
//! - **host**: no hosts (or `"*"`) matches any request, also one without a
//!   host; `api.example.com` matches that name exactly; `*.example.com`
//!   matches exactly one label in front of `example.com`, like a TLS wildcard
//!   certificate (and like xlb's SNI certificate choice): `a.example.com`,
//!   but neither `example.com` nor `a.b.example.com`. Route hosts carry no
//!   port; IPv6 literals are written `[::1]` (or `::1`).
//! - **path**: no paths matches any request target (also `*`);
//!   [`PathMatch::Exact`] compares bytes; [`PathMatch::Prefix`] is a string
//!   prefix, not a segment prefix (`/api` also matches `/apiary`; write
//!   `/api/` to stop at a segment); [`PathMatch::Pattern`] uses `matchit`
//!   syntax: `{name}` is a non-empty piece of one segment (it may have a
//!   static prefix and suffix inside its segment, `img-{id}.png`),
//!   `{*name}` the non-empty rest of the path (its value has no leading
//!   slash), `{{` and `}}` are literal braces.
//! - **method**: one of `methods`, or any when empty. `HEAD` is not `GET`:
//!   list both when both are meant.
//! - **headers**: each [`HeaderMatch`] is `Present`, `Exact` (byte equality,
//!   case-sensitive) or `Prefix`; a header sent as several field lines
//!   matches when one of them matches (a comma list inside one line is not
//!   split).
//!
//! # Precedence
//!
//! Among the routes that match, the winner is decided by these rules, in
//! this order (each is a test in `router/tests.rs`):
//!
//! 1. explicit `priority`: higher wins;
//! 2. host: an exact name beats a wildcard, a wildcard beats any host; a
//!    longer wildcard suffix beats a shorter one (with one-label wildcards at
//!    most one wildcard can match a given host, so this never decides today);
//! 3. path: exact beats pattern, pattern beats prefix, a longer prefix beats
//!    a shorter one, any prefix beats a route without paths. Two patterns
//!    compare segment by segment, left to right: a static segment beats a
//!    parameter with a static prefix or suffix (a longer prefix/suffix
//!    first), which beats a bare parameter, which beats a catch-all (a
//!    catch-all with a longer static prefix first); so a pattern made of
//!    static segments only beats every pattern with a parameter;
//! 4. constraints: more constrained wins; a method list counts as one
//!    constraint, each header matcher as one;
//! 5. order: the route earlier in the list wins.
//!
//! A route with several hosts or paths competes with the best of its
//! matching (host, path) pairs. A route that is more specific but refuses
//! the method or the headers does not hide a less specific one: the request
//! goes to the best route that matches completely.
//!
//! # Hosts in requests
//!
//! [`RequestInfo::from_parts`] takes the host from the request target's
//! authority (HTTP/2 `:authority`, HTTP/1.1 absolute form), else from the
//! `Host` header; it strips the port, lowercases, removes one trailing dot
//! and writes IPv6 literals in their canonical form (`[0:0::1]:8080` →
//! `[::1]`). HTTP/1.1 without `Host`, several `Host` lines, an invalid
//! `Host`, userinfo in the authority, or an HTTP/2 `Host` naming another
//! host than `:authority` are errors ([`RequestError`], all 400).
//!
//! # Paths are routed as sent
//!
//! The router decodes and normalises nothing: it matches the path exactly
//! as received (without the query), and the upstream receives those same
//! bytes. So `/%61dmin` and `//admin` do not match a route for `/admin`. A
//! backend that decodes or merges slashes may still see `/admin` in them:
//! when a route *guards* a path (denies it, or sends it to an authenticating
//! upstream), the proxy should refuse ambiguous spellings before routing;
//! [`path_hazard`] names them (dot segments, empty segments, backslashes,
//! percent-encoded separators or unreserved characters, broken
//! percent-encoding). [`RequestInfo::from_parts`] refuses request targets
//! that are not origin-form (not starting with `/`), except `*` for
//! `OPTIONS`.
//!
//! # Conflicts
//!
//! Several routes may use the same pattern (on different hosts, methods,
//! headers): they share one entry and are ordered by the rules above.
//! Patterns for different hosts never conflict. Two *different* patterns
//! for the same host conflict when one path can match both and neither is
//! more specific by the segment rules: the same shape with other parameter
//! names (`/{a}` and `/{b}`, `/users/{id}` and `/users/{uid}`).
//! [`RouteTable::build`] refuses them, naming both routes and patterns.
//! Pairs that one `matchit` router would refuse although the rules order
//! them (`/files/{name}` beside `/files/{*rest}`: a plain parameter beats a
//! catch-all) are accepted, since patterns are spread over several routers
//! (see below).
//!
//! # Cost of a lookup
//!
//! Routes are grouped by host: a map of exact names, a map of wildcard
//! suffixes, one group for any host; a lookup visits at most three groups
//! (the exact name, the one wildcard that can match, any host) and skips a
//! group whose best priority cannot win. In a group: exact paths are one
//! hash lookup; patterns live in a few `matchit` routers ("layers") built
//! so that no two patterns in a layer can match the same path (nor put
//! parameters of different shapes side by side, which matchit 0.9 does not
//! backtrack between), so each layer answers with the only pattern of that
//! layer that matches and the layers together give every matching pattern
//! (usually one to three layers); prefixes are one hash lookup per distinct
//! prefix length, longest first. Routes sharing a (host, path) entry are kept in precedence order
//! and scanned until the first whose method and headers match. Nothing
//! scans all routes.
//!
//! A table of exactly one route without path patterns (what a store-fed
//! node keeps per host, see [`HostTables`]) is held as that route alone
//! and matched directly by the same rules: about 60 bytes beside the route
//! instead of a kilobyte of maps, and fewer memory reads per lookup.

mod host;
mod hosts;
mod pattern;
mod request;
mod spec;
mod table;
#[cfg(test)]
mod tests;

pub use host::wildcard_suffix;
pub use hosts::{best_of, HostSlot, HostTables};
pub use request::{path_hazard, PathHazard, RequestError, RequestInfo};
pub use spec::{
    HeaderMatch, HeaderValueMatch, Match, PathMatch, Route, RouteError, RouteLabels, RouteSpec,
};
pub use table::{Lookup, Resolver, RouteTable, SwappableRoutes, Unresolved};
