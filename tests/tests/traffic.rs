//! Traffic reports end to end: sidecars count their outbound requests per destination
//! (namespace, service, lane, subset), report them on their discovery stream, and the
//! control plane's `GET /api/v1/traffic` shows what the test sent.
//!
//! Tolerances: requests and errors are counted exactly (every request here ends
//! before the test polls, and reports are only drained, never sampled), so counts and
//! error rates must match exactly; rps is counts over the window the control plane
//! has been up for, so it is only bounded; p50/p99 are checked to be in order and
//! within the bucket range of a loopback call.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use graylane_tests::etcd::Etcd;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, bin, eventually, http_get, raw, write_file};
use serde_json::Value;

const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
---
apiVersion: graylane.io/v1
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
    - {subset: v1, weight: 100}
  lanes:
    - tag: gray
      subset: v2
";

struct Mesh {
    cp: ControlPlane,
    _apps: Vec<DemoApp>,
    _sidecars: Vec<Sidecar>,
    frontend: Sidecar,
}

/// `orders` v1 and v2 and a `frontend` sidecar (the test talks to its outbound
/// listener), reporting every 200 ms to `cp`.
fn mesh(dir: &Path) -> Mesh {
    mesh_on(dir, ControlPlane::start(dir, &[]))
}

fn mesh_on(dir: &Path, cp: ControlPlane) -> Mesh {
    let rules = write_file(dir, "rules.yaml", RULES);
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();
    let url = cp.url();
    let mut apps = Vec::new();
    let mut sidecars = Vec::new();
    for (service, version) in [("orders", "v1"), ("orders", "v2"), ("frontend", "v1")] {
        let app = DemoApp::start(dir, service, version, None);
        let id = format!("{service}-{version}");
        let labels = format!("version={version}");
        let app_addr = app.addr.to_string();
        let args = [
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &labels,
            "--app-addr",
            &app_addr,
            "--control-plane",
            &url,
            "--otlp-endpoint",
            "none",
            "--traffic-report-interval",
            "200ms",
        ];
        let sidecar = Sidecar::start(dir, &id, &args);
        sidecar.wait_ready();
        apps.push(app);
        sidecars.push(sidecar);
    }
    let frontend = sidecars.pop().unwrap();
    frontend.wait_endpoints("orders", 2);
    Mesh {
        cp,
        _apps: apps,
        _sidecars: sidecars,
        frontend,
    }
}

fn call(addr: SocketAddr, host: &str, headers: &str) -> u16 {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    raw(addr, &request).0
}

fn traffic(cp: &ControlPlane, query: &str) -> (u16, String) {
    http_get(cp.http, &format!("/api/v1/traffic{query}"))
}

/// The row of `orders` in `lane` and `subset`, if any.
fn row<'a>(rows: &'a Value, lane: &str, subset: &str) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|r| r["service"] == "orders" && r["lane"] == lane && r["subset"] == subset)
}

#[test]
fn traffic_rows_match_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(dir.path());
    // Untagged: all to v1, all fine.
    for _ in 0..60 {
        assert_eq!(call(mesh.frontend.outbound, "orders", ""), 200);
    }
    // The gray lane: v2, one request in four answered 500.
    for i in 0..40 {
        let fail = if i % 4 == 0 {
            "x-demo-status: 500\r\n"
        } else {
            ""
        };
        let expected = if i % 4 == 0 { 500 } else { 200 };
        let headers = format!("Gray-Publish: gray\r\n{fail}");
        assert_eq!(call(mesh.frontend.outbound, "orders", &headers), expected);
    }
    // Hosts no rule knows get no series (a client could otherwise grow them).
    for i in 0..3 {
        call(mesh.frontend.outbound, &format!("no-such-service-{i}"), "");
    }
    let rows = eventually(
        Duration::from_secs(15),
        "the reports of 100 requests",
        || {
            let (status, body) = traffic(&mesh.cp, "?window=5m");
            assert_eq!(status, 200, "{body}");
            let rows: Value = serde_json::from_str(&body).unwrap();
            let count = |lane, subset| row(&rows, lane, subset).map(|r| r["requests"].as_u64());
            (count("-", "v1") == Some(Some(60)) && count("gray", "v2") == Some(Some(40)))
                .then_some(rows)
        },
    );
    let all = rows.as_array().unwrap();
    assert_eq!(all.len(), 2, "only the two orders series: {rows:#}");
    let v1 = row(&rows, "-", "v1").unwrap();
    let v2 = row(&rows, "gray", "v2").unwrap();
    assert_eq!(v1["namespace"], "default", "{v1}");
    assert_eq!(
        (v1["errors"].as_u64(), v1["errorRate"].as_f64()),
        (Some(0), Some(0.0))
    );
    assert_eq!(
        (v2["errors"].as_u64(), v2["errorRate"].as_f64()),
        (Some(10), Some(0.25))
    );
    for r in [v1, v2] {
        // Counts over at most 5 minutes, at least one 10 s slot.
        let requests = r["requests"].as_f64().unwrap();
        let rps = r["rps"].as_f64().unwrap();
        assert!(rps >= requests / 300.0 && rps <= requests / 10.0, "{r}");
        let (p50, p99) = (r["p50Ms"].as_f64().unwrap(), r["p99Ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= 1000.0, "{r}");
    }
    // No traffic since: nothing more is counted (an idle sidecar reports nothing, and
    // a report is never counted twice).
    let again: Value = serde_json::from_str(&traffic(&mesh.cp, "").1).unwrap();
    assert_eq!(row(&again, "-", "v1").unwrap()["requests"], 60);
}

/// Any sidecar credential reports traffic. One report of 4,096 made-up series used to
/// fill the mesh-wide table, so the real traffic (what rollout analysis reads) was in
/// no row for the whole window, and nothing said so. Series of services not in the
/// mesh, and of lanes and subsets the rules do not make, are now dropped and counted,
/// and one report holds what a sidecar's own table can (2,000).
#[test]
fn made_up_series_neither_crowd_out_real_traffic_nor_go_uncounted() {
    use graylane_proto::v1::{TrafficReport, TrafficSeries};
    let dir = tempfile::tempdir().unwrap();
    let mesh = mesh(dir.path());
    // A worker of its own: the stream is sent while the test waits (blocking) below.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut forger =
            graylane_tests::Subscriber::connect(&mesh.cp.url(), "forger", "forger-1", &[], None)
                .await
                .unwrap();
        forger.next().await;
        // Invented services, and invented lanes and subsets of the real one.
        let made_up = |service: String, lane: String, subset: &str| TrafficSeries {
            namespace: "default".into(),
            service,
            lane,
            subset: subset.into(),
            requests: 1,
            ..TrafficSeries::default()
        };
        let series = (0..2_048)
            .map(|i| made_up(format!("made-up-{i}"), "-".into(), "-"))
            .chain((0..1_024).map(|i| made_up("orders".into(), format!("made-up-{i}"), "v1")))
            .chain(
                (0..1_024).map(|i| made_up("orders".into(), "-".into(), &format!("made-up-{i}"))),
            )
            .collect();
        forger
            .report(TrafficReport {
                series,
                ..TrafficReport::default()
            })
            .await;
        eventually(Duration::from_secs(10), "the forged report counted", || {
            let (_, metrics) = http_get(mesh.cp.http, "/metrics");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("graylane_control_traffic_dropped_requests_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|n| *n >= 4_096)
        });
        for _ in 0..20 {
            assert_eq!(call(mesh.frontend.outbound, "orders", ""), 200);
        }
        eventually(Duration::from_secs(15), "the real traffic's row", || {
            (requests(&mesh.cp, "-", "v1") == Some(20)).then_some(())
        });
        let (_, body) = traffic(&mesh.cp, "?window=5m");
        assert!(!body.contains("made-up"), "{body}");
        drop(forger);
    });
}

