//! Progressive lane rollouts end to end (release.md), on a real mesh on loopback:
//! frontend (the entry, TagPolicy `edge` with a tester rule) → orders v1, v2 →
//! payments v1, v2, the `gray` lane selecting `version: v2`, 400 distinct users
//! sending requests through the frontend's sidecar with `Graylane-Debug: 1`.
//!
//! What is observed, and how: each answer's hop trail says which rule revision the
//! entry routed it by and which instance served each hop, so every request is tied to
//! the percent of that revision (`rules get --revision`) without racing the driver;
//! the driver's progress is the owned rule's percent in the rules in force, history
//! (revisions by `graylane-rollout/gray-orders`) and its verdict log lines. No test
//! asserts on time; the time from failing to users out of the lane is printed.
//!
//! Tolerances: a user's bucket is a hash of their id, so with 400 users the share let
//! in is the step's percent ± the spread of 400 hashes (±8 points is > 3 standard
//! deviations); which users are in is exact (sticky).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "rollout/manual.rs"]
mod manual;
#[path = "rollout/mesh.rs"]
mod mesh;
#[path = "rollout/recovery.rs"]
mod recovery;
#[path = "rollout/traffic.rs"]
mod traffic;
#[path = "rollout/verdicts.rs"]
mod verdicts;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use graylane_tests::{ControlPlane, eventually, write_file};

use self::mesh::{Flags, Mesh, rollout, rollout_revisions, rule_at};
use self::traffic::{Sample, Traffic};

/// Distinct users (`x-user-id: user-N`).
const USERS: usize = 400;
/// A share of users let in is a step's percent ± this many points.
const TOLERANCE: f64 = 8.0;

/// Applies the rollout `yaml` through the CLI; returns once every sidecar of `mesh`
/// reports at the period it asks for.
fn apply(cp: &ControlPlane, mesh: &Mesh, dir: &Path, yaml: &str) {
    let path = write_file(dir, "rollout.yaml", yaml);
    cp.cli(&["rules", "apply", "-f", &path]).assert_ok();
    mesh.wait_report_period("1s");
}

/// Polls the owned rule's percent until `done(percent, owned)`, within `within`;
/// returns every distinct (percent, owned) seen, in order. The percent of an owned
/// rule never goes down.
fn follow(
    cp: &ControlPlane,
    within: Duration,
    what: &str,
    mut done: impl FnMut(f64, bool) -> bool,
) -> Vec<(f64, bool)> {
    let mut seen: Vec<(f64, bool)> = Vec::new();
    eventually(within, what, || {
        let now = rule_at(cp, None)?;
        if seen.last() != Some(&now) {
            if let Some(&(before, true)) = seen.last() {
                assert!(
                    now.0 >= before || !now.1,
                    "the percent went back from {before} to {}: {seen:?}",
                    now.0
                );
            }
            seen.push(now);
        }
        done(now.0, now.1).then_some(())
    });
    seen
}

/// The users let in at each revision the entry routed by, with that revision's
/// percent (0 before the rollout wrote its rule). Panics if a user was in and out at
/// one revision (not sticky), or a request was served by both v1 and v2.
fn users_in_by_revision(
    cp: &ControlPlane,
    samples: &[Sample],
) -> BTreeMap<u64, (f64, BTreeMap<usize, bool>)> {
    let mut out: BTreeMap<u64, (f64, BTreeMap<usize, bool>)> = BTreeMap::new();
    for s in samples {
        assert_eq!(s.status, 200, "{s:?}");
        assert!(s.consistent(), "one request, both versions: {s:?}");
        let user = s.user.expect("driver samples have a user");
        let (_, users) = out.entry(s.revision).or_insert_with(|| {
            let percent = rule_at(cp, Some(s.revision)).map_or(0.0, |(p, _)| p);
            (percent, BTreeMap::new())
        });
        let before = users.insert(user, s.in_lane());
        assert!(
            before.is_none_or(|b| b == s.in_lane()),
            "user-{user} both in and out of the lane at revision {}",
            s.revision
        );
    }
    out
}

