//! A map keyed by (namespace, service): `orders` of `shop` and of `staging` are two
//! services. Nested maps, so a lookup from two `&str` allocates nothing (the route
//! path is lookups only). Hashed with foldhash (seeded per process), not SipHash: every
//! key stored is a name the control plane sent. A caller chooses only what it looks
//! up, which costs at most a probe of the keys there; SipHash's four hashes a call
//! were 1.4 % of a calling hop.

use foldhash::HashMap;

/// Values per (namespace, service).
#[derive(Debug)]
pub(super) struct Scoped<T> {
    by_namespace: HashMap<String, HashMap<String, T>>,
}

impl<T> Default for Scoped<T> {
    fn default() -> Self {
        Self {
            by_namespace: HashMap::default(),
        }
    }
}

impl<T> Scoped<T> {
    pub(super) fn get(&self, namespace: &str, service: &str) -> Option<&T> {
        self.by_namespace.get(namespace)?.get(service)
    }

    /// The value of (namespace, service), inserted by `make` when there is none yet
    /// (so the first of several competitors wins).
    pub(super) fn get_or_insert_with(
        &mut self,
        namespace: &str,
        service: &str,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        self.by_namespace
            .entry(namespace.to_owned())
            .or_default()
            .entry(service.to_owned())
            .or_insert_with(make)
    }

    /// Whether any service of `namespace` has a value.
    pub(super) fn has_namespace(&self, namespace: &str) -> bool {
        self.by_namespace
            .get(namespace)
            .is_some_and(|services| !services.is_empty())
    }

    /// Every (namespace, service, value), in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str, &T)> {
        self.by_namespace.iter().flat_map(|(namespace, services)| {
            services
                .iter()
                .map(move |(service, v)| (namespace.as_str(), service.as_str(), v))
        })
    }

    pub(super) fn insert(&mut self, namespace: &str, service: &str, value: T) {
        self.by_namespace
            .entry(namespace.to_owned())
            .or_default()
            .insert(service.to_owned(), value);
    }
}
