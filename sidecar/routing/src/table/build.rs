//! Building the table: per service, every decision that does not depend on the request.

use std::collections::HashMap;
use std::sync::Arc;

use super::peer::PeerModes;
use super::policy::CompiledPolicy;
use super::scoped::Scoped;
use super::{Instance, RoutingTable, inbound};
use crate::model::{
    DEFAULT_NAMESPACE, Fallback, HashKey, Labels, Lane, Release, Resource, RoutePolicy,
};
use crate::set::RuleSet;

/// A Lane, with its fallback list resolved to lane indices.
#[derive(Debug)]
pub(super) struct LaneInfo {
    pub(super) name: String,
    pub(super) selector: Labels,
    pub(super) fallback: Vec<Step>,
}

/// One resolved fallback entry.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    Lane(usize),
    Base,
}

/// A RoutePolicy, with its lane overrides resolved per lane index.
#[derive(Debug)]
pub(super) struct PolicyInfo {
    pub(super) policy: RoutePolicy,
    /// Per lane index: the override subset's name and labels, if any.
    pub(super) overrides: Vec<Option<(String, Labels)>>,
}

/// Everything about one service that does not depend on the request.
#[derive(Debug)]
pub(super) struct ServiceTable {
    /// All instances given, in id order.
    pub(super) instances: Vec<Instance>,
    /// Indices into `instances` that may serve (step 1: not excluded, allowed by the
    /// release state).
    pub(super) candidates: Vec<usize>,
    /// Per lane index: the candidates in that lane.
    pub(super) lane_groups: Vec<Vec<usize>>,
    /// Per lane index: the subset name of the lane override, if any.
    pub(super) lane_subset: Vec<Option<String>>,
    /// Per lane index: what a request tagged for that lane gets (step 2).
    pub(super) lane_plans: Vec<LanePlan>,
    /// Untagged routing (step 3).
    pub(super) untagged: Untagged,
    /// The service's RoutePolicy's traffic settings, compiled with this table (a
    /// mirror's candidates are among the service's); `None` without a RoutePolicy.
    pub(super) traffic: Option<CompiledPolicy>,
}

/// The outcome of step 2 for one lane of one service.
#[derive(Clone, Copy, Debug)]
pub(super) enum LanePlan {
    /// Serve from the candidates of lane `group` (the lane itself, or a fallback lane).
    Serve {
        group: usize,
        fallback: Option<Planned>,
    },
    /// Go to step 3.
    Base(Planned),
    /// Fallback list exhausted: 503.
    Fail,
}

/// A fallback decided at build time: `to` is a lane index, `None` for base.
#[derive(Clone, Copy, Debug)]
pub(super) struct Planned {
    pub(super) to: Option<usize>,
    pub(super) release_prod: bool,
}

/// Step 3 for one service.
#[derive(Debug, Default)]
pub(super) struct Untagged {
    /// The `default` entries in order, with their candidates (possibly none).
    pub(super) weighted: Vec<Weighted>,
    /// Sum of all weights.
    pub(super) total: u64,
    /// Sum of the weights of entries that have a candidate.
    pub(super) available: u64,
    /// Candidates in no lane.
    pub(super) base: Vec<usize>,
    /// `stickyBy`, with a header name in lowercase.
    pub(super) sticky: Option<HashKey>,
}

/// One `default` entry.
#[derive(Debug)]
pub(super) struct Weighted {
    pub(super) subset: String,
    pub(super) weight: u64,
    pub(super) members: Vec<usize>,
}

/// What the rules alone decide, for every table built from one rule set.
#[derive(Debug, Default)]
pub(super) struct Compiled {
    /// Lanes in name order.
    pub(super) lanes: Vec<LaneInfo>,
    /// foldhash, as `Scoped`: tags are the rules' own names.
    pub(super) lane_by_tag: foldhash::HashMap<String, usize>,
    /// RoutePolicies by the (namespace, service) they name, with each lane's selector
    /// for that service.
    pub(super) policies: Scoped<PolicyInfo>,
    /// TagPolicies by listed (namespace, service).
    pub(super) tag_policies: Scoped<inbound::CompiledTagPolicy>,
    /// PeerPolicy modes by (namespace, service).
    pub(super) peer_modes: PeerModes,
    /// The traffic settings (timeout, retries, fault, mirror) of each RoutePolicy as
    /// they are for its service while it has no instance (no mirror target); a
    /// service with instances has its own in its [`ServiceTable`].
    pub(super) idle_traffic: Scoped<CompiledPolicy>,
}

