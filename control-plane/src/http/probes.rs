//! `/live`, `/ready` and `/metrics` (Prometheus text or OpenMetrics) for probes and
//! scraping, and `/ca.pem`, the mesh CA's certificate (never its key) for clients'
//! `--ca-bundle`. No credentials: kubelets and scrapers carry none.

use axum::Router;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use graylane_exposition::Scrape;

use super::HttpState;
use crate::control::Control;

pub(super) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/ca.pem", get(ca_pem))
        .fallback(not_found)
        .with_state(state)
}

async fn ready(State(state): State<HttpState>) -> Response {
    match state.core.control().ready().await {
        // Sidecars need certificates from this replica: not ready before the CA.
        Ok(()) if state.identities.ca_pem().is_none() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the mesh CA is not loaded yet\n",
        )
            .into_response(),
        Ok(()) => "ready\n".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

// Public by nature: a client fetching it over plain HTTP trusts the network path once
// (like any bootstrap); `graylane install` hands it over in a Secret instead.
async fn ca_pem(State(state): State<HttpState>) -> Response {
    match state.identities.ca_pem() {
        Some(pem) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            pem.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the mesh CA is not loaded yet (the store is unavailable)\n",
        )
            .into_response(),
    }
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return super::error::ApiError::UnknownPath.into_response();
    }
    (
        StatusCode::NOT_FOUND,
        "not found: try /live, /ready, /metrics, /ca.pem or /api/v1/\n",
    )
        .into_response()
}

/// Every metric of the control plane, in the format `Accept` prefers.
async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let (content_type, body) = render(state.core.control(), headers.get(header::ACCEPT));
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn render(control: &Control, accept: Option<&HeaderValue>) -> (&'static str, String) {
    let hub = control.hub();
    let state = hub.current();
    let sidecars = hub.sidecars();
    let nacking = sidecars.iter().filter(|s| s.nack.is_some()).count();
    let current = sidecars
        .iter()
        .filter(|s| s.acked_revision == state.revision)
        .count();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let (own_series, remote_series, traffic_dropped) = hub.traffic.usage();
    let gauges = [
        (
            "graylane_control_traffic_series",
            "Traffic series kept (of this replica's sidecars and of other replicas'); at most 4096 each.",
            count(own_series + remote_series),
        ),
        (
            "graylane_control_rule_revision",
            "Rule revision in force.",
            i64::try_from(state.revision).unwrap_or(i64::MAX),
        ),
        (
            "graylane_control_snapshot_version",
            "Snapshot version served to sidecars.",
            i64::try_from(state.version).unwrap_or(i64::MAX),
        ),
        (
            "graylane_control_connected_sidecars",
            "Sidecars with a live stream.",
            count(sidecars.len()),
        ),
        (
            "graylane_control_sidecars_current",
            "Sidecars that acked the revision in force.",
            count(current),
        ),
        (
            "graylane_control_sidecars_nacking",
            "Sidecars whose last answer was a NACK.",
            count(nacking),
        ),
    ];
    let mut scrape = Scrape::default();
    for (name, help, value) in gauges {
        scrape.gauge(name, help, value);
    }
    for (name, help, value) in control.counters().render() {
        scrape.counter(name, help, value);
    }
    scrape.counter(
        "graylane_control_traffic_dropped_requests_total",
        "Reported requests in no traffic series: a table full (here or in the sidecar), or a service not in the mesh.",
        traffic_dropped,
    );
    hub.stats.register(&mut scrape);
    let (format, body) = scrape.encode(accept);
    (format.content_type(), body)
}
