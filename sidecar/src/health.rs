//! The health listener (`--health-addr`): `/ready` and `/live` for the kubelet's
//! probes, and nothing else (404). In a pod, the admin listener stays on loopback,
//! since its `/config` shows every rule and endpoint of the mesh; the kubelet reaches
//! the pod IP, so probes get a port of their own (Istio's 15021).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::routes::{Routing, Shared};
use crate::server::Acceptor;

/// Probes from one kubelet, a few at a time: a small limit keeps anyone else on the
/// pod network from holding more.
const HEALTH_CONNECTIONS: usize = 32;
/// A probe sends its request at once; a connection silent this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/ready` and `/live` from `routes` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    routes: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut acceptor = Acceptor::new(listener, HEALTH_CONNECTIONS, Arc::default());
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.next() => accepted,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let (stream, permit) = (accepted.stream, accepted.permit);
        let routes = Arc::clone(&routes);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let routes = Arc::clone(&routes);
                async move { Ok::<_, Infallible>(respond(&req, &routes)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond<B>(req: &Request<B>, routes: &Routing) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/live" => live(),
        "/ready" => ready(routes),
        _ => (StatusCode::NOT_FOUND, "not found: /live /ready\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Liveness: the process answers.
pub(crate) fn live() -> (StatusCode, String) {
    (StatusCode::OK, "live\n".into())
}

/// Readiness: a snapshot of the routes is in force (from the control plane or the
/// cache), so requests can be routed.
pub(crate) fn ready(routes: &Routing) -> (StatusCode, String) {
    match routes.load() {
        Some(r) => (StatusCode::OK, format!("ready (revision {})\n", r.revision)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot yet\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> StatusCode {
        let req = Request::get(path).body(()).unwrap();
        respond(&req, &Routing::default()).status()
    }

    #[test]
    fn only_probes_are_served() {
        assert_eq!(get("/live"), StatusCode::OK);
        assert_eq!(
            get("/ready"),
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot yet"
        );
        for path in ["/config", "/metrics", "/gates/self", "/", "/ready/x"] {
            assert_eq!(get(path), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
