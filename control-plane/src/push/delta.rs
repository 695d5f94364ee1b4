//! Endpoint deltas: what a stream sends when the endpoints changed since its last
//! snapshot, instead of the whole list.
//!
//! A change is diffed once per batch, for every stream (`endpoint_delta`); each stream
//! then keeps the part its scope covers while composing (`compose`). A removal keeps
//! the service it was removed from, so a scoped stream can drop the removals it never
//! sent without remembering what it sent.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graylane_proto::v1::{Endpoint, EndpointDelta};

use super::scope::Scope;

/// One batch of endpoint changes, shared by every stream. Both lists are sorted by
/// (namespace, service, instance id), as `endpoint_delta` makes them: `compose` finds
/// a service's entries by binary search.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Change {
    /// Instances gone, with the (namespace, service) they were in. Applied first.
    pub removed: Vec<Removed>,
    /// Instances added or changed.
    pub upserted: Vec<Endpoint>,
}

/// An instance removed from a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub namespace: String,
    pub service: String,
    pub instance_id: String,
}

/// The order of `State::endpoints`: by namespace, service, instance id, so each
/// service's instances are one run of the list (what a scoped full set sends).
pub(crate) fn key(e: &Endpoint) -> (&str, &str, &str) {
    (&e.namespace, &e.service, &e.instance_id)
}

fn removal(e: &Endpoint) -> Removed {
    Removed {
        namespace: e.namespace.clone(),
        service: e.service.clone(),
        instance_id: e.instance_id.clone(),
    }
}

