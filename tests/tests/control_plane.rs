//! graylane-control + the graylane CLI as real processes: rules lifecycle, validation,
//! optimistic locking, restart, push with ACK/NACK, --wait, release states and auth.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graylane_tests::{ControlPlane, Subscriber, cli, write_file};

const LANE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector:
    version: v2
";

const POLICY: &str = "apiVersion: graylane.io/v1
kind: RoutePolicy
metadata:
  name: orders
spec:
  service: orders
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
  default:
    - {subset: v1, weight: 90}
    - {subset: v2, weight: 10}
";

const BLUE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector:
    version: v3
";

fn names(get_json: &serde_json::Value) -> Vec<String> {
    get_json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn revision(cp: &ControlPlane) -> u64 {
    cp.cli(&["rules", "get", "-o", "json"]).assert_ok().json()["revision"]
        .as_u64()
        .unwrap()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_every_subscriber_and_acks_show_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let mut a = Subscriber::connect(&url, "orders", "orders-1", &[("version", "v1")], None)
        .await
        .unwrap();
    let mut b = Subscriber::connect(&url, "orders", "orders-2", &[("version", "v2")], None)
        .await
        .unwrap();
    let first = a.next().await;
    assert_eq!((first.revision, first.rules.as_deref()), (0, Some("")));
    assert!(
        first.endpoints.is_some(),
        "the first snapshot carries the endpoints"
    );

    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let cli_lane = lane.clone();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        graylane_tests::cli(&["--server", &url2, "rules", "apply", "-f", &cli_lane])
            .assert_ok()
            .code
    })
    .await
    .unwrap();
    let sa = a.until_revision(1).await;
    let sb = b.until_revision(1).await;
    assert!(a.rules.contains("tag: gray") && b.rules.contains("tag: gray"));
    let c = Subscriber::connect(&url, "payments", "payments-1", &[], None)
        .await
        .unwrap();
    a.until(|sub, _| sub.endpoints.len() == 3).await;
    assert!(
        a.endpoints.contains_key("orders-2") && a.endpoints["payments-1"].service == "payments"
    );
    a.ack(sa.version).await;
    b.nack(sb.version, "cannot compile: test says no").await;

    let status = graylane_tests::eventually(
        Duration::from_secs(10),
        "status to show the ACK and the NACK",
        || {
            let s = cp.cli(&["status", "-o", "json"]).json();
            let list = s["sidecars"].as_array()?.clone();
            let acked = list
                .iter()
                .any(|x| x["instance"] == "orders-1" && x["ackedRevision"] == 1);
            let nacked = list.iter().any(|x| {
                x["instance"] == "orders-2" && x["nackReason"] == "cannot compile: test says no"
            });
            (acked && nacked).then_some(list)
        },
    );
    let gray = status.iter().find(|x| x["instance"] == "orders-2").unwrap();
    assert_eq!(
        gray["lanes"],
        serde_json::json!(["gray"]),
        "status shows the lane the labels select"
    );
    assert_eq!(gray["nackedRevision"], 1);

    // The instance is deregistered when its stream ends.
    drop(b);
    graylane_tests::eventually(
        Duration::from_secs(10),
        "orders-2 to be deregistered",
        || {
            let s = cp.cli(&["status", "-o", "json"]).json();
            (s["sidecars"].as_array()?.len() == 2).then_some(())
        },
    );
    let update = a
        .until(|sub, _| !sub.endpoints.contains_key("orders-2"))
        .await;
    let delta = update
        .endpoint_changes
        .expect("one instance leaving is sent as a delta");
    assert_eq!(delta.removed, ["orders-2"]);
    assert!(delta.upserted.is_empty() && update.endpoints.is_none());
    assert_eq!(
        a.endpoints.keys().collect::<Vec<_>>(),
        ["orders-1", "payments-1"]
    );
    assert!(update.rules.is_none(), "unchanged rules are not resent");
    drop(c);
}

/// `graylane rules apply -f FILE --wait` in the background (the test plays the sidecar).
fn apply_and_wait(url: &str, file: &str) -> tokio::task::JoinHandle<graylane_tests::CliOutput> {
    let (url, file) = (url.to_string(), file.to_string());
    tokio::task::spawn_blocking(move || {
        cli(&[
            "--server",
            &url,
            "rules",
            "apply",
            "-f",
            &file,
            "--wait",
            "--timeout",
            "20s",
        ])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_follows_acks_and_fails_on_nack() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let mut sub = Subscriber::connect(&url, "orders", "orders-1", &[("version", "v1")], None)
        .await
        .unwrap();
    let first = sub.next().await;
    sub.ack(first.version).await;

    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let waiting = apply_and_wait(&url, &lane);
    let s = sub.until_revision(1).await;
    sub.ack(s.version).await;
    let out = waiting.await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("1/1 sidecars acked"), "{out:?}");

    let blue = write_file(dir.path(), "blue.yaml", BLUE);
    let waiting = apply_and_wait(&url, &blue);
    let s = sub.until_revision(2).await;
    sub.nack(s.version, "lane blue: unsupported").await;
    let out = waiting.await.unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("lane blue: unsupported"), "{out:?}");
}

