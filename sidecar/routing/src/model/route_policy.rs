//! `RoutePolicy`: per destination service overrides — release state, subsets, weights,
//! per-service lane instances, exclusions and traffic policy.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{HashKey, Labels, Metadata, Name, ServiceName};
use crate::Tag;
use crate::path::{Checker, Seg, quote};

mod traffic;

pub use self::traffic::{
    Abort, Delay, Exclude, Fault, MAX_RETRY_ATTEMPTS, Mirror, Retries, RetryOn,
};

/// A `RoutePolicy` resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Name and free-form labels.
    pub metadata: Metadata,
    /// The policy.
    pub spec: RoutePolicySpec,
}

/// The `spec` of a [`RoutePolicy`]. Optional parts are left out when written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutePolicySpec {
    /// The destination service; at most one RoutePolicy per service.
    pub service: ServiceName,
    /// Which instances may serve. Default `all`.
    #[serde(default, skip_serializing_if = "Release::is_all")]
    pub release: Release,
    /// Named instance groups, for weights, lane overrides and mirroring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// How untagged requests are split; weights sum to 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<WeightedSubset>,
    /// The key whose consistent hash picks the subset, instead of a random draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_by: Option<HashKey>,
    /// Per-service override of which instances serve a lane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lanes: Vec<LaneOverride>,
    /// Instances that get no traffic at all.
    #[serde(default, skip_serializing_if = "Exclude::is_empty")]
    pub exclude: Exclude,
    /// Whole-request timeout; default: the sidecar's `--upstream-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<super::Duration>,
    /// Retries of idempotent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Copies of requests sent to a subset, answers ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Injected delays and aborts, for rehearsing failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// The release state of a service (rules.md "Release states").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// Every ready instance may serve.
    #[default]
    All,
    /// Only lane instances may serve (tagged or not).
    Gray,
    /// Only base instances may serve; tagged requests fall back to base.
    Prod,
}

impl Release {
    fn is_all(&self) -> bool {
        *self == Release::All
    }

    /// `all`, `gray` or `prod`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Gray => "gray",
            Self::Prod => "prod",
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Release {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "gray" => Ok(Self::Gray),
            "prod" => Ok(Self::Prod),
            _ => Err(format!(
                "{} is not a release state: all, gray or prod",
                quote(s)
            )),
        }
    }
}

/// A named group of the service's instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Unique within the policy.
    pub name: Name,
    /// An instance is in the subset when it has all of these. Never empty.
    pub labels: Labels,
}

/// One entry of `default`: a subset and its share of untagged requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedSubset {
    /// A declared subset.
    pub subset: String,
    /// 0-100; the weights of `default` sum to 100.
    #[serde(deserialize_with = "weight")]
    pub weight: u32,
}

/// A per-service override: requests tagged `tag` go to `subset` of this service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaneOverride {
    /// The tag of a declared Lane.
    pub tag: Tag,
    /// A declared subset.
    pub subset: String,
}

fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct W;
    impl Visitor<'_> for W {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number from 0 to 100")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v)
                .ok()
                .filter(|w| *w <= 100)
                .ok_or_else(|| E::custom(format!("weight {v} is over 100")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            if v < 0 {
                Err(E::custom(format!("weight {v} is negative")))
            } else {
                self.visit_u64(v.unsigned_abs())
            }
        }
    }
    d.deserialize_u64(W)
}

impl RoutePolicy {
    /// A policy that only sets the release state of `service` (what
    /// `graylane release set` creates for a service without a policy).
    pub fn new(name: Name, service: ServiceName, release: Release) -> Self {
        Self {
            metadata: Metadata::named(name),
            spec: RoutePolicySpec {
                service,
                release,
                subsets: Vec::new(),
                default: Vec::new(),
                sticky_by: None,
                lanes: Vec::new(),
                exclude: Exclude::default(),
                timeout: None,
                retries: None,
                mirror: None,
                fault: None,
            },
        }
    }

