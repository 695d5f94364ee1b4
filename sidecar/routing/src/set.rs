//! `RuleSet`: the whole set of resources, keyed by kind and name, and the checks that
//! need several resources.

use std::collections::BTreeMap;

use crate::error::{Origin, ValidationError};
use crate::model::{
    DEFAULT_NAMESPACE, Kind, MtlsMode, Name, Release, Resource, RoutePolicy, ServiceName,
};
use crate::parse::{MAX_DOCUMENTS, parse_all};

mod checks;
mod rollouts;
mod series;

pub use self::series::SeriesLabels;

/// What an apply with `--prune` removes besides replacing what its files hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Nothing: resources not in the files stay (`apply` without `--prune`).
    None,
    /// Every resource not in the files: they become the whole set.
    All,
    /// The resources of this namespace not in the files (`apply --prune -n NS`).
    Namespace(String),
}

impl Prune {
    /// `--prune` given or not, scoped to a namespace or not.
    pub fn new(prune: bool, namespace: Option<&str>) -> Self {
        match (prune, namespace) {
            (false, _) => Self::None,
            (true, None) => Self::All,
            (true, Some("")) => Self::Namespace(DEFAULT_NAMESPACE.to_owned()),
            (true, Some(ns)) => Self::Namespace(ns.to_owned()),
        }
    }
}

/// A set of resources, unique per (kind, namespace, name), iterated in kind, namespace,
/// name order. A Lane's namespace is always `default` (lanes are mesh-wide).
///
/// Each entry may carry the [`Origin`] it was read from, so set-level errors can name
/// the file and document; origins are not part of equality or of the YAML form.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    entries: BTreeMap<Key, Entry>,
}

/// (kind, namespace, name).
type Key = (Kind, String, String);

fn key(kind: Kind, namespace: &str, name: &str) -> Key {
    let namespace = if kind.is_namespaced() && !namespace.is_empty() {
        namespace
    } else {
        DEFAULT_NAMESPACE
    };
    (kind, namespace.to_owned(), name.to_owned())
}

fn key_of(resource: &Resource) -> Key {
    key(resource.kind(), resource.namespace(), resource.name())
}

#[derive(Clone, Debug)]
struct Entry {
    resource: Resource,
    origin: Option<Origin>,
}

impl PartialEq for RuleSet {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((ka, a), (kb, b))| ka == kb && a.resource == b.resource)
    }
}

