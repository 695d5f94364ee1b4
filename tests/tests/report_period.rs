//! The traffic report period travels with the snapshot: a LaneRollout with
//! `analysis.interval: 1s` makes sidecars report every second (release.md), though
//! their `--traffic-report-interval` is the default 5 s; without one they are back to
//! the flag's period. A control plane asking for a period out of range is clamped.
//!
//! How "every second" is observed without timing one report: the test keeps sending
//! requests and counts how often the control plane's totals change (each report that
//! arrives changes them). Six changes need about six seconds at 1 s, and could not
//! happen within the bound (12 s) at 5 s (two at most).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graylane_proto::v1::discovery_server::{Discovery, DiscoveryServer};
use graylane_proto::v1::{EndpointSet, Snapshot};
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, http_get, raw, write_file};
use serde_json::Value;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
  fallback: [base]
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
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

/// Holds at its first step for far longer than the test: only its interval matters.
const ROLLOUT: &str = "apiVersion: graylane.io/v1
kind: LaneRollout
metadata:
  name: gray-orders
spec:
  lane: gray
  entry: edge
  hashBy: {header: x-user-id}
  steps:
    - {percent: 5, hold: 1h}
  analysis:
    interval: 1s
";

fn sidecar(dir: &Path, cp: &ControlPlane, service: &str, app: &DemoApp) -> Sidecar {
    let id = format!("{service}-v1");
    let app_addr = app.addr.to_string();
    let url = cp.url();
    // No --traffic-report-interval: the default 5 s.
    let args = [
        "--service",
        service,
        "--instance-id",
        &id,
        "--labels",
        "version=v1",
        "--app-addr",
        &app_addr,
        "--control-plane",
        &url,
        "--otlp-endpoint",
        "none",
    ];
    let sidecar = Sidecar::start(dir, &id, &args);
    sidecar.wait_ready();
    sidecar
}

/// Every request `orders` got so far, as the control plane's reports say.
fn orders_requests(cp: &ControlPlane) -> u64 {
    let (status, body) = http_get(cp.http, "/api/v1/traffic?window=15m");
    assert_eq!(status, 200, "{body}");
    let rows: Value = serde_json::from_str(&body).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == "orders")
        .map(|r| r["requests"].as_u64().unwrap())
        .sum()
}

fn call_orders(frontend: SocketAddr) {
    let request = "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(frontend, request).0, 200);
}

/// Sends requests until the control plane's totals changed `changes` times (one
/// report each), within `within`; returns how many it sent.
fn wait_for_reports(
    cp: &ControlPlane,
    frontend: SocketAddr,
    changes: usize,
    within: Duration,
) -> u64 {
    let mut last = orders_requests(cp);
    let mut seen = 0;
    let mut sent = 0;
    eventually(within, &format!("{changes} traffic reports"), || {
        call_orders(frontend);
        sent += 1;
        let now = orders_requests(cp);
        if now != last {
            last = now;
            seen += 1;
        }
        (seen >= changes).then_some(())
    });
    sent
}

#[test]
fn a_rollout_with_a_one_second_interval_makes_sidecars_report_every_second() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir, "rules.yaml", RULES),
    ])
    .assert_ok();
    let orders_app = DemoApp::start(dir, "orders", "v1", None);
    let frontend_app = DemoApp::start(dir, "frontend", "v1", None);
    let _orders = sidecar(dir, &cp, "orders", &orders_app);
    let frontend = sidecar(dir, &cp, "frontend", &frontend_app);
    frontend.wait_endpoints("orders", 1);
    assert_eq!(frontend.config()["trafficReportInterval"], "5s");

    let rollout = write_file(dir, "rollout.yaml", ROLLOUT);
    cp.cli(&["rules", "apply", "-f", &rollout]).assert_ok();
    eventually(Duration::from_secs(10), "the 1 s report period", || {
        (frontend.config()["trafficReportInterval"] == "1s").then_some(())
    });
    // At 5 s a report, 12 s hold two at most.
    let sent = wait_for_reports(&cp, frontend.outbound, 6, Duration::from_secs(12));
    // Each request counted once: none lost or counted twice when the period changed.
    eventually(Duration::from_secs(5), "every request reported", || {
        (orders_requests(&cp) == sent).then_some(())
    });

    // No LaneRollout left (an active one cannot be deleted; aborted, it can): back
    // to the flag's period.
    cp.cli(&["rollout", "abort", "gray-orders"]).assert_ok();
    cp.cli(&["rules", "delete", "LaneRollout/gray-orders"])
        .assert_ok();
    eventually(Duration::from_secs(10), "the 5 s report period", || {
        (frontend.config()["trafficReportInterval"] == "5s").then_some(())
    });
}

