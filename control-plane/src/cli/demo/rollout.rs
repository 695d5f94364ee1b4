//! Act two of `graylane demo`: the gray lane released progressively (release.md), once
//! with a good build of orders v2 and once with a bad one.
//!
//! ```text
//! 200 users ─► frontend ─► orders v1 | v2 ─► payments       (~100 requests/s)
//! gray-rollout.yaml     LaneRollout gray-demo:   10% → 50% → 100% of users, a verdict
//!                       every 2 s                → Succeeded, release-all
//! orders v2 redeployed answering 500
//! gray-rollout-2.yaml   LaneRollout gray-demo-2: 10%, 2 failing verdicts → RolledBack
//! ```
//! Steps and verdicts are printed as the control plane decides them: the demo polls
//! `GET /api/v1/rollouts/NAME` every 200 ms, as `graylane rollout status` would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::procs::{Proc, get};
use super::{Instance, apply_rules, wait_for};
use crate::cli::CliError;

mod users;

use self::users::{USERS, Users, orders_version};

/// The first rollout, with the edge back to testers only and orders v1 for untagged
/// users: applying it again also takes every user out of the lane.
const FIRST: &str = include_str!("../../../../deploy/rules/gray-rollout.yaml");
/// The next build's rollout.
const SECOND: &str = include_str!("../../../../deploy/rules/gray-rollout-2.yaml");
/// How often the demo asks for a rollout's status.
const POLL: Duration = Duration::from_millis(200);
/// Bound on one rollout (each takes ~10 s at the files' 2 s holds and intervals).
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs act two on the mesh of act one; `orders_v2` is redeployed as a bad build.
pub(super) async fn act_two(
    dir: &Path,
    url: &str,
    http: SocketAddr,
    entry: SocketAddr,
    orders_v2: &mut Instance,
) -> Result<(), CliError> {
    let began = Instant::now();
    println!(
        "\nAct two: a progressive release of the gray lane (deploy/rules/gray-rollout.yaml): \
         edge tags testers only, orders serves v1 to everyone else, and LaneRollout gray-demo \
         lets 10%, 50%, then 100% of users into the lane, judged every 2 s.\n\
         {USERS} users (x-user-id: user-0..user-{}) ask the frontend all along, ~100 requests/s.",
        USERS - 1
    );
    let users = Users::start(entry);
    apply_rules(url, "gray-rollout.yaml", FIRST).await?;
    let (first, _) = watch(http, "gray-demo", &users)?;
    expect_state(&first, "gray-demo", "Succeeded")?;

    println!(
        "\nThe next build of orders v2 answers 500. Users leave the lane first (gray-rollout.yaml \
         again: edge tags testers only), the build is deployed, and LaneRollout gray-demo-2 \
         (deploy/rules/gray-rollout-2.yaml) releases it the same way."
    );
    apply_rules(url, "gray-rollout.yaml", FIRST).await?;
    rules_in_force(http, "the edge tagging testers only", |rules| {
        edge_rules(rules).is_some_and(|r| r.len() == 1)
    })?;
    redeploy(dir, orders_v2, &["--status", "500"])?;
    apply_rules(url, "gray-rollout-2.yaml", SECOND).await?;
    let (second, seen) = watch(http, "gray-demo-2", &users)?;
    expect_state(&second, "gray-demo-2", "RolledBack")?;
    let (revision, acked) = seen.ended_in_force;
    let since = |t: Instant| t.saturating_duration_since(seen.started).as_secs_f64();
    let last_v2 = users
        .last_v2()
        .map_or_else(|| "none".to_string(), |t| format!("+{:.2} s", since(t)));
    println!(
        "   from the first step in force (users let into the failing lane, +0.0 s): first \
         failing verdict +{:.2} s, rollback seen +{:.2} s, in force at every sidecar \
         (revision {revision}) +{:.2} s; the demo's last request answered by v2 was sent \
         at {last_v2}",
        seen.first_fail.map_or(0.0, since),
        since(seen.ended),
        since(acked),
    );
    users_are_out(&users, acked)?;
    tester_keeps_access(entry)?;
    drop(users);
    // Back to act one's mesh, which the "Try it" lines describe; the rollouts stay
    // for `graylane rollout status`.
    redeploy(dir, orders_v2, &[])?;
    apply_rules(url, "gray-release.yaml", super::RULES).await?;
    println!(
        "orders v2 is back to its good build and gray-release.yaml is in force again \
         (testers and 10% of users in the lane)"
    );
    println!("act two done in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

/// When a rollout's decisions were seen, and in force at every sidecar.
struct Seen {
    /// Every sidecar holds the first step: users are in the lane from here.
    started: Instant,
    first_fail: Option<Instant>,
    /// The demo saw the rollout end (at most one poll after the decision).
    ended: Instant,
    /// Every sidecar holds the end (revision, when).
    ended_in_force: (u64, Instant),
}

/// Polls rollout `name` until it is over, printing each new decision and verdict with
/// the share of the demo's users in the lane during the step (counted once every
/// sidecar holds the step); the last view.
fn watch(http: SocketAddr, name: &str, users: &Users) -> Result<(Value, Seen), CliError> {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    let path = format!("/api/v1/rollouts/{name}");
    let (mut verdicts, mut decisions) = (0, 0);
    // The step the verdicts being printed judge, and since when it is in force.
    let (mut step, mut step_since) = (String::new(), Instant::now());
    let mut seen = Seen {
        started: Instant::now(),
        first_fail: None,
        ended: Instant::now(),
        ended_in_force: (0, Instant::now()),
    };
    loop {
        let view = match get(http, &path, &[]) {
            Ok((200, _, body)) => serde_json::from_str::<Value>(&body).ok(),
            _ => None,
        };
        if let Some(view) = view {
            let now = Instant::now();
            let list = |key: &str| view[key].as_array().cloned().unwrap_or_default();
            for v in list("verdicts").iter().skip(verdicts) {
                if v["verdict"] == "fail" && seen.first_fail.is_none() {
                    seen.first_fail = Some(now);
                }
                println!("{}", verdict_line(name, &step, v, users.since(step_since)));
            }
            let (new, first) = (list("decisions"), decisions == 0);
            for d in new.iter().skip(decisions) {
                println!("rollout {name}: {}", d["what"].as_str().unwrap_or("?"));
            }
            let over = matches!(view["state"].as_str(), Some("Succeeded" | "RolledBack"));
            if new.len() > decisions {
                // The decision is stored before the rules follow it (rollout.rs): wait
                // for the rules, then for every sidecar, before counting users.
                let percent = (!over).then(|| view["percent"].as_f64().unwrap_or(0.0));
                let in_force = rule_in_force(http, name, percent)?;
                step_since = in_force.1;
                if first {
                    seen.started = in_force.1;
                }
                if over {
                    (seen.ended, seen.ended_in_force) = (now, in_force);
                }
            }
            (verdicts, decisions) = (list("verdicts").len(), new.len());
            step = format!(
                "step {}, {}%",
                view["step"].as_u64().unwrap_or(0),
                view["percent"].as_f64().unwrap_or(0.0)
            );
            if over {
                return Ok((view, seen));
            }
        }
        if Instant::now() > deadline {
            return Err(CliError::unavailable(format!(
                "rollout {name} did not end within {ROLLOUT_TIMEOUT:?}; see graylane rollout status {name}"
            )));
        }
        // Polling the API: the demo shows decisions as they are made, not pushed.
        std::thread::sleep(POLL);
    }
}

/// `rollout gray-demo: step 2, 50% — verdict pass (error rate 0% <= 1%; …); lane 212 /
/// base 180 requests; the demo's users in the lane: 101 of 200 users (50.5%)`
fn verdict_line(name: &str, step: &str, v: &Value, share: users::Share) -> String {
    let requests = |side: &str| v[side]["requests"].as_u64().unwrap_or(0);
    let mut line = format!(
        "rollout {name}: {step} — verdict {} ({}); lane {} / base {} requests",
        v["verdict"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or(""),
        requests("lane"),
        requests("base"),
    );
    if share.users > 0 {
        line.push_str(&format!(
            "; the demo's users in the lane: {}",
            share.lane_text()
        ));
    }
    line
}

fn expect_state(view: &Value, name: &str, state: &str) -> Result<(), CliError> {
    if view["state"] == state {
        return Ok(());
    }
    Err(CliError::unavailable(format!(
        "rollout {name} ended {} ({}), not {state}",
        view["state"],
        view["reason"].as_str().unwrap_or("no reason given")
    )))
}

/// Waits until the entry TagPolicy's rule owned by rollout `name` has `percent`
/// (`None`: no rule is owned by it any more, the rollout ended), then until every
/// sidecar has ACKed that revision; the revision, and when.
fn rule_in_force(
    http: SocketAddr,
    name: &str,
    percent: Option<f64>,
) -> Result<(u64, Instant), CliError> {
    rules_in_force(http, &format!("rollout {name}'s rule"), |rules| {
        owned_percent(rules, name) == percent
    })
}

/// Waits until the rules in force pass `ok`, then until every sidecar has ACKed them;
/// their revision, and when the last ACK was seen.
fn rules_in_force(
    http: SocketAddr,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Result<(u64, Instant), CliError> {
    let json = |path: &str| -> Option<Value> {
        let (status, _, body) = get(http, path, &[]).ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    };
    let revision = wait_for(
        Duration::from_secs(20),
        &format!("{what} in the rules in force"),
        || {
            let rules = json("/api/v1/rules")?;
            ok(&rules).then(|| rules["revision"].as_u64())?
        },
    )?;
    wait_for(
        Duration::from_secs(20),
        &format!("every sidecar to hold revision {revision}"),
        || {
            let sidecars = json("/api/v1/sidecars")?;
            let all = sidecars.as_array()?.iter().all(|s| {
                s["ackedRevision"]
                    .as_u64()
                    .is_some_and(|acked| acked >= revision)
            });
            all.then(|| (revision, Instant::now()))
        },
    )
}

/// The percent of the edge TagPolicy's rule marked `rollout: NAME`, in the rules of
/// `GET /api/v1/rules`.
fn owned_percent(rules: &Value, name: &str) -> Option<f64> {
    let owned = edge_rules(rules)?
        .iter()
        .find(|rule| rule["rollout"] == name)?;
    owned["match"]["percent"].as_f64()
}

/// The rules of the edge TagPolicy (the demo's entry).
fn edge_rules(rules: &Value) -> Option<&Vec<Value>> {
    rules["resources"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "TagPolicy" && r["metadata"]["name"] == "edge")?["spec"]["rules"]
        .as_array()
}

/// Replaces `instance`'s app with a new build of it (`extra` flags) on the same
/// address, behind the same sidecar: what a deployment of a new build does.
fn redeploy(dir: &Path, instance: &mut Instance, extra: &[&str]) -> Result<(), CliError> {
    instance.app.stop();
    let (service, version) = instance.id.split_once('-').unwrap_or((&instance.id, ""));
    let listen = instance.app_addr.to_string();
    let mut args = vec![
        "--service",
        service,
        "--version",
        version,
        "--listen",
        &listen,
        "--call",
        "payments",
        "--outbound",
        "-",
    ];
    args.extend_from_slice(extra);
    instance.builds += 1;
    let name = format!("app-{}-build-{}", instance.id, instance.builds);
    instance.app = Proc::start(dir, &name, "graylane-demo-app", &args, true)?;
    instance.app.address("addr=")?;
    instance.app.tell(&instance.outbound.to_string())?;
    if !extra.is_empty() {
        println!(
            "orders v2 redeployed ({}): the new build answers 500",
            extra.join(" ")
        );
    }
    Ok(())
}

/// Every user asks again after the rollback is in every sidecar: none is in the
/// lane, none is answered by v2.
fn users_are_out(users: &Users, acked: Instant) -> Result<(), CliError> {
    let share = wait_for(
        Duration::from_secs(15),
        "every demo user to ask again after the rollback",
        || {
            let share = users.since(acked);
            (share.users == USERS).then_some(share)
        },
    )?;
    println!(
        "after the rollback every user asked again: {} of {} in the lane, {} answered by orders v2",
        share.in_lane, share.users, share.on_v2
    );
    Ok(())
}

/// A tester is still tagged into the lane by the edge's own rule, and reaches v2.
fn tester_keeps_access(entry: SocketAddr) -> Result<(), CliError> {
    let (status, _, body) = get(entry, "/", &[("x-user-group", "testers")])?;
    let frontend: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let orders = &frontend["downstream"];
    println!(
        "tester (x-user-group: testers): HTTP {status}, frontend [{}] → orders {} answered {} \
         (the edge's testers rule still tags them into the lane)",
        frontend["tag"].as_str().unwrap_or("untagged"),
        orders_version(orders).unwrap_or_else(|| "?".into()),
        orders["status"].as_u64().unwrap_or(200)
    );
    Ok(())
}
