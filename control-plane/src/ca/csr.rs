//! A sidecar's certificate signing request: parsed, its signature verified, and its
//! public key checked against what the mesh accepts (ECDSA P-256, RSA 2048-8192).
//!
//! Only the public key is taken from a CSR. Its subject and extensions are ignored:
//! the identity comes from the credential the call presented, never from the CSR.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// RSA keys below this many bits are refused (NIST SP 800-57: 112-bit security).
const RSA_MIN_BITS: usize = 2048;
/// The largest RSA modulus ring verifies; a larger key could never be used in a handshake.
const RSA_MAX_BITS: usize = 8192;

/// The verified public key of a CSR, ready to be put into a certificate.
#[derive(Debug)]
pub struct CsrKey {
    /// Which SubjectPublicKeyInfo algorithm the certificate declares for the key.
    alg: &'static SignatureAlgorithm,
    /// The subjectPublicKey bits: an uncompressed EC point, or a PKCS#1 RSAPublicKey.
    raw: Vec<u8>,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl CsrKey {
    /// Parses a PEM PKCS#10 request, verifies its self-signature and checks its key.
    /// The error says why, in words fit to return to the caller.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("the CSR is not a PEM certificate request: {e}"))?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| format!("the CSR does not parse as PKCS#10: {e}"))?;
        if !rest.is_empty() {
            return Err("the CSR has trailing bytes after its DER".into());
        }
        // The key first: a key refused (RSA-1024) would fail the signature check too,
        // which would then be the reason given, not the key's size.
        let key = Self::of_key(&csr.certification_request_info.subject_pki)?;
        // Proof of possession: whoever sent it holds the private key of the public
        // key it carries, so a certificate for it is useless to anyone else.
        csr.verify_signature()
            .map_err(|e| format!("the CSR's signature does not verify: {e}"))?;
        Ok(key)
    }

    /// The key of a CSR, if it is one a certificate is issued for.
    fn of_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        let raw = spki.subject_public_key.data.to_vec();
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve != Some(OID_EC_P256) {
                let named =
                    curve.map_or_else(|| "no named curve".to_string(), |c| c.to_id_string());
                return Err(format!(
                    "unsupported CSR key: ECDSA on {named} (only P-256, 1.2.840.10045.3.1.7, or RSA of at least 2048 bits)"
                ));
            }
            return Ok(Self {
                alg: &rcgen::PKCS_ECDSA_P256_SHA256,
                raw,
            });
        }
        if *oid == OID_PKCS1_RSAENCRYPTION {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
                _ => 0,
            };
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(format!(
                    "unsupported CSR key: RSA of {bits} bits (2048 to 8192 accepted)"
                ));
            }
            return Ok(Self {
                alg: &rcgen::PKCS_RSA_SHA256,
                raw,
            });
        }
        Err(format!(
            "unsupported CSR key algorithm {} (ECDSA P-256 or RSA of at least 2048 bits)",
            oid.to_id_string()
        ))
    }
}

/// Significant bits of a DER INTEGER's big-endian bytes (leading zero bytes are padding).
fn modulus_bits(modulus: &[u8]) -> usize {
    let start = modulus
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(modulus.len());
    match modulus.get(start) {
        Some(&first) => (modulus.len() - start - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::{CsrKey, modulus_bits};

    fn csr_pem(key: &KeyPair) -> String {
        CertificateParams::new(vec!["ignored.example".to_string()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    #[test]
    fn a_p256_csr_is_accepted_with_its_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let parsed = CsrKey::from_pem(&csr_pem(&key)).unwrap();
        assert_eq!(parsed.raw, key.public_key_raw());
    }

    #[test]
    fn a_p384_csr_is_refused_naming_the_curve() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let err = CsrKey::from_pem(&csr_pem(&key)).unwrap_err();
        assert!(err.contains("1.3.132.0.34"), "{err}");
    }

    #[test]
    fn an_ed25519_csr_is_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = CsrKey::from_pem(&csr_pem(&key)).unwrap_err();
        assert!(err.contains("unsupported CSR key algorithm"), "{err}");
    }

    #[test]
    fn garbage_and_a_broken_signature_are_refused() {
        assert!(CsrKey::from_pem("not a csr").is_err());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let request = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let mut der = request.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let broken = pem_of_csr(&der);
        let err = CsrKey::from_pem(&broken).unwrap_err();
        assert!(err.contains("signature"), "{err}");
    }

    fn pem_of_csr(der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn modulus_bits_ignore_padding() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0x00]), 9);
        assert_eq!(modulus_bits(&[0x00]), 0);
    }
}
