//! Traffic per destination (namespace, service, lane, subset), from the sidecars'
//! `TrafficReport`s on their discovery streams: a sliding window of 16 minutes in
//! 10-second slots, answering `GET /api/v1/traffic?window=5m`.
//!
//! ```text
//!  sidecar ─ TrafficReport ─► Stream::answer ─► Traffic::record ─┬► Window (slot of now)
//!   (every 5 s; under a rollout, the snapshot's period)           └► Tally (since start)
//!  rollout driver, every interval ─► Traffic::cumulative ─► Cumulative::reading_since
//!  GET /api/v1/traffic?window=5m ─► handler ─► Traffic::rows: rps, errorRate, p50/p99
//! ```
//!
//! Bounded: at most `MAX_SERIES` series (each ~11 KiB: 96 slots of counts and a
//! 24-bucket histogram, so ~45 MiB at the bound), whatever the number of sidecars. A
//! new series past the bound is not kept (its requests are counted in `dropped`);
//! a series idle for the whole window is forgotten, freeing its place.
//!
//! `Traffic::cumulative` gives every series' totals since start (`cumulative`): the
//! rollout driver diffs two of them for a reading over exactly its interval, however
//! short (10 s slots could not answer a 1 s interval).
//!
//! With etcd replicas, each publishes its own sidecars' completed slots and reads
//! the others' (`replicas`), so any replica answers for the whole mesh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graylane_proto::v1::{TrafficReport, TrafficSeries};
use serde::Serialize;

use crate::http::TrafficHandler;
use crate::push::Hub;

mod cumulative;
mod histogram;
mod replicas;
mod window;

pub use self::cumulative::{Cumulative, Reading};
pub use self::replicas::Replicas;

use self::cumulative::Tally;
use self::histogram::{BUCKETS, LATENCY_BOUNDS_MS, quantile};
use self::window::{Counts, SLOT_MS, SLOTS, SeriesKey, Totals, Window};

/// Series kept mesh-wide (namespace × service × lane × subset).
pub const MAX_SERIES: usize = 4_096;
/// Series read from one report: another replica's slot holds at most `MAX_SERIES`.
const MAX_SERIES_PER_REPORT: usize = MAX_SERIES;
/// Series read from one sidecar's report: it keeps at most 2,000 itself (more are its
/// overflow), so one credential cannot take the whole table in one report.
const MAX_SERIES_PER_SIDECAR: usize = 2_000;
/// The longest name a series may carry (a DNS name).
const MAX_NAME: usize = 253;
/// How long after its start another replica's slot still counts in the cumulative
/// totals: published a second after its end, then a watch event away.
const REMOTE_FRESH_MS: u64 = 3 * SLOT_MS;
/// The longest window answered.
pub const MAX_WINDOW: Duration = Duration::from_secs(900);

/// One row of `/api/v1/traffic`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub service: String,
    pub lane: String,
    pub subset: String,
    /// Requests per second over the window (or over the time this replica has been
    /// up, when that is shorter).
    pub rps: f64,
    /// Errors / requests, 0..=1.
    pub error_rate: f64,
    /// From the merged histogram; `None` when no report carried a usable one.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The counts behind `rps` and `errorRate`.
    pub requests: u64,
    pub errors: u64,
}

/// The windows of every series: this replica's sidecars' reports, and (with etcd
/// replicas) the other replicas' published slots.
pub struct Traffic {
    windows: Mutex<Windows>,
    /// When this replica started counting: a window reaching further back is shorter.
    started_ms: u64,
}

struct Windows {
    /// What this replica's own sidecars reported: the part it publishes.
    own: Window,
    /// Other replicas' slots (`replicas`), kept apart so they are never published
    /// again; each bounded by `MAX_SERIES` on its own.
    remote: Window,
    /// Both of them since start, added up per series: only series one of them keeps,
    /// so at most twice `MAX_SERIES`.
    tally: Tally,
}

impl Traffic {
    pub fn new(now_ms: u64) -> Self {
        Self::with_max_series(MAX_SERIES, now_ms)
    }

