//! The typed rule model: every kind and field of rules.md, as enums and newtypes.
//!
//! Reading a value checks its shape and each value on its own (a tag, a regex, a
//! duration); the `check` methods add the rules that relate fields of one document
//! (weights, references to subsets); `RuleSet::validate` adds those across documents.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod duration;
mod lane;
mod lane_rollout;
pub(crate) mod match_block;
mod matcher;
mod meta;
pub(crate) mod names;
mod peer_policy;
mod route_policy;
mod tag_policy;

pub use self::duration::Duration;
pub use self::lane::{BASE, Fallback, Lane, LaneSpec, default_fallback};
pub use self::lane_rollout::{
    Analysis, LaneRollout, LaneRolloutSpec, MAX_STEPS, MIN_ANALYSIS_INTERVAL, OnSuccess, Rate, Step,
};
pub use self::match_block::{Cidr, HashKey, MatchBlock};
pub use self::matcher::{Pattern, REGEX_MAX_COMPILED, REGEX_MAX_LEN, StringMatch};
pub use self::meta::Metadata;
pub(crate) use self::names::is_dns_label;
pub use self::names::{
    DEFAULT_NAMESPACE, LABEL_MAX_LEN, Labels, Name, ServiceName, qualified, qualified_ref,
};
pub use self::peer_policy::{MtlsMode, PeerPolicy, PeerPolicySpec};
pub use self::route_policy::{
    Abort, Delay, Exclude, Fault, LaneOverride, MAX_RETRY_ATTEMPTS, Mirror, Release, Retries,
    RetryOn, RoutePolicy, RoutePolicySpec, Subset, WeightedSubset,
};
pub use self::tag_policy::{Incoming, TagPolicy, TagPolicySpec, TagRule};

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "graylane.io/v1";

/// The kinds of resource. Ordered `Lane < RoutePolicy < TagPolicy < PeerPolicy <
/// LaneRollout` (the order of a rule set; a new kind goes last so stored sets keep
/// their order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`Lane`].
    Lane,
    /// [`RoutePolicy`].
    RoutePolicy,
    /// [`TagPolicy`].
    TagPolicy,
    /// [`PeerPolicy`].
    PeerPolicy,
    /// [`LaneRollout`].
    LaneRollout,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 5] = [
        Kind::Lane,
        Kind::RoutePolicy,
        Kind::TagPolicy,
        Kind::PeerPolicy,
        Kind::LaneRollout,
    ];

    /// Every kind's name, for messages: `Lane, RoutePolicy, TagPolicy, PeerPolicy,
    /// LaneRollout`.
    pub const NAMES: &'static str = "Lane, RoutePolicy, TagPolicy, PeerPolicy, LaneRollout";

    /// The name as written in `kind:` (`Lane`, `RoutePolicy`, `TagPolicy`,
    /// `PeerPolicy`, `LaneRollout`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Lane => "Lane",
            Self::RoutePolicy => "RoutePolicy",
            Self::TagPolicy => "TagPolicy",
            Self::PeerPolicy => "PeerPolicy",
            Self::LaneRollout => "LaneRollout",
        }
    }
}

impl Kind {
    /// Whether resources of this kind live in a namespace (all but Lane, which is
    /// mesh-wide).
    pub fn is_namespaced(&self) -> bool {
        *self != Kind::Lane
    }

    /// `RoutePolicy/orders`, plus ` (shop)` when `namespace` is not `default`: the
    /// `default` form is the one scripts already read.
    pub fn display_ref(&self, namespace: &str, name: &str) -> String {
        if namespace.is_empty() || namespace == DEFAULT_NAMESPACE {
            format!("{self}/{name}")
        } else {
            format!("{self}/{name} ({namespace})")
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// Accepts the exact name and the CLI spellings: `Lane`, `lane`, `lanes`,
    /// `RoutePolicy`, `routepolicy`, `routepolicies`, `TagPolicy`, `tagpolicy`,
    /// `tagpolicies`, `PeerPolicy`, `peerpolicy`, `peerpolicies`, `LaneRollout`,
    /// `lanerollout`, `lanerollouts`. The error names every kind.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Lane" | "lane" | "lanes" => Ok(Self::Lane),
            "RoutePolicy" | "routepolicy" | "routepolicies" => Ok(Self::RoutePolicy),
            "TagPolicy" | "tagpolicy" | "tagpolicies" => Ok(Self::TagPolicy),
            "PeerPolicy" | "peerpolicy" | "peerpolicies" => Ok(Self::PeerPolicy),
            "LaneRollout" | "lanerollout" | "lanerollouts" => Ok(Self::LaneRollout),
            _ => Err(format!(
                "unknown kind {}, expected one of: {}",
                crate::path::quote(s),
                Self::NAMES
            )),
        }
    }
}

