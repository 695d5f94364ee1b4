//! Sending a routed request: picking an instance, the transport its PeerPolicy asks
//! for, and going again as the retry class of each failure and the destination's
//! `RetryPolicy` allow.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use graylane_routing::{Instance, RetryPolicy, Route, RoutingTable, Tag};
use http::{Request, Response};

use super::{Outbound, View, policy};
use crate::proxy::{self, Body, ProxyError, SendFailure, Transport, Upstream};

/// How many times one request goes again after refused connections, within its
/// timeout, whatever its retry policy (nothing of it was sent): two dead instances of
/// a lane, then a dead fallback lane's, still reach a live base.
const MAX_REFUSALS: usize = 3;

/// What routing the request again takes, when every instance its route had refused
/// the connection: the table it was routed by, its destination and tag, and room for
/// a table without the instances refused so far (`RoutingTable::without`), built
/// only then, one per refusal, each living as long as the route it gives.
pub(super) struct Reroute<'a, 'r> {
    pub(super) table: &'r RoutingTable,
    pub(super) namespace: &'a str,
    pub(super) service: &'a str,
    /// The service as errors name it: `orders`, or `orders.shop` outside `default`.
    pub(super) named: &'a str,
    pub(super) tag: Option<&'a Tag>,
    pub(super) spares: &'r Spares,
    /// The route the request was last routed again by (a lock only after refusals:
    /// see [`rerouted`](Self::rerouted)).
    pub(super) last: std::sync::Mutex<Option<Route<'r>>>,
}

/// See [`Reroute`]: the tables without the instances refused so far.
pub(super) type Spares = [OnceLock<Option<RoutingTable>>; MAX_REFUSALS];

impl<'r> Reroute<'_, 'r> {
    /// The route the request went by in the end, when refused connections routed it
    /// again (answered or not); `None` otherwise, without a lock when no table was
    /// ever built without a refused instance (every request but those).
    pub(super) fn rerouted(&self) -> Option<Route<'r>> {
        if self.spares.iter().all(|spare| spare.get().is_none()) {
            return None;
        }
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the attempt after a failed one goes: elsewhere among `route`'s
    /// candidates when one is left (not `failed`, not `refused`: every address that
    /// refused a connection of this request, `failed`'s too when it did); else, after
    /// a refusal, the route the table gives without the refused ones — a lane's
    /// fallback, a split's other subset; else `failed` once more. The second value is
    /// the address the next pick avoids.
    fn next(
        &self,
        route: Route<'r>,
        failed: &Instance,
        refused: &[String],
        request: &mut Request<Body>,
    ) -> (Route<'r>, Option<String>) {
        let service = self.service;
        let avoid = Some(failed.address.clone());
        let left = |i: &Instance| i.address != failed.address && !refused.contains(&i.address);
        if route.candidates.iter().any(left) {
            return (route, avoid);
        }
        let spare = refused
            .len()
            .checked_sub(1)
            .and_then(|n| self.spares.get(n));
        let rest = spare.and_then(|slot| {
            let gone = |i: &Instance| refused.contains(&i.address);
            slot.get_or_init(|| self.table.without(self.namespace, service, gone))
                .as_ref()
        });
        if let Some(rest) = rest {
            // The head is viewed as routing saw it (sticky keys, matches): moved out
            // and back, not copied.
            let taken = std::mem::replace(request, Request::new(proxy::empty()));
            let (parts, body) = taken.into_parts();
            let view = View {
                parts: &parts,
                source_ip: None,
            };
            let again = rest.route(self.namespace, service, self.tag, &view, fastrand::u64(..));
            *request = Request::from_parts(parts, body);
            if let Ok(again) = again
                && again.candidates.iter().any(left)
            {
                tracing::debug!(%service, instance = %failed.id, "refused, and the last of its route: routed without it");
                *self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(again);
                return (again, avoid);
            }
        }
        // Avoiding it would leave none: a 503 hiding the connect error that names it.
        (route, None)
    }
}

/// A request sent, and how.
pub(super) struct Sent<'r> {
    pub(super) response: Response<Body>,
    pub(super) instance: &'r Instance,
    /// Attempts after the first.
    pub(super) retries: u32,
    /// Whether it went over mesh mTLS.
    pub(super) mtls: bool,
}

