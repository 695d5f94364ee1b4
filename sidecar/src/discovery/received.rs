//! What the control plane believes this sidecar holds: the rules text and endpoints of
//! every snapshot received, applied or not.
//!
//! Why separate from the routes in force: the server sends each snapshot as changes
//! against the previous one it *sent*. After a NACK the sidecar keeps routing by the
//! last good snapshot, but must read the next delta against the rejected one.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use graylane_proto::v1::{Endpoint, Snapshot};
use graylane_routing::{DEFAULT_NAMESPACE, Instance};

/// The received state; also what the cache file holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Received {
    pub(crate) revision: u64,
    /// Shared, not copied, by every state after it until the rules change: an
    /// endpoint change copies the rest, and the applier tells unchanged rules by it.
    #[serde(with = "text")]
    pub(crate) rules: Arc<str>,
    /// By instance id, as the routing crate takes them (borrowed: an endpoint change
    /// copies only the instances of the services it touches).
    #[serde(with = "stored")]
    pub(crate) endpoints: BTreeMap<String, Instance>,
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

/// The endpoints as the cache stores them: by id, each as a [`CachedEndpoint`] (the
/// id is the key; the routing crate's type has no serde).
pub(crate) mod stored {
    use std::borrow::Borrow;
    use std::collections::BTreeMap;

    use graylane_routing::Instance;
    use serde::Deserialize;
    use serde::ser::SerializeMap;

    use super::CachedEndpoint;

    pub(crate) fn serialize<S: serde::Serializer>(
        endpoints: &impl Borrow<BTreeMap<String, Instance>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let endpoints = endpoints.borrow();
        let mut map = s.serialize_map(Some(endpoints.len()))?;
        for (id, i) in endpoints {
            map.serialize_entry(id, &CachedEndpoint::from(i))?;
        }
        map.end()
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Instance>, D::Error> {
        let stored = BTreeMap::<String, CachedEndpoint<'static>>::deserialize(d)?;
        Ok(stored
            .into_iter()
            .map(|(id, e)| {
                let instance = e.into_instance(id.clone());
                (id, instance)
            })
            .collect())
    }
}

/// An endpoint as stored (the proto type has no serde), borrowed from an [`Instance`]
/// when written.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedEndpoint<'a> {
    service: Cow<'a, str>,
    address: Cow<'a, str>,
    labels: Cow<'a, BTreeMap<String, String>>,
    /// Absent in caches written before namespaces: `default`.
    #[serde(default = "default_namespace")]
    namespace: Cow<'a, str>,
    /// Absent in older caches: unknown (empty).
    #[serde(default)]
    identity: Cow<'a, str>,
}

impl<'a> From<&'a Instance> for CachedEndpoint<'a> {
    fn from(i: &'a Instance) -> Self {
        Self {
            service: Cow::Borrowed(&i.service),
            address: Cow::Borrowed(&i.address),
            labels: Cow::Borrowed(&i.labels),
            namespace: Cow::Borrowed(&i.namespace),
            identity: Cow::Borrowed(&i.identity),
        }
    }
}

impl CachedEndpoint<'_> {
    fn into_instance(self, id: String) -> Instance {
        Instance {
            service: self.service.into_owned(),
            id,
            address: self.address.into_owned(),
            labels: self.labels.into_owned(),
            namespace: self.namespace.into_owned(),
            identity: self.identity.into_owned(),
        }
    }
}

fn default_namespace() -> Cow<'static, str> {
    Cow::Borrowed(DEFAULT_NAMESPACE)
}

/// An endpoint as the routing crate takes it; an empty namespace is `default`.
pub(crate) fn instance(e: &Endpoint) -> Instance {
    Instance {
        service: e.service.clone(),
        id: e.instance_id.clone(),
        address: e.address.clone(),
        namespace: if e.namespace.is_empty() {
            DEFAULT_NAMESPACE.to_string()
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
    /// Reads `snapshot` into this state: rules replaced when present, endpoints
    /// replaced by a full set or changed by a delta (removals first, then upserts).
    /// In place: a delta costs what it changes, not a copy of every endpoint held.
    pub(crate) fn apply(&mut self, snapshot: &Snapshot) {
        self.revision = snapshot.revision;
        if let Some(rules) = &snapshot.rules {
            self.rules = Arc::from(rules.as_str());
        }
        if let Some(set) = &snapshot.endpoints {
            self.endpoints = set
                .endpoints
                .iter()
                .map(|e| (e.instance_id.clone(), instance(e)))
                .collect();
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                self.endpoints.remove(id);
            }
            for e in &delta.upserted {
                self.endpoints.insert(e.instance_id.clone(), instance(e));
            }
        }
        self.directory_after(snapshot);
    }

    /// The directory after `snapshot`: a full endpoint set comes with the directory
    /// on a scoped stream, so one without it means "not scoped" (an older control
    /// plane, or a scope the control plane dropped as too large).
    fn directory_after(&mut self, snapshot: &Snapshot) {
        let key = |s: &graylane_proto::v1::ServiceName| {
            let ns = if s.namespace.is_empty() {
                DEFAULT_NAMESPACE.to_string()
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
    pub(crate) fn instances(&self) -> Vec<&Instance> {
        self.endpoints.values().collect()
    }
}

#[cfg(test)]
mod tests {
    use graylane_proto::v1::{EndpointDelta, EndpointSet};

    use super::*;

    fn after(mut r: Received, snapshot: &Snapshot) -> Received {
        r.apply(snapshot);
        r
    }

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
        let r = after(Received::default(), &full);
        let moved = Snapshot {
            version: 2,
            revision: 1,
            endpoint_changes: Some(EndpointDelta {
                upserted: vec![ep("b-1", "c"), ep("d-1", "d")],
                removed: vec!["a-1".into(), "b-1".into()],
            }),
            ..Default::default()
        };
        let r = after(r, &moved);
        assert_eq!(&*r.rules, "r1", "absent rules mean unchanged");
        let ids: Vec<_> = r
            .instances()
            .into_iter()
            .map(|i| (i.id.clone(), i.service.clone()))
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
        let r = after(Received::default(), &scoped);
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
        let r = after(r, &changed);
        assert_eq!(dir(&r), Some(vec![pair("shop", "b"), pair("shop", "c")]));
        // Rules only: the directory stays.
        let r = after(r, &Snapshot::default());
        assert_eq!(dir(&r).map(|d| d.len()), Some(2));
        // A full set without one: not scoped (any more), every endpoint is here.
        let r = after(
            r,
            &Snapshot {
                endpoints: Some(EndpointSet::default()),
                ..Default::default()
            },
        );
        assert_eq!(dir(&r), None);
    }
}
