//! LaneRollouts in a set: their references, the one TagPolicy rule each owns, the
//! changes a rollout makes to that rule, and what a person's change may not do while
//! a rollout is active (release.md). Whether a rollout is active is state the control
//! plane keeps in its store, so callers pass it in, as randomness is passed in
//! elsewhere: the meaning of the rules stays here.

use std::collections::BTreeMap;

use super::RuleSet;
use crate::error::{Origin, ValidationError};
use crate::model::{
    Kind, LaneRollout, MIN_ANALYSIS_INTERVAL, MatchBlock, Resource, TagPolicy, TagRule,
};
use crate::path::{join_index, quote};

/// Set-level checks of LaneRollouts and of owned TagPolicy rules.
pub(super) fn check(set: &RuleSet, errors: &mut Vec<ValidationError>) {
    for (r, origin) in set.entries() {
        let mut error = |path: String, reason: String| {
            errors.push(ValidationError::for_resource(
                origin,
                r.kind().as_str(),
                r.name(),
                path,
                reason,
            ));
        };
        match r {
            Resource::LaneRollout(rollout) => {
                let spec = &rollout.spec;
                if set.get(Kind::Lane, "", spec.lane.as_str()).is_none() {
                    error(
                        "spec.lane".into(),
                        format!("Lane {} is not declared", quote(spec.lane.as_str())),
                    );
                }
                if set
                    .get(Kind::TagPolicy, r.namespace(), spec.entry.as_str())
                    .is_none()
                {
                    error(
                        "spec.entry".into(),
                        format!(
                            "TagPolicy {} does not exist in namespace {}",
                            quote(spec.entry.as_str()),
                            quote(r.namespace())
                        ),
                    );
                }
            }
            Resource::TagPolicy(policy) => {
                for (i, rule) in policy.spec.rules.iter().enumerate() {
                    if let Some(reason) = owned_rule_problem(set, policy, rule) {
                        error(format!("{}.rollout", join_index("spec.rules", i)), reason);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Why a rule marked `rollout: NAME` is not the rule that rollout would write.
fn owned_rule_problem(set: &RuleSet, policy: &TagPolicy, rule: &TagRule) -> Option<String> {
    let name = rule.rollout.as_ref()?;
    let ns = policy.metadata.namespace();
    let Some(Resource::LaneRollout(rollout)) = set.get(Kind::LaneRollout, ns, name.as_str()) else {
        return Some(format!(
            "LaneRollout {} does not exist: a rollout's rule is released when the rollout ends (graylane rollout abort {name})",
            quote(name.as_str())
        ));
    };
    if rollout.spec.entry != policy.metadata.name {
        return Some(format!(
            "LaneRollout {} has entry {}, not this TagPolicy",
            quote(name.as_str()),
            quote(rollout.spec.entry.as_str())
        ));
    }
    let same = |other: &TagRule| other.rollout.as_ref() == Some(name);
    let first = policy.spec.rules.iter().position(same);
    if first.is_some_and(|i| !std::ptr::eq(&policy.spec.rules[i], rule)) {
        return Some(format!(
            "LaneRollout {} owns one rule only",
            quote(name.as_str())
        ));
    }
    let expected = owned_rule(set, rollout, rule.matches.percent.unwrap_or(0.0))?;
    (expected.tag != rule.tag || expected.matches != rule.matches).then(|| {
        format!(
            "a rule owned by LaneRollout {} is {{tag: {}, match: {{percent, hashBy}}}} as the rollout writes it",
            quote(name.as_str()),
            expected.tag
        )
    })
}

/// The rule `rollout` owns at `percent`; `None` when its lane is missing.
fn owned_rule(set: &RuleSet, rollout: &LaneRollout, percent: f64) -> Option<TagRule> {
    let Some(Resource::Lane(lane)) = set.get(Kind::Lane, "", rollout.spec.lane.as_str()) else {
        return None;
    };
    Some(TagRule {
        tag: lane.spec.tag.clone(),
        matches: MatchBlock {
            percent: Some(percent),
            hash_by: Some(rollout.spec.hash_by.clone()),
            ..MatchBlock::default()
        },
        rollout: Some(rollout.metadata.name.clone()),
    })
}

impl RuleSet {
    /// The LaneRollout `name` of `namespace`.
    pub fn lane_rollout(&self, namespace: &str, name: &str) -> Option<&LaneRollout> {
        match self.get(Kind::LaneRollout, namespace, name) {
            Some(Resource::LaneRollout(r)) => Some(r),
            _ => None,
        }
    }

    /// Every LaneRollout, in namespace and name order.
    pub fn lane_rollouts(&self) -> impl Iterator<Item = &LaneRollout> {
        self.of_kind(Kind::LaneRollout).filter_map(|r| match r {
            Resource::LaneRollout(r) => Some(r),
            _ => None,
        })
    }

    /// The percent of the rule rollout `name` owns in its entry TagPolicy, if it has
    /// written one.
    pub fn rollout_percent(&self, namespace: &str, name: &str) -> Option<f64> {
        let rollout = self.lane_rollout(namespace, name)?;
        let policy = self.tag_policy(namespace, rollout.spec.entry.as_str())?;
        let rule = policy
            .spec
            .rules
            .iter()
            .find(|r| r.rollout.as_ref() == Some(&rollout.metadata.name))?;
        rule.matches.percent
    }

    /// Sets the percent of the rule rollout `name` owns, adding it after the entry
    /// TagPolicy's rules when there is none yet. `Err` says why it cannot (the
    /// rollout, its lane or its entry is gone).
    pub fn set_rollout_percent(
        &mut self,
        namespace: &str,
        name: &str,
        percent: f64,
    ) -> Result<(), String> {
        let rollout = self
            .lane_rollout(namespace, name)
            .ok_or_else(|| format!("LaneRollout {} does not exist", quote(name)))?;
        let rule = owned_rule(self, rollout, percent)
            .ok_or_else(|| format!("Lane {} does not exist", quote(rollout.spec.lane.as_str())))?;
        let entry = rollout.spec.entry.clone();
        let mut policy = self
            .tag_policy(namespace, entry.as_str())
            .cloned()
            .ok_or_else(|| format!("TagPolicy {} does not exist", quote(entry.as_str())))?;
        let rules = &mut policy.spec.rules;
        // A rule left at 0% by an earlier run's rollback lets nobody in: a new run
        // takes it over rather than adding another.
        let zero = MatchBlock {
            percent: Some(0.0),
            ..rule.matches.clone()
        };
        let leftover = |r: &TagRule| r.rollout.is_none() && r.tag == rule.tag && r.matches == zero;
        let owned = rules.iter().position(|r| r.rollout == rule.rollout);
        match owned.or_else(|| rules.iter().position(leftover)) {
            Some(i) => rules[i] = rule,
            None => rules.push(rule),
        }
        self.replace_keeping_origin(Resource::TagPolicy(policy));
        Ok(())
    }

    /// Gives the rule rollout `name` owns back to the user: it stays, without its
    /// `rollout` mark. Nothing when there is none.
    pub fn release_rollout_rule(&mut self, namespace: &str, name: &str) {
        let Some(entry) = self
            .lane_rollout(namespace, name)
            .map(|r| r.spec.entry.clone())
        else {
            return;
        };
        let Some(mut policy) = self.tag_policy(namespace, entry.as_str()).cloned() else {
            return;
        };
        for rule in &mut policy.spec.rules {
            if rule.rollout.as_ref().is_some_and(|n| n.as_str() == name) {
                rule.rollout = None;
            }
        }
        self.replace_keeping_origin(Resource::TagPolicy(policy));
    }

    /// Gives back to the user the rules of every rollout `is_active` says has ended: a
    /// past revision restored as it was written holds them marked, and only an active
    /// rollout may hold a marked rule.
    pub fn release_ended_rollout_rules(&mut self, is_active: impl Fn(&LaneRollout) -> bool) {
        let ended: Vec<(String, String)> = self
            .lane_rollouts()
            .filter(|r| !is_active(r))
            .map(|r| {
                (
                    r.metadata.namespace().to_owned(),
                    r.metadata.name.to_string(),
                )
            })
            .collect();
        for (namespace, name) in ended {
            self.release_rollout_rule(&namespace, &name);
        }
    }

    /// How often sidecars report traffic for the rollouts of this set: half the
    /// shortest `analysis.interval`, at least 1 s; `None` without a LaneRollout. Half,
    /// so every interval holds a report whatever the phase between the sidecars'
    /// timers and the analysis (at the period itself, an interval could end just
    /// before a report and hold none).
    pub fn traffic_report_interval(&self) -> Option<std::time::Duration> {
        self.lane_rollouts()
            .map(|r| (r.spec.analysis.interval.as_std() / 2).max(MIN_ANALYSIS_INTERVAL.as_std()))
            .min()
    }

    /// What a person's change (an apply, a delete, a rollback) may not do while a
    /// rollout is active, checked on the set it would make (`self`) against the set in
    /// force (`old`): change or delete an active rollout, change or add a rule a
    /// rollout owns, or give a lane a second active rollout. `is_active` says, from
    /// the control plane's records, whether a rollout of this spec is (or, new, would
    /// be) running. Errors name the resource and field.
    pub fn check_rollout_change(
        &self,
        old: &RuleSet,
        is_active: impl Fn(&LaneRollout) -> bool,
    ) -> Result<(), Vec<ValidationError>> {
        let mut errors = Vec::new();
        let stored = |r: &LaneRollout| (r.metadata.namespace().to_owned(), r.metadata.name.clone());
        for before in old.lane_rollouts().filter(|r| is_active(r)) {
            let (ns, name) = stored(before);
            let now = self.lane_rollout(&ns, name.as_str());
            if now.is_none_or(|now| now.spec != before.spec) {
                errors.push(rollout_error(
                    self,
                    before,
                    "spec",
                    format!(
                        "LaneRollout {} is active: it cannot be changed or deleted until it ends (graylane rollout abort|promote {name})",
                        quote(name.as_str())
                    ),
                ));
            }
        }
        let owned_before = owned_rules(old, &is_active);
        let marked_before = owned_rules(old, |_| true);
        let owned_now = owned_rules(self, |_| true);
        for (key, (policy, index, rule)) in &owned_now {
            let unchanged = marked_before.get(key).is_some_and(|(_, _, r)| r == rule);
            if !unchanged {
                let name = quote(&key.1);
                let reason = match self.lane_rollout(&key.0, &key.1) {
                    Some(r) if is_active(r) => format!(
                        "only LaneRollout {name} writes this rule, while it is active; leave it as `graylane rules get tagpolicy {policy}` shows it"
                    ),
                    // Marks are written by a running rollout only: one written by
                    // hand is a typo or a copy of an old revision.
                    Some(_) => format!(
                        "LaneRollout {name} has ended, and only a running rollout marks its rule; remove the `rollout` field"
                    ),
                    None => format!(
                        "there is no LaneRollout {name}, and only a running rollout marks its rule; remove the `rollout` field"
                    ),
                };
                errors.push(ValidationError::for_resource(
                    self.origin(Kind::TagPolicy, &key.0, policy),
                    "TagPolicy",
                    policy,
                    format!("{}.rollout", join_index("spec.rules", *index)),
                    reason,
                ));
            }
        }
        for (key, (policy, index, _)) in &owned_before {
            if !owned_now.contains_key(key) {
                errors.push(ValidationError::for_resource(
                    self.origin(Kind::TagPolicy, &key.0, policy),
                    "TagPolicy",
                    policy,
                    join_index("spec.rules", *index),
                    format!(
                        "the rule of LaneRollout {} cannot be removed while the rollout is active",
                        quote(&key.1)
                    ),
                ));
            }
        }
        for rollout in self.lane_rollouts().filter(|r| is_active(r)) {
            let key = stored(rollout);
            if !owned_now.contains_key(&(key.0, key.1.to_string())) {
                errors.extend(self.shadowed_start(rollout));
            }
        }
        let mut lanes: BTreeMap<&str, &LaneRollout> = BTreeMap::new();
        // The one running already claims its lane first: the error names the rollout
        // this change brings, not the one it would disturb.
        let (running, brought): (Vec<&LaneRollout>, Vec<&LaneRollout>) = self
            .lane_rollouts()
            .filter(|r| is_active(r))
            .partition(|r| {
                let (ns, name) = stored(r);
                old.lane_rollout(&ns, name.as_str())
                    .is_some_and(|before| before.spec == r.spec && is_active(before))
            });
        for rollout in running.into_iter().chain(brought) {
            let lane = rollout.spec.lane.as_str();
            if let Some(first) = lanes.insert(lane, rollout) {
                lanes.insert(lane, first);
                errors.push(rollout_error(
                    self,
                    rollout,
                    "spec.lane",
                    format!(
                        "lane {} already has an active rollout, LaneRollout {}",
                        quote(lane),
                        quote(first.metadata.name.as_str())
                    ),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A rollout about to start adds its rule after the entry's rules, and the first
    /// rule that matches decides. An unmarked rule before it giving the lane's tag to a
    /// share of all users (what an earlier run of the lane leaves once it ended) would
    /// make every step below that share change nothing, and an abort leave those users
    /// in the lane: refused, saying which rule.
    fn shadowed_start(&self, rollout: &LaneRollout) -> Option<ValidationError> {
        let ns = rollout.metadata.namespace();
        let rule = owned_rule(self, rollout, 0.0)?;
        let policy = self.tag_policy(ns, rollout.spec.entry.as_str())?;
        let share_of_all = |m: &MatchBlock| {
            MatchBlock {
                percent: m.percent,
                hash_by: m.hash_by.clone(),
                ..MatchBlock::default()
            } == *m
        };
        let (index, percent) = policy.spec.rules.iter().enumerate().find_map(|(i, r)| {
            let percent = r.matches.percent.unwrap_or(100.0);
            (r.rollout.is_none() && r.tag == rule.tag && share_of_all(&r.matches) && percent > 0.0)
                .then_some((i, percent))
        })?;
        let entry = policy.metadata.name.as_str();
        Some(rollout_error(
            self,
            rollout,
            "spec.entry",
            format!(
                "TagPolicy {}'s {} already gives tag {} to {percent}% of users, before the rule this rollout adds: steps below {percent}% would change nothing and an abort would leave them in the lane; remove that rule or set its percent to 0 (a new rollout takes a 0% rule over)",
                quote(entry),
                join_index("spec.rules", index),
                quote(rule.tag.as_str()),
            ),
        ))
    }

    fn tag_policy(&self, namespace: &str, name: &str) -> Option<&TagPolicy> {
        match self.get(Kind::TagPolicy, namespace, name) {
            Some(Resource::TagPolicy(p)) => Some(p),
            _ => None,
        }
    }

    fn replace_keeping_origin(&mut self, resource: Resource) {
        let origin = self
            .origin(resource.kind(), resource.namespace(), resource.name())
            .cloned();
        self.insert(resource, origin);
    }
}

/// (namespace, rollout name) → (policy name, rule index, rule) of every marked rule
/// whose rollout `keep` selects (an unknown rollout is kept: it is an error anyway).
fn owned_rules(
    set: &RuleSet,
    keep: impl Fn(&LaneRollout) -> bool,
) -> BTreeMap<(String, String), (&str, usize, &TagRule)> {
    let mut owned = BTreeMap::new();
    for r in set.of_kind(Kind::TagPolicy) {
        let Resource::TagPolicy(policy) = r else {
            continue;
        };
        let ns = policy.metadata.namespace();
        for (i, rule) in policy.spec.rules.iter().enumerate() {
            let Some(name) = &rule.rollout else { continue };
            if set.lane_rollout(ns, name.as_str()).is_none_or(&keep) {
                owned.insert(
                    (ns.to_owned(), name.as_str().to_owned()),
                    (policy.metadata.name.as_str(), i, rule),
                );
            }
        }
    }
    owned
}

fn rollout_error(
    set: &RuleSet,
    rollout: &LaneRollout,
    path: &str,
    reason: String,
) -> ValidationError {
    let (ns, name) = (rollout.metadata.namespace(), rollout.metadata.name.as_str());
    let origin: Option<&Origin> = set.origin(Kind::LaneRollout, ns, name);
    ValidationError::for_resource(origin, "LaneRollout", name, path, reason)
}
