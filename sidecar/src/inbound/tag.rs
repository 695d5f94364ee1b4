//! The tag on the way in (sidecar.md "The tag on the way in", security.md "The tag
//! across the trust boundary"): what the app is told, and what the outbound side will
//! recover for the app's own calls.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use graylane_routing::{
    InboundSource, MtlsMode, Tag, TraceParent, baggage_with, baggage_with_tag, baggage_without_tag,
};
use http::header::HeaderValue;
use http::request::Parts;
use tower::{Layer, Service};

use super::Inbound;
use crate::gaps::Tagged;
use crate::pipeline::{After, Answer, Call, Hold, Layered};
use crate::proxy;
use crate::routes::Routes;
use crate::server::Peer;
use crate::spans::TRACE_BAGGAGE_KEY;
use crate::spans::TRACEPARENT;
use crate::tag::{self, BAGGAGE, TAG_HEADER_NAME, TagSource, TraceEntry, View};

/// The layer and its service.
#[derive(Clone)]
pub(crate) struct InboundTag<S = ()> {
    inner: S,
    inbound: Arc<Inbound>,
    /// This service and namespace as metrics labels, borrowed by every request.
    labels: (&'static str, &'static str),
}

impl InboundTag {
    pub(crate) fn layer(inbound: Arc<Inbound>) -> Self {
        // Leaked once per listener (two short strings for the life of the process),
        // so no request allocates its own copy of the labels.
        let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
        let labels = (leak(&inbound.service), leak(&inbound.namespace));
        Self {
            inner: (),
            inbound,
            labels,
        }
    }
}

impl<S> Layer<S> for InboundTag {
    type Service = InboundTag<S>;

    fn layer(&self, inner: S) -> InboundTag<S> {
        InboundTag {
            inner,
            inbound: Arc::clone(&self.inbound),
            labels: self.labels,
        }
    }
}

impl<S: Layered> Service<Call> for InboundTag<S> {
    type Response = Answer;
    type Error = Infallible;
    /// While the app serves a tagged request, its untraceable calls are gaps.
    type Future = After<S::Future, Hold<Option<Tagged>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let inbound = &self.inbound;
        let ledger = &mut call.ledger;
        ledger.key.service = Cow::Borrowed(self.labels.0);
        ledger.key.namespace = Cow::Borrowed(self.labels.1);
        let (tag, source, lines) =
            inbound.decide_tag(ledger.routes.as_deref(), &mut call.head, &call.peer);
        let trace_id = ledger.notes.trace_id;
        let tagged = tag.is_some().then(|| inbound.gaps.tagged(trace_id));
        // An untagged request that came with neither line has none to rewrite: three
        // hashed look-ups of names it lacks saved (most requests are untagged).
        if tag.is_some() || lines {
            set_tag(&mut call.head, tag.as_ref());
        }
        inbound.remember(trace_id, &call.head, tag.as_ref());
        call.ledger.set_tag(tag, source);
        After::new(self.inner.call(call), Hold(tagged))
    }
}

impl Inbound {
    /// Whether what the mesh itself writes on a request (its tag, hop count, mirror
    /// marker) can be believed: the peer proved a mesh identity, or mTLS is off and
    /// every peer is taken for a sidecar. Before any snapshot the mode is the default
    /// (permissive): an unproved peer is not vouched for, failing closed.
    pub(super) fn vouched_for(&self, routes: Option<&Routes>, peer: &Peer) -> bool {
        peer.identity.is_some()
            || proxy::mtls_mode(routes, &self.namespace, &self.service) == MtlsMode::Off
    }

