//! `TagPolicy`: who gets tagged at the entry of the mesh.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{MatchBlock, Metadata, Name, ServiceName};
use crate::Tag;
use crate::path::{Checker, quote};

/// A `TagPolicy` resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagPolicy {
    /// Name and free-form labels.
    pub metadata: Metadata,
    /// The policy.
    pub spec: TagPolicySpec,
}

/// The `spec` of a [`TagPolicy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagPolicySpec {
    /// The services whose inbound sidecar applies this policy; not empty, and each
    /// service in at most one TagPolicy.
    pub services: Vec<ServiceName>,
    /// What to do with a tag the caller already sent. Default `strip`.
    #[serde(default, skip_serializing_if = "Incoming::is_strip")]
    pub incoming: Incoming,
    /// Tried in order when the request has no tag; the first match tags it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TagRule>,
}

/// Trust in a tag that arrives from outside the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Incoming {
    /// Remove it (then the rules decide).
    #[default]
    Strip,
    /// Keep it.
    Keep,
    /// Keep it only when some Lane declares that tag.
    KeepKnown,
}

impl Incoming {
    fn is_strip(&self) -> bool {
        *self == Incoming::Strip
    }
}

impl fmt::Display for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strip => "strip",
            Self::Keep => "keep",
            Self::KeepKnown => "keep-known",
        })
    }
}

/// One rule: requests matching `match` get `tag`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagRule {
    /// The tag given.
    pub tag: Tag,
    /// The conditions; not empty.
    #[serde(rename = "match")]
    pub matches: MatchBlock,
    /// The LaneRollout (same namespace) that wrote this rule and changes its percent
    /// while it is active; set by the control plane, cleared when the rollout ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Name>,
}

impl TagPolicy {
    /// Checks of this document alone (services in other policies are set-level).
    pub(crate) fn check(&self, c: &mut Checker) {
        c.field("spec", |c| {
            c.field("services", |c| {
                if self.spec.services.is_empty() {
                    c.error("services must list at least one service");
                }
                let mut seen = BTreeSet::new();
                for (i, s) in self.spec.services.iter().enumerate() {
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
            c.field("rules", |c| {
                for (i, rule) in self.spec.rules.iter().enumerate() {
                    c.index(i, |c| c.field("match", |c| rule.matches.check(c)));
                }
            });
        });
    }
}