/// A control plane that sends the snapshots the test hands it: each stream takes the
/// next receiver, and ends when the test drops its sender.
struct Scripted {
    streams: Mutex<VecDeque<tokio::sync::mpsc::Receiver<Snapshot>>>,
}

type Snapshots = Pin<Box<dyn Stream<Item = Result<Snapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for Scripted {
    type SubscribeStream = Snapshots;

    async fn issue_certificate(
        &self,
        _: Request<graylane_proto::v1::CertificateRequest>,
    ) -> Result<Response<graylane_proto::v1::CertificateResponse>, Status> {
        Err(Status::unimplemented(
            "this control plane issues no certificates",
        ))
    }

    async fn subscribe(
        &self,
        request: Request<Streaming<graylane_proto::v1::SidecarMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let Some(mut rx) = self.streams.lock().unwrap().pop_front() else {
            return Err(Status::unavailable("no more streams scripted"));
        };
        // Keep reading the sidecar's ACKs and reports, or its sends would block.
        let mut inbound = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(snapshot) = rx.recv().await {
                if tx.send(Ok(snapshot)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

/// A snapshot of empty rules; `first` of its stream, with the (empty) endpoints too.
fn snapshot(version: u64, period_ms: Option<u32>, first: bool) -> Snapshot {
    Snapshot {
        version,
        revision: version,
        rules: Some(String::new()),
        endpoints: first.then(EndpointSet::default),
        traffic_report_interval_ms: period_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asked_periods_are_clamped_and_an_absent_one_keeps_the_period_or_means_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (second_tx, second_rx) = tokio::sync::mpsc::channel(4);
    let scripted = Scripted {
        streams: Mutex::new([rx, second_rx].into()),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(scripted))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let d = dir.path().to_path_buf();
    let sidecar = tokio::task::spawn_blocking(move || {
        let args = [
            "--service",
            "orders",
            "--instance-id",
            "orders-1",
            "--control-plane",
            &url,
            "--otlp-endpoint",
            "none",
        ];
        Sidecar::start(&d, "orders", &args)
    })
    .await
    .unwrap();
    let sidecar = Arc::new(sidecar);
    let period_is = |want: &'static str| {
        let sidecar = Arc::clone(&sidecar);
        tokio::task::spawn_blocking(move || {
            eventually(Duration::from_secs(10), &format!("period {want}"), || {
                (sidecar.config()["trafficReportInterval"] == want).then_some(())
            });
        })
    };
    // 0 ms would be a busy loop of reports: read as 1 s.
    tx.send(snapshot(1, Some(0), true)).await.unwrap();
    period_is("1s").await.unwrap();
    // A later snapshot without the field: unchanged.
    tx.send(snapshot(2, None, false)).await.unwrap();
    let sidecar_ = Arc::clone(&sidecar);
    tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), "revision 2 applied", || {
            (sidecar_.config()["revision"] == 2).then_some(())
        });
    })
    .await
    .unwrap();
    assert_eq!(sidecar.config()["trafficReportInterval"], "1s");
    // Hours asked: never longer than the flag's 5 s.
    tx.send(snapshot(3, Some(u32::MAX), false)).await.unwrap();
    period_is("5s").await.unwrap();
    // In between: taken as asked.
    tx.send(snapshot(4, Some(1_500), false)).await.unwrap();
    period_is("1500ms").await.unwrap();
    // The stream ends; the next one is from a control plane that never sends the
    // field (older, mid-upgrade): the flag's period, not the last stream's.
    drop(tx);
    second_tx.send(snapshot(1, None, true)).await.unwrap();
    period_is("5s").await.unwrap();
}
