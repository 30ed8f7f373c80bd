//! The compiled table ([`RouteTable`]), the lookup trait ([`Resolver`])
//! and the atomically swappable table ([`SwappableRoutes`]).
use std::{cmp::Reverse, collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;

use super::{
    host::{parse_host_pattern, wildcard_suffix, HostKey},
    pattern::{self, Seg, SegRank},
    request::RequestInfo,
    spec::{Match, PathMatch, Route, RouteError, RouteSpec},
};

/// Resolves a request to a route. The proxy depends on this trait only, so
/// that the static [`RouteTable`] (or [`SwappableRoutes`]) can be replaced
/// by a store-backed lazy resolver.
///
/// A resolver that must fetch routes first (a store-backed lazy resolver,
/// or an embedder's own lookup) overrides [`Resolver::lookup`]: the proxy
/// awaits it on the request's task. `resolve` is the synchronous answer
/// from what is in memory.
pub trait Resolver: Send + Sync {
    /// The best route for the request among those in memory, or `None`
    /// when no route matches.
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match>;

    /// The best route for the request, fetching what is not in memory.
    /// The proxy calls this one; the default answers from
    /// [`Resolver::resolve`] without allocating.
    fn lookup<'a>(&'a self, req: &'a RequestInfo<'a>) -> Lookup<'a> {
        Lookup::Ready(self.resolve(req))
    }
}

/// Why a resolver could not answer now; the client is told to come back
/// (503 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// Too many lookups of hosts not in memory at once, or per second:
    /// this one was shed.
    Shed { retry_after_secs: u64 },
    /// The store holding the routes did not answer.
    StoreUnavailable { retry_after_secs: u64 },
}

/// The answer of [`Resolver::lookup`]: at once, or after some I/O.
pub enum Lookup<'a> {
    Ready(Option<Match>),
    Pending(futures_util::future::BoxFuture<'a, Result<Option<Match>, Unresolved>>),
}

impl Lookup<'_> {
    /// Waits for the answer.
    pub async fn wait(self) -> Result<Option<Match>, Unresolved> {
        match self {
            Lookup::Ready(m) => Ok(m),
            Lookup::Pending(f) => f.await,
        }
    }
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        (**self).resolve(req)
    }

    fn lookup<'a>(&'a self, req: &'a RequestInfo<'a>) -> Lookup<'a> {
        (**self).lookup(req)
    }
}

/// Routes compiled for lookup: see the module docs for matching and
/// precedence.
pub struct RouteTable {
    repr: Repr,
}

/// How a table is held. A store-fed node keeps one table per host and
/// most hosts have one route, so one route without path patterns is held
/// as itself (about 60 bytes besides the route) instead of as a full table
/// (about 1 KB of maps and groups), and matched directly by the same rules.
enum Repr {
    Empty,
    One(OneRoute),
    Full(Box<FullTable>),
}

/// One route whose paths are exact or prefixes (or none).
struct OneRoute {
    route: Arc<Route>,
    hosts: OneHosts,
}

/// The host entries of a [`OneRoute`].
enum OneHosts {
    /// Every entry of the spec's `hosts` is an exact name already written
    /// in normal form (the usual case, and what the admin API stores), so
    /// the spec's own strings are compared: no second copy.
    AsWritten,
    /// The route's host entries, normalised and distinct.
    Keys(Box<[HostKey]>),
}

