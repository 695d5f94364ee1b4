//! How an injected sidecar proves itself to the control plane, and which CA it checks
//! the control plane's certificate against: both land in `/var/run/secrets/graylane`
//! (`token`, `ca.pem`), whatever their source.
//!
//! - [`Credential::Secret`]: a Secret in the pod's namespace holding a shared token
//!   and the mesh CA's certificate (one per application namespace, made by install or
//!   by hand).
//! - [`Credential::ServiceAccount`]: a projected service-account token (audience
//!   `graylane`, one hour, rotated by the kubelet, which the sidecar re-reads on every
//!   call); the control plane (`--k8s-jwks`) takes the identity from it. The CA
//!   certificate comes from a pod annotation the webhook sets, through the Downward
//!   API into the same volume, so no object is needed in application namespaces.

use serde_json::{Map, Value, json};

/// Where the credential is mounted in the sidecar.
const DIR: &str = "/var/run/secrets/graylane";
/// The pod volume holding it.
pub(super) const VOLUME: &str = "graylane-token";
/// The audience the control plane checks in projected tokens (spec: security.md).
pub const TOKEN_AUDIENCE: &str = "graylane";
/// Projected tokens live an hour; the kubelet renews them at 80 % of that.
pub const TOKEN_SECONDS: u64 = 3600;
/// The mesh CA certificate(s) for a [`Credential::ServiceAccount`] sidecar: set by the
/// injection (whatever the pod came with), read back through the Downward API.
pub const CA_BUNDLE_ANNOTATION: &str = "graylane.io/ca-bundle";

/// The sidecar's credential towards the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The Secret of this name in the pod's namespace: key `token`, and `ca.pem` (the
    /// mesh CA's certificate, which an `https://` control plane must chain to).
    Secret(String),
    /// A projected service-account token; `ca_bundle`: the PEM certificates an
    /// `https://` control plane must chain to (`None`: a plaintext control plane).
    ServiceAccount { ca_bundle: Option<String> },
    /// Neither token nor CA (an unauthenticated, plaintext control plane).
    None,
}

impl Credential {
    /// Adds to the pod what the sidecar needs for this credential: `env` and `mounts`
    /// of the sidecar container, a volume in `spec`, and for a service-account token
    /// the CA annotation in `annotations`.
    pub(super) fn apply(
        &self,
        annotations: &mut Map<String, Value>,
        spec: &mut Map<String, Value>,
        env: &mut Vec<Value>,
        mounts: &mut Vec<Value>,
    ) {
        // A CA the pod brought itself would make its sidecar trust any control plane.
        annotations.remove(CA_BUNDLE_ANNOTATION);
        let (volume, ca) = match self {
            Self::None => return,
            Self::Secret(name) => (
                json!({"name": VOLUME, "secret": {"secretName": name}}),
                true,
            ),
            Self::ServiceAccount { ca_bundle } => {
                let mut sources = vec![json!({"serviceAccountToken": {
                    "audience": TOKEN_AUDIENCE,
                    "expirationSeconds": TOKEN_SECONDS,
                    "path": "token",
                }})];
                if let Some(pem) = ca_bundle {
                    annotations.insert(CA_BUNDLE_ANNOTATION.into(), json!(pem));
                    sources.push(json!({"downwardAPI": {"items": [{
                        "path": "ca.pem",
                        "fieldRef": {"fieldPath": format!("metadata.annotations['{CA_BUNDLE_ANNOTATION}']")},
                    }]}}));
                }
                let volume = json!({"name": VOLUME, "projected": {"sources": sources}});
                (volume, ca_bundle.is_some())
            }
        };
        env.push(json!({"name": "GRAYLANE_TOKEN_FILE", "value": format!("{DIR}/token")}));
        if ca {
            env.push(json!({"name": "GRAYLANE_CA_BUNDLE", "value": format!("{DIR}/ca.pem")}));
        }
        mounts.push(json!({"name": VOLUME, "mountPath": DIR, "readOnly": true}));
        super::push(spec, "volumes", volume);
    }
}
