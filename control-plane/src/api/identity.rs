//! Identity: which SPIFFE id a sidecar gets, decided from the credential it presented
//! (`auth::Principal`), never from what it claims; and `IssueCertificate`, which signs
//! a sidecar's CSR for that identity with the mesh CA.
//!
//! ```text
//!  credential ─► Principal ─┐
//!  Hello / CertificateRequest (namespace, service account) ─► decide() ─► ServiceAccount
//!     bound: must be exactly the bound one (else PERMISSION_DENIED)      │
//!     unbound: what was asked for                                         ▼
//!                       spiffe://<trust-domain>/ns/<ns>/sa/<sa> ─► registry, Endpoint,
//!                                                                  certificate URI SAN
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use graylane_proto::v1 as pb;
use tokio::sync::watch;
use tonic::Status;

use super::auth::{Principal, Role};
use crate::ca::{CaError, CsrKey, MeshCa};
use crate::control::Control;

/// The namespace of a sidecar that names none (an older sidecar; the flag's default).
pub(crate) const DEFAULT_NAMESPACE: &str = "default";
/// Retry pause bounds while the store cannot hand out the CA (etcd down at start).
const LOAD_RETRY_FIRST: Duration = Duration::from_millis(500);
const LOAD_RETRY_MAX: Duration = Duration::from_secs(5);

/// A Kubernetes service account: the namespace is a DNS label, the name a DNS
/// subdomain (dot-separated labels, as Kubernetes allows for service accounts and
/// as the sidecar's default, its service name, may be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    namespace: String,
    name: String,
}

impl ServiceAccount {
    /// Checks both parts; the error names the bad one.
    pub fn new(namespace: &str, name: &str) -> Result<Self, String> {
        let namespace =
            graylane_routing::Name::new(namespace).map_err(|e| format!("namespace: {e}"))?;
        let name = graylane_routing::ServiceName::new(name)
            .map_err(|e| format!("service account: {e}"))?;
        Ok(Self {
            namespace: namespace.as_str().to_string(),
            name: name.as_str().to_string(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The identity `principal` gets when asking for (`namespace`, `service_account`):
/// PERMISSION_DENIED when it is bound to another, INVALID_ARGUMENT when an unbound
/// request is not a valid service account.
pub(crate) fn decide(
    principal: &Principal,
    namespace: &str,
    service_account: &str,
) -> Result<ServiceAccount, Status> {
    let namespace = if namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        namespace
    };
    match &principal.bound {
        Some(bound) if bound.namespace == namespace && bound.name == service_account => {
            Ok(bound.clone())
        }
        Some(bound) => Err(Status::permission_denied(format!(
            "this credential is bound to {bound}; it may not act as {namespace}/{service_account}"
        ))),
        None => ServiceAccount::new(namespace, service_account).map_err(Status::invalid_argument),
    }
}

/// The mesh CA as sidecars see it: the identities' trust domain, the certificate
/// lifetime, the CA (loaded at start, or later from a store that was down), and the
/// trust bundle.
pub struct Identities {
    trust_domain: String,
    cert_ttl: Duration,
    ca: OnceLock<MeshCa>,
    /// `--trust-bundle`: CA certificates trusted besides the mesh CA (PEM, one each).
    extra_trust: Vec<String>,
}

impl Identities {
    /// `ca`: `None` when it is to come from the store (`load_ca`).
    pub fn new(
        trust_domain: &str,
        cert_ttl: Duration,
        ca: Option<MeshCa>,
        extra_trust: Vec<String>,
    ) -> Result<Self, String> {
        graylane_routing::ServiceName::new(trust_domain)
            .map_err(|e| format!("the trust domain: {e}"))?;
        let cell = OnceLock::new();
        if let Some(ca) = ca {
            let _ = cell.set(ca);
        }
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            cert_ttl,
            ca: cell,
            extra_trust,
        })
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn spiffe_id(&self, account: &ServiceAccount) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, account.namespace, account.name
        )
    }

    /// The mesh CA's certificate (PEM), once loaded.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.get().map(MeshCa::cert_pem)
    }

    /// Every CA certificate trusted (the mesh CA first), once the mesh CA is loaded.
    pub fn trust_bundle(&self) -> Option<Vec<String>> {
        let ca = self.ca.get()?;
        let mut bundle = vec![ca.cert_pem().to_string()];
        bundle.extend(self.extra_trust.iter().cloned());
        Some(bundle)
    }

    /// Signs the CSR of `request` for the identity `principal` may have. Nothing is
    /// issued on any error.
    pub fn issue(
        &self,
        principal: &Principal,
        request: &pb::CertificateRequest,
    ) -> Result<pb::CertificateResponse, Status> {
        let key = CsrKey::from_pem(&request.csr_pem).map_err(Status::invalid_argument)?;
        if request.service_account.is_empty() {
            return Err(Status::invalid_argument(
                "service_account: required (the sidecar's --service-account)",
            ));
        }
        // An operator's token is never a workload identity: a leaked one would
        // otherwise let its holder act as any service over mTLS.
        if principal.presented && principal.role != Role::Sidecar {
            return Err(Status::permission_denied(format!(
                "a {} token is never a workload identity; sidecars use sidecar tokens",
                principal.role.as_str()
            )));
        }
        let account = decide(principal, &request.namespace, &request.service_account)?;
        let (Some(ca), Some(trust_bundle_pem)) = (self.ca.get(), self.trust_bundle()) else {
            return Err(Status::unavailable(
                "the mesh CA is not loaded yet (the store is unavailable); retry",
            ));
        };
        let identity = self.spiffe_id(&account);
        let leaf = ca
            .issue_workload(&key, &identity, self.cert_ttl)
            .map_err(|e| {
                tracing::error!(error = %e, %identity, "signing a workload certificate failed");
                Status::internal("signing the certificate failed; see the server log")
            })?;
        tracing::info!(%identity, instance = %request.instance_id, not_after = leaf.not_after, "issued a workload certificate");
        Ok(pb::CertificateResponse {
            certificate_chain_pem: leaf.chain_pem,
            identity,
            trust_bundle_pem,
            not_after: leaf.not_after,
        })
    }

    /// Reads (or creates) the mesh CA from the store until it succeeds, retrying with
    /// backoff while the store is unavailable, then publishes the trust bundle to the
    /// sidecar streams. Returns at once when the CA is already there.
    pub async fn load_ca(
        self: Arc<Self>,
        control: Arc<Control>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pause = LOAD_RETRY_FIRST;
        while self.ca.get().is_none() {
            match MeshCa::from_store(control.store(), &self.trust_domain).await {
                Ok(ca) => {
                    tracing::info!("mesh CA loaded from the store");
                    let _ = self.ca.set(ca);
                }
                Err(e @ CaError::Store(_)) => {
                    tracing::warn!(error = %e, "the mesh CA is not available yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = shutdown.wait_for(|down| *down) => return,
                    }
                    pause = (pause * 2).min(LOAD_RETRY_MAX);
                }
                Err(e) => {
                    // A stored CA that does not parse will not heal by waiting.
                    tracing::error!(error = %e, "the mesh CA in the store is unusable; no certificates will be issued");
                    return;
                }
            }
        }
        if let Some(bundle) = self.trust_bundle() {
            control.hub().set_trust_bundle(bundle);
        }
    }
}

#[cfg(test)]
mod tests;
