//! The trace table: per W3C trace id, the tag and propagated headers an inbound request
//! carried, so the outbound side can recover them for calls that carry only
//! `traceparent`.
//!
//! Bounded in entries (an LRU per shard) and in age (a TTL counted from `remember`).
//! Every operation is O(1) and locks one of 16 shards briefly; nothing here is async,
//! so no lock is ever held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use graylane_routing::Tag;
use http::{HeaderName, HeaderValue};

/// What an inbound request left for its trace.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEntry {
    pub tag: Option<Tag>,
    /// Values of the `--propagate-headers` the inbound request carried.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Trace id → [`TraceEntry`], bounded in size and age; shared by all connections
/// (`Send + Sync`, every method takes `&self`).
pub struct TraceTable {
    shards: [Mutex<Lru>; SHARDS],
    ttl: Duration,
    /// Entries held over all shards, so `forget` costs nothing while there are none.
    held: AtomicUsize,
}

const SHARDS: usize = 16;

/// "No slot" in the linked list threaded through the slab.
const NIL: usize = usize::MAX;

/// One shard: a map from trace id to slab slot, and a doubly linked recency list
/// through the slab (head = most recently used, tail = least).
///
/// Invariant: `map.len() == nodes.len() - free.len() <= capacity`, and the list holds
/// exactly the slots the map points at.
struct Lru {
    map: HashMap<[u8; 16], usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    capacity: usize,
}

struct Node {
    key: [u8; 16],
    entry: TraceEntry,
    remembered: Instant,
    prev: usize,
    next: usize,
}

impl TraceTable {
    /// `capacity` entries at most (split over the shards; at least 1 per shard, so the
    /// bound is `max(capacity, 16)`), each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let (per_shard, extra) = (capacity / SHARDS, capacity % SHARDS);
        let shards = std::array::from_fn(|i| {
            // The remainder goes to the first shards so the total is exactly `capacity`.
            let cap = per_shard + usize::from(i < extra);
            Mutex::new(Lru::new(cap.max(1)))
        });
        TraceTable {
            shards,
            ttl,
            held: AtomicUsize::new(0),
        }
    }

    /// Remembers (or replaces) the entry of `trace_id`, made most recently used and
    /// aged from `now`. Evicts the least recently used entry of the shard when full.
    pub fn remember(&self, trace_id: [u8; 16], entry: TraceEntry, now: Instant) {
        self.update(&trace_id, |shard| shard.insert(trace_id, entry, now));
    }

    /// Forgets the entry of `trace_id`, if any: a later request of that trace said
    /// something else (no tag, no propagated headers), and the outbound side must
    /// recover what the latest request carried, not an earlier one's tag or headers.
    /// Free while the table is empty, as it is without tagged traffic.
    pub fn forget(&self, trace_id: &[u8; 16]) {
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.update(trace_id, |shard| {
            if let Some(&i) = shard.map.get(trace_id) {
                shard.remove(i);
            }
        });
    }

    /// `op` on the shard of `trace_id`, keeping `held` in step with what it added
    /// or removed. A shard cleared after a panic leaves `held` too high, never too
    /// low: `forget` then looks for nothing, but never skips an entry.
    fn update<T>(&self, trace_id: &[u8; 16], op: impl FnOnce(&mut Lru) -> T) -> T {
        let mut shard = self.shard(trace_id);
        let before = shard.map.len();
        let out = op(&mut shard);
        match shard.map.len().cmp(&before) {
            std::cmp::Ordering::Greater => {
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            std::cmp::Ordering::Less => {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
            std::cmp::Ordering::Equal => {}
        }
        out
    }

    /// The entry of `trace_id` if present and younger than the TTL (an expired one is
    /// removed); a hit makes it most recently used (the TTL still counts from
    /// `remember`).
    pub fn recall(&self, trace_id: &[u8; 16], now: Instant) -> Option<TraceEntry> {
        self.update(trace_id, |shard| shard.get(trace_id, now, self.ttl))
    }

    /// Entries held now (including expired ones not yet removed). Locks each shard in
    /// turn, so under concurrent writes it is a momentary estimate.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no entry is held (expired ones not yet removed count as held).
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(s).map.is_empty())
    }

    fn shard(&self, trace_id: &[u8; 16]) -> MutexGuard<'_, Lru> {
        // W3C Trace Context level 2 makes the right-most 7 bytes of a trace id random,
        // and 64-bit ids from older tracers are left-padded with zeros, so the last
        // byte spreads traces over the shards whatever made the id.
        lock(&self.shards[usize::from(trace_id[15]) % SHARDS])
    }
}

