//! `graylane trace TRACE_ID` / `graylane trace --recent N`: the hops of a request as a
//! tree, from the spans the sidecars exported to the control plane.
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736
//! frontend v1 [gray from header] 200 2.1 ms
//! └─ → orders: orders-v2, lane gray 200 1.6 ms
//!    └─ orders v2 [gray from trace] 200 1.3 ms
//!       └─ → payments: payments-v1, lane gray, fallback (no ready instance in lane gray, served by base) 200 0.5 ms
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use graylane_proto::v1 as pb;
use serde_json::{Value, json};

use super::client::Connect;
use super::output;
use super::{CliError, Format};

pub(crate) async fn run(
    connect: &Connect,
    format: Option<Format>,
    trace_id: Option<String>,
    recent: Option<u32>,
) -> Result<(), CliError> {
    let mut client = connect.client().await?;
    let traces = match (trace_id, recent) {
        (Some(id), None) => vec![
            client
                .get_trace(pb::GetTraceRequest { trace_id: id })
                .await?
                .into_inner(),
        ],
        (None, Some(n)) => {
            client
                .recent_traces(pb::RecentTracesRequest { limit: n })
                .await?
                .into_inner()
                .traces
        }
        _ => {
            return Err(CliError::usage("give a TRACE_ID or --recent N (not both)"));
        }
    };
    match format.unwrap_or(Format::Table) {
        Format::Table => {
            for trace in &traces {
                output::text(&tree(trace));
            }
        }
        f => output::raw(f, &Value::Array(traces.iter().map(to_json).collect())),
    }
    Ok(())
}

/// One trace as `trace -o json` prints it, also the HTTP API's traces answer.
pub(crate) fn to_json(trace: &pb::Trace) -> Value {
    json!({
        "traceId": trace.trace_id,
        "spans": trace.spans.iter().map(|s| json!({
            "spanId": s.span_id,
            "parentSpanId": (!s.parent_span_id.is_empty()).then_some(&s.parent_span_id),
            "name": s.name,
            "kind": s.kind,
            "startUnixNano": s.start_unix_nano,
            "durationMs": duration_ms(s),
            "attributes": s.attributes.iter().collect::<BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The trace as an indented tree, children under their parent in start order. Spans
/// whose parent did not reach the control plane (e.g. the app's own) start a branch.
pub(crate) fn tree(trace: &pb::Trace) -> String {
    let ids: HashSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&pb::TraceSpan>> = BTreeMap::new();
    let mut roots = Vec::new();
    for span in &trace.spans {
        if ids.contains(span.parent_span_id.as_str()) {
            children.entry(&span.parent_span_id).or_default().push(span);
        } else {
            roots.push(span);
        }
    }
    let mut out = format!("trace {}\n", trace.trace_id);
    let mut shown = HashSet::new();
    for root in roots {
        walk(&mut out, root, &children, "", None, &mut shown);
    }
    // Spans only reachable from each other (a parent cycle, from a broken exporter)
    // have no root: shown as branches of their own rather than hidden.
    for span in &trace.spans {
        if !shown.contains(span.span_id.as_str()) {
            walk(&mut out, span, &children, "", None, &mut shown);
        }
    }
    out
}

/// Writes `span` and its children, each span once (`shown`), however the parent links
/// loop.
fn walk<'a>(
    out: &mut String,
    span: &'a pb::TraceSpan,
    children: &BTreeMap<&str, Vec<&'a pb::TraceSpan>>,
    indent: &str,
    last: Option<bool>,
    shown: &mut HashSet<&'a str>,
) {
    if !shown.insert(span.span_id.as_str()) {
        return;
    }
    let (branch, next) = match last {
        None => ("", String::new()),
        Some(true) => ("└─ ", format!("{indent}   ")),
        Some(false) => ("├─ ", format!("{indent}│  ")),
    };
    let _ = writeln!(out, "{indent}{branch}{}", line(span));
    let kids = children
        .get(span.span_id.as_str())
        .map_or(&[][..], Vec::as_slice);
    for (i, kid) in kids.iter().enumerate() {
        walk(out, kid, children, &next, Some(i + 1 == kids.len()), shown);
    }
}

/// One hop: the instance that served (inbound), or the call it made (outbound).
fn line(span: &pb::TraceSpan) -> String {
    let a = |k: &str| span.attributes.get(k).map(String::as_str);
    let status = a("http.response.status_code").unwrap_or("-");
    let ms = duration_ms(span);
    if span.kind == "server" {
        let version = a("graylane.label.version").unwrap_or("-");
        let tag = match (a("graylane.tag"), a("graylane.tag_source")) {
            (Some(t), Some(src)) if t != "-" => format!("{t} from {src}"),
            _ => "untagged".into(),
        };
        format!(
            "{} {version} [{tag}] {status} {ms:.1} ms",
            a("graylane.service").unwrap_or("?")
        )
    } else {
        let mut what = format!(
            "→ {}: {}",
            a("graylane.destination").unwrap_or("?"),
            a("graylane.destination_instance").unwrap_or("-")
        );
        if let Some(lane) = a("graylane.lane") {
            let _ = write!(what, ", lane {lane}");
        }
        if let Some(subset) = a("graylane.subset") {
            let _ = write!(what, ", subset {subset}");
        }
        if let Some(why) = a("graylane.fallback_reason") {
            let _ = write!(what, ", fallback ({why})");
        }
        if let Some(n) = a("graylane.retries").filter(|n| *n != "0") {
            let _ = write!(what, ", {n} retries");
        }
        format!("{what} {status} {ms:.1} ms")
    }
}

fn duration_ms(span: &pb::TraceSpan) -> f64 {
    span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use graylane_proto::v1 as pb;

    fn span(id: &str, parent: &str) -> pb::TraceSpan {
        pb::TraceSpan {
            span_id: id.into(),
            parent_span_id: parent.into(),
            kind: "client".into(),
            attributes: [("graylane.destination".to_owned(), format!("span-{id}"))].into(),
            ..Default::default()
        }
    }

    /// A broken exporter's parent cycle (a → b → a) has no root: its spans are shown,
    /// each once, beside the real tree, not hidden and not walked for ever.
    #[test]
    fn spans_in_a_parent_cycle_are_shown_once() {
        let trace = pb::Trace {
            trace_id: "t".into(),
            spans: vec![
                span("r", ""),
                span("c", "r"),
                span("a", "b"),
                span("b", "a"),
            ],
        };
        let text = super::tree(&trace);
        for id in ["r", "c", "a", "b"] {
            assert_eq!(text.matches(&format!("span-{id}")).count(), 1, "{text}");
        }
    }
}
