//! Getting and renewing the workload certificate: a new P-256 key each time, a CSR
//! sent with `IssueCertificate` to each control plane in turn (the same URLs, CA
//! bundle and token as discovery), the answer checked and put in force; then again at
//! half its lifetime. A failure is retried with the shared backoff while the current
//! certificate stays in force, until it expires (then mTLS has none, and `/ready`
//! says so) and after. An older control plane without the RPC is asked again slowly.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::{CertificateRequest, CertificateResponse};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::sync::watch;

use super::{CertError, Identity, Issued, rfc3339, unix_now};
use graylane_exposition::backoff::Backoff;

/// Retries after a failed request: quick at first, then at most every 30 s, so a fleet
/// does not hammer a control plane that is down.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// An older control plane (UNIMPLEMENTED) is asked again this often: it may be
/// upgraded under a running sidecar.
const UNIMPLEMENTED_RETRY: Duration = Duration::from_secs(60);
/// Never renew more often than this, whatever lifetime a certificate has.
const MIN_RENEW_IN: Duration = Duration::from_secs(1);
/// One control plane's time to answer a certificate request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenewError {
    /// The control plane does not issue certificates (an older version).
    #[error("{url}: the control plane does not issue certificates (UNIMPLEMENTED)")]
    Unimplemented { url: String },
    /// The control plane refused (UNAUTHENTICATED, PERMISSION_DENIED, ...).
    #[error("{url}: {code:?}: {message}")]
    Refused {
        url: String,
        code: tonic::Code,
        message: String,
    },
    /// No answer: not reachable, or too slow.
    #[error("{url}: {why}")]
    Unreachable { url: String, why: String },
    /// Making the key or the CSR failed (not expected: reported, retried).
    #[error("making the key and CSR: {0}")]
    Csr(#[from] rcgen::Error),
    /// The answer is not a certificate this sidecar can use.
    #[error("the issued certificate: {0}")]
    Answer(#[from] CertError),
    #[error("the issued certificate: {0}")]
    Install(String),
    #[error("no --control-plane URL")]
    NoControlPlane,
}

impl Identity {
    /// Keeps a valid certificate in force until `shutdown` turns true. Never returns
    /// an error: every failure is logged, counted and retried.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let (mut told_unimplemented, mut told_expired) = (false, false);
        loop {
            let renewed = self.renew().await;
            self.tried.send_replace(true);
            let wait = match renewed {
                Ok(not_after) => {
                    self.metrics.certificate_renewal(true);
                    backoff.reset();
                    (told_unimplemented, told_expired) = (false, false);
                    renew_in(not_after, unix_now())
                }
                Err(RenewError::Unimplemented { url }) => {
                    if !told_unimplemented {
                        tracing::info!(control_plane = %url, "the control plane issues no certificates (older version): mesh mTLS stays off; asking again every minute");
                        told_unimplemented = true;
                    }
                    UNIMPLEMENTED_RETRY
                }
                Err(e) => {
                    self.metrics.certificate_renewal(false);
                    self.failed(&e, &mut told_expired);
                    // One more try the moment the certificate expires: if that fails
                    // too, the expiry is logged then, not one backoff later.
                    let wait = backoff.next_wait();
                    let valid_until = self.valid_at(unix_now(), |c| c.issued.not_after);
                    valid_until.map_or(wait, |t| wait.min(until(t)))
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
        }
    }

    /// Logs a failed request: an error once the certificate expired (the first time),
    /// a warning otherwise.
    fn failed(&self, e: &RenewError, told_expired: &mut bool) {
        match self.expired_at(unix_now()) {
            Some(at) if !*told_expired => {
                *told_expired = true;
                tracing::error!(error = %e, expired = %rfc3339(at), "the workload certificate expired and cannot be renewed: no mesh mTLS until it is; retrying");
            }
            _ => tracing::warn!(error = %e, "cannot get a workload certificate; retrying"),
        }
    }

    /// One request for a certificate, put in force; returns its expiry.
    async fn renew(&self) -> Result<i64, RenewError> {
        // A new key every time: a renewal never extends the life of an old key.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        // Subject and extensions are the control plane's to decide; the CSR only
        // proves possession of the key.
        let csr_pem = CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        let response = self.issue(csr_pem).await?;
        let issued = Issued::new(&response.certificate_chain_pem, &key, unix_now())?;
        if issued.id.to_string() != response.identity {
            tracing::warn!(certificate = %issued.id, answer = %response.identity, "the certificate's identity differs from the one the control plane named; using the certificate's");
        }
        let not_after = issued.not_after;
        self.install(issued, &response.trust_bundle_pem)
            .map_err(RenewError::Install)?;
        Ok(not_after)
    }

    /// Asks each control plane in turn; the first certificate wins. Of the errors, an
    /// answer (refused, unimplemented) says more than an unreachable replica.
    async fn issue(&self, csr_pem: String) -> Result<CertificateResponse, RenewError> {
        let mut failure = None;
        for url in &self.config.control_planes {
            let request = CertificateRequest {
                csr_pem: csr_pem.clone(),
                namespace: self.config.namespace.clone(),
                service_account: self.config.service_account.clone(),
                instance_id: self.config.instance_id.clone(),
            };
            match self.issue_at(url, request).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    tracing::debug!(error = %e, "certificate request failed");
                    let answered = !matches!(e, RenewError::Unreachable { .. });
                    if answered || failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
        Err(failure.unwrap_or(RenewError::NoControlPlane))
    }

    async fn issue_at(
        &self,
        url: &str,
        request: CertificateRequest,
    ) -> Result<CertificateResponse, RenewError> {
        let unreachable = |why: String| RenewError::Unreachable {
            url: url.to_string(),
            why,
        };
        let endpoint = crate::grpc::endpoint(url, self.config.ca_bundle.as_deref())
            .map_err(unreachable)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        let mut request = tonic::Request::new(request);
        if let Some(bearer) = crate::grpc::bearer(self.config.token_file.as_deref())
            .await
            .map_err(unreachable)?
        {
            request.metadata_mut().insert("authorization", bearer);
        }
        match DiscoveryClient::new(channel)
            .issue_certificate(request)
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(match status.code() {
                tonic::Code::Unimplemented => RenewError::Unimplemented {
                    url: url.to_string(),
                },
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    unreachable(status.message().to_string())
                }
                code => RenewError::Refused {
                    url: url.to_string(),
                    code,
                    message: status.message().to_string(),
                },
            }),
        }
    }
}

/// How long until `unix` seconds, and a moment more (so a wake-up lands after it).
fn until(unix: i64) -> Duration {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    left + Duration::from_millis(10)
}

/// How long until a certificate valid until `not_after` (unix seconds), received at
/// `now`, is renewed: half its remaining lifetime (spec: at half its lifetime; the
/// control plane backdates its start, so the lifetime counts from receipt).
pub(crate) fn renew_in(not_after: i64, now: i64) -> Duration {
    let remaining = u64::try_from(not_after.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(remaining / 2).max(MIN_RENEW_IN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_half_the_remaining_lifetime() {
        assert_eq!(renew_in(1_000 + 60, 1_000), Duration::from_secs(30));
        assert_eq!(renew_in(1_000 + 86_400, 1_000), Duration::from_secs(43_200));
        // A certificate that is (nearly) expired on arrival never spins the loop.
        assert_eq!(renew_in(1_000, 1_000), MIN_RENEW_IN);
        assert_eq!(renew_in(900, 1_000), MIN_RENEW_IN);
    }
}