/// Any number of routes, grouped by host.
struct FullTable {
    routes: Vec<Arc<Route>>,
    by_id: HashMap<Box<str>, usize>,
    /// Groups are boxed: a hash map keeps room for a few entries even with
    /// one, and a group is some 250 bytes, so inline groups made a
    /// one-host table about 1 KB larger.
    exact_hosts: HashMap<Box<str>, Box<HostGroup>>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: HashMap<Box<str>, Box<HostGroup>>,
    any_host: Option<HostGroup>,
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (exact, wildcard, any) = match &self.repr {
            Repr::Empty => (0, 0, false),
            Repr::One(one) => match &one.hosts {
                OneHosts::AsWritten => (one.route.spec().hosts.len(), 0, false),
                OneHosts::Keys(keys) => {
                    let count = |f: fn(&HostKey) -> bool| keys.iter().filter(|k| f(k)).count();
                    (
                        count(|k| matches!(k, HostKey::Exact(_))),
                        count(|k| matches!(k, HostKey::Wildcard(_))),
                        keys.contains(&HostKey::Any),
                    )
                }
            },
            Repr::Full(t) => (
                t.exact_hosts.len(),
                t.wildcard_hosts.len(),
                t.any_host.is_some(),
            ),
        };
        f.debug_struct("RouteTable")
            .field("routes", &self.len())
            .field("exact_hosts", &exact)
            .field("wildcard_hosts", &wildcard)
            .field("any_host", &any)
            .finish()
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::empty()
    }
}

/// The routes of one host entry (an exact name, a wildcard, or any host).
struct HostGroup {
    max_priority: i32,
    exact: HashMap<Box<str>, Bucket>,
    /// Layers of mutually disjoint patterns; values index `patterns`.
    layers: Vec<matchit::Router<usize>>,
    patterns: Vec<PatternEntry>,
    prefixes: HashMap<Box<str>, Bucket>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
    /// Routes without paths.
    any: Option<Bucket>,
}

struct PatternEntry {
    rank: Vec<SegRank>,
    bucket: Bucket,
}

/// The routes sharing one (host, path) entry, best first by priority,
/// constraints, order: the first whose method and headers match wins the
/// bucket.
struct Bucket {
    entries: Vec<Entry>,
    max_priority: i32,
}

struct Entry {
    route: Arc<Route>,
    path_index: Option<usize>,
}

/// Host specificity (greater wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    /// Length of the suffix after `*.`.
    Wildcard(usize),
    Exact,
}

/// Path specificity (greater wins; variants in increasing order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathRank<'t> {
    Any,
    Prefix(usize),
    Pattern(&'t [SegRank]),
    Exact,
}

struct Candidate<'t, 'p> {
    entry: &'t Entry,
    host: HostRank,
    path: PathRank<'t>,
    params: Option<matchit::Params<'t, 'p>>,
}

