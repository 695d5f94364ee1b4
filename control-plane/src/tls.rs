//! The gRPC listener's TLS (`--grpc-tls`, `--grpc-tls-cert/--grpc-tls-key`).
//!
//! The TLS accept is done here rather than in tonic so that the certificate can change
//! under a running listener: each handshake takes the certificate in force
//! ([`ServerCert`]), and for a certificate the mesh CA issued, a background task issues
//! the next one at half its lifetime and swaps it in. Connections already open keep
//! going: TLS checks the certificate once, at the handshake.

use std::io;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::ca::{CaError, MeshCa};

/// The gRPC listener's certificate and, for one the mesh CA issued, what renews it.
pub struct GrpcTls {
    cert: Arc<ServerCert>,
    /// `None`: the operator's certificate (`--grpc-tls-cert`), which the operator
    /// replaces (and the control plane then restarts).
    renewal: Option<Renewal>,
}

/// Why the gRPC listener's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} is not PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in the chain")]
    NoCertificate,
    /// The key does not parse as a usable signing key, or is not the certificate's.
    #[error("the key does not fit the certificate: {0}")]
    Key(rustls::Error),
    #[error("TLS settings: {0}")]
    Config(rustls::Error),
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// What a renewal issues: a server certificate for `names`, valid for `ttl`.
struct Renewal {
    ca: MeshCa,
    names: Vec<String>,
    ttl: Duration,
}

/// The certificate in force, read by every handshake and replaced by the renewal task.
#[derive(Debug)]
struct ServerCert(RwLock<Arc<CertifiedKey>>);

/// A handshake that has not finished by then is dropped (a stalled or idle client must
/// not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A renewal that failed is tried again this soon (the certificate in force still has
/// half its lifetime left), or at a tenth of the lifetime if that is shorter.
const RETRY: Duration = Duration::from_secs(30);

impl GrpcTls {
    /// A fixed certificate: the chain (leaf first) and its private key, PEM.
    pub fn fixed(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            cert: Arc::new(ServerCert(RwLock::new(certified_key(chain_pem, key_pem)?))),
            renewal: None,
        })
    }

    /// A certificate issued from `ca` for `names`, valid for `ttl` and renewed at half
    /// of it.
    pub fn issued(ca: MeshCa, names: Vec<String>, ttl: Duration) -> Result<Self, TlsError> {
        let renewal = Renewal { ca, names, ttl };
        let first = renewal.issue()?;
        Ok(Self {
            cert: Arc::new(ServerCert(RwLock::new(first))),
            renewal: Some(renewal),
        })
    }

    /// Accepts on `listener` until `shutdown`, yielding the connections whose TLS
    /// handshake (ALPN `h2`, TLS 1.2 or 1.3) succeeded; with a CA-issued certificate,
    /// also renews it until `shutdown`.
    pub(crate) fn incoming(
        self,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ReceiverStream<io::Result<TlsStream<TcpStream>>>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&self.cert) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        if let Some(renewal) = self.renewal {
            tokio::spawn(renewal.run(self.cert, shutdown.clone()));
        }
        // Tonic takes connections as fast as they come; the bound only matters if it
        // stopped, and then the accept loop waits rather than queueing without limit.
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept(listener, acceptor, tx, shutdown));
        Ok(ReceiverStream::new(rx))
    }
}

impl Renewal {
    fn issue(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let issued = self.ca.issue_server(&self.names, self.ttl)?;
        certified_key(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())
    }

    /// Issues a new certificate at half the lifetime of the one in force, until
    /// `shutdown`.
    async fn run(self, cert: Arc<ServerCert>, mut shutdown: watch::Receiver<bool>) {
        let mut wait = self.ttl / 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            match self.issue() {
                Ok(next) => {
                    *cert.0.write().unwrap_or_else(PoisonError::into_inner) = next;
                    wait = self.ttl / 2;
                    tracing::info!(names = ?self.names, ttl = ?self.ttl, "renewed the gRPC server certificate");
                }
                Err(e) => {
                    wait = RETRY.min(self.ttl / 10);
                    tracing::warn!(error = %e, retry_in = ?wait, "renewing the gRPC server certificate failed; the current one stays in force");
                }
            }
        }
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The accept loop: one task per handshake, so a slow client delays no one else. A
/// failed accept or handshake is logged and the loop goes on.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => return,
            // Tonic stopped taking connections: it is shutting down.
            _ = tx.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: pause rather than spin.
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Snapshots and ACKs are small writes that must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "gRPC TLS handshake timed out"),
            }
        });
    }
}

/// A certificate chain and its key, PEM, as rustls serves them.
fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = |what| move |source| TlsError::Pem { what, source };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("the certificate chain"))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem("the private key"))?;
    let certified = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(TlsError::Key)?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_issues_a_new_certificate_each_time() {
        let root = crate::ca::generate_root("cluster.local").unwrap();
        let ca = MeshCa::from_pem(&root.cert, &root.key).unwrap();
        let tls = GrpcTls::issued(ca, vec!["localhost".into()], Duration::from_secs(60)).unwrap();
        let renewal = tls.renewal.as_ref().unwrap();
        let (a, b) = (renewal.issue().unwrap(), renewal.issue().unwrap());
        assert_ne!(a.end_entity_cert().unwrap(), b.end_entity_cert().unwrap());
        assert_eq!(a.cert.len(), 2, "the leaf, then the CA");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let root = crate::ca::generate_root("cluster.local").unwrap();
        let ca = MeshCa::from_pem(&root.cert, &root.key).unwrap();
        let one = ca
            .issue_server(&["localhost".into()], Duration::from_secs(60))
            .unwrap();
        let two = ca
            .issue_server(&["localhost".into()], Duration::from_secs(60))
            .unwrap();
        assert!(GrpcTls::fixed(one.chain_pem.as_bytes(), one.key_pem.as_bytes()).is_ok());
        let err = GrpcTls::fixed(one.chain_pem.as_bytes(), two.key_pem.as_bytes());
        assert!(matches!(err, Err(TlsError::Key(_))));
        let err = GrpcTls::fixed(b"", one.key_pem.as_bytes());
        assert!(matches!(err, Err(TlsError::NoCertificate)));
    }
}
