//! The routing state in force: one immutable value, swapped whole.
//!
//! Requests load an `Arc<Routes>` once and use it to the end, so a swap between two
//! requests never shows half a rule set and never fails a request in flight.

use std::collections::{HashMap, HashSet};
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
    /// Shared with the next routes while the rules stay the same (`discovery::apply`).
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) table: RoutingTable,
    /// Every instance address, so per-address state (balancer stats) of instances that
    /// are gone can be dropped.
    pub(crate) addresses: std::collections::HashSet<String>,
    /// Where it came from, for `/config` and logs.
    pub(crate) source: Origin,
    /// Scoped endpoints: the mesh services the control plane's directory names that
    /// these routes hold no endpoints for (a call to one asks for them). `None`: not
    /// scoped, every endpoint is here, and a service without any is no mesh service.
    pub(crate) directory: Option<Unheld>,
}

/// The directory's services whose endpoints are not held, by namespace then service
/// (looked up with borrowed names: nothing allocated per request).
#[derive(Debug, Default)]
pub(crate) struct Unheld {
    pub(crate) by_namespace: HashMap<String, HashSet<String>>,
    /// Services the directory names, held or not.
    pub(crate) directory_len: usize,
}

/// Where the routes in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Origin {
    ControlPlane,
    Cache,
}

impl Routes {
    /// Whether `service` of `namespace` is a mesh service whose endpoints these
    /// routes lack (scoped endpoints: ask for them before routing).
    pub(crate) fn lacks(&self, namespace: &str, service: &str) -> bool {
        self.directory.as_ref().is_some_and(|d| {
            d.by_namespace
                .get(namespace)
                .is_some_and(|s| s.contains(service))
        })
    }

    /// Whether `namespace` is one of the mesh's: the table knows it
    /// (`RoutingTable::has_namespace`), or the directory names a service of it.
    pub(crate) fn knows_namespace(&self, namespace: &str) -> bool {
        self.table.has_namespace(namespace)
            || self
                .directory
                .as_ref()
                .is_some_and(|d| d.by_namespace.contains_key(namespace))
    }

    /// How many services the directory names; `None` when not scoped.
    pub(crate) fn directory_len(&self) -> Option<usize> {
        self.directory.as_ref().map(|d| d.directory_len)
    }
}

/// The routes in force, shared by every listener and swapped by discovery.
pub(crate) struct Routing {
    current: ArcSwapOption<Routes>,
    /// Bumped after every swap: wakes `/gates/self?watch=1` streams and first calls
    /// waiting for a service's endpoints.
    changed: watch::Sender<u64>,
    /// Scoped endpoints: services asked for by traffic, sent on the stream.
    pub(crate) interest: crate::discovery::Interest,
}

/// How listeners hold the routing state.
pub(crate) type Shared = Arc<Routing>;

impl Default for Routing {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changed: watch::channel(0).0,
            interest: crate::discovery::Interest::default(),
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
