//! Turning a received snapshot (or the cache) into the routes in force, off the serving
//! threads.
//!
//! Why not inline: compiling a large rule set takes tens to hundreds of milliseconds,
//! and the cache write waits for one fsync (an endpoint change) or more. On a
//! `--concurrency 1` sidecar the runtime has one thread, so inline work stalled every
//! request being proxied (bench
//! `apply-stall` in `bench/README.md`). Both run on tokio's blocking pool; the session
//! awaits the answer before it reads the next snapshot, so an ACK still means "routing
//! by it, and cached", and snapshots are applied one at a time, in order.
//!
//! What is routed by (and cached) is the control plane's view plus the instances kept
//! stale through a reconnect (see `stale`); when a grace ends, `refresh` rebuilds the
//! routes without them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Nack, SidecarMessage, Snapshot};
use graylane_routing::{RoutingTable, RuleSet};
use tokio::time::Instant;

use super::DiscoveryStatus;
use super::cache;
use super::received::{Received, same_text};
use super::stale::Held;
use crate::identity::Identity;
use crate::routes::{Origin, Routes, Shared, Unheld};

/// Compiles, publishes and caches; shared with the blocking tasks that do it.
pub(super) struct Applier {
    pub(super) routes: Shared,
    counters: Arc<DiscoveryStatus>,
    cache: Option<cache::Cache>,
    /// Takes the trust bundle a snapshot carries.
    pub(super) identity: Arc<Identity>,
    /// `--endpoint-grace`: how long a reconnect keeps the instances its first full
    /// endpoint set lacks.
    grace: Duration,
    /// Numbers snapshots in the order they were received.
    received: AtomicU64,
    /// The number of the newest snapshot published. Held while publishing and writing
    /// the cache, so an older snapshot's routes or file never land after a newer one's.
    /// (Sessions apply one snapshot at a time; this only matters if a session is
    /// dropped mid-apply, at shutdown, and its blocking task finishes late.)
    newest: Mutex<u64>,
    /// The rules text parsed last and its rule set. Most snapshots change endpoints
    /// only: their rules are parsed once, not again with every instance that comes or
    /// goes anywhere in the mesh (~140 ms of CPU for a 3,000-document set, on every
    /// sidecar).
    parsed: Mutex<Option<(Arc<str>, Arc<RuleSet>)>>,
}

impl Applier {
    pub(super) fn new(
        routes: Shared,
        counters: Arc<DiscoveryStatus>,
        cache_dir: Option<PathBuf>,
        identity: Arc<Identity>,
        grace: Duration,
    ) -> Self {
        Self {
            routes,
            counters,
            cache: cache_dir.map(cache::Cache::new),
            identity,
            grace,
            received: AtomicU64::new(0),
            newest: Mutex::new(0),
            parsed: Mutex::new(None),
        }
    }

