//! `LaneRollout`: a progressive release of a whole lane (release.md) — the share of
//! users the entry TagPolicy tags into the lane, step by step, with the thresholds
//! that decide each interval's verdict.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::match_block::percent;
use super::{Duration, HashKey, Metadata, Name};
use crate::path::{Checker, quote};

/// The shortest analysis interval, and so the shortest traffic report period.
pub const MIN_ANALYSIS_INTERVAL: Duration = Duration::from_millis(1_000);
/// At most this many steps (a rollout is a handful of them; more is a typo).
pub const MAX_STEPS: usize = 100;

/// A `LaneRollout` resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneRollout {
    /// Name, namespace (that of the entry TagPolicy) and free-form labels.
    pub metadata: Metadata,
    /// The rollout.
    pub spec: LaneRolloutSpec,
}

/// The `spec` of a [`LaneRollout`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaneRolloutSpec {
    /// The Lane released.
    pub lane: Name,
    /// The TagPolicy (same namespace) whose services are the mesh entry; the rollout
    /// adds its one rule there.
    pub entry: Name,
    /// The sticky key: a user keeps one bucket from step to step; users without it
    /// stay out of the lane.
    pub hash_by: HashKey,
    /// Shares of users tagged into the lane, strictly rising, each in (0, 100].
    pub steps: Vec<Step>,
    /// How each interval's verdict is reached.
    #[serde(default)]
    pub analysis: Analysis,
    /// What the last step's success does. Default `release-all`.
    #[serde(default, skip_serializing_if = "OnSuccess::is_default")]
    pub on_success: OnSuccess,
}

/// One step: `percent` of users in the lane for at least `hold`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Share of users (0.01 resolution).
    #[serde(deserialize_with = "percent")]
    pub percent: f64,
    /// The least time in the step before it may advance.
    pub hold: Duration,
}

/// The thresholds of one interval's verdict. Rates are written as percentages
/// (`1%`, `0.5%`), so `0.01` is not misread as one percent or as a hundredth of one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// How often a verdict is reached (≥ 1 s). Default 30 s.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Lane requests an interval needs for a verdict; fewer give none. Default 50.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// The lane's error rate above which the interval fails. Default 1%.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: Rate,
    /// Lane error rate minus base error rate (same services, same interval) above
    /// which the interval fails. Not checked when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_increase: Option<Rate>,
    /// Lane p99 / base p99 above which the interval fails (≥ 1). Not checked when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    /// Failing intervals in a row that roll the rollout back (≥ 1). Default 2.
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            min_requests: default_min_requests(),
            max_error_rate: default_max_error_rate(),
            max_error_rate_increase: None,
            max_p99_ratio: None,
            fail_after: default_fail_after(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_millis(30_000)
}
fn default_min_requests() -> u64 {
    50
}
fn default_max_error_rate() -> Rate {
    Rate(1.0)
}
fn default_fail_after() -> u32 {
    2
}

/// What a successful rollout does after its last step's hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnSuccess {
    /// Set the release state of every service with lane instances to `all`.
    #[default]
    ReleaseAll,
    /// Change nothing more: the lane stays at the last step's share.
    Hold,
}

impl OnSuccess {
    fn is_default(&self) -> bool {
        *self == OnSuccess::ReleaseAll
    }
}

/// A rate written as a percentage, `0.5%`; holds the percent (0.5), 0.01 resolution.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Rate(f64);

impl Rate {
    /// Parses `1%`, `0.5%`, `0%` (0-100, rounded to 0.01).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{} is not a percentage: write a number and %, e.g. 1% or 0.5%",
                quote(s)
            )
        };
        let number = s.strip_suffix('%').ok_or_else(bad)?;
        let p: f64 = number.trim().parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{} is outside 0%-100%", quote(s)));
        }
        Ok(Self((p * 100.0).round() / 100.0))
    }

    /// As a fraction, 0..=1 (`1%` → 0.01), the unit error rates are counted in.
    pub fn fraction(&self) -> f64 {
        self.0 / 100.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bare number is refused on purpose: `maxErrorRate: 1` could mean 1% or 100%.
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::String(s) => Rate::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a percentage: write a number and %, e.g. 1% or 0.5%"
            ))),
        }
    }
}

impl LaneRollout {
    /// The `graylane-rollout/<name>` that history shows as the author of every
    /// revision the rollout writes.
    pub fn author(namespace: &str, name: &str) -> String {
        if namespace == super::DEFAULT_NAMESPACE {
            format!("graylane-rollout/{name}")
        } else {
            format!("graylane-rollout/{name}.{namespace}")
        }
    }

    /// Checks of this document alone (the lane and the TagPolicy are set-level).
    pub(crate) fn check(&self, c: &mut Checker) {
        c.field("spec", |c| {
            c.field("hashBy", |c| self.spec.hash_by.check(c));
            c.field("steps", |c| self.check_steps(c));
            c.field("analysis", |c| self.spec.analysis.check(c));
        });
    }

    fn check_steps(&self, c: &mut Checker) {
        let steps = &self.spec.steps;
        if steps.is_empty() {
            c.error("steps must list at least one step");
        }
        if steps.len() > MAX_STEPS {
            c.error(format!(
                "{} steps, over the limit of {MAX_STEPS}",
                steps.len()
            ));
        }
        let mut previous: Option<f64> = None;
        for (i, step) in steps.iter().enumerate() {
            c.index(i, |c| {
                if !(step.percent > 0.0 && step.percent <= 100.0) {
                    c.error_at(
                        "percent",
                        format!("percent {} is outside (0, 100]", step.percent),
                    );
                } else if let Some(p) = previous
                    && step.percent <= p
                {
                    c.error_at(
                        "percent",
                        format!(
                            "percent {} does not rise above the previous step's {p}: steps must rise strictly",
                            step.percent
                        ),
                    );
                }
            });
            previous = Some(step.percent);
        }
    }
}

impl Analysis {
    fn check(&self, c: &mut Checker) {
        if self.interval < MIN_ANALYSIS_INTERVAL {
            c.error_at(
                "interval",
                format!("interval {} is shorter than 1s", self.interval),
            );
        }
        if self.min_requests == 0 {
            c.error_at(
                "minRequests",
                "minRequests must be at least 1 (a verdict needs traffic)",
            );
        }
        if let Some(r) = self.max_p99_ratio
            && !(r.is_finite() && r >= 1.0)
        {
            c.error_at(
                "maxP99Ratio",
                format!("maxP99Ratio {r} must be a number of at least 1 (lane p99 / base p99)"),
            );
        }
        if self.fail_after == 0 || self.fail_after > 100 {
            c.error_at(
                "failAfter",
                format!("failAfter {} must be 1-100", self.fail_after),
            );
        }
    }
}
