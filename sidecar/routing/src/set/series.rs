//! The labels of the traffic series sidecars report under a rule set: the lane (`-`
//! untagged, `other` for a tag no Lane declares, else a Lane's name) and the subset
//! (`-`, else one of the service's RoutePolicy's). A report naming others was not made
//! under these rules by a sidecar: the control plane drops it rather than let a
//! credential fill its table with invented lanes and crowd out the real traffic that
//! rollouts read.

use std::collections::{BTreeMap, BTreeSet};

use super::RuleSet;
use crate::model::Resource;

/// What [`RuleSet::series_labels`] allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesLabels {
    lanes: BTreeSet<String>,
    /// (namespace, service) → its RoutePolicy's subsets.
    subsets: BTreeMap<(String, String), BTreeSet<String>>,
}

impl RuleSet {
    /// The lane and subset labels a sidecar's traffic series can carry under this set.
    pub fn series_labels(&self) -> SeriesLabels {
        let mut labels = SeriesLabels::default();
        for resource in self.iter() {
            match resource {
                Resource::Lane(lane) => {
                    labels.lanes.insert(lane.metadata.name.as_str().to_owned());
                }
                Resource::RoutePolicy(p) => {
                    let (namespace, service) = p.spec.service.resolve(p.metadata.namespace());
                    let names = p.spec.subsets.iter().map(|s| s.name.as_str().to_owned());
                    labels
                        .subsets
                        .entry((namespace.to_owned(), service.to_owned()))
                        .or_default()
                        .extend(names);
                }
                _ => {}
            }
        }
        labels
    }
}

impl SeriesLabels {
    /// Whether a series of `service` in `namespace` with these labels can come from a
    /// sidecar routing by these rules.
    pub fn allows(&self, namespace: &str, service: &str, lane: &str, subset: &str) -> bool {
        let lane_ok = lane == "-" || lane == "other" || self.lanes.contains(lane);
        let subset_ok = subset == "-"
            || self
                .subsets
                .get(&(namespace.to_owned(), service.to_owned()))
                .is_some_and(|s| s.contains(subset));
        lane_ok && subset_ok
    }
}

#[cfg(test)]
mod tests {
    use crate::RuleSet;

    #[test]
    fn only_the_labels_routing_writes_are_allowed() {
        let rules = RuleSet::from_yaml(
            "r.yaml",
            "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}}
---
apiVersion: graylane.io/v1
kind: RoutePolicy
metadata: {name: orders, namespace: shop}
spec:
  service: orders
  subsets: [{name: v1, labels: {version: v1}}]
  default: [{subset: v1, weight: 100}]
",
        )
        .unwrap();
        let labels = rules.series_labels();
        assert!(labels.allows("shop", "orders", "gray", "v1"));
        assert!(labels.allows("shop", "orders", "-", "-"));
        assert!(labels.allows("default", "web", "other", "-"));
        assert!(
            !labels.allows("shop", "orders", "made-up-7", "v1"),
            "an invented lane"
        );
        assert!(
            !labels.allows("default", "orders", "gray", "v1"),
            "another namespace's subset"
        );
        assert!(
            !labels.allows("shop", "orders", "gray", "v9"),
            "an invented subset"
        );
    }
}
