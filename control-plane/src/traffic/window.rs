//! The sliding window: per series, a ring of fixed time slots; a report adds to the
//! slot of the time it arrived, a query adds up the slots inside its window.

use std::collections::HashMap;

use super::histogram::BUCKETS;

/// One slot's length.
pub(crate) const SLOT_MS: u64 = 10_000;
/// Slots kept: 16 minutes, so a 15-minute window is always whole.
pub(crate) const SLOTS: usize = 96;

/// (namespace, service, lane, subset) of a destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SeriesKey {
    pub(crate) namespace: String,
    pub(crate) service: String,
    pub(crate) lane: String,
    pub(crate) subset: String,
}

/// Counts of one series in one slot. Mesh-wide per 10 s, u32 is ample; additions
/// saturate rather than wrap (a hostile sidecar can claim any count).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which slot (time / SLOT_MS) these counts are of; an older id is stale.
    id: u64,
    requests: u64,
    errors: u64,
    buckets: [u32; BUCKETS],
}

/// What a series sent during a query's window.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) buckets: [u64; BUCKETS],
}

impl Totals {
    pub(crate) fn add(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (into, &n) in self.buckets.iter_mut().zip(&other.buckets) {
            *into = into.saturating_add(n);
        }
    }
}

/// One report's counts for one series.
pub(crate) struct Counts<'a> {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// `None`: the report's histogram was unusable (other bounds, wrong length).
    pub(crate) buckets: Option<&'a [u64]>,
}

/// Every series' ring; at most `max_series` of them.
pub(crate) struct Window {
    series: HashMap<SeriesKey, Box<[Slot; SLOTS]>>,
    max_series: usize,
    /// Requests of series refused because the table was full, since start.
    pub(crate) dropped: u64,
    /// The newest slot anything was added to: a new one sweeps out idle series.
    newest: u64,
}

