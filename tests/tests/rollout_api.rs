//! `graylane rollout` and `/api/v1/rollouts` (release.md, "Manual control" and "Seeing
//! it") against a real control plane on a file store: status as a table and as JSON,
//! the API's reads, pause → resume → promote and abort through both doors, what each
//! leaves in the rules and in history, and what a typo, a viewer or a hostile path get.
//!
//! No sidecar: the rollouts hold for 10 minutes with no traffic (no verdict), so they
//! stay at step 1 until an action moves them.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::{CliOutput, ControlPlane, eventually, write_file};
use serde_json::Value;

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

/// Two lanes, the mesh entry, and a rollout of each that holds at step 1.
const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
---
apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector: {version: v3}
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
---
apiVersion: graylane.io/v1
kind: LaneRollout
metadata:
  name: gray-orders-2
spec:
  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps:
    - {percent: 5, hold: 10m}
    - {percent: 25, hold: 10m}
    - {percent: 50, hold: 10m}
    - {percent: 100, hold: 10m}
  analysis:
    interval: 1s
  onSuccess: hold
---
apiVersion: graylane.io/v1
kind: LaneRollout
metadata:
  name: blue-1
spec:
  lane: blue
  entry: edge
  hashBy: {header: x-user-id}
  steps:
    - {percent: 10, hold: 10m}
    - {percent: 100, hold: 10m}
  analysis:
    interval: 1s
";

struct Setup {
    cp: ControlPlane,
    admin: String,
    viewer: String,
}

/// A control plane with admin and viewer tokens, the rules applied, and both rollouts
/// started by the driver (it ticks every 250 ms).
fn setup(dir: &Path) -> Setup {
    let tokens = write_file(dir, "tokens", &format!("admin:{ADMIN}\nviewer:{VIEWER}\n"));
    let cp = ControlPlane::start(dir, &["--token-file", &tokens]);
    let admin = write_file(dir, "admin.tok", ADMIN);
    let viewer = write_file(dir, "viewer.tok", VIEWER);
    let setup = Setup { cp, admin, viewer };
    let rules = write_file(dir, "rules.yaml", RULES);
    setup.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    for name in ["gray-orders-2", "blue-1"] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} at step 1"),
            || {
                let (status, view) = setup.http("GET", &format!("/api/v1/rollouts/{name}"), ADMIN);
                assert_eq!(status, 200, "{view}");
                (view["step"] == 1).then_some(())
            },
        );
    }
    // A rollout records its step before it writes the rules for it: the revisions
    // come after, and a test comparing revisions must not start between the two.
    eventually(Duration::from_secs(10), "both rollouts' revisions", || {
        let (status, history) = setup.http("GET", "/api/v1/history?limit=10", ADMIN);
        assert_eq!(status, 200, "{history}");
        let by = |name: &str| {
            history.as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e["appliedBy"] == format!("graylane-rollout/{name}"))
            })
        };
        (by("gray-orders-2") && by("blue-1")).then_some(())
    });
    setup
}

impl Setup {
    /// `graylane` with the admin token.
    fn cli(&self, args: &[&str]) -> CliOutput {
        self.cp
            .cli(&[&["--token-file", self.admin.as_str()][..], args].concat())
    }

    /// One request with `token`; (status, body as JSON, Null when not JSON).
    fn http(&self, method: &str, path: &str, token: &str) -> (u16, Value) {
        call(self.cp.http, method, path, token)
    }

    fn rollout(&self, name: &str) -> Value {
        let (status, view) = self.http("GET", &format!("/api/v1/rollouts/{name}"), ADMIN);
        assert_eq!(status, 200, "{view}");
        view
    }

    /// The entry TagPolicy's rule for `tag`.
    fn edge_rule(&self, tag: &str) -> Value {
        let (status, edge) = self.http("GET", "/api/v1/rules/TagPolicy/edge", ADMIN);
        assert_eq!(status, 200, "{edge}");
        let rules = edge["spec"]["rules"].as_array().unwrap();
        let rule = rules.iter().find(|r| r["tag"] == tag);
        rule.unwrap_or_else(|| panic!("no {tag} rule in {edge}"))
            .clone()
    }