/// At each step's revision (`steps`: revision, percent, summary), the share of users
/// the entry let in is the percent ± `TOLERANCE` (all of them at 100%), and every user
/// let in at one step is in at the next. Before the first, nobody was in.
fn shares_rise_and_stick(cp: &ControlPlane, samples: &[Sample], steps: &[(u64, f64, String)]) {
    let by_revision = users_in_by_revision(cp, samples);
    let mut before: Option<BTreeSet<usize>> = None;
    for (revision, percent, _) in steps {
        let (_, users) = &by_revision[revision];
        // Each step but the last lasts long enough for most users to ask (~1,000
        // requests on an idle machine; fewer on a loaded one, so not every user):
        // a share is read over those who asked. The last one ends after its 2 s hold.
        if *percent < 100.0 {
            assert!(
                users.len() >= USERS * 3 / 4,
                "{} of {USERS} users asked at the {percent}% step",
                users.len()
            );
        }
        let inside: BTreeSet<usize> = users.iter().filter(|u| *u.1).map(|u| *u.0).collect();
        let share = inside.len() as f64 * 100.0 / users.len() as f64;
        eprintln!("{percent}% step (revision {revision}): {share}% of users in the lane");
        assert!(
            (share - percent).abs() <= TOLERANCE,
            "{share}% at the {percent}% step"
        );
        assert!(*percent < 100.0 || share == 100.0, "{share}% at 100%");
        if let Some(before) = &before {
            // Among the users who asked at this step (the last step's short hold may
            // end before every user asked again).
            let left: Vec<_> = before
                .difference(&inside)
                .filter(|u| users.contains_key(*u))
                .collect();
            assert!(
                left.is_empty(),
                "users let in earlier are out at {percent}%: {left:?}"
            );
        }
        before = Some(inside);
    }
    for (_, (percent, users)) in by_revision.range(..steps[0].0) {
        assert_eq!(*percent, 0.0);
        assert!(users.values().all(|inside| !inside), "in before the rule");
    }
}

#[test]
fn steps_let_a_sticky_rising_share_of_users_into_the_whole_lane() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let mesh = Mesh::start(dir, &cp, &cp.url(), &Flags::default());
    let traffic = Traffic::start(mesh.frontend.sidecar.inbound, USERS, 2, Duration::ZERO);
    let started = Instant::now();
    apply(
        &cp,
        &mesh,
        dir,
        &rollout(&[(10, "5s"), (30, "5s"), (60, "5s"), (100, "2s")], ""),
    );
    let seen = follow(
        &cp,
        Duration::from_secs(60),
        "the rollout to end",
        |p, owned| p == 100.0 && !owned,
    );
    let elapsed = started.elapsed();
    let samples = traffic.stop();
    eprintln!(
        "rollout over in {elapsed:?}, {} requests ({:.0}/s); percents seen {seen:?}",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64()
    );

    // One revision per step, then the one that ends it (same percent, rule released).
    let revisions = rollout_revisions(&cp);
    let percents: Vec<f64> = revisions.iter().map(|r| r.1).collect();
    assert_eq!(percents, [10.0, 30.0, 60.0, 100.0, 100.0], "{revisions:?}");
    assert!(revisions[4].2.contains("succeeded"), "{revisions:?}");
    let status = mesh::status(&cp).unwrap();
    assert_eq!(
        (&status["state"], &status["step"]),
        (&"Succeeded".into(), &4.into())
    );
    // A step advances on a passing verdict only; none failed.
    let verdicts = mesh::verdicts(&status);
    assert!(
        verdicts.iter().filter(|v| *v == "pass").count() >= 4,
        "{status:#}"
    );
    assert!(!verdicts.iter().any(|v| v == "fail"), "{status:#}");
    // release-all: every service with lane instances at `all` (here they were
    // already, having no RoutePolicy: the rollout must not have changed that).
    for service in ["orders", "payments"] {
        assert_eq!(mesh::release_of(&cp, service), "all", "{service}");
    }

    shares_rise_and_stick(&cp, &samples, &revisions[..4]);
    // Done: users without the key stay out; the tester rule still tags testers.
    let entry = mesh.frontend.sidecar.inbound;
    let anonymous = traffic::ask(entry, None, "");
    assert!(
        !anonymous.in_lane() && anonymous.consistent(),
        "{anonymous:?}"
    );
    let tester = traffic::ask(entry, None, "x-user-group: testers\r\n");
    assert!(tester.in_lane() && tester.consistent(), "{tester:?}");
}
