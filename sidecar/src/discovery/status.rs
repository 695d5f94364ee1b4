//! What discovery has done and holds, for `/metrics` and `/config`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::EndpointScope;

/// What discovery has done and holds, for `/metrics` and `/config`.
#[derive(Debug, Default)]
pub struct DiscoveryStatus {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub connects: AtomicU64,
    /// `--cache-dir` files ignored at start: unreadable, failing their integrity
    /// check, of an older format, or with rules this sidecar rejects.
    pub cache_rejected: AtomicU64,
    /// The traffic report period in force, in ms (`/config`'s
    /// `trafficReportInterval`); 0 until discovery starts.
    pub traffic_report_interval_ms: AtomicU64,
    /// The instances kept stale through a reconnect and routed to, by service as a
    /// host names it (`/config`'s `staleEndpoints`, the `graylane_stale_endpoints`
    /// gauge); set with the routes that include them.
    stale: Mutex<BTreeMap<String, Vec<String>>>,
    /// `--endpoint-scope` and `--calls`, for `/config`.
    pub(super) endpoint_scope: OnceLock<EndpointScope>,
}

impl DiscoveryStatus {
    /// The stale instances in the routes in force, by service.
    pub fn stale_endpoints(&self) -> BTreeMap<String, Vec<String>> {
        self.stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many instances in the routes in force are stale.
    pub fn stale_count(&self) -> usize {
        let stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        stale.values().map(Vec::len).sum()
    }

    /// The endpoint scope as `/config` shows it: `all`, or what was declared and
    /// learned and how many services the directory names.
    pub(crate) fn endpoint_scope(&self, routing: &crate::routes::Routing) -> serde_json::Value {
        let scope = self.endpoint_scope.get().cloned().unwrap_or_default();
        super::interest::describe(routing, &scope)
    }

    pub(super) fn set_stale(&self, by_service: BTreeMap<String, Vec<String>>) {
        *self.stale.lock().unwrap_or_else(PoisonError::into_inner) = by_service;
    }
}
