//! The inbound listener: calls from other sidecars (or, at the edge, from clients) to
//! this instance's app.
//!
//! ```text
//! request ─► caller's tag (Gray-Publish header, else baggage)
//!         ─► mTLS on (permissive|strict) and the peer proved no mesh identity: the
//!            tag is an untrusted caller's (TagPolicy decides; none: stripped)
//!         ─► TagPolicy of this service: incoming strip|keep|keep-known, then rules
//!         ─► remember trace id → (tag, --propagate-headers) in the trace table
//!         ─► forward to --app-addr with Gray-Publish and baggage set to the tag
//!            (or both removed), hop-by-hop stripped
//!         ─► response (+ Graylane-Route entry for the mesh's entry hop)
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use graylane_routing::{
    InboundSource, MtlsMode, Tag, TraceParent, baggage_with, baggage_with_tag, baggage_without_tag,
};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};

use crate::gaps::Gaps;
use crate::metrics::{Key, Metrics};
use crate::outbound::{DEBUG_HEADER, HOPS_HEADER, Hop, append_route, lane_label};
use crate::proxy::{self, Body, Clients, ProxyError, SendFailure, Upstream};
use crate::routes::{Routes, Shared};
use crate::server::{Handler, Peer};
use crate::spans::{Kind, Notes, TRACE_BAGGAGE_KEY, TRACEPARENT, Tracer};
use crate::tag::{self, HeaderTag, TAG_HEADER, TagSource, TraceEntry, TraceTable, View};

const BAGGAGE: &str = "baggage";

/// The inbound side of one sidecar.
pub(crate) struct Inbound {
    pub(crate) service: String,
    /// This service's namespace: whose TagPolicy and PeerPolicy apply.
    pub(crate) namespace: String,
    pub(crate) instance_id: String,
    pub(crate) app_addr: String,
    pub(crate) routes: Shared,
    pub(crate) clients: Clients,
    pub(crate) traces: Arc<TraceTable>,
    pub(crate) propagate: Vec<HeaderName>,
    pub(crate) upstream_timeout: Duration,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Arc<Tracer>,
    pub(crate) gaps: Arc<Gaps>,
}

impl Handler for Inbound {
    async fn handle(self: Arc<Self>, peer: Peer, mut request: Request<Incoming>) -> Response<Body> {
        let _in_flight = self.metrics.start();
        let started = Instant::now();
        let span = self.tracer.begin(request.headers_mut());
        let mut notes = Notes {
            trace_id: span.trace_id,
            peer_identity: peer.identity.as_deref().map(str::to_owned),
            ..Notes::default()
        };
        let mut key = Key {
            direction: "inbound",
            service: self.service.clone(),
            namespace: self.namespace.clone(),
            subset: "-".into(),
            lane: "-".into(),
            status: 0,
        };
        let response = match self.proxy(peer, request, &mut key, &mut notes).await {
            Ok(response) => response,
            Err(e) => {
                notes.error_source = Some(e.caused_by().as_str());
                e.into_response()
            }
        };
        key.status = response.status().as_u16();
        if self.tracer.records(&span) {
            let name = format!("inbound {}", self.service);
            let attributes = notes.attributes(&self.service, &self.instance_id, key.status);
            self.tracer
                .finish(&span, Kind::Server, name, attributes, key.status);
        }
        self.metrics.record(key, started.elapsed());
        response
    }
}

impl Inbound {
    async fn proxy(
        &self,
        peer: Peer,
        request: Request<Incoming>,
        key: &mut Key,
        notes: &mut Notes,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        // Set by the calling outbound sidecar; removed here, so the app's own calls
        // start counting from zero (see `outbound::target`).
        let from_sidecar = parts.headers.remove(HOPS_HEADER).is_some();
        let debug = parts.headers.get(DEBUG_HEADER).is_some_and(|v| v == "1");
        // One snapshot for the whole decision, like the outbound side.
        let routes = self.routes.load();
        let (tag, source) = self.decide_tag(routes.as_deref(), &mut parts, &peer);
        if let Some(routes) = &routes {
            key.lane = lane_label(routes, tag.as_ref());
            notes.revision = routes.revision;
        }
        notes.tag = tag.as_ref().map(|t| t.as_str().to_string());
        notes.source = source.as_str();
        // While the app serves a tagged request, its untraceable calls are gaps.
        let _tagged = tag.is_some().then(|| self.gaps.tagged(notes.trace_id));
        set_tag(&mut parts, tag.as_ref());
        // Remembered for the outbound side: the tag and propagated headers of this
        // trace. An untagged trace with nothing to propagate is only worth an entry
        // while tagged requests are in flight here, so the gap detector knows its
        // calls; otherwise untagged traffic would churn the table for nothing.
        let headers: Vec<_> = self
            .propagate
            .iter()
            .filter_map(|n| Some((n.clone(), parts.headers.get(n)?.clone())))
            .collect();
        if tag.is_some() || !headers.is_empty() || self.gaps.any_tagged() {
            self.traces.remember(
                notes.trace_id,
                TraceEntry {
                    tag: tag.clone(),
                    headers,
                },
                Instant::now(),
            );
        }
        let upgrade = proxy::upgrade::requested(&parts.headers)
            .then(|| proxy::upgrade::take(&mut parts))
            .flatten();
        proxy::strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        // An idempotent body-less request whose pooled connection to the app closed
        // before any answer (the app's keep-alive timeout racing the request) goes once
        // more, on a new connection.
        let again = (proxy::idempotent(&parts.method) && body.is_end_stream())
            .then(|| proxy::copy_head(&parts));
        let request = Request::from_parts(parts, proxy::boxed(body));
        let app = Upstream {
            service: &self.service,
            instance: &self.instance_id,
            address: &self.app_addr,
            timeout: self.upstream_timeout,
        };
        let mut outcome = self.clients.send(request, &app).await;
        if let (Err(e), Some(copy)) = (&outcome, again)
            && let SendFailure::Closed(reason) = &e.failure
        {
            tracing::debug!(%reason, "app connection closed before answering; sending again");
            outcome = self.clients.send(copy, &app).await;
        }
        let mut response = outcome?;
        proxy::upgrade::join_if_switched(upgrade, &mut response);
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let (mut parts, body) = response.into_parts();
        proxy::strip_hop_by_hop(&mut parts.headers, switched);
        if debug && !from_sidecar {
            // The hop that entered the mesh: no outbound sidecar decided it.
            let hop = Hop {
                service: &self.service,
                instance: &self.instance_id,
                subset: None,
                tag: tag.as_ref(),
                source,
                fallback: false,
                revision: routes.as_ref().map_or(0, |r| r.revision),
                peer: peer.identity.as_deref(),
            };
            append_route(&mut parts.headers, &hop.entry());
        }
        Ok(Response::from_parts(parts, proxy::boxed(body)))
    }

