use super::*;
use crate::{LaneRollout, Resource};

const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\nspec:\n  tag: gray\n  selector: {version: v2}\n";
const EDGE: &str = "apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {name: edge}\nspec:\n  services: [frontend]\n  rules:\n    - tag: gray\n      match: {headers: {x-user-group: {exact: testers}}}\n";

fn rollout(name: &str, lane: &str, interval: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: LaneRollout\nmetadata: {{name: {name}}}\nspec:\n  lane: {lane}\n  entry: edge\n  hashBy: {{header: x-user-id}}\n  steps: [{{percent: 5, hold: 1m}}, {{percent: 50, hold: 1m}}]\n  analysis: {{interval: {interval}}}\n"
    )
}

fn set(docs: &[&str]) -> RuleSet {
    RuleSet::from_files(&files(docs)).unwrap()
}

fn edge_rules(set: &RuleSet) -> Vec<crate::TagRule> {
    match set.get(Kind::TagPolicy, "default", "edge") {
        Some(Resource::TagPolicy(p)) => p.spec.rules.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rollout_needs_its_lane_and_its_entry() {
    let errs = set_errors(&[&rollout("r", "blue", "10s")]);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.lane", "spec.entry"], "{errs:#?}");
    assert!(
        errs[0].reason.contains("Lane \"blue\" is not declared"),
        "{errs:#?}"
    );
    assert!(
        errs[1].reason.contains("TagPolicy \"edge\" does not exist"),
        "{errs:#?}"
    );
}

#[test]
fn the_owned_rule_is_added_after_the_users_rules_then_only_its_percent_changes() {
    let mut s = set(&[LANE, EDGE, &rollout("r", "gray", "10s")]);
    assert_eq!(s.rollout_percent("default", "r"), None);
    s.set_rollout_percent("default", "r", 5.0).unwrap();
    s.validate().unwrap();
    let rules = edge_rules(&s);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].tag.as_str(), "gray");
    assert_eq!(rules[1].matches.percent, Some(5.0));
    assert_eq!(rules[1].rollout.as_ref().map(|n| n.as_str()), Some("r"));
    s.set_rollout_percent("default", "r", 50.0).unwrap();
    assert_eq!(edge_rules(&s).len(), 2);
    assert_eq!(s.rollout_percent("default", "r"), Some(50.0));
    // Written and read back as YAML: the mark survives (that is how every replica and
    // sidecar knows the rule's owner).
    let back = RuleSet::from_yaml("x", &s.to_yaml()).unwrap();
    assert_eq!(back.rollout_percent("default", "r"), Some(50.0));
    s.release_rollout_rule("default", "r");
    assert_eq!(edge_rules(&s)[1].rollout, None);
    assert_eq!(edge_rules(&s)[1].matches.percent, Some(50.0));
    s.validate().unwrap();
}

#[test]
fn a_new_run_takes_over_the_zero_percent_rule_an_earlier_rollback_left() {
    let mut s = set(&[LANE, EDGE, &rollout("r", "gray", "10s")]);
    s.set_rollout_percent("default", "r", 5.0).unwrap();
    // Rolled back: 0%, released.
    s.set_rollout_percent("default", "r", 0.0).unwrap();
    s.release_rollout_rule("default", "r");
    s.set_rollout_percent("default", "r", 5.0).unwrap();
    let rules = edge_rules(&s);
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(rules[1].matches.percent, Some(5.0));
    // A user's rule that lets users in is never taken over.
    s.set_rollout_percent("default", "r", 30.0).unwrap();
    s.release_rollout_rule("default", "r");
    s.set_rollout_percent("default", "r", 5.0).unwrap();
    assert_eq!(edge_rules(&s).len(), 3);
}

#[test]
fn a_mark_naming_no_rollout_or_a_tampered_owned_rule_is_refused() {
    let marked = |matches: &str, owner: &str| {
        format!(
            "apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {{name: edge}}\nspec:\n  services: [frontend]\n  rules:\n    - tag: gray\n      match: {matches}\n      rollout: {owner}\n"
        )
    };
    let e = only(set_errors(&[
        LANE,
        &marked("{percent: 5, hashBy: {header: x-user-id}}", "ghost"),
    ]));
    assert_eq!(e.path, "spec.rules[0].rollout");
    assert!(
        e.reason.contains("LaneRollout \"ghost\" does not exist"),
        "{e}"
    );
    let e = only(set_errors(&[
        LANE,
        &rollout("r", "gray", "10s"),
        &marked("{percent: 5, hashBy: {header: x-other}}", "r"),
    ]));
    assert_eq!(e.path, "spec.rules[0].rollout");
    assert!(e.reason.contains("as the rollout writes it"), "{e}");
}

#[test]
fn a_person_cannot_touch_an_active_rollout_or_its_rule() {
    let mut old = set(&[LANE, EDGE, &rollout("r", "gray", "10s")]);
    old.set_rollout_percent("default", "r", 5.0).unwrap();
    let active = |_: &LaneRollout| true;
    // Re-applying the TagPolicy as the user wrote it drops the owned rule.
    let mut new = old.clone();
    new.merge(set(&[LANE, EDGE]));
    let e = only(new.check_rollout_change(&old, active).unwrap_err());
    assert_eq!(e.path, "spec.rules[1]");
    assert!(
        e.reason
            .contains("cannot be removed while the rollout is active"),
        "{e}"
    );
    // Changing its percent by hand.
    let mut new = old.clone();
    new.set_rollout_percent("default", "r", 90.0).unwrap();
    let e = only(new.check_rollout_change(&old, active).unwrap_err());
    assert_eq!(e.path, "spec.rules[1].rollout");
    assert!(e.reason.contains("while it is active"), "{e}");
    // A mark written by hand for a rollout that ended, or for none: the error says so
    // (not "while it is active"), and restoring such a revision gives the rule back.
    let ended = |_: &LaneRollout| false;
    let mut released = old.clone();
    released.release_rollout_rule("default", "r");
    let e = only(old.check_rollout_change(&released, ended).unwrap_err());
    assert!(e.reason.contains("\"r\" has ended"), "{e}");
    let mut restored = old.clone();
    restored.release_ended_rollout_rules(ended);
    restored.check_rollout_change(&released, ended).unwrap();
    assert_eq!(edge_rules(&restored)[1].matches.percent, Some(5.0));
    let mut kept = old.clone();
    kept.release_ended_rollout_rules(active);
    assert_eq!(kept, old, "an active rollout keeps its rule");
    let mut ghost = old.clone();
    ghost.remove(Kind::LaneRollout, "default", "r");
    let e = only(ghost.check_rollout_change(&released, ended).unwrap_err());
    assert!(e.reason.contains("there is no LaneRollout \"r\""), "{e}");
    // Changing or deleting the rollout itself.
    let mut new = old.clone();
    new.merge(set(&[LANE, EDGE, &rollout("r", "gray", "20s")]));
    let errs = new.check_rollout_change(&old, active).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "spec" && e.reason.contains("is active")),
        "{errs:#?}"
    );
    let mut new = old.clone();
    new.remove(Kind::LaneRollout, "default", "r");
    assert!(new.check_rollout_change(&old, active).is_err());
    // Other changes pass.
    let mut new = old.clone();
    new.merge(set(&[&route_policy("orders", "orders", "")]));
    new.check_rollout_change(&old, active).unwrap();
    // Once the rollout ended (and released its rule), all of it is the user's again.
    let mut ended = old.clone();
    ended.release_rollout_rule("default", "r");
    let mut new = ended.clone();
    new.merge(set(&[LANE, EDGE]));
    new.remove(Kind::LaneRollout, "default", "r");
    new.check_rollout_change(&ended, |_| false).unwrap();
}

