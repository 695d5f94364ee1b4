//! The sidecar stream against a real graylane-control: snapshots to every
//! subscriber, endpoint deltas, ACK/NACK in status, apply --wait, and coalescing for
//! a slow subscriber.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graylane_tests::docs::{BLUE, LANE};
use graylane_tests::{ControlPlane, Subscriber, cli, write_file};

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
    // /metrics counts the pushes, the NACK and the ACK's latency.
    let (_, metrics) = graylane_tests::http_get(cp.http, "/metrics");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(value("graylane_control_pushes_total") >= 4, "{metrics}");
    assert_eq!(value("graylane_control_nacks_total"), 1, "{metrics}");
    assert_eq!(
        value("graylane_control_push_ack_seconds_count"),
        1,
        "{metrics}"
    );
    assert!(
        metrics.contains("graylane_control_push_ack_seconds_bucket{le=\"+Inf\"} 1"),
        "{metrics}"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_unavailable_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(dir.path(), &[]);
    let mut sub = Subscriber::connect(&cp.url(), "orders", "orders-1", &[], None)
        .await
        .unwrap();
    sub.next().await;
    let status = tokio::task::spawn_blocking(move || {
        let status = cp.proc.terminate(Duration::from_secs(10));
        (status, cp)
    });
    let ended = sub.ended().await;
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    let (status, _cp) = status.await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}
