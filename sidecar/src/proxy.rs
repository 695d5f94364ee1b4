//! What inbound and outbound share: the body type, the upstream clients, header
//! hygiene and the error table.
//!
//! Bodies are streamed both ways (hyper's `Incoming` boxed, never collected), so a
//! 100 MiB upload costs a few frames of memory and backpressure reaches the sender.

use std::sync::Arc;
use std::time::Duration;

use graylane_routing::MtlsMode;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

mod body;
mod classify;
mod coalesce;
mod error;
pub(crate) mod forward;
mod headers;
mod mtls;
pub(crate) mod pool;
pub(crate) mod streams;
pub(crate) mod upgrade;

pub(crate) use self::body::Body;
use self::classify::{malformed, pool_failure};
use self::coalesce::Coalesce;
pub(crate) use self::error::{ProxyError, grpc_form, is_grpc};
pub(crate) use self::error::{RetryClass, SendError, SendFailure, Upstream};
pub(crate) use self::headers::{Message, only_chunked, strip_hop_by_hop};
use self::mtls::MeshClients;
pub(crate) use self::mtls::{Transport, mtls_mode};
use self::pool::{Dest, Pool};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body, its ready frames merged (see `coalesce`).
pub(crate) fn boxed(body: Incoming) -> Body {
    Body::Received(Coalesce::new(body))
}

/// An empty body (for retries of body-less requests and for errors).
pub(crate) fn empty() -> Body {
    Body::Empty
}

