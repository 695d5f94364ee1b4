//! The outbound listener: the app's calls to other services.
//!
//! ```text
//! request ─► destination service (absolute URI, Host, :authority); in transparent
//!            mode, not a mesh service ─► passed through to the original destination
//!         ─► tag: Gray-Publish header ─► baggage ─► trace table (traceparent)
//!         ─► RoutingTable::route (lane, fallback, release, weights)   [graylane-routing]
//!         ─► RoutingTable::policy (fault, mirror, timeout, retries)   [graylane-routing]
//!            decided there, carried out here: sleep, abort, copy, retry loop
//!         ─► Balancer::pick (P2C least in-flight, skip ejected)        [balance]
//!         ─► forward to the instance's inbound listener, tag set, hop-by-hop stripped
//!            (connect failure on an idempotent body-less request: once more elsewhere)
//!         ─► response (+ Graylane-Route entry when Graylane-Debug: 1)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use graylane_routing::{Candidates, RouteError};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;

use crate::balance::Balancer;
use crate::gaps::Gaps;
use crate::metrics::{Key, Metrics};
use crate::proxy::{self, Body, Clients, ProxyError, Transport, Upstream};
use crate::routes::{Routes, Shared};
use crate::server::{Handler, Peer};
use crate::spans::{Kind, Notes, Tracer};
use crate::tag::{self, HeaderTag, TAG_HEADER, TagSource, TraceTable, View};
use crate::traffic::{Destination, Traffic};
use crate::transparent::OriginalDst;

mod connect;
mod debug;
mod policy;
mod send;
mod target;

use self::target::Target;

pub(crate) use self::debug::{DEBUG_HEADER, Hop, append_route};
pub(crate) use self::target::HOPS_HEADER;

