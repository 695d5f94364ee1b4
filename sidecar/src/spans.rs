//! OpenTelemetry spans: one per proxied request, exported over OTLP/gRPC.
//!
//! ```text
//! request ─► Tracer::begin: traceparent → trace id + parent (or a new trace); a new
//!            span id; the request goes on with traceparent = (trace id, our span),
//!            so the next hop's span is our child, also when the app relays only that
//!         ─► Tracer::finish ─► try_send into a bounded queue (full: dropped, counted)
//!                 one task: a batch of ≤ 512 spans, or every second ─► TraceService/Export
//! ```
//!
//! The data path never waits for the exporter: a slow or absent collector costs
//! dropped spans (`graylane_spans_dropped_total`), not latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graylane_routing::{TraceParent, baggage_entry};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use tokio::sync::mpsc;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The baggage entry that carries a copy of `traceparent` (set by the inbound sidecar),
/// for apps that relay `baggage` but not `traceparent`.
pub(crate) const TRACE_BAGGAGE_KEY: &str = "graylane-trace";
/// Spans waiting for export at most; past this they are dropped.
const QUEUE: usize = 4096;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go and how many.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// OTLP/gRPC endpoint (`http://host:port`); `None`: no spans (traceparent is
    /// still carried on).
    pub endpoint: Option<String>,
    /// Bearer token for the endpoint (the control plane's sidecar token).
    pub token: Option<String>,
    /// Share of new traces recorded, 0.0–1.0 (a caller's sampled flag is followed).
    pub sampling: f64,
    /// CA certificates (PEM) an `https://` endpoint must chain to.
    pub ca_bundle: Option<Vec<u8>>,
}

/// Records and exports this sidecar's spans.
pub(crate) struct Tracer {
    queue: Option<mpsc::Sender<Span>>,
    sampling: f64,
    pub(crate) exported: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// The trace position of one proxied request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanContext {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent: Option<[u8; 8]>,
    pub(crate) sampled: bool,
    start_ns: u64,
}

/// Server (inbound) or client (outbound) side of a hop.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Server,
    Client,
}

