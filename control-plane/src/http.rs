//! `--http-addr`: `/live`, `/ready` and `/metrics` (Prometheus text or OpenMetrics) for probes and
//! scraping, and `/ca.pem`, the mesh CA's certificate (never its key) for clients'
//! `--ca-bundle`. Plain HTTP/1.1, no routing framework: four fixed paths.

use std::convert::Infallible;
use std::sync::Arc;

use graylane_exposition::Scrape;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::Identities;
use crate::control::Control;

/// Serves until `shutdown` turns true. Connections are HTTP/1.1 with a header-read
/// timeout, so an idle scraper cannot pin a task forever.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    identities: Arc<Identities>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let control = Arc::clone(&control);
        let identities = Arc::clone(&identities);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let control = Arc::clone(&control);
                let identities = Arc::clone(&identities);
                async move { Ok::<_, Infallible>(respond(&control, identities.ca_pem(), &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond<B>(
    control: &Control,
    ca_pem: Option<&str>,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/live" => (StatusCode::OK, "live\n".to_string()),
        "/ready" => match control.ready().await {
            // Sidecars need certificates from this replica: not ready before the CA.
            Ok(()) if ca_pem.is_none() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the mesh CA is not loaded yet\n".to_string(),
            ),
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => return metrics(control, req.headers().get(header::ACCEPT)),
        // Public by nature: a client fetching it over plain HTTP trusts the network path
        // once (like any bootstrap); `graylane install` hands it over in a Secret instead.
        "/ca.pem" => match ca_pem {
            Some(pem) => {
                let mut response = Response::new(Full::new(Bytes::from(pem.to_string())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-pem-file"),
                );
                return response;
            }
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the mesh CA is not loaded yet (the store is unavailable)\n".to_string(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics or /ca.pem\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Every metric of the control plane, in the format `accept` prefers.
fn metrics(control: &Control, accept: Option<&HeaderValue>) -> Response<Full<Bytes>> {
    let hub = control.hub();
    let state = hub.current();
    let sidecars = hub.sidecars();
    let nacking = sidecars.iter().filter(|s| s.nack.is_some()).count();
    let current = sidecars
        .iter()
        .filter(|s| s.acked_revision == state.revision)
        .count();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let gauges = [
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
    hub.stats.register(&mut scrape);
    let (format, body) = scrape.encode(accept);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}
