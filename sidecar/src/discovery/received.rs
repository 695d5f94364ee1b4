//! What the control plane believes this sidecar holds: the rules text and endpoints of
//! every snapshot received, applied or not.
//!
//! Why separate from the routes in force: the server sends each snapshot as changes
//! against the previous one it *sent*. After a NACK the sidecar keeps routing by the
//! last good snapshot, but must read the next delta against the rejected one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graylane_proto::v1::{Endpoint, Snapshot};
use graylane_routing::Instance;

/// The received state; also what the cache file holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Received {
    pub(crate) revision: u64,
    /// Shared, not copied, by every state after it until the rules change: an
    /// endpoint change copies the rest, and the applier tells unchanged rules by it.
    #[serde(with = "text")]
    pub(crate) rules: Arc<str>,
    /// By instance id.
    pub(crate) endpoints: BTreeMap<String, CachedEndpoint>,
    /// Scoped endpoints: every mesh service with an instance, (namespace, service).
    /// `None`: the stream is not scoped (every endpoint is here); also in caches
    /// written before scoping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) directory: Option<BTreeSet<(String, String)>>,
}

/// Whether two rules texts are the same: shared (an endpoint change), or equal (the
/// same rules received again after a reconnect, or read from the cache).
pub(crate) fn same_text(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// `Arc<str>` stored as a string. Not serde's own impl: that needs its `rc` feature,
/// which would rename every crate's symbols and so void the release build's code
/// layout (`sidecar/layout/`).
mod text {
    use std::sync::Arc;

    use serde::Deserialize;

    pub(super) fn serialize<S: serde::Serializer>(
        text: &Arc<str>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

/// An endpoint as stored (the proto type has no serde).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CachedEndpoint {
    pub(crate) service: String,
    pub(crate) address: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// Absent in caches written before namespaces: `default`.
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    /// Absent in older caches: unknown (empty).
    #[serde(default)]
    pub(crate) identity: String,
}

fn default_namespace() -> String {
    "default".to_string()
}

impl From<&Endpoint> for CachedEndpoint {
    fn from(e: &Endpoint) -> Self {
        Self {
            service: e.service.clone(),
            address: e.address.clone(),
            namespace: if e.namespace.is_empty() {
                default_namespace()
            } else {
                e.namespace.clone()
            },
            identity: e.identity.clone(),
            labels: e
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Collects the parts of one snapshot (`more` set on all but the last).
#[derive(Default)]
pub(crate) struct PartialSnapshot {
    first: Option<Snapshot>,
}

impl PartialSnapshot {
    /// Adds a part; returns the whole snapshot after its last part. A part of another
    /// version than the one being collected is a protocol error.
    pub(crate) fn add(&mut self, part: Snapshot) -> Result<Option<Snapshot>, String> {
        let whole = match self.first.take() {
            None => part,
            Some(mut whole) => {
                if whole.version != part.version {
                    return Err(format!(
                        "snapshot {} interrupted by a part of {}",
                        whole.version, part.version
                    ));
                }
                if let Some(rules) = part.rules {
                    whole.rules.get_or_insert_default().push_str(&rules);
                }
                if let Some(set) = part.endpoints {
                    whole
                        .endpoints
                        .get_or_insert_default()
                        .endpoints
                        .extend(set.endpoints);
                }
                if let Some(delta) = part.endpoint_changes {
                    let d = whole.endpoint_changes.get_or_insert_default();
                    d.removed.extend(delta.removed);
                    d.upserted.extend(delta.upserted);
                }
                if let Some(dir) = part.directory {
                    (whole.directory.get_or_insert_default().services).extend(dir.services);
                }
                if let Some(delta) = part.directory_changes {
                    let d = whole.directory_changes.get_or_insert_default();
                    d.added.extend(delta.added);
                    d.removed.extend(delta.removed);
                }
                if part.trust_bundle.is_some() {
                    whole.trust_bundle = part.trust_bundle;
                }
                if part.traffic_report_interval_ms.is_some() {
                    whole.traffic_report_interval_ms = part.traffic_report_interval_ms;
                }
                whole.more = part.more;
                whole
            }
        };
        if whole.more {
            self.first = Some(whole);
            Ok(None)
        } else {
            Ok(Some(whole))
        }
    }
}

impl Received {
    /// The state after `snapshot`: rules replaced when present, endpoints replaced by a
    /// full set or changed by a delta (removals first, then upserts).
    pub(crate) fn after(&self, snapshot: &Snapshot) -> Received {
        let mut next = self.clone();
        next.revision = snapshot.revision;
        if let Some(rules) = &snapshot.rules {
            next.rules = Arc::from(rules.as_str());
        }
        if let Some(set) = &snapshot.endpoints {
            next.endpoints = set
                .endpoints
                .iter()
                .map(|e| (e.instance_id.clone(), e.into()))
                .collect();
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                next.endpoints.remove(id);
            }
            for e in &delta.upserted {
                next.endpoints.insert(e.instance_id.clone(), e.into());
            }
        }
        next.directory_after(snapshot);
        next
    }

    /// The directory after `snapshot`: a full endpoint set comes with the directory
    /// on a scoped stream, so one without it means "not scoped" (an older control
    /// plane, or a scope the control plane dropped as too large).
    fn directory_after(&mut self, snapshot: &Snapshot) {
        let key = |s: &graylane_proto::v1::ServiceName| {
            let ns = if s.namespace.is_empty() {
                default_namespace()
            } else {
                s.namespace.clone()
            };
            (ns, s.service.clone())
        };
        if let Some(dir) = &snapshot.directory {
            self.directory = Some(dir.services.iter().map(key).collect());
        } else if snapshot.endpoints.is_some() {
            self.directory = None;
        }
        if let (Some(delta), Some(dir)) = (&snapshot.directory_changes, &mut self.directory) {
            for s in &delta.removed {
                dir.remove(&key(s));
            }
            dir.extend(delta.added.iter().map(key));
        }
    }

    /// The endpoints as the routing crate takes them.
    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.endpoints
            .iter()
            .map(|(id, e)| Instance {
                service: e.service.clone(),
                id: id.clone(),
                address: e.address.clone(),
                labels: e.labels.clone(),
                namespace: e.namespace.clone(),
                identity: e.identity.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use graylane_proto::v1::{EndpointDelta, EndpointSet};

    use super::*;

    fn ep(id: &str, service: &str) -> Endpoint {
        Endpoint {
            service: service.into(),
            instance_id: id.into(),
            labels: Default::default(),
            address: format!("{id}:15006"),
            ..Default::default()
        }
    }

    #[test]
    fn parts_reassemble_into_one_snapshot() {
        let mut parts = PartialSnapshot::default();
        let first = Snapshot {
            version: 3,
            revision: 2,
            rules: Some("ab".into()),
            more: true,
            ..Default::default()
        };
        let last = Snapshot {
            version: 3,
            revision: 2,
            rules: Some("cd".into()),
            traffic_report_interval_ms: Some(1_000),
            endpoints: Some(EndpointSet {
                endpoints: vec![ep("a-1", "a")],
            }),
            ..Default::default()
        };
        assert_eq!(parts.add(first).unwrap(), None);
        let whole = parts.add(last).unwrap().unwrap();
        assert_eq!(whole.rules.as_deref(), Some("abcd"));
        assert_eq!(whole.endpoints.unwrap().endpoints.len(), 1);
        assert_eq!(whole.traffic_report_interval_ms, Some(1_000));
    }

    #[test]
    fn a_part_of_another_version_is_an_error() {
        let mut parts = PartialSnapshot::default();
        let first = Snapshot {
            version: 3,
            more: true,
            ..Default::default()
        };
        parts.add(first).unwrap();
        assert!(
            parts
                .add(Snapshot {
                    version: 4,
                    ..Default::default()
                })
                .is_err()
        );
    }

    #[test]
    fn deltas_remove_then_upsert_and_absent_parts_keep_what_was_there() {
        let full = Snapshot {
            version: 1,
            revision: 1,
            rules: Some("r1".into()),
            endpoints: Some(EndpointSet {
                endpoints: vec![ep("a-1", "a"), ep("b-1", "b")],
            }),
            ..Default::default()
        };
        let r = Received::default().after(&full);
        let moved = Snapshot {
            version: 2,
            revision: 1,
            endpoint_changes: Some(EndpointDelta {
                upserted: vec![ep("b-1", "c"), ep("d-1", "d")],
                removed: vec!["a-1".into(), "b-1".into()],
            }),
            ..Default::default()
        };
        let r = r.after(&moved);
        assert_eq!(&*r.rules, "r1", "absent rules mean unchanged");
        let ids: Vec<_> = r
            .instances()
            .into_iter()
            .map(|i| (i.id, i.service))
            .collect();
        assert_eq!(
            ids,
            [("b-1".into(), "c".into()), ("d-1".into(), "d".into())]
        );
    }

    #[test]
    fn the_directory_comes_with_full_sets_and_changes_by_deltas() {
        use graylane_proto::v1::{ServiceDirectory, ServiceDirectoryDelta, ServiceName};
        let name = |ns: &str, svc: &str| ServiceName {
            namespace: ns.into(),
            service: svc.into(),
        };
        let scoped = Snapshot {
            endpoints: Some(EndpointSet::default()),
            directory: Some(ServiceDirectory {
                services: vec![name("", "a"), name("shop", "b")],
            }),
            ..Default::default()
        };
        let r = Received::default().after(&scoped);
        let dir = |r: &Received| {
            r.directory
                .clone()
                .map(|d| d.into_iter().collect::<Vec<_>>())
        };
        let pair = |ns: &str, svc: &str| (ns.to_string(), svc.to_string());
        assert_eq!(dir(&r), Some(vec![pair("default", "a"), pair("shop", "b")]));
        let changed = Snapshot {
            directory_changes: Some(ServiceDirectoryDelta {
                added: vec![name("shop", "c")],
                removed: vec![name("default", "a")],
            }),
            ..Default::default()
        };
        let r = r.after(&changed);
        assert_eq!(dir(&r), Some(vec![pair("shop", "b"), pair("shop", "c")]));
        // Rules only: the directory stays.
        let r = r.after(&Snapshot::default());
        assert_eq!(dir(&r).map(|d| d.len()), Some(2));
        // A full set without one: not scoped (any more), every endpoint is here.
        let r = r.after(&Snapshot {
            endpoints: Some(EndpointSet::default()),
            ..Default::default()
        });
        assert_eq!(dir(&r), None);
    }
}