impl Tracer {
    /// Starts the exporter task when an endpoint is set. `resource` names this
    /// instance (service, instance id, labels).
    pub(crate) fn new(config: &TraceConfig, resource: Vec<KeyValue>) -> Arc<Self> {
        let (queue, rx) = match &config.endpoint {
            Some(_) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let tracer = Arc::new(Self {
            queue,
            sampling: config.sampling.clamp(0.0, 1.0),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        if let (Some(rx), Some(endpoint)) = (rx, config.endpoint.clone()) {
            tokio::spawn(export(
                rx,
                endpoint,
                config.token.clone(),
                config.ca_bundle.clone(),
                resource,
                Arc::clone(&tracer),
            ));
        }
        tracer
    }

    /// The span of a request arriving with `headers`: a child of its `traceparent`,
    /// or the root of a new trace. Rewrites `traceparent` to point at this span.
    pub(crate) fn begin(&self, headers: &mut HeaderMap) -> SpanContext {
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
            .or_else(|| {
                headers
                    .get_all(crate::tag::BAGGAGE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|b| TraceParent::parse(baggage_entry(b, TRACE_BAGGAGE_KEY)?))
            });
        let (trace_id, parent, sampled) = match incoming {
            Some(t) => (t.trace_id, Some(t.parent_id), t.sampled()),
            None => (
                nonzero_bytes::<16>(),
                None,
                self.queue.is_some() && fastrand::f64() < self.sampling,
            ),
        };
        let span_id = nonzero_bytes::<8>();
        let header = TraceParent {
            trace_id,
            parent_id: span_id,
            flags: u8::from(sampled),
        }
        .to_bytes();
        if let Ok(mut value) = HeaderValue::from_bytes(&header) {
            // New with every request: HTTP/2 should not index it (HPACK's table would
            // churn, evicting the fields that do repeat).
            value.set_sensitive(true);
            // A static name: inserting by `&str` copies a custom name every time.
            headers.insert(TRACEPARENT, value);
        }
        let mut context = SpanContext {
            trace_id,
            span_id,
            parent,
            sampled,
            start_ns: 0,
        };
        // The clock is read only for a span that will be exported.
        if self.records(&context) {
            context.start_ns = now_ns();
        }
        context
    }

    /// Whether the span of `context` is recorded (sampled, and spans are exported).
    pub(crate) fn records(&self, context: &SpanContext) -> bool {
        self.queue.is_some() && context.sampled
    }

    /// Records the finished span of `context` (when sampled and exporting).
    pub(crate) fn finish(
        &self,
        context: &SpanContext,
        kind: Kind,
        name: String,
        attributes: Vec<KeyValue>,
        http_status: u16,
    ) {
        let Some(queue) = &self.queue else { return };
        if !context.sampled {
            return;
        }
        let error = http_status >= 500 || http_status == 0;
        let end = now_ns();
        // A gap is also an event, where trace viewers show it on the timeline.
        let events = attributes
            .iter()
            .find(|kv| kv.key == "graylane.gap_trace")
            .map(|kv| {
                vec![span::Event {
                    time_unix_nano: end,
                    name: "graylane.propagation_gap".into(),
                    attributes: vec![kv.clone()],
                    ..Default::default()
                }]
            })
            .unwrap_or_default();
        let span = Span {
            trace_id: context.trace_id.to_vec(),
            span_id: context.span_id.to_vec(),
            parent_span_id: context.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: u32::from(context.sampled),
            name,
            kind: match kind {
                Kind::Server => span::SpanKind::Server,
                Kind::Client => span::SpanKind::Client,
            } as i32,
            start_time_unix_nano: context.start_ns,
            end_time_unix_nano: end,
            attributes,
            events,
            status: Some(Status {
                code: if error {
                    status::StatusCode::Error
                } else {
                    status::StatusCode::Unset
                } as i32,
                message: String::new(),
            }),
            ..Default::default()
        };
        if queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A string attribute.
pub(crate) fn attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub(crate) fn attr_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A boolean attribute.
pub(crate) fn attr_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

/// Batches spans and exports them until the sender side is gone. A failed export
/// drops its batch (counted): the collector being down must not grow memory.
async fn export(
    mut rx: mpsc::Receiver<Span>,
    endpoint: String,
    token: Option<String>,
    ca_bundle: Option<Vec<u8>>,
    resource: Vec<KeyValue>,
    tracer: Arc<Tracer>,
) {
    let channel = match crate::grpc::endpoint(&endpoint, ca_bundle.as_deref()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy(),
        Err(e) => {
            tracing::warn!(%endpoint, error = %e, "--otlp-endpoint unusable; spans are dropped");
            return;
        }
    };
    let authorization = token.and_then(|t| format!("Bearer {t}").parse().ok());
    let mut client =
        TraceServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            if let Some(value) = &authorization {
                request.metadata_mut().insert(
                    "authorization",
                    tonic::metadata::MetadataValue::clone(value),
                );
            }
            Ok(request)
        });
    let mut batch = Vec::with_capacity(BATCH);
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    loop {
        let closed = tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() < BATCH {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = ticker.tick() => false,
        };
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            let count = spans.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: resource.clone(),
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "graylane-sidecar".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            match client.export(request).await {
                Ok(_) => {
                    tracer.exported.fetch_add(count, Ordering::Relaxed);
                }
                Err(e) => {
                    tracer.dropped.fetch_add(count, Ordering::Relaxed);
                    tracing::debug!(error = %e, count, "span export failed; batch dropped");
                }
            }
        }
        if closed {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    graylane_routing::push_hex(&mut out, bytes);
    out
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Random bytes, not all zero (W3C: an all-zero id is invalid). Eight at a time: each
/// call to the thread's generator costs a thread-local lookup.
fn nonzero_bytes<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let random = fastrand::u64(..).to_le_bytes();
            chunk.copy_from_slice(&random[..chunk.len()]);
        }
        if out != [0; N] {
            return out;
        }
    }
}

/// What the proxy learned about one hop, for its span.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Outbound: the service called.
    pub(crate) destination: Option<String>,
    /// Outbound: the namespace of the service called.
    pub(crate) destination_namespace: Option<String>,
    /// Outbound: the instance that served.
    pub(crate) instance: Option<String>,
    pub(crate) tag: Option<String>,
    /// Where the tag came from: header | baggage | trace | rule | none.
    pub(crate) source: &'static str,
    pub(crate) lane: Option<String>,
    pub(crate) subset: Option<String>,
    /// Why the lane did not serve (`no ready instance in lane gray, served by base`).
    pub(crate) fallback: Option<String>,
    /// The rule revision the decision was made by.
    pub(crate) revision: u64,
    /// Attempts after the first.
    pub(crate) retries: u32,
    /// This span's trace.
    pub(crate) trace_id: [u8; 16],
    /// Outbound: a propagation gap (see `gaps`), with the tagged trace the call
    /// probably belonged to.
    pub(crate) gap: Option<[u8; 16]>,
    /// Inbound: the mesh identity the caller proved over mTLS (none in the clear).
    pub(crate) peer_identity: Option<String>,
    /// Who caused the error when the sidecar answered instead of the upstream
    /// (`downstream`, `upstream`, `policy`, `internal`).
    pub(crate) error_source: Option<&'static str>,
}

impl Notes {
    /// The span attributes (`graylane.*`, and the HTTP status by its semantic name).
    pub(crate) fn attributes(self, service: &str, instance: &str, status: u16) -> Vec<KeyValue> {
        let mut out = vec![
            attr("graylane.service", service),
            attr("graylane.instance", instance),
            attr("graylane.tag", self.tag.unwrap_or_else(|| "-".into())),
            attr(
                "graylane.tag_source",
                if self.source.is_empty() {
                    "none"
                } else {
                    self.source
                },
            ),
            attr_int(
                "graylane.revision",
                i64::try_from(self.revision).unwrap_or(i64::MAX),
            ),
            attr_int("http.response.status_code", i64::from(status)),
            attr_bool("graylane.fallback", self.fallback.is_some()),
        ];
        let optional = [
            ("graylane.destination", self.destination),
            ("graylane.destination.namespace", self.destination_namespace),
            ("graylane.destination_instance", self.instance),
            ("graylane.lane", self.lane),
            ("graylane.subset", self.subset),
            ("graylane.fallback_reason", self.fallback),
            ("graylane.peer_identity", self.peer_identity),
            ("graylane.error.source", self.error_source.map(String::from)),
        ];
        out.extend(optional.into_iter().filter_map(|(k, v)| Some(attr(k, v?))));
        out.push(attr_int("graylane.retries", i64::from(self.retries)));
        if let Some(trace) = self.gap {
            out.push(attr_bool("graylane.gap", true));
            out.push(attr("graylane.gap_trace", hex(&trace)));
        }
        out
    }
}
