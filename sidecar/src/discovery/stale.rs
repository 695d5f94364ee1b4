//! What this sidecar holds across streams: what the control plane sent, and the
//! instances kept *stale* through a reconnect.
//!
//! Why: a control plane restarted on its file store knows only the instances whose
//! sidecars have reconnected so far, and the first snapshot of each new stream is a
//! full endpoint set, which replaces what a sidecar had. Without a grace, every
//! service whose sidecars are not back yet vanishes for a moment (`502 unknown
//! service`). A replica with a stale view after a failover does the same. So on a
//! reconnect, the instances that the new stream's first full set lacks are kept, and
//! routed to, for `--endpoint-grace`:
//!
//! ```text
//!  reconnect's first full set lacks X ─► X stale until now + grace
//!     X in a later set, or upserted    ─► X normal again (the control plane knows it)
//!     X removed by a later delta       ─► X gone
//!     the grace ends (a timer)         ─► X gone, routes rebuilt without it
//! ```
//!
//! Routing to a stale instance is safe: one that died during the outage refuses the
//! connection, and `Outbound::send` sends a request whose connection never came up
//! to another instance (an idempotent one by its retry policy, whose default retries a
//! connect failure once; any other while its body is unsent), and the balancer ejects
//! the dead address. One that is alive keeps serving while its own sidecar reconnects.
//!
//! The first stream of a sidecar's life replaces as before, even over routes read from
//! `--cache-dir`: that file may be days old, from a previous life of this process, and
//! its addresses may belong to other pods by now; the endpoints of a reconnect were
//! current seconds ago.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use graylane_proto::v1::Snapshot;
use tokio::time::Instant;

use graylane_routing::Instance;

use super::received::Received;

/// The control plane's view and the stale instances; owned by the discovery loop and
/// moved through the blocking task that applies each snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    /// What the control plane sent: deltas are read against it.
    pub(crate) received: Received,
    /// Not in `received` (an instance the control plane announces is normal again).
    stale: BTreeMap<String, Kept>,
    /// Whether a stream of this process delivered a snapshot: the next stream is a
    /// reconnect.
    pub(crate) streamed: bool,
    /// The step that made this state, for the cache to append it instead of writing
    /// the whole state again.
    pub(crate) change: Change,
}

/// Which instances one step changed (a snapshot read, stale instances dropped).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Change {
    /// The state it was made from and the one it made: numbered per process, so the
    /// cache appends a step only onto the state its files hold.
    pub(crate) from: u64,
    pub(crate) to: u64,
    /// The ids whose routed instance may differ (upserted, removed, no longer stale);
    /// `None`: possibly every one (a full endpoint set).
    pub(crate) ids: Option<BTreeSet<String>>,
}

/// A stale instance: as last announced, and when its grace ends.
#[derive(Clone, Debug)]
struct Kept {
    endpoint: Instance,
    until: Instant,
}

