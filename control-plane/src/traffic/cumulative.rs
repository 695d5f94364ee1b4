//! Cumulative totals per series since this replica started, for readings over an
//! interval of any length: the rollout driver keeps the totals of its last reading and
//! diffs the next one against them, so `analysis.interval: 1s` needs no 1 s slots.
//!
//! ```text
//!  Traffic::record / merge_remote ─► Tally::add (series += counts, when it arrived)
//!  driver, every interval ─► Traffic::cumulative ─► later.reading_since(&earlier, keep)
//! ```
//!
//! A series forgotten (idle for the whole window) and seen again starts from zero
//! under a new `born` number, so a diff across that gap counts its new totals whole
//! instead of subtracting stale ones.

use std::collections::BTreeMap;

use super::histogram::{BUCKETS, quantile};
use super::window::{Counts, SLOT_MS, SLOTS, SeriesKey, Totals};

/// What every series has sent since this replica started (own sidecars' reports and
/// other replicas' merged slots, each request counted once, when it arrived here).
/// Diff two of them to get what arrived in between.
#[derive(Clone, Debug, Default)]
pub struct Cumulative {
    series: BTreeMap<SeriesKey, Entry>,
}

/// The readings of one side (lane or base) over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    pub requests: u64,
    /// At most `requests`.
    pub errors: u64,
    /// `errors / requests`, 0 when no requests.
    pub error_rate: f64,
    /// From the merged histogram; `None` when no request of the interval carried a
    /// usable one.
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Which incarnation of the series: numbered in the order series were first kept.
    born: u64,
    /// The newest slot it had requests in: idle for the whole window, it is forgotten.
    last_slot: u64,
    totals: Totals,
}

/// The live totals, bounded like the window.
pub(super) struct Tally {
    now: Cumulative,
    max_series: usize,
    /// The newest slot anything was added to: a new one sweeps out idle series.
    newest: u64,
    /// The next `born` number.
    next_born: u64,
}

impl Cumulative {
    /// What arrived between `earlier` and `self`, added up over the series that
    /// `keep(namespace, service, lane, subset)` selects. `earlier` should be an older
    /// reading of the same `Traffic`; a series missing from it, or forgotten and seen
    /// again since, counts whole. Sums saturate; errors never exceed requests.
    pub fn reading_since(
        &self,
        earlier: &Cumulative,
        keep: impl Fn(&str, &str, &str, &str) -> bool,
    ) -> Reading {
        let mut sum = Totals::default();
        for (key, entry) in &self.series {
            if !keep(&key.namespace, &key.service, &key.lane, &key.subset) {
                continue;
            }
            match earlier.series.get(key) {
                Some(before) if before.born == entry.born => {
                    sum.add(&difference(&entry.totals, &before.totals));
                }
                _ => sum.add(&entry.totals),
            }
        }
        let errors = sum.errors.min(sum.requests);
        Reading {
            requests: sum.requests,
            errors,
            error_rate: if sum.requests == 0 {
                0.0
            } else {
                errors as f64 / sum.requests as f64
            },
            p99_ms: quantile(&sum.buckets, 0.99),
        }
    }

    /// Series kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.series.len()
    }
}

impl Tally {
    pub(super) fn new(max_series: usize) -> Self {
        Self {
            now: Cumulative::default(),
            max_series,
            newest: 0,
            next_born: 0,
        }
    }

    /// A copy of the totals now.
    pub(super) fn snapshot(&self) -> Cumulative {
        self.now.clone()
    }

    /// Adds `counts` to `key`, arrived at `at_ms`. A new series past the bound is not
    /// kept (the window counts its requests as dropped).
    pub(super) fn add(&mut self, key: &SeriesKey, counts: &Counts<'_>, at_ms: u64) {
        let slot = at_ms / SLOT_MS;
        if slot > self.newest {
            self.newest = slot;
            self.sweep(slot);
        }
        let full = self.now.series.len() >= self.max_series;
        let entry = match self.now.series.get_mut(key) {
            Some(entry) => entry,
            None if full => return,
            None => {
                let born = self.next_born;
                self.next_born += 1;
                self.now.series.entry(key.clone()).or_insert(Entry {
                    born,
                    last_slot: slot,
                    totals: Totals::default(),
                })
            }
        };
        // Another replica's slot arrives after this replica's newer reports.
        entry.last_slot = entry.last_slot.max(slot);
        let totals = &mut entry.totals;
        totals.requests = totals.requests.saturating_add(counts.requests);
        totals.errors = totals
            .errors
            .saturating_add(counts.errors.min(counts.requests));
        if let Some(buckets) = counts.buckets {
            for (into, &n) in totals.buckets.iter_mut().zip(buckets) {
                *into = into.saturating_add(n);
            }
        }
    }

    /// Forgets series without requests in the slots the window keeps, as the window
    /// does: their memory is free for new ones.
    fn sweep(&mut self, current: u64) {
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.now.series.retain(|_, entry| entry.last_slot >= oldest);
    }
}

/// `later - earlier`, per count (0 where a saturated count stood still).
fn difference(later: &Totals, earlier: &Totals) -> Totals {
    let mut buckets = [0; BUCKETS];
    for ((out, &l), &e) in buckets.iter_mut().zip(&later.buckets).zip(&earlier.buckets) {
        *out = l.saturating_sub(e);
    }
    Totals {
        requests: later.requests.saturating_sub(earlier.requests),
        errors: later.errors.saturating_sub(earlier.errors),
        buckets,
    }
}
