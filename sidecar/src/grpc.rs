//! The sidecar's gRPC endpoints (the control plane's discovery stream, the OTLP
//! collector): `https://` is TLS trusting only `--ca-bundle`, and never falls back to
//! plaintext; `http://` is plaintext.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// An endpoint for `url`, with TLS when it is `https://`. Errors say why, for a log.
pub(crate) fn endpoint(url: &str, ca_bundle: Option<&[u8]>) -> Result<Endpoint, String> {
    let graylane_proto::GrpcUrl { url, tls } = graylane_proto::GrpcUrl::parse(url)?;
    let endpoint = Endpoint::from_shared(url).map_err(|e| format!("bad URL: {e}"))?;
    if !tls {
        return Ok(endpoint);
    }
    let ca = ca_bundle.ok_or("https:// needs --ca-bundle (no CA is trusted by default)")?;
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .map_err(|e| format!("TLS: {e}"))
}

/// The `authorization` value for the control plane, from `--token-file` as it is now:
/// read on every call, because Kubernetes rotates projected service-account tokens in
/// place. `None` without a token file. Errors say why, for a log.
pub(crate) async fn bearer(
    token_file: Option<&Path>,
) -> Result<Option<MetadataValue<Ascii>>, String> {
    let Some(path) = token_file else {
        return Ok(None);
    };
    let token = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    format!("Bearer {}", token.trim())
        .parse()
        .map(Some)
        .map_err(|_| format!("--token-file {}: not a valid header value", path.display()))
}
