//! The outbound layers, driven with `oneshot` and no sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graylane_routing::Tag;
use http::StatusCode;
use http::header::HeaderName;
use tower::{Layer, ServiceExt, service_fn};

use super::report::Report;
use super::tag::OutboundTag;
use super::{Outbound, stack};
use crate::balance::Balancer;
use crate::metrics::Metrics;
use crate::pipeline::tests::{TRACE, TRACEPARENT, call, key, tracer};
use crate::pipeline::{Answer, Call};
use crate::proxy::{self, Clients, ProxyError};
use crate::tag::{TagSource, TraceEntry, TraceTable};

fn outbound() -> Outbound {
    Outbound {
        service: "web".into(),
        instance_id: "web-1".into(),
        routes: Arc::default(),
        balancer: Arc::new(Balancer::new(Duration::from_secs(5), Instant::now())),
        clients: Clients::new(Duration::from_secs(1), None, Arc::default()),
        traces: Arc::new(TraceTable::new(16, Duration::from_secs(60))),
        namespace: "default".into(),
        cluster_domain: "cluster.local".into(),
        own_listeners: Vec::new(),
        connect_timeout: Duration::from_secs(1),
        propagate: vec![HeaderName::from_static("x-tenant")],
        upstream_timeout: Duration::from_secs(1),
        metrics: Arc::new(Metrics::default()),
        tracer: tracer(),
        gaps: Arc::default(),
        traffic: Arc::default(),
    }
}

/// An outbound whose trace table holds `TRACE` with tag `gray` and `x-tenant: acme`.
fn outbound_remembering_a_gray_acme_trace() -> Arc<Outbound> {
    let outbound = Arc::new(outbound());
    let entry = TraceEntry {
        tag: Tag::parse("gray"),
        headers: vec![(
            HeaderName::from_static("x-tenant"),
            "acme".parse().expect("a value"),
        )],
    };
    outbound.traces.remember(TRACE, entry, Instant::now());
    outbound
}

/// What the layer below `OutboundTag` got.
struct Seen {
    headers: http::HeaderMap,
    tag: Option<Tag>,
    source: TagSource,
}

async fn tagged(outbound: Arc<Outbound>, call: Call) -> Seen {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let capture = service_fn(move |call: Call| {
        let seen = Seen {
            headers: call.head.headers.clone(),
            tag: call.ledger.tag.clone(),
            source: call.ledger.source,
        };
        assert_eq!(call.ledger.notes.source, seen.source.as_str());
        if let Some(tx) = tx.lock().expect("not poisoned").take() {
            let _ = tx.send(seen);
        }
        async move { Ok::<Answer, Infallible>(call.answer(Err(ProxyError::NotReady))) }
    });
    let _ = OutboundTag::layer(outbound)
        .layer(capture)
        .oneshot(call)
        .await;
    rx.await.expect("the inner layer was called")
}

#[tokio::test]
async fn an_invalid_header_is_counted_removed_and_the_baggage_asked_next() {
    let outbound = Arc::new(outbound());
    let headers = [
        ("gray-publish", "not a tag!"),
        ("baggage", "gray-publish=gray,k=v"),
    ];
    let seen = tagged(
        Arc::clone(&outbound),
        call("http://orders/", &headers, None),
    )
    .await;
    assert_eq!(seen.tag, Tag::parse("gray"));
    assert_eq!(seen.source, TagSource::Baggage);
    assert!(
        !seen.headers.contains_key("gray-publish"),
        "never forwarded raw"
    );
    let invalid = outbound
        .metrics
        .invalid_tags
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(invalid, 1);
}

#[tokio::test]
async fn an_invalid_tag_in_the_baggage_is_counted_too() {
    let outbound = Arc::new(outbound());
    let headers = [("baggage", "gray-publish=gr@y,k=v")];
    let seen = tagged(
        Arc::clone(&outbound),
        call("http://orders/", &headers, None),
    )
    .await;
    assert_eq!((seen.tag, seen.source), (None, TagSource::None));
    let invalid = outbound
        .metrics
        .invalid_tags
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(invalid, 1);
}

