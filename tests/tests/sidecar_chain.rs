//! The data path with real processes: frontend → orders (v1, v2) → payments (v1), each
//! instance a demo app behind its own sidecar, calls going through the sidecars.
//! Asserts on what the apps received, hop by hop.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, write_file};
use serde_json::Value;

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
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector: {version: v3}
  fallback: []
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
  # The test client calls the edge in plaintext: no mesh identity, so with mTLS on
  # (the default, permissive) its tag is kept only because this policy says so.
  incoming: keep
";

struct Instance {
    _app: DemoApp,
    sidecar: Sidecar,
}

fn start(dir: &Path, url: &str, service: &str, version: &str, call: Option<&str>) -> Instance {
    let mut app = DemoApp::start(dir, service, version, call);
    let id = format!("{service}-{version}");
    let sidecar = Sidecar::start(
        dir,
        &id,
        &[
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &format!("version={version}"),
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            url,
        ],
    );
    if call.is_some() {
        app.proc.write_line(&sidecar.outbound.to_string());
    }
    sidecar.wait_ready();
    Instance { _app: app, sidecar }
}

/// A raw HTTP/1.1 GET to `addr` with `headers`; (status, response headers, body).
fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = String::from("GET / HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// (service, version, tag) of every hop of a demo response.
fn hops(body: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    while v.is_object() && v.get("service").is_some() {
        out.push((
            v["service"].as_str().unwrap().into(),
            v["version"].as_str().unwrap().into(),
            v["tag"].as_str().map(Into::into),
        ));
        v = v["downstream"].clone();
    }
    out
}

fn hop(service: &str, version: &str, tag: Option<&str>) -> (String, String, Option<String>) {
    (service.into(), version.into(), tag.map(Into::into))
}

fn traceparent(n: u8) -> String {
    format!("00-4bf92f3577b34da6a3ce929d0e0e47{n:02x}-00f067aa0ba902b7-01")
}

#[test]
fn a_tagged_request_stays_in_its_lane_on_every_hop_in_every_propagation_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "rules.yaml", RULES),
    ])
    .assert_ok();
    let url = cp.url();
    let frontend = start(dir.path(), &url, "frontend", "v1", Some("orders"));
    let _orders_v1 = start(dir.path(), &url, "orders", "v1", Some("payments"));
    let _orders_v2 = start(dir.path(), &url, "orders", "v2", Some("payments"));
    let _payments = start(dir.path(), &url, "payments", "v1", None);
    let entry = frontend.sidecar.inbound;
    eventually(
        Duration::from_secs(10),
        "the frontend sidecar to know orders and payments",
        || {
            let c = frontend.sidecar.config();
            (c["endpoints"]["orders"].as_array()?.len() == 2
                && c["endpoints"]["payments"].as_array()?.len() == 1)
                .then_some(())
        },
    );

    for (n, mode) in ["header", "traceparent", "baggage"].into_iter().enumerate() {
        let tp = traceparent(u8::try_from(n).unwrap());
        let (status, _, body) = get(
            entry,
            &[
                ("Gray-Publish", "gray"),
                ("traceparent", &tp),
                ("x-demo-forward", mode),
            ],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            hops(&body),
            [
                hop("frontend", "v1", Some("gray")),
                hop("orders", "v2", Some("gray")),
                hop("payments", "v1", Some("gray"))
            ],
            "mode {mode}: the lane is kept on every hop, payments falls back to base and the tag still travels"
        );
    }

    // The traceparent-mode request's trace id again, untagged (clients pick trace ids
    // and reuse them): it is untagged on every hop, not sent down the lane the earlier
    // request of that id was in.
    let (_, _, body) = get(
        entry,
        &[
            ("traceparent", &traceparent(1)),
            ("x-demo-forward", "traceparent"),
        ],
    );
    assert_eq!(
        hops(&body),
        [
            hop("frontend", "v1", None),
            hop("orders", "v1", None),
            hop("payments", "v1", None)
        ],
        "a reused trace id recovers no earlier request's tag"
    );

    // An app that forwards nothing drops the lane: the documented behaviour.
    let (_, _, body) = get(
        entry,
        &[
            ("Gray-Publish", "gray"),
            ("traceparent", &traceparent(9)),
            ("x-demo-forward", "none"),
        ],
    );
    assert_eq!(
        hops(&body),
        [
            hop("frontend", "v1", Some("gray")),
            hop("orders", "v1", None),
            hop("payments", "v1", None)
        ]
    );

    // Untagged traffic stays on base instances.
    let (_, _, body) = get(entry, &[]);
    assert_eq!(
        hops(&body),
        [
            hop("frontend", "v1", None),
            hop("orders", "v1", None),
            hop("payments", "v1", None)
        ]
    );

    // A malformed tag is no tag: removed, never forwarded raw, the request still served.
    let (status, _, body) = get(entry, &[("Gray-Publish", "gr@y!")]);
    assert_eq!(status, 200);
    assert_eq!(
        hops(&body),
        [
            hop("frontend", "v1", None),
            hop("orders", "v1", None),
            hop("payments", "v1", None)
        ]
    );
    let (_, _, body) = get(entry, &[("Gray_Publish", "gray")]);
    assert_eq!(
        hops(&body)[1],
        hop("orders", "v1", None),
        "the underscore variant is not the tag"
    );

    let (_, metrics) = graylane_tests::http_get(frontend.sidecar.admin, "/metrics");
    assert!(
        metrics.contains(r#"graylane_sidecar_requests_total{direction="outbound",service="orders",subset="-",lane="gray",status="200"} 3"#),
        "per-lane request counts: {metrics}"
    );
    assert!(
        metrics.contains("graylane_invalid_tag_total 1"),
        "the malformed tag is counted: {metrics}"
    );

    // Strict lane without instances: 503 naming the service and the lane.
    let (_, _, body) = get(entry, &[("Gray-Publish", "blue")]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["downstream"]["status"], 503, "{body}");
    let error = v["downstream"]["error"].as_str().unwrap();
    assert!(
        error.contains("orders") && error.contains("blue"),
        "{error}"
    );
}

