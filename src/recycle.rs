//! Header maps, and the fast lane's field lists (`headers::raw`), reused across requests, per
//! thread.
//!
//! Why: a request on the fast path builds two `HeaderMap`s, the client's request and the
//! upstream's response. Each owns an entries array of about 1.2 KiB, above glibc's per-thread
//! cache limit (1,032 bytes), so every one went through malloc's shared bins: 4 of the ~9
//! allocations per request, and most of the time spent in malloc and free (perf, issue 5).
//! A map is handed back once its last reader is done (the upstream request once its head is
//! written, the response once its head is encoded) and the next request takes it, cleared.
//!
//! Bounded both ways: at most [`RECYCLED_MAPS_PER_THREAD`] maps wait per thread, and a map
//! that grew past [`RECYCLED_MAP_MAX_HEADERS`] (a client sent many headers) is freed, so a
//! burst of large requests leaves nothing large behind.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::HeaderMap;

/// Maps kept per thread: enough for the requests one thread has between building a map and
/// handing it back (a few per connection being served at that instant), few enough that
/// idle threads hold little (each about 1.3 KiB).
pub const RECYCLED_MAPS_PER_THREAD: usize = 64;

/// A map able to hold more headers than this is not kept.
pub const RECYCLED_MAP_MAX_HEADERS: usize = 64;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// A value kept in this thread's `pool`, if there is one.
pub fn take<T: 'static>(pool: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    pool.try_with(|kept| kept.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// Keeps `value` in this thread's `pool` for a later [`take`], unless the pool holds
/// [`RECYCLED_MAPS_PER_THREAD`] already.
pub fn keep<T: 'static>(pool: &'static LocalKey<RefCell<Vec<T>>>, value: T) {
    // During thread teardown (or a re-entrant call, which cannot happen here but would
    // only cost a free) the value is simply dropped.
    let _ = pool.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            if kept.len() < RECYCLED_MAPS_PER_THREAD {
                kept.push(value);
            }
        }
    });
}

/// An empty map with room for at least `headers` entries, reused when this thread has one.
pub fn header_map(headers: usize) -> HeaderMap {
    match take(&MAPS) {
        Some(mut map) => {
            // A no-op when the reused map is large enough, which is the common case.
            map.reserve(headers);
            map
        }
        None => HeaderMap::with_capacity(headers),
    }
}

/// Hands `map` back for a later [`header_map`]; its entries are dropped now.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > RECYCLED_MAP_MAX_HEADERS {
        return;
    }
    map.clear();
    keep(&MAPS, map);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, HOST};

    #[test]
    fn a_given_back_map_returns_empty_with_its_memory() {
        let mut map = header_map(10);
        map.insert(HOST, HeaderValue::from_static("a"));
        let capacity = map.capacity();
        give_back(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        give_back(again);
    }

    #[test]
    fn a_map_that_grew_large_is_not_kept() {
        // Drain whatever earlier tests on this thread left.
        while MAPS.with_borrow(|m| !m.is_empty()) {
            MAPS.with_borrow_mut(|m| m.clear());
        }
        give_back(HeaderMap::with_capacity(RECYCLED_MAP_MAX_HEADERS * 4));
        assert!(MAPS.with_borrow(Vec::is_empty));
        give_back(HeaderMap::with_capacity(8));
        assert_eq!(MAPS.with_borrow(Vec::len), 1);
    }

    #[test]
    fn a_reused_map_grows_to_the_room_asked_for() {
        give_back(HeaderMap::with_capacity(4));
        let map = header_map(40);
        assert!(map.capacity() >= 40);
    }
}