impl<'t> Candidate<'t, '_> {
    /// The precedence rules, in order; the greatest key wins.
    fn key(&self) -> (i32, HostRank, PathRank<'t>, u32, Reverse<usize>) {
        let route = &self.entry.route;
        (
            route.priority(),
            self.host,
            self.path,
            route.constraints(),
            Reverse(route.index()),
        )
    }

    fn into_match(self) -> Match {
        Match {
            route: Arc::clone(&self.entry.route),
            params: self
                .params
                .map(|params| {
                    params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            path_index: self.entry.path_index,
        }
    }
}

impl RouteTable {
    /// A table without routes: every lookup answers `None`.
    pub fn empty() -> Self {
        Self { repr: Repr::Empty }
    }

    /// Compiles `specs` (in configuration order, which breaks ties), or
    /// says what is wrong with the first route that has a problem.
    // The error is large (a conflict names two routes and patterns), but
    // a table is built once per configuration load.
    #[allow(clippy::result_large_err)]
    pub fn build(specs: Vec<RouteSpec>) -> Result<Self, RouteError> {
        Self::build_all(specs).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Like [`RouteTable::build`], but with every problem found (sorted by
    /// the route's position; never empty on `Err`).
    pub fn build_all(specs: Vec<RouteSpec>) -> Result<Self, Vec<RouteError>> {
        let mut errors = Vec::new();
        let mut by_id: HashMap<Box<str>, usize> = HashMap::with_capacity(specs.len());
        // Per route: its host entries, and its valid, distinct paths.
        let mut hosts_of: Vec<Vec<HostKey>> = Vec::with_capacity(specs.len());
        let mut paths_of: Vec<Vec<usize>> = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            if spec.id.is_empty() {
                errors.push(RouteError::EmptyId { index });
            } else if let Some(&first) = by_id.get(spec.id.as_str()) {
                errors.push(RouteError::DuplicateId {
                    id: spec.id.clone(),
                    index,
                    first,
                });
            } else {
                by_id.insert(spec.id.as_str().into(), index);
            }
            let mut keys: Vec<HostKey> = Vec::new();
            for host in &spec.hosts {
                match parse_host_pattern(host) {
                    Ok(key) if !keys.contains(&key) => keys.push(key),
                    Ok(_) => {}
                    Err(reason) => errors.push(RouteError::InvalidHost {
                        id: spec.id.clone(),
                        index,
                        host: host.clone(),
                        reason,
                    }),
                }
            }
            if spec.hosts.is_empty() {
                keys.push(HostKey::Any);
            }
            hosts_of.push(keys);
            let mut paths: Vec<usize> = Vec::new();
            for (i, path) in spec.paths.iter().enumerate() {
                match check_path(path) {
                    Ok(()) if !paths.iter().any(|&j| spec.paths[j] == *path) => paths.push(i),
                    Ok(()) => {}
                    Err(PathProblem::Path(reason)) => errors.push(RouteError::InvalidPath {
                        id: spec.id.clone(),
                        index,
                        path: path.as_str().to_owned(),
                        reason,
                    }),
                    Err(PathProblem::Pattern(source)) => errors.push(RouteError::InvalidPattern {
                        id: spec.id.clone(),
                        index,
                        pattern: path.as_str().to_owned(),
                        source,
                    }),
                }
            }
            paths_of.push(paths);
        }

        let routes: Vec<Arc<Route>> = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| Arc::new(Route::new(spec, index)))
            .collect();

        if errors.is_empty() && routes.len() == 1 {
            let route = &routes[0];
            if !route
                .spec()
                .paths
                .iter()
                .any(|p| matches!(p, PathMatch::Pattern(_)))
            {
                let keys = hosts_of.pop().unwrap_or_default();
                let written = &route.spec().hosts;
                let as_written = keys.len() == written.len()
                    && keys
                        .iter()
                        .zip(written)
                        .all(|(k, w)| matches!(k, HostKey::Exact(h) if **h == **w));
                let hosts = if as_written {
                    OneHosts::AsWritten
                } else {
                    OneHosts::Keys(keys.into_boxed_slice())
                };
                return Ok(Self {
                    repr: Repr::One(OneRoute {
                        route: Arc::clone(route),
                        hosts,
                    }),
                });
            }
        }

        let mut groups: Vec<(HostKey, GroupBuilder)> = Vec::new();
        let mut group_of: HashMap<HostKey, usize> = HashMap::new();
        for (route, (keys, paths)) in routes.iter().zip(hosts_of.into_iter().zip(&paths_of)) {
            for key in keys {
                let g = *group_of.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, GroupBuilder::default()));
                    groups.len() - 1
                });
                groups[g].1.add(route, paths);
            }
        }

        let mut exact_hosts = HashMap::new();
        let mut wildcard_hosts = HashMap::new();
        let mut any_host = None;
        for (key, builder) in groups {
            let Some(group) = builder.finish(&key, &mut errors) else {
                continue;
            };
            match key {
                HostKey::Exact(host) => {
                    exact_hosts.insert(host, Box::new(group));
                }
                HostKey::Wildcard(suffix) => {
                    wildcard_hosts.insert(suffix, Box::new(group));
                }
                HostKey::Any => any_host = Some(group),
            }
        }

        if !errors.is_empty() {
            errors.sort_by_key(RouteError::index);
            return Err(errors);
        }
        if routes.is_empty() {
            return Ok(Self::empty());
        }
        Ok(Self {
            repr: Repr::Full(Box::new(FullTable {
                routes,
                by_id,
                exact_hosts,
                wildcard_hosts,
                any_host,
            })),
        })
    }

    /// The best route for the request (see the module docs), with the path
    /// parameters.
    pub fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        match &self.repr {
            Repr::Empty => None,
            Repr::One(one) => one.resolve(req),
            Repr::Full(t) => t.resolve(req),
        }
    }

    /// [`RouteTable::resolve`] for a table found under the request's own
    /// host slot (its exact name, or the wildcard suffix that matches it),
    /// whose routes all have that host entry: a one-route table skips its
    /// host check, which the slot already made (two fewer memory reads,
    /// which matter with 10⁶ hosts, where every read misses the cache).
    pub(super) fn resolve_in_host_slot(&self, req: &RequestInfo<'_>) -> Option<Match> {
        match &self.repr {
            Repr::One(one) => one.resolve_host_matched(req),
            _ => self.resolve(req),
        }
    }

    /// The routes, in configuration order.
    pub fn routes(&self) -> &[Arc<Route>] {
        match &self.repr {
            Repr::Empty => &[],
            Repr::One(one) => std::slice::from_ref(&one.route),
            Repr::Full(t) => &t.routes,
        }
    }

    /// The route with this id.
    pub fn route(&self, id: &str) -> Option<&Arc<Route>> {
        match &self.repr {
            Repr::Empty => None,
            Repr::One(one) => (one.route.id() == id).then_some(&one.route),
            Repr::Full(t) => t.by_id.get(id).map(|&i| &t.routes[i]),
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes().len()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.routes().is_empty()
    }

    /// Whether the table holds its route as one route (see [`Repr`]).
    #[cfg(test)]
    pub(super) fn is_one(&self) -> bool {
        matches!(self.repr, Repr::One(_))
    }
}

