//! `metadata`: the name and free-form labels and annotations of a resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Name;
use super::names::DEFAULT_NAMESPACE;

/// A resource's `metadata`. `name` is unique per kind and namespace; `labels` and
/// `annotations` are kept as given and mean nothing to routing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource name, a DNS label.
    pub name: Name,
    /// The namespace of a RoutePolicy, TagPolicy or PeerPolicy; `None` is `default`
    /// (a parsed resource never holds `Some("default")`, so a document written with
    /// and without it is one resource). A Lane has none: lanes are mesh-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Name>,
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
            namespace: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The namespace, `default` when none is given (and for a Lane).
    pub fn namespace(&self) -> &str {
        self.namespace
            .as_ref()
            .map_or(DEFAULT_NAMESPACE, Name::as_str)
    }
}