#[test]
fn release_set_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let policy = write_file(dir.path(), "policy.yaml", POLICY);
    cp.cli(&["rules", "apply", "-f", &policy]).assert_ok();
    cp.cli(&["release", "set", "orders", "gray"]).assert_ok();
    cp.cli(&["release", "set", "payments", "prod"]).assert_ok();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, sidecar) = (
        "admin-token-0123456789abcdef",
        "sidecar-token-0123456789abcdef",
    );
    let tokens = write_file(
        dir.path(),
        "tokens",
        &format!("admin:{admin}\nsidecar:{sidecar}\n"),
    );
    let cp = ControlPlane::start(dir.path(), &["--token-file", &tokens]);
    let admin_file = write_file(dir.path(), "admin.token", admin);
    let sidecar_file = write_file(dir.path(), "sidecar.token", sidecar);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    let (url, l) = (cp.url(), lane.clone());

    let (none, wrong, ok) = tokio::task::spawn_blocking(move || {
        let none = cli(&["--server", &url, "rules", "apply", "-f", &l]);
        let wrong = cli(&[
            "--server",
            &url,
            "--token-file",
            &sidecar_file,
            "rules",
            "apply",
            "-f",
            &l,
        ]);
        let get_before = cli(&[
            "--server",
            &url,
            "--token-file",
            &admin_file,
            "rules",
            "get",
            "-o",
            "json",
        ])
        .json();
        assert_eq!(get_before["revision"], 0, "refused calls changed nothing");
        let ok = cli(&[
            "--server",
            &url,
            "--token-file",
            &admin_file,
            "rules",
            "apply",
            "-f",
            &l,
        ]);
        (none, wrong, ok)
    })
    .await
    .unwrap();
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("unauthenticated"), "{none:?}");
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("permission denied"), "{wrong:?}");
    ok.assert_ok();

    let refused = Subscriber::connect(&cp.url(), "orders", "o-1", &[], None)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut sub = Subscriber::connect(&cp.url(), "orders", "o-1", &[], Some(sidecar))
        .await
        .unwrap();
    assert_eq!(sub.until_revision(1).await.revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_gets_the_latest_snapshot_not_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let mut slow = Subscriber::connect(&cp.url(), "orders", "slow-1", &[], None)
        .await
        .unwrap();
    // Each revision carries 256 KiB of rules, so a few unread snapshots fill the
    // client's HTTP/2 receive window (2 MiB) and the server's send buffer; the rest
    // must be coalesced by the server, not queued.
    let padding = "x".repeat(256 * 1024);
    let applies = 40u64;
    for i in 1..=applies {
        let doc = format!(
            "{}metadata:\n  name: gray\n  annotations:\n    note: \"{i}{padding}\"\n",
            LANE.replace("metadata:\n  name: gray\n", "")
        );
        let file = write_file(dir.path(), "big.yaml", &doc);
        let out = cp.cli(&["rules", "apply", "-f", &file]);
        out.assert_ok();
    }
    let mut received = 0;
    loop {
        let s = slow.next().await;
        received += 1;
        if s.revision == applies {
            break;
        }
    }
    assert!(
        received < applies / 2,
        "received {received} snapshots for {applies} revisions: intermediate ones must be skipped"
    );
    assert!(
        slow.rules.contains(&format!("{applies}xxxx")),
        "the last snapshot holds the latest rules"
    );
}

#[test]
fn without_tokens_the_server_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(graylane_tests::bin("graylane-control"))
        .args(["--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"])
        .arg("--store")
        .arg(format!("file:{}", dir.path().join("data").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("without --token-file"), "{log}");
}

#[test]
fn metrics_report_revision_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let lane = write_file(dir.path(), "lane.yaml", LANE);
    cp.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    let (status, body) = graylane_tests::http_get(cp.http, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("graylane_control_rule_revision 1"), "{body}");
    assert!(body.contains("graylane_control_commits_total 1"), "{body}");
    assert!(
        body.contains("graylane_control_connected_sidecars 0"),
        "{body}"
    );
    assert_eq!(graylane_tests::http_get(cp.http, "/live").0, 200);
}