/// The outbound side of one sidecar.
pub(crate) struct Outbound {
    /// This instance (for its spans).
    pub(crate) service: String,
    pub(crate) instance_id: String,
    pub(crate) routes: Shared,
    pub(crate) balancer: Balancer,
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

impl Handler for Outbound {
    async fn handle(
        self: Arc<Self>,
        _peer: Peer,
        mut request: Request<Incoming>,
    ) -> Response<Body> {
        let _in_flight = self.metrics.start();
        let started = Instant::now();
        let span = self.tracer.begin(request.headers_mut());
        let mut key = Key {
            direction: "outbound",
            service: "-".into(),
            namespace: "-".into(),
            subset: "-".into(),
            lane: "-".into(),
            status: 0,
        };
        let mut notes = Notes {
            trace_id: span.trace_id,
            ..Notes::default()
        };
        let response = match self.proxy(request, &mut key, &mut notes).await {
            Ok(response) => response,
            Err(e) => {
                notes.error_source = Some(e.caused_by().as_str());
                e.into_response()
            }
        };
        key.status = response.status().as_u16();
        // No tag, and no trace context of a request this sidecar received: a gap if a
        // tagged request is in flight here (see `gaps`).
        let known_trace = || {
            span.parent.is_some() && self.traces.recall(&span.trace_id, Instant::now()).is_some()
        };
        if notes.tag.is_none() && key.service != "-" && !known_trace() {
            notes.gap = self.gaps.check(&key.service);
        }
        // Attributes cost allocations: only for spans that are recorded.
        if self.tracer.records(&span) {
            let name = format!("outbound {}", key.service);
            let attributes = notes.attributes(&self.service, &self.instance_id, key.status);
            self.tracer
                .finish(&span, Kind::Client, name, attributes, key.status);
        }
        let elapsed = started.elapsed();
        // Mesh services only (`namespace` is `-` for anything else), so the series
        // stay bounded by the rules, not by what hosts clients name.
        if key.namespace != "-" {
            let to = Destination {
                namespace: &key.namespace,
                service: &key.service,
                lane: &key.lane,
                subset: &key.subset,
            };
            self.traffic.record(&to, key.status, elapsed);
        }
        self.metrics.record(key, elapsed);
        response
    }
}

impl Outbound {
    async fn proxy(
        &self,
        request: Request<Incoming>,
        key: &mut Key,
        notes: &mut Notes,
    ) -> Result<Response<Body>, ProxyError> {
        let routes = self.routes.load().ok_or(ProxyError::NotReady)?;
        notes.revision = routes.revision;
        let (mut parts, body) = request.into_parts();
        let hops = target::count_hop(&parts.headers)?;
        // Set when iptables redirected the app's connection here (transparent mode).
        let original = parts.extensions.get::<OriginalDst>().map(|o| o.0);
        let (tag, source) = self.resolve_tag(&mut parts);
        key.lane = lane_label(&routes, tag.as_ref());
        notes.tag = tag.as_ref().map(|t| t.as_str().to_string());
        notes.source = source.as_str();
        let target = target::target(&parts, &self.namespace, &self.cluster_domain)?;
        if parts.method == Method::CONNECT {
            key.service = CONNECT_LABEL.into();
            return self.connect(parts, target, &routes, tag.as_ref()).await;
        }
        let dest = match (target, original) {
            (Target::Service(dest), _) => dest,
            // Not a mesh service: where the app sent it (transparent) or to the host
            // itself (explicit), never to a mesh instance.
            (Target::External { .. }, Some(to)) => {
                key.service = PASSTHROUGH.into();
                return self
                    .forward_to(parts, body, tag, hops, &to.to_string())
                    .await;
            }
            (Target::External { host, port }, None) => {
                key.service = EXTERNAL.into();
                let to = target::resolve(&host, port, &self.own_listeners).await?;
                return self
                    .forward_to(parts, body, tag, hops, &to[0].to_string())
                    .await;
            }
        };
        let debug = parts.headers.get(DEBUG_HEADER).is_some_and(|v| v == "1");
        let view = View {
            parts: &parts,
            source_ip: None,
        };
        let (namespace, service) = (&dest.namespace, &dest.service);
        let route = routes
            .table
            .route(namespace, service, tag.as_ref(), &view, fastrand::u64(..));
        // Set before the outcome is known, so a 503 (no instance in the lane) is
        // labelled by its service too; but only for a service the table knows: a Host
        // it does not know stays `-`, or clients could grow the series without bound.
        if !matches!(route, Err(RouteError::UnknownService { .. })) {
            key.service.clone_from(service);
            key.namespace.clone_from(namespace);
            notes.destination = Some(service.clone());
            notes.destination_namespace = Some(namespace.clone());
        }
        let route = match route {
            Ok(route) => route,
            // Transparent mode: not a mesh service, so it goes where the app sent it.
            Err(RouteError::UnknownService { .. }) if original.is_some() => {
                let to = original.expect("checked");
                key.service = PASSTHROUGH.into();
                return self
                    .forward_to(parts, body, tag, hops, &to.to_string())
                    .await;
            }
            // `api.corp` with no service `api` in a namespace `corp`: an ordinary host.
            Err(RouteError::UnknownService { .. }) if dest.external.is_some() => {
                let (host, port) = dest.external.as_ref().expect("checked");
                key.service = EXTERNAL.into();
                let to = target::resolve(host, *port, &self.own_listeners).await?;
                return self
                    .forward_to(parts, body, tag, hops, &to[0].to_string())
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        key.subset = route.subset.unwrap_or("-").to_string();
        notes.lane = route.lane.map(String::from);
        notes.subset = route.subset.map(String::from);
        notes.fallback = match (&route.fallback, route.base_fallback) {
            (Some(info), _) => Some(info.to_string()),
            (None, true) => Some("no candidate by weights or base: any instance".into()),
            (None, false) => None,
        };
        let upgrade = forward_head(&mut parts, tag.as_ref(), hops);
        // One lookup for the destination's timeout, retries, fault and mirror, all
        // decided by the table; what follows only carries them out.
        let policy = routes.table.policy(namespace, service);
        let fault = policy.fault(tag.as_ref(), fastrand::u64(..));
        policy::inject_fault(fault, &graylane_routing::qualified(namespace, service)).await?;
        // Only idempotent requests without a body are ever sent twice.
        let retry =
            (proxy::idempotent(&parts.method) && body.is_end_stream()).then(|| policy.retry());
        let timeout = policy.timeout().unwrap_or(self.upstream_timeout);
        // Only body-less requests are copied: a streamed body goes to one place, and
        // buffering it would cost what streaming saves.
        if body.is_end_stream()
            && let Some(candidates) = policy.mirror(fastrand::u64(..))
        {
            self.mirror(&routes, candidates, &parts, timeout);
        }
        let (response, instance, retries, mtls) = self
            .send(&route, service, parts, body, retry, timeout)
            .await?;
        notes.instance = Some(instance.id.clone());
        notes.retries = retries;
        let mut response = forward_response(response, upgrade);
        if debug {
            let hop = Hop {
                service,
                instance: &instance.id,
                subset: route.subset,
                tag: tag.as_ref(),
                source,
                fallback: route.fallback.is_some() || route.base_fallback,
                revision: routes.revision,
                peer: mtls.then_some(instance.identity.as_str()),
            };
            append_route(response.headers_mut(), &hop.entry());
        }
        Ok(response)
    }

    /// A destination that is no mesh service (an external API, an address dialled
    /// directly): the request goes to `address` — where the app sent it in transparent
    /// mode, as Istio's default `ALLOW_ANY` does, or the host's own address in
    /// explicit mode — unrouted. The tag is kept, so a mesh service behind that
    /// destination still sees it.
    async fn forward_to(
        &self,
        mut parts: Parts,
        body: Incoming,
        tag: Option<graylane_routing::Tag>,
        hops: u32,
        address: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let upgrade = forward_head(&mut parts, tag.as_ref(), hops);
        let request = Request::from_parts(parts, proxy::boxed(body));
        let to = Upstream {
            service: address,
            instance: address,
            address,
            timeout: self.upstream_timeout,
        };
        let response = self.clients.send(request, &to).await?;
        Ok(forward_response(response, upgrade))
    }

    /// RoutePolicy `mirror`, once the table chose to copy this request: a copy of its
    /// head to one of `candidates` (the mirror subset's), in the background, its answer
    /// ignored.
    fn mirror(&self, routes: &Routes, candidates: Candidates<'_>, head: &Parts, timeout: Duration) {
        let mut rng = fastrand::Rng::new();
        let Some((instance, in_flight)) =
            self.balancer
                .pick(candidates, None, &mut rng, Instant::now())
        else {
            return;
        };
        // A copy goes as the real request would (mTLS by the PeerPolicy), or not at all.
        let Ok(transport) = self.clients.transport_for(Some(routes), instance, false) else {
            return;
        };
        let peer = matches!(transport, Transport::Mtls(_)).then(|| instance.identity.clone());
        let mut request = proxy::copy_head(head);
        request
            .headers_mut()
            .insert(MIRROR_HEADER, HeaderValue::from_static("1"));
        let (clients, address) = (self.clients.clone(), instance.address.clone());
        let (service, id) = (instance.service.clone(), instance.id.clone());
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let transport = peer.as_deref().map_or(Transport::Plain, Transport::Mtls);
            let to = Upstream {
                service: &service,
                instance: &id,
                address: &address,
                timeout,
            };
            let _ = clients.send_to(request, &to, transport).await;
        });
    }