#[test]
fn graylane_debug_returns_the_hop_trail_in_hop_order() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "rules.yaml", RULES),
    ])
    .assert_ok();
    let url = cp.url();
    let frontend = start(dir.path(), &url, "frontend", "v1", Some("orders"));
    let orders = start(dir.path(), &url, "orders", "v2", Some("payments"));
    let _payments = start(dir.path(), &url, "payments", "v1", None);
    frontend.sidecar.wait_endpoints("orders", 1);
    // orders calls payments: its sidecar must know payments too, or the last hop is
    // a 502 and the trail ends at orders.
    orders.sidecar.wait_endpoints("payments", 1);
    let (status, head, body) = get(
        frontend.sidecar.inbound,
        &[
            ("Gray-Publish", "gray"),
            ("Graylane-Debug", "1"),
            ("traceparent", &traceparent(1)),
            ("x-demo-forward", "traceparent"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let trail = head
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .unwrap_or_else(|| panic!("no trail in {head}"));
    let entries: Vec<&str> = trail.split(", ").collect();
    assert_eq!(
        entries,
        [
            "service=frontend;instance=frontend-v1;subset=-;tag=gray;source=header;fallback=false;revision=1",
            // The hops a sidecar made over mesh mTLS name the identity the instance proved.
            "service=orders;instance=orders-v2;subset=-;tag=gray;source=trace;fallback=false;revision=1;peer=spiffe://cluster.local/ns/default/sa/orders",
            "service=payments;instance=payments-v1;subset=-;tag=gray;source=trace;fallback=true;revision=1;peer=spiffe://cluster.local/ns/default/sa/payments",
        ]
    );
    // A client sending the hop count a sidecar writes is not taken for one: the entry
    // hop stays in the trail.
    let (_, head, _) = get(
        frontend.sidecar.inbound,
        &[
            ("Gray-Publish", "gray"),
            ("Graylane-Debug", "1"),
            ("graylane-hops", "1"),
            ("traceparent", &traceparent(2)),
            ("x-demo-forward", "traceparent"),
        ],
    );
    let forged: Vec<String> = head
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .unwrap_or_default()
        .split(", ")
        .map(|e| e.split(';').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        forged,
        ["service=frontend", "service=orders", "service=payments"],
        "{head}"
    );
    // A hop the sidecar fails (lane blue is strict, and no orders is v3) is in the
    // trail too, with the status it answered: the trail says where it stopped.
    let (_, head, body) = get(
        frontend.sidecar.inbound,
        &[
            ("Gray-Publish", "blue"),
            ("Graylane-Debug", "1"),
            ("traceparent", &traceparent(3)),
            ("x-demo-forward", "traceparent"),
        ],
    );
    assert!(body.contains("503"), "{body}");
    let trail = head
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .unwrap_or_else(|| panic!("no trail in {head}"));
    assert_eq!(
        trail.split(", ").collect::<Vec<_>>(),
        [
            "service=frontend;instance=frontend-v1;subset=-;tag=blue;source=header;fallback=false;revision=1",
            "service=orders;instance=-;subset=-;tag=blue;source=trace;fallback=false;revision=1;error=503",
        ]
    );
    let (_, head, _) = get(frontend.sidecar.inbound, &[]);
    assert!(
        !head.to_ascii_lowercase().contains("graylane-route"),
        "nothing is added without Graylane-Debug"
    );
    // That untagged call found orders with gray instances only: no base candidate,
    // so any instance served it, and the fallback is counted (rules.md, step 3).
    let (_, metrics) = graylane_tests::http_get(frontend.sidecar.admin, "/metrics");
    assert!(
        metrics.contains("graylane_base_fallback_total 1\n"),
        "{metrics}"
    );
}
