//! The outermost layer of both directions: what every request leaves behind (the
//! in-flight gauge, a span, the request metrics) and the one place an error becomes
//! the caller's response. Outermost, so it times and counts everything the inner
//! layers do, and sees their errors before the caller does.

use std::convert::Infallible;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{After, Answer, Call, Finish, Layered};
use crate::metrics::{InFlight, Metrics};
use crate::spans::{Kind, Tracer};

/// Which listener a stack serves: the metrics' `direction` and the span's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

/// What `Observe` records to, and who records it.
pub(crate) struct Observed {
    pub(crate) direction: Direction,
    /// This instance, for the spans' attributes.
    pub(crate) service: String,
    pub(crate) instance_id: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracer: Arc<Tracer>,
}

/// The layer and its service.
#[derive(Clone)]
pub(crate) struct Observe<S = ()> {
    inner: S,
    observed: Arc<Observed>,
}

/// The half of `Observe` that runs when the answer is there.
pub(crate) struct Done {
    observed: Arc<Observed>,
    _in_flight: InFlight,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl Observe {
    pub(crate) fn layer(observed: Observed) -> Self {
        Self {
            inner: (),
            observed: Arc::new(observed),
        }
    }
}

impl<S> Layer<S> for Observe {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observed: Arc::clone(&self.observed),
        }
    }
}

impl<S: Layered> Service<Call> for Observe<S> {
    type Response = Answer;
    type Error = Infallible;
    type Future = After<S::Future, Done>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let observed = &self.observed;
        let in_flight = observed.metrics.start();
        let span = observed.tracer.begin(&mut call.head.headers);
        let ledger = &mut call.ledger;
        ledger.key.direction = observed.direction.as_str();
        // A gRPC client gets the sidecar's own errors in gRPC's form; a peer sidecar
        // (a proven identity, or the hop count it writes) gets the HTTP status, to
        // count it as the error it is and answer its own client in turn: answered
        // 200 with a `grpc-status`, a failing lane looked healthy to its callers.
        // Asked in order of cost: most calls stop at the version or the content type.
        let from_sidecar = || {
            call.peer.identity.is_some()
                || call.head.headers.contains_key(crate::trail::HOPS_HEADER)
        };
        ledger.grpc = call.head.version == http::Version::HTTP_2
            && crate::proxy::is_grpc(&call.head.headers)
            && !(observed.direction == Direction::Inbound && from_sidecar());
        ledger.notes.trace_id = span.trace_id;
        ledger.notes.peer_identity = call.peer.identity.as_deref().map(str::to_owned);
        ledger.span = Some(span);
        let done = Done {
            observed: Arc::clone(observed),
            _in_flight: in_flight,
        };
        After::new(self.inner.call(call), done)
    }
}

impl Finish for Done {
    fn finish(self, mut answer: Answer) -> Answer {
        let (response, status) = match answer.response {
            // The next hop's sidecar answered with an error of its own: for a gRPC
            // client, in gRPC's form too.
            Ok(response) if answer.ledger.grpc => {
                let status = response.status();
                (crate::proxy::grpc_form(response), status)
            }
            Ok(response) => {
                let status = response.status();
                (response, status)
            }
            Err(e) => {
                answer.ledger.notes.error_source = Some(e.caused_by().as_str());
                let (mut response, status) = if answer.ledger.grpc {
                    e.into_grpc_response()
                } else {
                    let response = e.into_response();
                    let status = response.status();
                    (response, status)
                };
                if let Some(entry) = answer.ledger.failed_hop.take() {
                    let entry = format!("{entry};error={}", status.as_u16());
                    crate::trail::append_route(response.headers_mut(), &entry);
                }
                (response, status)
            }
        };
        let ledger = &mut answer.ledger;
        // A gRPC caller's error is answered 200 with its `grpc-status`; counted as
        // the error it is.
        ledger.key.status = status.as_u16();
        let observed = &self.observed;
        if let Some(span) = ledger.span.as_ref().filter(|s| observed.tracer.records(s)) {
            // Attributes cost allocations: only for spans that are recorded.
            let (kind, name) = match observed.direction {
                Direction::Inbound => (Kind::Server, format!("inbound {}", observed.service)),
                Direction::Outbound => (Kind::Client, format!("outbound {}", ledger.key.service)),
            };
            let notes = mem::take(&mut ledger.notes);
            let status = ledger.key.status;
            let attributes = notes.attributes(&observed.service, &observed.instance_id, status);
            observed.tracer.finish(span, kind, name, attributes, status);
        }
        let key = mem::take(&mut ledger.key);
        observed.metrics.record(key, ledger.started.elapsed());
        answer.response = Ok(response);
        answer
    }
}
