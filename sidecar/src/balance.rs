//! Choosing one instance among the candidates the routing table returns (rules.md
//! "Routing, step by step", step 4): least in-flight of two random choices (P2C),
//! skipping instances that just failed, optionally avoiding the one a retry must not
//! hit again.
//!
//! Owns the per-address load and ejection state. It is keyed by address, not held in
//! the routing table, so it survives table swaps; [`Balancer::retain`] prunes addresses
//! that are gone. Does not own: which instances are candidates (graylane-routing),
//! retry policy, or health checking — an instance is ejected only when the caller says
//! it failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use graylane_routing::{Candidates, Instance};

/// Load balancer state shared by every request of a sidecar. `Send + Sync`; share it
/// behind an `Arc`. Locks are only held inside its (synchronous) methods.
#[derive(Debug)]
pub struct Balancer {
    eject_for: Duration,
    /// Ejection deadlines are stored as milliseconds since this instant, so they fit
    /// an atomic.
    epoch: Instant,
    /// Read-locked on every pick; write-locked only to add an address or to prune.
    stats: RwLock<HashMap<String, Arc<Stats>>>,
}

/// Counts one request in flight to an instance until dropped.
///
/// Holds the instance's counter itself, so dropping it after the address was pruned
/// by [`Balancer::retain`] is harmless.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    in_flight: AtomicUsize,
    /// Skipped while "now" in ms since the epoch is below this; 0 = never failed.
    ejected_until: AtomicU64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// `eject_for`: how long an instance that failed is skipped. `epoch` is any instant
    /// not after the `now`s passed later (earlier ones count as the epoch itself).
    pub fn new(eject_for: Duration, epoch: Instant) -> Self {
        Self {
            eject_for,
            epoch,
            stats: RwLock::new(HashMap::new()),
        }
    }

    /// Picks one candidate: two distinct random candidates (among the non-ejected
    /// ones, and not `avoid` (an address)), the one with fewer requests in flight;
    /// ties → the first drawn. Returns the instance and its in-flight guard, which the
    /// caller holds until the response (or the error) is complete.
    ///
    /// When every candidate other than `avoid` is ejected, picks among them anyway:
    /// ejection degrades the choice, it never fails a request. A lone eligible
    /// candidate is returned without drawing. `None` only when `candidates` is empty
    /// or `avoid` was the only one — whatever other requests eject meanwhile.
    pub fn pick<'a>(
        &self,
        candidates: Candidates<'a>,
        avoid: Option<&str>,
        rng: &mut fastrand::Rng,
        now: Instant,
    ) -> Option<(&'a Instance, InFlight)> {
        let now_ms = self.ms_at(now);
        let (chosen, stats) = {
            let map = self.read();
            let state = |i: &Instance| map.get(&i.address);
            let allowed = |i: &Instance| avoid != Some(i.address.as_str());
            let healthy = |i: &Instance| {
                allowed(i)
                    && state(i).is_none_or(|s| s.ejected_until.load(Ordering::Relaxed) <= now_ms)
            };
            // One pass, each candidate's ejection read once: other requests eject
            // instances concurrently, and a count of the healthy ones taken in one
            // pass, then a draw by index in another, could disagree and draw past
            // the end — no instance, a 503, while a live one was there (issue 15).
            let drawn = draw_two(candidates.iter().filter(|i| healthy(i)), rng)
                .or_else(|| draw_two(candidates.iter().filter(|i| allowed(i)), rng))?;
            let chosen = match drawn {
                (only, None) => only,
                (a, Some(b)) => {
                    let load =
                        |i: &Instance| state(i).map_or(0, |s| s.in_flight.load(Ordering::Relaxed));
                    if load(b) < load(a) { b } else { a }
                }
            };
            (chosen, state(chosen).cloned())
        };
        // The read guard is gone here: `stats_for` may need the write lock.
        let stats = stats.unwrap_or_else(|| self.stats_for(&chosen.address));
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight { stats }))
    }

    /// Marks the instance at `address` as failed now: skipped until `now + eject_for`
    /// (to the next millisecond). A later call extends the ejection, never shortens it.
    pub fn failed(&self, address: &str, now: Instant) {
        let since = now.saturating_duration_since(self.epoch);
        let until = ceil_ms(since.saturating_add(self.eject_for));
        self.stats_for(address)
            .ejected_until
            .fetch_max(until, Ordering::Relaxed);
    }

    /// Requests in flight to `address` (for metrics and tests); 0 for an unknown one.
    pub fn in_flight(&self, address: &str) -> usize {
        self.read()
            .get(address)
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    /// Drops the state of every address for which `live` is false. Call it after a
    /// routing-table swap with "is this address in the new table", so the map stays
    /// bounded by the instances that exist. Requests still in flight to a dropped
    /// address finish normally; if it comes back it starts with a clean slate.
    pub(crate) fn retain(&self, live: impl Fn(&str) -> bool) {
        self.stats
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|address, _| live(address));
    }

    /// The stats of `address`, added if missing.
    fn stats_for(&self, address: &str) -> Arc<Stats> {
        if let Some(s) = self.read().get(address) {
            return Arc::clone(s);
        }
        let mut map = self.stats.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(address.to_owned()).or_default())
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Arc<Stats>>> {
        // The map holds only counters, each valid on its own: a panic elsewhere while
        // a guard was held cannot leave it inconsistent, so poisoning is ignored.
        self.stats.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn ms_at(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// Two distinct items of `items` drawn at random in one pass, in random order (the
/// second `None` when there is only one); `None` when there are none. Reservoir
/// sampling (Algorithm R) of two: the k-th item takes a slot with probability 2/k,
/// either slot alike, so every ordered pair is equally likely.
fn draw_two<'a>(
    mut items: impl Iterator<Item = &'a Instance>,
    rng: &mut fastrand::Rng,
) -> Option<(&'a Instance, Option<&'a Instance>)> {
    let mut first = items.next()?;
    let Some(mut second) = items.next() else {
        return Some((first, None));
    };
    if rng.bool() {
        std::mem::swap(&mut first, &mut second);
    }
    for (seen, item) in (3..).zip(items) {
        match rng.usize(..seen) {
            0 => first = item,
            1 => second = item,
            _ => {}
        }
    }
    Some((first, Some(second)))
}

/// Rounded up, so an ejection lasts at least `eject_for` despite ms precision.
fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use graylane_routing::{RequestView, RoutingTable, RuleSet};

    use super::*;

    const EJECT: Duration = Duration::from_secs(10);

    struct Req;

    impl RequestView for Req {
        fn header(&self, _: &str) -> Option<&str> {
            None
        }
        fn cookie(&self, _: &str) -> Option<&str> {
            None
        }
        fn query(&self, _: &str) -> Option<&str> {
            None
        }
        fn path(&self) -> &str {
            "/"
        }
        fn method(&self) -> &str {
            "GET"
        }
        fn source_ip(&self) -> Option<IpAddr> {
            None
        }
    }

    /// A table whose service `svc` has instances `ids`, each at `<id>:80`.
    fn table(ids: &[&str]) -> RoutingTable {
        let instances = ids
            .iter()
            .map(|id| Instance {
                service: "svc".to_owned(),
                id: (*id).to_owned(),
                address: format!("{id}:80"),
                labels: BTreeMap::new(),
                namespace: "default".to_owned(),
                identity: String::new(),
            })
            .collect();
        RoutingTable::build(&RuleSet::new(), instances)
    }

    fn candidates(t: &RoutingTable) -> Candidates<'_> {
        t.route("default", "svc", None, &Req, 0).unwrap().candidates
    }

    /// How often each id is picked in `n` picks, each guard dropped at once.
    fn counts(
        b: &Balancer,
        c: Candidates<'_>,
        avoid: Option<&str>,
        now: Instant,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let (i, _guard) = b.pick(c, avoid, &mut rng, now).unwrap();
            *out.entry(i.id.clone()).or_default() += 1;
        }
        out
    }

    fn hold(b: &Balancer, address: &str, n: usize) -> Vec<InFlight> {
        let s = b.stats_for(address);
        (0..n)
            .map(|_| {
                s.in_flight.fetch_add(1, Ordering::Relaxed);
                InFlight {
                    stats: Arc::clone(&s),
                }
            })
            .collect()
    }

    #[test]
    fn balancer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Balancer>();
        check::<InFlight>();
    }

    #[test]
    fn of_two_the_less_loaded_always_wins() {
        let t = table(&["a", "b"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let _held = hold(&b, "a:80", 1);
        let got = counts(&b, candidates(&t), None, now, 1000);
        assert_eq!(got.get("b"), Some(&1000));
    }

    #[test]
    fn least_loaded_wins_whenever_drawn() {
        // Loads a=0, b=1, c=2, d=3: the winner is the lighter of a random pair, so a
        // wins 3 pairs of 6, b 2, c 1, and d none.
        let t = table(&["a", "b", "c", "d"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let _held: Vec<_> = [("b:80", 1), ("c:80", 2), ("d:80", 3)]
            .iter()
            .flat_map(|&(addr, n)| hold(&b, addr, n))
            .collect();
        let got = counts(&b, candidates(&t), None, now, 6000);
        assert_eq!(got.get("d"), None);
        for (id, expected) in [("a", 3000), ("b", 2000), ("c", 1000)] {
            let n = got[id];
            assert!(n.abs_diff(expected) < expected / 10, "{id}: {n} of 6000");
        }
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let t = table(&["a"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let mut rng = fastrand::Rng::with_seed(1);
        let (_, g1) = b.pick(candidates(&t), None, &mut rng, now).unwrap();
        let (_, g2) = b.pick(candidates(&t), None, &mut rng, now).unwrap();
        assert_eq!(b.in_flight("a:80"), 2);
        drop(g1);
        assert_eq!(b.in_flight("a:80"), 1);
        drop(g2);
        assert_eq!(b.in_flight("a:80"), 0);
    }

    #[test]
    fn ejected_instance_is_skipped_until_eject_for_passes() {
        let t = table(&["a", "b"]);
        let t0 = Instant::now();
        let b = Balancer::new(EJECT, t0);
        let failed_at = t0 + Duration::from_millis(1500);
        b.failed("a:80", failed_at);
        for late in [Duration::ZERO, EJECT - Duration::from_millis(1)] {
            let got = counts(&b, candidates(&t), None, failed_at + late, 200);
            assert_eq!(got.get("b"), Some(&200), "{late:?} after failing");
        }
        let got = counts(&b, candidates(&t), None, failed_at + EJECT, 200);
        assert!(got["a"] > 50, "{got:?}");
    }

    #[test]
    fn all_ejected_still_picks() {
        let t = table(&["a", "b"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        b.failed("a:80", now);
        b.failed("b:80", now);
        let got = counts(&b, candidates(&t), None, now, 1000);
        assert!(got["a"] > 300 && got["b"] > 300, "{got:?}");
    }

    #[test]
    fn avoid_excludes_that_address() {
        let t = table(&["a", "b", "c"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let got = counts(&b, candidates(&t), Some("a:80"), now, 1000);
        assert_eq!(got.get("a"), None);
        assert!(got["b"] > 300 && got["c"] > 300, "{got:?}");
    }

    #[test]
    fn avoid_wins_over_ejection() {
        let t = table(&["a", "b"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        b.failed("b:80", now);
        let got = counts(&b, candidates(&t), Some("a:80"), now, 100);
        assert_eq!(got.get("b"), Some(&100));
    }

    #[test]
    fn avoiding_the_only_candidate_is_none() {
        let t = table(&["a"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(
            b.pick(candidates(&t), Some("a:80"), &mut rng, now)
                .is_none()
        );
        assert_eq!(b.in_flight("a:80"), 0);
    }

    #[test]
    fn single_candidate_is_picked_even_when_ejected() {
        let t = table(&["a"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        b.failed("a:80", now);
        let got = counts(&b, candidates(&t), Some("elsewhere:80"), now, 10);
        assert_eq!(got.get("a"), Some(&10));
    }

    #[test]
    fn idle_instances_share_evenly() {
        let t = table(&["a", "b", "c", "d"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        let got = counts(&b, candidates(&t), None, now, 10_000);
        assert_eq!(got.len(), 4);
        for (id, n) in &got {
            assert!((2000..=3000).contains(n), "{id}: {n} of 10000");
        }
    }

    #[test]
    fn retain_drops_stats_of_gone_addresses() {
        let t = table(&["a", "b"]);
        let now = Instant::now();
        let b = Balancer::new(EJECT, now);
        b.failed("a:80", now);
        b.failed("b:80", now);
        let guard = hold(&b, "b:80", 1);
        b.retain(|addr| addr == "b:80");
        assert_eq!(b.read().len(), 1);
        assert_eq!(b.in_flight("b:80"), 1);
        // a's ejection is forgotten: with b ejected, only a is healthy.
        let got = counts(&b, candidates(&t), None, now, 100);
        assert_eq!(got.get("a"), Some(&100));
        b.retain(|_| false);
        assert_eq!(b.read().len(), 0);
        drop(guard);
        assert_eq!(b.in_flight("b:80"), 0);
    }

    #[test]
    fn a_concurrent_ejection_never_leaves_a_pick_without_an_instance() {
        // Issue 15's flake: another request ejected b between the count of healthy
        // candidates and the draw among them, and the draw found none.
        let t = table(&["a", "b"]);
        let epoch = Instant::now();
        let b = Balancer::new(Duration::from_millis(1), epoch);
        let tick = AtomicU64::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Each round b turns from healthy (ejected until `k`, now `k`) to ejected.
            scope.spawn(|| {
                for k in 1.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tick.store(k, Ordering::SeqCst);
                    b.failed("b:80", epoch + Duration::from_millis(k));
                }
            });
            let mut rng = fastrand::Rng::with_seed(3);
            let empty = (0..200_000)
                .filter(|_| {
                    let now = epoch + Duration::from_millis(tick.load(Ordering::SeqCst));
                    b.pick(candidates(&t), None, &mut rng, now).is_none()
                })
                .count();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(empty, 0, "picks without an instance of 200000");
        });
    }

    #[test]
    fn ejection_lasts_at_least_eject_for_at_sub_ms_precision() {
        let t0 = Instant::now();
        let b = Balancer::new(Duration::from_micros(1500), t0);
        let at = t0 + Duration::from_micros(700);
        b.failed("a:80", at);
        let until = b.stats_for("a:80").ejected_until.load(Ordering::Relaxed);
        assert_eq!(until, 3);
        assert!(b.ms_at(at + Duration::from_micros(1500)) < until);
    }
}
