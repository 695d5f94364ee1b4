//! What the outbound side reports beyond the metrics: per-destination traffic for the
//! control plane's rollout verdicts (`traffic`), and propagation gaps (`gaps`): an
//! untagged call with no trace context of a request this sidecar received, made while
//! a tagged request is in flight here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::Outbound;
use crate::pipeline::{After, Answer, Call, Finish, Layered};
use crate::traffic::Destination;

/// The layer and its service.
#[derive(Clone)]
pub(crate) struct Report<S = ()> {
    inner: S,
    outbound: Arc<Outbound>,
}

/// The half of `Report` that runs when the answer is there.
pub(crate) struct Reported(Arc<Outbound>);

impl Report {
    pub(crate) fn layer(outbound: Arc<Outbound>) -> Self {
        Self {
            inner: (),
            outbound,
        }
    }
}

impl<S> Layer<S> for Report {
    type Service = Report<S>;

    fn layer(&self, inner: S) -> Report<S> {
        Report {
            inner,
            outbound: Arc::clone(&self.outbound),
        }
    }
}

impl<S: Layered> Service<Call> for Report<S> {
    type Response = Answer;
    type Error = Infallible;
    type Future = After<S::Future, Reported>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        After::new(self.inner.call(call), Reported(Arc::clone(&self.outbound)))
    }
}

impl Finish for Reported {
    fn finish(self, mut answer: Answer) -> Answer {
        let outbound = &self.0;
        let status = answer.status();
        let ledger = &mut answer.ledger;
        let known_trace = || {
            ledger.span.as_ref().is_some_and(|span| {
                span.parent.is_some()
                    && outbound
                        .traces
                        .recall(&span.trace_id, Instant::now())
                        .is_some()
            })
        };
        if ledger.notes.tag.is_none() && ledger.key.service != "-" && !known_trace() {
            ledger.notes.gap = outbound.gaps.check(&ledger.key.service);
        }
        // Mesh services only (`namespace` is `-` for anything else), so the series
        // stay bounded by the rules, not by what hosts clients name.
        if ledger.key.namespace != "-" {
            let to = Destination {
                namespace: &ledger.key.namespace,
                service: &ledger.key.service,
                lane: &ledger.key.lane,
                subset: &ledger.key.subset,
            };
            outbound
                .traffic
                .record(&to, status, ledger.started.elapsed());
        }
        answer
    }
}
