//! Mesh mTLS on the way out (security.md "mTLS between sidecars"): how a call to a mesh
//! instance goes — plaintext or mTLS — by the PeerPolicy mode of its service, and the
//! connector that does the TLS.
//!
//! Each peer identity gets its own pair of pooled clients whose connector verifies
//! exactly that identity. A pooled connection is therefore always one whose server
//! proved the identity the request expects: a lookup from address to identity at
//! connect time could verify against the identity of whoever held the address when
//! the connection was made, and hand that connection to a later request that expects
//! another (an address reused by a new instance). The URI scheme is `https`, so no
//! client ever mixes a TLS and a plaintext connection under one pool key.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use graylane_routing::MtlsMode;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Body, BoxError};
use crate::identity::{Alpn, Identity};
use crate::routes::Routes;

/// Distinct peer identities (one per service account, not per instance) whose
/// clients are kept; past it, the map starts over
/// (idle connections to the dropped ones close; requests in flight keep theirs).
const MAX_PEERS: usize = 4096;

/// The PeerPolicy mode of `service` of `namespace`: the one place the sidecar reads it
/// (inbound for itself, outbound for a destination). `permissive` before any
/// snapshot, as with no PeerPolicy.
pub(crate) fn mtls_mode(routes: Option<&Routes>, namespace: &str, service: &str) -> MtlsMode {
    routes.map_or(MtlsMode::Permissive, |r| {
        r.table.mtls_mode(namespace, service)
    })
}

/// How one attempt reaches an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport<'a> {
    Plain,
    /// mTLS, the server proving `identity` (`spiffe://…`).
    Mtls(&'a str),
}

/// The mTLS clients of one sidecar, one pair per peer identity.
#[derive(Clone)]
pub(crate) struct MeshClients {
    identity: Arc<Identity>,
    connector: HttpConnector,
    /// The TLS handshake's bound, beside the TCP connect's.
    handshake_timeout: Duration,
    http1: hyper_util::client::legacy::Builder,
    http2: hyper_util::client::legacy::Builder,
    by_peer: Arc<Mutex<HashMap<Arc<str>, Pair>>>,
    /// Permissive fallbacks to plaintext are logged once each, not per request.
    warned_no_certificate: Arc<AtomicBool>,
    warned_no_identity: Arc<AtomicBool>,
}

#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) http1: Client<MtlsConnector, Body>,
    pub(crate) http2: Client<MtlsConnector, Body>,
}

impl MeshClients {
    pub(crate) fn new(
        identity: Arc<Identity>,
        mut connector: HttpConnector,
        handshake_timeout: Duration,
        http1: hyper_util::client::legacy::Builder,
        http2: hyper_util::client::legacy::Builder,
    ) -> Self {
        // The URI is `https://address`: the TCP part is the HTTP connector's.
        connector.enforce_http(false);
        Self {
            identity,
            connector,
            handshake_timeout,
            http1,
            http2,
            by_peer: Arc::default(),
            warned_no_certificate: Arc::default(),
            warned_no_identity: Arc::default(),
        }
    }

    /// How a call to an instance registered with `peer` (its identity, empty when
    /// unknown) goes in `mode`. `Err` says why a `strict` call cannot be made.
    pub(crate) fn transport<'a>(
        &self,
        mode: MtlsMode,
        peer: &'a str,
    ) -> Result<Transport<'a>, String> {
        if mode == MtlsMode::Off {
            return Ok(Transport::Plain);
        }
        let why_not = if self.identity.client_config(Alpn::Http1).is_none() {
            Some((
                &self.warned_no_certificate,
                "this sidecar has no valid certificate yet".to_string(),
            ))
        } else if peer.is_empty() || self.identity.server_name(peer).is_none() {
            Some((
                &self.warned_no_identity,
                format!("the instance has no mesh identity of this trust domain ({peer:?})"),
            ))
        } else {
            None
        };
        match (why_not, mode) {
            (None, _) => Ok(Transport::Mtls(peer)),
            (Some((_, why)), MtlsMode::Strict) => Err(format!("strict mTLS: {why}")),
            (Some((warned, why)), _) => {
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason = %why, "permissive mTLS: calling in plaintext (logged once)");
                }
                Ok(Transport::Plain)
            }
        }
    }

    /// Whether mTLS to `peer` can be tried now, whatever the mode (the retry of a
    /// plaintext call an instance refused: it may be strict before this sidecar knows).
    pub(crate) fn can_reach(&self, peer: &str) -> bool {
        !peer.is_empty()
            && self.identity.client_config(Alpn::Http1).is_some()
            && self.identity.server_name(peer).is_some()
    }

    /// The clients whose connections are verified to be `peer`.
    pub(crate) fn clients(&self, peer: &str) -> Pair {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pair) = by_peer.get(peer) {
            return pair.clone();
        }
        if by_peer.len() >= MAX_PEERS {
            by_peer.clear();
        }
        let peer: Arc<str> = Arc::from(peer);
        let connector = |h2| MtlsConnector {
            http: self.connector.clone(),
            identity: Arc::clone(&self.identity),
            peer: Arc::clone(&peer),
            h2,
            handshake_timeout: self.handshake_timeout,
        };
        let pair = Pair {
            http1: self.http1.build(connector(false)),
            http2: self.http2.build(connector(true)),
        };
        by_peer.insert(peer, pair.clone());
        pair
    }
}

