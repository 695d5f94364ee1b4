//! A rollout's progress as stored (one record per rollout) and every transition of
//! it: verdicts, holds, manual actions. Pure: the time is passed in, so the state
//! machine is tested without a clock, a store or a mesh.

use graylane_routing::{LaneRolloutSpec, OnSuccess};
use serde::{Deserialize, Serialize};

use super::verdict::{Outcome, Side};

/// Verdicts kept per rollout (newest last), enough for the console's readings.
const KEPT_VERDICTS: usize = 12;
/// Decisions kept per rollout (newest last): every step of a long rollout and then some.
const KEPT_DECISIONS: usize = 60;

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Phase {
    Progressing,
    Paused,
    Succeeded,
    RolledBack,
}

impl Phase {
    /// Succeeded or rolled back: the rollout no longer owns its rule.
    pub(crate) fn is_over(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack)
    }
}

/// One interval's verdict, as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Verdict {
    pub(crate) at_ms: i64,
    pub(crate) verdict: Outcome,
    pub(crate) reason: String,
    pub(crate) lane: Side,
    pub(crate) base: Side,
}

/// One decision on the timeline: a step, a pause, a rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Decision {
    pub(crate) at_ms: i64,
    pub(crate) what: String,
}

/// A manual action (`graylane rollout ACTION NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl Action {
    /// As the command and the API's path name it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::Pause, Self::Resume, Self::Promote, Self::Abort]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unknown rollout action {s:?}: expected pause, resume, promote or abort")
            })
    }
}

/// The stored progress of one run of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    /// The spec this run is of: a rollout applied again with another spec after it
    /// ended starts a new run.
    pub(crate) spec: serde_json::Value,
    pub(crate) phase: Phase,
    /// 0-based index into the spec's steps.
    pub(crate) step: usize,
    pub(crate) step_started_ms: i64,
    /// Failing verdicts in a row.
    pub(crate) fail_streak: u32,
    /// Why it rolled back.
    pub(crate) reason: Option<String>,
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) decisions: Vec<Decision>,
}

/// What the rules in force should say for a rollout in this state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Target {
    /// The percent of the owned rule.
    pub(crate) percent: f64,
    /// The rollout is over: release the rule (and maybe every lane service).
    pub(crate) end: bool,
    pub(crate) release_all: bool,
}

impl Progress {
    /// A new run at its first step.
    pub(crate) fn start(spec: &LaneRolloutSpec, now_ms: i64) -> Self {
        let mut p = Self {
            spec: spec_value(spec),
            phase: Phase::Progressing,
            step: 0,
            step_started_ms: now_ms,
            fail_streak: 0,
            reason: None,
            verdicts: Vec::new(),
            decisions: Vec::new(),
        };
        p.decide(now_ms, format!("started: step 1, {}%", percent_of(spec, 0)));
        p
    }

    /// A rollout a rollback to revision `to` brought back: a run that is over and
    /// never started, so the driver leaves it alone (a rollback restores content; it
    /// does not start a rollout).
    pub(crate) fn restored(spec: &LaneRolloutSpec, to: u64, now_ms: i64) -> Self {
        let mut p = Self::start(spec, now_ms);
        p.decisions.clear();
        p.phase = Phase::RolledBack;
        p.reason = Some(format!(
            "restored by a rollback to revision {to}, which never starts a rollout: delete it and apply it again to run it"
        ));
        p.decide(
            now_ms,
            format!("restored by a rollback to revision {to}; not started"),
        );
        p
    }

    /// Whether this run is of `spec` (else, once over, a new run starts).
    pub(crate) fn is_of(&self, spec: &LaneRolloutSpec) -> bool {
        self.spec == spec_value(spec)
    }

    /// What the owned rule should be now.
    pub(crate) fn target(&self, spec: &LaneRolloutSpec) -> Target {
        let last = spec.steps.len().saturating_sub(1);
        match self.phase {
            Phase::Progressing | Phase::Paused => Target {
                percent: percent_of(spec, self.step.min(last)),
                end: false,
                release_all: false,
            },
            Phase::RolledBack => Target {
                percent: 0.0,
                end: true,
                release_all: false,
            },
            Phase::Succeeded => Target {
                percent: percent_of(spec, last),
                end: true,
                release_all: spec.on_success == OnSuccess::ReleaseAll,
            },
        }
    }

