//! Manual control with users in the mesh (`graylane rollout pause|resume|promote`,
//! `POST /api/v1/rollouts/{name}:abort`), and `graylane explain` naming the share a
//! rollout lets in. The API's own refusals (typos, viewers, hostile paths) are
//! `rollout_api.rs`'s; here, what each action does to the users' routing.

use std::time::Duration;

use graylane_tests::{ControlPlane, eventually, http_post, write_file};

use super::mesh::{self, Flags, Mesh, NAME, rollout, rollout_revisions, rule_at, wait_acked};
use super::traffic::{self, Traffic};
use super::{USERS, apply, follow};

/// Every sidecar of the mesh.
const SIDECARS: usize = 5;

/// Waits until the rollout reached `count` verdicts; returns its status.
fn verdicts_reach(cp: &ControlPlane, count: usize) -> serde_json::Value {
    eventually(
        Duration::from_secs(20),
        &format!("{count} verdicts"),
        || {
            let status = mesh::status(cp)?;
            (mesh::verdicts(&status).len() >= count).then_some(status)
        },
    )
}

#[test]
fn pause_holds_past_passing_verdicts_resume_advances_promote_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let mesh = Mesh::start(dir, &cp, &cp.url(), &Flags::default());
    let traffic = Traffic::start(mesh.frontend.sidecar.inbound, USERS, 2, Duration::ZERO);
    let steps = [(10, "2s"), (30, "2s"), (60, "2s"), (100, "2s")];
    apply(&cp, &mesh, dir, &rollout(&steps, ""));
    follow(&cp, Duration::from_secs(10), "step 1", |p, owned| {
        p == 10.0 && owned
    });
    cp.cli(&["rollout", "pause", NAME]).assert_ok();
    let paused = mesh::status(&cp).unwrap();
    assert_eq!(paused["state"], "Paused", "{paused:#}");
    let (step, percent) = (paused["step"].clone(), paused["percent"].clone());

    // Three intervals more, passing ones among them, well past the 2 s hold: no step.
    let seen = mesh::verdicts(&paused).len();
    let after = verdicts_reach(&cp, seen + 3);
    assert!(
        mesh::verdicts(&after)[seen..].iter().any(|v| v == "pass"),
        "{after:#}"
    );
    assert_eq!(
        (&after["state"], &after["step"], &after["percent"]),
        (&"Paused".into(), &step, &percent),
        "{after:#}"
    );
    assert_eq!(rule_at(&cp, None), Some((percent.as_f64().unwrap(), true)));

    cp.cli(&["rollout", "resume", NAME]).assert_ok();
    let before = percent.as_f64().unwrap();
    follow(&cp, Duration::from_secs(15), "the next step", |p, _| {
        p > before
    });

    let out = cp.cli(&["rollout", "promote", NAME, "-o", "json"]);
    let promoted = out.assert_ok().json();
    assert_eq!(promoted["state"], "Succeeded", "{promoted:#}");
    assert_eq!(
        rule_at(&cp, None),
        Some((100.0, false)),
        "the last step, released"
    );
    let revisions = rollout_revisions(&cp);
    let (last, _, summary) = revisions.last().unwrap().clone();
    assert!(summary.contains("promoted by"), "{revisions:?}");
    let percents: Vec<f64> = revisions.iter().map(|r| r.1).collect();
    assert!(percents.is_sorted(), "never backwards: {revisions:?}");

    // Everyone is in once the sidecars have the promotion.
    wait_acked(&cp, last, SIDECARS, Duration::from_secs(10));
    let frontend_has = |s: &traffic::Sample| s.revision >= last;
    eventually(
        Duration::from_secs(10),
        "requests routed by the promotion",
        || (traffic.samples().iter().filter(|s| frontend_has(s)).count() > 50).then_some(()),
    );
    let samples = traffic.stop();
    assert!(samples.iter().all(|s| s.consistent() && s.status == 200));
    assert!(
        samples
            .iter()
            .filter(|s| frontend_has(s))
            .all(|s| s.in_lane())
    );

    // Over: no action applies any more, and the refusal names the state.
    let abort = cp.cli(&["rollout", "abort", NAME]);
    assert_ne!(abort.code, 0, "{abort:?}");
    assert!(abort.stderr.contains("Succeeded"), "{abort:?}");
}