#[test]
fn a_lane_has_one_active_rollout_at_a_time() {
    let old = set(&[LANE, EDGE, &rollout("first", "gray", "10s")]);
    let mut new = old.clone();
    new.merge(set(&[LANE, EDGE, &rollout("second", "gray", "10s")]));
    let e = only(new.check_rollout_change(&old, |_| true).unwrap_err());
    assert_eq!(e.path, "spec.lane");
    assert_eq!(e.name.as_deref(), Some("second"));
    assert!(
        e.reason
            .contains("already has an active rollout, LaneRollout \"first\""),
        "{e}"
    );
    // The first one finished: the second may start.
    new.check_rollout_change(&old, |r| r.metadata.name.as_str() == "second")
        .unwrap();
    // Whatever the names' order, the one running keeps its lane and the error names
    // the one the change brings.
    let old = set(&[LANE, EDGE, &rollout("zeta", "gray", "10s")]);
    let mut new = old.clone();
    new.merge(set(&[LANE, EDGE, &rollout("alpha", "gray", "10s")]));
    let e = only(new.check_rollout_change(&old, |_| true).unwrap_err());
    assert_eq!(e.name.as_deref(), Some("alpha"), "{e}");
    assert!(e.reason.contains("LaneRollout \"zeta\""), "{e}");
}

#[test]
fn reports_come_twice_per_shortest_analysis_interval_at_most_every_second() {
    assert_eq!(set(&[LANE, EDGE]).traffic_report_interval(), None);
    let s = set(&[
        LANE,
        EDGE,
        &rollout("a", "gray", "10s"),
        &rollout("b", "gray", "4s"),
    ]);
    assert_eq!(
        s.traffic_report_interval(),
        Some(std::time::Duration::from_secs(2))
    );
    let s = set(&[LANE, EDGE, &rollout("a", "gray", "1s")]);
    assert_eq!(
        s.traffic_report_interval(),
        Some(std::time::Duration::from_secs(1))
    );
}

#[test]
fn a_rollout_cannot_start_behind_a_rule_giving_its_tag_to_a_share_of_all_users() {
    // What a Succeeded run leaves: its rule, unmarked, at its last percent.
    let edge = |percent: &str| {
        format!(
            "{EDGE}    - tag: gray\n      match: {{percent: {percent}, hashBy: {{header: x-user-id}}}}\n"
        )
    };
    let ended = set(&[LANE, &edge("25")]);
    let active = |_: &LaneRollout| true;
    let next = set(&[LANE, &edge("25"), &rollout("r2", "gray", "10s")]);
    let e = only(next.check_rollout_change(&ended, active).unwrap_err());
    assert_eq!(e.path, "spec.entry", "{e}");
    assert!(
        e.reason.contains(
            "TagPolicy \"edge\"'s spec.rules[1] already gives tag \"gray\" to 25% of users"
        ),
        "{e}"
    );
    // Set to 0% in the same apply, the new run takes it over; the testers' rule (a
    // header condition) never blocks a start; a running rollout is not judged again.
    let mut zeroed = set(&[LANE, &edge("0"), &rollout("r2", "gray", "10s")]);
    zeroed.check_rollout_change(&ended, active).unwrap();
    zeroed.set_rollout_percent("default", "r2", 5.0).unwrap();
    assert_eq!(edge_rules(&zeroed).len(), 2, "taken over, not added");
    let mut started = next;
    started.set_rollout_percent("default", "r2", 5.0).unwrap();
    started.check_rollout_change(&started, active).unwrap();
    set(&[LANE, EDGE, &rollout("r", "gray", "10s")])
        .check_rollout_change(&set(&[LANE, EDGE]), active)
        .unwrap();
}
