//! The routing state in force: one immutable value, swapped whole.
//!
//! Requests load an `Arc<Routes>` once and use it to the end, so a swap between two
//! requests never shows half a rule set and never fails a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use graylane_routing::{RoutingTable, RuleSet};
use tokio::sync::watch;

/// A compiled snapshot: the rules and endpoints the sidecar routes by.
pub(crate) struct Routes {
    /// The control plane's snapshot version this was built from (0: from the cache).
    pub(crate) version: u64,
    /// The rule revision.
    pub(crate) revision: u64,
    pub(crate) rules: RuleSet,
    pub(crate) table: RoutingTable,
    /// Instance ids per service, for `/config`.
    pub(crate) endpoints: std::collections::BTreeMap<String, Vec<String>>,
    /// Every instance address, so per-address state (balancer stats) of instances that
    /// are gone can be dropped.
    pub(crate) addresses: std::collections::HashSet<String>,
    /// Where it came from, for `/config` and logs.
    pub(crate) source: Origin,
}

/// Where the routes in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Origin {
    ControlPlane,
    Cache,
}

/// The routes in force, shared by every listener and swapped by discovery.
pub(crate) struct Routing {
    current: ArcSwapOption<Routes>,
    /// Bumped after every swap: wakes `/gates/self?watch=1` streams.
    changed: watch::Sender<u64>,
}

/// How listeners hold the routing state.
pub(crate) type Shared = Arc<Routing>;

impl Default for Routing {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changed: watch::channel(0).0,
        }
    }
}

impl Routing {
    /// The routes in force; `None` until the first snapshot (the sidecar is not ready).
    pub(crate) fn load(&self) -> Option<Arc<Routes>> {
        self.current.load_full()
    }

    /// Swaps in new routes for every request that starts from now on.
    pub(crate) fn publish(&self, routes: Routes) {
        self.current.store(Some(Arc::new(routes)));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Fires after every swap.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
