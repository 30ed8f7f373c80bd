//! Lanes: the own HTTP/1.1 server path and every other way a request
//! arrives get their own compiled copy of the request path.
//!
//! Why: the production build is profile-guided (`cargo xtask build
//! --release --pgo`), and LLVM keeps one profile per function, merged over
//! every caller. Trained on the bench's mix, the proxy's functions
//! (`Proxy::handle`, the attempts, the upstream client) carry the branches
//! HTTP/2 takes as hot as those HTTP/1.1 takes, laid out among them. In
//! callgrind's simulation one proxied HTTP/1.1 GET through the build
//! trained on the whole mix ran 21 583 instructions and missed the L1
//! instruction cache 1 375 times; through a build trained on the same mix
//! without HTTP/2 it ran 20 013 and missed 948 times
//! (`docs/bench/l7.md`). A lane type parameter on the path's async
//! functions makes the compiler emit one copy per lane, and each copy gets
//! its own profile: the plain HTTP/1.1 one is laid out for what plain
//! HTTP/1.1 requests do, the general one for the rest. Trained on the
//! whole mix again, the GET ran 19 474 instructions and missed 830 times.
//! The costs: the second copy's code size, and in a build without a
//! profile ~150 instructions per GET (helpers that had one caller, inlined
//! into it, now have one per lane and stay calls).

/// A lane: a type parameter only, never a value.
pub trait Lane: Send + Sync + 'static {}

/// Requests the own HTTP/1.1 server path serves (`server::h1`): the plain
/// ones, no body or a small whole one.
pub enum Plain {}

/// Every other request: HTTP/2, HTTP/1.1 that hyper serves, callers of
/// [`crate::l7::proxy::Proxy::handle`]; and, from either lane, the
/// upstream phases of a route with a cache (the cache phase runs them on
/// this lane, for its fills and refreshes as for its misses).
pub enum General {}

impl Lane for Plain {}
impl Lane for General {}
