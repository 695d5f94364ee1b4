//! The shared layers, driven with `oneshot` and no sockets; and what the direction
//! tests build their calls and observers from.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{Request, StatusCode};
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::observe::Observed;
use super::{Call, Direction, Observe, Snapshot};
use crate::metrics::{Key, Metrics};
use crate::proxy::{self, ProxyError};
use crate::routes::Routing;
use crate::server::Peer;
use crate::spans::{TraceConfig, Tracer};

/// A trace id and a `traceparent` of it, for the tests that follow one trace.
pub(crate) const TRACE: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];
pub(crate) const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A body-less call for `uri` with `headers`, from a peer with `identity`.
pub(crate) fn call(uri: &str, headers: &[(&str, &str)], identity: Option<&str>) -> Call {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (head, body) = request
        .body(proxy::empty())
        .expect("a valid test request")
        .into_parts();
    let peer = Peer {
        addr: "127.0.0.1:40000".parse().expect("an address"),
        identity: identity.map(Arc::from),
    };
    Call::from_parts(head, body, peer)
}

/// A tracer that exports nothing.
pub(crate) fn tracer() -> Arc<Tracer> {
    let config = TraceConfig {
        endpoint: None,
        token: None,
        sampling: 1.0,
        ca_bundle: None,
    };
    Tracer::new(&config, Vec::new())
}

fn observe(metrics: &Arc<Metrics>) -> Observe {
    Observe::layer(Observed {
        direction: Direction::Outbound,
        service: "web".into(),
        instance_id: "web-1".into(),
        metrics: Arc::clone(metrics),
        tracer: tracer(),
    })
}

pub(crate) fn key(direction: &'static str, service: &str, namespace: &str, status: u16) -> Key {
    Key {
        direction,
        service: service.to_owned().into(),
        namespace: namespace.to_owned().into(),
        subset: "-".into(),
        lane: "-".into(),
        status,
    }
}

#[tokio::test]
async fn an_error_below_is_answered_and_counted_with_who_caused_it() {
    let metrics = Arc::new(Metrics::default());
    let failing = service_fn(|call: Call| async move {
        Ok::<_, Infallible>(call.answer(Err(ProxyError::NotReady)))
    });
    let stack = ServiceBuilder::new()
        .layer(observe(&metrics))
        .service(failing);
    let answer = stack
        .oneshot(call("http://orders/", &[], None))
        .await
        .expect("infallible");
    let response = answer.response.expect("rescued into a response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.ledger.notes.error_source, Some("internal"));
    assert_eq!(metrics.count(&key("outbound", "-", "-", 503)), 1);
    assert_eq!(metrics.in_flight_now(), 0);
}

#[tokio::test]
async fn what_an_inner_layer_learns_labels_the_metrics() {
    let metrics = Arc::new(Metrics::default());
    let answering = service_fn(|mut call: Call| async move {
        call.ledger.key.service = "orders".into();
        call.ledger.key.namespace = "shop".into();
        let response = http::Response::builder()
            .status(StatusCode::CREATED)
            .body(proxy::empty())
            .expect("a response");
        Ok::<_, Infallible>(call.answer(Ok(response)))
    });
    let stack = ServiceBuilder::new()
        .layer(observe(&metrics))
        .service(answering);
    let answer = stack
        .oneshot(call("http://orders.shop/", &[], None))
        .await
        .expect("infallible");
    assert_eq!(answer.status(), 201);
    assert_eq!(metrics.count(&key("outbound", "orders", "shop", 201)), 1);
    assert_eq!(metrics.count(&key("outbound", "-", "-", 201)), 0);
}

#[tokio::test]
async fn a_request_is_in_flight_until_its_client_goes_away_and_then_not_counted() {
    let metrics = Arc::new(Metrics::default());
    let never = service_fn(|_: Call| std::future::pending::<Result<super::Answer, Infallible>>());
    let stack = ServiceBuilder::new()
        .layer(observe(&metrics))
        .service(never);
    {
        let mut answering = pin!(stack.oneshot(call("http://orders/", &[], None)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(answering.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(answering.as_mut().poll(&mut cx), Poll::Pending));
        assert_eq!(metrics.in_flight_now(), 1);
    }
    assert_eq!(metrics.in_flight_now(), 0, "dropped: no longer in flight");
    assert_eq!(metrics.count(&key("outbound", "-", "-", 0)), 0);
}

#[tokio::test]
async fn the_span_continues_the_callers_trace_and_every_layer_sees_it() {
    let metrics = Arc::new(Metrics::default());
    let seen = service_fn(|call: Call| async move {
        let traceparent = call.head.headers["traceparent"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(
            !traceparent.contains("b7ad6b7169203331"),
            "a new span id: {traceparent}"
        );
        // New with every request: HTTP/2's HPACK is told not to index it.
        assert!(call.head.headers["traceparent"].is_sensitive());
        assert_eq!(call.ledger.notes.trace_id[0], 0x0a);
        Ok::<_, Infallible>(call.answer(Err(ProxyError::NotReady)))
    });
    let stack = ServiceBuilder::new().layer(observe(&metrics)).service(seen);
    let parent = TRACEPARENT;
    let answer = stack
        .oneshot(call("http://orders/", &[("traceparent", parent)], None))
        .await
        .expect("infallible");
    assert!(answer.ledger.span.is_some_and(|s| s.parent.is_some()));
}

#[tokio::test]
async fn one_snapshot_is_loaded_for_the_call_and_none_before_the_first() {
    let routing = Arc::new(Routing::default());
    let check = service_fn(|call: Call| async move {
        assert!(call.ledger.routes.is_none());
        assert_eq!(call.ledger.notes.revision, 0);
        Ok::<_, Infallible>(call.answer(Err(ProxyError::NotReady)))
    });
    let stack = ServiceBuilder::new()
        .layer(Snapshot::layer(routing))
        .service(check);
    let answer = stack
        .oneshot(call("http://orders/", &[], None))
        .await
        .expect("infallible");
    assert!(
        answer.response.is_err(),
        "no Observe: the error is left as it is"
    );
}
