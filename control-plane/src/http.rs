//! `--http-addr`: one axum router for the probes (`/live`, `/ready`, `/metrics`,
//! `/ca.pem`), the HTTP/JSON admin API under `/api/v1` (the contract in
//! spec/http-api.md) and the web console that calls it, served by one accept loop.
//!
//! ```text
//! graylane_serve (limit, backoff, drain) ─► hyper http1 (header-read timeout;
//!   heads over 64 KiB: 431) ─► Router
//!             ├─ /live /ready /metrics /ca.pem      probes (no auth: kubelet, scrapers)
//!             ├─ / /console/{file}                  the web console (no auth to load; CSP)
//!             └─ /api/v1/…  ─► bearer auth ─► body limit ─► handler ─► AdminCore
//!                                  every error leaves through ApiError's IntoResponse
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use hyper::Request;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service as _;

use crate::admin::AdminCore;
use crate::api::{Identities, Tokens};

mod auth;
mod body;
mod console;
mod error;
mod probes;
mod routes;

pub use self::routes::TrafficHandler;

/// The connection's remote address, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// What the HTTP server serves.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) core: Arc<AdminCore>,
    pub(crate) identities: Arc<Identities>,
    /// `None`: no `--token-file` (the binary then binds loopback only): every call
    /// is an admin's.
    pub(crate) tokens: Option<Arc<Tokens>>,
    /// `GET /api/v1/traffic`, from the sidecars' traffic reports; `None`: not built
    /// in, the route answers 404.
    pub(crate) traffic: Option<TrafficHandler>,
}

/// The whole router: probes and the API. Tests can drive it without a socket.
pub(crate) fn router(state: HttpState) -> Router {
    probes::router(state.clone())
        .merge(routes::router(state))
        .merge(console::router())
}

/// Serves `router(state)` until `shutdown` turns true, within `limits` (connection
/// cap, header-read timeout, drain; HTTP/1.1), through the one accept loop of every
/// graylane listener ([`graylane_serve::serve_http`]).
pub(crate) async fn serve(
    listener: TcpListener,
    state: HttpState,
    limits: graylane_serve::Limits,
    shutdown: watch::Receiver<bool>,
) {
    let router = router(state);
    graylane_serve::serve_http(
        listener,
        limits,
        None,
        Arc::new(()),
        shutdown,
        move |peer| {
            let router = router.clone();
            // The caller's address goes to history as part of "who" for API writes.
            hyper::service::service_fn(move |mut request: Request<graylane_serve::RequestBody>| {
                request.extensions_mut().insert(Peer(peer));
                router.clone().call(request.map(Body::new))
            })
        },
    )
    .await;
}
