//! The compiled routing table: the form the sidecar routes with. Everything that does
//! not depend on the request is worked out per service when the table is built, so a
//! decision is a few lookups and, for weights, one hash — no allocation on success.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::Tag;
use crate::model::{Release, RoutePolicy};

use self::scoped::Scoped;

pub use self::explain::{Explained, Explanation};
pub use self::policy::{CompiledPolicy, Injected, RetryPolicy};

mod build;
mod explain;
mod inbound;
mod matching;
pub(crate) mod peer;
mod policy;
mod route;
mod scoped;
#[cfg(test)]
mod test_support;

/// One ready instance of a service, as discovery reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// The service it belongs to.
    pub service: String,
    /// Unique id (e.g. `orders-7`).
    pub id: String,
    /// Where its inbound listener is reached (`host:port`).
    pub address: String,
    /// Its labels (`version=v2`).
    pub labels: BTreeMap<String, String>,
    /// Its namespace (`default` when the control plane sent none).
    pub namespace: String,
    /// The identity the control plane decided for it (`spiffe://...`); empty when
    /// unknown. A caller over mTLS requires exactly this one in the peer certificate.
    pub identity: String,
}

/// What matching needs from a request; the sidecar implements it over its request type.
pub trait RequestView {
    /// First value of a header; `name` is lowercase.
    fn header(&self, name: &str) -> Option<&str>;
    /// Value of a cookie.
    fn cookie(&self, name: &str) -> Option<&str>;
    /// The query string as the request carries it (after `?`, without the fragment),
    /// still encoded. Matching decodes it with [`query_pairs`](crate::query_pairs),
    /// the one decoder, and then never asks [`query`](Self::query): a view over a real
    /// request answers this. `None` (the default) when the view has no raw query.
    fn query_string(&self) -> Option<&str> {
        None
    }
    /// First value of a query parameter, already decoded: for views that hold
    /// parameters as text (`graylane explain --query`). Asked only when
    /// [`query_string`](Self::query_string) is `None`; `None` by default.
    fn query(&self, _name: &str) -> Option<&str> {
        None
    }
    /// The path, without the query string.
    fn path(&self) -> &str;
    /// The method, e.g. `GET`.
    fn method(&self) -> &str;
    /// The peer address, when known.
    fn source_ip(&self) -> Option<IpAddr>;
}

/// The compiled rules and instances. Immutable once built; `Send + Sync`, meant to be
/// shared behind an `Arc` and replaced whole when rules or instances change
/// ([`with_instances`](Self::with_instances) shares the unchanged parts).
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// What the rules alone decide: the same for every table of one rule set.
    compiled: Arc<build::Compiled>,
    /// Services with at least one instance, by (namespace, service).
    services: Scoped<Arc<build::ServiceTable>>,
}

/// The instances a request may go to (rules.md routing steps 1-3). The sidecar
/// load-balances among them (step 4) and sends `Gray-Publish` when tagged (step 5).
#[derive(Clone, Copy, Debug)]
pub struct Route<'a> {
    /// Never empty.
    pub candidates: Candidates<'a>,
    /// The subset chosen, by weights or by a lane override; `None` when no RoutePolicy
    /// subset applies (`-` in `Graylane-Route`).
    pub subset: Option<&'a str>,
    /// The lane of the request's tag; `None` when untagged or when no lane declares
    /// the tag (then routed as untagged, the tag still propagates).
    pub lane: Option<&'a str>,
    /// Set when the lane of the tag could not serve and its fallback list (or release
    /// `prod`) sent the request elsewhere.
    pub fallback: Option<FallbackInfo<'a>>,
    /// Step 3's last resort happened: neither the weights nor the base instances had a
    /// candidate, so any candidate serves (count it in `graylane_base_fallback_total`).
    pub base_fallback: bool,
}

/// The candidate instances of a [`Route`]: a view into the table, no copy.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    all: &'a [Instance],
    idx: &'a [usize],
}

