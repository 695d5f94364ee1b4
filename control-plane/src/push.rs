//! Push: the state every sidecar stream serves, and what each sidecar answered.
//!
//! ```text
//!  store.watch() ──► set_rules(rev, yaml) ───────────┐
//!  stream Hello  ──► register()   ─┐ registry changes  ├─► State (one watch::Sender<Arc<State>>)
//!  stream ends   ──► deregister() ─┴─► debounced ──────┘        │  latest value only: a slow
//!                                       (publish_endpoints)     ▼  stream skips what it missed
//!                                         one task per stream (api::discovery) sends the
//!                                         parts that changed (endpoints as a delta),
//!                                         records ACK/NACK here
//! ```
//!
//! Memory per stream is bounded: a stream holds one `Arc<State>` and at most one
//! snapshot waiting to be sent, however fast rules change. Endpoint changes are
//! batched until none came for `ENDPOINT_DEBOUNCE`, and at most `ENDPOINT_DEBOUNCE_MAX`
//! after the first, so 10,000 sidecars reconnecting after a restart cause about one
//! push a second to each stream while they come, not one per 100 ms (which, fanned out
//! to every stream, is what made such a storm take minutes).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graylane_proto::v1::{Endpoint, Hello};
use tokio::sync::{Notify, oneshot, watch};

mod delta;
mod directory;
mod outgoing;
mod registry;
mod scope;
mod stats;

pub use self::delta::{Change, Removed, compose, endpoint_delta};
pub use self::directory::Directory;
pub use self::outgoing::{Outgoing, PART_BYTES};
use self::registry::Registry;
pub use self::registry::{
    LISTED_SCOPE, ListedScope, SidecarEntry, SidecarId, with_identity_defaults,
};
pub use self::scope::{MAX_SCOPE, Scope, ScopeError};
pub use self::stats::PushStats;

/// How long registry changes are collected before they are pushed as one endpoint
/// update (Istio debounces its pushes the same way, 100 ms by default).
pub const ENDPOINT_DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a registry change waits for the changes after it to stop: under a
/// steady stream of them (a restart's reconnects) endpoints still go out this often.
pub const ENDPOINT_DEBOUNCE_MAX: Duration = Duration::from_secs(1);
/// Endpoint changes kept in `State::endpoint_changes`: a stream further behind than
/// this (busy sending a large snapshot for longer) diffs the whole list.
pub const CHANGES_KEPT: usize = 32;
/// The traffic report period (ms) of a rule set without LaneRollouts: the sidecars'
/// default `--traffic-report-interval`.
pub const DEFAULT_TRAFFIC_REPORT_MS: u32 = 5_000;

/// What a snapshot is made of. Versioned as a whole; the parts keep their own
/// generation so a stream can tell which changed since it last sent.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Bumped on every change of rules or endpoints.
    pub version: u64,
    pub revision: u64,
    pub rules: Arc<str>,
    /// Bumped whenever `endpoints` changes.
    pub endpoints_generation: u64,
    /// Sorted by (namespace, service, instance id); instance ids are unique.
    pub endpoints: Arc<Vec<Endpoint>>,
    /// The services of `endpoints` and where each one's run is: what scoped streams
    /// send as the directory and take their full sets from. Changes with them.
    pub directory: Arc<Directory>,
    /// The changes that led to this generation, oldest first: the last one is from
    /// `endpoints_generation - 1`, and so on, at most `CHANGES_KEPT`. Each is diffed
    /// once, here; a stream a few generations behind composes them instead of diffing
    /// the whole list itself (10,000 streams × 10,000 endpoints per debounce window
    /// otherwise, while a restarted control plane's sidecars reconnect).
    pub endpoint_changes: Arc<Vec<Arc<Change>>>,
    /// Whether the rules in force were read from the store yet; until then streams
    /// send nothing.
    pub loaded: bool,
    /// Every CA certificate trusted (PEM); `None` until the mesh CA is loaded. A
    /// stream sends it in its first snapshot and whenever it changes.
    pub trust_bundle: Option<Arc<Vec<String>>>,
    /// How often sidecars report traffic under `rules`, in ms: from its LaneRollouts'
    /// analysis intervals (`RuleSet::traffic_report_interval`), or
    /// `DEFAULT_TRAFFIC_REPORT_MS`. Sent with the rules.
    pub traffic_report_interval_ms: u32,
    /// The lane and subset labels sidecars report traffic under with `rules`.
    pub series_labels: Arc<graylane_routing::SeriesLabels>,
}

