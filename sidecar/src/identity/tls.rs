//! The mesh mTLS configs built from a certificate and the trust bundle, and the
//! outbound side's verifier.
//!
//! Inbound: rustls' `WebPkiClientVerifier` (a client certificate is required and must
//! chain to the bundle for clientAuth; which identity it carries is the caller's
//! business, read with `peer_identity`). Outbound: a workload certificate has no DNS
//! name, so webpki's name check cannot apply; `MeshServerVerifier` checks the chain
//! for serverAuth the same way, then the URI SAN against the identity the SNI encodes.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::Alpn;
use super::cert::{Bundle, Issued, peer_identity};
use super::name::SpiffeId;

/// TLS 1.3 only (spec): the mesh has no older peers to talk to.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The inbound listener's config for `issued`, trusting `bundle`.
pub(crate) fn server_config(issued: &Issued, bundle: &Bundle) -> Result<ServerConfig, String> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::clone(&bundle.roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("server config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(issued.chain.clone(), issued.key())
        .map_err(|e| format!("server certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The outbound config for `issued` speaking `alpn`, trusting `bundle`.
pub(crate) fn client_config(
    issued: &Issued,
    bundle: &Bundle,
    alpn: Alpn,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let verifier = MeshServerVerifier::new(bundle, &issued.id.trust_domain, &provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| format!("client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(issued.chain.clone(), issued.key())
        .map_err(|e| format!("client certificate: {e}"))?;
    config.alpn_protocols = vec![alpn.protocol().to_vec()];
    Ok(config)
}

/// Whether `issued` chains to `bundle` now, as a peer will check it: a control plane
/// whose bundle lacks its own CA would otherwise hand out certificates every peer
/// refuses.
pub(crate) fn check_chain(issued: &Issued, bundle: &Bundle) -> Result<(), String> {
    let algs = provider().signature_verification_algorithms;
    let leaf = ParsedCertificate::try_from(&issued.chain[0]).map_err(|e| e.to_string())?;
    verify_server_cert_signed_by_trust_anchor(
        &leaf,
        &bundle.roots,
        &issued.chain[1..],
        UnixTime::now(),
        algs.all,
    )
    .map_err(|e| format!("it does not chain to the trust bundle: {e}"))
}

/// Verifies a mesh server: its chain to the bundle, for serverAuth, at `now`; then
/// that its only URI SAN is the identity the SNI encodes, in this sidecar's trust
/// domain.
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        self.check_identity(end_entity, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl MeshServerVerifier {
    fn new(bundle: &Bundle, trust_domain: &str, provider: &CryptoProvider) -> Self {
        Self {
            roots: Arc::clone(&bundle.roots),
            trust_domain: trust_domain.to_string(),
            algs: provider.signature_verification_algorithms,
        }
    }

    /// Refuses as rustls refuses a DNS name mismatch, so the error reads the same:
    /// `certificate not valid for name "orders.shop.identity.graylane.internal";
    /// certificate is only valid for spiffe://cluster.local/ns/shop/sa/payments` (the
    /// name encodes the identity expected; a non-mesh name expects none).
    fn check_identity(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
    ) -> Result<(), CertificateError> {
        let sni = server_name.to_str();
        let expected = SpiffeId::from_server_name(&sni, &self.trust_domain);
        let actual = peer_identity(end_entity);
        match (expected, actual) {
            (Some(expected), Some(actual)) if expected.to_string() == actual => Ok(()),
            (_, actual) => Err(CertificateError::NotValidForNameContext {
                expected: server_name.to_owned(),
                presented: actual.into_iter().collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rustls::pki_types::pem::PemObject;
    use rustls::{ClientConnection, ServerConnection};

    use super::*;
    use crate::identity::testing::TestCa;
    use crate::identity::{Identity, unix_now};

    const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";
    const PAYMENTS: &str = "spiffe://cluster.local/ns/shop/sa/payments";

    /// What a caller trusting `ca` says of a server presenting `chain_pem` under the
    /// name that stands for `expected`.
    fn verify(ca: &TestCa, chain_pem: &str, expected: &str) -> Result<(), rustls::Error> {
        let bundle = Bundle::new(&[ca.pem()]).unwrap();
        let verifier = MeshServerVerifier::new(&bundle, "cluster.local", &provider());
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let name = SpiffeId::parse(expected).unwrap().server_name().unwrap();
        let now = UnixTime::now();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
            .map(|_| ())
    }

    #[test]
    fn the_right_certificate_passes() {
        let ca = TestCa::new("mesh");
        let (chain, _key) = ca.issue(ORDERS);
        verify(&ca, &chain, ORDERS).unwrap();
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let (ca, other) = (TestCa::new("mesh"), TestCa::new("intruder"));
        let (chain, _key) = other.issue(ORDERS);
        let err = verify(&ca, &chain, ORDERS).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "{err}"
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let ca = TestCa::new("mesh");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let (chain, _key) = ca.issue_between(ORDERS, now - 2 * hour, now - hour);
        let err = verify(&ca, &chain, ORDERS).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn a_certificate_of_another_identity_is_refused() {
        let ca = TestCa::new("mesh");
        let (chain, _key) = ca.issue(PAYMENTS);
        let err = verify(&ca, &chain, ORDERS).unwrap_err().to_string();
        assert!(
            err.contains("not valid for name \"orders.shop.identity.graylane.internal\"")
                && err.contains(&format!("only valid for {PAYMENTS}")),
            "{err}"
        );
        // Same names in another trust domain are another identity too.
        let (chain, _key) = ca.issue("spiffe://other.domain/ns/shop/sa/orders");
        assert!(verify(&ca, &chain, ORDERS).is_err());
        // No URI SAN that is a spiffe id at all.
        let (chain, _key) = ca.issue("https://orders.shop.example");
        let err = verify(&ca, &chain, ORDERS).unwrap_err().to_string();
        assert!(err.contains("not valid for any names"), "{err}");
    }

    #[test]
    fn a_name_that_is_not_a_mesh_name_is_refused() {
        let ca = TestCa::new("mesh");
        let (chain, _key) = ca.issue(ORDERS);
        let bundle = Bundle::new(&[ca.pem()]).unwrap();
        let verifier = MeshServerVerifier::new(&bundle, "cluster.local", &provider());
        let leaf = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        let name = ServerName::try_from("orders.shop.svc.cluster.local").unwrap();
        let err = verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        let err = err.to_string();
        assert!(err.contains(&format!("only valid for {ORDERS}")), "{err}");
    }

    /// A TLS handshake in memory: the client's and the server's view of the peer.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
        name: ServerName<'static>,
    ) -> Result<(Option<String>, Option<Vec<u8>>), rustls::Error> {
        let mut client = ClientConnection::new(client, name)?;
        let mut server = ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            let server_state = server.process_new_packets().map(|_| ());
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            server_state?;
            if !client.is_handshaking() && !server.is_handshaking() {
                let peer = server
                    .peer_certificates()
                    .and_then(|c| Identity::peer_identity(&c[0]));
                return Ok((peer, client.alpn_protocol().map(<[u8]>::to_vec)));
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn sidecars_of_one_ca_complete_mutual_tls_and_see_each_other() {
        let ca = TestCa::new("mesh");
        let trusted = [ca.pem()];
        let (client, server) = (
            ca.identity(PAYMENTS, &trusted),
            ca.identity(ORDERS, &trusted),
        );
        let name = client.server_name(ORDERS).unwrap();
        let (peer, alpn) = handshake(
            client.client_config(Alpn::H2).unwrap(),
            server.server_config().unwrap(),
            name,
        )
        .unwrap();
        assert_eq!(
            peer.as_deref(),
            Some(PAYMENTS),
            "the server reads the caller"
        );
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        // The caller expecting payments at that address refuses orders.
        let wrong = client.server_name(PAYMENTS).unwrap();
        let err = handshake(
            client.client_config(Alpn::Http1).unwrap(),
            server.server_config().unwrap(),
            wrong,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[test]
    fn the_inbound_side_refuses_a_client_of_another_ca() {
        let (ca, other) = (TestCa::new("mesh"), TestCa::new("intruder"));
        // The intruder trusts the mesh CA, so only the server's check can stop it.
        let intruder = other.identity(PAYMENTS, &[ca.pem(), other.pem()]);
        let server = ca.identity(ORDERS, &[ca.pem()]);
        let name = intruder.server_name(ORDERS).unwrap();
        let result = handshake(
            intruder.client_config(Alpn::H2).unwrap(),
            server.server_config().unwrap(),
            name,
        );
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn configs_exist_only_while_the_certificate_is_valid() {
        let ca = TestCa::new("mesh");
        let id = ca.identity(ORDERS, &[ca.pem()]);
        assert!(id.server_config().is_some() && id.client_config(Alpn::H2).is_some());
        let now = unix_now();
        assert_eq!(id.expired_at(now), None);
        let after = now + 2 * 3600;
        assert!(id.expired_at(after).is_some());
        assert!(id.valid_at(after, |_| ()).is_none());
    }
}
