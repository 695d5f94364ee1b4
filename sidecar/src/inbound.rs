//! The inbound listener: calls from other sidecars (or, at the edge, from clients) to
//! this instance's app. The stack, outermost first (see `pipeline`):
//!
//! ```text
//! Observe ─► Snapshot
//!   ─► InboundTag  the caller's tag (Gray-Publish, else baggage); with mTLS on and no
//!                  mesh identity proved, an untrusted caller's (TagPolicy decides;
//!                  none: stripped); this service's TagPolicy: incoming
//!                  strip|keep|keep-known, then rules; trace id → (tag,
//!                  --propagate-headers) remembered for the outbound side   [inbound/tag]
//!   ─► app::serve  to --app-addr (or, redirected by iptables from another port, the
//!                  app's host at that port) with Gray-Publish and baggage set to the tag (or both
//!                  removed), hop-by-hop stripped; response (+ Graylane-Route entry
//!                  for the mesh's entry hop)                                [inbound/app]
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use tower::ServiceBuilder;

use crate::gaps::Gaps;
use crate::metrics::Metrics;
use crate::pipeline::{Direction, Layered, Observe, Snapshot, Stack, observe::Observed};
use crate::proxy::Clients;
use crate::routes::Shared;
use crate::spans::Tracer;
use crate::tag::TraceTable;
use crate::transparent::AppAddr;

mod app;
mod tag;

use self::tag::InboundTag;

/// The inbound side of one sidecar.
pub(crate) struct Inbound {
    pub(crate) service: String,
    /// This service's namespace: whose TagPolicy and PeerPolicy apply.
    pub(crate) namespace: String,
    pub(crate) instance_id: String,
    pub(crate) app: Arc<AppAddr>,
    pub(crate) routes: Shared,
    pub(crate) clients: Clients,
    pub(crate) traces: Arc<TraceTable>,
    pub(crate) propagate: Vec<HeaderName>,
    pub(crate) upstream_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Arc<Tracer>,
    pub(crate) gaps: Arc<Gaps>,
}

/// The inbound listener's request path.
pub(crate) fn stack(inbound: Inbound) -> Stack<impl Layered> {
    let inbound = Arc::new(inbound);
    let observed = Observed {
        direction: Direction::Inbound,
        service: inbound.service.clone(),
        instance_id: inbound.instance_id.clone(),
        metrics: Arc::clone(&inbound.metrics),
        tracer: Arc::clone(&inbound.tracer),
    };
    let stack = ServiceBuilder::new()
        // Outermost: counts and times all below, and answers every error.
        .layer(Observe::layer(observed))
        // One snapshot for the tag decision and the trail.
        .layer(Snapshot::layer(Arc::clone(&inbound.routes)))
        // The tag is decided before the app sees the request: it forwards the result.
        .layer(InboundTag::layer(Arc::clone(&inbound)))
        .service(tower::service_fn(move |call| {
            app::serve(Arc::clone(&inbound), call)
        }));
    Stack(stack)
}

#[cfg(test)]
mod tests;