/// A body held whole: a small request body read once and sent again on a retry.
pub(crate) fn full(bytes: bytes::Bytes) -> Body {
    use http_body_util::BodyExt as _;
    Body::Boxed(
        http_body_util::Full::new(bytes)
            .map_err(|e| match e {})
            .boxed_unsync(),
    )
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

/// One attempt's answer, or its failure with the request when it came back whole
/// (see [`SendError::request`]).
type Attempt = Result<Response<Body>, (SendFailure, Option<Box<Request<Body>>>)>;

/// Pooled clients to upstreams: HTTP/1.1, and HTTP/2 with prior knowledge for requests
/// that arrived as HTTP/2 (gRPC needs it end to end; one connection multiplexes); the
/// same over mesh mTLS to other sidecars (ALPN `http/1.1` or `h2`), all in one pool
/// keyed by address and the peer identity expected (see `pool`, `mtls`).
#[derive(Clone)]
pub(crate) struct Clients {
    /// Every upstream connection, plaintext and mTLS, on hyper's connection API.
    pool: Pool,
    /// `None`: no workload identity, plaintext only (`strict` calls fail).
    mesh: Option<MeshClients>,
}

impl Clients {
    /// Clients for upstreams; `identity` (this sidecar's certificate and trust
    /// bundle) enables mesh mTLS.
    pub(crate) fn new(
        connect_timeout: Duration,
        identity: Option<Arc<crate::identity::Identity>>,
        counted: Arc<crate::metrics::Upstream>,
    ) -> Self {
        Self {
            pool: Pool::new(connect_timeout, identity.clone(), counted),
            mesh: identity.map(MeshClients::new),
        }
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
    pub(crate) fn send(
        &self,
        request: Box<Request<Body>>,
        to: &Upstream<'_>,
    ) -> impl Future<Output = Result<Response<Body>, SendError>> {
        self.send_to(request, to, Transport::Plain)
    }

    /// Sends `request` to `to.address` within `to.timeout`, in the clear or over mesh
    /// mTLS (`https://{address}`, the server proving the identity). The URI's authority
    /// is replaced; the `Host` header keeps the service name for the next hop. A failed
    /// handshake is a [`SendFailure::Connect`]: nothing was sent.
    ///
    /// The request comes boxed: each `async fn` on the way to hyper keeps its
    /// arguments in its future twice (rust-lang/rust#62958), and the futures are moved
    /// as they nest, so a 368-byte request by value made the inbound future 5.8 KB
    /// of copies per request (bench/README.md, "Future sizes").
    pub(crate) async fn send_to(
        &self,
        request: Box<Request<Body>>,
        to: &Upstream<'_>,
        transport: Transport<'_>,
    ) -> Result<Response<Body>, SendError> {
        self.try_send(request, to, transport)
            .await
            .map_err(|(failure, request)| to.failed(failure, request))
    }

    async fn try_send(
        &self,
        mut request: Box<Request<Body>>,
        to: &Upstream<'_>,
        transport: Transport<'_>,
    ) -> Attempt {
        let (address, timeout) = (to.address, to.timeout);
        if request.method() == Method::CONNECT {
            // The outbound listener opens tunnels itself (`outbound::connect`); sent on
            // as a request, a CONNECT would reach the app as `CONNECT /`.
            return Err((SendFailure::Downstream(
                "CONNECT is served only by the outbound listener (a tunnel); it cannot be forwarded as a request".into(),
            ), None));
        }
        let target = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if !target.as_str().starts_with('/') {
            // `OPTIONS *` (RFC 9110 §9.3.7) asks about a server, not a resource: it has
            // no meaning past this hop.
            return Err((
                SendFailure::Downstream(format!(
                    "request target {:?} cannot be forwarded",
                    target.as_str()
                )),
                None,
            ));
        }
        let h2 = request.version() == Version::HTTP_2;
        if !h2 {
            // Whatever the caller spoke (HTTP/1.0 included), the hop to the next
            // sidecar is HTTP/1.1.
            *request.version_mut() = Version::HTTP_11;
        }
        let dest = match transport {
            Transport::Plain => Dest {
                address,
                peer: None,
            },
            Transport::Mtls(peer) => Dest {
                address,
                peer: Some(peer),
            },
        };
        if h2 {
            self.send_h2(request, dest, target, timeout, to.hand_back)
                .await
        } else {
            self.send_h1(request, dest, target, timeout).await
        }
    }

    async fn send_h1(
        &self,
        mut request: Box<Request<Body>>,
        dest: Dest<'_>,
        target: PathAndQuery,
        timeout: Duration,
    ) -> Attempt {
        // An absolute-form target names the host the request was routed by: a proxy
        // puts it in `Host` in place of the one received (RFC 9112 §3.2.2), so the app
        // never sees another.
        if let Some(authority) = request.uri().authority() {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|e| {
                (
                    SendFailure::Internal(format!("Host from the target: {e}")),
                    None,
                )
            })?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        // The target goes as given, origin-form, and a `Host` for an HTTP/1.0
        // caller that sent none (RFC 9112 §3.2).
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(target);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            (
                SendFailure::Internal(format!("origin-form target: {e}")),
                None,
            )
        })?;
        let host_from_address = !request.headers().contains_key(http::header::HOST);
        if host_from_address {
            let address = dest.address;
            match HeaderValue::from_str(address) {
                Ok(host) => request.headers_mut().insert(http::header::HOST, host),
                // The address's fault, not the request's: it may go to another.
                Err(e) => {
                    let reason = format!("no Host for address {address:?}: {e}");
                    return Err((SendFailure::Connect(reason), Some(request)));
                }
            };
        }
        // Kept by the hop-by-hop stripping only when the client asked for an upgrade.
        let upgrading = request.headers().contains_key(http::header::UPGRADE);
        let sent = self.pool.send_http1(dest, request);
        let response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return Err((SendFailure::Timeout, None)),
            Ok(sent) => sent.map_err(|failed| {
                let (failure, mut back) = pool_failure(failed);
                // Handed back as it came: another instance gets a `Host` of its own.
                if let Some(back) = back.as_mut().filter(|_| host_from_address) {
                    back.headers_mut().remove(http::header::HOST);
                }
                (failure, back)
            })?,
        };
        if let Some(reason) = malformed(&response, upgrading) {
            // Its connection goes with it, never pooled again (`pool::http1`
            // does not give back a connection after such a head).
            let reason = format!("malformed response: {reason}");
            return Err((SendFailure::Other(reason), None));
        }
        Ok(response)
    }

    async fn send_h2(
        &self,
        mut request: Box<Request<Body>>,
        dest: Dest<'_>,
        target: PathAndQuery,
        timeout: Duration,
        hand_back: bool,
    ) -> Attempt {
        // HTTP/2 carries the target as :scheme and :authority (RFC 9113 §8.3.1).
        let scheme = if dest.peer.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = request.headers_mut().remove(http::header::HOST);
        let authority = match h2_authority(&request, host.as_ref(), dest.address) {
            Ok(authority) => authority,
            // An address's failure comes back with the request: it may go elsewhere.
            // (It named no host: there is none to put back.)
            Err(failure @ SendFailure::Connect(_)) => return Err((failure, Some(request))),
            Err(failure) => return Err((failure, None)),
        };
        // What the request named its host by, to hand it back as it came.
        let origin = request.uri().authority().is_none().then(|| target.clone());
        *request.uri_mut() = absolute(scheme, authority, target).map_err(|f| (f, None))?;
        let sent = self.pool.send_http2(dest, request, hand_back);
        let response = match tokio::time::timeout(timeout, sent).await {
            Err(_) => return Err((SendFailure::Timeout, None)),
            Ok(sent) => sent.map_err(|failed| {
                let (failure, mut back) = pool_failure(failed);
                // Handed back as it came (routed again by what it said; the next
                // instance gets an authority of its own, not the first one's address).
                if let (Some(back), Some(origin)) = (back.as_mut(), origin) {
                    let mut parts = http::uri::Parts::default();
                    parts.path_and_query = Some(origin);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *back.uri_mut() = uri;
                    }
                    if let Some(host) = host {
                        back.headers_mut().insert(http::header::HOST, host);
                    }
                }
                (failure, back)
            })?,
        };
        // HTTP/2 has no upgrade (h2 refuses a 101 itself).
        if let Some(reason) = malformed(&response, false) {
            self.pool.poison_http2(dest);
            let reason = format!("malformed response: {reason}");
            return Err((SendFailure::Other(reason), None));
        }
        Ok(response)
    }
}

