//! `Lane`: a mesh-wide gray lane — a tag and the instances that serve it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Labels, Metadata, Name};
use crate::Tag;
use crate::path::{Checker, Seg, quote};

/// The fallback entry that means "the base instances".
pub const BASE: &str = "base";

/// A `Lane` resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// Name and free-form labels; the name `base` is reserved.
    pub metadata: Metadata,
    /// What the lane is.
    pub spec: LaneSpec,
}

/// The `spec` of a [`Lane`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaneSpec {
    /// The `Gray-Publish` value that selects this lane; unique among lanes.
    pub tag: Tag,
    /// Instance labels; an instance is in the lane when it has all of them. Never empty.
    pub selector: Labels,
    /// Tried in order when a service has no ready instance in this lane. `[]` = strict
    /// (503). Default `[base]`.
    #[serde(
        default = "default_fallback",
        skip_serializing_if = "is_default_fallback"
    )]
    pub fallback: Vec<Fallback>,
}

/// One entry of a lane's fallback list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fallback {
    /// The base instances (rules.md routing step 3). Written `base`.
    Base,
    /// Another lane's instances (that lane's own fallback is not followed).
    Lane(Name),
}

/// `[base]`, the default fallback list.
pub fn default_fallback() -> Vec<Fallback> {
    vec![Fallback::Base]
}

fn is_default_fallback(f: &[Fallback]) -> bool {
    f == [Fallback::Base]
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base => f.write_str(BASE),
            Self::Lane(n) => f.write_str(n.as_str()),
        }
    }
}

impl Serialize for Fallback {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fallback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == BASE {
            return Ok(Self::Base);
        }
        Name::new(s.as_str()).map(Self::Lane).map_err(|_| {
            serde::de::Error::custom(format!("{} is neither `base` nor a lane name", quote(&s)))
        })
    }
}

impl Lane {
    /// Checks of this document alone (references to other lanes are set-level).
    pub(crate) fn check(&self, c: &mut Checker) {
        if self.metadata.name.as_str() == BASE {
            c.field("metadata", |c| {
                c.error_at(
                    "name",
                    "`base` is reserved: in a fallback list it means the base instances",
                )
            });
        }
        if self.metadata.namespace.is_some() {
            c.field("metadata", |c| {
                c.error_at(
                    "namespace",
                    "lanes are mesh-wide (a lane spans namespaces): a Lane takes no namespace",
                )
            });
        }
        let name = c.field("metadata", |c| c.path_of("name"));
        c.field("spec", |c| {
            if self.spec.selector.is_empty() {
                c.error_at(
                    "selector",
                    "an empty selector would put every instance in this lane; give at least one label",
                );
            }
            c.field("fallback", |c| self.check_fallback(c, &name));
        });
    }

    /// `name` is where `metadata.name` is, which the self-reference check reads.
    fn check_fallback(&self, c: &mut Checker, name: &[Seg]) {
        let mut seen = BTreeSet::new();
        let mut after_base = false;
        for (i, entry) in self.spec.fallback.iter().enumerate() {
            c.index(i, |c| {
                if after_base {
                    c.error(
                        "never tried: entries after `base` are unreachable, base always answers",
                    );
                } else if !seen.insert(entry) {
                    c.error(format!("{entry} is listed twice"));
                } else if matches!(entry, Fallback::Lane(n) if *n == self.metadata.name) {
                    c.reading(name, |c| c.error("a lane cannot fall back to itself"));
                }
            });
            after_base |= *entry == Fallback::Base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_reads_base_and_lane_names() {
        let f: Vec<Fallback> = serde_json::from_str(r#"["blue","base"]"#).unwrap();
        assert_eq!(
            f,
            vec![Fallback::Lane(Name::new("blue").unwrap()), Fallback::Base]
        );
        let e = serde_json::from_str::<Fallback>(r#""Blue""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither `base` nor a lane name"), "{e}");
    }
}
