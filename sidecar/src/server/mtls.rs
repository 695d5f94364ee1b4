//! Mesh mTLS on the inbound listener (security.md "mTLS between sidecars"): each new
//! connection is sorted by the PeerPolicy mode of this sidecar's service, read from the
//! routes in force at accept, so a rule change applies to the next connection.
//!
//! ```text
//! first byte ─► not TLS (plaintext HTTP) ─► off/permissive: served; strict: refused
//!            ─► TLS: ClientHello peeked (not consumed), its SNI
//!                 ─► a mesh SNI ─► mTLS handshake (client certificate required,
//!                                  chained to the bundle) ─► HTTP, peer identity known
//!                 ─► another SNI ─► off/permissive: tunnelled to the app (its own
//!                                  TLS, through a CONNECT tunnel); strict: refused
//! ```
//!
//! A mesh SNI is accepted in `off` mode too: a caller that has not yet seen a switch
//! from `strict` to `off` still dials mTLS for a moment, and tunnelling its handshake
//! to the app would fail its request. An app's own TLS never uses the mesh's reserved
//! SNI suffix, so `off` stays "as today" for every other connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graylane_routing::MtlsMode;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::Identity;
use crate::metrics::{Metrics, RefusedReason};
use crate::proxy::mtls_mode;
use crate::routes::Shared;

/// The largest ClientHello read before the handshake: far above any real one (post-
/// quantum key shares make them ~2 KiB), one TLS record.
const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;
/// Between two peeks of an incomplete ClientHello (it rarely spans two segments).
const PEEK_BACKOFF: Duration = Duration::from_millis(5);

/// What the inbound listener needs to sort connections: this sidecar's identity and
/// service, and the routes in force.
pub struct MeshInbound {
    pub(crate) identity: Arc<Identity>,
    pub(crate) routes: Shared,
    /// This sidecar's service and namespace: whose PeerPolicy mode applies.
    pub(crate) namespace: String,
    pub(crate) service: String,
    pub(crate) metrics: Arc<Metrics>,
    /// "No certificate yet" is logged once, not per connection.
    warned_no_certificate: AtomicBool,
}

/// Where a connection goes.
pub(crate) enum Sorted {
    /// HTTP in the clear.
    Plain(TcpStream),
    /// A mesh peer that proved `identity`: HTTP over TLS.
    Mesh(Box<TlsStream<TcpStream>>, Arc<str>),
    /// TLS that is not the mesh's: to the app as it is.
    Tunnel(TcpStream),
    /// Refused and counted, or silent until the header-read deadline: dropped.
    Closed,
}

impl MeshInbound {
    pub(crate) fn new(
        identity: Arc<Identity>,
        routes: Shared,
        namespace: String,
        service: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            identity,
            routes,
            namespace,
            service,
            metrics,
            warned_no_certificate: AtomicBool::new(false),
        }
    }

    /// This service's mode in the routes in force.
    pub(crate) fn mode(&self) -> MtlsMode {
        mtls_mode(
            self.routes.load().as_deref(),
            &self.namespace,
            &self.service,
        )
    }

    /// Sorts a connection whose first byte (`None`: nothing within the wait) is
    /// `first`, by `mode`. Everything here is bounded by `deadline` (the header-read
    /// timeout from accept).
    pub(crate) async fn sort(
        &self,
        stream: TcpStream,
        first: Option<u8>,
        mode: MtlsMode,
        deadline: Instant,
    ) -> Sorted {
        let tls = first == Some(TLS_HANDSHAKE_RECORD);
        if !tls {
            return match (mode, first) {
                (MtlsMode::Strict, Some(_)) => self.refuse(RefusedReason::Plaintext),
                // Silent until the deadline in strict mode: the header timer's case.
                (MtlsMode::Strict, None) => Sorted::Closed,
                _ => Sorted::Plain(stream),
            };
        }
        let sni = match peek_sni(&stream, deadline).await {
            Ok(sni) => sni,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable ClientHello");
                return match mode {
                    MtlsMode::Strict => self.refuse(RefusedReason::Handshake),
                    // Not TLS after its first byte: read as HTTP, as any other first
                    // byte is, so the checks and the tag's trust boundary apply (the
                    // parser refuses it). Tunnelled, `\x16\x03\x01GET / …` would take a
                    // forged tag to an app whose parser is lenient.
                    _ => Sorted::Plain(stream),
                };
            }
        };
        let mesh = sni.as_deref().is_some_and(Identity::is_mesh_sni);
        match (mesh, mode) {
            (true, _) => self.handshake(stream, deadline).await,
            (false, MtlsMode::Strict) => self.refuse(RefusedReason::NotMesh),
            (false, _) => Sorted::Tunnel(stream),
        }
    }

    /// The mesh mTLS handshake: a client certificate chained to the bundle, carrying
    /// a mesh identity.
    async fn handshake(&self, stream: TcpStream, deadline: Instant) -> Sorted {
        let Some(config) = self.identity.server_config() else {
            if !self.warned_no_certificate.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "refusing mesh mTLS connections: this sidecar has no valid certificate \
                     (not issued yet, or expired); see the control-plane connection"
                );
            }
            return self.refuse(RefusedReason::NoCertificateLocal);
        };
        self.warned_no_certificate.store(false, Ordering::Relaxed);
        let accepted =
            tokio::time::timeout_at(deadline, TlsAcceptor::from(config).accept(stream)).await;
        let tls = match accepted {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "mesh mTLS handshake failed");
                return self.refuse(handshake_reason(&e));
            }
            Err(_) => {
                tracing::debug!("mesh mTLS handshake not done within the header-read timeout");
                return self.refuse(RefusedReason::Handshake);
            }
        };
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(Identity::peer_identity);
        match identity {
            Some(id) => Sorted::Mesh(Box::new(tls), Arc::from(id)),
            // The verifier accepts only mesh certificates; one without a URI SAN
            // proves no identity, so nothing it says is trusted.
            None => {
                tracing::debug!("mesh peer certificate carries no spiffe identity");
                self.refuse(RefusedReason::Handshake)
            }
        }
    }

    fn refuse(&self, reason: RefusedReason) -> Sorted {
        self.metrics.inbound_refused.count(reason);
        tracing::debug!(
            reason = reason.as_str(),
            "inbound connection refused (mTLS mode)"
        );
        Sorted::Closed
    }

    /// Whether a request on a plaintext connection is refused: the listener turned
    /// `strict` after the connection was accepted, and the graceful close it began
    /// has not reached the connection yet (a request already on its way). Refused
    /// without an answer, so a sidecar that sent it retries over mTLS; counted.
    pub(crate) fn refuses_plaintext(&self) -> bool {
        let strict = self.mode() == MtlsMode::Strict;
        if strict {
            self.metrics.inbound_refused.count(RefusedReason::Plaintext);
        }
        strict
    }

    /// Completes once this service's mode is `strict`: a plaintext connection accepted
    /// before then is closed gracefully (after its current request on HTTP/1, with a
    /// GOAWAY on HTTP/2).
    pub(crate) async fn until_strict(&self) {
        let mut changes = self.routes.subscribe();
        loop {
            if self.mode() == MtlsMode::Strict {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A plaintext request that reached an inbound listener after it turned strict: the
/// connection is closed without an answer.
#[derive(Debug, thiserror::Error)]
#[error("a plaintext request after the listener turned strict: refused")]
pub(crate) struct PlaintextAfterStrict;

/// The first byte of a TLS handshake record (RFC 8446 §5.1, `handshake(22)`).
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;

/// The first byte of a connection, if one comes within `wait` (not consumed).
pub(crate) async fn peek_first(stream: &TcpStream, wait: Duration) -> Option<u8> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0]),
        _ => None,
    }
}

