//! The propagation-gap detector: which app drops the lane.
//!
//! While this instance serves a tagged request, an outbound call from its app that
//! carries no tag and no trace context the sidecar knows (no `traceparent` or baggage
//! trace entry of a request it received) most likely belongs to that request, and the
//! app did not forward its context. Each such call is counted per destination, and its
//! span says so (`graylane.gap`, with the tagged trace it probably belonged to), so
//! `graylane gaps` can name the service that needs to forward headers.
//!
//! A heuristic: an untagged request served at the same moment can be taken for one.
//! Apps that forward `traceparent` (or the tag, or `baggage`) are never reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The detector's state for one sidecar.
#[derive(Default)]
pub(crate) struct Gaps {
    tagged_in_flight: AtomicUsize,
    /// The trace of the latest tagged request to arrive.
    last_tagged: Mutex<Option<[u8; 16]>>,
    /// Gaps by destination service.
    counts: Mutex<BTreeMap<String, u64>>,
}

/// Marks a tagged request in flight until dropped.
pub(crate) struct Tagged(Arc<Gaps>);

impl Drop for Tagged {
    fn drop(&mut self) {
        self.0.tagged_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gaps {
    /// A tagged request of trace `trace_id` is being served.
    pub(crate) fn tagged(self: &Arc<Self>, trace_id: [u8; 16]) -> Tagged {
        self.tagged_in_flight.fetch_add(1, Ordering::Relaxed);
        *self.last_tagged.lock().unwrap_or_else(|e| e.into_inner()) = Some(trace_id);
        Tagged(Arc::clone(self))
    }

    /// Whether a tagged request is being served right now.
    pub(crate) fn any_tagged(&self) -> bool {
        self.tagged_in_flight.load(Ordering::Relaxed) > 0
    }

    /// An outbound call to `destination` that had neither a tag nor a known trace:
    /// when a tagged request is in flight, it is a gap; returns the tagged trace it
    /// probably belonged to.
    pub(crate) fn check(&self, destination: &str) -> Option<[u8; 16]> {
        if self.tagged_in_flight.load(Ordering::Relaxed) == 0 {
            return None;
        }
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(destination.to_string())
            .or_default() += 1;
        *self.last_tagged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gaps so far, by destination.
    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