/// One resource of any kind.
///
/// Serialized as the full document (`apiVersion`, `kind`, `metadata`, `spec`);
/// deserializing one runs the same per-document validation as [`crate::parse_file`]
/// (but not the set-level checks), so it never yields an invalid resource.
// Resources are cold data (parsed once, a few thousand at most); boxing the large
// variant would only make every caller's pattern matching noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// A Lane.
    Lane(Lane),
    /// A RoutePolicy.
    RoutePolicy(RoutePolicy),
    /// A TagPolicy.
    TagPolicy(TagPolicy),
    /// A PeerPolicy.
    PeerPolicy(PeerPolicy),
    /// A LaneRollout.
    LaneRollout(LaneRollout),
}

impl Resource {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Lane(_) => Kind::Lane,
            Self::RoutePolicy(_) => Kind::RoutePolicy,
            Self::TagPolicy(_) => Kind::TagPolicy,
            Self::PeerPolicy(_) => Kind::PeerPolicy,
            Self::LaneRollout(_) => Kind::LaneRollout,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata().name.as_str()
    }

    /// `metadata.namespace`, `default` when none is given (always, for a Lane).
    pub fn namespace(&self) -> &str {
        self.metadata().namespace()
    }

    /// Whether resources of this kind live in a namespace (all but Lane).
    pub fn is_namespaced(&self) -> bool {
        self.kind().is_namespaced()
    }

    /// `RoutePolicy/orders`, with ` (shop)` after it outside namespace `default`: how
    /// messages and the CLI name a resource.
    pub fn display_ref(&self) -> String {
        self.kind().display_ref(self.namespace(), self.name())
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Lane(r) => &r.metadata,
            Self::RoutePolicy(r) => &r.metadata,
            Self::TagPolicy(r) => &r.metadata,
            Self::PeerPolicy(r) => &r.metadata,
            Self::LaneRollout(r) => &r.metadata,
        }
    }

    /// This resource as one YAML document (no `---`), ending in a newline. Parses back
    /// to an equal resource.
    pub fn to_yaml(&self) -> String {
        // The model holds only strings, numbers, lists and string-keyed maps, all of
        // which YAML can write.
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// `namespace: default` written out is the same resource as none written: parsed
    /// resources keep `None` for it, so re-applying either form changes nothing.
    pub(crate) fn normalize_namespace(&mut self) {
        let metadata = match self {
            Self::Lane(r) => &mut r.metadata,
            Self::RoutePolicy(r) => &mut r.metadata,
            Self::TagPolicy(r) => &mut r.metadata,
            Self::PeerPolicy(r) => &mut r.metadata,
            Self::LaneRollout(r) => &mut r.metadata,
        };
        if metadata
            .namespace
            .as_ref()
            .is_some_and(|n| n.as_str() == DEFAULT_NAMESPACE)
        {
            metadata.namespace = None;
        }
    }

    /// Per-document checks (the semantic ones; the shape is checked when reading).
    pub(crate) fn check(&self, c: &mut crate::path::Checker) {
        match self {
            Self::Lane(r) => r.check(c),
            Self::RoutePolicy(r) => r.check(c),
            Self::TagPolicy(r) => r.check(c),
            Self::PeerPolicy(r) => r.check(c),
            Self::LaneRollout(r) => r.check(c),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a, S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a Metadata,
    spec: &'a S,
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind().as_str();
        let api_version = API_VERSION;
        match self {
            Self::Lane(r) => Envelope {
                api_version,
                kind,
                metadata: &r.metadata,
                spec: &r.spec,
            }
            .serialize(s),
            Self::RoutePolicy(r) => Envelope {
                api_version,
                kind,
                metadata: &r.metadata,
                spec: &r.spec,
            }
            .serialize(s),
            Self::TagPolicy(r) => Envelope {
                api_version,
                kind,
                metadata: &r.metadata,
                spec: &r.spec,
            }
            .serialize(s),
            Self::PeerPolicy(r) => Envelope {
                api_version,
                kind,
                metadata: &r.metadata,
                spec: &r.spec,
            }
            .serialize(s),
            Self::LaneRollout(r) => Envelope {
                api_version,
                kind,
                metadata: &r.metadata,
                spec: &r.spec,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        crate::parse::document::resource_from_value(&value).map_err(|errors| {
            let text: Vec<String> = errors
                .iter()
                .map(|(path, reason)| {
                    if path.is_empty() {
                        reason.clone()
                    } else {
                        format!("{path}: {reason}")
                    }
                })
                .collect();
            D::Error::custom(text.join("; "))
        })
    }
}