    fn last_history(&self) -> Value {
        let (status, history) = self.http("GET", "/api/v1/history?limit=1", ADMIN);
        assert_eq!(status, 200, "{history}");
        history[0].clone()
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, token: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn status_shows_each_rollout_and_pause_resume_promote_move_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());

    // The table: one row per rollout, the columns the spec names.
    let out = s.cli(&["rollout", "status"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    for column in [
        "NAME",
        "LANE",
        "STATE",
        "STEP",
        "PERCENT",
        "IN STEP",
        "LAST VERDICT",
    ] {
        assert!(lines[0].contains(column), "{column}: {}", out.stdout);
    }
    let row = lines
        .iter()
        .find(|l| l.starts_with("gray-orders-2"))
        .unwrap();
    for cell in ["gray", "Progressing", "1/4", "5%"] {
        assert!(
            row.split_whitespace().any(|c| c == cell),
            "{cell:?} in {row:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("blue-1")),
        "{}",
        out.stdout
    );

    // -o json is the API's document, field for field.
    let listed = s
        .cli(&["rollout", "status", "-o", "json"])
        .assert_ok()
        .json();
    let (status, api) = s.http("GET", "/api/v1/rollouts", ADMIN);
    assert_eq!(status, 200, "{api}");
    assert_eq!(api.as_array().unwrap().len(), 2, "{api}");
    let mine = |list: &Value| {
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "gray-orders-2");
        found.unwrap().clone()
    };
    let (cli_view, api_view) = (mine(&listed), mine(&api));
    for field in [
        "name",
        "namespace",
        "lane",
        "state",
        "step",
        "steps",
        "percent",
        "stepStartedAt",
    ] {
        assert_eq!(cli_view[field], api_view[field], "{field}");
    }
    assert_eq!(api_view["state"], "Progressing");
    assert_eq!(api_view["percent"], 5.0);
    assert_eq!(api_view["steps"], 4);
    assert!(
        api_view["stepStartedAt"].as_str().unwrap().ends_with('Z'),
        "{api_view}"
    );
    assert!(api_view["reason"].is_null(), "{api_view}");
    let decisions = api_view["decisions"].as_array().unwrap();
    assert!(
        decisions[0]["what"]
            .as_str()
            .unwrap()
            .starts_with("started"),
        "{api_view}"
    );
    // One rollout by name, and a namespace filter that selects none.
    let one = s
        .cli(&["rollout", "status", "gray-orders-2", "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(one["name"], "gray-orders-2");
    let (status, none) = s.http("GET", "/api/v1/rollouts?namespace=shop", ADMIN);
    assert_eq!((status, none), (200, Value::Array(Vec::new())));
    // A viewer reads.
    assert_eq!(s.http("GET", "/api/v1/rollouts/blue-1", VIEWER).0, 200);
    // The detail view: fields and the timeline.
    let detail = s.cli(&["rollout", "status", "gray-orders-2"]);
    detail.assert_ok();
    for word in [
        "Name:",
        "gray-orders-2",
        "Step:",
        "1/4 (5%)",
        "Timeline:",
        "started: step 1, 5%",
    ] {
        assert!(
            detail.stdout.contains(word),
            "{word:?} in\n{}",
            detail.stdout
        );
    }

    // Pause (CLI), then resume (API): each one line, each on the timeline.
    let paused = s.cli(&["rollout", "pause", "gray-orders-2"]);
    paused.assert_ok();
    assert_eq!(
        paused.stdout.trim(),
        "rollout gray-orders-2 paused (step 1, 5%)"
    );
    assert_eq!(s.rollout("gray-orders-2")["state"], "Paused");
    let (status, resumed) = s.http("POST", "/api/v1/rollouts/gray-orders-2:resume", ADMIN);
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["state"], "Progressing");
    let timeline = resumed["decisions"].to_string();
    assert!(
        timeline.contains("paused by") && timeline.contains("resumed by admin"),
        "{timeline}"
    );
    // Resume when not paused: 409 naming the state; the CLI exits 1.
    let (status, refused) = s.http("POST", "/api/v1/rollouts/gray-orders-2:resume", ADMIN);
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["state"], "Progressing");
    assert!(
        refused["error"].as_str().unwrap().contains("Progressing"),
        "{refused}"
    );
    let again = s.cli(&["rollout", "resume", "gray-orders-2"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("not paused"), "{again:?}");

    // Promote: Succeeded at once, the rule is the user's again (no `rollout:`) at the
    // last step's percent, written by the rollout.
    let promoted = s
        .cli(&["rollout", "promote", "gray-orders-2", "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(promoted["state"], "Succeeded", "{promoted}");
    assert_eq!(promoted["step"], 4);
    let rule = s.edge_rule("gray");
    assert!(rule.get("rollout").is_none(), "{rule}");
    assert_eq!(rule["match"]["percent"], 100.0, "{rule}");
    assert_eq!(
        s.last_history()["appliedBy"],
        "graylane-rollout/gray-orders-2"
    );
    // Over: every action is refused, naming the state.
    let (status, over) = s.http("POST", "/api/v1/rollouts/gray-orders-2:abort", ADMIN);
    assert_eq!(status, 409, "{over}");
    assert_eq!(over["state"], "Succeeded");
    // The other rollout did not move.
    assert_eq!(s.rollout("blue-1")["state"], "Progressing");
}

#[test]
fn abort_rolls_back_and_typos_viewers_and_hostile_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let before = s.last_history()["revision"].clone();

    // Nothing a refused call sends changes anything: checked once at the end.
    let refusals: [(&str, &str, u16, &str); 10] = [
        // A viewer may not act (before anything else is looked at).
        ("POST", "/api/v1/rollouts/blue-1:abort", 403, "admin token"),
        ("POST", "/api/v1/rollouts/nope:abort", 403, "admin token"),
        // Unknown rollouts.
        ("GET", "/api/v1/rollouts/nope", 404, "nope"),
        ("POST", "/api/v1/rollouts/nope:abort", 404, "nope"),
        // Unknown actions, named.
        ("POST", "/api/v1/rollouts/blue-1:rewind", 400, "\"rewind\""),
        (
            "POST",
            "/api/v1/rollouts/x:abort:again",
            400,
            "\"abort:again\"",
        ),
        ("POST", "/api/v1/rollouts/blue-1", 400, "NAME:ACTION"),
        // A slash smuggled into a name names no rollout.
        ("GET", "/api/v1/rollouts/blue%2F1", 404, ""),
        ("POST", "/api/v1/rollouts/..%2Fblue-1:abort", 404, ""),
        // A namespace that is no namespace.
        (
            "GET",
            "/api/v1/rollouts/blue-1?namespace=Not_A_Label",
            400,
            "namespace",
        ),
    ];
    for (i, (method, path, want, word)) in refusals.into_iter().enumerate() {
        let token = if i < 2 { VIEWER } else { ADMIN };
        let (status, body) = s.http(method, path, token);
        assert_eq!(status, want, "{method} {path}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {body}"));
        assert!(
            error.contains(word),
            "{method} {path}: {word:?} in {error:?}"
        );
    }
    let viewer =
        s.cp.cli(&["--token-file", &s.viewer, "rollout", "abort", "blue-1"]);
    assert_eq!(viewer.code, 1, "{viewer:?}");
    assert!(viewer.stderr.contains("permission denied"), "{viewer:?}");
    let unknown = s.cli(&["rollout", "pause", "nope"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("not found"), "{unknown:?}");
    assert_eq!(s.cli(&["rollout", "status", "nope"]).code, 1);
    assert_eq!(
        s.cli(&["rollout", "rewind", "blue-1"]).code,
        2,
        "clap: a usage error"
    );
    assert_eq!(s.cli(&["rollout", "pause"]).code, 2, "NAME is required");
    assert_eq!(
        s.last_history()["revision"],
        before,
        "a refused call wrote a revision"
    );
    assert_eq!(s.rollout("blue-1")["state"], "Progressing");

    // Abort: RolledBack with a reason, the rule at 0% and no longer the rollout's.
    let (status, aborted) = s.http("POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["state"], "RolledBack");
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.contains("aborted by admin"), "{reason}");
    assert_eq!(aborted["percent"], 0.0);
    let rule = s.edge_rule("blue");
    assert_eq!(rule["match"]["percent"], 0.0, "{rule}");
    assert!(rule.get("rollout").is_none(), "{rule}");
    let last = s.last_history();
    assert_eq!(last["appliedBy"], "graylane-rollout/blue-1", "{last}");
    assert!(last["revision"].as_u64() > before.as_u64(), "{last}");
    // The table says it too, with the reason in `status NAME`.
    let table = s.cli(&["rollout", "status"]).assert_ok().stdout.clone();
    let row = table.lines().find(|l| l.starts_with("blue-1")).unwrap();
    assert!(row.contains("RolledBack"), "{row}");
    let detail = s
        .cli(&["rollout", "status", "blue-1"])
        .assert_ok()
        .stdout
        .clone();
    assert!(
        detail.contains("Reason:") && detail.contains("aborted by"),
        "{detail}"
    );
    // And shell completion offers the command.
    let script = graylane_tests::cli(&["completion", "bash"]);
    assert!(script.assert_ok().stdout.contains("rollout"));
}

/// A revision written while a rollout ran can be restored once that rollout ended:
/// its rule comes back at the percent the revision held, as the user's (no longer
/// marked), and the ended rollout stays ended. One of a rollout still active can't:
/// the refusal says which rollout holds it.
#[test]
fn a_revision_of_an_ended_rollout_is_restored_with_its_rule_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let at_step_1 = s.last_history()["revision"].as_u64().unwrap();
    let (status, _) = s.http("POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    assert_eq!(status, 200);
    assert_eq!(s.edge_rule("blue")["match"]["percent"], 0.0);

    let restored = s.cli(&["rules", "rollback", "--to", &at_step_1.to_string()]);
    restored.assert_ok();
    let rule = s.edge_rule("blue");
    assert_eq!(rule["match"]["percent"], 10.0, "{rule}");
    assert!(rule.get("rollout").is_none(), "given back: {rule}");
    assert_eq!(s.rollout("blue-1")["state"], "RolledBack");
    let gray = s.edge_rule("gray");
    assert_eq!(
        gray["rollout"], "gray-orders-2",
        "still the active one's: {gray}"
    );
    let last = s.last_history();
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("rollback to {at_step_1}")),
        "{last}"
    );

    // gray-orders-2 is active: a revision before its rule existed would remove it.
    let refused = s.cli(&["rules", "rollback", "--to", "1"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("gray-orders-2") && refused.stderr.contains("active"),
        "{refused:?}"
    );
}

/// An abort (or a pause) right after the apply, before the driver's next tick started
/// the rollout, acts on it then and there: it used to be a 409 "has not started yet"
/// for up to a tick. Whoever starts it, the rollout ends RolledBack, no user is let
/// into the lane, and the driver does not start it again.
#[test]
fn an_action_right_after_the_apply_is_not_refused_for_a_rollout_not_yet_started() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_file(dir.path(), "tokens", &format!("admin:{ADMIN}\n"));
    let cp = ControlPlane::start(dir.path(), &["--token-file", &tokens]);
    let admin = write_file(dir.path(), "admin.tok", ADMIN);
    let rules = write_file(dir.path(), "rules.yaml", RULES);
    cp.cli(&["--token-file", &admin, "rules", "apply", "-f", &rules])
        .assert_ok();
    let (status, aborted) = call(cp.http, "POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["state"], "RolledBack", "{aborted}");
    let (status, paused) = call(
        cp.http,
        "POST",
        "/api/v1/rollouts/gray-orders-2:pause",
        ADMIN,
    );
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "Paused", "{paused}");
    // The driver runs on: it must leave both where the actions put them. Wait until
    // it wrote the paused rollout's first step, then look at the aborted one.
    eventually(Duration::from_secs(10), "gray's first step written", || {
        let (_, edge) = call(cp.http, "GET", "/api/v1/rules/TagPolicy/edge", ADMIN);
        let rules = edge["spec"]["rules"].as_array()?.clone();
        rules
            .iter()
            .any(|r| r["tag"] == "gray" && r["match"]["percent"] == 5.0)
            .then_some(rules)
    });
    let (_, edge) = call(cp.http, "GET", "/api/v1/rules/TagPolicy/edge", ADMIN);
    let blue = edge["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == "blue")
        .cloned();
    assert!(
        blue.as_ref()
            .is_none_or(|r| r["match"]["percent"] == 0.0 && r.get("rollout").is_none()),
        "nobody in the aborted lane: {edge}"
    );
    for (name, state) in [("blue-1", "RolledBack"), ("gray-orders-2", "Paused")] {
        let (_, view) = call(cp.http, "GET", &format!("/api/v1/rollouts/{name}"), ADMIN);
        assert_eq!(view["state"], state, "{view}");
    }
}

/// A rollout whose entry already gives its lane's tag to a share of all users (what
/// an earlier run leaves at its last percent once it ended) is refused at the apply,
/// naming that rule: its steps below that share would change nothing. Set to 0% in
/// the same apply, it starts and takes that rule over.
#[test]
fn a_rollout_behind_a_share_rule_for_its_lane_is_refused_until_that_rule_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let left = "    - tag: blue\n      match: {percent: 37, hashBy: {header: x-user-id}}\n";
    let rules = RULES.replace(
        "  services: [frontend]\n",
        &format!("  services: [frontend]\n  rules:\n{left}"),
    );
    let file = write_file(dir.path(), "rules.yaml", &rules);
    let refused = cp.cli(&["rules", "apply", "-f", &file]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("(LaneRollout/blue-1): spec.entry: TagPolicy \"edge\"'s spec.rules[0] already gives tag \"blue\" to 37% of users"),
        "{refused:?}"
    );
    let file = write_file(
        dir.path(),
        "zero.yaml",
        &rules.replace("percent: 37", "percent: 0"),
    );
    cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
    eventually(Duration::from_secs(10), "blue-1's first step", || {
        let (_, edge) = call(cp.http, "GET", "/api/v1/rules/TagPolicy/edge", ADMIN);
        let rules = edge["spec"]["rules"].as_array()?.clone();
        (rules.len() == 2
            && rules[0]["rollout"] == "blue-1"
            && rules[0]["match"]["percent"] == 10.0)
            .then_some(())
    });
}

/// The last document of `RULES`: rollout `blue-1`.
fn blue_rollout() -> &'static str {
    RULES.rsplit("---\n").next().unwrap()
}

/// A rollout applied with a lane and its rollout, started: the driver has ticked over
/// every rollout in the rules since whatever came before.
fn probe(s: &Setup, dir: &Path) {
    let green = write_file(
        dir,
        "green.yaml",
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: green}\nspec: {tag: green, selector: {version: v4}}\n---\n\
         apiVersion: graylane.io/v1\nkind: LaneRollout\nmetadata: {name: green-1}\nspec:\n  lane: green\n  entry: edge\n  hashBy: {header: x-user-id}\n  steps: [{percent: 10, hold: 10m}]\n  analysis: {interval: 1s}\n",
    );
    s.cli(&["rules", "apply", "-f", &green]).assert_ok();
    eventually(Duration::from_secs(10), "green-1 started", || {
        (s.rollout("green-1")["step"] == 1).then_some(())
    });
}

