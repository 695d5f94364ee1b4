//! Recent traces, so `graylane trace` works with nothing but graylane running: this
//! replica is an OTLP/gRPC trace receiver (the standard `TraceService`, on the gRPC
//! port), and keeps what sidecars export in a bounded index by trace id.
//!
//! Bounded four ways: traces kept (oldest first out), spans kept in total, spans and
//! bytes per trace, and bytes: a span keeps at most 128 attributes of its own and 128
//! of its resource, each value cut at 1 KiB (OpenTelemetry's attribute limits), a
//! trace at most 8 MiB, and the index at most 64 MiB. Without them, one small export
//! (a 64 KiB resource attribute over 20,000 spans) took 1.3 GB. A full index forgets
//! whole traces, never parts of the newest ones. A span without a valid id (8 bytes,
//! not all zero), or whose id its trace already holds, is dropped: ids are unique
//! within a trace, and a repeated or empty one could make the hop tree a cycle or
//! hide it. An export is at most 4 MiB (the OpenTelemetry Collector's default; a
//! sidecar's batch of 512 spans is far less), and is filed off the runtime's threads.
//!
//! Spans marked as propagation gaps (`graylane.gap`, see the sidecar's `gaps`) are also
//! counted per (service, destination) for `graylane gaps`, since the replica started;
//! at most 10,000 pairs (later new pairs are dropped and logged once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use graylane_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::{Request, Response, Status};

const MAX_TRACES: usize = 10_000;
const MAX_SPANS: usize = 200_000;
const MAX_SPANS_PER_TRACE: usize = 1_000;
const MAX_BYTES: usize = 64 << 20;
const MAX_TRACE_BYTES: usize = 8 << 20;
/// The largest export taken (a gRPC message).
pub(crate) const MAX_EXPORT: usize = 4 << 20;
const MAX_ATTRIBUTES: usize = 128;
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 1024;
const MAX_GAPS: usize = 10_000;

/// The index of recent traces.
#[derive(Default)]
pub struct Traces {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Propagation gaps by (service, destination): count and the latest example.
    gaps: BTreeMap<(String, String), (u64, String)>,
    /// New gap pairs not kept since the table was full.
    gaps_dropped: u64,
    by_id: HashMap<String, Held>,
    /// Trace ids by first arrival, oldest first.
    order: VecDeque<String>,
    spans: usize,
    /// What the spans kept hold, roughly (strings and a fixed cost per span).
    bytes: usize,
}

/// One trace's spans, and their weight (kept, not summed again at each span).
#[derive(Default)]
struct Held {
    spans: Vec<pb::TraceSpan>,
    bytes: usize,
}

impl Traces {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each update is a few map operations; a poisoned lock still holds a usable
        // index.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files every span of an OTLP export under its trace id.
    pub fn insert(&self, request: ExportTraceServiceRequest) -> usize {
        let mut accepted = 0;
        let mut inner = self.lock();
        for resource_spans in request.resource_spans {
            let resource: Vec<(String, String)> = resource_spans
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .filter_map(pair)
                        .take(MAX_ATTRIBUTES)
                        .collect()
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let trace_id = hex(&span.trace_id);
                    let parent_ok =
                        span.parent_span_id.is_empty() || valid_id(&span.parent_span_id);
                    if trace_id.len() != 32 || !valid_id(&span.span_id) || !parent_ok {
                        continue;
                    }
                    let mut attributes: BTreeMap<String, String> = span
                        .attributes
                        .iter()
                        .filter_map(pair)
                        .take(MAX_ATTRIBUTES)
                        .collect();
                    let gap = attributes
                        .get("graylane.gap")
                        .is_some_and(|g| g == "true")
                        .then(|| {
                            let at = |k: &str| attributes.get(k).cloned().unwrap_or_default();
                            let key = (at("graylane.service"), at("graylane.destination"));
                            (key, at("graylane.gap_trace"))
                        });
                    // The resource's win over a span's own of the same key.
                    attributes.extend(resource.iter().cloned());
                    let kind = match SpanKind::try_from(span.kind) {
                        Ok(SpanKind::Server) => "server",
                        Ok(SpanKind::Client) => "client",
                        _ => "internal",
                    };
                    let stored = pb::TraceSpan {
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: cut(&span.name, MAX_VALUE),
                        kind: kind.into(),
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                        attributes: attributes.into_iter().collect(),
                    };
                    if inner.add(trace_id, stored) {
                        accepted += 1;
                        // Counted once per span kept: an exporter's retry is no gap.
                        if let Some((key, example)) = gap {
                            inner.count_gap(key, example);
                        }
                    }
                }
            }
        }
        accepted
    }

    /// The spans of `trace_id` (lowercase hex), in start order.
    pub fn get(&self, trace_id: &str) -> Option<pb::Trace> {
        let inner = self.lock();
        let held = inner.by_id.get(trace_id)?;
        Some(trace(trace_id, &held.spans))
    }

    /// Every (service, destination) with gaps, most first.
    pub fn gaps(&self) -> Vec<pb::Gap> {
        let inner = self.lock();
        let mut out: Vec<pb::Gap> = inner
            .gaps
            .iter()
            .map(|((service, destination), (count, example))| pb::Gap {
                service: service.clone(),
                destination: destination.clone(),
                count: *count,
                example_trace_id: example.clone(),
            })
            .collect();
        out.sort_by_key(|g| std::cmp::Reverse(g.count));
        out
    }

    /// Up to `limit` traces, newest first.
    pub fn recent(&self, limit: usize) -> Vec<pb::Trace> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| Some(trace(id, &inner.by_id.get(id)?.spans)))
            .collect()
    }
}

