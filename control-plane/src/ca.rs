//! The mesh CA: the control plane signs with it its own gRPC server certificate
//! (`--grpc-tls`) and the sidecars' workload certificates (`issue_workload`).
//!
//! Either an operator's CA (`--ca-cert/--ca-key`, a root or an intermediate), or a root
//! generated on first start and kept in the store (`Store::ca_get_or_create`), so every
//! replica and every restart signs with the same one. Only the certificate ever leaves
//! the process (`/ca.pem`); the key stays in the store and in memory.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::store::{CaPem, Store, StoreError};

mod csr;

pub use self::csr::CsrKey;

/// How long a generated root lives (spec: 10 years).
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this far in the past, so a peer whose clock is a little behind
/// does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the CA could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The operator's (or the stored) PEM is not a usable CA certificate and key.
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// Making or signing a certificate failed (a bad server name, say).
    #[error("{what}: {source}")]
    Sign {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A CA the control plane can sign with. Cheap to clone: clones share the key.
#[derive(Clone)]
pub struct MeshCa {
    issuer: Arc<Issuer<'static, KeyPair>>,
    cert_pem: String,
    /// An operator's intermediate (issuer ≠ subject): it goes along in every chain
    /// so that peers trusting only the root above it can verify.
    intermediate: bool,
}

/// A workload certificate: the chain (leaf first, then any intermediate, never the
/// root) and when it expires (Unix seconds).
#[derive(Debug)]
pub struct IssuedLeaf {
    pub chain_pem: String,
    pub not_after: i64,
}

/// A certificate the CA issued: the chain (leaf first, then the CA) and its key, PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for MeshCa {
    // Never print the signing key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// The store's CA; on first use (in any replica) a new root for `trust_domain`,
    /// stored so every replica and restart gets the same one.
    pub async fn from_store(store: &dyn Store, trust_domain: &str) -> Result<Self, CaError> {
        // A losing candidate costs one P-256 key generation and is dropped.
        let candidate = generate_root(trust_domain)?;
        let stored = store.ca_get_or_create(candidate).await?;
        Self::from_pem(&stored.cert, &stored.key)
    }

    /// A CA from PEM text: the certificate (the first one, if a chain) and its key.
    /// Fails when either does not parse or the key is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let invalid = |what, why: String| CaError::Invalid { what, why };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid("the CA key is not a PEM private key", e.to_string()))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| invalid("the CA certificate is not PEM", e.to_string()))?;
        // The certificate's DER holds its SubjectPublicKeyInfo verbatim, so the key
        // belongs to it exactly when its SPKI occurs there.
        let spki = key.subject_public_key_info();
        if !cert.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(invalid(
                "the CA key does not match the CA certificate",
                "different public keys".into(),
            ));
        }
        let intermediate =
            !self_issued(&cert).map_err(|why| invalid("the CA certificate does not parse", why))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| invalid("the CA certificate does not parse", e.to_string()))?;
        // Re-encoded from the DER: only the CA itself, whatever else the file held.
        let cert_pem = pem_of(&cert);
        Ok(Self {
            issuer: Arc::new(issuer),
            cert_pem,
            intermediate,
        })
    }

    /// The CA certificate, PEM: what clients pass as `--ca-bundle`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A workload certificate for the sidecar holding `key`'s private key: `spiffe_id`
    /// as its only SAN (no DNS name, no subject), client and server auth, valid for
    /// `ttl` from now (backdated like every certificate of this CA).
    pub fn issue_workload(
        &self,
        key: &CsrKey,
        spiffe_id: &str,
        ttl: Duration,
    ) -> Result<IssuedLeaf, CaError> {
        let sign = |what| move |source| CaError::Sign { what, source };
        let mut params = CertificateParams::default();
        // An empty subject (SPIFFE X.509-SVID: the URI SAN is the identity; rcgen
        // then marks the SAN critical, as RFC 5280 §4.2.1.6 asks).
        params.distinguished_name = DistinguishedName::new();
        let uri = spiffe_id.try_into().map_err(sign("SPIFFE id"))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let not_after = set_validity(&mut params, ttl);
        params.serial_number = Some(serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(key, self.issuer.as_ref())
            .map_err(sign("workload certificate"))?;
        let mut chain_pem = cert.pem();
        if self.intermediate {
            chain_pem.push_str(&self.cert_pem);
        }
        Ok(IssuedLeaf {
            chain_pem,
            not_after,
        })
    }

    /// A TLS server certificate for `names` (DNS names, or IP addresses as IP SANs),
    /// valid for `ttl`, with a fresh P-256 key.
    pub fn issue_server(&self, names: &[String], ttl: Duration) -> Result<Issued, CaError> {
        let sign = |what| move |source| CaError::Sign { what, source };
        let mut params = CertificateParams::new(names.to_vec()).map_err(sign("server names"))?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        set_validity(&mut params, ttl);
        params.serial_number = Some(serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(sign("server key"))?;
        let cert = params
            .signed_by(&key, self.issuer.as_ref())
            .map_err(sign("server certificate"))?;
        Ok(Issued {
            // The CA goes along so that clients trusting only a root above an operator's
            // intermediate can still build the chain.
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `--trust-bundle`: the CA certificates (PEM) in `pem`, one string each, re-encoded
/// (comments and keys dropped). Fails when there is none or one does not parse.
pub fn parse_trust_bundle(pem: &str) -> Result<Vec<String>, String> {
    let mut certs = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|e| format!("certificate {}: {e}", i + 1))?;
        self_issued(&cert).map_err(|e| format!("certificate {}: {e}", i + 1))?;
        certs.push(pem_of(&cert));
    }
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// A new self-signed root: ECDSA P-256, 10 years, CN "graylane mesh CA", the trust
/// domain as its URI SAN (`spiffe://DOMAIN`, as SPIFFE bundles name their CA).
pub fn generate_root(trust_domain: &str) -> Result<CaPem, CaError> {
    let sign = |what| move |source| CaError::Sign { what, source };
    let mut params = CertificateParams::default();
    let uri = format!("spiffe://{trust_domain}")
        .try_into()
        .map_err(sign("trust domain"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params
        .distinguished_name
        .push(DnType::CommonName, "graylane mesh CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, ROOT_LIFETIME);
    params.serial_number = Some(serial()?);
    let key = KeyPair::generate().map_err(sign("CA key"))?;
    let cert = params.self_signed(&key).map_err(sign("CA certificate"))?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The default `--server-names` for a gRPC listener on `ip`: the address itself
/// (unless it is a wildcard, which no client dials), `localhost`, and the in-cluster
/// Service name `graylane install` creates.
pub fn default_server_names(ip: IpAddr) -> Vec<String> {
    let mut names = Vec::with_capacity(3);
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    names.push("localhost".into());
    names.push("graylane-control.graylane-system.svc".into());
    names
}

/// Valid from `BACKDATE` ago for `lifetime` from now; returns the end (Unix seconds,
/// as X.509 keeps it: whole seconds). The epoch comes from rcgen, which does not
/// re-export its `time` crate (and this crate does not depend on it).
fn set_validity(params: &mut CertificateParams, lifetime: Duration) -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    i64::try_from((since_epoch + lifetime).as_secs()).unwrap_or(i64::MAX)
}

/// Whether a certificate names itself as its issuer (a root, as opposed to an
/// intermediate whose issuer is another CA).
fn self_issued(cert: &CertificateDer<'_>) -> Result<bool, String> {
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(parsed.subject().as_raw() == parsed.issuer().as_raw())
}

/// 127 random bits: RFC 5280 §4.1.2.2 wants positive serials of at most 20 bytes, and
/// unpredictable ones keep chosen-prefix collisions off the table.
fn serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CaError::Invalid {
        what: "the OS random source failed",
        why: e.to_string(),
    })?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_of(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::{MeshCa, default_server_names, generate_root};
    use crate::store::{MemoryStore, Store};

    /// rustls, as a client trusting only `ca`, accepts `chain` for `name`.
    fn verify(ca: &str, chain: &str, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.expect("ca pem")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(|c| c.expect("chain pem"))
            .collect();
        let name = ServerName::try_from(name.to_string()).expect("name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_generated_root_issues_server_certificates_for_its_names() {
        let root = generate_root("cluster.local").expect("root");
        let ca = MeshCa::from_pem(&root.cert, &root.key).expect("ca");
        let names = default_server_names("127.0.0.1".parse().expect("ip"));
        assert_eq!(
            names,
            [
                "127.0.0.1",
                "localhost",
                "graylane-control.graylane-system.svc"
            ]
        );
        let issued = ca
            .issue_server(&names, Duration::from_secs(3600))
            .expect("issue");
        for name in &names {
            verify(ca.cert_pem(), &issued.chain_pem, name).expect(name);
        }
        assert!(verify(ca.cert_pem(), &issued.chain_pem, "elsewhere.example").is_err());
        let other = generate_root("cluster.local").expect("other root");
        assert!(verify(&other.cert, &issued.chain_pem, "localhost").is_err());
    }

    #[test]
    fn a_wildcard_grpc_address_is_not_a_server_name() {
        let names = default_server_names("0.0.0.0".parse().expect("ip"));
        assert_eq!(names, ["localhost", "graylane-control.graylane-system.svc"]);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (a, b) = (
            generate_root("cluster.local").expect("a"),
            generate_root("cluster.local").expect("b"),
        );
        let err = MeshCa::from_pem(&a.cert, &b.key).expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(MeshCa::from_pem("not pem", &a.key).is_err());
        assert!(MeshCa::from_pem(&a.cert, "not pem").is_err());
    }

    #[tokio::test]
    async fn the_store_keeps_the_first_ca() {
        let store = MemoryStore::new(crate::store::MIN_HISTORY);
        let first = MeshCa::from_store(&store, "cluster.local")
            .await
            .expect("first");
        let second = MeshCa::from_store(&store, "cluster.local")
            .await
            .expect("second");
        assert_eq!(first.cert_pem(), second.cert_pem());
        let stored = store
            .ca_get_or_create(generate_root("x").expect("root"))
            .await
            .expect("stored");
        // What the store holds and what is served are the same certificate.
        assert_eq!(stored.cert.trim(), first.cert_pem().trim());
    }
}