impl RoutingTable {
    /// Compiles `rules` (expected to be valid; in an unchecked set the first resource
    /// by name wins where several compete, and dangling references are ignored) and the
    /// ready instances of every service. An instance's service is (its namespace, its
    /// service), an empty namespace being `default`; a RoutePolicy's or TagPolicy's
    /// services are read relative to the policy's namespace.
    pub fn build(rules: &RuleSet, instances: Vec<Instance>) -> RoutingTable {
        let compiled = Arc::new(Compiled::new(rules));
        let mut services = Scoped::default();
        for (namespace, service, list) in by_service(instances) {
            let st = compiled.service_table(&namespace, &service, list);
            services.insert(&namespace, &service, Arc::new(st));
        }
        RoutingTable { compiled, services }
    }

    /// The table of the same rule set as this one, with `instances` instead: what
    /// the rules decide is shared, and so is each service whose instances did not
    /// change (with its traffic policy). Borrowed, so that only the instances of the
    /// services that changed are copied: an endpoint change then costs one pass over
    /// the references and a comparison per service, plus the services it touches,
    /// where a build costs every service and every policy again (3,000 documents:
    /// ~15 ms per change), and copying every instance cost ~1 µs each.
    #[must_use]
    pub fn with_instances(&self, instances: &[&Instance]) -> RoutingTable {
        // Grouped by hashing, not by sorting the whole list: the sidecar hands its
        // instances in id order, so each service's list is sorted already, and
        // sorting them again is a pass over it.
        let mut groups: HashMap<(&str, &str), Vec<&Instance>> = HashMap::new();
        for i in instances {
            groups
                .entry((namespace(i), i.service.as_str()))
                .or_default()
                .push(i);
        }
        let mut services = Scoped::default();
        for ((namespace, service), mut group) in groups {
            sort(&mut group, |i| *i);
            let st = match self.services.get(namespace, service) {
                Some(same) if same.instances.iter().eq(group.iter().copied()) => Arc::clone(same),
                _ => {
                    let list = group.iter().map(|i| (*i).clone()).collect();
                    Arc::new(self.compiled.service_table(namespace, service, list))
                }
            };
            services.insert(namespace, service, st);
        }
        RoutingTable {
            compiled: Arc::clone(&self.compiled),
            services,
        }
    }
}

impl RoutingTable {
    /// A table of `service` of `namespace` alone, as if its instances that are
    /// `gone` had left: where a request goes once the instances it was sent to
    /// refused the connection (stopped a moment before the control plane says so).
    /// Routing the request again on it follows the rules as they are for the
    /// instances left: the lane's fallback when those were its last instances, the
    /// other subsets of a split. `None` when none of the service's instances is
    /// `gone`. Builds one service's table: for the rare attempt after a refused
    /// connection, not every request.
    #[must_use]
    pub fn without(
        &self,
        namespace: &str,
        service: &str,
        gone: impl Fn(&Instance) -> bool,
    ) -> Option<RoutingTable> {
        let st = self.services.get(namespace, service)?;
        if !st.instances.iter().any(&gone) {
            return None;
        }
        let left: Vec<Instance> = st.instances.iter().filter(|i| !gone(i)).cloned().collect();
        let mut services = Scoped::default();
        if !left.is_empty() {
            let st = self.compiled.service_table(namespace, service, left);
            services.insert(namespace, service, Arc::new(st));
        }
        Some(RoutingTable {
            compiled: Arc::clone(&self.compiled),
            services,
        })
    }
}

/// An instance's namespace, an empty one being `default`.
fn namespace(i: &Instance) -> &str {
    if i.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        &i.namespace
    }
}

