//! `--http-addr`: one axum router for the probes (`/live`, `/ready`, `/metrics`,
//! `/ca.pem`), the HTTP/JSON admin API under `/api/v1` (the contract in
//! spec/http-api.md) and the web console that calls it, served by one accept loop.
//!
//! ```text
//! accept ─► hyper http1 (header-read timeout) ─► Router
//!             ├─ /live /ready /metrics /ca.pem      probes (no auth: kubelet, scrapers)
//!             ├─ / /console/{file}                  the web console (no auth to load; CSP)
//!             └─ /api/v1/…  ─► bearer auth ─► body limit ─► handler ─► AdminCore
//!                                  every error leaves through ApiError's IntoResponse
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// A connection must send its request headers within this, so an idle or slow client
/// cannot pin a task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's remote address, in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The read buffer, which bounds a request's header block.
const MAX_HEADER_BYTES: usize = 64 * 1024;

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

/// Serves `router(state)` until `shutdown` turns true. Connections are HTTP/1.1 with
/// a header-read timeout.
pub(crate) async fn serve(
    listener: TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = router(state);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let router = router.clone();
        // The caller's address goes to history as part of "who" for API writes.
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            router.clone().call(request.map(Body::new))
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                // Headers beyond this are refused (431) before any handler: the API's
                // requests carry a token and a content type, not 400 KiB of cookies.
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