    /// The caller's tag (header, else baggage), then this service's TagPolicy (trust
    /// setting, then rules) when it has one. With mTLS on, a tag from a peer that
    /// proved no mesh identity is an untrusted caller's: with no TagPolicy to decide,
    /// it is stripped and counted. The third value: whether the request carried a
    /// `Gray-Publish` or `baggage` line at all.
    fn decide_tag(
        &self,
        routes: Option<&Routes>,
        parts: &mut Parts,
        peer: &Peer,
    ) -> (Option<Tag>, TagSource, bool) {
        let carried = tag::carried(&parts.headers);
        if carried.invalid() > 0 {
            self.metrics
                .invalid_tags
                .fetch_add(carried.invalid(), Ordering::Relaxed);
        }
        let untrusted = !self.vouched_for(routes, peer);
        let had_tag = carried.tag.is_some();
        let has_policy =
            || routes.is_some_and(|r| r.table.has_tag_policy(&self.namespace, &self.service));
        let incoming = if had_tag && untrusted && !has_policy() {
            self.metrics.untrusted_tags.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %peer.addr, "tag from a peer without a mesh identity stripped");
            None
        } else {
            carried.tag
        };
        let Some(routes) = routes else {
            let source = if incoming.is_some() {
                carried.source
            } else {
                TagSource::None
            };
            return (incoming, source, carried.lines);
        };
        let view = View {
            parts,
            source_ip: Some(peer.addr.ip()),
        };
        let decided = routes
            .table
            .inbound_tag(&self.namespace, &self.service, incoming, &view);
        if untrusted && had_tag && decided.stripped {
            self.metrics.untrusted_tags.fetch_add(1, Ordering::Relaxed);
        }
        let source = match decided.source {
            InboundSource::Incoming => carried.source,
            InboundSource::Rule => TagSource::Rule,
            InboundSource::None => TagSource::None,
        };
        (decided.tag, source, carried.lines)
    }

    /// Remembered for the outbound side: the tag and propagated headers of this trace.
    /// An untagged trace with nothing to propagate is only worth an entry while tagged
    /// requests are in flight here, so the gap detector knows its calls; otherwise
    /// untagged traffic would churn the table for nothing. But what an earlier request
    /// of the same trace id left is forgotten: clients pick trace ids and reuse them,
    /// and an untagged request must not recover another's tag (and ride its lane) or
    /// its propagated headers (another user's `x-user-id`).
    fn remember(&self, trace_id: [u8; 16], parts: &Parts, tag: Option<&Tag>) {
        let headers: Vec<_> = self
            .propagate
            .iter()
            .filter_map(|n| Some((n.clone(), parts.headers.get(n)?.clone())))
            .collect();
        if tag.is_some() || !headers.is_empty() || self.gaps.any_tagged() {
            let entry = TraceEntry {
                tag: tag.cloned(),
                headers,
            };
            self.traces.remember(trace_id, entry, Instant::now());
        } else {
            self.traces.forget(&trace_id);
        }
    }
}

/// `Gray-Publish` and the baggage entry both say `tag`, or are both gone: a tag the
/// TagPolicy removed cannot come back through baggage.
fn set_tag(parts: &mut Parts, tag: Option<&Tag>) {
    parts.headers.remove(TAG_HEADER_NAME);
    let baggage: Vec<String> = parts
        .headers
        .get_all(BAGGAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    parts.headers.remove(BAGGAGE);
    let existing = (!baggage.is_empty()).then(|| baggage.join(","));
    let updated = match tag {
        Some(tag) => {
            parts.headers.insert(
                TAG_HEADER_NAME,
                HeaderValue::from_str(tag.as_str()).expect("a tag is a valid header value"),
            );
            Some(baggage_with_tag(existing.as_deref(), tag))
        }
        None => existing.as_deref().and_then(baggage_without_tag),
    };
    // The trace position rides along in the baggage too, so an app that relays only
    // `baggage` keeps its calls in this trace (see `spans::Tracer::begin`). Read only
    // when there is baggage to write: most requests have none.
    let updated = updated.map(|baggage| {
        let traceparent = parts
            .headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .filter(|v| TraceParent::parse(v).is_some());
        match traceparent {
            Some(tp) => baggage_with(Some(&baggage), TRACE_BAGGAGE_KEY, tp),
            None => baggage,
        }
    });
    if let Some(mut value) = updated.and_then(|v| HeaderValue::from_str(&v).ok()) {
        // It carries this request's trace position: not for HTTP/2 to index (see
        // `spans::Tracer::begin`).
        value.set_sensitive(true);
        parts.headers.insert(BAGGAGE, value);
    }
}
