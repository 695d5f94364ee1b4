//! The innermost outbound layer: where the call goes. A mesh service is routed by the
//! routing table and carried out here; anything else goes where the app sent it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use graylane_routing::{Candidates, RouteError, Tag};
use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Request, Response};
use hyper::body::Body as _;
use hyper::upgrade::OnUpgrade;

use super::send::{Reroute, Sent, Spares};
use super::target::{self, Dest, Target};
use super::{Outbound, View, policy};
use crate::metrics::Key;
use crate::pipeline::{Answer, Boxed, Call, Ledger};
use crate::proxy::{self, Body, ProxyError, Transport, Upstream, forward};
use crate::routes::Routes;
use crate::spans::Notes;
use crate::tag::TAG_HEADER_NAME;
use crate::trail::{self, Hop, MIRROR_HEADER};
use crate::transparent::OriginalDst;

/// The metrics labels (`service`) of requests to no mesh service: passed through in
/// transparent mode, sent to an external host in explicit mode, tunnelled by CONNECT.
const PASSTHROUGH: &str = "passthrough";
const EXTERNAL: &str = "external";
const CONNECT_LABEL: &str = "connect";

/// A request on its way to a mesh service: the head, the body and the hop count it
/// leaves with. Boxed once per request: the futures of the route carry a pointer,
/// not its 370 bytes at each level (see `Clients::send_to`).
struct Leaving {
    parts: Parts,
    body: Body,
    hops: u32,
}

/// The layer's work for one call (a `tower::service_fn` in `outbound::stack`).
pub(super) fn serve(outbound: Arc<Outbound>, call: Call) -> Boxed {
    let Call {
        head,
        body,
        mut ledger,
        ..
    } = call;
    let leaving = Box::new(Leaving {
        parts: head,
        body,
        hops: 0,
    });
    Box::pin(async move {
        let response = outbound.route(leaving, &mut ledger).await;
        Ok(Answer { response, ledger })
    })
}

impl Outbound {
    /// Sorts the call out by its destination: CONNECT, a host outside the mesh, or a
    /// mesh service.
    async fn route(
        &self,
        mut leaving: Box<Leaving>,
        ledger: &mut Ledger,
    ) -> Result<Response<Body>, ProxyError> {
        let routes = ledger.routes.clone().ok_or(ProxyError::NotReady)?;
        let parts = &leaving.parts;
        let hops = trail::count_hop(&parts.headers)?;
        // Set when iptables redirected the app's connection here (transparent mode).
        let original = parts.extensions.get::<OriginalDst>().map(|o| o.0);
        let target = target::target(parts, &self.namespace, &self.cluster_domain)?;
        if parts.method == Method::CONNECT {
            // Asks for a scoped sidecar's missing endpoints itself, as below.
            ledger.key.service = CONNECT_LABEL.into();
            return self
                .connect(leaving.parts, target, routes, ledger.tag.as_ref())
                .await;
        }
        leaving.hops = hops;
        let dest = match (target, original) {
            (Target::Service(dest), _) => dest,
            // Not a mesh service: where the app sent it (transparent) or to the host
            // itself (explicit), never to a mesh instance.
            (Target::External { .. }, Some(to)) => {
                ledger.key.service = PASSTHROUGH.into();
                return self
                    .forward_to(leaving, ledger.tag.as_ref(), &to.to_string())
                    .await;
            }
            (Target::External { host, port }, None) => {
                ledger.key.service = EXTERNAL.into();
                let to = target::resolve(&host, port, &self.own_listeners).await?;
                return self
                    .forward_to(leaving, ledger.tag.as_ref(), &to[0].to_string())
                    .await;
            }
        };
        // Scoped endpoints: a mesh service whose endpoints are not held yet is asked
        // for, waiting at most 1 s, before it is routed (`discovery::ensure`).
        let routes =
            crate::discovery::ensure(&self.routes, routes, &dest.namespace, &dest.service).await;
        let (unknown, why) = match self.to_service(&routes, &dest, leaving, ledger).await {
            Err(Unrouted::Unknown(leaving, why)) => (leaving, why),
            Err(Unrouted::Failed(e)) => return Err(e),
            Ok(response) => return Ok(response),
        };
        if let Some(to) = original {
            // Transparent mode: not a mesh service, so it goes where the app sent it.
            ledger.failed_hop = None;
            ledger.key.service = PASSTHROUGH.into();
            return self
                .forward_to(unknown, ledger.tag.as_ref(), &to.to_string())
                .await;
        }
        match dest.outside(&self.namespace, &routes) {
            // `api.corp`, and no namespace `corp` in the mesh: an ordinary host.
            Some((host, port)) => {
                ledger.failed_hop = None;
                ledger.key.service = EXTERNAL.into();
                let to = target::resolve(&host, port, &self.own_listeners).await?;
                self.forward_to(unknown, ledger.tag.as_ref(), &to[0].to_string())
                    .await
            }
            None => Err(why.into()),
        }
    }

