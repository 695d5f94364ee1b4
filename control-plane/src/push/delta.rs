//! Endpoint deltas: what a stream sends when the endpoints changed since its last
//! snapshot, instead of the whole list.

use std::cmp::Ordering;

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

    #[test]
    fn equal_lists_have_an_empty_delta() {
        let list = vec![ep("a", "a-1", "h:1")];
        assert_eq!(endpoint_delta(&list, &list), EndpointDelta::default());
    }
}