    /// Reads `snapshot` against `previous` and applies the result: routes swapped in
    /// and cached, or kept as they were on a bad snapshot. `reconnect`: this stream
    /// followed another and has not sent a full endpoint set yet (see
    /// [`Held::after`]). Returns the new held state (also after a NACK: the next delta
    /// is relative to it) and the ACK or NACK to send. Errs only if the blocking task
    /// could not run (runtime shutting down).
    pub(super) async fn apply(
        self: &Arc<Self>,
        previous: Held,
        snapshot: Snapshot,
        reconnect: bool,
    ) -> Result<(Held, SidecarMessage), String> {
        let number = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // Apart from the rules: a CA rotation must reach the verifiers even when
            // the rules of the same snapshot are refused. Parsing the bundle and
            // rebuilding the TLS configs is CPU work too, hence here.
            if let Some(bundle) = &snapshot.trust_bundle {
                this.identity.set_trust_bundle(&bundle.certificates_pem);
            }
            let reconnect = reconnect && snapshot.endpoints.is_some();
            let next = previous.after(&snapshot, reconnect, this.grace, Instant::now());
            if reconnect {
                tracing::info!(
                    kept = next.stale_count(),
                    grace = ?this.grace,
                    "reconnected: instances the control plane does not list (yet) kept as stale"
                );
            }
            let answer = this.apply_blocking(number, &next, snapshot.version);
            (next, answer)
        })
        .await
        .map_err(|e| format!("applying the snapshot: {e}"))
    }

    fn apply_blocking(&self, number: u64, held: &Held, version: u64) -> SidecarMessage {
        // Once: with stale instances kept, it is a copy of the whole state.
        let routed = held.routed();
        let message = match self.compile(&routed, version, Origin::ControlPlane) {
            Ok(routes) => {
                if self.publish(number, routes, held, &routed) {
                    self.counters.applied.fetch_add(1, Ordering::Relaxed);
                    Message::Ack(Ack { version })
                } else {
                    Message::Nack(Nack {
                        version,
                        reason: "superseded by a newer snapshot".into(),
                    })
                }
            }
            Err(reason) => {
                tracing::warn!(version, %reason, "rejected snapshot; keeping the previous one");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Message::Nack(Nack { version, reason })
            }
        };
        SidecarMessage {
            message: Some(message),
        }
    }

    /// Swaps in `routes` built from `routed` (`held` with its stale instances,
    /// snapshot `number`) and caches it, unless a newer snapshot was published
    /// already; whether it did.
    fn publish(&self, number: u64, routes: Routes, held: &Held, routed: &Received) -> bool {
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        if number < *newest {
            return false;
        }
        *newest = number;
        tracing::info!(
            revision = routes.revision,
            version = routes.version,
            stale = held.stale_count(),
            "routing by new snapshot"
        );
        // Freeing a large rule set and table takes milliseconds too: hold the old
        // routes until after the cache write, so the requests that still use them are
        // done by then and the free happens here.
        let previous = self.routes.load();
        self.routes.publish(routes);
        self.counters.set_stale(held.stale_by_service());
        // With the stale instances: a sidecar restarted while the control plane is
        // still down starts from what it routed by.
        if let Some(cache) = &self.cache
            && let Err(e) = cache.write(routed, &held.change)
        {
            tracing::warn!(error = %e, "cannot write the snapshot cache");
        }
        drop(previous);
        true
    }

    /// Drops the stale instances whose grace ended and, if any did, rebuilds the
    /// routes without them (the version in force stays: nothing new was received).
    /// A rule set that was NACKed is still what `held` has: then the routes stay as
    /// they are until the control plane sends one that compiles. Errs only if the
    /// blocking task could not run (runtime shutting down).
    pub(super) async fn refresh(self: &Arc<Self>, mut held: Held) -> Result<Held, String> {
        let number = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if !held.expire(Instant::now()) {
                return held;
            }
            let version = this.routes.load().map_or(0, |r| r.version);
            let routed = held.routed();
            match this.compile(&routed, version, Origin::ControlPlane) {
                Ok(routes) => {
                    tracing::info!(
                        left = held.stale_count(),
                        "endpoint grace over: stale instances dropped"
                    );
                    this.publish(number, routes, &held, &routed);
                }
                Err(reason) => {
                    tracing::warn!(%reason, "endpoint grace over, but the rules held do not compile: routes kept");
                }
            }
            held
        })
        .await
        .map_err(|e| format!("dropping stale endpoints: {e}"))
    }

    /// Routes from the cache, when there is one and no snapshot arrived meanwhile. A
    /// cache that is unreadable, fails its integrity check or does not compile is
    /// ignored, counted and logged with the reason. Callers try it once per process:
    /// the file only changes when this process writes it, after routes exist.
    pub(super) async fn load_cache(self: &Arc<Self>) {
        if self.cache.is_none() {
            return;
        }
        let this = Arc::clone(self);
        // A join error means the runtime is shutting down: nothing left to route.
        let _ = tokio::task::spawn_blocking(move || this.load_cache_blocking()).await;
    }

    fn load_cache_blocking(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        let routes = match cache.read() {
            Ok(None) => return,
            Ok(Some(cached)) => self
                .compile(&cached, 0, Origin::Cache)
                .map_err(|e| format!("its rules: {e}")),
            Err(e) => Err(e.to_string()),
        };
        match routes {
            Ok(routes) => {
                // The lock orders this against a snapshot being published; one that
                // arrived first wins.
                let _newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
                if self.routes.load().is_none() {
                    tracing::warn!(
                        revision = routes.revision,
                        "control plane unreachable: routing by the cached snapshot"
                    );
                    self.routes.publish(routes);
                }
            }
            Err(reason) => {
                self.counters.cache_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(dir = %cache.dir().display(), %reason, "ignoring the snapshot cache");
            }
        }
    }

    /// Validates and compiles a received state with the routing crate. Takes long for a
    /// large rule set: call it off the runtime threads.
    fn compile(&self, received: &Received, version: u64, source: Origin) -> Result<Routes, String> {
        let rules = self.rules_of(&received.rules)?;
        let previous = self.routes.load();
        Ok(build_routes(
            rules,
            previous.as_deref(),
            received,
            version,
            source,
        ))
    }

    /// The rule set of `text`: the last one parsed if the text is the same (shared, or
    /// equal after a reconnect or a cache load), else parsed and kept for next time.
    /// A text that does not parse is not kept: it is parsed again, and refused again.
    fn rules_of(&self, text: &Arc<str>) -> Result<Arc<RuleSet>, String> {
        let mut parsed = self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((last, rules)) = &*parsed
            && same_text(last, text)
        {
            return Ok(Arc::clone(rules));
        }
        let rules = RuleSet::from_yaml("(snapshot)", text).map_err(|errors| {
            let lines: Vec<String> = errors.iter().take(10).map(ToString::to_string).collect();
            lines.join("; ")
        })?;
        let rules = Arc::new(rules);
        *parsed = Some((Arc::clone(text), Arc::clone(&rules)));
        Ok(rules)
    }
}