impl OneRoute {
    /// The module's rules for one route: a host entry must match; among
    /// the route's paths the most specific matching one is reported (exact
    /// beats prefix, a longer prefix a shorter one, the first of equals).
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let host = req.host();
        let host_matches = match &self.hosts {
            OneHosts::AsWritten => {
                host.is_some_and(|h| self.route.spec().hosts.iter().any(|w| w == h))
            }
            OneHosts::Keys(keys) => keys.iter().any(|key| match key {
                HostKey::Any => true,
                HostKey::Exact(h) => host == Some(&**h),
                HostKey::Wildcard(s) => host.and_then(wildcard_suffix) == Some(&**s),
            }),
        };
        if !host_matches {
            return None;
        }
        self.resolve_host_matched(req)
    }

    /// [`OneRoute::resolve`] once the host is known to match.
    fn resolve_host_matched(&self, req: &RequestInfo<'_>) -> Option<Match> {
        if !self.route.accepts(req) {
            return None;
        }
        let paths = &self.route.spec().paths;
        let path_index = if paths.is_empty() {
            None
        } else {
            let path = req.path();
            let mut best: Option<(PathRank<'_>, usize)> = None;
            for (i, p) in paths.iter().enumerate() {
                let rank = match p {
                    PathMatch::Exact(e) if path == e => PathRank::Exact,
                    PathMatch::Prefix(pre) if path.starts_with(pre.as_str()) => {
                        PathRank::Prefix(pre.len())
                    }
                    _ => continue,
                };
                if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                    best = Some((rank, i));
                }
            }
            Some(best?.1)
        };
        Some(Match {
            route: Arc::clone(&self.route),
            params: Vec::new(),
            path_index,
        })
    }
}

impl FullTable {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let path = req.path();
        let mut best: Option<Candidate<'_, '_>> = None;
        // Groups in decreasing host specificity: a later group only wins
        // with a higher priority.
        if let Some(host) = req.host() {
            if let Some(group) = self.exact_hosts.get(host) {
                group.collect(req, path, HostRank::Exact, &mut best);
            }
            if let Some(suffix) = wildcard_suffix(host) {
                if let Some(group) = self.wildcard_hosts.get(suffix) {
                    group.collect(req, path, HostRank::Wildcard(suffix.len()), &mut best);
                }
            }
        }
        if let Some(group) = &self.any_host {
            group.collect(req, path, HostRank::Any, &mut best);
        }
        best.map(Candidate::into_match)
    }
}

impl Resolver for RouteTable {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        RouteTable::resolve(self, req)
    }
}

