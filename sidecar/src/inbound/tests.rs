//! The inbound tag layer, driven with `oneshot` and no sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use graylane_routing::Tag;
use http::header::HeaderName;
use tower::{Layer, ServiceExt, service_fn};

use super::Inbound;
use super::tag::InboundTag;
use crate::metrics::Metrics;
use crate::pipeline::tests::{TRACE, TRACEPARENT, call, tracer};
use crate::pipeline::{Answer, Call};
use crate::proxy::{Clients, ProxyError};
use crate::tag::{TagSource, TraceTable};

fn inbound() -> Inbound {
    Inbound {
        service: "orders".into(),
        namespace: "default".into(),
        instance_id: "orders-1".into(),
        app: Arc::new(crate::transparent::AppAddr::new("127.0.0.1:1", Vec::new())),
        routes: Arc::default(),
        clients: Clients::new(Duration::from_secs(1), None, Arc::default()),
        traces: Arc::new(TraceTable::new(16, Duration::from_secs(60))),
        propagate: vec![HeaderName::from_static("x-tenant")],
        upstream_timeout: Duration::from_secs(1),
        metrics: Arc::new(Metrics::default()),
        tracer: tracer(),
        gaps: Arc::default(),
    }
}

/// What the app would be sent, and the tag the ledger carries.
struct Seen {
    headers: http::HeaderMap,
    tag: Option<Tag>,
    source: TagSource,
    /// Whether the gap detector counted a tagged request in flight meanwhile.
    tagged_in_flight: bool,
}

async fn decided(inbound: Arc<Inbound>, call: Call) -> Seen {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(std::sync::Mutex::new(Some(tx)));
    let gaps = Arc::clone(&inbound.gaps);
    let capture = service_fn(move |call: Call| {
        let seen = Seen {
            headers: call.head.headers.clone(),
            tag: call.ledger.tag.clone(),
            source: call.ledger.source,
            tagged_in_flight: gaps.any_tagged(),
        };
        if let Some(tx) = tx.lock().expect("not poisoned").take() {
            let _ = tx.send(seen);
        }
        async move { Ok::<Answer, Infallible>(call.answer(Err(ProxyError::NotReady))) }
    });
    let _ = InboundTag::layer(Arc::clone(&inbound))
        .layer(capture)
        .oneshot(call)
        .await;
    assert!(!inbound.gaps.any_tagged(), "answered: no longer in flight");
    rx.await.expect("the inner layer was called")
}

#[tokio::test]
async fn a_tag_from_a_peer_that_proved_no_identity_is_stripped_before_any_snapshot() {
    let inbound = Arc::new(inbound());
    let headers = [
        ("gray-publish", "gray"),
        ("baggage", "gray-publish=gray,k=v"),
    ];
    let seen = decided(Arc::clone(&inbound), call("http://orders/", &headers, None)).await;
    assert_eq!(seen.tag, None);
    assert_eq!(seen.source, TagSource::None);
    assert!(!seen.headers.contains_key("gray-publish"));
    assert_eq!(
        seen.headers["baggage"], "k=v",
        "nor can it come back through baggage"
    );
    assert_eq!(inbound.metrics.untrusted_tags.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_proved_peers_tag_reaches_the_app_in_both_places_and_is_remembered() {
    let inbound = Arc::new(inbound());
    let headers = [
        ("gray-publish", "gray"),
        ("traceparent", TRACEPARENT),
        ("x-tenant", "acme"),
    ];
    let peer = Some("spiffe://cluster.local/ns/default/sa/web");
    let mut call = call("http://orders/", &headers, peer);
    // What `Observe` above it reads from `traceparent`.
    call.ledger.notes.trace_id = TRACE;
    let seen = decided(Arc::clone(&inbound), call).await;
    assert_eq!(seen.tag, Tag::parse("gray"));
    assert_eq!(seen.source, TagSource::Header);
    assert!(seen.tagged_in_flight);
    assert_eq!(seen.headers["gray-publish"], "gray");
    let baggage = seen.headers["baggage"].to_str().expect("ascii");
    assert!(baggage.contains("gray-publish=gray"), "{baggage}");
    assert!(
        seen.headers["baggage"].is_sensitive(),
        "it carries the trace position: not for HPACK to index"
    );
    let remembered = inbound
        .traces
        .recall(&TRACE, Instant::now())
        .expect("remembered for the outbound side");
    assert_eq!(remembered.tag, Tag::parse("gray"));
    assert_eq!(remembered.headers.len(), 1);
    assert_eq!(remembered.headers[0].1, "acme");
}

#[tokio::test]
async fn an_invalid_header_from_a_proved_peer_is_counted_and_the_baggage_decides() {
    let inbound = Arc::new(inbound());
    let headers = [("gray-publish", "a,b"), ("baggage", "gray-publish=blue")];
    let peer = Some("spiffe://cluster.local/ns/default/sa/web");
    let seen = decided(Arc::clone(&inbound), call("http://orders/", &headers, peer)).await;
    assert_eq!(seen.tag, Tag::parse("blue"));
    assert_eq!(seen.source, TagSource::Baggage);
    assert_eq!(seen.headers["gray-publish"], "blue");
    assert_eq!(inbound.metrics.invalid_tags.load(Ordering::Relaxed), 1);
}