impl<'a> Candidates<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// Whether there are none (never, in a `Route`).
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// The `i`th candidate, `i < len()`.
    pub fn get(&self, i: usize) -> Option<&'a Instance> {
        self.idx.get(i).and_then(|&j| self.all.get(j))
    }

    /// Every candidate, in instance id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a Instance> + 'a {
        let all = self.all;
        // Indices are built from `all` itself, so indexing cannot go out of range.
        self.idx.iter().map(move |&j| &all[j])
    }
}

impl fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.idx
                    .iter()
                    .filter_map(|&j| self.all.get(j))
                    .map(|i| &i.id),
            )
            .finish()
    }
}

/// Why and where a tagged request left its lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FallbackInfo<'a> {
    /// The lane of the request's tag.
    pub from: &'a str,
    /// Where it went.
    pub to: FallbackTarget<'a>,
    /// `true` when the service's release state is `prod` (tagged requests go to base);
    /// `false` when the lane had no ready instance of the service.
    pub release_prod: bool,
}

/// Where a fallback went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackTarget<'a> {
    /// Another lane's instances.
    Lane(&'a str),
    /// The base instances (routing step 3).
    Base,
}

impl fmt::Display for FallbackInfo<'_> {
    /// `no ready instance in lane gray, served by lane blue` /
    /// `release prod, served by base`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.release_prod {
            f.write_str("release prod")?;
        } else {
            write!(f, "no ready instance in lane {}", self.from)?;
        }
        match self.to {
            FallbackTarget::Lane(l) => write!(f, ", served by lane {l}"),
            FallbackTarget::Base => f.write_str(", served by base"),
        }
    }
}

/// Why a request cannot be routed. `Display` is the response body the sidecar sends;
/// `service` names a service outside `default` as `orders.shop`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No instance of the service is known at all (the sidecar answers 502).
    #[error("unknown service {service}: no instance is registered")]
    UnknownService {
        /// The service asked for.
        service: String,
    },
    /// Instances exist but none may serve this request (the sidecar answers 503).
    #[error("no ready instance of service {service}{}", lane.as_ref().map(|l| format!(" in lane {l}")).unwrap_or_default())]
    NoInstance {
        /// The service asked for.
        service: String,
        /// The lane of the request's tag, if any.
        lane: Option<String>,
    },
}

/// The tag a request carries into the app, decided by the inbound sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundTag {
    /// The tag to forward, if any.
    pub tag: Option<Tag>,
    /// Where it came from.
    pub source: InboundSource,
    /// Index of the TagPolicy rule that matched (`source == Rule`).
    pub rule: Option<usize>,
    /// A tag came in and the TagPolicy's `incoming` setting removed it.
    pub stripped: bool,
}

/// Where an inbound tag came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundSource {
    /// The caller's tag, kept (no TagPolicy for the service, or `keep`/`keep-known`).
    Incoming,
    /// A TagPolicy rule.
    Rule,
    /// No tag.
    None,
}

/// The gate API answer for an instance (sidecar.md "Gate API").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate<'a> {
    /// The first lane (by name) the instance belongs to; `None` = a base instance.
    pub lane: Option<&'a str>,
    /// The service's release state.
    pub release: Release,
    /// Whether the instance should run background work: `all` everyone, `gray` lane
    /// instances only, `prod` base instances only.
    pub active: bool,
}

impl RoutingTable {
    /// The instances of `service` in `namespace` as given to `build` (excluded ones
    /// too), in id order; empty for an unknown service.
    pub fn instances(&self, namespace: &str, service: &str) -> &[Instance] {
        self.services
            .get(namespace, service)
            .map_or(&[], |s| s.instances.as_slice())
    }

