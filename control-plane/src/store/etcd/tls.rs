//! TLS to etcd (`--etcd-ca`, `--etcd-cert`, `--etcd-key`): the CA that signed etcd's
//! server certificate, and the client certificate etcd's `--client-cert-auth` asks
//! for. One [`connect_options`] for both etcd clients (the rule store and the
//! instance registry), so they always talk to etcd the same way.
//!
//! etcd-client's `tls-ring` feature is tonic's rustls with ring, the same TLS stack as
//! the rest of the control plane: no OpenSSL, no second rustls or tonic.

use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Each etcd call must answer within this (a replica cut off from etcd says so fast:
/// `/ready` turns 503 and writes fail with UNAVAILABLE).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the control plane proves itself to etcd and checks etcd's certificate. Checked
/// when made, so a wrong file fails the start naming its flag, not the first call.
#[derive(Clone)]
pub struct EtcdTls {
    ca: Vec<u8>,
    /// Certificate chain and key (PEM); `None`: no client certificate (an etcd without
    /// `--client-cert-auth`).
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why `--etcd-ca/--etcd-cert/--etcd-key` cannot be used; each names its flag.
#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    #[error("{flag}: not PEM: {source}")]
    Pem {
        flag: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{flag}: no certificate in it")]
    NoCertificate { flag: &'static str },
    #[error("{flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("--etcd-key: no private key in it: {0}")]
    NoKey(rustls::pki_types::pem::Error),
    #[error("--etcd-cert/--etcd-key: the key is not the certificate's: {0}")]
    Mismatch(rustls::Error),
}

impl std::fmt::Debug for EtcdTls {
    // The client key must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_cert", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// From PEM: `ca` (one or more certificates), and `client` = (certificate chain,
    /// private key) when etcd checks client certificates.
    pub fn from_pem(ca: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Self, EtcdTlsError> {
        certificates(ca, "--etcd-ca")?;
        if let Some((cert, key)) = client {
            let chain = certificates(cert, "--etcd-cert")?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(EtcdTlsError::NoKey)?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, key, &provider)
                .map_err(EtcdTlsError::Mismatch)?;
        }
        Ok(Self {
            ca: ca.to_vec(),
            client: client.map(|(c, k)| (c.to_vec(), k.to_vec())),
        })
    }

    /// [`EtcdTls::from_pem`] on the files of `--etcd-ca` and `--etcd-cert/--etcd-key`.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self, EtcdTlsError> {
        let read = |path: &Path, flag: &'static str| {
            std::fs::read(path).map_err(|source| EtcdTlsError::Read {
                flag,
                path: path.display().to_string(),
                source,
            })
        };
        let ca = read(ca, "--etcd-ca")?;
        let client = match client {
            Some((cert, key)) => Some((read(cert, "--etcd-cert")?, read(key, "--etcd-key")?)),
            None => None,
        };
        Self::from_pem(
            &ca,
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
    }

    fn options(&self) -> TlsOptions {
        let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.client {
            options = options.identity(Identity::from_pem(cert, key));
        }
        // etcd speaks gRPC (HTTP/2) on its client port whether or not its TLS
        // announces h2 in ALPN.
        options.assume_http2(true)
    }
}

/// The PEM certificates in `pem`, at least one.
fn certificates(
    pem: &[u8],
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, EtcdTlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| EtcdTlsError::Pem { flag, source })?;
    if certs.is_empty() {
        return Err(EtcdTlsError::NoCertificate { flag });
    }
    Ok(certs)
}

/// The settings of every etcd client of this process: short timeouts, keep-alive,
/// leader required, and TLS when given (endpoints must then be `https://`).
pub fn connect_options(tls: Option<&EtcdTls>) -> ConnectOptions {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum refuses instead of serving stale data.
        .with_require_leader(true);
    match tls {
        Some(tls) => options.with_tls(tls.options()),
        None => options,
    }
}

/// `e` as the operator should read it: a failed TLS handshake with etcd says so, and
/// which flags set it up, instead of tonic's bare "transport error".
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain = format!("{chain}: {text}");
        }
        source = s.source();
    }
    // How hyper reports a connection etcd closed, depending on when it noticed.
    const CLOSED: [&str; 4] = [
        "connection closed",
        "connection was not ready",
        "broken pipe",
        "connection reset",
    ];
    const HANDSHAKE: [&str; 4] = [
        "certificate",
        "handshake",
        "alert",
        "HTTP/2 was not negotiated",
    ];
    if HANDSHAKE.iter().any(|word| chain.contains(word)) {
        format!(
            "etcd TLS: {chain} (check --etcd-ca, --etcd-cert and --etcd-key against etcd's \
             certificate and --trusted-ca-file)"
        )
    } else if CLOSED.iter().any(|words| chain.contains(words)) {
        // With TLS 1.3 the client's handshake is over before etcd checks the client
        // certificate: a refused one reaches us only as a closed connection.
        format!(
            "etcd: {chain} (etcd closed the connection; over TLS, that is how etcd refuses \
             a missing or unknown client certificate: check --etcd-cert and --etcd-key \
             against etcd's --trusted-ca-file)"
        )
    } else {
        format!("etcd: {chain}")
    }
}
