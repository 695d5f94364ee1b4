//! Push counters for `/metrics`: snapshots sent, NACKs, and how long sidecars take to
//! ACK a snapshot (from its first part going out to the ACK arriving).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the push-to-ACK buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Lock-free: updated by every stream task.
#[derive(Default)]
pub struct PushStats {
    pushes: AtomicU64,
    nacks: AtomicU64,
    acks: AtomicU64,
    ack_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl PushStats {
    /// A snapshot went out whole to one sidecar.
    pub fn pushed(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn nacked(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A sidecar ACKed a snapshot `took` after it started going out.
    pub fn acked(&self, took: Duration) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.ack_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP graylane_control_pushes_total Snapshots sent whole to a sidecar.\n# TYPE graylane_control_pushes_total counter\ngraylane_control_pushes_total {}",
            get(&self.pushes)
        );
        let _ = writeln!(
            out,
            "# HELP graylane_control_nacks_total Snapshots a sidecar rejected.\n# TYPE graylane_control_nacks_total counter\ngraylane_control_nacks_total {}",
            get(&self.nacks)
        );
        let name = "graylane_control_push_ack_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a snapshot going out to its ACK.\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.acks);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.ack_micros) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}