    /// Every service with an instance: (namespace, service, [`instances`](Self::instances)),
    /// in no particular order.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str, &[Instance])> {
        self.services
            .iter()
            .map(|(namespace, service, s)| (namespace, service, s.instances.as_slice()))
    }

    /// Whether `namespace` is one of the mesh's, as far as this table knows: a service
    /// of it has an instance, or a RoutePolicy or TagPolicy names one. `orders.shop`
    /// then names the mesh's `orders` (a 502 "unknown service" while it has no
    /// instance), never the Internet host `orders.shop` (`.shop` is a public TLD).
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.services.has_namespace(namespace)
            || self.compiled.policies.has_namespace(namespace)
            || self.compiled.tag_policies.has_namespace(namespace)
    }

    /// The compiled traffic policy of `service` in `namespace` — timeout, retries,
    /// fault and mirror — for the sidecar to look up once per request and use for all
    /// four. A service without a RoutePolicy gets a shared default (see
    /// [`CompiledPolicy`]).
    pub fn policy(&self, namespace: &str, service: &str) -> &CompiledPolicy {
        match self.services.get(namespace, service) {
            Some(st) => st.traffic.as_ref(),
            None => self.compiled.idle_traffic.get(namespace, service),
        }
        .unwrap_or(&policy::DEFAULT_POLICY)
    }

    /// The RoutePolicy of `service` in `namespace`, as written (for explaining it; the
    /// sidecar routes by the compiled parts, e.g. [`policy`](Self::policy)).
    pub fn route_policy(&self, namespace: &str, service: &str) -> Option<&RoutePolicy> {
        self.compiled
            .policies
            .get(namespace, service)
            .map(|p| &p.policy)
    }

    /// The release state of `service` in `namespace`; `all` without a RoutePolicy.
    pub fn release_of(&self, namespace: &str, service: &str) -> Release {
        self.compiled
            .policies
            .get(namespace, service)
            .map_or(Release::All, |p| p.policy.spec.release)
    }

    /// Whether some Lane declares `tag`.
    pub fn is_lane_tag(&self, tag: &Tag) -> bool {
        self.compiled.lane_by_tag.contains_key(tag.as_str())
    }

    /// The name of the Lane that declares `tag`.
    pub fn lane_of(&self, tag: &Tag) -> Option<&str> {
        self.compiled
            .lane_by_tag
            .get(tag.as_str())
            .map(|&l| self.compiled.lanes[l].name.as_str())
    }

    /// Every lane an instance of `service` in `namespace` with these labels is in, in
    /// name order: those whose selector for this service (the RoutePolicy's lane
    /// override subset, else the Lane's selector) it matches. What `graylane status`
    /// and the lanes view show, so they say where tagged traffic goes.
    pub fn lanes_of(
        &self,
        namespace: &str,
        service: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&str> {
        let policy = self.compiled.policies.get(namespace, service);
        (0..self.compiled.lanes.len())
            .filter(|&l| self.compiled.selector(policy, l).matches(labels))
            .map(|l| self.compiled.lanes[l].name.as_str())
            .collect()
    }

    /// The gate of an instance of `service` in `namespace` with these labels: its lane
    /// is the first lane, in name order, whose selector for this service (the
    /// RoutePolicy's lane override subset, else the Lane's selector) it matches.
    pub fn gate(
        &self,
        namespace: &str,
        service: &str,
        labels: &BTreeMap<String, String>,
    ) -> Gate<'_> {
        let policy = self.compiled.policies.get(namespace, service);
        let lane = (0..self.compiled.lanes.len())
            .find(|&l| self.compiled.selector(policy, l).matches(labels))
            .map(|l| self.compiled.lanes[l].name.as_str());
        let release = policy.map_or(Release::All, |p| p.policy.spec.release);
        let active = match release {
            Release::All => true,
            Release::Gray => lane.is_some(),
            Release::Prod => lane.is_none(),
        };
        Gate {
            lane,
            release,
            active,
        }
    }
}

#[cfg(test)]
mod tests;
