//! The tag on the way out (sidecar.md "The tag on the way out"): the tag the call
//! carries, else the one remembered for its trace, so an app that forwards nothing but
//! `traceparent` keeps its calls in the lane.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use graylane_routing::Tag;
use http::request::Parts;
use tower::{Layer, Service};

use super::Outbound;
use crate::pipeline::{Answer, Call, Layered};
use crate::tag::{self, TAG_HEADER_NAME, TagSource};

/// The layer and its service.
#[derive(Clone)]
pub(crate) struct OutboundTag<S = ()> {
    inner: S,
    outbound: Arc<Outbound>,
}

impl OutboundTag {
    pub(crate) fn layer(outbound: Arc<Outbound>) -> Self {
        Self {
            inner: (),
            outbound,
        }
    }
}

impl<S> Layer<S> for OutboundTag {
    type Service = OutboundTag<S>;

    fn layer(&self, inner: S) -> OutboundTag<S> {
        OutboundTag {
            inner,
            outbound: Arc::clone(&self.outbound),
        }
    }
}

impl<S: Layered> Service<Call> for OutboundTag<S> {
    type Response = Answer;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        let (tag, source) = self.outbound.resolve_tag(&mut call.head);
        call.ledger.set_tag(tag, source);
        self.inner.call(call)
    }
}

impl Outbound {
    /// The tag the call carries (header, then baggage), then the trace table. The
    /// header is removed either way (`Route` sets the resolved one); an invalid one
    /// is counted and never travels further. The `--propagate-headers` the call lacks
    /// come from the trace table too, also when the call carries its tag (an
    /// OpenTelemetry SDK forwards `traceparent` and `baggage`, not `x-tenant`).
    fn resolve_tag(&self, parts: &mut Parts) -> (Option<Tag>, TagSource) {
        let carried = tag::carried(&parts.headers);
        parts.headers.remove(TAG_HEADER_NAME);
        if carried.invalid() > 0 {
            self.metrics
                .invalid_tags
                .fetch_add(carried.invalid(), Ordering::Relaxed);
        }
        if carried.tag.is_some() && self.propagate.is_empty() {
            return (carried.tag, carried.source);
        }
        let entry = tag::trace_id(&parts.headers)
            .and_then(|trace| self.traces.recall(&trace, Instant::now()));
        let Some(entry) = entry else {
            return (carried.tag, carried.source);
        };
        for (name, value) in entry.headers {
            if self.propagate.contains(&name) && !parts.headers.contains_key(&name) {
                parts.headers.insert(name, value);
            }
        }
        match (carried.tag, entry.tag) {
            (Some(tag), _) => (Some(tag), carried.source),
            (None, Some(tag)) => (Some(tag), TagSource::Trace),
            (None, None) => (None, TagSource::None),
        }
    }
}
