//! The outbound listener: the app's calls to other services. The stack, outermost
//! first (see `pipeline`):
//!
//! ```text
//! Observe
//!   ─► Report       traffic series for the control plane, propagation gaps [outbound/report]
//!   ─► Snapshot
//!   ─► OutboundTag  Gray-Publish ─► baggage ─► trace table (traceparent)   [outbound/tag]
//!   ─► route::serve destination service (absolute URI, Host, :authority); in
//!                   transparent mode, not a mesh service ─► passed through [outbound/route]
//!                   ─► RoutingTable::route (lane, fallback, release, weights)  [routing]
//!                   ─► RoutingTable::policy (fault, mirror, timeout, retries)  [routing]
//!                      decided there, carried out here: sleep, abort, copy, retry loop
//!                   ─► Balancer::pick (P2C least in-flight, skip ejected)      [balance]
//!                   ─► forward to the instance's inbound listener, tag set,
//!                      hop-by-hop stripped                                     [outbound/send]
//!                      refused by the route's last instance ─► routed again
//!                      without it: RoutingTable::without (lane fallback)       [routing]
//!                   ─► response (+ Graylane-Route entry when Graylane-Debug: 1)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use tower::ServiceBuilder;

use crate::balance::Balancer;
use crate::gaps::Gaps;
use crate::metrics::Metrics;
use crate::pipeline::{Direction, Layered, Observe, Snapshot, Stack, observe::Observed};
use crate::proxy::Clients;
use crate::routes::Shared;
use crate::spans::Tracer;
use crate::tag::{TraceTable, View};
use crate::traffic::Traffic;

mod connect;
mod policy;
mod report;
mod route;
mod send;
mod tag;
mod target;

use self::report::Report;
use self::tag::OutboundTag;

/// The outbound side of one sidecar.
pub(crate) struct Outbound {
    /// This instance (for its spans).
    pub(crate) service: String,
    pub(crate) instance_id: String,
    pub(crate) routes: Shared,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) clients: Clients,
    pub(crate) traces: Arc<TraceTable>,
    /// This sidecar's namespace and cluster domain: which hosts name a mesh service.
    pub(crate) namespace: String,
    pub(crate) cluster_domain: String,
    /// This sidecar's outbound and admin listeners: a request aimed at them would loop.
    pub(crate) own_listeners: Vec<SocketAddr>,
    pub(crate) connect_timeout: Duration,
    /// Extra headers recovered from the trace table when the app dropped them.
    pub(crate) propagate: Vec<HeaderName>,
    pub(crate) upstream_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Arc<Tracer>,
    pub(crate) gaps: Arc<Gaps>,
    /// Per-destination counts for the control plane's traffic reports.
    pub(crate) traffic: Arc<Traffic>,
}

/// The outbound listener's request path.
pub(crate) fn stack(outbound: Outbound) -> Stack<impl Layered> {
    let outbound = Arc::new(outbound);
    let observed = Observed {
        direction: Direction::Outbound,
        service: outbound.service.clone(),
        instance_id: outbound.instance_id.clone(),
        metrics: Arc::clone(&outbound.metrics),
        tracer: Arc::clone(&outbound.tracer),
    };
    let stack = ServiceBuilder::new()
        // Outermost: counts and times all below, and answers every error.
        .layer(Observe::layer(observed))
        // Inside `Observe`, so a gap it finds is on the span `Observe` ends; and it
        // counts what the caller got, errors answered by the layers below included.
        .layer(Report::layer(Arc::clone(&outbound)))
        // One snapshot for the lane label, the route, its policy and the trail.
        .layer(Snapshot::layer(Arc::clone(&outbound.routes)))
        // The tag before the route: lanes are chosen by it.
        .layer(OutboundTag::layer(Arc::clone(&outbound)))
        .service(tower::service_fn(move |call| {
            route::serve(Arc::clone(&outbound), call)
        }));
    Stack(stack)
}

#[cfg(test)]
mod tests;
