//! The sidecar's gRPC endpoints (the control plane's discovery stream, the OTLP
//! collector): `https://` is TLS trusting only `--ca-bundle`, and never falls back to
//! plaintext; `http://` is plaintext.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// An endpoint for `url`, with TLS when it is `https://`. Errors say why, for a log.
pub(crate) fn endpoint(url: &str, ca_bundle: Option<&[u8]>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("bad URL: {e}"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let ca = ca_bundle.ok_or("https:// needs --ca-bundle (no CA is trusted by default)")?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| format!("TLS: {e}"))
}
