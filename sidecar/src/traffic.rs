//! Traffic reports: what the outbound side sent per destination (namespace, service,
//! lane, subset) — requests, errors, a latency histogram — drained every few seconds
//! into a `TrafficReport` on the discovery stream (see `discovery`).
//!
//! ```text
//!  Outbound::handle ─► Traffic::record ─► table (ArcSwap, read without a lock)
//!                                            └► Series: atomic counters
//!  discovery session, every --traffic-report-interval (or the shorter period a
//!  rollout asks for in the snapshot) ─► Traffic::drain ─► report
//! ```
//!
//! The per-request path takes no lock: it loads the table (an `ArcSwap`), finds its
//! series by a hash and adds to atomics. Only a destination seen for the first time
//! takes the insert lock and swaps in a copy of the table. At most `MAX_SERIES`
//! series; requests of a new one past that are counted in `overflow` and reported.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use graylane_proto::v1::{TrafficReport, TrafficSeries};

/// Upper bounds (ms) of the latency buckets; one more (no upper bound) follows. The
/// control plane's `traffic::histogram` holds the same list: 1 ms to 10 s in steps of
/// at most 2× (1.5× above 10 ms), so an interpolated p50/p99 is within about one step
/// of the truth, in 24 counts (≈ 24–40 bytes on the wire) per series.
pub(crate) const LATENCY_BOUNDS_MS: [f64; 23] = [
    1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    700.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0,
];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// Series one sidecar keeps (destination namespace × service × lane × subset).
pub(crate) const MAX_SERIES: usize = 2_000;
/// Reports without traffic after which a series leaves the table.
const IDLE_REPORTS: u32 = 2;

/// A destination of this sidecar's requests.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub lane: &'a str,
    pub subset: &'a str,
}

/// The series of this sidecar's outbound requests since the last report.
pub struct Traffic {
    table: ArcSwap<Table>,
    /// Held to add or remove series (never by `record` for a known one).
    insert: Mutex<()>,
    /// Requests of new series refused because the table was full.
    overflow: AtomicU64,
    /// When the last report was drained: its interval.
    drained: Mutex<Instant>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Table {
    /// By the hash of the destination; collisions share a vector.
    by_hash: HashMap<u64, Vec<Arc<Series>>>,
    len: usize,
}

struct Series {
    namespace: String,
    service: String,
    lane: String,
    subset: String,
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Reports in a row this series had nothing for.
    idle: AtomicU32,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            insert: Mutex::new(()),
            overflow: AtomicU64::new(0),
            drained: Mutex::new(Instant::now()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Series {
    fn count(&self, status: u16, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn is(&self, d: &Destination<'_>) -> bool {
        self.service == d.service
            && self.namespace == d.namespace
            && self.lane == d.lane
            && self.subset == d.subset
    }
}

impl Traffic {
    /// Counts one request to `to` that took `elapsed` and ended with `status`
    /// (5xx is an error: the sidecar's own 502/503/504 for connection failures
    /// included).
    pub fn record(&self, to: &Destination<'_>, status: u16, elapsed: Duration) {
        let hash = self.hash(to);
        let table = self.table.load();
        // A known destination (all but the first request): no lock, no refcount.
        if let Some(series) = find(&table, hash, to) {
            series.count(status, elapsed);
            return;
        }
        drop(table);
        match self.add(hash, to) {
            Some(series) => series.count(status, elapsed),
            None => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn hash(&self, to: &Destination<'_>) -> u64 {
        self.hasher
            .hash_one((to.namespace, to.service, to.lane, to.subset))
    }

    /// Adds `to` under the insert lock (another request may have added it first);
    /// `None` when the table is full.
    fn add(&self, hash: u64, to: &Destination<'_>) -> Option<Arc<Series>> {
        let _insert = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        if let Some(series) = find(&current, hash, to) {
            return Some(Arc::clone(series));
        }
        if current.len >= MAX_SERIES {
            return None;
        }
        let series = Arc::new(Series {
            namespace: to.namespace.to_owned(),
            service: to.service.to_owned(),
            lane: to.lane.to_owned(),
            subset: to.subset.to_owned(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            idle: AtomicU32::new(0),
        });
        let mut by_hash = current.by_hash.clone();
        by_hash.entry(hash).or_default().push(Arc::clone(&series));
        self.table.store(Arc::new(Table {
            by_hash,
            len: current.len + 1,
        }));
        Some(series)
    }

    /// Takes every count since the last drain; `None` when there was no traffic.
    /// Series idle for `IDLE_REPORTS` drains leave the table (a request racing with
    /// their removal may go uncounted: it would have had to arrive after seconds of
    /// silence, in the microseconds of the swap).
    pub fn drain(&self) -> Option<TrafficReport> {
        let now = Instant::now();
        let since = std::mem::replace(
            &mut *self.drained.lock().unwrap_or_else(|e| e.into_inner()),
            now,
        );
        let table = self.table.load_full();
        let mut series = Vec::new();
        let mut idle = false;
        for s in table.by_hash.values().flatten() {
            // Requests first: a request recorded meanwhile lands whole in the next
            // report, or its error/bucket here and its request there (off by one
            // for one report, never lost).
            let requests = s.requests.swap(0, Ordering::Relaxed);
            if requests == 0 {
                idle |= s.idle.fetch_add(1, Ordering::Relaxed) + 1 >= IDLE_REPORTS;
                continue;
            }
            s.idle.store(0, Ordering::Relaxed);
            series.push(TrafficSeries {
                namespace: s.namespace.clone(),
                service: s.service.clone(),
                lane: s.lane.clone(),
                subset: s.subset.clone(),
                requests,
                errors: s.errors.swap(0, Ordering::Relaxed),
                latency_buckets: s
                    .buckets
                    .iter()
                    .map(|b| b.swap(0, Ordering::Relaxed))
                    .collect(),
            });
        }
        if idle {
            self.forget_idle();
        }
        let overflow_requests = self.overflow.swap(0, Ordering::Relaxed);
        if series.is_empty() && overflow_requests == 0 {
            return None;
        }
        Some(TrafficReport {
            interval_ms: u64::try_from(now.duration_since(since).as_millis()).unwrap_or(u64::MAX),
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            series,
            overflow_requests,
        })
    }

    fn forget_idle(&self) {
        let _insert = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        let mut table = Table::default();
        for (hash, all) in &current.by_hash {
            let kept: Vec<_> = all
                .iter()
                .filter(|s| s.idle.load(Ordering::Relaxed) < IDLE_REPORTS)
                .cloned()
                .collect();
            if !kept.is_empty() {
                table.len += kept.len();
                table.by_hash.insert(*hash, kept);
            }
        }
        self.table.store(Arc::new(table));
    }

    /// Series in the table now.
    pub fn len(&self) -> usize {
        self.table.load().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn find<'t>(table: &'t Table, hash: u64, to: &Destination<'_>) -> Option<&'t Arc<Series>> {
    table.by_hash.get(&hash)?.iter().find(|s| s.is(to))
}

#[cfg(test)]
mod tests;