#[tokio::test]
async fn a_call_with_only_traceparent_gets_its_traces_tag_and_propagated_headers() {
    let outbound = outbound_remembering_a_gray_acme_trace();
    let headers = [("traceparent", TRACEPARENT)];
    let seen = tagged(
        Arc::clone(&outbound),
        call("http://orders/", &headers, None),
    )
    .await;
    assert_eq!(seen.tag, Tag::parse("gray"));
    assert_eq!(seen.source, TagSource::Trace);
    assert_eq!(seen.headers["x-tenant"], "acme");
}

/// What an OpenTelemetry SDK forwards: `traceparent` and `baggage` (the tag in it),
/// not the app's `x-tenant`. The tag is the call's; `x-tenant` comes from the trace.
#[tokio::test]
async fn a_call_carrying_its_tag_still_gets_the_propagated_headers_it_lacks() {
    let outbound = outbound_remembering_a_gray_acme_trace();
    let headers = [
        ("traceparent", TRACEPARENT),
        ("baggage", "gray-publish=gray"),
    ];
    let seen = tagged(
        Arc::clone(&outbound),
        call("http://orders/", &headers, None),
    )
    .await;
    assert_eq!(seen.tag, Tag::parse("gray"));
    assert_eq!(seen.source, TagSource::Baggage);
    assert_eq!(seen.headers["x-tenant"], "acme");
}

#[tokio::test]
async fn the_apps_own_header_wins_over_the_trace_table() {
    let outbound = outbound_remembering_a_gray_acme_trace();
    let headers = [
        ("traceparent", TRACEPARENT),
        ("gray-publish", "blue"),
        ("x-tenant", "globex"),
    ];
    let seen = tagged(
        Arc::clone(&outbound),
        call("http://orders/", &headers, None),
    )
    .await;
    assert_eq!(seen.tag, Tag::parse("blue"));
    assert_eq!(seen.source, TagSource::Header);
    assert_eq!(seen.headers["x-tenant"], "globex");
}

#[tokio::test]
async fn before_any_snapshot_the_whole_stack_answers_503_and_counts_it() {
    let outbound = outbound();
    let metrics = Arc::clone(&outbound.metrics);
    let traffic = Arc::clone(&outbound.traffic);
    let stack = stack(outbound).0;
    let answer = stack
        .oneshot(call("http://orders/", &[("gray-publish", "gray")], None))
        .await
        .expect("infallible");
    let response = answer.response.expect("rescued");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(metrics.count(&key("outbound", "-", "-", 503)), 1);
    assert!(traffic.is_empty(), "no mesh service was called");
}

#[tokio::test]
async fn calls_to_a_mesh_service_are_reported_with_their_status_and_others_are_not() {
    let outbound = Arc::new(outbound());
    let answering = service_fn(|mut call: Call| async move {
        let service = call.head.uri.host().unwrap_or("-").to_owned();
        if service == "orders" {
            call.ledger.key.namespace = "default".into();
        }
        call.ledger.key.service = service.into();
        let response = http::Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(proxy::empty())
            .expect("a response");
        Ok::<_, Infallible>(call.answer(Ok(response)))
    });
    let report = Report::layer(Arc::clone(&outbound)).layer(answering);
    for uri in ["http://orders/", "http://example.com/"] {
        let _ = report.clone().oneshot(call(uri, &[], None)).await;
    }
    let report = outbound.traffic.drain().expect("one series");
    assert_eq!(report.series.len(), 1, "{:?}", report.series);
    assert_eq!(report.series[0].service, "orders");
    assert_eq!(report.series[0].requests, 1);
    assert_eq!(report.series[0].errors, 1);
}