    /// A mesh service: the routing table decides the lane, subset and policy; this
    /// carries them out. A service the table does not know comes back unsent.
    async fn to_service(
        &self,
        routes: &Routes,
        dest: &Dest,
        mut leaving: Box<Leaving>,
        ledger: &mut Ledger,
    ) -> Result<Response<Body>, Unrouted> {
        let (namespace, service) = (&dest.namespace, &dest.service);
        let view = View {
            parts: &leaving.parts,
            source_ip: None,
        };
        let tag = ledger.tag.as_ref();
        let debug = trail::wanted(&leaving.parts.headers);
        let decided = routes
            .table
            .route(namespace, service, tag, &view, fastrand::u64(..));
        // What this hop decided, should it answer itself; a success's entry names
        // the instance instead (below).
        let failed_hop = |route: Option<&graylane_routing::Route<'_>>, rerouted: bool| {
            let hop = Hop {
                service,
                namespace,
                instance: "-",
                subset: route.and_then(|r| r.subset),
                tag,
                source: ledger.source,
                fallback: rerouted
                    || route.is_some_and(|r| r.fallback.is_some() || r.base_fallback),
                revision: routes.revision,
                peer: None,
            };
            hop.entry()
        };
        if debug {
            ledger.failed_hop = Some(failed_hop(decided.as_ref().ok(), false));
        }
        let route = match decided {
            Err(why @ RouteError::UnknownService { .. }) => {
                return Err(Unrouted::Unknown(leaving, why));
            }
            // Labelled by its service too, so a 503 (no instance in the lane) shows
            // where it happened.
            route => {
                ledger.key.service = Cow::Owned(service.clone());
                ledger.key.namespace = Cow::Owned(namespace.clone());
                ledger.notes.destination = Some(service.clone());
                ledger.notes.destination_namespace = Some(namespace.clone());
                route?
            }
        };
        self.note(&route, &mut ledger.key, &mut ledger.notes);
        let hops = leaving.hops;
        let upgrade = leave(&mut leaving.parts, tag, hops);
        // One lookup for the destination's timeout, retries, fault and mirror, all
        // decided by the table; what follows only carries them out.
        let policy = routes.table.policy(namespace, service);
        let fault = policy.fault(tag, fastrand::u64(..));
        // The service as errors name it: `orders.shop` outside `default`.
        let named = graylane_routing::qualified_ref(namespace, service);
        policy::inject_fault(fault, &named).await?;
        // Only idempotent requests are ever sent twice: body-less ones, and those with
        // a body small enough to hold (rules.md: "never a body over 64 KiB").
        let Leaving { parts, body, .. } = *leaving;
        // A gRPC client's deadline replaces the default; a RoutePolicy timeout, the
        // operator's bound, still caps it (see `proxy::grpc_timeout`).
        let timeout = match (policy.timeout(), proxy::grpc_timeout(&parts.headers)) {
            (Some(policy), Some(client)) => policy.min(client),
            (Some(policy), None) => policy,
            (None, Some(client)) => client,
            (None, None) => self.upstream_timeout,
        };
        let idempotent = proxy::idempotent(&parts.method);
        let (body, replay) = if idempotent && policy.retry().attempts() > 0 {
            held_for_retries(body, timeout).await?
        } else {
            (body, None)
        };
        let retry =
            (idempotent && (body.is_end_stream() || replay.is_some())).then(|| policy.retry());
        // Only body-less requests are copied: a streamed body goes to one place, and
        // buffering it would cost what streaming saves.
        if body.is_end_stream()
            && let Some(candidates) = policy.mirror(fastrand::u64(..))
        {
            self.mirror(routes, candidates, &parts, timeout);
        }
        let request = Box::new(Request::from_parts(parts, body));
        let spares = Spares::default();
        let reroute = Reroute {
            table: &routes.table,
            namespace,
            service,
            named: &named,
            tag,
            spares: &spares,
            last: std::sync::Mutex::new(None),
        };
        let sent = self
            .send(route, &reroute, request, retry, replay, timeout)
            .await;
        // Routed again without instances that refused the connection: a fallback of
        // its own kind; the notes and the trail say where it went in the end.
        let route = match reroute.rerouted() {
            Some(again) => {
                self.note(&again, &mut ledger.key, &mut ledger.notes);
                if ledger.notes.fallback.is_none() {
                    ledger.notes.fallback =
                        Some("instances refused the connection: routed without them".into());
                }
                if debug {
                    ledger.failed_hop = Some(failed_hop(Some(&again), true));
                }
                again
            }
            None => route,
        };
        let Sent {
            response,
            instance,
            retries,
            mtls,
        } = sent?;
        ledger.notes.instance = Some(instance.id.clone());
        ledger.notes.retries = retries;
        let mut response = forward::response(response, upgrade);
        if debug {
            let hop = Hop {
                service,
                namespace,
                instance: &instance.id,
                subset: route.subset,
                tag,
                source: ledger.source,
                fallback: ledger.notes.fallback.is_some(),
                revision: routes.revision,
                peer: mtls.then_some(instance.identity.as_str()),
            };
            trail::append_route(response.headers_mut(), &hop.entry());
        }
        Ok(response)
    }

    /// What the route decided, in the request's metrics labels and notes.
    fn note(&self, route: &graylane_routing::Route<'_>, key: &mut Key, notes: &mut Notes) {
        key.subset = route
            .subset
            .map_or(Cow::Borrowed("-"), |s| Cow::Owned(s.to_owned()));
        notes.lane = route.lane.map(String::from);
        notes.subset = route.subset.map(String::from);
        notes.fallback = match (&route.fallback, route.base_fallback) {
            (Some(info), _) => Some(info.to_string()),
            (None, true) => Some("no candidate by weights or base: any instance".into()),
            (None, false) => None,
        };
        if route.base_fallback {
            self.metrics.base_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A destination that is no mesh service (an external API, an address dialled
    /// directly): the request goes to `address` — where the app sent it in transparent
    /// mode, as Istio's default `ALLOW_ANY` does, or the host's own address in
    /// explicit mode — unrouted. The tag is kept, so a mesh service behind that
    /// destination still sees it.
    async fn forward_to(
        &self,
        leaving: Box<Leaving>,
        tag: Option<&Tag>,
        address: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let Leaving {
            mut parts,
            body,
            hops,
        } = *leaving;
        let upgrade = leave(&mut parts, tag, hops);
        let to = Upstream {
            service: address,
            instance: address,
            address,
            timeout: self.upstream_timeout,
            // Never sent again: an external host has no instances to try.
            hand_back: false,
        };
        let response = self
            .clients
            .send(Box::new(Request::from_parts(parts, body)), &to)
            .await?;
        Ok(forward::response(response, upgrade))
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
                hand_back: false,
            };
            let _ = clients.send_to(request, &to, transport).await;
        });
    }
}

