//! Endpoint deltas: what a stream sends when the endpoints changed since its last
//! snapshot, instead of the whole list.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graylane_proto::v1::{Endpoint, EndpointDelta};

fn key(e: &Endpoint) -> (&str, &str) {
    (&e.service, &e.instance_id)
}

/// The changes from `old` to `new`, both sorted by (service, instance id): one merge
/// pass, O(old + new). Removed ids are to be applied before upserts.
pub fn endpoint_delta(old: &[Endpoint], new: &[Endpoint]) -> EndpointDelta {
    let mut delta = EndpointDelta::default();
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(a), None) => {
                delta.removed.push(a.instance_id.clone());
                o.next();
            }
            (None, Some(b)) => {
                delta.upserted.push((*b).clone());
                n.next();
            }
            (Some(a), Some(b)) => match key(a).cmp(&key(b)) {
                Ordering::Less => {
                    delta.removed.push(a.instance_id.clone());
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
/// its upserts), as a sidecar applies one delta. An id removed by any of them is
/// removed (an instance that moved service must leave its old one first), then
/// upserted again if its last change was an upsert.
pub fn compose(changes: &[Arc<EndpointDelta>]) -> EndpointDelta {
    if let [one] = changes {
        return EndpointDelta::clone(one);
    }
    let mut removed = BTreeSet::new();
    let mut latest: BTreeMap<&str, Option<&Endpoint>> = BTreeMap::new();
    for change in changes {
        for id in &change.removed {
            removed.insert(id.as_str());
            latest.insert(id, None);
        }
        for e in &change.upserted {
            latest.insert(&e.instance_id, Some(e));
        }
    }
    EndpointDelta {
        removed: removed.into_iter().map(String::from).collect(),
        upserted: latest.into_values().flatten().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(d.removed, vec!["a-1".to_string()]);
        assert_eq!(
            d.upserted,
            vec![ep("a", "a-2", "h:9"), ep("c", "c-1", "h:4")]
        );
    }

    #[test]
    fn an_instance_moving_service_is_removed_then_upserted() {
        let d = endpoint_delta(&[ep("a", "x", "h:1")], &[ep("b", "x", "h:1")]);
        assert_eq!(d.removed, vec!["x".to_string()]);
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
        assert_eq!(apply(&a, &compose(&steps[..2])), c);
        assert_eq!(apply(&a, &compose(&steps)), d);
        assert_eq!(apply(&b, &compose(&steps[1..])), d);
        assert_eq!(compose(&steps[..1]), *steps[0]);
        assert_eq!(compose(&[]), EndpointDelta::default());
    }

    #[test]
    fn equal_lists_have_an_empty_delta() {
        let list = vec![ep("a", "a-1", "h:1")];
        assert_eq!(endpoint_delta(&list, &list), EndpointDelta::default());
    }
}