impl Held {
    /// The state after `snapshot`. `reconnect` says it is the first full endpoint set of
    /// a stream opened after another one delivered snapshots: instances held before
    /// and lacking from it are kept stale until `now + grace` (those stale already
    /// keep their earlier end, so reconnecting again and again cannot keep a dead
    /// instance forever). A zero grace keeps nothing.
    pub(crate) fn after(
        mut self,
        snapshot: &Snapshot,
        reconnect: bool,
        grace: Duration,
        now: Instant,
    ) -> Held {
        // In place: a delta costs what it changes, not a copy of every instance held.
        let mut ids = snapshot.endpoints.is_none().then(BTreeSet::new);
        let replaced = (reconnect && snapshot.endpoints.is_some() && !grace.is_zero())
            .then(|| std::mem::take(&mut self.received.endpoints));
        self.received.apply(snapshot);
        for (id, endpoint) in replaced.into_iter().flatten() {
            if !self.received.endpoints.contains_key(&id) {
                let kept = Kept {
                    endpoint,
                    until: now + grace,
                };
                self.stale.entry(id).or_insert(kept);
            }
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                self.stale.remove(id);
            }
            if let Some(ids) = &mut ids {
                ids.extend(delta.removed.iter().cloned());
                ids.extend(delta.upserted.iter().map(|e| e.instance_id.clone()));
            }
        }
        // Announced again (in a set or upserted): a normal endpoint from now on.
        let received = &self.received;
        self.stale.retain(|id, kept| {
            let keep = !received.endpoints.contains_key(id) && kept.until > now;
            if let (false, Some(ids)) = (keep, &mut ids) {
                ids.insert(id.clone());
            }
            keep
        });
        self.streamed = true;
        self.step(ids);
        self
    }

    /// Numbers the state this step made.
    fn step(&mut self, ids: Option<BTreeSet<String>>) {
        let from = self.change.to;
        self.change = Change {
            from,
            to: from + 1,
            ids,
        };
    }

    /// Drops the instances whose grace ended by `now`; whether any did.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut ids = BTreeSet::new();
        self.stale.retain(|id, kept| {
            let keep = kept.until > now;
            if !keep {
                ids.insert(id.clone());
            }
            keep
        });
        if ids.is_empty() {
            return false;
        }
        self.step(Some(ids));
        true
    }

    /// When the next grace ends; `None` without stale instances.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.stale.values().map(|k| k.until).min()
    }

    /// How many instances are stale.
    pub(crate) fn stale_count(&self) -> usize {
        self.stale.len()
    }

    /// The stale instance ids by service as a host names it (`orders`,
    /// `orders.staging`), for `/config`.
    pub(crate) fn stale_by_service(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, kept) in &self.stale {
            let e = &kept.endpoint;
            by_service
                .entry(graylane_routing::qualified(&e.namespace, &e.service))
                .or_default()
                .push(id.clone());
        }
        by_service
    }

    /// What to route by (and cache): the control plane's view plus the stale
    /// instances. Borrowed when nothing is stale, so the usual case copies nothing.
    pub(crate) fn routed(&self) -> Cow<'_, Received> {
        if self.stale.is_empty() {
            return Cow::Borrowed(&self.received);
        }
        let mut all = self.received.clone();
        for (id, kept) in &self.stale {
            all.endpoints
                .entry(id.clone())
                .or_insert_with(|| kept.endpoint.clone());
        }
        Cow::Owned(all)
    }
}

#[cfg(test)]
mod tests {
    use graylane_proto::v1::{Endpoint, EndpointDelta, EndpointSet};

    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn ep(id: &str, service: &str, address: &str) -> Endpoint {
        Endpoint {
            service: service.into(),
            instance_id: id.into(),
            address: address.into(),
            ..Default::default()
        }
    }

    fn full(version: u64, endpoints: Vec<Endpoint>) -> Snapshot {
        Snapshot {
            version,
            revision: 1,
            rules: Some(String::new()),
            endpoints: Some(EndpointSet { endpoints }),
            ..Default::default()
        }
    }