    /// sidecar.md "The tag on the way out": header, then baggage, then the trace
    /// table. An invalid header is removed and counted; it never travels further.
    fn resolve_tag(&self, parts: &mut Parts) -> (Option<graylane_routing::Tag>, TagSource) {
        let from_header = tag::from_header(&parts.headers);
        parts.headers.remove(TAG_HEADER);
        match from_header {
            HeaderTag::Valid(tag) => return (Some(tag), TagSource::Header),
            HeaderTag::Absent => {}
            HeaderTag::Invalid => {
                self.metrics.invalid_tags.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(tag) = tag::from_baggage(&parts.headers) {
            return (Some(tag), TagSource::Baggage);
        }
        let Some(trace) = tag::trace_id(&parts.headers) else {
            return (None, TagSource::None);
        };
        let Some(entry) = self.traces.recall(&trace, Instant::now()) else {
            return (None, TagSource::None);
        };
        for (name, value) in entry.headers {
            if self.propagate.contains(&name) && !parts.headers.contains_key(&name) {
                parts.headers.insert(name, value);
            }
        }
        match entry.tag {
            Some(tag) => (Some(tag), TagSource::Trace),
            None => (None, TagSource::None),
        }
    }
}

/// The metrics labels (`service`) of requests to no mesh service: passed through in
/// transparent mode, sent to an external host in explicit mode, tunnelled by CONNECT.
const PASSTHROUGH: &str = "passthrough";
const EXTERNAL: &str = "external";
const CONNECT_LABEL: &str = "connect";

/// The request head as it leaves: hop-by-hop headers out (RFC 9110 §7.6.1), the
/// resolved tag in. Returns the downstream's pending upgrade, if one was asked for.
fn forward_head(
    parts: &mut Parts,
    tag: Option<&graylane_routing::Tag>,
    hops: u32,
) -> Option<OnUpgrade> {
    let upgrade = proxy::upgrade::requested(&parts.headers)
        .then(|| proxy::upgrade::take(parts))
        .flatten();
    proxy::strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
    if let Some(tag) = tag {
        parts.headers.insert(
            TAG_HEADER,
            HeaderValue::from_str(tag.as_str()).expect("a tag is a valid header value"),
        );
    }
    target::set_hops(&mut parts.headers, hops);
    upgrade
}

/// The response as it goes back: an accepted upgrade joined, hop-by-hop headers out.
fn forward_response(response: Response<Incoming>, upgrade: Option<OnUpgrade>) -> Response<Body> {
    let mut response = response;
    proxy::upgrade::join_if_switched(upgrade, &mut response);
    let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, body) = response.into_parts();
    proxy::strip_hop_by_hop(&mut parts.headers, switched);
    Response::from_parts(parts, proxy::boxed(body))
}

/// The metrics `lane` label of a tag: the name of the lane it selects, `-` untagged,
/// `other` for a tag no lane declares (so a client cannot grow the series).
pub(crate) fn lane_label(routes: &Routes, tag: Option<&graylane_routing::Tag>) -> String {
    match tag {
        None => "-".into(),
        Some(t) => routes.table.lane_of(t).unwrap_or("other").into(),
    }
}

/// Marks a mirrored copy, so the receiving app can tell it from real traffic.
const MIRROR_HEADER: &str = "graylane-mirror";