impl HostGroup {
    /// Offers every matching entry of this group to `best`.
    fn collect<'t, 'p>(
        &'t self,
        req: &RequestInfo<'_>,
        path: &'p str,
        host: HostRank,
        best: &mut Option<Candidate<'t, 'p>>,
    ) {
        // `best` comes from a more specific host group: an equal priority
        // cannot beat it.
        if best
            .as_ref()
            .is_some_and(|b| self.max_priority <= b.entry.route.priority())
        {
            return;
        }
        if let Some(bucket) = self.exact.get(path) {
            bucket.offer(req, host, PathRank::Exact, None, best);
        }
        for layer in &self.layers {
            if let Ok(found) = layer.at(path) {
                let entry = &self.patterns[*found.value];
                entry.bucket.offer(
                    req,
                    host,
                    PathRank::Pattern(&entry.rank),
                    Some(found.params),
                    best,
                );
            }
        }
        for &len in &self.prefix_lens {
            if let Some(bucket) = path.get(..len).and_then(|p| self.prefixes.get(p)) {
                bucket.offer(req, host, PathRank::Prefix(len), None, best);
            }
        }
        if let Some(bucket) = &self.any {
            bucket.offer(req, host, PathRank::Any, None, best);
        }
    }
}

impl Bucket {
    fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort_by_key(|e| {
            (
                Reverse(e.route.priority()),
                Reverse(e.route.constraints()),
                e.route.index(),
            )
        });
        let max_priority = entries.first().map_or(i32::MIN, |e| e.route.priority());
        Self {
            entries,
            max_priority,
        }
    }

    fn offer<'t, 'p>(
        &'t self,
        req: &RequestInfo<'_>,
        host: HostRank,
        path: PathRank<'t>,
        params: Option<matchit::Params<'t, 'p>>,
        best: &mut Option<Candidate<'t, 'p>>,
    ) {
        if best
            .as_ref()
            .is_some_and(|b| self.max_priority < b.entry.route.priority())
        {
            return;
        }
        let Some(entry) = self.entries.iter().find(|e| e.route.accepts(req)) else {
            return;
        };
        let candidate = Candidate {
            entry,
            host,
            path,
            params,
        };
        if best.as_ref().is_none_or(|b| candidate.key() > b.key()) {
            *best = Some(candidate);
        }
    }
}

enum PathProblem {
    Path(&'static str),
    Pattern(matchit::InsertError),
}

fn check_path(path: &PathMatch) -> Result<(), PathProblem> {
    let text = path.as_str();
    if matches!(path, PathMatch::Exact(_)) && text == "*" {
        return Ok(());
    }
    if !text.starts_with('/') {
        return Err(PathProblem::Path(
            "a path starts with '/' (only an exact \"*\" may not)",
        ));
    }
    if text
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(PathProblem::Path(
            "a space, control character, '?' or '#' never appears in a routed path (the query is not routed)",
        ));
    }
    if let PathMatch::Pattern(_) = path {
        matchit::Router::new()
            .insert(text, ())
            .map_err(PathProblem::Pattern)?;
    }
    Ok(())
}

/// A host group being put together.
#[derive(Default)]
struct GroupBuilder {
    exact: HashMap<String, Vec<Entry>>,
    /// In order of first appearance.
    patterns: Vec<(String, Vec<Entry>)>,
    pattern_pos: HashMap<String, usize>,
    prefixes: HashMap<String, Vec<Entry>>,
    any: Vec<Entry>,
}

fn push_entry(entries: &mut Vec<Entry>, route: &Arc<Route>, path_index: Option<usize>) {
    // A route reaches one entry twice only through two hosts that
    // normalise alike, which were already merged; stay safe anyway.
    if entries.last().is_some_and(|e| Arc::ptr_eq(&e.route, route)) {
        return;
    }
    entries.push(Entry {
        route: Arc::clone(route),
        path_index,
    });
}

impl GroupBuilder {
    /// Adds `route` under its valid `paths` (indexes into its spec's paths).
    fn add(&mut self, route: &Arc<Route>, paths: &[usize]) {
        let spec = route.spec();
        if spec.paths.is_empty() {
            push_entry(&mut self.any, route, None);
        }
        for &i in paths {
            match &spec.paths[i] {
                PathMatch::Exact(p) => {
                    push_entry(self.exact.entry(p.clone()).or_default(), route, Some(i))
                }
                PathMatch::Prefix(p) => {
                    push_entry(self.prefixes.entry(p.clone()).or_default(), route, Some(i))
                }
                PathMatch::Pattern(p) => {
                    let pos = *self.pattern_pos.entry(p.clone()).or_insert_with(|| {
                        self.patterns.push((p.clone(), Vec::new()));
                        self.patterns.len() - 1
                    });
                    push_entry(&mut self.patterns[pos].1, route, Some(i));
                }
            }
        }
    }

