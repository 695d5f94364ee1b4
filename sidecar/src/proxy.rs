//! What inbound and outbound share: the body type, the upstream clients, header
//! hygiene and the error table.
//!
//! Bodies are streamed both ways (hyper's `Incoming` boxed, never collected), so a
//! 100 MiB upload costs a few frames of memory and backpressure reaches the sender.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use graylane_routing::MtlsMode;
use http::request::Parts;
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};

mod coalesce;
mod error;
mod headers;
mod mtls;
mod unsent;
pub(crate) mod upgrade;

use self::coalesce::Coalesce;
pub(crate) use self::error::ProxyError;
pub(crate) use self::error::{RetryClass, SendError, SendFailure, Upstream};
pub(crate) use self::headers::strip_hop_by_hop;
use self::mtls::MeshClients;
pub(crate) use self::mtls::{Transport, mtls_mode};
pub(crate) use self::unsent::{Reclaim, unsent};

/// Every body the sidecar sends or receives.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body, boxed, its ready frames merged (see `coalesce`).
pub(crate) fn boxed(body: Incoming) -> Body {
    Coalesce::new(body).boxed_unsync()
}

/// An empty body (for retries of body-less requests and for errors).
pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// HTTP/2 flow-control windows, on both sides of the proxy. h2 allows unread frames
/// under 256 bytes a budget of half the connection window; a stream's window at most
/// 0.137 of it keeps one stream of 55-byte frames (gRPC's small messages) within it
/// even when fully backed up, and 64 KiB / 4 MiB leaves room for about nine such
/// streams. 4 MiB also bounds what one connection can make the sidecar hold.
pub(crate) const H2_STREAM_WINDOW: u32 = 64 * 1024;
pub(crate) const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// How long an idle pooled upstream connection is kept. Shorter than every server's
/// idle timeout it meets — a peer sidecar's header-read timeout (10 s), Node.js's
/// keep-alive timeout (5 s) — so the client gives up first and a request is never
/// written into a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Pooled clients to upstreams: HTTP/1.1, and HTTP/2 with prior knowledge for requests
/// that arrived as HTTP/2 (gRPC needs it end to end; one connection multiplexes); the
/// same over mesh mTLS to other sidecars (ALPN `http/1.1` or `h2`).
#[derive(Clone)]
pub(crate) struct Clients {
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
    /// `None`: no workload identity, plaintext only (`strict` calls fail).
    mesh: Option<MeshClients>,
}

impl Clients {
    /// Clients for upstreams; `identity` (this sidecar's certificate and trust
    /// bundle) enables mesh mTLS.
    pub(crate) fn new(
        connect_timeout: Duration,
        identity: Option<Arc<crate::identity::Identity>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let http1 = builder.build(connector.clone());
        let h1_builder = builder.clone();
        builder
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW);
        let http2 = builder.build(connector.clone());
        let mesh = identity.map(|identity| {
            MeshClients::new(identity, connector, connect_timeout, h1_builder, builder)
        });
        Self { http1, http2, mesh }
    }

    /// How a call to an instance whose identity is `peer` (empty: unknown) goes when
    /// its service's mode is `mode`; `Err` says why a `strict` call cannot be made.
    pub(crate) fn transport<'a>(
        &self,
        mode: MtlsMode,
        peer: &'a str,
    ) -> Result<Transport<'a>, String> {
        match (&self.mesh, mode) {
            (Some(mesh), _) => mesh.transport(mode, peer),
            (None, MtlsMode::Strict) => Err("strict mTLS: this sidecar has no identity".into()),
            (None, _) => Ok(Transport::Plain),
        }
    }

    /// How a call to `instance` goes by its service's mode in `routes` (mTLS whatever
    /// the mode when `force_mtls` and it can be tried); a `strict` call that cannot be
    /// made is an error naming the instance.
    pub(crate) fn transport_for<'i>(
        &self,
        routes: Option<&crate::routes::Routes>,
        instance: &'i graylane_routing::Instance,
        force_mtls: bool,
    ) -> Result<Transport<'i>, ProxyError> {
        if force_mtls && self.can_reach(&instance.identity) {
            return Ok(Transport::Mtls(&instance.identity));
        }
        let mode = mtls_mode(routes, &instance.namespace, &instance.service);
        self.transport(mode, &instance.identity)
            .map_err(|reason| ProxyError::MtlsRequired {
                service: instance.service.clone(),
                instance: instance.id.clone(),
                reason,
            })
    }

    /// Whether mTLS to `peer` could be tried now, whatever the mode.
    pub(crate) fn can_reach(&self, peer: &str) -> bool {
        self.mesh.as_ref().is_some_and(|m| m.can_reach(peer))
    }

    /// Sends `request` to `http://{to.address}` within `to.timeout` (see
    /// [`Self::send_to`]).
    pub(crate) async fn send(
        &self,
        request: Request<Body>,
        to: &Upstream<'_>,
    ) -> Result<Response<Incoming>, SendError> {
        self.send_to(request, to, Transport::Plain).await
    }

    /// Sends `request` to `to.address` within `to.timeout`, in the clear or over mesh
    /// mTLS (`https://{address}`, the server proving the identity). The URI's authority
    /// is replaced; the `Host` header keeps the service name for the next hop. A failed
    /// handshake is a [`SendFailure::Connect`]: nothing was sent.
    pub(crate) async fn send_to(
        &self,
        request: Request<Body>,
        to: &Upstream<'_>,
        transport: Transport<'_>,
    ) -> Result<Response<Incoming>, SendError> {
        self.try_send(request, to.address, transport, to.timeout)
            .await
            .map_err(|failure| to.failed(failure))
    }

    async fn try_send(
        &self,
        mut request: Request<Body>,
        address: &str,
        transport: Transport<'_>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendFailure> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if !path.starts_with('/') {
            // `OPTIONS *` (RFC 9110 §9.3.7) asks about a server, not a resource: it has
            // no meaning past this hop.
            return Err(SendFailure::Downstream(format!(
                "request target {path:?} cannot be forwarded"
            )));
        }
        let scheme = match transport {
            Transport::Plain => "http",
            Transport::Mtls(_) => "https",
        };
        // The path was parsed from the request already: what fails here is the
        // address, a registration's or a flag's, never the client's doing. Nothing was
        // sent, so another instance may be tried.
        *request.uri_mut() = format!("{scheme}://{address}{path}")
            .parse()
            .map_err(|e| SendFailure::Connect(format!("no URI for address {address:?}: {e}")))?;
        let h2 = request.version() == Version::HTTP_2;
        if !h2 {
            // Whatever the caller spoke (HTTP/1.0 included), the hop to the next
            // sidecar is HTTP/1.1.
            *request.version_mut() = Version::HTTP_11;
        }
        // Which connection answered, to take it out of the pool if the answer is bad.
        let connection = capture_connection(&mut request);
        let sent = match (transport, &self.mesh) {
            (Transport::Plain, _) => {
                let client = if h2 { &self.http2 } else { &self.http1 };
                client.request(request)
            }
            (Transport::Mtls(peer), Some(mesh)) => {
                let clients = mesh.clients(peer);
                let client = if h2 { &clients.http2 } else { &clients.http1 };
                client.request(request)
            }
            (Transport::Mtls(peer), None) => {
                return Err(SendFailure::Connect(format!(
                    "mTLS to {peer}: this sidecar has no identity"
                )));
            }
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(SendFailure::Timeout),
            Ok(Ok(response)) => match malformed(&response) {
                Some(reason) => {
                    // hyper may already hold the whole body and have pooled the
                    // connection again: poison it, so nothing else is read from it.
                    if let Some(connected) = connection.connection_metadata().as_ref() {
                        connected.poison();
                    }
                    Err(SendFailure::Other(format!("malformed response: {reason}")))
                }
                None => Ok(response),
            },
            Ok(Err(e)) if e.is_connect() => Err(SendFailure::Connect(source_text(&e))),
            Ok(Err(e)) => Err(match user_error(&e) {
                Some(User::Body) => SendFailure::Downstream(source_text(&e)),
                Some(User::Misuse) => SendFailure::Internal(source_text(&e)),
                None if closed_before_response(&e) => SendFailure::Closed(source_text(&e)),
                None => SendFailure::Other(source_text(&e)),
            }),
        }
    }
}

