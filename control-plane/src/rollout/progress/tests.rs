use graylane_routing::{Analysis, Duration, HashKey, LaneRolloutSpec, Name, OnSuccess, Step};

use super::*;

fn spec(on_success: OnSuccess) -> LaneRolloutSpec {
    let step = |percent, hold_ms| Step {
        percent,
        hold: Duration::from_millis(hold_ms),
    };
    LaneRolloutSpec {
        lane: Name::new("gray").unwrap(),
        entry: Name::new("edge").unwrap(),
        hash_by: HashKey::Header("x-user-id".into()),
        steps: vec![step(5.0, 2_000), step(25.0, 2_000), step(100.0, 1_000)],
        analysis: Analysis {
            fail_after: 2,
            ..Analysis::default()
        },
        on_success,
    }
}

fn verdict(at_ms: i64, verdict: Outcome) -> Verdict {
    Verdict {
        at_ms,
        verdict,
        reason: format!("{verdict:?}"),
        lane: Side::default(),
        base: Side::default(),
    }
}

#[test]
fn a_step_advances_only_after_its_hold_and_on_a_pass() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 0);
    assert_eq!(p.target(&s).percent, 5.0);
    p.on_verdict(&s, verdict(1_000, Outcome::Pass));
    assert_eq!(p.step, 0, "hold not over");
    p.on_verdict(&s, verdict(2_500, Outcome::None));
    assert_eq!(p.step, 0, "no verdict never advances");
    p.on_verdict(&s, verdict(3_000, Outcome::Pass));
    assert_eq!((p.step, p.step_started_ms), (1, 3_000));
    assert_eq!(p.target(&s).percent, 25.0);
    assert_eq!(p.decisions.last().unwrap().what, "step 2: 25%");
}

#[test]
fn fail_after_failures_in_a_row_roll_back_and_a_pass_or_none_between_resets_or_keeps() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 0);
    p.on_verdict(&s, verdict(1_000, Outcome::Fail));
    p.on_verdict(&s, verdict(1_500, Outcome::Pass));
    p.on_verdict(&s, verdict(2_000, Outcome::Fail));
    assert_eq!(p.phase, Phase::Progressing, "not in a row");
    // No verdict neither breaks nor extends the streak.
    p.on_verdict(&s, verdict(2_500, Outcome::None));
    p.on_verdict(&s, verdict(3_000, Outcome::Fail));
    assert_eq!(p.phase, Phase::RolledBack);
    let reason = p.reason.clone().unwrap();
    assert!(
        reason.starts_with("2 failing intervals in a row: Fail"),
        "{reason}"
    );
    let target = p.target(&s);
    assert_eq!(
        (target.percent, target.end, target.release_all),
        (0.0, true, false)
    );
    // Over is over: later verdicts change nothing.
    p.on_verdict(&s, verdict(9_000, Outcome::Pass));
    assert_eq!(p.phase, Phase::RolledBack);
}

#[test]
fn the_last_step_passing_succeeds_with_on_success() {
    for (on_success, release_all) in [(OnSuccess::ReleaseAll, true), (OnSuccess::Hold, false)] {
        let s = spec(on_success);
        let mut p = Progress::start(&s, 0);
        for at in [2_000, 4_000, 5_000] {
            p.on_verdict(&s, verdict(at, Outcome::Pass));
        }
        assert_eq!(p.phase, Phase::Succeeded);
        let target = p.target(&s);
        assert_eq!(
            (target.percent, target.end, target.release_all),
            (100.0, true, release_all)
        );
    }
}

#[test]
fn paused_does_not_advance_but_still_rolls_back() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 0);
    p.act(&s, Action::Pause, "admin", 100).unwrap();
    p.on_verdict(&s, verdict(5_000, Outcome::Pass));
    assert_eq!((p.phase, p.step), (Phase::Paused, 0));
    assert!(p.act(&s, Action::Pause, "admin", 200).is_err());
    p.act(&s, Action::Resume, "admin", 5_100).unwrap();
    p.on_verdict(&s, verdict(5_500, Outcome::Pass));
    assert_eq!(
        p.step, 1,
        "the hold ran while paused: the next pass advances"
    );
    p.act(&s, Action::Pause, "admin", 5_600).unwrap();
    p.on_verdict(&s, verdict(6_000, Outcome::Fail));
    p.on_verdict(&s, verdict(7_000, Outcome::Fail));
    assert_eq!(p.phase, Phase::RolledBack);
}

#[test]
fn promote_jumps_to_the_end_and_abort_rolls_back_and_both_end_it() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 0);
    p.act(&s, Action::Promote, "alice", 10).unwrap();
    assert_eq!((p.phase, p.step), (Phase::Succeeded, 2));
    assert!(
        p.decisions
            .last()
            .unwrap()
            .what
            .contains("promoted by alice")
    );
    let e = p.act(&s, Action::Abort, "alice", 20).unwrap_err();
    assert!(e.contains("over"), "{e}");
    let mut p = Progress::start(&s, 0);
    p.act(&s, Action::Abort, "bob", 10).unwrap();
    assert_eq!(p.phase, Phase::RolledBack);
    assert_eq!(p.reason.as_deref(), Some("aborted by bob"));
    assert!(p.act(&s, Action::Resume, "bob", 20).is_err());
}

#[test]
fn a_run_knows_its_spec_and_survives_a_json_round_trip() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 42);
    p.on_verdict(&s, verdict(1_000, Outcome::Fail));
    let text = serde_json::to_string(&p).unwrap();
    let back: Progress = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
    assert!(back.is_of(&s));
    let mut other = s.clone();
    other.steps[0].percent = 6.0;
    assert!(!back.is_of(&other));
}

#[test]
fn histories_are_bounded() {
    let s = spec(OnSuccess::ReleaseAll);
    let mut p = Progress::start(&s, 0);
    for i in 0..100 {
        p.on_verdict(&s, verdict(i, Outcome::None));
    }
    assert_eq!(p.verdicts.len(), KEPT_VERDICTS);
    assert_eq!(p.verdicts.last().unwrap().at_ms, 99);
}
