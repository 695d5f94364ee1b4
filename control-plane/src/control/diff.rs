//! What a change does to each resource, kubectl style: created / configured /
//! unchanged / deleted, with a unified diff of the resource's YAML.

use std::collections::BTreeMap;

use graylane_routing::{Kind, Resource, RuleSet};

/// What happens to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
        }
    }
}

/// One resource's fate in a change.
#[derive(Clone, Debug)]
pub struct ResourceChange {
    pub kind: Kind,
    /// `default` for a Lane (lanes are mesh-wide) and for a namespaced resource
    /// written without one.
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// Unified diff of the YAML ("" when unchanged).
    pub diff: String,
}

/// Every resource of `old` ∪ `new`, in (kind, namespace, name) order.
pub(crate) fn changes(old: &RuleSet, new: &RuleSet) -> Vec<ResourceChange> {
    type Pair<'a> = (Option<&'a Resource>, Option<&'a Resource>);
    let mut all: BTreeMap<(Kind, String, String), Pair<'_>> = BTreeMap::new();
    let key = |r: &Resource| (r.kind(), r.namespace().to_string(), r.name().to_string());
    for r in old.iter() {
        all.entry(key(r)).or_default().0 = Some(r);
    }
    for r in new.iter() {
        all.entry(key(r)).or_default().1 = Some(r);
    }
    all.into_iter()
        .map(|((kind, namespace, name), (before, after))| {
            let action = match (before, after) {
                (None, _) => Action::Created,
                (Some(_), None) => Action::Deleted,
                (Some(b), Some(a)) if b == a => Action::Unchanged,
                (Some(_), Some(_)) => Action::Configured,
            };
            let diff = if action == Action::Unchanged {
                String::new()
            } else {
                let before = before.map(Resource::to_yaml).unwrap_or_default();
                let after = after.map(Resource::to_yaml).unwrap_or_default();
                let label = kind.display_ref(&namespace, &name);
                similar::TextDiff::from_lines(&before, &after)
                    .unified_diff()
                    .header(
                        &format!("{label} (in force)"),
                        &format!("{label} (applied)"),
                    )
                    .to_string()
            };
            ResourceChange {
                kind,
                namespace,
                name,
                action,
                diff,
            }
        })
        .collect()
}

/// "2 created, 1 configured, 1 deleted" (counts of non-zero actions only).
pub(crate) fn summary(changes: &[ResourceChange]) -> String {
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let parts: Vec<String> = [Action::Created, Action::Configured, Action::Deleted]
        .into_iter()
        .filter_map(|a| {
            let n = count(a);
            (n > 0).then(|| format!("{n} {}", a.as_str()))
        })
        .collect();
    if parts.is_empty() {
        "no changes".into()
    } else {
        parts.join(", ")
    }
}
