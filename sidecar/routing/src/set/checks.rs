//! Checks that need several resources of a set.

use std::collections::{BTreeMap, BTreeSet};

use super::RuleSet;
use crate::error::{Origin, ValidationError};
use crate::model::qualified;
use crate::model::{Fallback, Resource};
use crate::path::{join_index, quote};

/// Who claimed a key first: its name, namespace and origin.
type Claims<'a, K> = BTreeMap<K, (&'a str, &'a str, Option<&'a Origin>)>;

/// Runs every set-level check, appending errors in kind, name, field order.
pub(super) fn run(set: &RuleSet, errors: &mut Vec<ValidationError>) {
    let mut lane_names = BTreeSet::new();
    let mut lane_tags: Claims<'_, &str> = BTreeMap::new();
    // Services are (namespace, service): `orders` of `shop` and of `staging` are two.
    let mut policy_services: Claims<'_, (&str, &str)> = BTreeMap::new();
    let mut tagged_services: Claims<'_, (&str, &str)> = BTreeMap::new();
    // PeerPolicy: a service is named by at most one, and at most one omits `services`
    // (the mesh-wide one, claimed under one key) — else a service's mode would depend
    // on which policy was read first.
    let mut peer_services: Claims<'_, (&str, &str)> = BTreeMap::new();
    let mut mesh_wide: Claims<'_, ()> = BTreeMap::new();
    for (r, _) in set.entries() {
        if let Resource::Lane(l) = r {
            lane_names.insert(l.metadata.name.as_str());
        }
    }
    for (r, origin) in set.entries() {
        let ns = r.namespace();
        let mut error = |path: String, reason: String| {
            errors.push(ValidationError::for_resource(
                origin,
                r.kind().as_str(),
                r.name(),
                path,
                reason,
            ));
        };
        match r {
            Resource::Lane(l) => {
                if let Some(first) = claim(&mut lane_tags, l.spec.tag.as_str(), r, origin) {
                    error(
                        "spec.tag".into(),
                        format!(
                            "tag {} is already used by Lane {first}",
                            quote(l.spec.tag.as_str())
                        ),
                    );
                }
                for (i, f) in l.spec.fallback.iter().enumerate() {
                    if let Fallback::Lane(name) = f
                        && !lane_names.contains(name.as_str())
                    {
                        error(
                            join_index("spec.fallback", i),
                            format!("lane {} is not declared", quote(name.as_str())),
                        );
                    }
                }
            }
            Resource::RoutePolicy(p) => {
                let service = p.spec.service.resolve(ns);
                if let Some(first) = claim(&mut policy_services, service, r, origin) {
                    error(
                        "spec.service".into(),
                        format!(
                            "service {} already has RoutePolicy {first}",
                            quote(&qualified(service.0, service.1))
                        ),
                    );
                }
            }
            Resource::TagPolicy(t) => {
                for (i, s) in t.spec.services.iter().enumerate() {
                    let service = s.resolve(ns);
                    if let Some(first) = claim(&mut tagged_services, service, r, origin) {
                        error(
                            join_index("spec.services", i),
                            format!(
                                "service {} is already listed in TagPolicy {first}",
                                quote(&qualified(service.0, service.1))
                            ),
                        );
                    }
                }
            }
            Resource::PeerPolicy(p) => match &p.spec.services {
                None => {
                    if let Some(first) = claim(&mut mesh_wide, (), r, origin) {
                        error(
                            "spec.services".into(),
                            format!(
                                "PeerPolicy {first} already covers the whole mesh; list the services this one covers"
                            ),
                        );
                    }
                }
                Some(services) => {
                    for (i, s) in services.iter().enumerate() {
                        let service = s.resolve(ns);
                        if let Some(first) = claim(&mut peer_services, service, r, origin) {
                            error(
                                join_index("spec.services", i),
                                format!(
                                    "service {} is already listed in PeerPolicy {first}",
                                    quote(&qualified(service.0, service.1))
                                ),
                            );
                        }
                    }
                }
            },
            // Checked with the rules they own, in `rollouts`.
            Resource::LaneRollout(_) => {}
        }
    }
    super::rollouts::check(set, errors);
    // Lane overrides need every tag known first, so they are a second pass.
    for (r, origin) in set.entries() {
        if let Resource::RoutePolicy(p) = r {
            for (i, o) in p.spec.lanes.iter().enumerate() {
                if !lane_tags.contains_key(o.tag.as_str()) {
                    errors.push(ValidationError::for_resource(
                        origin,
                        r.kind().as_str(),
                        r.name(),
                        format!("{}.tag", join_index("spec.lanes", i)),
                        format!("no Lane has tag {}", quote(o.tag.as_str())),
                    ));
                }
            }
        }
    }
}

/// Records `owner` for `key`; when another resource had it first, returns that one as
/// `"name" (file document N)` for the message (`"name" in namespace "shop" (...)`
/// outside `default`).
fn claim<'a, K: Ord>(
    seen: &mut Claims<'a, K>,
    key: K,
    owner: &'a Resource,
    origin: Option<&'a Origin>,
) -> Option<String> {
    let (name, namespace) = (owner.name(), owner.namespace());
    match seen.get(&key) {
        Some((first, first_ns, first_origin)) if (*first, *first_ns) != (name, namespace) => {
            let mut who = quote(first);
            if owner.is_namespaced() && *first_ns != crate::model::DEFAULT_NAMESPACE {
                who = format!("{who} in namespace {}", quote(first_ns));
            }
            Some(match first_origin {
                Some(o) => format!("{who} ({} document {})", o.file, o.document),
                None => who,
            })
        }
        Some(_) => None,
        None => {
            seen.insert(key, (name, namespace, origin));
            None
        }
    }
}
