//! The driving loop, on the replica that holds the store's leadership: every tick,
//! each LaneRollout of the rules in force is started, judged when its interval is
//! over, and its rules brought to its record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use graylane_routing::{LaneRollout, RuleSet};
use tokio::sync::watch;

use super::progress::{Progress, Verdict};
use super::verdict::{self, Side};
use super::{Rollouts, key_of};
use crate::control::ControlError;
use crate::store::StoreError;
use crate::traffic::Cumulative;

/// How often rollouts are looked at. Verdicts come every `analysis.interval` (≥ 1 s),
/// so a verdict is at most this late; holds are as long as a step of a few minutes.
const TICK: Duration = Duration::from_millis(250);

/// The traffic reading each rollout's current interval started from, with its time.
/// In memory only: a new leader's first interval starts when it takes over (no verdict
/// for the interval it did not watch), while holds come from the store.
type Baselines = BTreeMap<(String, String), (i64, Arc<Cumulative>)>;

impl Rollouts {
    /// Drives rollouts whenever this process leads the store (`holder` names it in
    /// the leader election), until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, holder: String, shutdown: watch::Receiver<bool>) {
        self.lead(&holder, shutdown).await;
        // Hand the leadership over now rather than leave the other replicas to wait
        // for the lease to expire.
        if let Err(e) = self.control.store().resign().await {
            tracing::warn!(error = %e, "could not resign the rollout leadership; it expires with its lease");
        }
    }

    async fn lead(&self, holder: &str, mut shutdown: watch::Receiver<bool>) {
        let mut leader = self.control.store().leadership(holder);
        loop {
            tokio::select! {
                led = async { leader.wait_for(|l| *l).await.is_ok() } => if !led { return },
                () = down(&mut shutdown) => return,
            }
            tracing::info!(holder, "leading: driving rollouts");
            let mut baselines = Baselines::new();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let leading = *leader.borrow();
                if !leading {
                    break;
                }
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = self.tick(&mut baselines).await {
                            tracing::warn!(error = %e, "rollouts: cannot read the rules or records");
                        }
                    }
                    changed = leader.changed() => if changed.is_err() { return },
                    () = down(&mut shutdown) => return,
                }
            }
            tracing::warn!(holder, "no longer leading: another replica drives rollouts");
        }
    }

    async fn tick(&self, baselines: &mut Baselines) -> Result<(), ControlError> {
        let (_, rules) = self.control.rules().await?;
        let mut records = self.records().await?;
        let traffic = Arc::new(self.control.hub().traffic.cumulative());
        let now_ms = crate::now_ms();
        for rollout in rules.lane_rollouts() {
            let key = key_of(rollout);
            let record = records.remove(&key);
            let driven = self
                .drive(&rules, rollout, record, &traffic, baselines, now_ms)
                .await;
            match driven {
                Ok(()) => {}
                // An admin action won the record: next tick reads it.
                Err(ControlError::Store(StoreError::Conflict { .. } | StoreError::NotLeader)) => {}
                Err(e) => {
                    tracing::warn!(rollout = %rollout.metadata.name, error = %e, "rollout step failed; retrying");
                }
            }
        }
        let present: BTreeSet<_> = rules.lane_rollouts().map(key_of).collect();
        baselines.retain(|key, _| present.contains(key));
        // The records of rollouts no longer in the rules are the change's to remove
        // (`rollout::after_commit`), not this loop's: one a rollback is about to bring
        // back is written before its revision lands, and must still be there then.
        Ok(())
    }

    /// One rollout, one tick: start a new run, or judge the interval that ended, then
    /// make the rules say what the record says.
    async fn drive(
        &self,
        rules: &RuleSet,
        rollout: &LaneRollout,
        record: Option<(u64, Progress)>,
        traffic: &Arc<Cumulative>,
        baselines: &mut Baselines,
        now_ms: i64,
    ) -> Result<(), ControlError> {
        let (ns, name) = (rollout.metadata.namespace(), rollout.metadata.name.as_str());
        let spec = &rollout.spec;
        let key = key_of(rollout);
        let (version, mut progress) = match record {
            // A run that is over stays over until the spec changes. (An active run's
            // spec cannot change: validation refuses it.)
            Some((v, p)) if p.is_of(spec) || !p.phase.is_over() => (v, p),
            stale => {
                let progress = Progress::start(spec, now_ms);
                let expected = stale.map_or(0, |(v, _)| v);
                self.put(ns, name, &progress, expected, true).await?;
                tracing::info!(rollout = name, namespace = ns, "rollout started");
                baselines.insert(key, (now_ms, Arc::clone(traffic)));
                return self.reconcile(rules, rollout, &progress).await;
            }
        };
        if !progress.phase.is_over() {
            let interval = i64::try_from(spec.analysis.interval.as_millis()).unwrap_or(i64::MAX);
            match baselines.get(&key) {
                None => {
                    baselines.insert(key, (now_ms, Arc::clone(traffic)));
                }
                Some((since, earlier)) if now_ms - since >= interval => {
                    let (lane, base) = readings(traffic, earlier, spec.lane.as_str());
                    let (outcome, reason) = verdict::judge(&spec.analysis, &lane, &base);
                    tracing::info!(rollout = name, verdict = ?outcome, reason, "rollout verdict");
                    let verdict = Verdict {
                        at_ms: now_ms,
                        verdict: outcome,
                        reason,
                        lane,
                        base,
                    };
                    baselines.insert(key, (now_ms, Arc::clone(traffic)));
                    progress.on_verdict(spec, verdict);
                    self.put(ns, name, &progress, version, true).await?;
                }
                Some(_) => {}
            }
        }
        self.reconcile(rules, rollout, &progress).await
    }
}

/// Returns once `shutdown` turns true (or its sender is gone), holding no borrow of it.
async fn down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// The lane's requests over the interval (every series of the lane, on every hop:
/// fallbacks included, since lane users get them), and base's (untagged requests)
/// to the same services.
fn readings(now: &Cumulative, earlier: &Cumulative, lane: &str) -> (Side, Side) {
    // `keep` is an `Fn`: the lane's services are collected through a cell.
    let services = RefCell::new(BTreeSet::new());
    let lane_reading = now.reading_since(earlier, |ns, service, l, _| {
        let ours = l == lane;
        if ours {
            services
                .borrow_mut()
                .insert((ns.to_owned(), service.to_owned()));
        }
        ours
    });
    let services = services.into_inner();
    let base = now.reading_since(earlier, |ns, service, l, _| {
        l == BASE_SERIES && services.contains(&(ns.to_owned(), service.to_owned()))
    });
    (lane_reading.into(), base.into())
}

/// The `lane` of a traffic series of untagged requests.
const BASE_SERIES: &str = "-";
