//! Scoped endpoints (issue 15): which services' endpoints one stream sends.
//!
//! A sidecar that says Hello with a `scope` receives the endpoints of those services
//! and of its own, plus the directory of every mesh service (so it can tell a service
//! it has not asked for from a host that is no mesh service). It widens the scope on
//! the stream (`SidecarMessage.interest`) when its app first calls another service.
//! Without a scope (an older sidecar, `--endpoint-scope all`) it receives everything.
//!
//! What a stream filters with is a map namespace → services, looked up with borrowed
//! names: every shared change is filtered per stream in one pass, with no allocation
//! per entry (`delta::compose`).

use std::collections::{HashMap, HashSet};

use graylane_proto::v1::{EndpointScope, Hello, ServiceName};

/// The most services one stream may name. Past it the stream is sent every endpoint,
/// as an unscoped one is: a sidecar calling that many services gains nothing from a
/// scope, and a hostile or mistaken list costs the control plane no more memory than
/// this (about 100 bytes a name).
pub const MAX_SCOPE: usize = 1_000;

/// What one stream sends endpoints for.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// `None`: every service (unscoped, or widened past `MAX_SCOPE`).
    only: Option<Services>,
    /// Owed to the sidecar by the next snapshot beyond what changed.
    owed: Owed,
}

#[derive(Clone, Debug, Default)]
struct Services {
    by_namespace: HashMap<String, HashSet<String>>,
    len: usize,
}

/// What the next snapshot must send whatever changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Owed {
    #[default]
    Nothing,
    /// Every endpoint of these services, new to the scope.
    Added(Vec<(String, String)>),
    /// A full set: the scope was dropped (widened past `MAX_SCOPE`), and the full set
    /// without a directory tells the sidecar it now holds everything.
    Full,
}

/// Why a scope was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("{which}: {reason}")]
    Name { which: String, reason: String },
}

impl Scope {
    /// The scope a Hello asks for, taken out of it (the registry keeps the Hello for
    /// the stream's life; the scope lives in the stream): `All` without one; else its
    /// services plus the sidecar's own. `hello` has its identity defaults applied.
    pub fn of_hello(hello: &mut Hello) -> Result<Scope, ScopeError> {
        let Some(asked) = hello.scope.take() else {
            return Ok(Scope::default());
        };
        let asked = &asked;
        let own = (hello.namespace.clone(), hello.service.clone());
        let mut services = Services::default();
        services.insert(own);
        let mut scope = Scope {
            only: Some(services),
            owed: Owed::Nothing,
        };
        scope.widen(asked)?;
        // Nothing is owed yet: the first snapshot is a full set of the scope.
        scope.owed = Owed::Nothing;
        Ok(scope)
    }

    /// A scope of exactly `services` (tests, benchmarks).
    pub fn only(services: impl IntoIterator<Item = (String, String)>) -> Scope {
        let mut set = Services::default();
        for s in services {
            set.insert(s);
        }
        Scope {
            only: Some(set),
            owed: Owed::Nothing,
        }
    }

    /// Adds `interest` to the scope; whether the sidecar is owed a snapshot for it
    /// (some service is new to the scope). Every name is checked before any is added:
    /// a list with one bad name changes nothing. Past `MAX_SCOPE` the scope is dropped
    /// (every endpoint goes out from now on). An unscoped stream ignores interest.
    pub fn widen(&mut self, interest: &EndpointScope) -> Result<bool, ScopeError> {
        let mut names = Vec::with_capacity(interest.services.len().min(MAX_SCOPE + 1));
        for (i, s) in interest.services.iter().enumerate() {
            names.push(checked(i, s)?);
        }
        let Some(only) = &mut self.only else {
            return Ok(false);
        };
        let mut added = Vec::new();
        for name in names {
            if only.len >= MAX_SCOPE && !only.contains(&name.0, &name.1) {
                tracing::warn!(
                    limit = MAX_SCOPE,
                    "endpoint scope too large: sending every endpoint"
                );
                self.only = None;
                self.owed = Owed::Full;
                return Ok(true);
            }
            if only.insert(name.clone()) {
                added.push(name);
            }
        }
        if added.is_empty() {
            return Ok(false);
        }
        match &mut self.owed {
            Owed::Added(list) => list.extend(added),
            Owed::Full => {}
            owed @ Owed::Nothing => *owed = Owed::Added(added),
        }
        Ok(true)
    }

