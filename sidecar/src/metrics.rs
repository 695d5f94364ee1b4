//! Request metrics for `/metrics` (Prometheus text), RED per lane: count and latency
//! by direction, destination service, subset, lane and status (errors are the 5xx
//! series); requests in flight; invalid tags.
//!
//! Label values come from the routing table (services, subsets, lane names), never
//! from raw request input, so a client cannot grow the series without bound: a tag
//! that names no lane is counted as `other`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    pub service: String,
    /// The subset that served, `-` when no RoutePolicy names one.
    pub subset: String,
    /// The lane of the request's tag, `-` untagged, `other` for a tag no lane declares.
    pub lane: String,
    pub status: u16,
}

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The sidecar's request metrics.
#[derive(Default)]
pub struct Metrics {
    in_flight: AtomicI64,
    pub invalid_tags: AtomicU64,
    /// Intercepted connections that were not HTTP, tunnelled as TCP.
    pub tunnels: AtomicU64,
    series: Mutex<BTreeMap<Key, Series>>,
    pub inbound_connections: Arc<Connections>,
    pub outbound_connections: Arc<Connections>,
}

/// Connection counters of one listener.
#[derive(Default)]
pub struct Connections {
    pub accepted: AtomicU64,
    /// Closed at once: over `--max-connections`.
    pub refused: AtomicU64,
    /// Failed accepts (e.g. EMFILE: out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Closed for sending no complete request head within the header-read timeout.
    pub header_timeouts: AtomicU64,
    /// Closed for cancelling most of their requests before the answer (rapid reset).
    pub reset_abuse: AtomicU64,
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Marks a request in flight for as long as the guard lives.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records one answered request and how long it took until its response head.
    pub fn record(&self, key: Key, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        // Poisoning only means another thread panicked mid-update of a counter.
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let s = series.entry(key).or_default();
        s.count += 1;
        s.sum += seconds;
        for (bucket, bound) in s.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// Appends the Prometheus text of every series.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP graylane_sidecar_requests_in_flight Requests being proxied now.\n# TYPE graylane_sidecar_requests_in_flight gauge\ngraylane_sidecar_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP graylane_invalid_tag_total Gray-Publish values outside the tag grammar, removed.\n# TYPE graylane_invalid_tag_total counter\ngraylane_invalid_tag_total {}",
            self.invalid_tags.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP graylane_tcp_tunnels_total Intercepted connections that were not HTTP, passed through as TCP.\n# TYPE graylane_tcp_tunnels_total counter\ngraylane_tcp_tunnels_total {}",
            self.tunnels.load(Ordering::Relaxed)
        );
        self.render_connections(out);
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP graylane_sidecar_requests_total Requests answered.\n# TYPE graylane_sidecar_requests_total counter"
        );
        for (k, s) in series.iter() {
            let _ = writeln!(
                out,
                "graylane_sidecar_requests_total{{{}}} {}",
                labels(k),
                s.count
            );
        }
        let name = "graylane_sidecar_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to the response head.\n# TYPE {name} histogram"
        );
        for (k, s) in series.iter() {
            let l = labels(k);
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{l},le=\"+Inf\"}} {}\n{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}",
                s.count, s.sum, s.count
            );
        }
    }
}

impl Metrics {
    fn render_connections(&self, out: &mut String) {
        let listeners = [
            ("inbound", &self.inbound_connections),
            ("outbound", &self.outbound_connections),
        ];
        let counters: [(&str, &str, fn(&Connections) -> &AtomicU64); 5] = [
            (
                "graylane_connections_accepted_total",
                "Connections accepted.",
                |c| &c.accepted,
            ),
            (
                "graylane_connections_refused_total",
                "Connections closed at once: over --max-connections.",
                |c| &c.refused,
            ),
            (
                "graylane_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors); each backs off.",
                |c| &c.accept_errors,
            ),
            (
                "graylane_header_timeouts_total",
                "Connections closed for no complete request head within --header-read-timeout.",
                |c| &c.header_timeouts,
            ),
            (
                "graylane_connections_reset_abuse_total",
                "Connections closed for cancelling most of their requests before the answer (rapid reset).",
                |c| &c.reset_abuse,
            ),
        ];
        for (name, help, field) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (listener, c) in listeners {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{listener}\"}} {}",
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
    }
}

fn labels(k: &Key) -> String {
    // Values are service names, subset names and tags: no quotes or backslashes.
    format!(
        "direction=\"{}\",service=\"{}\",subset=\"{}\",lane=\"{}\",status=\"{}\"",
        k.direction, k.service, k.subset, k.lane, k.status
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(status: u16) -> Key {
        Key {
            direction: "outbound",
            service: "orders".into(),
            subset: "v2".into(),
            lane: "gray".into(),
            status,
        }
    }

    #[test]
    fn requests_are_counted_with_histograms_and_in_flight_gauge() {
        let m = Metrics::default();
        {
            let _a = m.start();
            let mut out = String::new();
            m.render(&mut out);
            assert!(out.contains("graylane_sidecar_requests_in_flight 1"));
        }
        m.record(key(200), Duration::from_millis(3));
        m.record(key(200), Duration::from_millis(300));
        m.record(key(503), Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out);
        let l = "direction=\"outbound\",service=\"orders\",subset=\"v2\",lane=\"gray\"";
        assert!(
            out.contains("graylane_sidecar_requests_in_flight 0"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "graylane_sidecar_requests_total{{{l},status=\"200\"}} 2"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("graylane_sidecar_request_duration_seconds_bucket{{{l},status=\"200\",le=\"0.005\"}} 1")), "{out}");
        assert!(out.contains(&format!("graylane_sidecar_request_duration_seconds_bucket{{{l},status=\"200\",le=\"0.5\"}} 2")), "{out}");
        assert!(
            out.contains(&format!(
                "graylane_sidecar_requests_total{{{l},status=\"503\"}} 1"
            )),
            "{out}"
        );
    }
}
