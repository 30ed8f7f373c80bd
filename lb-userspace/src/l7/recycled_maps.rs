//! Header maps kept by each worker thread for its next requests.
//!
//! Every proxied HTTP/1.1 request makes two `HeaderMap`s (the request's,
//! parsed from the client, and the response's, parsed from the node), and
//! each is two allocations made and freed per request. In the profile of
//! a proxied GET (`docs/bench/l7.md`) making and dropping them cost ~900
//! instructions of ~29 000, most of it in the allocator's slow path (a
//! block freed by the same thread is not reused until the page's free list
//! is collected). The own HTTP/1.1 paths hand their maps back here once
//! the head is written, emptied, and take one from here when they parse
//! the next head. A map that grew past [`LARGEST`] is dropped rather than
//! kept, so one huge head does not pin its memory for the worker's life.
use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: more than the requests a worker has in flight
/// at once in the benchmarks (64 connections), few enough to be small.
const KEPT: usize = 128;

/// Largest capacity (fields) a map may have to be kept.
const LARGEST: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields` fields: a kept one when there is
/// one, else a new one.
pub fn take(fields: usize) -> HeaderMap {
    match FREE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            // Empty, so `reserve` grows it only if it is smaller.
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Empties `map` and keeps it for [`take`] (or drops it when it is large
/// or enough are kept).
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < KEPT {
            free.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        let mut m = HeaderMap::with_capacity(12);
        m.insert("a", "1".parse().unwrap());
        let room = m.capacity();
        give(m);
        let again = take(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        // Nothing kept now: a new map with the room asked.
        assert!(take(20).capacity() >= 20);
    }

    #[test]
    fn a_large_map_is_not_kept() {
        let mut m = HeaderMap::with_capacity(LARGEST * 4);
        m.insert("a", "1".parse().unwrap());
        give(m);
        assert!(take(1).capacity() < LARGEST * 4);
    }
}
