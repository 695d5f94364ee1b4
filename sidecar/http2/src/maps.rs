//! Header maps used again: a proxied call makes two or three (request, response,
//! trailers) and drops each once it is encoded on the next hop. A new map costs two
//! allocations, and at many streams in flight glibc serves them from its slow path
//! (its per-thread cache keeps 7 blocks of a size): on an h2c hop the maps were 4 of
//! 11.6 `malloc` calls per request. Each thread keeps a few cleared maps instead.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: what a burst of streams in flight hands back. A kept map
/// holds at most [`LARGEST`] fields, so this bounds what is kept at about 300 KB a
/// thread (typically a tenth of it: a map of ten fields is about 1.3 KB).
const KEPT: usize = 64;
/// A larger map (a call with unusually many fields) is not kept: it would pin its
/// size for every later use.
const LARGEST: usize = 48;

thread_local! {
    static KEPT_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`: one this thread kept if there is one.
pub fn header_map(fields: usize) -> HeaderMap {
    let kept = KEPT_MAPS.with(|kept| kept.try_borrow_mut().ok()?.pop());
    match kept {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// `map` is done with (encoded on the next hop): kept for [`header_map`], cleared,
/// unless this thread keeps enough already or it is too large to keep.
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    // Its fields go now, not when it is next used.
    map.clear();
    KEPT_MAPS.with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut()
            && kept.len() < KEPT
        {
            kept.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn kept() -> usize {
        KEPT_MAPS.with(|kept| kept.borrow().len())
    }

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        map.insert("x-one", HeaderValue::from_static("1"));
        map.append("x-one", HeaderValue::from_static("2"));
        map.insert(http::header::HOST, HeaderValue::from_static("orders"));
        let room = map.capacity();
        recycle(map);
        assert_eq!(kept(), 1);
        let again = header_map(4);
        assert_eq!(kept(), 0);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.get("x-one"), None);
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn what_is_kept_is_bounded_in_count_and_size() {
        for _ in 0..KEPT + 10 {
            recycle(HeaderMap::with_capacity(4));
        }
        assert_eq!(kept(), KEPT);
        // Maps with no room, or too much, are not kept.
        let taken: Vec<_> = (0..KEPT).map(|_| header_map(1)).collect();
        assert_eq!(kept(), 0);
        recycle(HeaderMap::new());
        recycle(HeaderMap::with_capacity(LARGEST * 4));
        assert_eq!(kept(), 0);
        drop(taken);
        // A map asked for with more room than a kept one has gets it.
        recycle(HeaderMap::with_capacity(2));
        assert!(header_map(40).capacity() >= 40);
    }
}