/// TCP by the HTTP connector, then mesh TLS: this sidecar's certificate, the server's
/// chained to the bundle and carrying exactly `peer` (the identity's verifier checks
/// it against the SNI made from `peer`).
#[derive(Clone)]
pub(crate) struct MtlsConnector {
    http: HttpConnector,
    identity: Arc<Identity>,
    peer: Arc<str>,
    /// ALPN `h2` (the HTTP/2 client: the app spoke HTTP/2), else `http/1.1`.
    h2: bool,
    /// A peer that takes the TCP connection but never finishes the handshake is a
    /// connect failure (retried elsewhere), not a request timeout.
    handshake_timeout: Duration,
}

impl tower_service::Service<Uri> for MtlsConnector {
    type Response = MeshStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Read now: a renewed certificate serves the next connection.
        let alpn = if self.h2 { Alpn::H2 } else { Alpn::Http1 };
        let config = self.identity.client_config(alpn);
        let name = self.identity.server_name(&self.peer);
        let peer = Arc::clone(&self.peer);
        let handshake_timeout = self.handshake_timeout;
        let tcp = self.http.call(uri);
        Box::pin(async move {
            let config = config.ok_or("mTLS: this sidecar has no valid certificate")?;
            let name = name.ok_or_else(|| {
                format!("mTLS: {peer} is not a mesh identity of this trust domain")
            })?;
            let tcp = tcp.await?.into_inner();
            let handshake = TlsConnector::from(config).connect(name, tcp);
            let tls = tokio::time::timeout(handshake_timeout, handshake)
                .await
                .map_err(|_| format!("mTLS handshake (expecting {peer}): timed out"))?
                .map_err(|e| format!("mTLS handshake (expecting {peer}): {e}"))?;
            Ok(MeshStream(TokioIo::new(tls)))
        })
    }
}

/// A mesh mTLS connection, as hyper's client reads and writes it.
pub(crate) struct MeshStream(TokioIo<TlsStream<TcpStream>>);

impl Connection for MeshStream {
    fn connected(&self) -> Connected {
        let (tcp, tls) = self.0.inner().get_ref();
        let connected = tcp.connected();
        if tls.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for MeshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MeshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::testing::TestCa;
    use crate::metrics::Metrics;

    const B: &str = "spiffe://cluster.local/ns/default/sa/b";

    fn clients(identity: Arc<Identity>) -> MeshClients {
        let builder = Client::builder(hyper_util::rt::TokioExecutor::new());
        MeshClients::new(
            identity,
            HttpConnector::new(),
            Duration::from_secs(1),
            builder.clone(),
            builder,
        )
    }

    #[test]
    fn the_mode_and_what_is_known_decide_the_transport() {
        let ca = TestCa::new("mesh");
        let with_cert = clients(ca.identity("spiffe://cluster.local/ns/default/sa/a", &[ca.pem()]));
        let without = clients(Arc::new(Identity::new(
            crate::identity::Config::default(),
            Arc::new(Metrics::default()),
        )));
        let (off, permissive, strict) = (MtlsMode::Off, MtlsMode::Permissive, MtlsMode::Strict);
        assert_eq!(with_cert.transport(off, B), Ok(Transport::Plain));
        assert_eq!(with_cert.transport(permissive, B), Ok(Transport::Mtls(B)));
        assert_eq!(with_cert.transport(strict, B), Ok(Transport::Mtls(B)));
        // An instance without an identity, or of another trust domain.
        for peer in ["", "spiffe://elsewhere.example/ns/default/sa/b"] {
            assert_eq!(with_cert.transport(permissive, peer), Ok(Transport::Plain));
            let err = with_cert.transport(strict, peer).unwrap_err();
            assert!(err.contains("no mesh identity"), "{err}");
        }
        // No certificate here yet.
        assert_eq!(without.transport(permissive, B), Ok(Transport::Plain));
        let err = without.transport(strict, B).unwrap_err();
        assert!(err.contains("no valid certificate"), "{err}");
        assert!(with_cert.can_reach(B));
        assert!(!without.can_reach(B));
        assert!(!with_cert.can_reach(""));
    }

    #[test]
    fn clients_are_kept_per_peer_identity() {
        let ca = TestCa::new("mesh");
        let mesh = clients(ca.identity(B, &[ca.pem()]));
        let _ = mesh.clients(B);
        let _ = mesh.clients(B);
        let _ = mesh.clients("spiffe://cluster.local/ns/default/sa/c");
        assert_eq!(mesh.by_peer.lock().unwrap().len(), 2);
    }
}
