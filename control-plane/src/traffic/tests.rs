use graylane_proto::v1::{TrafficReport, TrafficSeries};

use super::*;

/// Every service is known (as a mesh service with an instance).
fn every(_: &TrafficSeries) -> bool {
    true
}

const T0: u64 = 1_000_000 * SLOT_MS;

fn series(service: &str, subset: &str, requests: u64, errors: u64) -> TrafficSeries {
    let mut latency_buckets = vec![0; BUCKETS];
    // All in (5, 7] ms.
    latency_buckets[4] = requests;
    TrafficSeries {
        namespace: "default".into(),
        service: service.into(),
        lane: "-".into(),
        subset: subset.into(),
        requests,
        errors,
        latency_buckets,
    }
}

fn report(series: Vec<TrafficSeries>) -> TrafficReport {
    TrafficReport {
        interval_ms: 5_000,
        latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        series,
        overflow_requests: 0,
    }
}

#[test]
fn reports_of_several_sidecars_merge_into_rows() {
    let traffic = Traffic::new(T0 - 600_000);
    traffic.record(&report(vec![series("api", "v1", 600, 0)]), T0, every);
    traffic.record(
        &report(vec![
            series("api", "v1", 300, 0),
            series("api", "v2", 100, 25),
        ]),
        T0 + 1_000,
        every,
    );
    let rows = traffic.rows(Duration::from_secs(300), T0 + 2_000);
    assert_eq!(rows.len(), 2);
    let (v1, v2) = (&rows[0], &rows[1]);
    assert_eq!((v1.subset.as_str(), v1.requests, v1.errors), ("v1", 900, 0));
    assert!((v1.rps - 3.0).abs() < 1e-9, "{}", v1.rps);
    assert_eq!(
        (v2.subset.as_str(), v2.requests, v2.errors),
        ("v2", 100, 25)
    );
    assert!((v2.error_rate - 0.25).abs() < 1e-9);
    let p50 = v2.p50_ms.unwrap();
    assert!((5.0..=7.0).contains(&p50), "{p50}");
}

#[test]
fn a_young_replica_divides_by_the_time_it_has_been_counting() {
    let traffic = Traffic::new(T0);
    traffic.record(
        &report(vec![series("api", "v1", 200, 0)]),
        T0 + 19_000,
        every,
    );
    let rows = traffic.rows(Duration::from_secs(300), T0 + 20_000);
    assert!((rows[0].rps - 10.0).abs() < 1e-9, "{}", rows[0].rps);
}

#[test]
fn a_histogram_with_other_bounds_keeps_its_counts_only() {
    let traffic = Traffic::new(T0);
    let mut r = report(vec![series("api", "v1", 10, 1)]);
    r.latency_bounds_ms = vec![1.0, 10.0];
    traffic.record(&r, T0, every);
    let mut short = report(vec![series("api", "v1", 10, 1)]);
    short.series[0].latency_buckets.truncate(3);
    traffic.record(&short, T0, every);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!((rows[0].requests, rows[0].errors), (20, 2));
    assert_eq!(rows[0].p50_ms, None);
}

#[test]
fn hostile_series_are_skipped() {
    let traffic = Traffic::new(T0);
    let long = "x".repeat(254);
    let mut bad = vec![series(&long, "v1", 5, 0), series("", "v1", 5, 0)];
    bad.extend((0..MAX_SERIES_PER_REPORT + 100).map(|i| series(&format!("s{i}"), "v1", 1, 0)));
    traffic.record(&report(bad), T0, every);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!(
        rows.len(),
        MAX_SERIES_PER_SIDECAR - 2,
        "one sidecar's report fills at most what its own table can hold"
    );
    assert!(
        rows.iter()
            .all(|r| r.service.len() <= MAX_NAME && !r.service.is_empty())
    );
    // Nothing skipped goes uncounted: the two bad names' 10 requests, and the 102
    // series past what one report may hold.
    let (_, _, dropped) = traffic.usage();
    assert_eq!(
        dropped,
        10 + (MAX_SERIES_PER_REPORT as u64 + 100 + 2 - MAX_SERIES_PER_SIDECAR as u64)
    );
}

/// Series of services that are not in the mesh are a credential's inventions: kept,
/// they would crowd out the real ones, which rollouts read.
#[test]
fn series_of_services_not_in_the_mesh_are_dropped_and_counted() {
    let traffic = Traffic::new(T0);
    let mesh = |s: &TrafficSeries| s.namespace == "default" && s.service == "api";
    let mut r = report(vec![series("api", "v1", 7, 0)]);
    r.series
        .extend((0..100).map(|i| series(&format!("made-up-{i}"), "v1", 3, 0)));
    traffic.record(&r, T0, mesh);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].service.as_str(), rows[0].requests), ("api", 7));
    assert_eq!(traffic.usage(), (1, 0, 300));
}

