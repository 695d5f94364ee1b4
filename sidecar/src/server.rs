//! The accept loop shared by the inbound and outbound listeners.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one port, detected per connection. The
//! limits are set here once: header-read timeout (hyper enforces it only with a timer),
//! header count and size (431), HTTP/2 header list size; hyper's HTTP/1.1 parser
//! rejects ambiguous framing (Content-Length with Transfer-Encoding, differing lengths,
//! bad chunks) with 400 and closes, and its HTTP/2 flood protections stay on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::{Body, ProxyError};
use crate::transparent::{OriginalDst, Protocol, Transparent};

/// Connection limits of a listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// Drain: how long in-flight requests may take after shutdown begins.
    pub drain_timeout: Duration,
}

/// sidecar.md: request headers over 64 KiB in total or over 100 in number get 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// Request-smuggling defences hyper leaves to us (sidecar.md error table): an HTTP/1.x
/// request whose body length two parsers could read differently is refused.
///
/// Content-Length together with Transfer-Encoding never reaches this check: hyper
/// drops the Content-Length, frames the body as chunked and closes the connection
/// after the response (RFC 9112 §6.1), so nothing can be smuggled behind it, and the
/// next hop gets a body framed by us. Differing Content-Lengths hyper refuses itself.
fn check_framing<B>(request: &Request<B>) -> Result<(), &'static str> {
    if request.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let headers = request.headers();
    let te = headers.get_all(header::TRANSFER_ENCODING).iter().count();
    let lengths: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if te > 1 {
        return Err("Transfer-Encoding repeated");
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err("differing Content-Length values");
    }
    if request.version() == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return Err("HTTP/1.1 request without Host");
    }
    Ok(())
}

/// 400 with the reason, and the connection closes after it (the rest of the bytes on
/// it cannot be trusted to start a new request).
fn refuse(reason: &'static str) -> Response<Body> {
    let mut response =
        ProxyError::BadRequest(format!("malformed request: {reason}")).into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A request handler: (peer address, request) → response. Errors are already
/// responses (see `proxy::ProxyError::into_response`).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `handler` on `listener` until `shutdown`; then stops accepting and lets the
/// connections finish their requests for at most `drain_timeout`. With `transparent`,
/// redirected connections are told apart (see `transparent`): opaque ones tunnelled,
/// HTTP ones served with their `OriginalDst`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    transparent: Option<Arc<Transparent>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES + 8 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder, watcher) =
            (Arc::clone(&handler), builder.clone(), graceful.watcher());
        let transparent = transparent.clone();
        tokio::spawn(async move {
            let original = transparent
                .as_ref()
                .and_then(|_| Transparent::original_dst(&stream));
            if let (Some(transparent), Some(to)) = (&transparent, original)
                && transparent.protocol(&stream, to).await == Protocol::Opaque
            {
                return transparent.tunnel(stream, to).await;
            }
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let handler = Arc::clone(&handler);
                if let Some(to) = original {
                    request.extensions_mut().insert(OriginalDst(to));
                }
                async move {
                    Ok::<_, Infallible>(match check_framing(&request) {
                        Ok(()) => handler.handle(peer, request).await,
                        Err(reason) => refuse(reason),
                    })
                }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.drain_timeout, "drain timed out; closing remaining connections");
    }
}
