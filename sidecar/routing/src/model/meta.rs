//! `metadata`: the name and free-form labels and annotations of a resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Name;

/// A resource's `metadata`. `name` is unique per kind; `labels` and `annotations` are
/// kept as given and mean nothing to routing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource name, a DNS label.
    pub name: Name,
    /// Free-form labels, for people and tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, for people and tools.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with only a name.
    pub fn named(name: Name) -> Self {
        Self {
            name,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}