impl Inner {
    fn add(&mut self, trace_id: String, span: pb::TraceSpan) -> bool {
        let weight = size(&span);
        let held = self.by_id.get(&trace_id);
        if let Some(held) = held
            && (held.spans.len() >= MAX_SPANS_PER_TRACE
                || held.bytes + weight > MAX_TRACE_BYTES
                || held.spans.iter().any(|s| s.span_id == span.span_id))
        {
            return false;
        }
        let new_trace = usize::from(held.is_none());
        self.make_room(&trace_id, new_trace, weight);
        let held = self.by_id.entry(trace_id).or_insert_with_key(|id| {
            self.order.push_back(id.clone());
            Held::default()
        });
        held.bytes += weight;
        held.spans.push(span);
        self.bytes += weight;
        self.spans += 1;
        true
    }

    /// Forgets the oldest traces until one more span of `weight` (and `new_trace`
    /// more traces) fits. Never the trace being filled, `filling`: the newest are kept
    /// whole (its own bound, `MAX_TRACE_BYTES`, is under the index's).
    fn make_room(&mut self, filling: &str, new_trace: usize, weight: usize) {
        while self.order.len() + new_trace > MAX_TRACES
            || self.spans >= MAX_SPANS
            || self.bytes + weight > MAX_BYTES
        {
            let Some(at) = self.order.iter().position(|id| id != filling) else {
                break;
            };
            let Some(oldest) = self.order.remove(at) else {
                break;
            };
            if let Some(gone) = self.by_id.remove(&oldest) {
                self.spans -= gone.spans.len();
                self.bytes -= gone.bytes;
            }
        }
    }

    /// One more gap from `service` to `destination`; a new pair only while there is
    /// room (a sidecar credential could otherwise grow the table without end).
    fn count_gap(&mut self, key: (String, String), example: String) {
        let full = self.gaps.len() >= MAX_GAPS;
        let entry = match self.gaps.get_mut(&key) {
            Some(entry) => entry,
            None if full => {
                if self.gaps_dropped == 0 {
                    tracing::warn!(
                        kept = MAX_GAPS,
                        "propagation gaps: the table is full; gaps between new pairs of services are not counted"
                    );
                }
                self.gaps_dropped += 1;
                return;
            }
            None => self.gaps.entry(key).or_default(),
        };
        entry.0 += 1;
        entry.1 = example;
    }
}

/// A stored span's weight for [`MAX_BYTES`]: its strings and what holding them costs
/// (each string's allocation and the map's entry, ~100 bytes an attribute; the
/// struct and its vector slot).
fn size(span: &pb::TraceSpan) -> usize {
    let strings =
        span.span_id.len() + span.parent_span_id.len() + span.name.len() + span.kind.len();
    let attributes: usize = span
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 100)
        .sum();
    strings + attributes + 256
}

/// A span id as OpenTelemetry has it: 8 bytes, not all zero.
fn valid_id(id: &[u8]) -> bool {
    id.len() == 8 && id.iter().any(|b| *b != 0)
}

/// `s` cut to at most `max` bytes, at a character boundary, in an allocation of its
/// own size: a `String` truncated in place keeps all of its capacity (an 8 MiB value
/// cut to 1 KiB would still hold 8 MiB).
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn trace(trace_id: &str, spans: &[pb::TraceSpan]) -> pb::Trace {
    let mut spans = spans.to_vec();
    spans.sort_by_key(|s| s.start_unix_nano);
    pb::Trace {
        trace_id: trace_id.to_string(),
        spans,
    }
}

/// An attribute as kept: a value cut at [`MAX_VALUE`]; none with a key past [`MAX_KEY`].
fn pair(kv: &KeyValue) -> Option<(String, String)> {
    if kv.key.len() > MAX_KEY {
        return None;
    }
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => cut(s, MAX_VALUE),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    };
    Some((kv.key.clone(), value))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    graylane_routing::push_hex(&mut out, bytes);
    out
}

/// The OTLP/gRPC `TraceService` in front of the index.
pub struct Collector {
    pub traces: std::sync::Arc<Traces>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        // Filing a few thousand spans takes milliseconds under the index's lock: off
        // the runtime's threads, which serve probes and the API meanwhile.
        let traces = std::sync::Arc::clone(&self.traces);
        let request = request.into_inner();
        tokio::task::spawn_blocking(move || traces.insert(request))
            .await
            .map_err(|_| Status::internal("filing the spans failed"))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
