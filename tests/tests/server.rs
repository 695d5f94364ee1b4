//! graylane-control as a server: token auth, loopback-only without tokens, probes
//! and metrics.

#![allow(clippy::unwrap_used)]

use graylane_tests::docs::LANE;
use graylane_tests::{ControlPlane, Subscriber, cli, write_file};

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

/// History keeps at least 100 revisions (rules.md): fewer is a usage error naming the
/// flag, not quietly raised.
#[test]
fn a_history_under_the_minimum_is_refused_naming_the_flag() {
    let out = std::process::Command::new(graylane_tests::bin("graylane-control"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--store", "memory:", "--history", "50"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("--history") && log.contains("50 is under the minimum of 100"),
        "{log}"
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