    /// Records an interval's verdict and what follows from it: a rollback after
    /// `failAfter` failures in a row (paused or not), or, progressing, the next step
    /// (or success) once the hold is over and this verdict passed. No verdict changes
    /// neither the streak nor the step.
    pub(crate) fn on_verdict(&mut self, spec: &LaneRolloutSpec, verdict: Verdict) {
        if self.phase.is_over() {
            return;
        }
        let now = verdict.at_ms;
        let (outcome, reason) = (verdict.verdict, verdict.reason.clone());
        self.verdicts.push(verdict);
        trim(&mut self.verdicts, KEPT_VERDICTS);
        match outcome {
            Outcome::Fail => {
                self.fail_streak += 1;
                if self.fail_streak >= spec.analysis.fail_after {
                    let why = format!("{} failing intervals in a row: {reason}", self.fail_streak);
                    self.roll_back(now, why);
                }
            }
            Outcome::Pass => {
                self.fail_streak = 0;
                let hold = spec.steps.get(self.step).map_or(0, |s| s.hold.as_millis());
                let held = now.saturating_sub(self.step_started_ms);
                if self.phase == Phase::Progressing
                    && held >= i64::try_from(hold).unwrap_or(i64::MAX)
                {
                    self.advance(spec, now);
                }
            }
            Outcome::None => {}
        }
    }

    /// A manual action by `by`; `Err` says why it does not apply in this phase.
    pub(crate) fn act(
        &mut self,
        spec: &LaneRolloutSpec,
        action: Action,
        by: &str,
        now_ms: i64,
    ) -> Result<(), String> {
        let phase = self.phase;
        match (action, phase) {
            (_, Phase::Succeeded | Phase::RolledBack) => {
                return Err(format!("the rollout is over ({phase:?})"));
            }
            (Action::Pause, Phase::Progressing) => {
                self.phase = Phase::Paused;
                self.decide(now_ms, format!("paused by {by}"));
            }
            (Action::Resume, Phase::Paused) => {
                self.phase = Phase::Progressing;
                self.decide(now_ms, format!("resumed by {by}"));
            }
            (Action::Pause, Phase::Paused) => return Err("the rollout is already paused".into()),
            (Action::Resume, Phase::Progressing) => return Err("the rollout is not paused".into()),
            (Action::Promote, _) => {
                self.step = spec.steps.len().saturating_sub(1);
                self.succeed(spec, now_ms, format!("promoted by {by}"));
            }
            (Action::Abort, _) => self.roll_back(now_ms, format!("aborted by {by}")),
        }
        Ok(())
    }

    fn advance(&mut self, spec: &LaneRolloutSpec, now_ms: i64) {
        if self.step + 1 >= spec.steps.len() {
            self.succeed(spec, now_ms, "every step passed".into());
            return;
        }
        self.step += 1;
        self.step_started_ms = now_ms;
        let what = format!("step {}: {}%", self.step + 1, percent_of(spec, self.step));
        self.decide(now_ms, what);
    }

    fn succeed(&mut self, spec: &LaneRolloutSpec, now_ms: i64, why: String) {
        self.phase = Phase::Succeeded;
        self.step_started_ms = now_ms;
        let then = match spec.on_success {
            OnSuccess::ReleaseAll => "release-all",
            OnSuccess::Hold => "hold",
        };
        self.decide(now_ms, format!("succeeded ({why}): {then}"));
    }

    fn roll_back(&mut self, now_ms: i64, why: String) {
        self.phase = Phase::RolledBack;
        self.step_started_ms = now_ms;
        self.decide(now_ms, format!("rolled back: {why}"));
        self.reason = Some(why);
    }

    fn decide(&mut self, at_ms: i64, what: String) {
        self.decisions.push(Decision { at_ms, what });
        trim(&mut self.decisions, KEPT_DECISIONS);
    }
}

fn percent_of(spec: &LaneRolloutSpec, step: usize) -> f64 {
    spec.steps.get(step).map_or(0.0, |s| s.percent)
}

fn spec_value(spec: &LaneRolloutSpec) -> serde_json::Value {
    // A plain struct of strings, numbers and lists: always representable.
    serde_json::to_value(spec).unwrap_or_default()
}

fn trim<T>(list: &mut Vec<T>, keep: usize) {
    let over = list.len().saturating_sub(keep);
    list.drain(..over);
}

#[cfg(test)]
mod tests;