/// A client that sent no certificate is told apart from one whose certificate failed.
fn handshake_reason(e: &io::Error) -> RefusedReason {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => RefusedReason::NoCertificate,
        _ => RefusedReason::Handshake,
    }
}

/// The SNI of the ClientHello at the head of `stream`, read without consuming it (the
/// bytes stay for the handshake, or the app), bounded by `deadline` and
/// [`MAX_CLIENT_HELLO`].
async fn peek_sni(stream: &TcpStream, deadline: Instant) -> io::Result<Option<String>> {
    let mut buf = vec![0u8; MAX_CLIENT_HELLO];
    let mut seen = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "ClientHello too slow"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if n > seen {
            seen = n;
            if let Some(sni) = client_hello_sni(&buf[..n])? {
                return Ok(sni);
            }
            if n == buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello over 16 KiB",
                ));
            }
        }
        // peek returns at once while bytes wait: poll for the rest instead of spinning.
        tokio::time::sleep(PEEK_BACKOFF).await;
    }
}

/// `Some(sni)` once `bytes` hold a whole ClientHello; `None` while incomplete.
fn client_hello_sni(bytes: &[u8]) -> io::Result<Option<Option<String>>> {
    // A record that cannot be a ClientHello is told at once from its first bytes,
    // rather than waiting for as many bytes as its length field claims (RFC 8446
    // §5.1: legacy version 3.x; §4: the first handshake message, type 1).
    let not_hello = |what| Err(io::Error::new(io::ErrorKind::InvalidData, what));
    if bytes.len() >= 2 && bytes[1] != 3 {
        return not_hello("not a TLS record version");
    }
    if bytes.len() >= 6 && bytes[5] != CLIENT_HELLO {
        return not_hello("the first handshake message is not a ClientHello");
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        if acceptor.read_tls(&mut rest)? == 0 {
            break;
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(Some(
            accepted.client_hello().server_name().map(str::to_owned),
        )),
        Ok(None) => Ok(None),
        Err((e, _alert)) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_client_hello() {
        let bytes = [0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(client_hello_sni(&bytes).is_err());
    }

    #[test]
    fn a_partial_record_waits_for_more() {
        let bytes = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert!(matches!(client_hello_sni(&bytes), Ok(None)));
    }

    #[test]
    fn a_record_that_cannot_be_a_client_hello_is_told_at_once() {
        // Its length field claims 8 KiB that will never come: no wait for them.
        assert!(client_hello_sni(b"\x16\x03\x01 not http").is_err());
        assert!(client_hello_sni(b"\x16HTTP").is_err());
    }

    #[test]
    fn the_sni_of_a_real_client_hello_is_read() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from("orders.default.identity.graylane.internal")
                .expect("a DNS name");
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
        let mut hello = Vec::new();
        client.write_tls(&mut hello).expect("the ClientHello");
        assert_eq!(hello[0], TLS_HANDSHAKE_RECORD);
        let sni = client_hello_sni(&hello)
            .expect("readable")
            .expect("complete");
        assert_eq!(
            sni.as_deref(),
            Some("orders.default.identity.graylane.internal")
        );
        // Cut short: incomplete, not an error.
        assert!(matches!(
            client_hello_sni(&hello[..hello.len() / 2]),
            Ok(None)
        ));
    }
}
