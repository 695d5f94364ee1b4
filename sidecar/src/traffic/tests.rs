use super::*;

fn to<'a>(service: &'a str, subset: &'a str) -> Destination<'a> {
    Destination {
        namespace: "default",
        service,
        lane: "-",
        subset,
    }
}

fn by_subset(report: &TrafficReport, subset: &str) -> TrafficSeries {
    report
        .series
        .iter()
        .find(|s| s.subset == subset)
        .cloned()
        .unwrap()
}

#[test]
fn requests_errors_and_latencies_are_counted_per_destination() {
    let traffic = Traffic::default();
    for i in 0..10 {
        let status = if i < 3 { 500 } else { 200 };
        traffic.record(&to("api", "v2"), status, Duration::from_millis(6));
    }
    traffic.record(&to("api", "v1"), 404, Duration::from_secs(60));
    let report = traffic.drain().unwrap();
    assert_eq!(report.latency_bounds_ms, LATENCY_BOUNDS_MS);
    let v2 = by_subset(&report, "v2");
    assert_eq!((v2.requests, v2.errors), (10, 3));
    assert_eq!(v2.latency_buckets.len(), BUCKETS);
    // 6 ms is in (5, 7].
    assert_eq!(v2.latency_buckets[4], 10);
    let v1 = by_subset(&report, "v1");
    assert_eq!((v1.requests, v1.errors), (1, 0));
    assert_eq!(v1.latency_buckets[BUCKETS - 1], 1);
}

#[test]
fn a_bucket_holds_its_upper_bound() {
    let traffic = Traffic::default();
    traffic.record(&to("api", "-"), 200, Duration::from_millis(1));
    traffic.record(&to("api", "-"), 200, Duration::from_micros(1_001));
    let report = traffic.drain().unwrap();
    assert_eq!(&report.series[0].latency_buckets[..2], &[1, 1]);
}

#[test]
fn a_drain_takes_the_counts_and_an_idle_one_reports_nothing() {
    let traffic = Traffic::default();
    traffic.record(&to("api", "-"), 200, Duration::ZERO);
    assert!(traffic.drain().is_some());
    assert_eq!(traffic.drain(), None);
}

#[test]
fn idle_series_leave_the_table() {
    let traffic = Traffic::default();
    traffic.record(&to("api", "-"), 200, Duration::ZERO);
    traffic.drain();
    assert_eq!(traffic.len(), 1);
    traffic.drain();
    traffic.drain();
    assert!(traffic.is_empty());
    // And come back when they are called again.
    traffic.record(&to("api", "-"), 200, Duration::ZERO);
    assert_eq!(traffic.drain().unwrap().series[0].requests, 1);
}

#[test]
fn past_the_bound_requests_are_counted_as_overflow() {
    let traffic = Traffic::default();
    let names: Vec<String> = (0..MAX_SERIES + 5).map(|i| format!("s{i}")).collect();
    for name in &names {
        traffic.record(&to(name, "-"), 200, Duration::ZERO);
    }
    // A known series still counts once the table is full.
    traffic.record(&to("s0", "-"), 200, Duration::ZERO);
    assert_eq!(traffic.len(), MAX_SERIES);
    let report = traffic.drain().unwrap();
    assert_eq!(report.series.len(), MAX_SERIES);
    assert_eq!(report.overflow_requests, 5);
    assert_eq!(
        report.series.iter().map(|s| s.requests).sum::<u64>(),
        MAX_SERIES as u64 + 1
    );
}

#[test]
fn concurrent_requests_are_all_counted() {
    let traffic = Arc::new(Traffic::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let traffic = Arc::clone(&traffic);
            std::thread::spawn(move || {
                for i in 0..1_000 {
                    let subset = if i % 2 == 0 { "a" } else { "b" };
                    let status = if t == 0 { 503 } else { 200 };
                    traffic.record(&to("api", subset), status, Duration::from_millis(2));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = traffic.drain().unwrap();
    let total: u64 = report.series.iter().map(|s| s.requests).sum();
    let errors: u64 = report.series.iter().map(|s| s.errors).sum();
    assert_eq!((total, errors), (4_000, 1_000));
}
