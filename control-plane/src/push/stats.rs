//! Push counters for `/metrics`: snapshots sent and skipped, NACKs, and how long
//! sidecars take to ACK a snapshot (from its first part going out to the ACK arriving).

use std::time::Duration;

use graylane_exposition::Scrape;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the push-to-ACK buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Updated by every stream task: the counters are atomics, the histogram takes a short
/// lock once per ACK; a scrape registers clones, which share the same values.
pub struct PushStats {
    pushes: Counter,
    /// New states that carried nothing for a stream: not sent to it.
    skipped: Counter,
    nacks: Counter,
    /// Interest messages (a scoped sidecar asking for more services' endpoints).
    interest: Counter,
    ack_seconds: Histogram,
}

impl Default for PushStats {
    fn default() -> Self {
        Self {
            pushes: Counter::default(),
            skipped: Counter::default(),
            nacks: Counter::default(),
            interest: Counter::default(),
            ack_seconds: Histogram::new(BUCKETS),
        }
    }
}

impl PushStats {
    /// A snapshot went out whole to one sidecar.
    pub fn pushed(&self) {
        self.pushes.inc();
    }

    /// A new state carried nothing for one sidecar's scope: not sent to it.
    pub fn skipped(&self) {
        self.skipped.inc();
    }

    pub fn nacked(&self) {
        self.nacks.inc();
    }

    /// A scoped sidecar asked for more services' endpoints.
    pub fn interest(&self) {
        self.interest.inc();
    }

    /// A sidecar ACKed a snapshot `took` after it started going out.
    pub fn acked(&self, took: Duration) {
        self.ack_seconds.observe(took.as_secs_f64());
    }

    /// Adds the push metrics to a scrape.
    pub fn register(&self, scrape: &mut Scrape) {
        scrape.register(
            "graylane_control_pushes_total",
            "Snapshots sent whole to a sidecar.",
            self.pushes.clone(),
        );
        scrape.register(
            "graylane_control_pushes_skipped_total",
            "New states not sent to a sidecar: nothing in its endpoint scope changed.",
            self.skipped.clone(),
        );
        scrape.register(
            "graylane_control_nacks_total",
            "Snapshots a sidecar rejected.",
            self.nacks.clone(),
        );
        scrape.register(
            "graylane_control_endpoint_interest_total",
            "Interest messages: a scoped sidecar asking for more services' endpoints.",
            self.interest.clone(),
        );
        scrape.register(
            "graylane_control_push_ack_seconds",
            "From a snapshot going out to its ACK.",
            self.ack_seconds.clone(),
        );
    }
}
