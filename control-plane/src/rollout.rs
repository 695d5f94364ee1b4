//! Progressive lane rollouts (release.md): one replica drives every LaneRollout of
//! the rules in force, step by step, from the sidecars' traffic reports; any replica
//! shows them and takes manual actions.
//!
//! ```text
//!  rules in force ─► LaneRollouts ─┐
//!  store records: Progress ────────┤ driver (the store's leader only; driver.rs)
//!  hub.traffic.cumulative() ───────┘   every analysis.interval: verdict (verdict.rs)
//!                                      └► Progress::on_verdict (progress.rs): next step,
//!                                         rollback, success
//!  1. the new Progress is written first: a fenced compare-and-swap on its record
//!  2. then the rules are brought to it: Change::Rollout (one revision, "who" is
//!     graylane-rollout/NAME), a no-op when they already say it
//!  admin (any replica): pause|resume|promote|abort = CAS on the record, then step 2
//! ```
//!
//! Step 2 is idempotent and derived from the record alone, so a crash between 1 and 2,
//! a failover, or two replicas reconciling at once all end in the same rules. What a
//! rollout's rule means is the routing crate's (`RuleSet::set_rollout_percent` and
//! friends); this module only decides when.

use std::collections::BTreeMap;
use std::sync::Arc;

use graylane_routing::{LaneRollout, Release, RuleSet};
use serde::Serialize;

use crate::control::{Change, ChangeOptions, Control, ControlError};
use crate::store::{Record, StoreError};

mod driver;
mod progress;
mod verdict;

pub(crate) use self::progress::Action;
use self::progress::{Phase, Progress, Target, Verdict};

/// Records live under this prefix, one per rollout: `rollouts/<namespace>/<name>`.
const PREFIX: &str = "rollouts/";

fn record_key(namespace: &str, name: &str) -> String {
    format!("{PREFIX}{namespace}/{name}")
}