    /// sidecar.md "The tag on the way in": the caller's tag, then this service's
    /// TagPolicy (trust setting, then rules) when it has one. With mTLS on
    /// (security.md "The tag across the trust boundary"), a tag from a peer that
    /// proved no mesh identity is an untrusted caller's: with no TagPolicy to decide,
    /// it is stripped and counted.
    fn decide_tag(
        &self,
        routes: Option<&Routes>,
        parts: &mut Parts,
        peer: &Peer,
    ) -> (Option<Tag>, TagSource) {
        let (incoming, from) = match tag::from_header(&parts.headers) {
            HeaderTag::Valid(t) => (Some(t), TagSource::Header),
            HeaderTag::Absent => match tag::from_baggage(&parts.headers) {
                Some(t) => (Some(t), TagSource::Baggage),
                None => (None, TagSource::None),
            },
            HeaderTag::Invalid => {
                self.metrics.invalid_tags.fetch_add(1, Ordering::Relaxed);
                (None, TagSource::None)
            }
        };
        // Before any snapshot the mode is the default (permissive) and no TagPolicy is
        // known: an unproved tag is stripped, failing closed.
        let untrusted = peer.identity.is_none()
            && proxy::mtls_mode(routes, &self.namespace, &self.service) != MtlsMode::Off;
        let had_tag = incoming.is_some();
        let incoming = match incoming {
            Some(_)
                if untrusted
                    && !routes.is_some_and(|r| {
                        r.table.has_tag_policy(&self.namespace, &self.service)
                    }) =>
            {
                self.metrics.untrusted_tags.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.addr, "tag from a peer without a mesh identity stripped");
                None
            }
            incoming => incoming,
        };
        let Some(routes) = routes else {
            let from = if incoming.is_some() {
                from
            } else {
                TagSource::None
            };
            return (incoming, from);
        };
        let decided = routes.table.inbound_tag(
            &self.namespace,
            &self.service,
            incoming,
            &View {
                parts,
                source_ip: Some(peer.addr.ip()),
            },
        );
        if untrusted && had_tag && decided.stripped {
            self.metrics.untrusted_tags.fetch_add(1, Ordering::Relaxed);
        }
        let source = match decided.source {
            InboundSource::Incoming => from,
            InboundSource::Rule => TagSource::Rule,
            InboundSource::None => TagSource::None,
        };
        (decided.tag, source)
    }
}

/// `Gray-Publish` and the baggage entry both say `tag`, or are both gone: a tag the
/// TagPolicy removed cannot come back through baggage.
fn set_tag(parts: &mut Parts, tag: Option<&Tag>) {
    parts.headers.remove(TAG_HEADER);
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
                TAG_HEADER,
                HeaderValue::from_str(tag.as_str()).expect("a tag is a valid header value"),
            );
            Some(baggage_with_tag(existing.as_deref(), tag))
        }
        None => existing.as_deref().and_then(baggage_without_tag),
    };
    // The trace position rides along in the baggage too, so an app that relays only
    // `baggage` keeps its calls in this trace (see `spans::Tracer::begin`).
    let traceparent = parts
        .headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| TraceParent::parse(v).is_some());
    let updated = match (updated, traceparent) {
        (Some(baggage), Some(tp)) => Some(baggage_with(Some(&baggage), TRACE_BAGGAGE_KEY, tp)),
        (updated, _) => updated,
    };
    if let Some(value) = updated.and_then(|v| HeaderValue::from_str(&v).ok()) {
        parts.headers.insert(BAGGAGE, value);
    }
}