/// Why `to_service` sent nothing.
enum Unrouted {
    /// The table knows no such service: the request, for the caller to send elsewhere,
    /// and the error to answer with if there is nowhere else.
    Unknown(Box<Leaving>, RouteError),
    Failed(ProxyError),
}

impl From<ProxyError> for Unrouted {
    fn from(e: ProxyError) -> Self {
        Self::Failed(e)
    }
}

impl From<RouteError> for Unrouted {
    fn from(e: RouteError) -> Self {
        Self::Failed(e.into())
    }
}

/// The request head as it leaves for the next hop: hop-by-hop headers out, the
/// resolved tag in, the hop count up. Returns the downstream's pending upgrade.
/// The largest request body held whole so that a retry can send it again.
const RETRY_BODY_MAX: u64 = 64 * 1024;

/// A body of a known length up to [`RETRY_BODY_MAX`], read whole (within the
/// request's timeout) so each attempt sends its bytes; any other body as it is, sent
/// once. Envoy buffers for retries the same way, up to its buffer limit.
async fn held_for_retries(
    body: Body,
    timeout: Duration,
) -> Result<(Body, Option<bytes::Bytes>), ProxyError> {
    use http_body_util::BodyExt as _;
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= RETRY_BODY_MAX);
    if body.is_end_stream() || !small {
        return Ok((body, None));
    }
    let bytes = match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => return Err(ProxyError::BadRequest(format!("request body: {e}"))),
        Err(_) => {
            return Err(ProxyError::BadRequest(format!(
                "request body not received within {:.1}s",
                timeout.as_secs_f64()
            )));
        }
    };
    Ok((proxy::empty(), Some(bytes)))
}

fn leave(parts: &mut Parts, tag: Option<&Tag>, hops: u32) -> Option<OnUpgrade> {
    let upgrade = forward::head(parts);
    // Only a copy this sidecar mirrors carries the marker (`mirror`), never an app's.
    parts.headers.remove(MIRROR_HEADER);
    if let Some(tag) = tag {
        parts.headers.insert(
            TAG_HEADER_NAME,
            HeaderValue::from_str(tag.as_str()).expect("a tag is a valid header value"),
        );
    }
    trail::set_hops(&mut parts.headers, hops);
    upgrade
}
