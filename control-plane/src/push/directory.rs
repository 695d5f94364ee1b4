//! The directory: every mesh service with an instance, and where each service's
//! instances are in the shared endpoint list. Built once per endpoint batch; scoped
//! streams send the names (so a sidecar can tell "a mesh service I have not asked
//! for" from "not a mesh service") and take their full sets from the runs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Range;

use graylane_proto::v1::{Endpoint, ServiceName};

use super::scope::Scope;

/// Built from endpoints sorted by (namespace, service, instance id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    /// Sorted by (namespace, service).
    pub names: Vec<ServiceName>,
    /// namespace → service → its run of the endpoint list.
    runs: BTreeMap<String, BTreeMap<String, Range<usize>>>,
}

impl Directory {
    pub fn of(endpoints: &[Endpoint]) -> Directory {
        let mut dir = Directory::default();
        let mut start = 0;
        for (i, e) in endpoints.iter().enumerate() {
            let last = endpoints
                .get(i + 1)
                .is_none_or(|n| (&n.namespace, &n.service) != (&e.namespace, &e.service));
            if last {
                dir.names.push(ServiceName {
                    namespace: e.namespace.clone(),
                    service: e.service.clone(),
                });
                dir.runs
                    .entry(e.namespace.clone())
                    .or_default()
                    .insert(e.service.clone(), start..i + 1);
                start = i + 1;
            }
        }
        dir
    }

    /// The runs of the endpoint list `scope` covers, in list order: the whole list
    /// when unscoped.
    pub(crate) fn runs(&self, scope: &Scope, len: usize) -> Vec<Range<usize>> {
        if !scope.is_scoped() {
            return std::iter::once(0..len).collect();
        }
        let mut runs: Vec<Range<usize>> = scope
            .services()
            .into_iter()
            .filter_map(|(ns, svc)| self.run(ns, svc))
            .collect();
        runs.sort_unstable_by_key(|r| r.start);
        runs
    }

    /// The run of one service, if it has instances.
    pub(crate) fn run(&self, namespace: &str, service: &str) -> Option<Range<usize>> {
        self.runs.get(namespace)?.get(service).cloned()
    }
}

/// The names added to and removed from `old` to make `new`: one merge pass.
pub(crate) fn diff(
    old: &[ServiceName],
    new: &[ServiceName],
) -> (Vec<ServiceName>, Vec<ServiceName>) {
    fn key(s: &ServiceName) -> (&str, &str) {
        (&s.namespace, &s.service)
    }
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => key(a).cmp(&key(b)),
        };
        match order {
            Ordering::Less => removed.extend(o.next().cloned()),
            Ordering::Greater => added.extend(n.next().cloned()),
            Ordering::Equal => {
                o.next();
                n.next();
            }
        }
    }
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(namespace: &str, service: &str, id: &str) -> Endpoint {
        Endpoint {
            namespace: namespace.into(),
            service: service.into(),
            instance_id: id.into(),
            ..Endpoint::default()
        }
    }

    fn name(namespace: &str, service: &str) -> ServiceName {
        ServiceName {
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    #[test]
    fn each_service_is_one_run_and_a_scope_takes_only_its_runs() {
        let list = [
            ep("default", "a", "a-1"),
            ep("default", "a", "a-2"),
            ep("default", "b", "b-1"),
            ep("shop", "a", "s-1"),
        ];
        let dir = Directory::of(&list);
        assert_eq!(
            dir.names,
            [
                name("default", "a"),
                name("default", "b"),
                name("shop", "a")
            ]
        );
        assert_eq!(dir.run("default", "a"), Some(0..2));
        assert_eq!(dir.run("shop", "a"), Some(3..4));
        assert_eq!(dir.run("shop", "b"), None);
        let scope = Scope::only([("shop".into(), "a".into()), ("default".into(), "a".into())]);
        assert_eq!(dir.runs(&scope, list.len()), [0..2, 3..4]);
        let whole = dir.runs(&Scope::default(), list.len());
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..4));
        assert_eq!(Directory::of(&[]), Directory::default());
    }

    #[test]
    fn the_diff_lists_names_added_and_removed() {
        let old = [name("default", "a"), name("default", "b")];
        let new = [name("default", "b"), name("shop", "a")];
        assert_eq!(
            diff(&old, &new),
            (vec![name("shop", "a")], vec![name("default", "a")])
        );
        assert_eq!(diff(&new, &new), (vec![], vec![]));
    }
}
