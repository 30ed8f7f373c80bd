//! Per-thread handles to the metric series (and the status page's live
//! counts) one request touches, so that counting a request is one small
//! hash lookup and a few atomic adds.
//!
//! Why: every `Family::get_or_create` takes the family's lock and hashes
//! its label strings; a request touched six families (requests, duration,
//! bytes, time to first byte, connect time, node responses), which `cargo
//! xtask bench l7` measured as a visible part of the metrics' cost. A
//! series handle (`Counter`, `Histogram`) shares its value with the family,
//! so a cached clone counts into the same series the scrape reads.
//!
//! The cache is keyed by the addresses of the record's label strings
//! (`Arc<str>`s shared with the configuration) and keeps those `Arc`s
//! alive, so an address cannot be reused by another string while its
//! entry exists. After a reload the new strings make new entries; the
//! cache is emptied when it reaches [`MAX_ENTRIES`], so old ones do not
//! pile up (the series themselves stay in their families, as before).
use std::{cell::RefCell, collections::HashMap, net::SocketAddr, sync::Arc};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::status::LiveCount;

/// Entries per thread before the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// Which series: the metrics instance and the label strings' addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub metrics: u64,
    pub listener: usize,
    pub route: usize,
    pub upstream: usize,
    pub node: Option<SocketAddr>,
}

impl Key {
    /// The address of `s`'s text (what identifies an `Arc<str>`).
    pub fn addr(s: &Arc<str>) -> usize {
        Arc::as_ptr(s).cast::<u8>() as usize
    }
}

/// The series of one (listener, route, upstream, node); a slot stays
/// empty until a request needs it, so the exposition shows only series
/// that were counted, as with `get_or_create`.
#[derive(Debug)]
pub(super) struct Series {
    /// The strings whose addresses are in the key, kept alive.
    pub _strings: [Arc<str>; 3],
    /// Requests by status class (`1xx` … `5xx`).
    pub requests: [Option<Counter>; 5],
    pub request_duration: Histogram,
    pub response_bytes: Counter,
    pub request_bytes: Option<Counter>,
    pub first_byte: Option<Histogram>,
    pub connect: Option<Histogram>,
    /// Node answers by status class.
    pub node_responses: [Option<Counter>; 5],
    /// The status page's live counts of the route and of the node.
    pub live_route: Option<Arc<LiveCount>>,
    pub live_node: Option<Arc<LiveCount>>,
}

thread_local! {
    static CACHE: RefCell<HashMap<Key, Series>> = RefCell::new(HashMap::new());
}

/// Runs `f` on the series of `key`, made by `make` when not cached.
pub(super) fn with<R>(
    key: Key,
    make: impl FnOnce() -> Series,
    f: impl FnOnce(&mut Series) -> R,
) -> R {
    CACHE.with(|c| {
        let mut map = c.borrow_mut();
        if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
            map.clear();
        }
        f(map.entry(key).or_insert_with(make))
    })
}