impl State {
    /// Whether a sidecar could have reported `series`: a mesh service with an
    /// instance, or one that lost its last instance lately (a report comes seconds
    /// after its requests), under labels these rules make. A credential's invented
    /// services, lanes and subsets would crowd the real series, which rollouts read,
    /// out of the bounded table.
    pub(crate) fn could_report(&self, series: &graylane_proto::v1::TrafficSeries) -> bool {
        let (namespace, service) = (series.namespace.as_str(), series.service.as_str());
        let present = self.directory.run(namespace, service).is_some()
            || self.endpoint_changes.iter().any(|change| {
                change
                    .removed
                    .iter()
                    .any(|r| r.namespace == namespace && r.service == service)
            });
        present
            && self
                .series_labels
                .allows(namespace, service, &series.lane, &series.subset)
    }
}

/// The push hub, shared by the discovery streams, the admin API and the store watcher.
pub struct Hub {
    state: watch::Sender<Arc<State>>,
    registry: Mutex<Registry>,
    /// Bumped whenever a sidecar connects, leaves, ACKs or NACKs: wakes rollout watchers.
    answers: watch::Sender<u64>,
    /// Bumped to end every stream of this replica (`evict_all`).
    evictions: watch::Sender<u64>,
    /// Signalled on every registry change; `publish_endpoints` batches them.
    registry_changed: Notify,
    /// With etcd: every replica's sidecars, by instance id, and whether each is
    /// ours (`crate::cluster`). Empty without etcd.
    cluster: Mutex<BTreeMap<String, (SidecarEntry, bool)>>,
    /// Pushes, NACKs, push-to-ACK latency.
    pub stats: PushStats,
    /// What the sidecars' traffic reports say, for `/api/v1/traffic`.
    pub traffic: crate::traffic::Traffic,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self {
            state: watch::channel(Arc::new(State::default())).0,
            registry: Mutex::new(Registry::default()),
            answers: watch::channel(0).0,
            evictions: watch::channel(0).0,
            registry_changed: Notify::new(),
            cluster: Mutex::new(BTreeMap::new()),
            stats: PushStats::default(),
            traffic: crate::traffic::Traffic::new(u64::try_from(crate::now_ms()).unwrap_or(0)),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every registry mutation is a single map operation, so a poisoned lock still
        // guards consistent data.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state streams serve from; `changed()` fires on every new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.state.subscribe()
    }

    pub fn current(&self) -> Arc<State> {
        self.state.borrow().clone()
    }

    /// Publishes the store's current revision. The same revision again is ignored.
    /// Its only caller reads the store in order, and a store's revisions only grow,
    /// unless the store itself went back: etcd restored from a backup (its numbers
    /// are used again, for other rules), or its current key edited by hand. Then
    /// what the store holds is what sidecars must route by, so a lower number, or the
    /// same number with other rules, is published too (and said at warn).
    pub fn set_rules(&self, revision: u64, rules: String) {
        // Parsing takes a while for a large set: only for news, and not while holding
        // the state every stream reads.
        let news = |state: &State, rules: &str| {
            !state.loaded || revision != state.revision || *state.rules != *rules
        };
        if !news(&self.state.borrow(), &rules) {
            return;
        }
        let (report_ms, series_labels) = read_rules(&rules);
        self.state.send_if_modified(|state| {
            // Until the first rules arrive, any revision (0 too) is news: the version
            // may already have moved for endpoints or the trust bundle.
            if !news(state, &rules) {
                return false;
            }
            if state.loaded && revision <= state.revision {
                tracing::warn!(
                    from = state.revision,
                    to = revision,
                    "the store's revision went back (restored from a backup, or edited \
                     by hand): pushing what it holds now"
                );
            }
            let mut next = State::clone(state);
            next.version += 1;
            next.revision = revision;
            next.rules = rules.into();
            next.traffic_report_interval_ms = report_ms;
            next.series_labels = Arc::new(series_labels);
            next.loaded = true;
            *state = Arc::new(next);
            true
        });
    }