fn lock(shard: &Mutex<Lru>) -> MutexGuard<'_, Lru> {
    shard.lock().unwrap_or_else(|poisoned| {
        // A panic mid-update may have left the links inconsistent. Forgetting this
        // shard's traces only loses tag recovery for them; a broken list could loop.
        let mut lru = poisoned.into_inner();
        lru.clear();
        shard.clear_poison();
        lru
    })
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    fn insert(&mut self, key: [u8; 16], entry: TraceEntry, now: Instant) {
        if let Some(&i) = self.map.get(&key) {
            let node = &mut self.nodes[i];
            node.entry = entry;
            node.remembered = now;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let node = Node {
            key,
            entry,
            remembered: now,
            prev: NIL,
            next: NIL,
        };
        let i = if self.map.len() >= self.capacity && self.tail != NIL {
            let lru = self.tail;
            self.unlink(lru);
            self.map.remove(&self.nodes[lru].key);
            self.nodes[lru] = node;
            lru
        } else if let Some(i) = self.free.pop() {
            self.nodes[i] = node;
            i
        } else {
            self.nodes.push(node);
            self.nodes.len() - 1
        };
        self.map.insert(key, i);
        self.push_front(i);
    }

    fn get(&mut self, key: &[u8; 16], now: Instant, ttl: Duration) -> Option<TraceEntry> {
        let i = *self.map.get(key)?;
        if now.saturating_duration_since(self.nodes[i].remembered) >= ttl {
            self.remove(i);
            return None;
        }
        self.unlink(i);
        self.push_front(i);
        Some(self.nodes[i].entry.clone())
    }

    fn remove(&mut self, i: usize) {
        self.unlink(i);
        let node = &mut self.nodes[i];
        self.map.remove(&node.key);
        // Free the entry's heap now rather than when the slot is reused.
        node.entry = TraceEntry {
            tag: None,
            headers: Vec::new(),
        };
        self.free.push(i);
    }

    fn clear(&mut self) {
        self.map.clear();
        self.nodes.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n].prev = prev,
        }
        self.nodes[i].prev = NIL;
        self.nodes[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].prev = NIL;
        self.nodes[i].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h].prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn entry(tag: &str) -> TraceEntry {
        TraceEntry {
            tag: Tag::parse(tag),
            headers: vec![(
                HeaderName::from_static("x-tenant"),
                HeaderValue::from_static("acme"),
            )],
        }
    }

    /// A trace id whose shard byte (the last) is `shard` and whose other bytes say `n`.
    fn id(shard: u8, n: u64) -> [u8; 16] {
        let mut id = [0; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[15] = shard;
        id
    }

    #[test]
    fn table_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TraceTable>();
    }

    #[test]
    fn remembered_entry_is_recalled() {
        let table = TraceTable::new(100, TTL);
        let now = Instant::now();
        assert!(table.is_empty());
        table.remember(id(1, 1), entry("gray"), now);
        assert_eq!(table.recall(&id(1, 1), now), Some(entry("gray")));
        assert_eq!(table.recall(&id(1, 2), now), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn forgetting_removes_only_that_trace_and_is_free_when_empty() {
        let table = TraceTable::new(64, TTL);
        let now = Instant::now();
        table.forget(&id(1, 1));
        assert_eq!(table.held.load(Ordering::Relaxed), 0);
        table.remember(id(1, 1), entry("gray"), now);
        table.remember(id(1, 2), entry("blue"), now);
        table.remember(id(1, 2), entry("blue"), now);
        assert_eq!(
            table.held.load(Ordering::Relaxed),
            2,
            "a replacement adds none"
        );
        table.forget(&id(1, 1));
        table.forget(&id(1, 1));
        assert_eq!(table.recall(&id(1, 1), now), None);
        assert_eq!(table.recall(&id(1, 2), now), Some(entry("blue")));
        assert_eq!(table.held.load(Ordering::Relaxed), 1);
        // An expired entry removed by `recall` leaves the count too.
        assert_eq!(table.recall(&id(1, 2), now + TTL), None);
        assert_eq!(table.held.load(Ordering::Relaxed), 0);
        assert!(table.is_empty());
    }

    #[test]
    fn remembering_again_replaces_and_keeps_one_entry() {
        let table = TraceTable::new(100, TTL);
        let now = Instant::now();
        table.remember(id(1, 1), entry("gray"), now);
        table.remember(id(1, 1), entry("blue"), now);
        assert_eq!(table.len(), 1);
        assert_eq!(table.recall(&id(1, 1), now), Some(entry("blue")));
    }

    #[test]
    fn full_shard_evicts_least_recently_used_and_recall_refreshes() {
        // 2 per shard; all keys share shard 3.
        let table = TraceTable::new(2 * SHARDS, TTL);
        let now = Instant::now();
        table.remember(id(3, 1), entry("a"), now);
        table.remember(id(3, 2), entry("b"), now);
        assert!(table.recall(&id(3, 1), now).is_some());
        table.remember(id(3, 3), entry("c"), now);
        assert_eq!(table.recall(&id(3, 2), now), None);
        assert_eq!(table.recall(&id(3, 1), now), Some(entry("a")));
        assert_eq!(table.recall(&id(3, 3), now), Some(entry("c")));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn entry_expires_at_ttl_and_is_removed() {
        let table = TraceTable::new(100, TTL);
        let then = Instant::now();
        table.remember(id(1, 1), entry("gray"), then);
        let just_before = then + TTL - Duration::from_millis(1);
        assert!(table.recall(&id(1, 1), just_before).is_some());
        assert_eq!(table.recall(&id(1, 1), then + TTL), None);
        assert!(table.is_empty());
    }

    #[test]
    fn recall_does_not_extend_the_ttl() {
        let table = TraceTable::new(100, TTL);
        let then = Instant::now();
        table.remember(id(1, 1), entry("gray"), then);
        assert!(table.recall(&id(1, 1), then + TTL / 2).is_some());
        assert_eq!(table.recall(&id(1, 1), then + TTL), None);
    }

    #[test]
    fn remembering_again_restarts_the_ttl() {
        let table = TraceTable::new(100, TTL);
        let then = Instant::now();
        table.remember(id(1, 1), entry("gray"), then);
        table.remember(id(1, 1), entry("gray"), then + TTL / 2);
        assert!(table.recall(&id(1, 1), then + TTL).is_some());
    }

    #[test]
    fn slot_freed_by_expiry_is_reused() {
        let table = TraceTable::new(SHARDS, TTL);
        let then = Instant::now();
        table.remember(id(2, 1), entry("a"), then);
        assert_eq!(table.recall(&id(2, 1), then + TTL), None);
        table.remember(id(2, 2), entry("b"), then + TTL);
        table.remember(id(2, 3), entry("c"), then + TTL);
        assert_eq!(table.len(), 1);
        assert_eq!(table.recall(&id(2, 3), then + TTL), Some(entry("c")));
        assert_eq!(
            lock(&table.shards[2]).nodes.len(),
            1,
            "the slab did not grow"
        );
    }

    #[test]
    fn many_inserts_never_exceed_capacity() {
        let table = TraceTable::new(1_000, TTL);
        let now = Instant::now();
        for n in 0..100_000u64 {
            let mut key = [0; 16];
            key[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            key[8..].copy_from_slice(&n.to_be_bytes());
            table.remember(key, entry("gray"), now);
            if n % 1_000 == 0 {
                assert!(table.len() <= 1_000);
            }
        }
        assert!(table.len() <= 1_000);
        assert!(table.len() > 900, "shards should fill up: {}", table.len());
    }

    #[test]
    fn tiny_capacity_keeps_one_per_shard() {
        let table = TraceTable::new(0, TTL);
        let now = Instant::now();
        table.remember(id(5, 1), entry("a"), now);
        table.remember(id(5, 2), entry("b"), now);
        assert_eq!(table.recall(&id(5, 1), now), None);
        assert_eq!(table.recall(&id(5, 2), now), Some(entry("b")));
    }

    #[test]
    fn concurrent_use_from_threads_stays_bounded() {
        let table = TraceTable::new(500, TTL);
        let now = Instant::now();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let table = &table;
                s.spawn(move || {
                    for n in 0..20_000u64 {
                        let key = id((n * 7 + t).to_le_bytes()[0], t << 32 | n);
                        table.remember(key, entry("gray"), now);
                        let _ = table.recall(&key, now + Duration::from_secs(n % 90));
                        let _ = table.recall(&id(0, n), now);
                    }
                });
            }
        });
        assert!(table.len() <= 500);
    }

    #[test]
    fn keys_differing_in_shard_byte_or_other_bytes_are_distinct() {
        let table = TraceTable::new(1_000, TTL);
        let now = Instant::now();
        for shard in 0..=255u8 {
            table.remember(id(shard, 7), entry(&format!("s{shard}")), now);
        }
        for n in 0..32 {
            table.remember(id(9, 1_000 + n), entry(&format!("n{n}")), now);
        }
        for shard in 0..=255u8 {
            let got = table.recall(&id(shard, 7), now);
            assert_eq!(got, Some(entry(&format!("s{shard}"))));
        }
        for n in 0..32 {
            let got = table.recall(&id(9, 1_000 + n), now);
            assert_eq!(got, Some(entry(&format!("n{n}"))));
        }
    }
}
