//! Loads the routes in force once per call: every decision of the call (the tag, the
//! lane, the route, the policy, the trail's revision) is made by the same snapshot,
//! so a swap mid-request never mixes two rule sets. Below `Observe`, above every
//! layer that decides anything.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{Answer, Call, Layered};
use crate::routes::Shared;

/// The layer and its service.
#[derive(Clone)]
pub(crate) struct Snapshot<S = ()> {
    inner: S,
    routes: Shared,
}

impl Snapshot {
    pub(crate) fn layer(routes: Shared) -> Self {
        Self { inner: (), routes }
    }
}

impl<S> Layer<S> for Snapshot {
    type Service = Snapshot<S>;

    fn layer(&self, inner: S) -> Snapshot<S> {
        Snapshot {
            inner,
            routes: self.routes.clone(),
        }
    }
}

impl<S: Layered> Service<Call> for Snapshot<S> {
    type Response = Answer;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        let routes = self.routes.load();
        call.ledger.notes.revision = routes.as_ref().map_or(0, |r| r.revision);
        call.ledger.routes = routes;
        self.inner.call(call)
    }
}
