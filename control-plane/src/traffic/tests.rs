use graylane_proto::v1::{TrafficReport, TrafficSeries};

use super::*;

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
    traffic.record(&report(vec![series("api", "v1", 600, 0)]), T0);
    traffic.record(
        &report(vec![
            series("api", "v1", 300, 0),
            series("api", "v2", 100, 25),
        ]),
        T0 + 1_000,
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
    traffic.record(&report(vec![series("api", "v1", 200, 0)]), T0 + 19_000);
    let rows = traffic.rows(Duration::from_secs(300), T0 + 20_000);
    assert!((rows[0].rps - 10.0).abs() < 1e-9, "{}", rows[0].rps);
}

#[test]
fn a_histogram_with_other_bounds_keeps_its_counts_only() {
    let traffic = Traffic::new(T0);
    let mut r = report(vec![series("api", "v1", 10, 1)]);
    r.latency_bounds_ms = vec![1.0, 10.0];
    traffic.record(&r, T0);
    let mut short = report(vec![series("api", "v1", 10, 1)]);
    short.series[0].latency_buckets.truncate(3);
    traffic.record(&short, T0);
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
    traffic.record(&report(bad), T0);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!(rows.len(), MAX_SERIES_PER_REPORT - 2);
    assert!(
        rows.iter()
            .all(|r| r.service.len() <= MAX_NAME && !r.service.is_empty())
    );
}

#[test]
fn the_series_bound_holds_across_sidecars() {
    let traffic = Traffic::with_max_series(3, T0);
    for i in 0..5 {
        traffic.record(&report(vec![series(&format!("s{i}"), "-", 2, 0)]), T0);
    }
    assert_eq!(traffic.usage(), (3, 0, 4));
    let mut full = report(vec![]);
    full.overflow_requests = 6;
    traffic.record(&full, T0);
    assert_eq!(traffic.usage(), (3, 0, 10));
}

#[test]
fn rows_serialize_as_the_contract_says() {
    let traffic = Traffic::new(T0);
    traffic.record(&report(vec![series("api", "v1", 1, 0)]), T0);
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
    traffic.record(&report(vec![series("api", "v1", 9, 0)]), T0);
    traffic.record(&report(vec![series("api", "v1", 1, 0)]), T0 + 20 * 60_000);
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
    traffic.record(&report(vec![series("api", "v1", 50, 0)]), T0);
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
    traffic.record(&report(vec![series("api", "v1", 30, 3)]), T0);
    let slot = T0 / SLOT_MS;
    traffic.merge_remote(&report(vec![series("api", "v1", 70, 7)]), slot - 1);
    let rows = traffic.rows(Duration::from_secs(60), T0);
    assert_eq!((rows[0].requests, rows[0].errors), (100, 10));
    let published = traffic.own_slot(slot).unwrap();
    assert_eq!(published.series.len(), 1);
    assert_eq!(published.series[0].requests, 30);
    assert_eq!(published.series[0].latency_buckets.len(), BUCKETS);
    assert_eq!(traffic.own_slot(slot - 1), None);
    // A published slot read back by another replica is the same counts.
    let other = Traffic::new(T0 - 600_000);
    other.merge_remote(&published, slot);
    let rows = other.rows(Duration::from_secs(60), T0);
    assert_eq!((rows[0].requests, rows[0].errors), (30, 3));
    let p50 = rows[0].p50_ms.unwrap();
    assert!((5.0..=7.0).contains(&p50), "{p50}");
}