    /// Checks of this document alone (lanes and other policies are set-level).
    pub(crate) fn check(&self, c: &mut Checker) {
        let s = &self.spec;
        c.field("spec", |c| {
            if let Err(e) = s.service.check_reference() {
                c.error_at("service", e);
            }
            let declared = check_subsets(c, &s.subsets);
            check_default(c, s, &declared);
            if s.sticky_by.is_some() && s.default.is_empty() {
                let default = c.path_of("default");
                c.reading(&default, |c| {
                    c.error_at("stickyBy", "stickyBy needs default weights to choose among")
                });
            }
            if let Some(key) = &s.sticky_by {
                c.field("stickyBy", |c| key.check(c));
            }
            c.field("lanes", |c| {
                let mut tags = BTreeSet::new();
                for (i, o) in s.lanes.iter().enumerate() {
                    c.index(i, |c| {
                        if !tags.insert(&o.tag) {
                            c.error_at(
                                "tag",
                                format!("tag {} is overridden twice", quote(o.tag.as_str())),
                            );
                        }
                        check_ref(c, &declared, &o.subset);
                    });
                }
            });
            c.field("exclude", |c| s.exclude.check(c));
            if s.timeout.is_some_and(|t| t.as_millis() == 0) {
                c.error_at("timeout", "timeout must be longer than 0");
            }
            if let Some(r) = &s.retries {
                c.field("retries", |c| r.check(c));
            }
            if let Some(m) = &s.mirror {
                c.field("mirror", |c| {
                    m.check(c, |c, name| check_ref(c, &declared, name))
                });
            }
            if let Some(f) = &s.fault {
                c.field("fault", |c| f.check(c));
            }
        });
    }
}

/// The subset names of a policy, and where they are declared.
struct Declared<'a> {
    names: BTreeSet<&'a str>,
    /// `spec.subsets`: errors about references read it.
    at: Vec<Seg>,
}

fn check_subsets<'a>(c: &mut Checker, subsets: &'a [Subset]) -> Declared<'a> {
    let mut declared = BTreeSet::new();
    let at = c.path_of("subsets");
    c.field("subsets", |c| {
        for (i, sub) in subsets.iter().enumerate() {
            c.index(i, |c| {
                if !declared.insert(sub.name.as_str()) {
                    c.error_at(
                        "name",
                        format!("subset {} is declared twice", quote(sub.name.as_str())),
                    );
                }
                if sub.labels.is_empty() {
                    c.error_at("labels", "a subset needs at least one label");
                }
            });
        }
    });
    Declared {
        names: declared,
        at,
    }
}

fn check_default(c: &mut Checker, s: &RoutePolicySpec, declared: &Declared<'_>) {
    if s.default.is_empty() {
        return;
    }
    c.field("default", |c| {
        if s.subsets.is_empty() {
            c.reading(&declared.at, |c| {
                c.error("default weights need subsets: spec.subsets is empty")
            });
            return;
        }
        let mut listed = BTreeSet::new();
        for (i, w) in s.default.iter().enumerate() {
            c.index(i, |c| {
                if !listed.insert(w.subset.as_str()) {
                    c.error_at(
                        "subset",
                        format!("subset {} is listed twice", quote(&w.subset)),
                    );
                } else {
                    check_ref(c, declared, &w.subset);
                }
            });
        }
        let sum: u64 = s.default.iter().map(|w| u64::from(w.weight)).sum();
        if sum != 100 {
            c.error(format!("weights sum to {sum}, must be 100"));
        }
    });
}

/// Records an error at `<current>.subset` when `name` is not declared.
fn check_ref(c: &mut Checker, declared: &Declared<'_>, name: &str) {
    if !declared.names.contains(name) {
        c.reading(&declared.at, |c| {
            c.error_at(
                "subset",
                format!("{} is not a declared subset", quote(name)),
            )
        });
    }
}