    /// Publishes the registry's endpoints after each batch of changes, until
    /// `shutdown`: waits for a change, collects further changes until none came for
    /// `debounce` (but no longer than `ENDPOINT_DEBOUNCE_MAX` after the first), then
    /// pushes them as one new state. Runs as one task per hub.
    pub async fn publish_endpoints(
        self: Arc<Self>,
        debounce: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = self.registry_changed.notified() => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
            let cap = tokio::time::sleep(ENDPOINT_DEBOUNCE_MAX.max(debounce));
            tokio::pin!(cap);
            loop {
                tokio::select! {
                    () = self.registry_changed.notified() => {} // not quiet yet
                    () = tokio::time::sleep(debounce) => break,
                    () = &mut cap => break,
                    _ = shutdown.wait_for(|down| *down) => return,
                }
            }
            let endpoints = self.endpoints();
            // Diffed outside the state's lock (every stream reads it); only this task
            // changes endpoints, so the generation diffed against is still current.
            let (base, change, directory) = {
                let current = self.current();
                let change = endpoint_delta(&current.endpoints, &endpoints);
                let directory = Directory::of(&endpoints);
                // Kept when equal, so streams tell "unchanged" by pointer.
                let directory = if directory == *current.directory {
                    Arc::clone(&current.directory)
                } else {
                    Arc::new(directory)
                };
                (current.endpoints_generation, Arc::new(change), directory)
            };
            self.state.send_if_modified(|state| {
                if *state.endpoints == endpoints {
                    return false; // e.g. a sidecar that reconnected within the window
                }
                let mut next = State::clone(state);
                next.version += 1;
                next.endpoints_generation += 1;
                next.endpoints = Arc::new(endpoints);
                next.directory = directory;
                let mut changes = Vec::with_capacity(CHANGES_KEPT);
                // A history with a gap would compose into a wrong delta: start again.
                if base == state.endpoints_generation {
                    let kept = state.endpoint_changes.len().min(CHANGES_KEPT - 1);
                    changes.extend(
                        state
                            .endpoint_changes
                            .iter()
                            .rev()
                            .take(kept)
                            .rev()
                            .cloned(),
                    );
                    changes.push(change);
                }
                next.endpoint_changes = Arc::new(changes);
                *state = Arc::new(next);
                true
            });
        }
    }

    /// Every sidecar this replica knows: its own, and with etcd the other replicas'.
    /// One the cluster view says is ours but that is no longer connected here has
    /// left, even if etcd (down, or slow) still lists it.
    fn everyone(&self) -> Vec<SidecarEntry> {
        // Local entries are cloned once, here (the registry keys them by instance id),
        // and moved into the list: at 10,000 sidecars a listing is that many clones.
        let local: Vec<SidecarEntry> = self.registry().entries().cloned().collect();
        let mut list: Vec<SidecarEntry> = {
            let ids: HashSet<&str> = local.iter().map(|e| e.hello.instance_id.as_str()).collect();
            let cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
            cluster
                .iter()
                .filter(|(id, (_, ours))| !ours && !ids.contains(id.as_str()))
                .map(|(_, (e, _))| e.clone())
                .collect()
        };
        list.extend(local);
        list.sort_by(|a, b| {
            (&a.hello.service, &a.hello.instance_id).cmp(&(&b.hello.service, &b.hello.instance_id))
        });
        list
    }

    /// What sidecars route to: every known instance (see `everyone`), in the order
    /// of `delta::key`.
    fn endpoints(&self) -> Vec<Endpoint> {
        let mut list: Vec<Endpoint> = self
            .everyone()
            .into_iter()
            .map(|e| Endpoint {
                service: e.hello.service,
                instance_id: e.hello.instance_id,
                labels: e.hello.labels,
                address: e.hello.address,
                // Registered with the identity defaults; an empty one is `default`
                // all the same, so scopes (which name it) match.
                namespace: if e.hello.namespace.is_empty() {
                    "default".to_string()
                } else {
                    e.hello.namespace
                },
                identity: e.identity,
            })
            .collect();
        list.sort_by(|a, b| delta::key(a).cmp(&delta::key(b)));
        list
    }

    /// This replica's own sidecars, for the etcd registry to write.
    pub fn local_sidecars(&self) -> Vec<SidecarEntry> {
        self.registry().entries().cloned().collect()
    }

    /// The etcd registry's view of every replica's sidecars (`true`: written by this
    /// replica). Their answers count for rollouts like local ones.
    pub fn set_cluster(&self, sidecars: BTreeMap<String, (SidecarEntry, bool)>) {
        *self.cluster.lock().unwrap_or_else(|e| e.into_inner()) = sidecars;
        self.registry_changed.notify_one();
        self.answers.send_modify(|n| *n += 1);
    }

    /// Registers the instance of a new stream. A live stream with the same instance id
    /// and identity is replaced (a sidecar reconnecting before its old stream timed
    /// out): the returned receiver fires when this registration is replaced in turn.
    /// `identity`: the SPIFFE id decided from its credential (`api::identity`). One
    /// with the same instance id and another identity, here or at another replica, is
    /// refused (the error says why): a sidecar credential may replace only its own
    /// instance, not push another service's off the mesh by claiming its id.
    pub fn register(
        &self,
        hello: Hello,
        identity: String,
        now_ms: i64,
    ) -> Result<(SidecarId, oneshot::Receiver<()>), String> {
        let claimed_by = |other: &SidecarEntry| {
            (other.identity != identity).then(|| {
                format!(
                    "instance id {:?} is registered with identity {:?}; a sidecar may replace only an instance of its own identity ({:?}): give each instance its own --instance-id",
                    hello.instance_id, other.identity, identity
                )
            })
        };
        // A sidecar that moved here from another replica (which issued its certificate)
        // keeps the expiry that replica recorded in etcd, for `graylane status`.
        let issued_elsewhere = {
            let cluster = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
            match cluster.get(&hello.instance_id) {
                Some((other, _)) => {
                    if let Some(why) = claimed_by(other) {
                        return Err(why);
                    }
                    (other.cert_not_after > 0).then_some(other.cert_not_after)
                }
                None => None,
            }
        };
        let mut registry = self.registry();
        if let Some(why) = registry.live(&hello.instance_id).and_then(claimed_by) {
            return Err(why);
        }
        let (id, kicked) = registry.insert(hello, identity.clone(), now_ms);
        if let Some(not_after) = issued_elsewhere
            && !registry.issued(&id.instance_id, &identity)
        {
            registry.record_certificate(&id.instance_id, &identity, not_after, now_ms / 1000);
        }
        drop(registry);
        self.registry_changed.notify_one();
        self.answers.send_modify(|n| *n += 1);
        Ok((id, kicked))
    }

    /// Removes the instance when its stream ends; a no-op if a newer stream replaced it.
    pub fn deregister(&self, id: &SidecarId) {
        if self.registry().remove(id) {
            self.registry_changed.notify_one();
            self.answers.send_modify(|n| *n += 1);
        }
    }

    /// Publishes the trust bundle (every CA certificate trusted) to every stream; a
    /// no-op when it is unchanged.
    pub fn set_trust_bundle(&self, bundle: Vec<String>) {
        self.state.send_if_modified(|state| {
            if state.trust_bundle.as_deref() == Some(&bundle) {
                return false;
            }
            let mut next = State::clone(state);
            next.version += 1;
            next.trust_bundle = Some(Arc::new(bundle));
            *state = Arc::new(next);
            true
        });
    }

    /// Records a certificate issued to `instance_id` for `identity`, expiring at
    /// `not_after` (Unix seconds), for `graylane status`.
    pub fn record_certificate(&self, instance_id: &str, identity: &str, not_after: i64) {
        let now_secs = crate::now_ms() / 1000;
        self.registry()
            .record_certificate(instance_id, identity, not_after, now_secs);
        self.answers.send_modify(|n| *n += 1);
    }

    /// Records an ACK of the snapshot `version`, which carried rule `revision`.
    pub fn ack(&self, id: &SidecarId, version: u64, revision: u64) {
        self.registry().update(id, |e| {
            e.acked_version = version;
            e.acked_revision = revision;
            e.nack = None;
        });
        self.answers.send_modify(|n| *n += 1);
    }

    /// Records the endpoint scope of `id`'s stream (when it connects, and each time
    /// interest widens it), for `graylane status`. Not an answer: listings read it when
    /// asked, and the etcd record is rewritten on the ACK of the snapshot every change
    /// of scope causes, so rollout watchers are not woken for it.
    pub fn set_scope(&self, id: &SidecarId, scope: &Scope) {
        let listed = ListedScope::of(scope);
        self.registry().update(id, |e| e.scope = listed);
    }

    /// Records a NACK: the sidecar keeps its previous snapshot.
    pub fn nack(&self, id: &SidecarId, revision: u64, reason: String) {
        self.registry()
            .update(id, |e| e.nack = Some((revision, reason)));
        self.answers.send_modify(|n| *n += 1);
    }

    /// Every connected sidecar (with etcd, through any replica), ordered by service
    /// then instance id.
    pub fn sidecars(&self) -> Vec<SidecarEntry> {
        self.everyone()
    }

    /// Ends every sidecar stream of this replica with UNAVAILABLE, so the sidecars
    /// reconnect, to their next `--control-plane` URL first: when this replica lost
    /// its lease in etcd (partitioned from it), their instances would otherwise leave
    /// the mesh when the lease runs out, while another replica could keep them.
    pub fn evict_all(&self) {
        self.evictions.send_modify(|n| *n += 1);
    }

    /// Changes with every [`evict_all`](Self::evict_all).
    pub fn evictions(&self) -> watch::Receiver<u64> {
        self.evictions.subscribe()
    }

    /// Fires on every connect, disconnect, ACK or NACK.
    pub fn answers(&self) -> watch::Receiver<u64> {
        self.answers.subscribe()
    }

    /// Services with a connected sidecar, by (namespace, service), with their
    /// instance count.
    pub fn services(&self) -> BTreeMap<(String, String), usize> {
        let mut services = BTreeMap::new();
        for entry in self.everyone() {
            *services
                .entry((entry.hello.namespace, entry.hello.service))
                .or_insert(0) += 1;
        }
        services
    }
}

/// What the control plane takes from `rules` for sidecars' traffic reports: the
/// period they should use (what its LaneRollouts need,
/// `RuleSet::traffic_report_interval`; `DEFAULT_TRAFFIC_REPORT_MS` without one), and
/// the labels their series can carry.
fn read_rules(rules: &str) -> (u32, graylane_routing::SeriesLabels) {
    match graylane_routing::RuleSet::from_yaml(crate::control::STORED, rules) {
        Ok(set) => {
            let period = set
                .traffic_report_interval()
                .map_or(DEFAULT_TRAFFIC_REPORT_MS, |d| {
                    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
                });
            (period, set.series_labels())
        }
        // Stored rules were validated when committed; sidecars will NACK these too.
        Err(errors) => {
            tracing::warn!(
                errors = errors.len(),
                "stored rules do not parse; default traffic report period"
            );
            (
                DEFAULT_TRAFFIC_REPORT_MS,
                graylane_routing::SeriesLabels::default(),
            )
        }
    }
}

#[cfg(test)]
mod tests;