/// The requests of `orders` in `lane`/`subset` per `cp`'s `/api/v1/traffic`.
fn requests(cp: &ControlPlane, lane: &str, subset: &str) -> Option<u64> {
    let (status, body) = traffic(cp, "?window=5m");
    assert_eq!(status, 200, "{body}");
    let rows: Value = serde_json::from_str(&body).unwrap();
    row(&rows, lane, subset)?["requests"].as_u64()
}

#[test]
fn any_etcd_replica_answers_for_the_whole_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let endpoint = etcd.endpoint();
    let a = ControlPlane::start_etcd(dir.path(), &endpoint, "/graylane-test", &[]);
    let b = ControlPlane::start_etcd(dir.path(), &endpoint, "/graylane-test", &[]);
    // Every sidecar (the reporting frontend included) on replica a.
    let mesh = mesh_on(dir.path(), a);
    for i in 0..20 {
        let fail = if i % 5 == 0 {
            "x-demo-status: 503\r\n"
        } else {
            ""
        };
        call(mesh.frontend.outbound, "orders", fail);
    }
    eventually(Duration::from_secs(10), "replica a to count 20", || {
        (requests(&mesh.cp, "-", "v1") == Some(20)).then_some(())
    });
    // b has no sidecar: it sees a's slot once that is over and published (≤ 11 s).
    eventually(Duration::from_secs(30), "replica b to count a's 20", || {
        (requests(&b, "-", "v1") == Some(20)).then_some(())
    });
    let (_, body) = traffic(&b, "");
    let rows: Value = serde_json::from_str(&body).unwrap();
    let v1 = row(&rows, "-", "v1").unwrap();
    assert_eq!(v1["errors"], 4, "{v1}");
    assert!(
        v1["p99Ms"].as_f64().is_some(),
        "the histogram travels too: {v1}"
    );
    // a never counts its own published slot twice.
    assert_eq!(requests(&mesh.cp, "-", "v1"), Some(20));
}

#[test]
fn a_bad_window_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // Past what is kept (15m) or shorter than a slot (10s): refused, not quietly clamped.
    for query in [
        "?window=abc",
        "?window=5",
        "?window=-5m",
        "?window=50m",
        "?window=1s",
    ] {
        let (status, body) = traffic(&cp, query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("window"), "{query}: {body}");
    }
    for ok in ["?window=15m", "?window=10s"] {
        let (status, body) = traffic(&cp, ok);
        assert_eq!((status, body.as_str()), (200, "[]"), "{ok}");
    }
}

#[test]
fn a_report_interval_typo_is_refused_naming_the_flag() {
    for bad in ["0s", "5", "2h"] {
        let out = Command::new(bin("graylane-sidecar"))
            .args(["--service", "a", "--traffic-report-interval", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        // clap's "invalid value", not "unexpected argument": the flag is known.
        assert!(stderr.contains("invalid value"), "{bad}: {stderr}");
        assert!(
            stderr.contains("--traffic-report-interval"),
            "{bad}: {stderr}"
        );
    }
}