#[test]
fn the_series_bound_holds_across_sidecars() {
    let traffic = Traffic::with_max_series(3, T0);
    for i in 0..5 {
        traffic.record(
            &report(vec![series(&format!("s{i}"), "-", 2, 0)]),
            T0,
            every,
        );
    }
    assert_eq!(traffic.usage(), (3, 0, 4));
    let mut full = report(vec![]);
    full.overflow_requests = 6;
    traffic.record(&full, T0, every);
    assert_eq!(traffic.usage(), (3, 0, 10));
}

#[test]
fn rows_serialize_as_the_contract_says() {
    let traffic = Traffic::new(T0);
    traffic.record(&report(vec![series("api", "v1", 1, 0)]), T0, every);
    let json = serde_json::to_value(traffic.rows(Duration::from_secs(300), T0)).unwrap();
    let row = &json[0];
    for field in [
        "namespace",
        "service",
        "lane",
        "subset",
        "rps",
        "errorRate",
        "p50Ms",
        "p99Ms",
    ] {
        assert!(row.get(field).is_some(), "{field}: {row}");
    }
}

#[test]
fn windows_out_of_range_are_clamped_to_the_slots_kept() {
    let traffic = Traffic::new(T0 - 3_600_000);
    traffic.record(&report(vec![series("api", "v1", 9, 0)]), T0, every);
    traffic.record(
        &report(vec![series("api", "v1", 1, 0)]),
        T0 + 20 * 60_000,
        every,
    );
    let now = T0 + 20 * 60_000;
    // An hour asked, 15 minutes counted: the report of 20 minutes ago is out.
    let hour = traffic.rows(Duration::from_secs(3_600), now);
    assert_eq!(hour[0].requests, 1);
    assert!((hour[0].rps - 1.0 / 900.0).abs() < 1e-12);
    assert_eq!(traffic.rows(Duration::ZERO, now)[0].requests, 1);
}

#[test]
fn old_traffic_leaves_the_window() {
    let traffic = Traffic::new(T0 - 600_000);
    traffic.record(&report(vec![series("api", "v1", 50, 0)]), T0, every);
    let later = T0 + 120_000;
    assert_eq!(traffic.rows(Duration::from_secs(60), later), vec![]);
    assert_eq!(
        traffic.rows(Duration::from_secs(300), later)[0].requests,
        50
    );
}

#[test]
fn other_replicas_slots_add_to_rows_and_are_not_published_again() {
    let traffic = Traffic::new(T0 - 600_000);
    traffic.record(&report(vec![series("api", "v1", 30, 3)]), T0, every);
    let slot = T0 / SLOT_MS;
    traffic.merge_remote(&report(vec![series("api", "v1", 70, 7)]), slot - 1, T0);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!((rows[0].requests, rows[0].errors), (100, 10));
    let published = traffic.own_slot(slot).unwrap();
    assert_eq!(published.series.len(), 1);
    assert_eq!(published.series[0].requests, 30);
    assert_eq!(published.series[0].latency_buckets.len(), BUCKETS);
    assert_eq!(traffic.own_slot(slot - 1), None);
    // A published slot read back by another replica is the same counts.
    let other = Traffic::new(T0 - 600_000);
    other.merge_remote(&published, slot, T0);
    let rows = other.rows(Duration::from_secs(60), T0);
    assert_eq!((rows[0].requests, rows[0].errors), (30, 3));
    let p50 = rows[0].p50_ms.unwrap();
    assert!((5.0..=7.0).contains(&p50), "{p50}");
}

fn lane_series(service: &str, lane: &str, requests: u64, errors: u64) -> TrafficSeries {
    TrafficSeries {
        lane: lane.into(),
        ..series(service, "-", requests, errors)
    }
}

fn everything(_: &str, _: &str, _: &str, _: &str) -> bool {
    true
}

