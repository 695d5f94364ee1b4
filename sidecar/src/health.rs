//! The health listener (`--health-addr`): `/ready` and `/live` for the kubelet's
//! probes, the app's own probes rewritten by injection (`/app-health/...`, see
//! `app_probes`), and nothing else (404). In a pod, the admin listener stays on
//! loopback, since its `/config` shows every rule and endpoint of the mesh; the
//! kubelet reaches the pod IP, so probes get a port of their own (Istio's 15021).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::identity::{self, Identity};
use crate::routes::{Routing, Shared};

mod app_probes;

pub use self::app_probes::AppProbes;

/// Probes from one kubelet, a few at a time: a small limit keeps anyone else on the
/// pod network from holding more.
const HEALTH_CONNECTIONS: usize = 32;
/// A probe sends its request at once; a connection silent this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/ready` and `/live` from `routes` and `identity` until `shutdown` turns
/// true, through the one accept loop of every graylane listener.
pub(crate) async fn serve(
    listener: TcpListener,
    routes: Shared,
    identity: Arc<Identity>,
    app_probes: Arc<AppProbes>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = graylane_serve::Limits {
        max_connections: HEALTH_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..graylane_serve::Limits::default()
    };
    graylane_serve::serve_http(listener, limits, None, Arc::new(()), shutdown, move |_| {
        let (routes, identity) = (Arc::clone(&routes), Arc::clone(&identity));
        let app_probes = Arc::clone(&app_probes);
        hyper::service::service_fn(move |req| {
            let (routes, identity) = (Arc::clone(&routes), Arc::clone(&identity));
            let app_probes = Arc::clone(&app_probes);
            async move {
                let app_probe =
                    is_read(&req) && !forwarded(&req) && AppProbes::covers(req.uri().path());
                let answer = if app_probe {
                    app_probes.check(req.uri().path()).await
                } else {
                    answer(&req, &routes, &identity)
                };
                Ok::<_, Infallible>(respond(answer))
            }
        })
    })
    .await;
}

fn answer<B>(req: &Request<B>, routes: &Routing, identity: &Identity) -> (StatusCode, String) {
    match req.uri().path() {
        _ if forwarded(req) => looped("health"),
        _ if !is_read(req) => not_a_read(req),
        "/live" => live(),
        "/ready" => ready(routes, identity),
        _ => (
            StatusCode::NOT_FOUND,
            "not found: /live /ready /app-health/...\n".into(),
        ),
    }
}

fn respond((status, body): (StatusCode, String)) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    allow_reads(&mut response);
    response
}

/// Every path of the admin and health listeners is a read: GET or HEAD.
pub(crate) fn is_read<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::GET || req.method() == http::Method::HEAD
}

/// The answer to a request that is not [`is_read`].
pub(crate) fn not_a_read<B>(req: &Request<B>) -> (StatusCode, String) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {} not allowed: only GET and HEAD\n", req.method()),
    )
}

/// A 405 says what is allowed (RFC 9110 §15.5.6).
pub(crate) fn allow_reads<B>(response: &mut Response<B>) {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
    }
}

/// Whether an outbound sidecar forwarded `req` (it carries their hop count): at an
/// admin or health listener, that is an instance registered at this listener's
/// address (a wrong `--advertise-addr`), and a caller's request looping into a
/// sidecar's own listener (sidecar.md: 508), not a probe.
pub(crate) fn forwarded<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(crate::trail::HOPS_HEADER)
}

/// The answer to a [`forwarded`] request at the `listener` listener.
pub(crate) fn looped(listener: &str) -> (StatusCode, String) {
    (
        StatusCode::LOOP_DETECTED,
        format!(
            "graylane: loop detected: a request forwarded by a sidecar reached the {listener} \
             listener (an instance registered at its address?)\n"
        ),
    )
}

/// Liveness: the process answers.
pub(crate) fn live() -> (StatusCode, String) {
    (StatusCode::OK, "live\n".into())
}

/// Readiness: a snapshot of the routes is in force (from the control plane or the
/// cache), so requests can be routed; and the workload certificate, once there is
/// one, has not expired (mesh mTLS would fail). Before the first certificate nothing
/// needs one (mTLS `off`, an older control plane).
pub(crate) fn ready(routes: &Routing, identity: &Identity) -> (StatusCode, String) {
    ready_at(routes, identity, identity::unix_now())
}

/// `ready` at `now` (unix seconds).
fn ready_at(routes: &Routing, identity: &Identity, now: i64) -> (StatusCode, String) {
    let Some(r) = routes.load() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot yet\n".into(),
        );
    };
    if let Some(at) = identity.expired_at(now) {
        let at = identity::rfc3339(at);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the workload certificate expired at {at} and was not renewed\n"),
        );
    }
    (StatusCode::OK, format!("ready (revision {})\n", r.revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> StatusCode {
        let req = Request::get(path).body(()).unwrap();
        let identity = Identity::new(identity::Config::default(), Arc::default());
        respond(answer(&req, &Routing::default(), &identity)).status()
    }

    #[test]
    fn ready_turns_503_once_the_certificate_expired() {
        use crate::identity::testing::TestCa;
        let routes = Routing::default();
        let rules = graylane_routing::RuleSet::from_yaml("(test)", "").unwrap();
        routes.publish(crate::routes::Routes {
            version: 1,
            revision: 1,
            table: graylane_routing::RoutingTable::build(&rules, Vec::new()),
            rules: Arc::new(rules),
            addresses: Default::default(),
            source: crate::routes::Origin::ControlPlane,
            directory: None,
        });
        let none = Identity::new(identity::Config::default(), Arc::default());
        assert_eq!(
            ready_at(&routes, &none, i64::MAX).0,
            StatusCode::OK,
            "none needed"
        );
        let ca = TestCa::new("mesh");
        let id = ca.identity("spiffe://cluster.local/ns/a/sa/b", &[ca.pem()]);
        let now = identity::unix_now();
        assert_eq!(ready_at(&routes, &id, now).0, StatusCode::OK);
        // The test certificate lives an hour: two hours on, it has expired.
        let (status, body) = ready_at(&routes, &id, now + 7200);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("certificate expired"), "{body}");
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

    #[test]
    fn anything_but_a_read_is_405_saying_what_is_allowed() {
        let identity = Identity::new(identity::Config::default(), Arc::default());
        for method in ["POST", "PUT", "DELETE"] {
            let req = Request::builder()
                .method(method)
                .uri("/live")
                .body(())
                .unwrap();
            let response = respond(answer(&req, &Routing::default(), &identity));
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(response.headers()["allow"], "GET, HEAD");
        }
        let head = Request::head("/live").body(()).unwrap();
        assert_eq!(
            respond(answer(&head, &Routing::default(), &identity)).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn a_request_a_sidecar_forwarded_here_is_a_loop() {
        let req = Request::get("/live")
            .header("graylane-hops", "1")
            .body(())
            .unwrap();
        let identity = Identity::new(identity::Config::default(), Arc::default());
        let response = respond(answer(&req, &Routing::default(), &identity));
        assert_eq!(response.status(), StatusCode::LOOP_DETECTED);
    }
}