/// A rollback restores content; it never starts a rollout. Restoring the revision
/// right after an abort, once the aborted rollout was deleted, used to start it
/// again: its record was gone, so the driver took it for a new apply and sent 10 % of
/// users into the lane just aborted.
#[test]
fn a_rollback_bringing_back_an_ended_rollout_does_not_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (status, _) = s.http("POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    assert_eq!(status, 200);
    let after_abort = s.last_history()["revision"].as_u64().unwrap();
    s.cli(&["rules", "delete", "LaneRollout/blue-1"])
        .assert_ok();
    let (status, _) = s.http("GET", "/api/v1/rollouts/blue-1", ADMIN);
    assert_eq!(status, 404);

    let back = s.cli(&["rules", "rollback", "--to", &after_abort.to_string()]);
    assert!(
        back.assert_ok().stdout.contains("LaneRollout/blue-1"),
        "{back:?}"
    );
    probe(&s, dir.path());
    let blue = s.rollout("blue-1");
    assert_eq!(blue["state"], "RolledBack", "{blue}");
    assert!(
        blue["reason"]
            .as_str()
            .unwrap()
            .contains("restored by a rollback"),
        "{blue}"
    );
    assert_eq!(s.edge_rule("blue")["match"]["percent"], 0.0);
    let (_, history) = s.http("GET", "/api/v1/history?limit=20", ADMIN);
    let by_blue: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["appliedBy"] == "graylane-rollout/blue-1")
        .filter(|e| e["revision"].as_u64().unwrap() > after_abort)
        .collect();
    assert!(
        by_blue.is_empty(),
        "blue-1 wrote after the rollback: {by_blue:?}"
    );
}