/// A rollout as `graylane rollout status` and `GET /api/v1/rollouts` show it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RolloutView {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) lane: String,
    /// `Progressing`, `Paused`, `Succeeded`, `RolledBack`.
    pub(crate) state: String,
    /// 1-based; 0 before the driver has started the rollout.
    pub(crate) step: usize,
    pub(crate) steps: usize,
    pub(crate) percent: f64,
    pub(crate) step_started_at: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) verdicts: Vec<VerdictView>,
    pub(crate) decisions: Vec<DecisionView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerdictView {
    pub(crate) at: String,
    pub(crate) verdict: verdict::Outcome,
    pub(crate) reason: String,
    pub(crate) lane: verdict::Side,
    pub(crate) base: verdict::Side,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DecisionView {
    pub(crate) at: String,
    pub(crate) what: String,
}

/// The rollouts of one control plane: shown and acted on from the admin core,
/// driven by `run` on the replica that leads.
pub(crate) struct Rollouts {
    control: Arc<Control>,
}

impl Rollouts {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        Self { control }
    }

    /// Every LaneRollout of the rules in force, by namespace and name.
    pub(crate) async fn list(&self) -> Result<Vec<RolloutView>, ControlError> {
        let (_, rules) = self.control.rules().await?;
        let records = self.records().await?;
        Ok(rules
            .lane_rollouts()
            .map(|r| view(r, records.get(&key_of(r)).map(|(_, p)| p)))
            .collect())
    }

    /// One rollout; `NotFound` when the rules in force have no such LaneRollout.
    pub(crate) async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<RolloutView, ControlError> {
        let (_, rules) = self.control.rules().await?;
        let rollout = find(&rules, namespace, name)?;
        let record = self.record(namespace, name).await?;
        Ok(view(rollout, record.as_ref().map(|(_, p)| p)))
    }

    /// A manual action by `by` (shown on the timeline and in history's summary): the
    /// record first, then the rules, so the answer comes after the revision.
    pub(crate) async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
        by: &str,
    ) -> Result<RolloutView, ControlError> {
        // Another writer (the driver's verdict) may win the record in between: read
        // again and decide again, as a change of the rules does.
        for _ in 0..16 {
            let now = crate::now_ms();
            let (_, rules) = self.control.rules().await?;
            let rollout = find(&rules, namespace, name)?;
            let (version, mut progress) = match self.record(namespace, name).await? {
                Some((v, p)) if p.is_of(&rollout.spec) => (v, p),
                // Applied, and the driver has not started it yet (it ticks every
                // 250 ms): start it here, as the driver would, so an abort right
                // after the apply is not refused. The driver then finds the record.
                Some((v, p)) if p.phase.is_over() => (v, Progress::start(&rollout.spec, now)),
                None => (0, Progress::start(&rollout.spec, now)),
                Some(_) => {
                    return Err(ControlError::BadRequest(format!(
                        "LaneRollout {name:?} has not started its new spec yet; try again in a moment"
                    )));
                }
            };
            progress
                .act(&rollout.spec, action, by, now)
                .map_err(|e| ControlError::BadRequest(format!("LaneRollout {name:?}: {e}")))?;
            match self.put(namespace, name, &progress, version, false).await {
                Ok(()) => {
                    // The rules as they are now: the driver may have written a step
                    // since they were read, and an abort judged on the older ones
                    // would find nothing to take back and answer before it is.
                    let (_, rules) = self.control.rules().await?;
                    let rollout = find(&rules, namespace, name)?;
                    match self.reconcile(&rules, rollout, &progress).await {
                        Ok(()) => return self.get(namespace, name).await,
                        // The record holds the action: the driver brings the rules to
                        // it once the store takes revisions again.
                        Err(ControlError::Store(StoreError::Unavailable(why))) => {
                            return Err(ControlError::Pending(format!(
                                "LaneRollout {name:?}: {} is recorded, but its rules revision could not be written yet (rule store unavailable: {why}); it is written once the store answers, without another action",
                                action.as_str()
                            )));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(ControlError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable("the rollout changes too often, try again".into()).into())
    }

    /// Brings the rules in force to what `progress` says (one revision by
    /// `graylane-rollout/NAME`, or nothing when they already say it).
    async fn reconcile(
        &self,
        rules: &RuleSet,
        rollout: &LaneRollout,
        progress: &Progress,
    ) -> Result<(), ControlError> {
        let ns = rollout.metadata.namespace();
        let name = rollout.metadata.name.as_str();
        let target = progress.target(&rollout.spec);
        let owned = rules.rollout_percent(ns, name);
        // Over: the rule is released in the revision that ends the rollout, so a rule
        // still marked is the sign it has not been written yet (and a run ended before
        // its first step has nothing to release).
        let needed = if target.end {
            owned.is_some()
        } else {
            owned != Some(target.percent)
        };
        if !needed {
            return Ok(());
        }
        let release_all = if target.release_all {
            self.lane_services(rules, rollout)
        } else {
            Vec::new()
        };
        let change = Change::Rollout {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            percent: target.percent,
            end: target.end,
            release_all,
            note: note(progress, &target),
        };
        let options = ChangeOptions {
            applied_by: LaneRollout::author(ns, name),
            ..ChangeOptions::default()
        };
        let outcome = self.control.change(change, options).await?;
        tracing::info!(
            rollout = name,
            namespace = ns,
            percent = target.percent,
            end = target.end,
            revision = outcome.revision,
            "rollout revision"
        );
        Ok(())
    }

    /// (namespace, service) of every connected instance in the rollout's lane.
    fn lane_services(&self, rules: &RuleSet, rollout: &LaneRollout) -> Vec<(String, String)> {
        let lane = rollout.spec.lane.as_str();
        let table = crate::admin::lane_table(rules);
        let mut services: Vec<(String, String)> = self
            .control
            .hub()
            .sidecars()
            .into_iter()
            .map(|s| crate::admin::view(s, &table))
            .filter(|v| v.lanes.iter().any(|l| l == lane))
            .map(|v| (v.entry.hello.namespace, v.entry.hello.service))
            .collect();
        services.sort();
        services.dedup();
        services
            .into_iter()
            .filter(|(ns, svc)| rules.release_of(ns, svc) != Release::All)
            .collect()
    }

    async fn records(&self) -> Result<BTreeMap<(String, String), (u64, Progress)>, ControlError> {
        Ok(all_records(self.control.store()).await?)
    }

    async fn record(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(u64, Progress)>, ControlError> {
        let key = record_key(namespace, name);
        let record = self.control.store().record_get(&key).await?;
        Ok(record.and_then(|r| parse(&key, &r)))
    }

    async fn put(
        &self,
        namespace: &str,
        name: &str,
        progress: &Progress,
        expected: u64,
        fenced: bool,
    ) -> Result<(), ControlError> {
        // Plain data (strings, numbers, lists): serializing cannot fail.
        let value = serde_json::to_string(progress).unwrap_or_default();
        let key = record_key(namespace, name);
        self.control
            .store()
            .record_put(&key, value, expected, fenced)
            .await?;
        Ok(())
    }
}

/// The rollouts `new` holds with a spec `old` did not (created, or changed).
fn brought<'a>(old: &RuleSet, new: &'a RuleSet) -> impl Iterator<Item = &'a LaneRollout> {
    new.lane_rollouts().filter(move |r| {
        let (ns, name) = (r.metadata.namespace(), r.metadata.name.as_str());
        old.lane_rollout(ns, name)
            .is_none_or(|before| before.spec != r.spec)
    })
}

/// Keeps the run records in step with a person's change, before it is committed:
/// what starts a run must not depend on where the driver's tick falls. A rollback
/// restores content and never starts a run: a rollout it brings back (or back to
/// another spec) gets the record of a run that is over, so the driver does not take
/// it for a new one and send users into a lane already judged, maybe aborted.
///
/// Returns what it overwrote, for [`undo`] when the commit then fails.
pub(crate) async fn before_commit(
    store: &dyn crate::store::Store,
    change: &Change,
    old: &RuleSet,
    new: &RuleSet,
) -> Result<Vec<Overwritten>, ControlError> {
    let mut overwritten = Vec::new();
    let Change::Rollback(to) = change else {
        return Ok(overwritten);
    };
    for rollout in brought(old, new) {
        let (ns, name) = (rollout.metadata.namespace(), rollout.metadata.name.as_str());
        let key = record_key(ns, name);
        let before = store.record_get(&key).await?;
        let restored = Progress::restored(&rollout.spec, *to, crate::now_ms());
        let value = serde_json::to_string(&restored).unwrap_or_default();
        let expected = before.as_ref().map_or(0, |r| r.version);
        match store.record_put(&key, value, expected, false).await {
            Ok(version) => overwritten.push(Overwritten {
                key,
                before,
                version,
            }),
            Err(e) => {
                undo(store, overwritten).await;
                return Err(e.into());
            }
        }
    }
    Ok(overwritten)
}

/// A run record [`before_commit`] replaced: the one before (none: it was absent) and
/// the version written.
pub(crate) struct Overwritten {
    key: String,
    before: Option<Record>,
    version: u64,
}

/// Puts back what [`before_commit`] replaced, when the change was not committed:
/// nothing of it is left half-applied. Best effort, logged: a record changed since
/// (an admin action) is not overwritten.
pub(crate) async fn undo(store: &dyn crate::store::Store, overwritten: Vec<Overwritten>) {
    for o in overwritten {
        let undone = match o.before {
            Some(before) => store
                .record_put(&o.key, before.value, o.version, false)
                .await
                .map(|_| ()),
            None => store.record_delete(&o.key, o.version).await,
        };
        if let Err(e) = undone {
            tracing::warn!(key = o.key, error = %e, "rollout record not put back after a failed change");
        }
    }
}

/// After a person's change is committed: a rollout it removed, or an apply created
/// or changed, loses its record at once (not at the driver's next tick), so a
/// rollout deleted and applied again starts a new run however quickly the two came.
/// Failures are logged: the change stands, and the driver's rules still hold.
pub(crate) async fn after_commit(
    store: &dyn crate::store::Store,
    change: &Change,
    old: &RuleSet,
    new: &RuleSet,
) {
    let removed = old.lane_rollouts().filter(|r| {
        new.lane_rollout(r.metadata.namespace(), r.metadata.name.as_str())
            .is_none()
    });
    let applied: Vec<&LaneRollout> = match change {
        Change::Apply { .. } => brought(old, new).collect(),
        _ => Vec::new(),
    };
    for rollout in removed.chain(applied) {
        let key = key_of(rollout);
        let key = record_key(&key.0, &key.1);
        let deleted = match store.record_get(&key).await {
            Ok(Some(record)) => store.record_delete(&key, record.version).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            tracing::warn!(key, error = %e, "rollout record not reset after a change");
        }
    }
}

/// Which rollouts a person's change must leave alone (`RuleSet::check_rollout_change`):
/// those running, and those applied but not yet started or re-applied with a new spec
/// after they ended (a new run).
pub(crate) async fn active(
    store: &dyn crate::store::Store,
) -> Result<impl Fn(&LaneRollout) -> bool + use<>, StoreError> {
    let runs = all_records(store).await?;
    Ok(move |r: &LaneRollout| match runs.get(&key_of(r)) {
        Some((_, p)) => !(p.phase.is_over() && p.is_of(&r.spec)),
        None => true,
    })
}

/// Every readable rollout record, by (namespace, name).
async fn all_records(
    store: &dyn crate::store::Store,
) -> Result<BTreeMap<(String, String), (u64, Progress)>, StoreError> {
    let list = store.record_list(PREFIX).await?;
    Ok(list
        .into_iter()
        .filter_map(|(key, record)| {
            let (ns, name) = key.strip_prefix(PREFIX)?.split_once('/')?;
            Some(((ns.to_owned(), name.to_owned()), parse(&key, &record)?))
        })
        .collect())
}

/// A record this version cannot read is left alone (and logged): a newer replica may
/// have written it.
fn parse(key: &str, record: &Record) -> Option<(u64, Progress)> {
    match serde_json::from_str(&record.value) {
        Ok(p) => Some((record.version, p)),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable rollout record; ignored");
            None
        }
    }
}

fn key_of(r: &LaneRollout) -> (String, String) {
    (
        r.metadata.namespace().to_owned(),
        r.metadata.name.as_str().to_owned(),
    )
}

fn find<'a>(
    rules: &'a RuleSet,
    namespace: &str,
    name: &str,
) -> Result<&'a LaneRollout, ControlError> {
    rules.lane_rollout(namespace, name).ok_or_else(|| {
        ControlError::NotFound(format!(
            "LaneRollout {name:?} not found in namespace {namespace:?}"
        ))
    })
}