/// Sorts by (namespace, service, id, address): grouped by service, each service's in
/// the order its table keeps them. One sort, no key per instance.
fn sort<T>(items: &mut [T], instance: impl Fn(&T) -> &Instance) {
    items.sort_by(|a, b| {
        let (a, b) = (instance(a), instance(b));
        (namespace(a), &a.service, &a.id, &a.address).cmp(&(
            namespace(b),
            &b.service,
            &b.id,
            &b.address,
        ))
    });
}

/// `instances` by (namespace, service), an empty namespace being `default`, each
/// service's in (id, address) order.
fn by_service(mut instances: Vec<Instance>) -> Vec<(String, String, Vec<Instance>)> {
    sort(&mut instances, |i| i);
    let mut groups: Vec<(String, String, Vec<Instance>)> = Vec::new();
    for i in instances {
        match groups.last_mut() {
            Some((ns, svc, list)) if ns == namespace(&i) && *svc == i.service => list.push(i),
            _ => groups.push((namespace(&i).to_owned(), i.service.clone(), vec![i])),
        }
    }
    groups
}

impl Compiled {
    fn new(rules: &RuleSet) -> Self {
        let lane_list: Vec<&Lane> = rules
            .iter()
            .filter_map(|r| match r {
                Resource::Lane(l) => Some(l),
                _ => None,
            })
            .collect();
        let mut lane_by_tag = foldhash::HashMap::default();
        for (i, l) in lane_list.iter().enumerate() {
            lane_by_tag
                .entry(l.spec.tag.as_str().to_owned())
                .or_insert(i);
        }
        let index_of = |name: &str| {
            lane_list
                .iter()
                .position(|l| l.metadata.name.as_str() == name)
        };
        let lanes: Vec<LaneInfo> = lane_list
            .iter()
            .map(|l| LaneInfo {
                name: l.metadata.name.as_str().to_owned(),
                selector: l.spec.selector.clone(),
                fallback: l
                    .spec
                    .fallback
                    .iter()
                    .filter_map(|f| match f {
                        Fallback::Base => Some(Step::Base),
                        Fallback::Lane(n) => index_of(n.as_str()).map(Step::Lane),
                    })
                    .collect(),
            })
            .collect();
        let mut policies = Scoped::default();
        for r in rules.iter() {
            if let Resource::RoutePolicy(p) = r {
                let (namespace, service) = p.spec.service.resolve(p.metadata.namespace());
                policies.get_or_insert_with(namespace, service, || policy_info(p, &lane_list));
            }
        }
        let mut idle_traffic = Scoped::default();
        for (namespace, service, p) in policies.iter() {
            idle_traffic.insert(
                namespace,
                service,
                CompiledPolicy::compile(&p.policy.spec, None),
            );
        }
        Self {
            lanes,
            lane_by_tag,
            policies,
            tag_policies: inbound::compile(rules),
            peer_modes: PeerModes::compile(rules),
            idle_traffic,
        }
    }