/// Deleting an ended rollout and applying it again, back to back as a CI job does to
/// run a release again, starts a new run: it used to depend on whether the driver's
/// tick fell between the two commands (if not, the new rollout took over the old,
/// ended run, and nothing started).
#[test]
fn an_ended_rollout_deleted_and_applied_again_at_once_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let (status, _) = s.http("POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    assert_eq!(status, 200);
    let again = write_file(dir.path(), "blue.yaml", blue_rollout());
    // Applied again unchanged: nothing runs, and the CLI says so and what does.
    let unchanged = s.cli(&["rules", "apply", "-f", &again]);
    assert!(
        unchanged.assert_ok().stderr.contains(
            "LaneRollout/blue-1 is unchanged and its run has ended (RolledBack); it does not run again"
        ),
        "{unchanged:?}"
    );
    assert_eq!(s.rollout("blue-1")["state"], "RolledBack");
    s.cli(&["rules", "delete", "LaneRollout/blue-1"])
        .assert_ok();
    s.cli(&["rules", "apply", "-f", &again]).assert_ok();
    let view = eventually(Duration::from_secs(10), "blue-1 running again", || {
        let view = s.rollout("blue-1");
        (view["state"] == "Progressing" && view["step"] == 1).then_some(view)
    });
    assert!(view["reason"].is_null(), "{view}");
    eventually(Duration::from_secs(10), "blue's first step written", || {
        (s.edge_rule("blue")["match"]["percent"] == 10.0).then_some(())
    });
}

/// An action whose record is written but whose rules revision the store refuses (its
/// revisions unwritable) used to answer 503 "nothing was changed", while the record
/// already said RolledBack: a retry was then refused as "over". It says the action is
/// recorded and its revision follows; once the store takes revisions again the
/// driver writes it, with no other action.
#[test]
fn an_action_recorded_while_revisions_cannot_be_written_says_so_and_completes_later() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path());
    let revisions = s.cp.data.join("revisions");
    let away = s.cp.data.join("revisions.away");
    std::fs::rename(&revisions, &away).unwrap();
    std::fs::write(&revisions, "not a directory").unwrap();
    let (status, body) = s.http("POST", "/api/v1/rollouts/blue-1:abort", ADMIN);
    std::fs::remove_file(&revisions).unwrap();
    std::fs::rename(&away, &revisions).unwrap();
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("abort is recorded"), "{body}");
    assert!(!error.contains("nothing was changed"), "{body}");
    eventually(Duration::from_secs(10), "the abort's revision", || {
        (s.edge_rule("blue")["match"]["percent"] == 0.0).then_some(())
    });
    assert_eq!(s.rollout("blue-1")["state"], "RolledBack");
}
