//! Reading certificates: the chain the control plane issued (checked against the key
//! this sidecar made), a peer's URI SAN, and the trust bundle.

use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::name::SpiffeId;

/// Why an issued certificate or a trust bundle was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("{what}: not PEM ({why})")]
    Pem { what: &'static str, why: String },
    #[error("{what}: no certificate in it")]
    Empty { what: &'static str },
    #[error("{what}: not a certificate ({why})")]
    Der { what: &'static str, why: String },
    #[error("the certificate carries no single spiffe identity as its URI SAN")]
    NoIdentity,
    #[error("the certificate is not for the key this sidecar made")]
    OtherKey,
    #[error("the certificate expired before it arrived (not after {not_after})")]
    Expired { not_after: i64 },
    #[error("the trust bundle: {0}")]
    Bundle(String),
}

/// A certificate the control plane issued, with the key it certifies.
pub(crate) struct Issued {
    pub(crate) id: SpiffeId,
    /// Hex, as `openssl x509 -serial` prints it.
    pub(crate) serial: String,
    /// Unix seconds.
    pub(crate) not_after: i64,
    /// The leaf first, then any intermediates.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

/// One CA certificate of the trust bundle, as `/config` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Anchor {
    pub(crate) subject: String,
    /// SHA-256 of the DER, hex.
    pub(crate) sha256: String,
}

/// The CA certificates peers must chain to.
pub(crate) struct Bundle {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) anchors: Vec<Anchor>,
}

impl std::fmt::Debug for Issued {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Takes `chain_pem` (leaf first) for `key`: refused when it does not parse,
    /// carries no spiffe identity, certifies another key, or is expired at `now`.
    pub(crate) fn new(chain_pem: &str, key: &KeyPair, now: i64) -> Result<Self, CertError> {
        let chain = pem_certs("the issued chain", chain_pem)?;
        let leaf = parse("the issued certificate", &chain[0])?;
        let id = uri_san(&leaf)
            .and_then(SpiffeId::parse)
            .ok_or(CertError::NoIdentity)?;
        if leaf.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::OtherKey);
        }
        let not_after = leaf.validity().not_after.timestamp();
        if not_after <= now {
            return Err(CertError::Expired { not_after });
        }
        let serial = hex(leaf.raw_serial());
        Ok(Self {
            id,
            serial,
            not_after,
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// The private key, for a TLS config.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

impl Bundle {
    /// The bundle of `pems` (each one or more CA certificates). All or nothing: an
    /// entry that does not parse refuses the whole bundle, so a damaged update never
    /// silently drops a CA that peers still chain to.
    pub(crate) fn new(pems: &[String]) -> Result<Self, CertError> {
        let mut roots = RootCertStore::empty();
        let mut anchors = Vec::new();
        for pem in pems {
            for der in pem_certs("a trust bundle entry", pem)? {
                let cert = parse("a trust bundle entry", &der)?;
                anchors.push(Anchor {
                    subject: cert.subject().to_string(),
                    sha256: hex(ring::digest::digest(&ring::digest::SHA256, &der).as_ref()),
                });
                roots
                    .add(der)
                    .map_err(|e| CertError::Bundle(format!("{e}")))?;
            }
        }
        if roots.is_empty() {
            return Err(CertError::Bundle("no CA certificate in it".into()));
        }
        Ok(Self {
            roots: Arc::new(roots),
            anchors,
        })
    }
}

/// The only URI SAN of `cert` when it is a spiffe id; `None` without one, with
/// several, or when `cert` does not parse.
pub(crate) fn peer_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = parse("the peer certificate", cert).ok()?;
    let id = uri_san(&cert)?;
    SpiffeId::parse(id).map(|_| id.to_string())
}

fn uri_san<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => Some(uri),
        _ => None,
    }
}

fn parse<'a>(what: &'static str, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::Der {
            what,
            why: "trailing bytes".into(),
        }),
        Err(e) => Err(CertError::Der {
            what,
            why: e.to_string(),
        }),
    }
}

fn pem_certs(what: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what,
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Empty { what });
    }
    Ok(certs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