    /// The labels that put an instance of a service with `policy` in lane `lane`.
    pub(super) fn selector<'a>(
        &'a self,
        policy: Option<&'a PolicyInfo>,
        lane: usize,
    ) -> &'a Labels {
        policy
            .and_then(|p| p.overrides.get(lane))
            .and_then(|o| o.as_ref())
            .map_or(&self.lanes[lane].selector, |(_, labels)| labels)
    }

    fn service_table(
        &self,
        namespace: &str,
        service: &str,
        instances: Vec<Instance>,
    ) -> ServiceTable {
        let policy = self.policies.get(namespace, service);
        let spec = policy.map(|p| &p.policy.spec);
        let release = spec.map_or(Release::All, |s| s.release);
        let excluded = |i: &Instance| {
            spec.is_some_and(|s| {
                s.exclude
                    .instances
                    .iter()
                    .any(|x| *x == i.id || *x == i.address)
            })
        };
        let nlanes = self.lanes.len();
        let in_lane: Vec<Vec<bool>> = instances
            .iter()
            .map(|i| {
                (0..nlanes)
                    .map(|l| self.selector(policy, l).matches(&i.labels))
                    .collect()
            })
            .collect();
        let candidates: Vec<usize> = (0..instances.len())
            .filter(|&i| !excluded(&instances[i]))
            .filter(|&i| match release {
                Release::All => true,
                Release::Gray => in_lane[i].contains(&true),
                Release::Prod => !in_lane[i].contains(&true),
            })
            .collect();
        let lane_groups: Vec<Vec<usize>> = (0..nlanes)
            .map(|l| {
                candidates
                    .iter()
                    .copied()
                    .filter(|&i| in_lane[i][l])
                    .collect()
            })
            .collect();
        let lane_plans = (0..nlanes)
            .map(|l| self.plan(l, &lane_groups, release))
            .collect();
        let lane_subset = (0..nlanes)
            .map(|l| {
                policy
                    .and_then(|p| p.overrides.get(l))
                    .and_then(|o| o.as_ref())
                    .map(|(name, _)| name.clone())
            })
            .collect();
        let mut untagged = Untagged {
            base: candidates
                .iter()
                .copied()
                .filter(|&i| !in_lane[i].contains(&true))
                .collect(),
            sticky: spec.and_then(|s| s.sticky_by.clone()).map(lowercase_header),
            ..Untagged::default()
        };
        // The candidates in a declared subset (none for an undeclared name, which
        // validation already refused).
        let members_of = |subset: &str| -> Vec<usize> {
            let labels = spec
                .and_then(|s| s.subsets.iter().find(|x| x.name.as_str() == subset))
                .map(|x| &x.labels);
            labels.map_or_else(Vec::new, |labels| {
                candidates
                    .iter()
                    .copied()
                    .filter(|&i| labels.matches(&instances[i].labels))
                    .collect()
            })
        };
        if let Some(spec) = spec {
            for w in &spec.default {
                let members = members_of(&w.subset);
                let weight = u64::from(w.weight);
                untagged.total += weight;
                if !members.is_empty() {
                    untagged.available += weight;
                }
                untagged.weighted.push(Weighted {
                    subset: w.subset.clone(),
                    weight,
                    members,
                });
            }
        }
        let mut table = ServiceTable {
            instances,
            candidates,
            lane_groups,
            lane_subset,
            lane_plans,
            untagged,
            traffic: None,
        };
        table.traffic = spec.map(|spec| CompiledPolicy::compile(spec, Some(&table)));
        table
    }

    /// Step 2 for lane `l`, given each lane's candidates.
    fn plan(&self, l: usize, groups: &[Vec<usize>], release: Release) -> LanePlan {
        if release == Release::Prod {
            return LanePlan::Base(Planned {
                to: None,
                release_prod: true,
            });
        }
        if !groups[l].is_empty() {
            return LanePlan::Serve {
                group: l,
                fallback: None,
            };
        }
        for step in &self.lanes[l].fallback {
            match *step {
                Step::Lane(other) if other != l && !groups[other].is_empty() => {
                    let fallback = Some(Planned {
                        to: Some(other),
                        release_prod: false,
                    });
                    return LanePlan::Serve {
                        group: other,
                        fallback,
                    };
                }
                Step::Lane(_) => {}
                Step::Base => {
                    return LanePlan::Base(Planned {
                        to: None,
                        release_prod: false,
                    });
                }
            }
        }
        LanePlan::Fail
    }
}

fn policy_info(p: &RoutePolicy, lanes: &[&Lane]) -> PolicyInfo {
    let overrides = lanes
        .iter()
        .map(|lane| {
            let o = p.spec.lanes.iter().find(|o| o.tag == lane.spec.tag)?;
            let subset = p
                .spec
                .subsets
                .iter()
                .find(|s| s.name.as_str() == o.subset)?;
            Some((o.subset.clone(), subset.labels.clone()))
        })
        .collect();
    PolicyInfo {
        policy: p.clone(),
        overrides,
    }
}

/// Request header names are looked up in lowercase.
pub(super) fn lowercase_header(key: HashKey) -> HashKey {
    match key {
        HashKey::Header(h) => HashKey::Header(h.to_ascii_lowercase()),
        cookie => cookie,
    }
}