    /// Whether this stream sends the endpoints of `service` in `namespace`.
    pub fn covers(&self, namespace: &str, service: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.contains(namespace, service))
    }

    /// Whether the stream is scoped (its snapshots carry the directory).
    pub fn is_scoped(&self) -> bool {
        self.only.is_some()
    }

    /// How many services the scope names; `None` when unscoped.
    pub fn size(&self) -> Option<usize> {
        self.only.as_ref().map(|o| o.len)
    }

    /// The services in the scope, sorted; empty when unscoped.
    pub(crate) fn services(&self) -> Vec<(&str, &str)> {
        let mut list: Vec<(&str, &str)> = self
            .only
            .iter()
            .flat_map(|o| o.by_namespace.iter())
            .flat_map(|(ns, set)| set.iter().map(move |s| (ns.as_str(), s.as_str())))
            .collect();
        list.sort_unstable();
        list
    }

    /// What the next snapshot owes, now being sent.
    pub(crate) fn take_owed(&mut self) -> Owed {
        std::mem::take(&mut self.owed)
    }

    /// Whether a snapshot is owed even if the state did not change.
    pub fn owes(&self) -> bool {
        self.owed != Owed::Nothing
    }
}

impl Services {
    fn insert(&mut self, (namespace, service): (String, String)) -> bool {
        let new = self
            .by_namespace
            .entry(namespace)
            .or_default()
            .insert(service);
        self.len += usize::from(new);
        new
    }

    fn contains(&self, namespace: &str, service: &str) -> bool {
        self.by_namespace
            .get(namespace)
            .is_some_and(|set| set.contains(service))
    }
}

/// A name as rules name it (the routing crate's own check), its namespace defaulted.
fn checked(i: usize, s: &ServiceName) -> Result<(String, String), ScopeError> {
    let bad = |reason: String| ScopeError::Name {
        which: format!("services[{i}]"),
        reason,
    };
    let namespace = if s.namespace.is_empty() {
        "default"
    } else {
        s.namespace.as_str()
    };
    graylane_routing::Name::new(namespace).map_err(|e| bad(format!("namespace: {e}")))?;
    graylane_routing::Name::new(s.service.as_str()).map_err(|e| bad(format!("service: {e}")))?;
    Ok((namespace.to_string(), s.service.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(namespace: &str, service: &str) -> ServiceName {
        ServiceName {
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    fn hello(scope: Option<Vec<ServiceName>>) -> Hello {
        Hello {
            service: "web".into(),
            namespace: "shop".into(),
            scope: scope.map(|services| EndpointScope { services }),
            ..Hello::default()
        }
    }

    #[test]
    fn a_hello_without_scope_gets_everything_and_with_one_its_own_service_too() {
        let all = Scope::of_hello(&mut hello(None)).unwrap();
        assert!(!all.is_scoped() && all.covers("x", "y"));
        let scoped = Scope::of_hello(&mut hello(Some(vec![name("", "orders")]))).unwrap();
        assert_eq!(scoped.services(), [("default", "orders"), ("shop", "web")]);
        assert!(
            !scoped.covers("shop", "orders"),
            "no namespace is `default`"
        );
        assert!(!scoped.owes(), "the first snapshot is a full set anyway");
    }

    #[test]
    fn interest_widens_the_scope_and_owes_only_what_is_new() {
        let mut scope = Scope::of_hello(&mut hello(Some(vec![]))).unwrap();
        let ask = |services| EndpointScope { services };
        assert!(!scope.widen(&ask(vec![name("shop", "web")])).unwrap());
        assert!(
            scope
                .widen(&ask(vec![name("shop", "cart"), name("shop", "web")]))
                .unwrap()
        );
        assert_eq!(
            scope.take_owed(),
            Owed::Added(vec![("shop".into(), "cart".into())])
        );
        assert!(!scope.owes());
    }

    #[test]
    fn bad_names_are_refused_whole_and_a_huge_list_means_everything() {
        let mut scope = Scope::of_hello(&mut hello(Some(vec![]))).unwrap();
        for bad in [
            name("", "Orders"),
            name("Shop", "x"),
            name("", ""),
            name("", "a.b"),
        ] {
            let list = EndpointScope {
                services: vec![name("", "fine"), bad],
            };
            let e = scope.widen(&list).unwrap_err().to_string();
            assert!(e.starts_with("services[1]"), "{e}");
        }
        assert_eq!(scope.size(), Some(1), "nothing added by a refused list");
        let e = Scope::of_hello(&mut hello(Some(vec![name("", "UPPER")]))).unwrap_err();
        assert!(e.to_string().contains("service"), "{e}");

        let huge = EndpointScope {
            services: (0..MAX_SCOPE + 5)
                .map(|i| name("", &format!("s{i}")))
                .collect(),
        };
        assert!(scope.widen(&huge).unwrap());
        assert!(!scope.is_scoped() && scope.covers("any", "thing"));
        assert_eq!(scope.take_owed(), Owed::Full);
        assert!(!scope.widen(&huge).unwrap(), "unscoped now: nothing to add");
    }
}