#[test]
fn a_reading_is_what_arrived_between_two_cumulatives() {
    let traffic = Traffic::new(T0);
    traffic.record(&report(vec![series("api", "v1", 100, 10)]), T0, every);
    let earlier = traffic.cumulative();
    traffic.record(&report(vec![series("api", "v1", 40, 2)]), T0 + 1_000, every);
    // Same slot as the first report: the 10 s slots cannot tell these apart.
    traffic.record(&report(vec![series("api", "v1", 10, 3)]), T0 + 2_000, every);
    let later = traffic.cumulative();
    let reading = later.reading_since(&earlier, everything);
    assert_eq!((reading.requests, reading.errors), (50, 5));
    assert!((reading.error_rate - 0.1).abs() < 1e-12, "{reading:?}");
    // Nothing in between: an empty reading, not NaN.
    let none = later.reading_since(&traffic.cumulative(), everything);
    assert_eq!(none, Reading::default());
    assert_eq!(none.error_rate, 0.0);
    // Since the very start: a default (empty) Cumulative.
    let all = later.reading_since(&Cumulative::default(), everything);
    assert_eq!((all.requests, all.errors), (150, 15));
}

#[test]
fn a_series_that_appears_between_two_readings_counts_whole() {
    let traffic = Traffic::new(T0);
    traffic.record(&report(vec![series("api", "v1", 5, 0)]), T0, every);
    let earlier = traffic.cumulative();
    traffic.record(&report(vec![series("api", "v2", 7, 1)]), T0 + 500, every);
    let reading = traffic.cumulative().reading_since(&earlier, everything);
    assert_eq!((reading.requests, reading.errors), (7, 1));
}

#[test]
fn the_filter_picks_the_lane_and_the_base_apart() {
    let traffic = Traffic::new(T0);
    let earlier = traffic.cumulative();
    traffic.record(
        &report(vec![
            lane_series("orders", "gray", 20, 4),
            lane_series("payments", "gray", 30, 0),
            lane_series("orders", "-", 200, 2),
            lane_series("search", "gray", 1_000, 1_000),
        ]),
        T0,
        every,
    );
    let later = traffic.cumulative();
    let services = ["orders", "payments"];
    let lane = later.reading_since(&earlier, |_, service, lane, _| {
        lane == "gray" && services.contains(&service)
    });
    let base = later.reading_since(&earlier, |_, service, lane, _| {
        lane != "gray" && services.contains(&service)
    });
    assert_eq!((lane.requests, lane.errors), (50, 4));
    assert!((lane.error_rate - 0.08).abs() < 1e-12);
    assert_eq!((base.requests, base.errors), (200, 2));
    let nobody = later.reading_since(&earlier, |_, _, _, _| false);
    assert_eq!(nobody, Reading::default());
}

#[test]
fn p99_comes_from_the_merged_histogram_of_the_interval() {
    let traffic = Traffic::new(T0);
    // Before the interval: slow requests that must not weigh on its p99.
    let mut slow = series("api", "v1", 100, 0);
    slow.latency_buckets = vec![0; BUCKETS];
    slow.latency_buckets[BUCKETS - 2] = 100;
    traffic.record(&report(vec![slow]), T0, every);
    let earlier = traffic.cumulative();
    // In it: 98 in (5, 7] ms from one sidecar, 2 in (500, 700] ms from another.
    traffic.record(&report(vec![series("api", "v1", 98, 0)]), T0 + 1_000, every);
    let mut tail = series("api", "v1", 2, 0);
    tail.latency_buckets = vec![0; BUCKETS];
    tail.latency_buckets[16] = 2;
    traffic.record(&report(vec![tail]), T0 + 1_500, every);
    let reading = traffic.cumulative().reading_since(&earlier, everything);
    assert_eq!(reading.requests, 100);
    let p99 = reading.p99_ms.unwrap();
    assert!((500.0..=700.0).contains(&p99), "{p99}");
    // Counts without a usable histogram: no p99 rather than a made-up one.
    let before = traffic.cumulative();
    let mut other_bounds = report(vec![series("api", "v1", 10, 0)]);
    other_bounds.latency_bounds_ms = vec![1.0];
    traffic.record(&other_bounds, T0 + 2_000, every);
    let reading = traffic.cumulative().reading_since(&before, everything);
    assert_eq!((reading.requests, reading.p99_ms), (10, None));
}