/// The `:authority` a request goes on with over HTTP/2: the caller's, as an
/// intermediary must (RFC 9113 §8.3.1), so that an app routing or building links by
/// host sees what it sees over HTTP/1.1. That is the request's own `:authority`, else
/// the `Host` it carried. `Host` itself does not go on: an app would see both, and a
/// strict server refuses them when they differ (the caller takes it out first and
/// passes it as `host`). The address is the authority only of a request that named
/// none.
fn h2_authority(
    request: &Request<Body>,
    host: Option<&HeaderValue>,
    address: &str,
) -> Result<Authority, SendFailure> {
    if let Some(authority) = request.uri().authority() {
        return Ok(authority.clone());
    }
    match host {
        Some(host) => Authority::try_from(host.as_bytes())
            .map_err(|_| SendFailure::Downstream(format!("Host {host:?} is not a host[:port]"))),
        // What fails here is the address, a registration's or a flag's, never the
        // client's doing. Nothing was sent, so another instance may be tried.
        None => Authority::try_from(address)
            .map_err(|e| SendFailure::Connect(format!("no URI for address {address:?}: {e}"))),
    }
}

/// `{scheme}://{authority}{target}`, from its parts: the target was parsed from the
/// request already, and formatting the whole URI to parse it again cost 2 % of an
/// HTTP/2 request.
fn absolute(
    scheme: Scheme,
    authority: Authority,
    target: PathAndQuery,
) -> Result<Uri, SendFailure> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(target);
    Uri::from_parts(parts).map_err(|e| SendFailure::Internal(format!("HTTP/2 target: {e}")))
}

/// A body-less copy of a request head (`Parts` is not `Clone`: extensions are not),
/// boxed as [`Clients::send_to`] takes it.
pub(crate) fn copy_head(head: &Parts) -> Box<Request<Body>> {
    copy(&head.method, &head.uri, head.version, &head.headers)
}

/// [`copy_head`] of a request.
pub(crate) fn copy_request(request: &Request<Body>) -> Box<Request<Body>> {
    copy(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
    )
}

