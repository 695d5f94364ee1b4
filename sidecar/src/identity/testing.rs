//! Certificates for unit tests: a CA that issues workload certificates shaped like
//! the control plane's (the identity as the only URI SAN, serverAuth and clientAuth),
//! and identities holding them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::{Config, Identity, Issued, unix_now};
use crate::metrics::Metrics;

/// A test mesh CA.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `identity` (any URI) and a new key, valid from `from` to
    /// `until`: (chain PEM, key).
    pub(crate) fn issue_between(
        &self,
        identity: &str,
        from: SystemTime,
        until: SystemTime,
    ) -> (String, KeyPair) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.try_into().unwrap())];
        params.not_before = from.into();
        params.not_after = until.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key)
    }

    /// A certificate for `identity` valid for the next hour.
    pub(crate) fn issue(&self, identity: &str) -> (String, KeyPair) {
        let now = SystemTime::now();
        self.issue_between(
            identity,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
    }

    /// An identity holding a certificate for `identity` from this CA, trusting
    /// `trusted` (PEM of each CA).
    pub(crate) fn identity(&self, identity: &str, trusted: &[String]) -> Arc<Identity> {
        let (chain, key) = self.issue(identity);
        let holder = Identity::new(Config::default(), Arc::new(Metrics::default()));
        let issued = Issued::new(&chain, &key, unix_now()).unwrap();
        holder.install(issued, trusted).unwrap();
        Arc::new(holder)
    }
}