impl Outbound {
    /// Picks an instance and sends, over mTLS when the PeerPolicy mode of the
    /// instance's service asks for it. A
    /// retryable (idempotent, body-less) request goes again as its retry policy says;
    /// any other request goes once more only when its first connection never came up
    /// (its body never left). Each attempt after a failed one goes where
    /// `Reroute::next` says.
    ///
    /// The request comes boxed, as `Clients::send_to` takes it (its doc says why).
    pub(super) async fn send<'r>(
        &self,
        mut route: Route<'r>,
        reroute: &Reroute<'_, 'r>,
        request: Box<Request<proxy::Body>>,
        retry: Option<&RetryPolicy>,
        replay: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> Result<Sent<'r>, ProxyError> {
        // Errors and logs name the service as the CLI does (`orders.shop`).
        let service = reroute.named;
        // A retryable request has no body, or one held whole (`replay`). Each attempt
        // is a copy of the head (with those bytes) when an attempt that reached the
        // instance may be retried (an answer takes the request) or the body is held.
        // Otherwise (the default policy) the request itself goes, and comes back with
        // a failure that lets it go again: a connect failure, a connection closed
        // unanswered (`SendError::request`).
        let copies = replay.is_some() || retry.is_some_and(RetryPolicy::retries_after_sending);
        let mut held = Some(request);
        let mut avoid: Option<String> = None;
        // The addresses that refused a connection of this request.
        let mut refused: Vec<String> = Vec::new();
        let mut retries_left = retry.map_or(0, RetryPolicy::attempts);
        // A connection that closed before any answer (a keep-alive race, a peer that
        // died) gets one retry of its own, whatever the policy: nothing was answered.
        let mut closed_retry = retry.is_some();
        let mut retries = 0;
        // Off → strict: an instance may refuse plaintext a moment before this sidecar
        // sees the new rules; that refusal is retried over mTLS, once.
        let mut force_mtls = false;
        // The PeerPolicy of the instances' service, as in force now.
        let routes = self.routes.load();
        // RoutePolicy `timeout` bounds the whole request, retries included (as
        // Envoy's route timeout does): each attempt gets what is left of it.
        let deadline = Instant::now() + timeout;
        loop {
            let mut rng = fastrand::Rng::new();
            let (instance, _in_flight) = self
                .balancer
                .pick(route.candidates, avoid.as_deref(), &mut rng, Instant::now())
                .ok_or_else(|| {
                    ProxyError::NoInstance(format!("no ready instance of service {service}"))
                })?;
            let request = match (&held, copies) {
                (Some(request), true) => {
                    let mut copy = proxy::copy_request(request);
                    if let Some(bytes) = &replay {
                        *copy.body_mut() = proxy::full(bytes.clone());
                    }
                    copy
                }
                // The loop only goes round with the request held again: a copy of
                // the head, or the request handed back by the failed attempt.
                _ => held.take().ok_or_else(|| {
                    ProxyError::Internal(format!(
                        "request to {service} already sent, yet another attempt began"
                    ))
                })?,
            };
            let transport = self
                .clients
                .transport_for(routes.as_deref(), instance, force_mtls)?;
            let to = Upstream {
                service,
                instance: &instance.id,
                address: &instance.address,
                timeout: deadline.saturating_duration_since(Instant::now()),
                // While attempts are copies the request is held: none need come back.
                hand_back: held.is_none(),
            };
            let mut outcome = self.clients.send_to(request, &to, transport).await;
            // What came back whole with a failure (nothing of it left, or a body-less
            // request unanswered) may go again; a copy held for retries goes first.
            if held.is_none()
                && let Err(e) = &mut outcome
            {
                held = e.request.take();
            }
            let failure = outcome.as_ref().err().map(|e| &e.failure);
            // An instance registered at this sidecar's own outbound listener (a wrong
            // --advertise-addr): over mTLS the handshake fails there, and in the clear
            // the hop count stops it; either way a loop, said as one (sidecar.md: 508).
            if matches!(failure, Some(SendFailure::Connect(_)))
                && super::target::is_own_instance(&instance.address, &self.own_listeners)
            {
                return Err(ProxyError::Loop(format!(
                    "instance {} of {service} is at {}, this sidecar's own listener",
                    instance.id, instance.address
                )));
            }
            // A plaintext connection closed unanswered by an instance that can do mTLS:
            // most likely it turned strict before this sidecar heard, so the request
            // goes again over mTLS. Idempotent ones only: a sidecar dying with the
            // request at its app closes the same way, and a POST sent again would be
            // acted on twice (explore19).
            if matches!(failure, Some(SendFailure::Closed(_)))
                && transport == Transport::Plain
                && !force_mtls
                && self.clients.can_reach(&instance.identity)
                && held.as_ref().is_some_and(|r| proxy::idempotent(r.method()))
            {
                tracing::debug!(%service, instance = %instance.id, "plaintext refused: sending over mTLS");
                force_mtls = true;
                continue;
            }
            // Refused: nothing of the request was sent, so it goes elsewhere whatever
            // its retry policy (a request with a body too), a few times, in its time.
            if failure.is_some_and(|f| f.retry().allows(false))
                && refused.len() < MAX_REFUSALS
                && Instant::now() < deadline
                && let Some(request) = held.as_deref_mut()
            {
                self.balancer.failed(&instance.address, Instant::now());
                tracing::debug!(%service, instance = %instance.id, "not connected: sending elsewhere");
                refused.push(instance.address.clone());
                (route, avoid) = reroute.next(route, instance, &refused, request);
                retries += 1;
                continue;
            }
            if matches!(
                failure,
                Some(SendFailure::Connect(_) | SendFailure::Other(_))
            ) {
                self.balancer.failed(&instance.address, Instant::now());
            }
            let again = match retry {
                None => false,
                Some(_) if closed_retry && matches!(failure, Some(SendFailure::Closed(_))) => {
                    closed_retry = false;
                    retries_left += 1;
                    true
                }
                Some(_) if retries_left == 0 => false,
                Some(r) => policy::outcome(&outcome).is_some_and(|o| r.retries(o)),
            };
            // An attempt that would start with no time left would only answer 504
            // for an answer already in hand; one whose request did not come back
            // (a failure after its head, over HTTP/2 unasked) has nothing to send.
            if again && held.is_some() && Instant::now() < deadline {
                retries_left -= 1;
                retries += 1;
                tracing::debug!(%service, instance = %instance.id, "retrying on another instance");
                if let Some(request) = held.as_deref_mut() {
                    (route, avoid) = reroute.next(route, instance, &refused, request);
                }
                continue;
            }
            let mtls = matches!(transport, Transport::Mtls(_));
            return match outcome {
                Ok(response) => Ok(Sent {
                    response,
                    instance,
                    retries,
                    mtls,
                }),
                // A late retry had only what was left: the caller waited all of it.
                Err(e) => Err(proxy::SendError { timeout, ..e }.into()),
            };
        }
    }
}
