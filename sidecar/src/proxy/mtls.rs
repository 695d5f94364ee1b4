//! Mesh mTLS on the way out (security.md "mTLS between sidecars"): how a call to a mesh
//! instance goes — plaintext or mTLS — by the PeerPolicy mode of its service, and the
//! TLS step of a connection the pool makes to another sidecar.
//!
//! The pool keys mTLS connections by address AND the identity expected, so a pooled
//! connection is always one whose server proved the identity the request expects: a
//! lookup from address to identity at connect time could verify against the identity
//! of whoever held the address when the connection was made, and hand that connection
//! to a later request that expects another (an address reused by a new instance).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graylane_routing::MtlsMode;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
pub(crate) use tokio_rustls::client::TlsStream;

use crate::identity::{Alpn, Identity};
use crate::routes::Routes;

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

/// Whether and how this sidecar can call others over mTLS (the connections
/// themselves are the pool's).
#[derive(Clone)]
pub(crate) struct MeshClients {
    identity: Arc<Identity>,
    /// Permissive fallbacks to plaintext are logged once each, not per request.
    warned_no_certificate: Arc<AtomicBool>,
    warned_no_identity: Arc<AtomicBool>,
}

/// The TLS step of one mesh connection: this sidecar's certificate as it is when the
/// connection is made, the name standing for the identity the server must prove.
pub(crate) struct MeshTls {
    connector: TlsConnector,
    name: ServerName<'static>,
    peer: Box<str>,
}

impl MeshClients {
    pub(crate) fn new(identity: Arc<Identity>) -> Self {
        Self {
            identity,
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
        } else if !self.identity.can_name(peer) {
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
        self.identity.client_config(Alpn::Http1).is_some() && self.identity.can_name(peer)
    }
}

impl MeshTls {
    /// The TLS step towards a sidecar proving `peer`, speaking `alpn`, with the
    /// configs in force now (a renewed certificate serves the next connection). Errs
    /// without a valid certificate here, or when `peer` is no identity of this trust
    /// domain: nothing to connect for.
    pub(crate) fn new(identity: &Identity, peer: &str, alpn: Alpn) -> Result<Self, String> {
        let config = identity
            .client_config(alpn)
            .ok_or("mTLS: this sidecar has no valid certificate")?;
        let name = identity
            .server_name(peer)
            .ok_or_else(|| format!("mTLS: {peer} is not a mesh identity of this trust domain"))?;
        Ok(Self {
            connector: TlsConnector::from(config),
            name,
            peer: peer.into(),
        })
    }

    /// The handshake over `tcp`, within `timeout`: a peer that takes the TCP
    /// connection but never finishes it is a connect failure (retried elsewhere), not
    /// a request timeout. A failure names the identity expected (a server proving
    /// another reads `certificate not valid for name …`).
    pub(crate) async fn handshake(
        self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, String> {
        let peer = self.peer;
        let handshake = self.connector.connect(self.name, tcp);
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| format!("mTLS handshake (expecting {peer}): timed out"))?
            .map_err(|e| format!("mTLS handshake (expecting {peer}): {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::testing::TestCa;
    use crate::metrics::Metrics;

    const B: &str = "spiffe://cluster.local/ns/default/sa/b";

    fn clients(identity: Arc<Identity>) -> MeshClients {
        MeshClients::new(identity)
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
}
