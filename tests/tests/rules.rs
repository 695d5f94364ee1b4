//! Rules through the CLI against a real graylane-control: apply (with and without
//! --prune), delete, get, diff, history, rollback, validation, optimistic locking,
//! restart, release states, and the exit codes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graylane_tests::docs::{BLUE, LANE, POLICY, names, revision};
use graylane_tests::{ControlPlane, cli, write_file};

#[test]
fn rules_lifecycle_apply_prune_delete_diff_history_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let both = write_file(dir.path(), "both.yaml", &format!("{LANE}---\n{POLICY}"));
    let blue = write_file(dir.path(), "blue.yaml", BLUE);

    let out = cp.cli(&["rules", "apply", "-f", &both, "-o", "json"]);
    let applied = out.assert_ok().json();
    assert_eq!(applied["revision"], 1);
    assert_eq!(applied["changes"].as_array().unwrap().len(), 2);
    assert!(
        applied["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "created")
    );

    // kubectl semantics: resources not in the file stay.
    cp.cli(&["rules", "apply", "-f", &blue]).assert_ok();
    let all = cp.cli(&["rules", "get", "-o", "json"]).assert_ok().json();
    assert_eq!(all["revision"], 2);
    assert_eq!(
        names(&all),
        ["Lane/blue", "Lane/gray", "RoutePolicy/orders"]
    );

    // Re-applying the same content writes no revision.
    let again = cp
        .cli(&["rules", "apply", "-f", &blue, "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(
        (again["revision"].as_u64(), again["committed"].as_bool()),
        (Some(2), Some(false))
    );

    // diff shows the change and exits 0; nothing is written.
    let changed = write_file(
        dir.path(),
        "changed.yaml",
        &POLICY
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    );
    let diff = cp.cli(&["rules", "diff", "-f", &changed]);
    diff.assert_ok();
    assert!(
        diff.stdout.contains("-    weight: 90") || diff.stdout.contains("weight: 90"),
        "{diff:?}"
    );
    assert!(
        diff.stdout.contains("+") && diff.stdout.contains("50"),
        "{diff:?}"
    );
    assert_eq!(revision(&cp), 2);

    // --prune makes the files the whole set.
    let pruned = cp
        .cli(&["rules", "apply", "--prune", "-f", &blue, "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(pruned["revision"], 3);
    let deleted: Vec<_> = pruned["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "deleted")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, ["gray", "orders"]);
    assert_eq!(
        names(&cp.cli(&["rules", "get", "-o", "json"]).json()),
        ["Lane/blue"]
    );

    // get of one resource, YAML by default; a missing one is refused.
    let one = cp.cli(&["rules", "get", "Lane/blue"]);
    assert!(one.assert_ok().stdout.contains("tag: blue"), "{one:?}");
    assert_eq!(cp.cli(&["rules", "get", "Lane/nope"]).code, 1);

    // rollback restores revision 2's content as revision 4.
    let rolled = cp
        .cli(&["rules", "rollback", "--to", "2", "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(rolled["revision"], 4);
    assert_eq!(
        names(&cp.cli(&["rules", "get", "-o", "json"]).json()),
        ["Lane/blue", "Lane/gray", "RoutePolicy/orders"]
    );
    assert_eq!(cp.cli(&["rules", "rollback", "--to", "99"]).code, 1);

    // delete: existing ok; missing refused with nothing changed.
    cp.cli(&["rules", "delete", "Lane/blue"]).assert_ok();
    let missing = cp.cli(&["rules", "delete", "Lane/gray", "Lane/nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("Lane/nope"), "{missing:?}");
    assert_eq!(revision(&cp), 5);

    let history = cp
        .cli(&["rules", "history", "-o", "json"])
        .assert_ok()
        .json();
    let revs: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [5, 4, 3, 2, 1]);
    assert!(
        history[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("rollback to 2"),
        "{history}"
    );
    assert!(
        history[0]["appliedBy"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{history}"
    );
    let table = cp.cli(&["rules", "history"]).assert_ok().stdout.clone();
    assert!(table.starts_with("REVISION"), "{table}");
}

#[test]
fn invalid_documents_are_refused_with_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let good = write_file(dir.path(), "good.yaml", LANE);
    cp.cli(&["rules", "apply", "-f", &good]).assert_ok();

    let bad = write_file(
        dir.path(),
        "rules.yaml",
        &format!("{LANE}---\n{}", POLICY.replace("weight: 10", "weight: 5")),
    );
    let out = cp.cli(&["rules", "apply", "-f", &bad]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("rules.yaml: document 2 (RoutePolicy/orders): spec.default: weights sum to 95, must be 100"), "{out:?}");
    let validate = cli(&["rules", "validate", "-f", &bad]);
    assert_eq!(
        validate.code, 1,
        "offline validation refuses too: {validate:?}"
    );
    assert!(validate.stderr.contains("spec.default"), "{validate:?}");

    // The server validates as well (a client that skips local checks changes nothing):
    // a lane whose fallback names a lane that only the merged set could declare.
    let dangling = write_file(
        dir.path(),
        "dangling.yaml",
        &BLUE.replace("version: v3", "version: v3\n  fallback: [nope]"),
    );
    let out = cp.cli(&["rules", "apply", "-f", &dangling]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("dangling.yaml: document 1 (Lane/blue): spec.fallback[0]"),
        "{out:?}"
    );
    assert_eq!(revision(&cp), 1, "a rejected apply changes nothing");

    let unreadable = cp.cli(&["rules", "apply", "-f", "/nonexistent/rules.yaml"]);
    assert_eq!(unreadable.code, 2, "{unreadable:?}");
    assert_eq!(cli(&["rules", "apply"]).code, 2, "usage error");
    let valid = cli(&["rules", "validate", "-f", &good]);
    assert!(valid.assert_ok().stdout.contains("valid"));
}

#[test]
fn stale_expect_revision_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let blue = write_file(dir.path(), "blue.yaml", BLUE);
    cp.cli(&["rules", "apply", "-f", &lane, "--expect-revision", "0"])
        .assert_ok();
    let stale = cp.cli(&["rules", "apply", "-f", &blue, "--expect-revision", "0"]);
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.contains("conflict"), "{stale:?}");
    assert_eq!(revision(&cp), 1);
    cp.cli(&["rules", "apply", "-f", &blue, "--expect-revision", "1"])
        .assert_ok();
    assert_eq!(revision(&cp), 2);
}

#[test]
fn restart_keeps_the_same_revision_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let blue = write_file(dir.path(), "blue.yaml", BLUE);
    cp.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    cp.cli(&["rules", "apply", "-f", &blue]).assert_ok();
    let before = cp.cli(&["rules", "get"]).assert_ok().stdout.clone();
    assert!(cp.proc.terminate(Duration::from_secs(20)).success());
    drop(cp);

    let cp = ControlPlane::start(dir.path(), &[]);
    assert_eq!(revision(&cp), 2);
    assert_eq!(cp.cli(&["rules", "get"]).assert_ok().stdout, before);
    assert_eq!(
        cp.cli(&["rules", "history", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn server_unreachable_is_exit_3() {
    let out = cli(&["--server", "http://127.0.0.1:1", "rules", "get"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.starts_with("error: "), "{out:?}");
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "one line, no backtrace: {out:?}"
    );
}

#[test]
fn release_set_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let policy = write_file(dir.path(), "policy.yaml", POLICY);
    cp.cli(&["rules", "apply", "-f", &policy]).assert_ok();
    // No instance is registered: gray for orders and any state for payments (which
    // nothing knows) need --force (see release_set_refuses_likely_mistakes_unless_forced).
    cp.cli(&["release", "set", "orders", "gray", "--force"])
        .assert_ok();
    cp.cli(&["release", "set", "payments", "prod", "--force"])
        .assert_ok();
    let states = cp.cli(&["release", "get", "-o", "json"]).assert_ok().json();
    assert_eq!(
        states["services"],
        serde_json::json!([{"service": "orders", "release": "gray"}, {"service": "payments", "release": "prod"}])
    );
    let orders = cp
        .cli(&["rules", "get", "RoutePolicy/orders"])
        .assert_ok()
        .stdout
        .clone();
    assert!(
        orders.contains("release: gray") && orders.contains("weight: 90"),
        "only the release field changed: {orders}"
    );
    assert_eq!(cp.cli(&["release", "set", "orders", "canary"]).code, 2);
}

/// RoutePolicy `orders` with a lane override naming Lane `gray`'s tag.
fn policy_with_override() -> String {
    format!("{POLICY}  lanes:\n    - tag: gray\n      subset: v2\n")
}

#[test]
fn get_of_one_kind_reads_resources_that_reference_another_kind() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rules = write_file(
        dir.path(),
        "rules.yaml",
        &format!("{LANE}---\n{}", policy_with_override()),
    );
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    for selector in ["RoutePolicy", "RoutePolicy/orders"] {
        for format in ["yaml", "json", "table"] {
            let out = cp.cli(&["rules", "get", selector, "-o", format]);
            assert!(out.assert_ok().stdout.contains("orders"), "{out:?}");
        }
    }
    let json = cp
        .cli(&["rules", "get", "RoutePolicy", "-o", "json"])
        .json();
    assert_eq!(names(&json), ["RoutePolicy/orders"]);
}

/// Runs `graylane ARGS` with `stdin` on its standard input.
fn cli_with_stdin(args: &[&str], stdin: &str) -> graylane_tests::CliOutput {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(graylane_tests::bin("graylane"))
        .args(args)
        .env_remove("GRAYLANE_SERVER")
        .env_remove("GRAYLANE_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    graylane_tests::CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn get_json_piped_into_apply_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rules = write_file(
        dir.path(),
        "rules.yaml",
        &format!("{LANE}---\n{BLUE}---\n{}", policy_with_override()),
    );
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    let url = cp.url();
    for format in ["json", "yaml"] {
        let got = cp
            .cli(&["-o", format, "rules", "get"])
            .assert_ok()
            .stdout
            .clone();
        let out = cli_with_stdin(
            &["--server", &url, "-o", "json", "rules", "apply", "-f", "-"],
            &got,
        );
        let applied = out.assert_ok().json();
        assert_eq!(applied["committed"], false, "{format}: {out:?}");
        assert_eq!(applied["changes"].as_array().unwrap().len(), 3, "{out:?}");
        assert!(
            applied["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["action"] == "unchanged"),
            "{format}: {out:?}"
        );
    }
    // With --prune too: the List is the whole set, so nothing is deleted.
    let got = cp
        .cli(&["-o", "json", "rules", "get"])
        .assert_ok()
        .stdout
        .clone();
    let out = cli_with_stdin(
        &["--server", &url, "rules", "apply", "--prune", "-f", "-"],
        &got,
    );
    assert!(
        out.assert_ok().stdout.contains("nothing changed"),
        "{out:?}"
    );
    assert_eq!(revision(&cp), 1);
}

#[test]
fn get_revision_shows_a_past_revisions_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let blue = write_file(dir.path(), "blue.yaml", BLUE);
    cp.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    cp.cli(&["rules", "apply", "-f", &blue]).assert_ok();
    let first = cp
        .cli(&["rules", "get", "--revision", "1", "-o", "json"])
        .assert_ok()
        .json();
    assert_eq!(first["revision"], 1);
    assert_eq!(names(&first), ["Lane/gray"]);
    let one = cp.cli(&["rules", "get", "Lane/blue", "--revision", "1"]);
    assert_eq!(
        one.code, 1,
        "Lane/blue did not exist at revision 1: {one:?}"
    );
    let missing = cp.cli(&["rules", "get", "--revision", "9"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("revision 9"), "{missing:?}");
}

#[test]
fn diff_exit_code_is_1_only_when_the_files_differ() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let blue = write_file(dir.path(), "blue.yaml", BLUE);
    cp.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    cp.cli(&["rules", "diff", "--exit-code", "-f", &lane])
        .assert_ok();
    let differs = cp.cli(&["rules", "diff", "--exit-code", "-f", &blue]);
    assert_eq!(differs.code, 1, "{differs:?}");
    assert!(
        differs.stdout.contains("blue"),
        "the diff is printed: {differs:?}"
    );
    cp.cli(&["rules", "diff", "-f", &blue]).assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_set_refuses_likely_mistakes_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rules = write_file(dir.path(), "rules.yaml", &format!("{LANE}---\n{POLICY}"));
    let cp_cli = |args: &'static [&'static str]| {
        let url = cp.url();
        async move {
            tokio::task::spawn_blocking(move || cli(&[&["--server", &url], args].concat()))
                .await
                .unwrap()
        }
    };
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();

    // A typo: no instance registered, no RoutePolicy.
    let typo = cp_cli(&["release", "set", "ordrs", "prod"]).await;
    assert_eq!(typo.code, 1, "{typo:?}");
    assert!(
        typo.stderr.contains("ordrs") && typo.stderr.contains("--force"),
        "{typo:?}"
    );
    let get = cp_cli(&["release", "get", "ordrs"]).await;
    assert_eq!(get.code, 1, "{get:?}");

    // gray while orders has only a base instance: every request would be a 503.
    let _v1 = graylane_tests::Subscriber::connect(
        &cp.url(),
        "orders",
        "orders-1",
        &[("version", "v1")],
        None,
    )
    .await
    .unwrap();
    wait_registered(&cp, "orders-1");
    let gray = cp_cli(&["release", "set", "orders", "gray"]).await;
    assert_eq!(gray.code, 1, "{gray:?}");
    assert!(gray.stderr.contains("503"), "{gray:?}");
    cp_cli(&["release", "set", "orders", "prod"])
        .await
        .assert_ok();
    assert_eq!(revision(&cp), 2, "refusals changed nothing");

    // With a lane instance, gray is fine; --force overrides both refusals.
    let _v2 = graylane_tests::Subscriber::connect(
        &cp.url(),
        "orders",
        "orders-2",
        &[("version", "v2")],
        None,
    )
    .await
    .unwrap();
    cp_cli(&["release", "set", "orders", "gray"])
        .await
        .assert_ok();
    cp_cli(&["release", "set", "ordrs", "prod", "--force"])
        .await
        .assert_ok();
    cp_cli(&["release", "get", "ordrs"]).await.assert_ok();
}

fn wait_registered(cp: &ControlPlane, instance: &str) {
    graylane_tests::eventually(Duration::from_secs(10), "the instance to register", || {
        let status = cp.cli(&["status", "-o", "json"]).json();
        status["sidecars"]
            .as_array()?
            .iter()
            .any(|s| s["instance"] == instance)
            .then_some(())
    });
}

/// A mesh-wide PeerPolicy (a bare YAML 1.2 `off`) and one naming a service.
const PEER_POLICIES: &str = "apiVersion: graylane.io/v1
kind: PeerPolicy
metadata:
  name: mesh
spec:
  mtls: off
---
apiVersion: graylane.io/v1
kind: PeerPolicy
metadata:
  name: orders
spec:
  mtls: strict
  services: [orders]
";

#[test]
fn peer_policies_apply_get_round_trip_and_delete_like_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let rules = write_file(
        dir.path(),
        "rules.yaml",
        &format!("{LANE}---\n{PEER_POLICIES}"),
    );
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    assert_eq!(revision(&cp), 1);

    let json = cp.cli(&["rules", "get", "PeerPolicy", "-o", "json"]).json();
    assert_eq!(names(&json), ["PeerPolicy/mesh", "PeerPolicy/orders"]);
    assert_eq!(json["items"][0]["spec"]["mtls"], "off", "{json}");
    let table = cp.cli(&["rules", "get", "peerpolicies", "-o", "table"]);
    let table = &table.assert_ok().stdout;
    assert!(table.contains("mtls=off services=*"), "{table}");
    assert!(table.contains("mtls=strict services=orders"), "{table}");
    let yaml = cp.cli(&["rules", "get", "PeerPolicy/mesh", "-o", "yaml"]);
    // Quoted on the way out, so a YAML 1.1 reader does not take it for `false`.
    assert!(
        yaml.assert_ok().stdout.contains("mtls: \"off\""),
        "{yaml:?}"
    );

    // What `get` prints applies back unchanged, in both formats.
    let url = cp.url();
    for format in ["json", "yaml"] {
        let got = cp
            .cli(&["-o", format, "rules", "get"])
            .assert_ok()
            .stdout
            .clone();
        let out = cli_with_stdin(
            &["--server", &url, "-o", "json", "rules", "apply", "-f", "-"],
            &got,
        );
        let applied = out.assert_ok().json();
        assert_eq!(applied["committed"], false, "{format}: {out:?}");
        assert_eq!(applied["changes"].as_array().unwrap().len(), 3, "{out:?}");
    }
    assert_eq!(revision(&cp), 1);

    // A second mesh-wide policy is refused, naming the field; nothing is written.
    let second = write_file(
        dir.path(),
        "second.yaml",
        "apiVersion: graylane.io/v1\nkind: PeerPolicy\nmetadata: {name: other}\nspec:\n  mtls: strict\n",
    );
    let out = cp.cli(&["rules", "apply", "-f", &second]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "second.yaml: document 1 (PeerPolicy/other): spec.services: PeerPolicy \"mesh\""
        ) && out.stderr.contains("already covers the whole mesh"),
        "{out:?}"
    );
    assert_eq!(revision(&cp), 1, "a rejected apply changes nothing");

    // diff sees a mode change; delete removes one policy as a new revision.
    let changed = write_file(
        dir.path(),
        "changed.yaml",
        &PEER_POLICIES.replace("mtls: strict", "mtls: permissive"),
    );
    let diff = cp.cli(&["rules", "diff", "--exit-code", "-f", &changed]);
    assert_eq!(diff.code, 1, "{diff:?}");
    assert!(diff.stdout.contains("permissive"), "{diff:?}");
    cp.cli(&["rules", "delete", "PeerPolicy/orders"])
        .assert_ok();
    let json = cp.cli(&["rules", "get", "PeerPolicy", "-o", "json"]).json();
    assert_eq!(names(&json), ["PeerPolicy/mesh"]);
    assert_eq!(revision(&cp), 2);
}

#[test]
fn a_resource_named_twice_in_one_delete_is_deleted_once() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lanes = write_file(dir.path(), "lanes.yaml", &format!("{LANE}---\n{BLUE}"));
    cp.cli(&["rules", "apply", "-f", &lanes]).assert_ok();
    cp.cli(&["rules", "delete", "Lane/gray", "Lane/gray"])
        .assert_ok();
    assert_eq!(
        names(&cp.cli(&["rules", "get", "-o", "json"]).json()),
        ["Lane/blue"]
    );
    assert_eq!(revision(&cp), 2);
}