/// Builds the routes of a received state under `rules` (its rules text, parsed). The
/// table shares what it can with the `previous` routes' when the rule set is the same
/// (an endpoint change): a concurrent build from older routes only shares less.
fn build_routes(
    rules: Arc<RuleSet>,
    previous: Option<&Routes>,
    received: &Received,
    version: u64,
    source: Origin,
) -> Routes {
    let instances = received.instances();
    let addresses = instances.iter().map(|i| i.address.clone()).collect();
    let table = match previous {
        Some(previous) if Arc::ptr_eq(&previous.rules, &rules) => {
            previous.table.with_instances(&instances)
        }
        _ => RoutingTable::build(&rules, instances.into_iter().cloned().collect()),
    };
    let directory = unheld(received, &table);
    Routes {
        version,
        revision: received.revision,
        rules,
        table,
        addresses,
        source,
        directory,
    }
}

/// Scoped endpoints: the directory's services with no instance in `table` (the
/// stale ones count: they are routed to). `None` when not scoped.
fn unheld(received: &Received, table: &RoutingTable) -> Option<Unheld> {
    let directory = received.directory.as_ref()?;
    let held: BTreeSet<(&str, &str)> = table.services().map(|(ns, svc, _)| (ns, svc)).collect();
    let mut unheld = Unheld {
        directory_len: directory.len(),
        ..Unheld::default()
    };
    for (ns, svc) in directory {
        if !held.contains(&(ns.as_str(), svc.as_str())) {
            unheld
                .by_namespace
                .entry(ns.clone())
                .or_default()
                .insert(svc.clone());
        }
    }
    Some(unheld)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;

    fn applier() -> Applier {
        let identity = Identity::new(identity::Config::default(), Arc::default());
        Applier::new(
            Shared::default(),
            Arc::default(),
            None,
            Arc::new(identity),
            Duration::ZERO,
        )
    }

    const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\nspec: {tag: gray, selector: {version: v2}}\n";

    fn received(rules: &Arc<str>, instances: usize) -> Received {
        let mut r = Received {
            revision: 1,
            rules: Arc::clone(rules),
            ..Received::default()
        };
        for i in 0..instances {
            let e = graylane_proto::v1::Endpoint {
                service: "orders".into(),
                instance_id: format!("orders-{i}"),
                address: format!("10.0.0.{i}:8080"),
                ..Default::default()
            };
            r.endpoints.insert(
                e.instance_id.clone(),
                crate::discovery::received::instance(&e),
            );
        }
        r
    }

    #[test]
    fn an_endpoint_change_reuses_the_parsed_rules_and_a_new_text_is_parsed() {
        let applier = applier();
        let text: Arc<str> = Arc::from(LANE);
        let compile = |r: &Received| applier.compile(r, 1, Origin::ControlPlane);
        let first = compile(&received(&text, 1)).unwrap();
        let second = compile(&received(&text, 2)).unwrap();
        assert!(Arc::ptr_eq(&first.rules, &second.rules), "not parsed again");
        assert_eq!(second.table.instances("default", "orders").len(), 2);
        // The same text from elsewhere (a reconnect, the cache): equal, reused.
        let copy: Arc<str> = Arc::from(LANE.to_string().as_str());
        let third = compile(&received(&copy, 3)).unwrap();
        assert!(Arc::ptr_eq(&first.rules, &third.rules));
        // A text that does not parse is refused each time and replaces nothing.
        let bad: Arc<str> = Arc::from("kind: [");
        assert!(compile(&received(&bad, 3)).is_err());
        assert!(compile(&received(&bad, 4)).is_err());
        let fourth = compile(&received(&text, 4)).unwrap();
        assert!(Arc::ptr_eq(&first.rules, &fourth.rules));
        // New rules: parsed.
        let other: Arc<str> = Arc::from(LANE.replace("tag: gray", "tag: blue").as_str());
        let fifth = compile(&received(&other, 4)).unwrap();
        assert!(!Arc::ptr_eq(&first.rules, &fifth.rules));
        assert!(fifth.table.lane_of(&"blue".parse().unwrap()).is_some());
    }
}