/// The changes from `old` to `new`, both sorted by `key`: one merge pass,
/// O(old + new). Removals are to be applied before upserts.
pub fn endpoint_delta(old: &[Endpoint], new: &[Endpoint]) -> Change {
    let mut delta = Change::default();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(a), None) => {
                delta.removed.push(removal(a));
                o.next();
            }
            (None, Some(b)) => {
                delta.upserted.push((*b).clone());
                n.next();
            }
            (Some(a), Some(b)) => match key(a).cmp(&key(b)) {
                Ordering::Less => {
                    delta.removed.push(removal(a));
                    o.next();
                }
                Ordering::Greater => {
                    delta.upserted.push((*b).clone());
                    n.next();
                }
                Ordering::Equal => {
                    if a != b {
                        delta.upserted.push((*b).clone());
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    delta
}

/// One delta with the effect of `changes` applied in order (each: its removals, then
/// its upserts), as a sidecar applies one delta, keeping only what `scope` covers
/// (every entry for an unscoped stream). An id removed by any of them is removed (an
/// instance that moved service must leave its old one first), then upserted again if
/// its last change was an upsert.
///
/// A scoped stream takes each of its services' run of every change by binary search
/// (a `Change` is sorted by `key`, as `endpoint_delta` makes it): O(scope × log
/// change) per stream. Testing every entry against the scope instead made a batch of
/// k registrations cost every one of N streams k lookups; with the fleet reconnecting
/// after a restart (k in the thousands, N = 10,000) that stalled the control plane
/// for seconds per batch.
pub fn compose(changes: &[Arc<Change>], scope: &Scope) -> EndpointDelta {
    let services = scope.services();
    let of_service: fn(&Removed) -> (&str, &str) = |r| (&r.namespace, &r.service);
    let of_endpoint: fn(&Endpoint) -> (&str, &str) = |e| (&e.namespace, &e.service);
    if let [one] = changes {
        return EndpointDelta {
            removed: covered(&one.removed, scope, &services, of_service)
                .map(|r| r.instance_id.clone())
                .collect(),
            upserted: covered(&one.upserted, scope, &services, of_endpoint)
                .cloned()
                .collect(),
        };
    }
    let mut removed = BTreeSet::new();
    let mut latest: BTreeMap<&str, Option<&Endpoint>> = BTreeMap::new();
    for change in changes {
        for r in covered(&change.removed, scope, &services, of_service) {
            removed.insert(r.instance_id.as_str());
            latest.insert(&r.instance_id, None);
        }
        for e in covered(&change.upserted, scope, &services, of_endpoint) {
            latest.insert(&e.instance_id, Some(e));
        }
    }
    EndpointDelta {
        removed: removed.into_iter().map(String::from).collect(),
        upserted: latest.into_values().flatten().cloned().collect(),
    }
}

/// The entries of `list` (sorted by `service`: (namespace, service)) that `scope`
/// covers, in list order: all of them when unscoped, else the run of each of
/// `services` (the scope's, sorted), each found by binary search.
fn covered<'a, T>(
    list: &'a [T],
    scope: &Scope,
    services: &[(&str, &str)],
    service: fn(&T) -> (&str, &str),
) -> impl Iterator<Item = &'a T> {
    let runs: Vec<&'a [T]> = if scope.is_scoped() {
        services
            .iter()
            .map(|wanted| {
                let start = list.partition_point(|x| service(x) < *wanted);
                let len = list[start..].partition_point(|x| service(x) == *wanted);
                &list[start..start + len]
            })
            .filter(|run| !run.is_empty())
            .collect()
    } else {
        vec![list]
    };
    runs.into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Scope {
        Scope::default()
    }

    fn ids(removed: &[Removed]) -> Vec<String> {
        removed.iter().map(|r| r.instance_id.clone()).collect()
    }

    fn ep(service: &str, id: &str, address: &str) -> Endpoint {
        Endpoint {
            service: service.into(),
            instance_id: id.into(),
            labels: Default::default(),
            address: address.into(),
            ..Default::default()
        }
    }

    #[test]
    fn delta_lists_added_changed_and_removed_instances() {
        let old = vec![
            ep("a", "a-1", "h:1"),
            ep("a", "a-2", "h:2"),
            ep("b", "b-1", "h:3"),
        ];
        let new = vec![
            ep("a", "a-2", "h:9"),
            ep("b", "b-1", "h:3"),
            ep("c", "c-1", "h:4"),
        ];
        let d = endpoint_delta(&old, &new);
        assert_eq!(ids(&d.removed), vec!["a-1".to_string()]);
        assert_eq!(
            d.upserted,
            vec![ep("a", "a-2", "h:9"), ep("c", "c-1", "h:4")]
        );
    }

    #[test]
    fn an_instance_moving_service_is_removed_then_upserted() {
        let d = endpoint_delta(&[ep("a", "x", "h:1")], &[ep("b", "x", "h:1")]);
        assert_eq!(ids(&d.removed), vec!["x".to_string()]);
        assert_eq!(
            d.removed[0].service, "a",
            "removed from the service it was in"
        );
        assert_eq!(d.upserted, vec![ep("b", "x", "h:1")]);
    }

    /// What a sidecar does with one delta (`sidecar::discovery::received`).
    fn apply(list: &[Endpoint], d: &EndpointDelta) -> Vec<Endpoint> {
        let mut by_id: BTreeMap<String, Endpoint> = list
            .iter()
            .map(|e| (e.instance_id.clone(), e.clone()))
            .collect();
        for id in &d.removed {
            by_id.remove(id);
        }
        for e in &d.upserted {
            by_id.insert(e.instance_id.clone(), e.clone());
        }
        let mut out: Vec<Endpoint> = by_id.into_values().collect();
        out.sort_by(|a, b| key(a).cmp(&key(b)));
        out
    }

    #[test]
    fn composed_changes_have_the_effect_of_applying_them_in_turn() {
        let a = vec![
            ep("a", "a-1", "h:1"),
            ep("a", "x", "h:2"),
            ep("b", "b-1", "h:3"),
        ];
        // x moves service, a-2 comes, b-1 goes.
        let b = vec![
            ep("a", "a-1", "h:1"),
            ep("a", "a-2", "h:4"),
            ep("b", "x", "h:2"),
        ];
        // a-2 goes again, b-1 comes back, a-1 changes address.
        let c = vec![
            ep("a", "a-1", "h:9"),
            ep("b", "b-1", "h:3"),
            ep("b", "x", "h:2"),
        ];
        let d = vec![ep("a", "a-1", "h:9")];
        let steps = [
            Arc::new(endpoint_delta(&a, &b)),
            Arc::new(endpoint_delta(&b, &c)),
            Arc::new(endpoint_delta(&c, &d)),
        ];
        assert_eq!(apply(&a, &compose(&steps[..2], &all())), c);
        assert_eq!(apply(&a, &compose(&steps, &all())), d);
        assert_eq!(apply(&b, &compose(&steps[1..], &all())), d);
        let one = compose(&steps[..1], &all());
        assert_eq!(one.removed, ids(&steps[0].removed));
        assert_eq!(one.upserted, steps[0].upserted);
        assert_eq!(compose(&[], &all()), EndpointDelta::default());
    }

    #[test]
    fn equal_lists_have_an_empty_delta() {
        let list = vec![ep("a", "a-1", "h:1")];
        assert_eq!(endpoint_delta(&list, &list), Change::default());
    }

    #[test]
    fn a_scoped_stream_keeps_only_the_changes_of_its_services() {
        let a = vec![ep("a", "a-1", "h:1"), ep("b", "b-1", "h:2")];
        let b = vec![ep("a", "a-2", "h:3"), ep("b", "b-2", "h:4")];
        let c = vec![ep("b", "a-2", "h:3"), ep("b", "b-2", "h:4")];
        let steps = [
            Arc::new(endpoint_delta(&a, &b)),
            Arc::new(endpoint_delta(&b, &c)),
        ];
        let only_a = Scope::only([("".to_string(), "a".to_string())]);
        let one = compose(&steps[..1], &only_a);
        assert_eq!(
            (one.removed, one.upserted),
            (names(&["a-1"]), vec![b[0].clone()])
        );
        // a-2 moved to b: removed from the stream's view, never upserted there.
        let both = compose(&steps, &only_a);
        assert_eq!(both.removed, names(&["a-1", "a-2"]));
        assert!(both.upserted.is_empty());
    }

    #[test]
    fn a_scope_finds_its_services_in_a_large_change_as_a_filter_would() {
        let ep_in = |ns: &str, svc: usize, i: usize| Endpoint {
            namespace: ns.into(),
            service: format!("s{svc:03}"),
            instance_id: format!("s{svc:03}-{i}"),
            address: "h:1".into(),
            ..Default::default()
        };
        let old: Vec<Endpoint> = (0..200).map(|i| ep_in("default", i % 50, i)).collect();
        let mut new: Vec<Endpoint> = (100..400)
            .map(|i| ep_in(if i % 7 == 0 { "shop" } else { "default" }, i % 60, i))
            .collect();
        new.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut old = old;
        old.sort_by(|a, b| key(a).cmp(&key(b)));
        let change = Arc::new(endpoint_delta(&old, &new));
        let wanted = [
            ("default", "s007"),
            ("shop", "s014"),
            ("default", "s055"),
            ("default", "s999"), // no instance
            ("nowhere", "s007"),
        ];
        let scope = Scope::only(wanted.map(|(n, s)| (n.to_string(), s.to_string())));
        let is_wanted = |ns: &str, svc: &str| wanted.contains(&(ns, svc));
        let got = compose(std::slice::from_ref(&change), &scope);
        let upserted: Vec<Endpoint> = (change.upserted.iter())
            .filter(|e| is_wanted(&e.namespace, &e.service))
            .cloned()
            .collect();
        let removed: Vec<String> = (change.removed.iter())
            .filter(|r| is_wanted(&r.namespace, &r.service))
            .map(|r| r.instance_id.clone())
            .collect();
        assert!(!upserted.is_empty() && !removed.is_empty());
        assert_eq!((got.upserted, got.removed), (upserted, removed));
        // Composed over two changes, the same entries (by id).
        let both = compose(&[Arc::clone(&change), Arc::new(Change::default())], &scope);
        assert_eq!(both.upserted.len() + both.removed.len(), {
            let one = compose(std::slice::from_ref(&change), &scope);
            one.upserted.len() + one.removed.len()
        });
        // Unscoped: the whole change.
        let every = compose(std::slice::from_ref(&change), &all());
        assert_eq!(every.upserted, change.upserted);
        assert_eq!(every.removed, ids(&change.removed));
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_string()).collect()
    }
}