    /// The group, or `None` after pushing its pattern conflicts to `errors`.
    fn finish(self, key: &HostKey, errors: &mut Vec<RouteError>) -> Option<HostGroup> {
        let parsed: Vec<Vec<Seg>> = self
            .patterns
            .iter()
            .map(|(text, _)| pattern::parse(text))
            .collect();
        let ranks: Vec<Vec<SegRank>> = parsed.iter().map(|segs| pattern::rank(segs)).collect();
        let owner = |i: usize| &self.patterns[i].1[0].route;
        let conflicts = pattern::ambiguous(&parsed, &ranks);
        for &(later, earlier) in &conflicts {
            errors.push(RouteError::PatternConflict {
                id: owner(later).id().to_owned(),
                index: owner(later).index(),
                pattern: self.patterns[later].0.clone(),
                other_id: owner(earlier).id().to_owned(),
                other_index: owner(earlier).index(),
                other_pattern: self.patterns[earlier].0.clone(),
                host: key.label(),
            });
        }
        if !conflicts.is_empty() {
            return None;
        }

        let texts: Vec<&str> = self.patterns.iter().map(|(t, _)| t.as_str()).collect();
        let layers = match pattern::layers(&texts, &parsed) {
            Ok(layers) => layers,
            Err((i, source)) => {
                errors.push(RouteError::InvalidPattern {
                    id: owner(i).id().to_owned(),
                    index: owner(i).index(),
                    pattern: self.patterns[i].0.clone(),
                    source,
                });
                return None;
            }
        };

        let patterns: Vec<PatternEntry> = self
            .patterns
            .into_iter()
            .zip(ranks)
            .map(|((_, entries), rank)| PatternEntry {
                rank,
                bucket: Bucket::new(entries),
            })
            .collect();
        let exact: HashMap<Box<str>, Bucket> = self
            .exact
            .into_iter()
            .map(|(p, entries)| (p.into_boxed_str(), Bucket::new(entries)))
            .collect();
        let prefixes: HashMap<Box<str>, Bucket> = self
            .prefixes
            .into_iter()
            .map(|(p, entries)| (p.into_boxed_str(), Bucket::new(entries)))
            .collect();
        let mut prefix_lens: Vec<usize> = prefixes.keys().map(|p| p.len()).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        let any = (!self.any.is_empty()).then(|| Bucket::new(self.any));

        let max_priority = exact
            .values()
            .chain(prefixes.values())
            .chain(patterns.iter().map(|p| &p.bucket))
            .chain(&any)
            .map(|b| b.max_priority)
            .max()
            .unwrap_or(i32::MIN);
        Some(HostGroup {
            max_priority,
            exact,
            layers,
            patterns,
            prefixes,
            prefix_lens,
            any,
        })
    }
}

/// A [`RouteTable`] that reloads swap whole: each lookup reads one table,
/// the old or the new, never a mix.
pub struct SwappableRoutes {
    current: ArcSwap<RouteTable>,
}

impl fmt::Debug for SwappableRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SwappableRoutes")
            .field(&**self.current.load())
            .finish()
    }
}

impl SwappableRoutes {
    /// Starts with `table`.
    pub fn new(table: RouteTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// Installs `table` for every later lookup (lookups under way finish on
    /// the old one) and returns the old one.
    pub fn swap(&self, table: RouteTable) -> Arc<RouteTable> {
        self.current.swap(Arc::new(table))
    }

    /// The current table, for several lookups against one table.
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }
}

impl Resolver for SwappableRoutes {
    fn resolve(&self, req: &RequestInfo<'_>) -> Option<Match> {
        self.current.load().resolve(req)
    }
}