impl RuleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses and checks several files as one apply: every document on its own, then
    /// (kind, namespace, name) duplicates across all files, then the set-level checks of
    /// [`RuleSet::validate`] over the documents that were valid. `Err` holds every
    /// error, in file and document order, then the set-level ones.
    pub fn from_files(files: &[(String, String)]) -> Result<RuleSet, Vec<ValidationError>> {
        let (set, mut errors) = Self::read_files(files);
        if let Err(mut found) = set.validate() {
            errors.append(&mut found);
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Like [`RuleSet::from_files`] without the set-level checks: for a partial apply,
    /// whose references (a fallback lane, an overridden tag) may point at resources
    /// already in force. Merge it into the set in force, then [`RuleSet::validate`].
    pub fn parse_files(files: &[(String, String)]) -> Result<RuleSet, Vec<ValidationError>> {
        let (set, errors) = Self::read_files(files);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Every valid document of `files` as a set, and every document's own errors (an
    /// apply with errors still merges the valid ones into the set in force to find
    /// the set-level errors, so that a file's errors are reported in one run).
    pub fn read_files(files: &[(String, String)]) -> (RuleSet, Vec<ValidationError>) {
        let mut set = RuleSet::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            // The valid documents of a bad file are kept, so set-level errors are
            // found in the same run.
            let (parsed, mut found) = parse_all(file, text);
            errors.append(&mut found);
            for (resource, origin) in parsed {
                set.insert_new(resource, origin, &mut errors);
            }
        }
        (set, errors)
    }

    /// Adds or replaces every resource of `other`, keeping its origins (kubectl-apply
    /// semantics: resources not in `other` stay).
    pub fn merge(&mut self, other: RuleSet) {
        self.entries.extend(other.entries);
    }

    /// Applies `applied` to this set: every resource of it added or replaced, and the
    /// resources `prune` covers that it does not hold removed.
    pub fn apply(&mut self, applied: RuleSet, prune: &Prune) {
        match prune {
            Prune::None => {}
            Prune::All => self.entries.clear(),
            // An operator of one namespace replaces that namespace's rules; Lanes span
            // namespaces, so they are not one team's to remove (kubectl's prune with
            // `-n` leaves other namespaces and cluster-wide objects alone too).
            Prune::Namespace(namespace) => self
                .entries
                .retain(|(kind, ns, _), _| !kind.is_namespaced() || ns != namespace),
        }
        self.merge(applied);
    }

    /// Sets the release state of `service` of `namespace` in its RoutePolicy, or adds a
    /// minimal RoutePolicy named after the service, in that namespace, when it has
    /// none. Fails (naming the field) when the service or namespace cannot be a
    /// resource name or that name is taken by a RoutePolicy of another service.
    pub fn set_release(
        &mut self,
        namespace: &str,
        service: &str,
        release: Release,
    ) -> Result<(), Vec<ValidationError>> {
        let existing = self.route_policy_for(namespace, service).cloned();
        let policy = match existing {
            Some(mut policy) => {
                policy.spec.release = release;
                policy
            }
            None => {
                let refuse = |path: &str, reason: String| {
                    vec![ValidationError {
                        file: "(release set)".to_owned(),
                        document: None,
                        kind: Some("RoutePolicy".to_owned()),
                        name: Some(service.to_owned()),
                        path: path.to_owned(),
                        reason,
                    }]
                };
                let name = Name::new(service).map_err(|e| refuse("metadata.name", e))?;
                let ns = Name::new(namespace).map_err(|e| refuse("metadata.namespace", e))?;
                if self.get(Kind::RoutePolicy, namespace, service).is_some() {
                    return Err(refuse(
                        "metadata.name",
                        format!("RoutePolicy {service:?} exists for another service"),
                    ));
                }
                let mut policy = RoutePolicy::new(
                    name,
                    ServiceName::new(service).map_err(|e| refuse("spec.service", e))?,
                    release,
                );
                policy.metadata.namespace = (namespace != DEFAULT_NAMESPACE).then_some(ns);
                policy
            }
        };
        let origin = self
            .origin(
                Kind::RoutePolicy,
                policy.metadata.namespace(),
                policy.metadata.name.as_str(),
            )
            .cloned();
        self.insert(Resource::RoutePolicy(policy), origin);
        Ok(())
    }

    /// [`RuleSet::from_files`] with one file: what [`RuleSet::to_yaml`] wrote parses
    /// back to an equal set.
    pub fn from_yaml(file: &str, text: &str) -> Result<RuleSet, Vec<ValidationError>> {
        Self::from_files(&[(file.to_owned(), text.to_owned())])
    }

    fn insert_new(
        &mut self,
        resource: Resource,
        origin: Origin,
        errors: &mut Vec<ValidationError>,
    ) {
        let key = key_of(&resource);
        if let Some(first) = self.entries.get(&key) {
            let at = first.origin.as_ref().map_or_else(String::new, |o| {
                format!(" in {} document {}", o.file, o.document)
            });
            let namespace = if key.0.is_namespaced() && key.1 != DEFAULT_NAMESPACE {
                format!(" in namespace {:?}", key.1)
            } else {
                String::new()
            };
            errors.push(ValidationError::for_resource(
                Some(&origin),
                key.0.as_str(),
                &key.2,
                "metadata.name",
                format!("{} {:?}{namespace} is already defined{at}", key.0, key.2),
            ));
            return;
        }
        self.entries.insert(
            key,
            Entry {
                resource,
                origin: Some(origin),
            },
        );
    }

    /// Adds or replaces the resource of the same kind, namespace and name; returns the
    /// replaced one. No check is done: call [`RuleSet::validate`] before using the set.
    pub fn insert(&mut self, resource: Resource, origin: Option<Origin>) -> Option<Resource> {
        let key = key_of(&resource);
        self.entries
            .insert(key, Entry { resource, origin })
            .map(|e| e.resource)
    }

    /// Removes and returns the resource of that kind, namespace and name, if present
    /// (a Lane's namespace is ignored).
    pub fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<Resource> {
        self.entries
            .remove(&key(kind, namespace, name))
            .map(|e| e.resource)
    }

    /// The resource of that kind, namespace and name (a Lane's namespace is ignored).
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Resource> {
        self.entries
            .get(&key(kind, namespace, name))
            .map(|e| &e.resource)
    }

    /// Where the resource of that kind, namespace and name was read from, if known.
    pub fn origin(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Origin> {
        self.entries
            .get(&key(kind, namespace, name))
            .and_then(|e| e.origin.as_ref())
    }

    /// Every resource, in kind, namespace, name order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.entries.values().map(|e| &e.resource)
    }

    /// The resources of one kind, in name order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Resource> {
        self.iter().filter(move |r| r.kind() == kind)
    }

    /// How many resources.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The checks that need several resources, plus the [`MAX_DOCUMENTS`] limit (an
    /// error about the whole set, named `(rule set)`):
    /// one RoutePolicy per service, one Lane per tag, one TagPolicy per service, one
    /// PeerPolicy per service and at most one without `services`, lane
    /// fallbacks and RoutePolicy lane overrides naming declared lanes. Per-document
    /// checks are not repeated (resources are valid on their own by construction of
    /// the parser; a resource built in code is the caller's to check). Errors name the
    /// origin of the offending resource, or `(stored rules)` without one.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut errors = Vec::new();
        if self.len() > MAX_DOCUMENTS {
            errors.push(ValidationError {
                file: "(rule set)".to_owned(),
                document: None,
                kind: None,
                name: None,
                path: String::new(),
                reason: format!(
                    "the rule set has {} resources, over the {MAX_DOCUMENTS} limit",
                    self.len()
                ),
            });
        }
        checks::run(self, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = (&Resource, Option<&Origin>)> {
        self.entries
            .values()
            .map(|e| (&e.resource, e.origin.as_ref()))
    }

    /// Canonical YAML: every resource in kind then name order, separated by `---`
    /// lines; `""` when empty. `RuleSet::from_yaml(f, &s.to_yaml()) == Ok(s)` for a
    /// valid set.
    pub fn to_yaml(&self) -> String {
        let docs: Vec<String> = self.iter().map(Resource::to_yaml).collect();
        docs.join("---\n")
    }

    /// The RoutePolicy of `service` in `namespace` — one whose `spec.service`, read
    /// relative to the policy's own namespace, names it (the first by namespace and
    /// name if an unchecked set has several).
    pub fn route_policy_for(&self, namespace: &str, service: &str) -> Option<&RoutePolicy> {
        self.of_kind(Kind::RoutePolicy).find_map(|r| match r {
            Resource::RoutePolicy(p)
                if p.spec.service.resolve(p.metadata.namespace()) == (namespace, service) =>
            {
                Some(p)
            }
            _ => None,
        })
    }

    /// The release state of `service` in `namespace`: its RoutePolicy's, `all` without
    /// one.
    pub fn release_of(&self, namespace: &str, service: &str) -> Release {
        self.route_policy_for(namespace, service)
            .map_or(Release::All, |p| p.spec.release)
    }

    /// The mTLS mode of `service` in `namespace` (security.md): that of the PeerPolicy
    /// naming it (its `services` read relative to the policy's namespace), else that of
    /// the mesh-wide one (no `services`, whatever its namespace), else `permissive`. In
    /// an unchecked set with several candidates, the first by namespace and name wins.
    ///
    /// Compiles the set's PeerPolicies on each call: for a one-off question. The
    /// sidecar asks its routing table, which holds them compiled
    /// ([`RoutingTable::mtls_mode`](crate::RoutingTable::mtls_mode)).
    pub fn mtls_mode(&self, namespace: &str, service: &str) -> MtlsMode {
        crate::table::peer::PeerModes::compile(self).get(namespace, service)
    }
}

#[cfg(test)]
mod tests;