fn copy(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> Box<Request<Body>> {
    let mut request = Box::new(Request::new(empty()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.version_mut() = version;
    *request.headers_mut() = headers.clone();
    request
}

/// A gRPC call's own deadline, its `grpc-timeout` (gRPC over HTTP/2: at most 8 digits
/// and a unit, `H` `M` `S` `m` `u` `n`), capped at a day. It takes the place of the
/// default `--upstream-timeout`, as Envoy's `grpc_timeout_header_max` does: a client
/// stream with a 60 s deadline was cut at 30 s while still sending. `None` when
/// absent or not in that form.
pub(crate) fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    // Made at compile time: a lookup by `&str` parses the name on every request.
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    // A gRPC call's only: any other client could lift the operator's bound with it.
    if !is_grpc(headers) {
        return None;
    }
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let timeout = match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(timeout.min(Duration::from_secs(86_400)))
}

/// RFC 9110 §9.2.2: requests that may be sent twice.
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_grpc_timeout_is_read_in_its_own_form_only() {
        let read = |v: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", v.parse().unwrap());
            headers.insert("content-type", "application/grpc".parse().unwrap());
            super::grpc_timeout(&headers)
        };
        // Not a gRPC call: no client lifts the bound with the header.
        let mut plain = http::HeaderMap::new();
        plain.insert("grpc-timeout", "10S".parse().unwrap());
        assert_eq!(super::grpc_timeout(&plain), None);
        let ms = std::time::Duration::from_millis;
        assert_eq!(read("60S"), Some(ms(60_000)));
        assert_eq!(read("250m"), Some(ms(250)));
        assert_eq!(read("2M"), Some(ms(120_000)));
        assert_eq!(read("1500000u"), Some(ms(1500)));
        assert_eq!(read("99999999H"), Some(ms(86_400_000)), "capped at a day");
        assert_eq!(read("0m"), Some(ms(0)), "a deadline already past");
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S", " 1S"] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }

    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<Body> {
        let mut request = Request::get(uri).body(Body::Empty).unwrap();
        if let Some(host) = host {
            let value = HeaderValue::from_str(host).unwrap();
            request.headers_mut().insert(http::header::HOST, value);
        }
        request
    }

    /// A request that named no host gets the instance's address as its `Host` (or
    /// `:authority`); refused, it comes back without it, so the next instance tried
    /// gets its own, not the first one's.
    #[tokio::test]
    async fn a_refused_request_comes_back_without_the_address_it_was_given() {
        let (_held, address) = pool::tests::refusing();
        let clients = Clients::new(Duration::from_secs(1), None, Arc::default());
        let to = Upstream {
            service: "orders",
            instance: "orders-1",
            address: &address,
            timeout: Duration::from_secs(5),
            hand_back: true,
        };
        for (version, host) in [
            (Version::HTTP_11, None),
            (Version::HTTP_2, None),
            (Version::HTTP_11, Some("orders")),
            (Version::HTTP_2, Some("orders")),
        ] {
            let mut sent = request("/a", host);
            *sent.version_mut() = version;
            let Err(e) = clients.send(Box::new(sent), &to).await else {
                panic!("{version:?}: answered by a closed port");
            };
            assert!(matches!(e.failure, SendFailure::Connect(_)), "{e}");
            let back = e.request.expect("handed back");
            assert_eq!(back.uri(), "/a", "{version:?} {host:?}");
            let kept = back.headers().get(http::header::HOST);
            assert_eq!(
                kept.map(|h| h.to_str().unwrap()),
                host,
                "{version:?} {host:?}"
            );
        }
    }

    #[test]
    fn the_h2_authority_is_the_callers() {
        let cases = [
            // (the request's target, its Host, the authority that goes on)
            ("http://orders/a", None, "orders"),
            ("http://orders/a", Some("elsewhere"), "orders"),
            ("/a", Some("orders.shop:8080"), "orders.shop:8080"),
            ("/a", None, "127.0.0.1:9"),
        ];
        for (uri, host, expected) in cases {
            let r = request(uri, None);
            let host = host.map(|h| HeaderValue::from_str(h).unwrap());
            let authority = h2_authority(&r, host.as_ref(), "127.0.0.1:9").unwrap();
            assert_eq!(authority.as_str(), expected, "{uri} {host:?}");
        }
        let host = HeaderValue::from_static("not a host");
        let r = request("/a", None);
        let e = h2_authority(&r, Some(&host), "127.0.0.1:9").unwrap_err();
        assert!(
            matches!(e, SendFailure::Downstream(ref m) if m.contains("not a host")),
            "{e:?}"
        );
        let r = request("/a", None);
        assert!(matches!(
            h2_authority(&r, None, "no address"),
            Err(SendFailure::Connect(_))
        ));
    }
}
