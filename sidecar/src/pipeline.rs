//! The request path of both listeners, as one stack of layers (linkerd2-proxy's model):
//! `inbound::stack` and `outbound::stack` build it top-down, and every layer whose
//! position matters says why there.
//!
//! ```text
//! hyper ─► Stack: the request and its connection's peer become a Call
//!   ─► Observe      both  in-flight gauge, span, metrics, and the one rescue that
//!                         turns a ProxyError into its response        [observe]
//!   ─► Report       out   the control plane's traffic series, propagation gaps
//!   ─► Snapshot     both  the routes in force, loaded once for the whole call
//!   ─► InboundTag   in    caller's tag ─► trust boundary ─► TagPolicy ─► trace table
//!      OutboundTag  out   Gray-Publish ─► baggage ─► trace table
//!   ─► app::serve   in    to --app-addr                                [inbound/app]
//!      route::serve out   RoutingTable::route and ::policy, pick, send [outbound/route]
//! ```
//!
//! A layer hands the [`Call`] on and gets an [`Answer`] back; the [`Ledger`] travels in
//! both, so what an inner layer learned (the service, the lane, the instance, the
//! retries) reaches the outer layers that record it, errors included.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use graylane_routing::Tag;
use http::request::Parts;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use crate::metrics::Key;
use crate::proxy::{Body, ProxyError};
use crate::routes::Routes;
use crate::server::{Handler, Peer};
use crate::spans::{Notes, SpanContext};
use crate::tag::TagSource;

mod snapshot;

pub(crate) mod observe;
pub(crate) use self::observe::{Direction, Observe};
pub(crate) use self::snapshot::Snapshot;

/// One request on its way in: its head and body, who sent it, and the ledger.
pub(crate) struct Call {
    pub(crate) head: Parts,
    pub(crate) body: Body,
    pub(crate) peer: Peer,
    /// Boxed: a call and its answer pass through every layer by value, and the
    /// ledger is most of their size (half a kilobyte).
    pub(crate) ledger: Box<Ledger>,
}

/// One request on its way back: the response, or the error to answer with.
pub(crate) struct Answer {
    pub(crate) response: Result<Response<Body>, ProxyError>,
    pub(crate) ledger: Box<Ledger>,
}

/// What the layers learn about a call, for the ones that record it.
pub(crate) struct Ledger {
    /// The metrics labels.
    pub(crate) key: Key,
    /// The span attributes.
    pub(crate) notes: Notes,
    /// Set by `Observe`.
    pub(crate) span: Option<SpanContext>,
    pub(crate) started: Instant,
    /// Set by `Snapshot`: `None` before the first snapshot.
    pub(crate) routes: Option<Arc<Routes>>,
    /// Set by the tag layers.
    pub(crate) tag: Option<Tag>,
    pub(crate) source: TagSource,
    /// Set by the outbound route when the request asked for the trail: this hop's
    /// `Graylane-Route` entry, for an answer the sidecar makes instead of the
    /// upstream's (`Observe` adds its status). Without it the trail of a failed
    /// request stops at the hop before the one that failed.
    pub(crate) failed_hop: Option<String>,
    /// Set by `Observe`: the call is gRPC, so the sidecar's own errors are answered
    /// in gRPC's form.
    pub(crate) grpc: bool,
}

/// A layer's service, as every layer of the stack takes its inner one. Errors are
/// answers (`Answer::response`), so the service itself never fails.
pub(crate) trait Layered:
    Service<Call, Response = Answer, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
}

impl<S> Layered for S where
    S: Service<Call, Response = Answer, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The future of the innermost layers, whose work is an `async fn`.
pub(crate) type Boxed = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

/// What a layer does once the inner layers answered (see [`After`]).
pub(crate) trait Finish {
    fn finish(self, answer: Answer) -> Answer;
}

pin_project_lite::pin_project! {
    /// The inner layers' future, then `finish` on its answer. Dropped before that (the
    /// client went away), `finish` is dropped unrun: a guard it holds ends there.
    pub(crate) struct After<F, A> {
        #[pin]
        inner: F,
        finish: Option<A>,
    }
}

/// A guard kept until the answer is there (a `Finish` that only ends it).
pub(crate) struct Hold<T>(pub(crate) T);

/// The whole stack as the server's [`Handler`].
pub(crate) struct Stack<S>(pub(crate) S);

impl Call {
    /// A call as it arrives from the server.
    pub(crate) fn new(request: Request<Body>, peer: Peer) -> Self {
        let (head, body) = request.into_parts();
        Self::from_parts(head, body, peer)
    }

    pub(crate) fn from_parts(head: Parts, body: Body, peer: Peer) -> Self {
        Self {
            head,
            body,
            peer,
            ledger: Box::new(Ledger::new()),
        }
    }

    /// The answer to this call.
    #[cfg(test)]
    pub(crate) fn answer(self, response: Result<Response<Body>, ProxyError>) -> Answer {
        Answer {
            response,
            ledger: self.ledger,
        }
    }
}

impl Ledger {
    fn new() -> Self {
        Self {
            key: Key {
                direction: "-",
                service: Cow::Borrowed("-"),
                namespace: Cow::Borrowed("-"),
                subset: Cow::Borrowed("-"),
                lane: Cow::Borrowed("-"),
                status: 0,
            },
            notes: Notes::default(),
            span: None,
            started: Instant::now(),
            routes: None,
            tag: None,
            source: TagSource::None,
            failed_hop: None,
            grpc: false,
        }
    }
}

impl Ledger {
    /// The tag the call travels with, where it was found, and its lane label: `-`
    /// untagged, `other` for a tag no lane declares (so a client cannot grow the
    /// series).
    pub(crate) fn set_tag(&mut self, tag: Option<Tag>, source: TagSource) {
        if let Some(routes) = &self.routes {
            self.key.lane = match &tag {
                None => Cow::Borrowed("-"),
                Some(t) => match routes.table.lane_of(t) {
                    Some(lane) => Cow::Owned(lane.to_owned()),
                    None => Cow::Borrowed("other"),
                },
            };
        }
        self.notes.tag = tag.as_ref().map(|t| t.as_str().to_string());
        self.notes.source = source.as_str();
        self.tag = tag;
        self.source = source;
    }
}

impl Answer {
    /// The status the caller gets: the response's, or the error's.
    pub(crate) fn status(&self) -> u16 {
        match &self.response {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.status().as_u16(),
        }
    }
}

impl<F, A> After<F, A> {
    pub(crate) fn new(inner: F, finish: A) -> Self {
        Self {
            inner,
            finish: Some(finish),
        }
    }
}

impl<F, A> Future for After<F, A>
where
    F: Future<Output = Result<Answer, Infallible>>,
    A: Finish,
{
    type Output = Result<Answer, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(match this.finish.take() {
            Some(finish) => finish.finish(answer),
            None => answer,
        }))
    }
}

impl<T> Finish for Hold<T> {
    fn finish(self, answer: Answer) -> Answer {
        answer
    }
}

impl<S: Layered> Handler for Stack<S> {
    async fn handle(self: Arc<Self>, peer: Peer, request: Request<Body>) -> Response<Body> {
        let Ok(answer) = self.0.clone().oneshot(Call::new(request, peer)).await;
        // `Observe` has rescued every error already; this is for a stack without it.
        answer.response.unwrap_or_else(ProxyError::into_response)
    }
}

#[cfg(test)]
pub(crate) mod tests;