#[test]
fn abort_takes_users_out_at_once_and_explain_names_the_share() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let mesh = Mesh::start(dir, &cp, &cp.url(), &Flags::default());
    let traffic = Traffic::start(mesh.frontend.sidecar.inbound, USERS, 1, Duration::ZERO);
    apply(&cp, &mesh, dir, &rollout(&[(50, "1m"), (100, "1m")], ""));
    follow(&cp, Duration::from_secs(10), "step 1", |p, owned| {
        p == 50.0 && owned
    });
    let (revision, _, _) = rollout_revisions(&cp)[0].clone();
    wait_acked(&cp, revision, SIDECARS, Duration::from_secs(10));

    // One user the mesh lets in, one it keeps out; explain says the same of each.
    let entry = mesh.frontend.sidecar.inbound;
    let asked: Vec<_> = (0..40).map(|u| traffic::ask(entry, Some(u), "")).collect();
    let inside = asked.iter().find(|s| s.in_lane()).unwrap().user.unwrap();
    let outside = asked.iter().find(|s| !s.in_lane()).unwrap().user.unwrap();
    for (user, verdict) in [
        (inside, "this one is among"),
        (outside, "this one is not among"),
    ] {
        let header = format!("x-user-id=user-{user}");
        let out = cp.cli(&[
            "explain",
            "--service",
            "orders",
            "--entry",
            "frontend",
            "--header",
            &header,
        ]);
        let text = &out.assert_ok().stdout;
        let note =
            format!("LaneRollout {NAME} lets 50% of users in, by header x-user-id: {verdict} them");
        assert!(text.contains(&note), "user-{user}: {text}");
    }

    // An operator re-applying their TagPolicy file (without the rollout's rule) is
    // refused, naming the rule; the share stays.
    let rules = write_file(dir, "rules.yaml", mesh::RULES);
    let out = cp.cli(&["rules", "apply", "-f", &rules]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("spec.rules[1]")
            && out
                .stderr
                .contains("cannot be removed while the rollout is active"),
        "{out:?}"
    );
    assert_eq!(rule_at(&cp, None), Some((50.0, true)));
    // A user left out cannot let themselves in with the tag: the entry strips it.
    let forged = traffic::ask(entry, Some(outside), "Gray-Publish: gray\r\n");
    assert!(!forged.in_lane() && forged.consistent(), "{forged:?}");

    // The other door: the HTTP API.
    let (code, body) = http_post(cp.http, &format!("/api/v1/rollouts/{NAME}:abort"), "");
    assert_eq!(code, 200, "{body}");
    let aborted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(aborted["state"], "RolledBack", "{aborted:#}");
    assert!(
        aborted["reason"]
            .as_str()
            .unwrap()
            .starts_with("aborted by"),
        "{aborted:#}"
    );
    assert_eq!(rule_at(&cp, None), Some((0.0, false)));
    let (aborted_at, _, _) = rollout_revisions(&cp).last().unwrap().clone();
    wait_acked(&cp, aborted_at, SIDECARS, Duration::from_secs(10));
    for user in [inside, outside] {
        let s = traffic::ask(entry, Some(user), "");
        assert!(!s.in_lane() && s.consistent(), "{s:?}");
    }
    let tester = traffic::ask(entry, Some(inside), "x-user-group: testers\r\n");
    assert!(tester.in_lane() && tester.consistent(), "{tester:?}");
    let samples = traffic.stop();
    assert!(
        samples
            .iter()
            .filter(|s| s.revision >= aborted_at)
            .all(|s| !s.in_lane())
    );
    assert!(samples.iter().all(|s| s.consistent() && s.status == 200));
}