    fn delta(version: u64, upserted: Vec<Endpoint>, removed: &[&str]) -> Snapshot {
        Snapshot {
            version,
            revision: 1,
            endpoint_changes: Some(EndpointDelta {
                upserted,
                removed: removed.iter().map(|s| (*s).to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    /// The instance ids routed to, and the stale ones.
    fn ids(held: &Held) -> (Vec<String>, Vec<String>) {
        let routed = held.routed().endpoints.keys().cloned().collect();
        (routed, held.stale.keys().cloned().collect())
    }

    /// A first stream that knew `orders-1`, `orders-2` and `web-1`, then a reconnect
    /// to a control plane that knows only `web-1` so far.
    fn reconnected(grace: Duration, now: Instant) -> Held {
        let first = full(
            1,
            vec![
                ep("orders-1", "orders", "10.0.0.1:15006"),
                ep("orders-2", "orders", "10.0.0.2:15006"),
                ep("web-1", "web", "10.0.0.3:15006"),
            ],
        );
        let held = Held::default().after(&first, false, grace, now);
        let partial = full(1, vec![ep("web-1", "web", "10.0.0.3:15006")]);
        held.after(&partial, true, grace, now)
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn a_reconnects_first_full_set_keeps_what_it_lacks_as_stale() {
        let now = Instant::now();
        let held = reconnected(GRACE, now);
        let (routed, stale) = ids(&held);
        assert_eq!(routed, names(&["orders-1", "orders-2", "web-1"]));
        assert_eq!(stale, names(&["orders-1", "orders-2"]));
        assert_eq!(held.stale_count(), 2);
        assert_eq!(held.next_expiry(), Some(now + GRACE));
        assert_eq!(
            held.stale_by_service(),
            BTreeMap::from([("orders".to_string(), names(&["orders-1", "orders-2"]))])
        );
        // Deltas are still read against the control plane's view only.
        assert_eq!(
            held.received.endpoints.keys().collect::<Vec<_>>(),
            ["web-1"]
        );
    }

    #[test]
    fn an_instance_announced_again_is_normal_with_its_new_address() {
        let now = Instant::now();
        let held = reconnected(GRACE, now);
        let back = delta(2, vec![ep("orders-1", "orders", "10.0.0.9:15006")], &[]);
        let held = held.after(&back, false, GRACE, now);
        let (routed, stale) = ids(&held);
        assert_eq!(routed, names(&["orders-1", "orders-2", "web-1"]));
        assert_eq!(stale, names(&["orders-2"]));
        assert_eq!(
            held.routed().endpoints["orders-1"].address,
            "10.0.0.9:15006"
        );
        // Normal now: the grace's end no longer drops it.
        let mut held = held;
        assert!(held.expire(now + GRACE));
        assert_eq!(ids(&held).0, names(&["orders-1", "web-1"]));
        // A later full set of the same stream (sent when smaller than a delta)
        // announces too.
        let set = full(3, vec![ep("web-1", "web", "10.0.0.3:15006")]);
        let held = reconnected(GRACE, now).after(&set, false, GRACE, now);
        assert_eq!(ids(&held).1, names(&["orders-1", "orders-2"]), "kept");
        let set = full(4, vec![ep("orders-2", "orders", "10.0.0.2:15006")]);
        let held = held.after(&set, false, GRACE, now);
        assert_eq!(ids(&held).1, names(&["orders-1"]));
    }

    #[test]
    fn a_later_delta_removing_a_stale_instance_drops_it() {
        let now = Instant::now();
        let held = reconnected(GRACE, now);
        let gone = delta(2, vec![], &["orders-2"]);
        let held = held.after(&gone, false, GRACE, now);
        assert_eq!(
            ids(&held),
            (names(&["orders-1", "web-1"]), names(&["orders-1"]))
        );
    }

    #[test]
    fn the_grace_end_drops_stale_instances() {
        let now = Instant::now();
        let mut held = reconnected(GRACE, now);
        assert!(!held.expire(now + GRACE - Duration::from_millis(1)));
        assert_eq!(held.stale_count(), 2);
        assert!(held.expire(now + GRACE));
        assert_eq!(ids(&held), (names(&["web-1"]), vec![]));
        assert_eq!(held.next_expiry(), None);
        assert!(!held.expire(now + GRACE * 2), "nothing left to drop");
        // A snapshot applied after the end, before the timer fired, drops them too.
        let held = reconnected(GRACE, now).after(&delta(2, vec![], &[]), false, GRACE, now + GRACE);
        assert_eq!(ids(&held).1, Vec::<String>::new());
    }

    #[test]
    fn reconnecting_again_keeps_the_earlier_end_of_the_grace() {
        let now = Instant::now();
        let held = reconnected(GRACE, now);
        // Another restart 5 s later, still without orders: the ends stay where they were.
        let later = now + Duration::from_secs(5);
        let partial = full(1, vec![ep("web-1", "web", "10.0.0.3:15006")]);
        let held = held.after(&partial, true, GRACE, later);
        assert_eq!(held.stale_count(), 2);
        assert_eq!(held.next_expiry(), Some(now + GRACE));
    }

    #[test]
    fn the_first_stream_of_life_replaces_as_before() {
        let now = Instant::now();
        // Whatever routes the cache gave, the first stream starts from nothing held.
        let first = full(1, vec![ep("web-1", "web", "10.0.0.3:15006")]);
        let held = Held::default().after(&first, false, GRACE, now);
        assert!(held.streamed, "the next stream is a reconnect");
        assert_eq!(ids(&held), (names(&["web-1"]), vec![]));
        // And a later full set of the same stream replaces too.
        let first = full(1, vec![ep("orders-1", "orders", "10.0.0.1:15006")]);
        let held = Held::default().after(&first, false, GRACE, now);
        let set = full(2, vec![ep("web-1", "web", "10.0.0.3:15006")]);
        let held = held.after(&set, false, GRACE, now);
        assert_eq!(ids(&held), (names(&["web-1"]), vec![]));
    }

    #[test]
    fn a_zero_grace_replaces_as_before() {
        let now = Instant::now();
        let held = reconnected(Duration::ZERO, now);
        assert_eq!(ids(&held), (names(&["web-1"]), vec![]));
        assert_eq!(held.next_expiry(), None);
    }

    #[test]
    fn only_a_full_set_starts_a_grace() {
        let now = Instant::now();
        let first = full(1, vec![ep("orders-1", "orders", "10.0.0.1:15006")]);
        let held = Held::default().after(&first, false, GRACE, now);
        // A stream whose first snapshot carries rules only: nothing is replaced yet.
        let rules_only = Snapshot {
            version: 1,
            revision: 2,
            rules: Some(String::new()),
            ..Default::default()
        };
        let held = held.after(&rules_only, true, GRACE, now);
        assert_eq!(ids(&held), (names(&["orders-1"]), vec![]));
    }

    #[test]
    fn each_step_names_what_it_changed() {
        let now = Instant::now();
        let set = |ids: &[&str]| Some(ids.iter().map(|s| (*s).to_string()).collect());
        let first = full(1, vec![ep("orders-1", "orders", "10.0.0.1:15006")]);
        let held = Held::default().after(&first, false, GRACE, now);
        assert_eq!(
            held.change,
            Change {
                from: 0,
                to: 1,
                ids: None
            },
            "a full set"
        );
        let moved = delta(2, vec![ep("web-1", "web", "10.0.0.3:15006")], &["orders-1"]);
        let held = held.after(&moved, false, GRACE, now);
        assert_eq!(
            held.change,
            Change {
                from: 1,
                to: 2,
                ids: set(&["orders-1", "web-1"])
            }
        );
        let rules_only = Snapshot {
            version: 3,
            revision: 2,
            ..Default::default()
        };
        let held = held.after(&rules_only, false, GRACE, now);
        assert_eq!(
            held.change,
            Change {
                from: 2,
                to: 3,
                ids: set(&[])
            }
        );
        // Stale instances that leave: by the grace's end, with a snapshot or without.
        let held = reconnected(GRACE, now);
        let later = held
            .clone()
            .after(&delta(3, vec![], &[]), false, GRACE, now + GRACE);
        assert_eq!(later.change.ids, set(&["orders-1", "orders-2"]));
        let mut held = held;
        let to = held.change.to;
        assert!(held.expire(now + GRACE));
        assert_eq!(
            held.change,
            Change {
                from: to,
                to: to + 1,
                ids: set(&["orders-1", "orders-2"])
            }
        );
        assert!(!held.expire(now + GRACE));
        assert_eq!(held.change.to, to + 1, "no step when nothing expired");
    }
}
