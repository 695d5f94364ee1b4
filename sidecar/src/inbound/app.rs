//! The innermost inbound layer: the request to this instance's app, and its answer.

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response};
use hyper::upgrade::OnUpgrade;

use super::Inbound;
use crate::pipeline::{Answer, Boxed, Call, Ledger};
use crate::proxy::{self, Body, ProxyError, SendError, SendFailure, Upstream, forward};
use crate::server::Peer;
use crate::trail::{self, HOPS_HEADER, Hop, MIRROR_HEADER};
use crate::transparent::OriginalDst;

/// The layer's work for one call (a `tower::service_fn` in `inbound::stack`). What
/// needs no waiting is done before the future is made, so the future (boxed per
/// request) holds the request boxed, not by value (see `Clients::send_to`).
pub(super) fn serve(inbound: Arc<Inbound>, call: Call) -> Boxed {
    let Call {
        head,
        body,
        peer,
        ledger,
    } = call;
    let vouched = || inbound.vouched_for(ledger.routes.as_deref(), &peer);
    let leaving = Leaving::new(head, body, vouched);
    Box::pin(async move {
        let response = inbound.to_app(leaving, &peer, &ledger).await;
        Ok(Answer { response, ledger })
    })
}

/// A request on its way to the app, and what its answer needs from it.
struct Leaving {
    request: Box<Request<Body>>,
    upgrade: Option<OnUpgrade>,
    /// The call came from another sidecar (it counted the hop).
    from_sidecar: bool,
    /// The client asked for the `Graylane-Route` trail.
    debug: bool,
    /// Where iptables found the connection dialled to, when not this listener.
    dialled: Option<std::net::SocketAddr>,
}

impl Leaving {
    /// `vouched`: the peer is a sidecar (`Inbound::vouched_for`). The marks only a
    /// sidecar writes are believed from one only: a client sending the hop count
    /// would hide the entry hop from the trail, one sending the mirror marker would
    /// make an app skip a real request's side effects as a mirrored copy's.
    fn new(mut parts: Parts, body: Body, vouched: impl FnOnce() -> bool) -> Self {
        // Set by the calling outbound sidecar; removed here, so the app's own calls
        // start counting from zero (see `trail::count_hop`).
        let hops = parts.headers.remove(HOPS_HEADER).is_some();
        let mirrored = parts.headers.contains_key(MIRROR_HEADER);
        // Asked only when a mark is there: most requests carry none, and the answer
        // costs a look at the mTLS mode when the peer proved no identity.
        let vouched = (hops || mirrored) && vouched();
        let from_sidecar = hops && vouched;
        if mirrored && !vouched {
            parts.headers.remove(MIRROR_HEADER);
        }
        let debug = trail::wanted(&parts.headers);
        let dialled = parts.extensions.get::<OriginalDst>().map(|o| o.0);
        let upgrade = forward::head(&mut parts);
        Self {
            request: Box::new(Request::from_parts(parts, body)),
            upgrade,
            from_sidecar,
            debug,
            dialled,
        }
    }
}

impl Inbound {
    async fn to_app(
        &self,
        leaving: Leaving,
        peer: &Peer,
        ledger: &Ledger,
    ) -> Result<Response<Body>, ProxyError> {
        let Leaving {
            request,
            upgrade,
            from_sidecar,
            debug,
            dialled,
        } = leaving;
        // Allocates only for a connection redirected from another of the app's ports.
        let port = self.app.dialled(dialled);
        let app = Upstream {
            service: &self.service,
            instance: &self.instance_id,
            address: port.as_deref().unwrap_or(self.app.addr()),
            timeout: proxy::grpc_timeout(request.headers()).unwrap_or(self.upstream_timeout),
            // Sent again if idempotent, when its connection closed unanswered.
            hand_back: proxy::idempotent(request.method()),
        };
        let mut outcome = self.clients.send(request, &app).await;
        // An idempotent body-less request whose connection to the app closed before
        // any answer (the app's keep-alive timeout racing it, an app restarting) goes
        // once more, on a new connection: the client hands it back whole. Decided in
        // a statement of its own: a borrow of `outcome` held across the await below
        // would make the future require a `Sync` body.
        let resend = match &mut outcome {
            Err(SendError {
                failure: SendFailure::Closed(reason),
                request,
                ..
            }) => request.take().filter(|r| proxy::idempotent(r.method())).inspect(|_| {
                tracing::debug!(%reason, "app connection closed before answering; sending again");
            }),
            _ => None,
        };
        if let Some(request) = resend {
            outcome = self.clients.send(request, &app).await;
        }
        let mut response = forward::response(outcome?, upgrade);
        if debug && !from_sidecar {
            // The hop that entered the mesh: no outbound sidecar decided it.
            let hop = Hop {
                service: &self.service,
                namespace: &self.namespace,
                instance: &self.instance_id,
                subset: None,
                tag: ledger.tag.as_ref(),
                source: ledger.source,
                fallback: false,
                revision: ledger.routes.as_ref().map_or(0, |r| r.revision),
                peer: peer.identity.as_deref(),
            };
            trail::append_route(response.headers_mut(), &hop.entry());
        }
        Ok(response)
    }
}
