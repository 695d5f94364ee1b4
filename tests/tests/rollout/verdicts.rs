//! What the verdicts do: a failing lane (errors, latency) rolls back after `failAfter`
//! failing intervals, testers keep their access; too little traffic gives no verdict
//! and the rollout waits at its step.

use std::path::Path;
use std::time::{Duration, Instant};

use graylane_tests::ControlPlane;

use super::mesh::{self, Flags, Mesh, rollout, rollout_revisions, rule_at, wait_acked};
use super::traffic::{self, Traffic};
use super::{USERS, apply, follow};

/// Every sidecar of the mesh.
const SIDECARS: usize = 5;

/// Applies a one-step rollout at `percent` with `analysis`, with `threads` users'
/// threads sending, and waits for it to roll back. Returns history's summary of the
/// rollback revision. Prints how long users stayed in the failing lane.
fn roll_back(
    dir: &Path,
    cp: &ControlPlane,
    mesh: &Mesh,
    percent: u32,
    analysis: &str,
    threads: usize,
) -> String {
    let traffic = Traffic::start(
        mesh.frontend.sidecar.inbound,
        USERS,
        threads,
        Duration::ZERO,
    );
    let applied = Instant::now();
    apply(
        cp,
        mesh,
        dir,
        &rollout(&[(percent, "1m"), (100, "1m")], analysis),
    );
    let mut first_fail: Option<Instant> = None;
    let seen = follow(cp, Duration::from_secs(40), "the rollback", |p, owned| {
        if first_fail.is_none() && cp.proc.log_text().contains("verdict=Fail") {
            first_fail = Some(Instant::now());
        }
        p == 0.0 && !owned
    });
    let zero = Instant::now();
    assert_eq!(seen.first(), Some(&(f64::from(percent), true)), "{seen:?}");
    let revisions = rollout_revisions(cp);
    let (revision, _, summary) = revisions.last().unwrap().clone();
    wait_acked(cp, revision, SIDECARS, Duration::from_secs(10));
    let acked = Instant::now();
    let samples = traffic.stop();
    // The first request let into the lane already met the broken v2.
    let lane: Vec<_> = samples.iter().filter(|s| s.in_lane()).collect();
    let (first, last) = (lane.first().unwrap().at, lane.last().unwrap().at);
    let first_fail = first_fail.unwrap_or(zero);
    eprintln!(
        "MEASURED ({analysis:?}, interval 2s, failAfter 2, {percent}%): apply → first lane \
         request {:?}; first lane request → percent 0 {:?}, → every sidecar ACKed {:?}; \
         first failing verdict seen → ACKed {:?}; last lane request {:?} after the first",
        first - applied,
        zero - first,
        acked - first,
        acked - first_fail,
        last - first,
    );
    assert!(samples.iter().all(|s| s.consistent()), "never mixed");
    assert!(
        samples
            .iter()
            .filter(|s| s.revision >= revision)
            .all(|s| !s.in_lane()),
        "users routed by the rollback revision are out"
    );
    for user in 0..USERS {
        let s = traffic::ask(mesh.frontend.sidecar.inbound, Some(user), "");
        assert!(!s.in_lane() && s.consistent() && s.status == 200, "{s:?}");
    }
    assert_eq!(
        revisions.len(),
        2,
        "the step, then the rollback: {revisions:?}"
    );
    assert!(
        summary.contains("rolled back: 2 failing intervals in a row"),
        "{summary}"
    );
    summary
}

#[test]
fn a_lane_answering_errors_rolls_back_and_testers_keep_access() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let flags = Flags {
        orders_v2: &["--status", "500"],
    };
    let mesh = Mesh::start(dir, &cp, &cp.url(), &flags);
    let reason = roll_back(dir, &cp, &mesh, 20, "", 2);
    // orders v2 fails every request, payments v2 none: about half the lane's requests
    // (how many of each fall in the failing intervals depends on the reports' timing).
    let rate: f64 = reason
        .split("error rate ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no error rate in {reason}"));
    assert!(reason.contains("% > 1%") && rate >= 20.0, "{reason}");
    let tester = traffic::ask(
        mesh.frontend.sidecar.inbound,
        Some(1),
        "x-user-group: testers\r\n",
    );
    assert!(
        tester.in_lane() && tester.orders.as_deref() == Some("v2") && tester.consistent(),
        "testers still reach orders v2: {tester:?}"
    );
    // Over: the rule is the user's again, at 0%, and nothing else was released.
    assert_eq!(rule_at(&cp, None), Some((0.0, false)));
    assert_eq!(mesh::release_of(&cp, "orders"), "all");
}

#[test]
fn a_slow_lane_rolls_back_on_its_p99_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let flags = Flags {
        orders_v2: &["--delay", "300ms"],
    };
    let mesh = Mesh::start(dir, &cp, &cp.url(), &flags);
    // Lane requests take 300 ms: more threads, so each interval still has 20 of them.
    let reason = roll_back(dir, &cp, &mesh, 50, "maxP99Ratio: 1.5", 6);
    assert!(
        reason.contains("p99 ratio") && reason.contains("> 1.5"),
        "{reason}"
    );
    assert!(
        !reason.contains("error rate"),
        "no error failed it: {reason}"
    );
}

#[test]
fn too_little_traffic_gives_no_verdict_and_the_step_holds() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let mesh = Mesh::start(dir, &cp, &cp.url(), &Flags::default());
    // About 10 requests a second, 1 in 10 in the lane: ~4 lane requests (two hops
    // each) an interval, under minRequests 20.
    let traffic = Traffic::start(
        mesh.frontend.sidecar.inbound,
        USERS,
        1,
        Duration::from_millis(100),
    );
    apply(&cp, &mesh, dir, &rollout(&[(10, "2s"), (100, "2s")], ""));
    // Five intervals: two and a half holds.
    let status = graylane_tests::eventually(Duration::from_secs(30), "5 verdicts", || {
        let status = mesh::status(&cp)?;
        (mesh::verdicts(&status).len() >= 5).then_some(status)
    });
    let samples = traffic.stop();
    let list = status["verdicts"].as_array().unwrap();
    for verdict in list {
        assert_eq!(verdict["verdict"], "none", "{status:#}");
        let reason = verdict["reason"].as_str().unwrap();
        assert!(reason.contains("< minRequests 20"), "{reason}");
    }
    assert!(
        list.iter()
            .any(|v| v["lane"]["requests"].as_u64() > Some(0)),
        "some lane traffic was counted, only not enough: {status:#}"
    );
    assert!(samples.iter().any(|s| s.in_lane()));
    assert_eq!(status["state"], "Progressing", "{status:#}");
    assert_eq!(status["step"], 1, "{status:#}");
    assert_eq!(rule_at(&cp, None), Some((10.0, true)), "still at step 1");
    let revisions = rollout_revisions(&cp);
    assert_eq!(revisions.len(), 1, "no step, no rollback: {revisions:?}");
}

#[test]
fn a_demo_app_delay_typo_is_refused_naming_the_flag() {
    // No unit, a sign, past a minute (every caller would hang): refused at start.
    for bad in ["300", "-1s", "2h", ""] {
        let out = std::process::Command::new(graylane_tests::bin("graylane-demo-app"))
            .args(["--service", "orders", "--version", "v2"])
            .arg(format!("--delay={bad}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(
            stderr.contains("invalid value") && stderr.contains("--delay"),
            "{bad}: {stderr}"
        );
    }
}