impl Window {
    pub(crate) fn new(max_series: usize) -> Self {
        Self {
            series: HashMap::new(),
            max_series,
            dropped: 0,
            newest: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    /// Adds `counts` to `key`'s slot of `now_ms`. A new series past the bound is
    /// refused (`false`) and its requests counted in `dropped`.
    pub(crate) fn add(&mut self, key: &SeriesKey, counts: &Counts<'_>, now_ms: u64) -> bool {
        let id = now_ms / SLOT_MS;
        if id > self.newest {
            self.newest = id;
            self.sweep(id);
        }
        let max = self.max_series;
        let len = self.series.len();
        let ring = match self.series.get_mut(key) {
            Some(ring) => ring,
            None if len >= max => {
                self.dropped = self.dropped.saturating_add(counts.requests);
                return false;
            }
            None => self
                .series
                .entry(key.clone())
                .or_insert_with(|| Box::new([Slot::default(); SLOTS])),
        };
        let slot = &mut ring[slot_index(id)];
        // A late slot (another replica's, published after this ring moved past it)
        // must not wipe newer counts.
        if slot.id > id {
            return true;
        }
        if slot.id != id {
            *slot = Slot {
                id,
                ..Slot::default()
            };
        }
        slot.requests = slot.requests.saturating_add(counts.requests);
        slot.errors = slot
            .errors
            .saturating_add(counts.errors.min(counts.requests));
        if let Some(buckets) = counts.buckets {
            for (into, &n) in slot.buckets.iter_mut().zip(buckets) {
                *into = into.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        true
    }

    /// Each series' totals over the last `slots` slots up to `now_ms`'s (at most all
    /// kept); series without a request in them are left out.
    pub(crate) fn totals(&self, slots: usize, now_ms: u64) -> Vec<(&SeriesKey, Totals)> {
        let current = now_ms / SLOT_MS;
        let oldest = current.saturating_sub(slots.min(SLOTS) as u64 - 1);
        let mut out = Vec::new();
        for (key, ring) in &self.series {
            let mut totals = Totals::default();
            for slot in ring.iter().filter(|s| (oldest..=current).contains(&s.id)) {
                totals.requests = totals.requests.saturating_add(slot.requests);
                totals.errors = totals.errors.saturating_add(slot.errors);
                for (into, &n) in totals.buckets.iter_mut().zip(&slot.buckets) {
                    *into = into.saturating_add(u64::from(n));
                }
            }
            if totals.requests > 0 {
                out.push((key, totals));
            }
        }
        out
    }

    /// Forgets series with no slot inside the kept window: their memory is free for
    /// new ones.
    fn sweep(&mut self, current: u64) {
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.series
            .retain(|_, ring| ring.iter().any(|s| s.id >= oldest && s.requests > 0));
    }
}

fn slot_index(id: u64) -> usize {
    // SLOTS fits in u64 and the remainder is below it.
    usize::try_from(id % SLOTS as u64).expect("below SLOTS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str) -> SeriesKey {
        SeriesKey {
            namespace: "default".into(),
            service: service.into(),
            lane: "-".into(),
            subset: "-".into(),
        }
    }

    fn counts(requests: u64, errors: u64) -> Counts<'static> {
        Counts {
            requests,
            errors,
            buckets: None,
        }
    }

    const T0: u64 = 1_000_000 * SLOT_MS;

    #[test]
    fn reports_in_one_slot_add_up() {
        let mut w = Window::new(10);
        w.add(&key("a"), &counts(10, 1), T0);
        w.add(&key("a"), &counts(5, 2), T0 + 1_000);
        let totals = w.totals(1, T0 + 2_000);
        assert_eq!(totals.len(), 1);
        assert_eq!((totals[0].1.requests, totals[0].1.errors), (15, 3));
    }

    #[test]
    fn a_query_sees_only_the_slots_of_its_window() {
        let mut w = Window::new(10);
        w.add(&key("a"), &counts(100, 0), T0);
        w.add(&key("a"), &counts(7, 0), T0 + 5 * SLOT_MS);
        let now = T0 + 5 * SLOT_MS;
        assert_eq!(w.totals(1, now)[0].1.requests, 7);
        assert_eq!(w.totals(6, now)[0].1.requests, 107);
    }

    #[test]
    fn a_slot_reused_by_the_ring_starts_from_zero() {
        let mut w = Window::new(10);
        w.add(&key("a"), &counts(100, 0), T0);
        // The same ring position, one lap later: the old counts are not added to.
        w.add(&key("b"), &counts(1, 0), T0 + 50 * SLOT_MS);
        w.add(&key("a"), &counts(3, 0), T0 + SLOTS as u64 * SLOT_MS);
        let totals = w.totals(SLOTS, T0 + SLOTS as u64 * SLOT_MS);
        let a = totals.iter().find(|(k, _)| k.service == "a").unwrap();
        assert_eq!(a.1.requests, 3);
    }

    #[test]
    fn a_late_slot_never_wipes_a_newer_one() {
        let mut w = Window::new(10);
        w.add(&key("a"), &counts(5, 0), T0 + SLOTS as u64 * SLOT_MS);
        // The same ring position, one lap earlier.
        w.add(&key("a"), &counts(100, 0), T0);
        let totals = w.totals(SLOTS, T0 + SLOTS as u64 * SLOT_MS);
        assert_eq!(totals[0].1.requests, 5);
    }

    #[test]
    fn errors_never_exceed_requests() {
        let mut w = Window::new(10);
        w.add(&key("a"), &counts(2, 9), T0);
        assert_eq!(w.totals(1, T0)[0].1.errors, 2);
    }

    #[test]
    fn past_the_bound_new_series_are_dropped_and_counted() {
        let mut w = Window::new(2);
        w.add(&key("a"), &counts(1, 0), T0);
        w.add(&key("b"), &counts(1, 0), T0);
        w.add(&key("c"), &counts(4, 0), T0);
        // Known series still count.
        w.add(&key("a"), &counts(1, 0), T0);
        assert_eq!(w.len(), 2);
        assert_eq!(w.dropped, 4);
        assert_eq!(w.totals(1, T0).len(), 2);
    }

    #[test]
    fn idle_series_leave_and_make_room() {
        let mut w = Window::new(1);
        w.add(&key("a"), &counts(1, 0), T0);
        // A whole window later `a` is gone, so `b` fits.
        w.add(&key("b"), &counts(1, 0), T0 + SLOTS as u64 * SLOT_MS);
        assert_eq!(w.len(), 1);
        assert_eq!(w.dropped, 0);
    }

    #[test]
    fn histograms_add_and_saturate() {
        let mut w = Window::new(1);
        let mut buckets = [0u64; BUCKETS];
        buckets[3] = u64::MAX;
        let c = Counts {
            requests: u64::MAX,
            errors: 0,
            buckets: Some(&buckets),
        };
        w.add(&key("a"), &c, T0);
        w.add(&key("a"), &c, T0);
        let totals = w.totals(1, T0);
        assert_eq!(totals[0].1.requests, u64::MAX);
        assert_eq!(totals[0].1.buckets[3], u64::from(u32::MAX));
    }
}