#[test]
fn hostile_counts_saturate_and_errors_never_exceed_requests() {
    let traffic = Traffic::new(T0);
    let earlier = traffic.cumulative();
    let mut huge = series("api", "v1", u64::MAX, u64::MAX);
    huge.latency_buckets[4] = u64::MAX;
    traffic.record(&report(vec![huge.clone()]), T0, every);
    traffic.record(&report(vec![huge]), T0 + 1, every);
    traffic.record(&report(vec![series("api", "v1", 3, 9)]), T0 + 2, every);
    let middle = traffic.cumulative();
    let reading = middle.reading_since(&earlier, everything);
    assert_eq!((reading.requests, reading.errors), (u64::MAX, u64::MAX));
    assert!((reading.error_rate - 1.0).abs() < 1e-12);
    // Saturated counts stand still: a later diff is 0, never a wrapped-around number.
    traffic.record(&report(vec![series("api", "v1", 5, 0)]), T0 + 3, every);
    let reading = traffic.cumulative().reading_since(&middle, everything);
    assert_eq!((reading.requests, reading.errors), (0, 0));
    // Two saturated series add up without overflowing.
    traffic.record(
        &report(vec![series("web", "v1", u64::MAX, 1)]),
        T0 + 4,
        every,
    );
    let both = traffic.cumulative().reading_since(&earlier, everything);
    assert_eq!((both.requests, both.errors), (u64::MAX, u64::MAX));
}

#[test]
fn a_diff_in_the_wrong_order_is_empty_not_wrapped() {
    let traffic = Traffic::new(T0);
    let earlier = traffic.cumulative();
    traffic.record(&report(vec![series("api", "v1", 10, 1)]), T0, every);
    let later = traffic.cumulative();
    let backwards = earlier.reading_since(&later, everything);
    assert_eq!(backwards, Reading::default());
}

#[test]
fn remote_slots_count_once_and_own_slots_are_not_counted_again() {
    let traffic = Traffic::new(T0);
    let earlier = traffic.cumulative();
    traffic.record(&report(vec![series("api", "v1", 30, 3)]), T0, every);
    let slot = T0 / SLOT_MS;
    traffic.merge_remote(&report(vec![series("api", "v1", 70, 7)]), slot - 1, T0);
    // Publishing this replica's slot reads it; it adds nothing here.
    let published = traffic.own_slot(slot).unwrap();
    let reading = traffic.cumulative().reading_since(&earlier, everything);
    assert_eq!((reading.requests, reading.errors), (100, 10));
    // The other replica counts the published slot once, when it merges it.
    let other = Traffic::new(T0);
    let before = other.cumulative();
    other.merge_remote(&published, slot, T0 + SLOT_MS + 1_000);
    let reading = other.cumulative().reading_since(&before, everything);
    assert_eq!((reading.requests, reading.errors), (30, 3));
    // Slots from long ago (what a replica reads at start) fill the window but not
    // the interval readings: all of it in one interval would be a made-up spike.
    let mid = other.cumulative();
    other.merge_remote(&report(vec![series("api", "v1", 4, 0)]), slot - 3, T0);
    other.merge_remote(&report(vec![series("api", "v1", 500, 0)]), slot - 60, T0);
    assert_eq!(
        other.cumulative().reading_since(&mid, everything).requests,
        4
    );
    let rows = other.rows(MAX_WINDOW, T0);
    assert_eq!(rows[0].requests, 30 + 4 + 500);
}

#[test]
fn cumulative_series_are_bounded_and_forgotten_when_idle() {
    let traffic = Traffic::with_max_series(2, T0);
    for i in 0..4 {
        traffic.record(
            &report(vec![series(&format!("s{i}"), "-", 1, 0)]),
            T0,
            every,
        );
    }
    let full = traffic.cumulative();
    assert_eq!(full.len(), 2, "series past the bound are not kept");
    let reading = full.reading_since(&Cumulative::default(), everything);
    assert_eq!(reading.requests, 2);
    // s0 keeps sending; s1 is idle for the whole window and leaves, making room.
    let later = T0 + (SLOTS as u64 - 1) * SLOT_MS;
    traffic.record(&report(vec![series("s0", "-", 1, 0)]), later, every);
    traffic.record(
        &report(vec![series("s2", "-", 5, 0)]),
        later + SLOT_MS,
        every,
    );
    let now = traffic.cumulative();
    assert_eq!(now.len(), 2);
    let s2 = now.reading_since(&full, |_, s, _, _| s == "s2");
    assert_eq!(s2.requests, 5);
    // s1 back after it was forgotten: counted from zero, not diffed against the
    // totals it had before (which would hide its first requests).
    traffic.record(
        &report(vec![series("s0", "-", 1, 0)]),
        later + 2 * SLOT_MS,
        every,
    );
    let back = later + (SLOTS as u64 + 1) * SLOT_MS;
    traffic.record(&report(vec![series("s1", "-", 100, 0)]), back, every);
    let s1 = traffic
        .cumulative()
        .reading_since(&full, |_, s, _, _| s == "s1");
    assert_eq!(s1.requests, 100);
}