/// History's summary of a rollout revision: the newest decision.
fn note(progress: &Progress, target: &Target) -> String {
    let what = progress.decisions.last().map_or("", |d| d.what.as_str());
    if target.end {
        what.to_owned()
    } else {
        format!("{}% ({what})", target.percent)
    }
}

fn view(rollout: &LaneRollout, record: Option<&Progress>) -> RolloutView {
    let at = |ms: i64| crate::cli::output::timestamp(ms).replacen(' ', "T", 1);
    let spec = &rollout.spec;
    let base = RolloutView {
        name: rollout.metadata.name.as_str().to_owned(),
        namespace: rollout.metadata.namespace().to_owned(),
        lane: spec.lane.as_str().to_owned(),
        state: "Progressing".into(),
        step: 0,
        steps: spec.steps.len(),
        percent: 0.0,
        step_started_at: None,
        reason: None,
        verdicts: Vec::new(),
        decisions: Vec::new(),
    };
    // Not started yet, or applied again with a new spec the driver has not taken up.
    let Some(p) = record.filter(|p| p.is_of(spec)) else {
        return base;
    };
    RolloutView {
        state: format!("{:?}", p.phase),
        step: p.step + 1,
        percent: p.target(spec).percent,
        step_started_at: Some(at(p.step_started_ms)),
        reason: p.reason.clone().filter(|_| p.phase == Phase::RolledBack),
        verdicts: p
            .verdicts
            .iter()
            .map(|v: &Verdict| VerdictView {
                at: at(v.at_ms),
                verdict: v.verdict,
                reason: v.reason.clone(),
                lane: v.lane,
                base: v.base,
            })
            .collect(),
        decisions: p
            .decisions
            .iter()
            .map(|d| DecisionView {
                at: at(d.at_ms),
                what: d.what.clone(),
            })
            .collect(),
        ..base
    }
}
