//! `PeerPolicy`: whether sidecars talk to each other over mTLS (security.md, "mTLS
//! between sidecars"). Only the model and its validation for now: no sidecar enforces
//! it yet (issue 12).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Metadata, ServiceName};
use crate::path::{Checker, quote};

/// A `PeerPolicy` resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPolicy {
    /// Name and free-form labels.
    pub metadata: Metadata,
    /// The policy.
    pub spec: PeerPolicySpec,
}

/// The `spec` of a [`PeerPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerPolicySpec {
    /// The mode for the services it covers. Required: a policy that sets no mode is
    /// more likely a typo than a wish for the default.
    pub mtls: MtlsMode,
    /// The services it covers; `None` (omitted) covers the whole mesh. When given, not
    /// empty and each service in at most one PeerPolicy; at most one PeerPolicy of a
    /// set omits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceName>>,
}

/// How a sidecar's peers must connect to it (security.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MtlsMode {
    /// Only mTLS with a valid mesh certificate, inbound and outbound.
    Strict,
    /// Inbound takes mTLS and plaintext on one port; outbound uses mTLS. The mode of
    /// a service no PeerPolicy covers.
    #[default]
    Permissive,
    /// Plaintext both ways. Written `off`, a string: rules are read as YAML 1.2,
    /// where a bare `off` is not a boolean.
    Off,
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
            Self::Off => "off",
        })
    }
}

impl PeerPolicy {
    /// Checks of this document alone (services in other policies, and a second
    /// mesh-wide policy, are set-level).
    pub(crate) fn check(&self, c: &mut Checker) {
        let Some(services) = &self.spec.services else {
            return;
        };
        c.field("spec", |c| {
            c.field("services", |c| {
                // `[]` covers nothing; whoever wrote it most likely meant the whole
                // mesh, which is written by leaving the field out.
                if services.is_empty() {
                    c.error(
                        "services must list at least one service; omit it to cover the whole mesh",
                    );
                }
                let mut seen = BTreeSet::new();
                for (i, s) in services.iter().enumerate() {
                    if let Err(e) = s.check_reference() {
                        c.index(i, |c| c.error(e));
                    }
                    if !seen.insert(s) {
                        c.index(i, |c| {
                            c.error(format!("service {} is listed twice", quote(s.as_str())))
                        });
                    }
                }
            });
        });
    }
}