    pub(crate) fn with_max_series(max_series: usize, now_ms: u64) -> Self {
        Self {
            windows: Mutex::new(Windows {
                own: Window::new(max_series),
                remote: Window::new(max_series),
                tally: Tally::new(max_series.saturating_mul(2)),
            }),
            started_ms: now_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Windows> {
        // Every update is a few additions: a poisoned lock still holds usable counts.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one sidecar's report to the slot of `now_ms`. Never fails: series with
    /// over-long names are skipped, a histogram with other bounds or length is
    /// ignored (counts kept), series past `MAX_SERIES_PER_SIDECAR` are dropped, and
    /// so are series `known` refuses (`State::could_report`: a service, lane or subset
    /// no sidecar reports under the rules): a sidecar credential could otherwise fill
    /// the table with made-up names and leave the real traffic, which rollouts read,
    /// out of it. What is skipped is counted in the dropped requests.
    pub fn record(
        &self,
        report: &TrafficReport,
        now_ms: u64,
        known: impl Fn(&TrafficSeries) -> bool,
    ) {
        let mut windows = self.lock();
        let Windows { own, tally, .. } = &mut *windows;
        let unknown = add_report(
            own,
            Some(tally),
            report,
            now_ms,
            MAX_SERIES_PER_SIDECAR,
            known,
        );
        // And a sidecar whose own table was full: those requests are in no series.
        own.dropped = own
            .dropped
            .saturating_add(report.overflow_requests)
            .saturating_add(unknown);
    }

    /// Adds another replica's slot `slot` (checked as a sidecar's report is), read at
    /// `now_ms`. Each slot must be merged once (`replicas` remembers which it read).
    /// A slot older than `REMOTE_FRESH_MS` fills the window but not the cumulative
    /// totals: those are the up-to-16 minutes read at start (or published late after
    /// an etcd outage), and counting them "now" would put all of it in one interval.
    pub(crate) fn merge_remote(&self, report: &TrafficReport, slot: u64, now_ms: u64) {
        let at_ms = slot * SLOT_MS;
        let fresh = at_ms.saturating_add(REMOTE_FRESH_MS) >= now_ms;
        let mut windows = self.lock();
        let Windows { remote, tally, .. } = &mut *windows;
        // Checked by the replica that received it.
        let every = |_: &TrafficSeries| true;
        add_report(
            remote,
            fresh.then_some(tally),
            report,
            at_ms,
            MAX_SERIES_PER_REPORT,
            every,
        );
    }

    /// Every series' totals since this replica started: diff two with
    /// `Cumulative::reading_since` for what arrived in between. Other replicas'
    /// traffic arrives a slot at a time, up to ~11 s after it happened. Copies every
    /// series kept (at most `MAX_SERIES`, ~200 bytes each).
    pub fn cumulative(&self) -> Cumulative {
        self.lock().tally.snapshot()
    }

    /// What this replica's own sidecars reported during slot `slot`, to publish;
    /// `None` when nothing.
    pub(crate) fn own_slot(&self, slot: u64) -> Option<TrafficReport> {
        let windows = self.lock();
        let series: Vec<TrafficSeries> = windows
            .own
            .totals(1, slot * SLOT_MS)
            .into_iter()
            .map(|(key, totals)| TrafficSeries {
                namespace: key.namespace.clone(),
                service: key.service.clone(),
                lane: key.lane.clone(),
                subset: key.subset.clone(),
                requests: totals.requests,
                errors: totals.errors,
                latency_buckets: totals.buckets.to_vec(),
            })
            .collect();
        (!series.is_empty()).then(|| TrafficReport {
            interval_ms: SLOT_MS,
            latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
            series,
            overflow_requests: 0,
        })
    }

    /// Every series with requests in the last `window` (rounded up to whole slots,
    /// at most 15 minutes), ordered by namespace, service, lane, subset. Other
    /// replicas' traffic counts from their last published slot (up to ~11 s behind).
    pub fn rows(&self, window: Duration, now_ms: u64) -> Vec<Row> {
        let window = window.min(MAX_WINDOW);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let slots = usize::try_from(window_ms.div_ceil(SLOT_MS).max(1)).unwrap_or(SLOTS);
        // Never divide by more time than this replica has been counting, nor by less
        // than a slot (a report covers up to 5 s of traffic before it arrives).
        let covered_ms = window_ms
            .min(now_ms.saturating_sub(self.started_ms))
            .max(SLOT_MS);
        let seconds = covered_ms as f64 / 1000.0;
        let mut merged: BTreeMap<SeriesKey, Totals> = BTreeMap::new();
        {
            let windows = self.lock();
            let own = windows.own.totals(slots, now_ms);
            for (key, totals) in own.into_iter().chain(windows.remote.totals(slots, now_ms)) {
                merged.entry(key.clone()).or_default().add(&totals);
            }
        }
        // BTreeMap order: namespace, service, lane, subset.
        merged
            .into_iter()
            .map(|(key, totals)| Row {
                rps: totals.requests as f64 / seconds,
                error_rate: totals.errors as f64 / totals.requests as f64,
                p50_ms: quantile(&totals.buckets, 0.5),
                p99_ms: quantile(&totals.buckets, 0.99),
                requests: totals.requests,
                errors: totals.errors,
                namespace: key.namespace,
                service: key.service,
                lane: key.lane,
                subset: key.subset,
            })
            .collect()
    }

    /// Series kept now (own, other replicas'), and requests in no series since start
    /// (a table full here, or in the sidecar that reported them).
    pub fn usage(&self) -> (usize, usize, u64) {
        let windows = self.lock();
        let dropped = windows.own.dropped.saturating_add(windows.remote.dropped);
        (windows.own.len(), windows.remote.len(), dropped)
    }
}

/// One report into `window` (and `tally`, if any) at `at_ms`; see `Traffic::record`
/// for what is skipped. Returns the requests of series past `limit` or of services
/// not `known`.
fn add_report(
    window: &mut Window,
    mut tally: Option<&mut Tally>,
    report: &TrafficReport,
    at_ms: u64,
    limit: usize,
    known: impl Fn(&TrafficSeries) -> bool,
) -> u64 {
    let usable_histograms = report.latency_bounds_ms == LATENCY_BOUNDS_MS;
    let mut unknown: u64 = report
        .series
        .iter()
        .skip(limit)
        .fold(0, |n, s| n.saturating_add(s.requests));
    for series in report.series.iter().take(limit) {
        let names = [
            &series.namespace,
            &series.service,
            &series.lane,
            &series.subset,
        ];
        if series.requests == 0 {
            continue;
        }
        if names.iter().any(|n| n.is_empty() || n.len() > MAX_NAME) || !known(series) {
            unknown = unknown.saturating_add(series.requests);
            continue;
        }
        let buckets = (usable_histograms && series.latency_buckets.len() == BUCKETS)
            .then_some(series.latency_buckets.as_slice());
        let key = SeriesKey {
            namespace: series.namespace.clone(),
            service: series.service.clone(),
            lane: series.lane.clone(),
            subset: series.subset.clone(),
        };
        let counts = Counts {
            requests: series.requests,
            errors: series.errors,
            buckets,
        };
        // Only series the window keeps: the totals are bounded as it is.
        if window.add(&key, &counts, at_ms)
            && let Some(tally) = tally.as_deref_mut()
        {
            tally.add(&key, &counts, at_ms);
        }
    }
    unknown
}

/// `GET /api/v1/traffic?window=…` for the HTTP router (which parses the window):
/// the rows of the hub's reports as the contract's JSON array. A window shorter than
/// a slot counts one slot; one over 15 minutes counts 15 minutes.
pub fn handler(hub: Arc<Hub>) -> TrafficHandler {
    Arc::new(move |window| {
        let now_ms = u64::try_from(crate::now_ms()).unwrap_or(0);
        let rows = hub.traffic.rows(window, now_ms);
        // Plain structs of strings and numbers; to_value fails only on a non-string
        // map key, which `Row` has none of.
        serde_json::to_value(rows).unwrap_or_else(|_| serde_json::Value::Array(Vec::new()))
    })
}

#[cfg(test)]
mod tests;