/// What hyper's client accepts in a response but no proxy may pass on: a length two
/// readers could frame differently (RFC 9112 §6.3: Transfer-Encoding overrides
/// Content-Length, and such a message "ought to be handled as an error").
fn malformed<B>(response: &Response<B>) -> Option<&'static str> {
    let headers = response.headers();
    (headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH))
    .then_some("Content-Length with Transfer-Encoding")
}

/// A hyper error about what the sidecar handed it, not about the upstream.
enum User {
    /// The request's own body failed (the client sent bad chunks, or went away): the
    /// client's fault, not the upstream's, so no instance is blamed for it.
    Body,
    /// Anything else hyper refuses in a request (an unsupported version, a header
    /// HTTP/2 forbids): the request as the sidecar built it.
    Misuse,
}

/// hyper's user errors, told apart by their text: its kinds are not public, and
/// each kind's text is fixed (`Error::description`).
fn user_error(e: &hyper_util::client::legacy::Error) -> Option<User> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_user()
        {
            let text = h.to_string();
            return if h.is_body_write_aborted() || text == "error from user's Body stream" {
                Some(User::Body)
            } else if text == "dispatch task is gone" {
                // The connection's task ended under the request: the connection's
                // failure, classified as the upstream's below.
                None
            } else {
                Some(User::Misuse)
            };
        }
        source = s.source();
    }
    None
}

/// The connection closed or was reset before any byte of a response: the upstream
/// closed an idle connection as the request went out, or died. Nothing of an answer
/// was seen, so an idempotent request may go again.
fn closed_before_response(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        // RFC 9113 §8.7: a stream refused, or cut by the peer's GOAWAY, was not
        // processed.
        if let Some(h2) = s.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || h2.is_go_away() && h2.is_remote())
        {
            return true;
        }
        // Over mesh mTLS, a peer that died or closed mid-exchange is an EOF without
        // TLS close_notify (rustls reports it as `UnexpectedEof`).
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Puts a request whose body never left (`unsent`) back into `held` for another
/// attempt; `false` when its body was already (partly) sent.
pub(crate) fn reclaim(
    unsent: &mut Option<(Parts, Reclaim)>,
    held: &mut Option<(Parts, Body)>,
) -> bool {
    let Some((head, reclaim)) = unsent.take() else {
        return false;
    };
    match reclaim.take() {
        Some(body) => {
            *held = Some((head, body));
            true
        }
        None => false,
    }
}

/// A body-less copy of a request head (`Parts` is not `Clone`: extensions are not).
pub(crate) fn copy_head(head: &Parts) -> Request<Body> {
    let mut request = Request::new(empty());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    request
}

/// RFC 9110 §9.2.2: requests that may be sent twice.
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let inner = s.to_string();
        if !text.contains(&inner) {
            text = format!("{text}: {inner}");
        }
        source = s.source();
    }
    text
}
