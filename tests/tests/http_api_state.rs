//! The HTTP/JSON API and the CLI (gRPC) see one state: rules, releases, rollbacks,
//! sidecars, traces; on the file store and a real etcd, whose outage is a 503.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use graylane_tests::etcd::Etcd;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, write_file};
use serde_json::{Value, json};

/// (status, body as JSON; Null if not JSON) of one request without credentials (the
/// control plane runs without --token-file on loopback: every call is an admin's).
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let content_type = if body.starts_with('{') {
        "application/json"
    } else {
        "application/yaml"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn lane(name: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: {name}\nspec:\n  tag: {name}\n  selector: {{version: v2}}\n"
    )
}

fn route_policy(service: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata:\n  name: {service}\nspec:\n  service: {service}\n  subsets:\n    - {{name: v1, labels: {{version: v1}}}}\n  default:\n    - {{subset: v1, weight: 100}}\n"
    )
}

#[test]
fn the_cli_and_the_api_see_the_same_rules_releases_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // CLI writes, API reads.
    let file = write_file(dir.path(), "gray.yaml", &lane("gray"));
    cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
    let (status, one) = call(cp.http, "GET", "/api/v1/rules/Lane/gray", "");
    assert_eq!(
        (status, &one["spec"]["tag"]),
        (200, &json!("gray")),
        "{one}"
    );
    // API writes, CLI reads.
    let (status, applied) = call(cp.http, "POST", "/api/v1/rules", &route_policy("orders"));
    assert_eq!(status, 200, "{applied}");
    let out = cp.cli(&["rules", "get", "RoutePolicy/orders"]);
    out.assert_ok();
    assert!(out.stdout.contains("service: orders"), "{out:?}");
    // A release switched by PUT is what `graylane release get` shows, and back.
    // Gray with no instance in a lane would 503 every request: refused as the CLI
    // refuses it, unless forced.
    let (status, refused) = call(
        cp.http,
        "PUT",
        "/api/v1/releases/orders",
        r#"{"state": "gray"}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("--force"),
        "{refused}"
    );
    let (status, switched) = call(
        cp.http,
        "PUT",
        "/api/v1/releases/orders",
        r#"{"state": "gray", "force": true}"#,
    );
    assert_eq!(status, 200, "{switched}");
    assert_eq!(switched["committed"], true, "{switched}");
    let out = cp.cli(&["release", "get", "orders", "-o", "json"]);
    out.assert_ok();
    assert!(out.stdout.contains("\"gray\""), "{out:?}");
    cp.cli(&["release", "set", "orders", "prod"]).assert_ok();
    let (status, state) = call(cp.http, "GET", "/api/v1/releases/orders", "");
    assert_eq!((status, &state["state"]), (200, &json!("prod")), "{state}");
    let (_, all) = call(cp.http, "GET", "/api/v1/releases", "");
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "orders" && s["state"] == "prod"),
        "{all}"
    );
    assert_eq!(call(cp.http, "GET", "/api/v1/releases/payments", "").0, 404);
    // Unknown service without force: refused as the CLI refuses it.
    let (status, unknown) = call(
        cp.http,
        "PUT",
        "/api/v1/releases/payments",
        r#"{"state": "prod"}"#,
    );
    assert_eq!(status, 400, "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("no service \"payments\""),
        "{unknown}"
    );
    // Rollback to revision 1 (only the Lane), seen by the CLI.
    let (status, rolled) = call(cp.http, "POST", "/api/v1/rollback", r#"{"to": 1}"#);
    assert_eq!(status, 200, "{rolled}");
    let revision = rolled["revision"].as_u64().unwrap();
    assert!(
        rolled["changes"].as_array().unwrap().contains(
            &json!({"resource": "RoutePolicy/orders", "namespace": "default", "action": "deleted"})
        ),
        "{rolled}"
    );
    let out = cp.cli(&["rules", "get", "-o", "json"]);
    out.assert_ok();
    assert_eq!(out.json()["revision"].as_u64(), Some(revision), "{out:?}");
    assert!(!out.stdout.contains("RoutePolicy"), "{out:?}");
    assert_eq!(
        call(cp.http, "POST", "/api/v1/rollback", r#"{"to": 999}"#).0,
        404
    );
    // History names the API's writes as the role and address, the CLI's as the user.
    let (_, history) = call(cp.http, "GET", "/api/v1/history", "");
    assert_eq!(history[0]["appliedBy"], "admin (127.0.0.1)", "{history}");
    let cli_history = cp.cli(&["rules", "history", "-o", "json"]);
    assert!(
        cli_history.stdout.contains("admin (127.0.0.1)"),
        "{cli_history:?}"
    );
}

#[test]
fn reads_of_sidecars_traces_gaps_and_explain_answer_as_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (status, sidecars) = call(cp.http, "GET", "/api/v1/sidecars", "");
    assert_eq!((status, sidecars), (200, json!([])));
    assert_eq!(call(cp.http, "GET", "/api/v1/gaps", ""), (200, json!([])));
    assert_eq!(
        call(cp.http, "GET", "/api/v1/traces?recent=5", ""),
        (200, json!([]))
    );
    // As the CLI's `--recent 0`: refused, not read as 1.
    let (status, body) = call(cp.http, "GET", "/api/v1/traces?recent=0", "");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("recent"), "{body}");
    let (status, body) = call(cp.http, "GET", "/api/v1/traces/not-a-trace-id", "");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("32 hex digits"),
        "{body}"
    );
    let absent = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        call(cp.http, "GET", &format!("/api/v1/traces/{absent}"), "").0,
        404
    );
    // Explain: the CLI's `explain -o json`, word for word.
    let body = r#"{"service": "orders", "headers": {"Gray-Publish": "gray"}}"#;
    let (status, api) = call(cp.http, "POST", "/api/v1/explain", body);
    assert_eq!(status, 200, "{api}");
    let out = cp.cli(&[
        "explain",
        "--service",
        "orders",
        "--header",
        "Gray-Publish=gray",
        "-o",
        "json",
    ]);
    out.assert_ok();
    assert_eq!(api, out.json());
    let bad_tag = r#"{"service": "orders", "headers": {"Gray-Publish": "no spaces"}}"#;
    let (status, body) = call(cp.http, "POST", "/api/v1/explain", bad_tag);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not a valid tag"),
        "{body}"
    );
    // Traffic: an array for a window; a window that is no duration is the caller's error.
    let (status, traffic) = call(cp.http, "GET", "/api/v1/traffic?window=5m", "");
    assert!(status == 200 && traffic.is_array(), "{status} {traffic}");
    assert_eq!(
        call(cp.http, "GET", "/api/v1/traffic?window=soon", "").0,
        400
    );
    // The probes still answer beside the API.
    assert_eq!(graylane_tests::http_get(cp.http, "/ready").0, 200);
    assert_eq!(graylane_tests::http_get(cp.http, "/nothing").0, 404);
}

#[test]
fn on_etcd_the_api_writes_races_and_answers_503_while_etcd_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let cp = ControlPlane::start_etcd(dir.path(), &etcd.endpoint(), "/graylane-http", &[]);
    let (status, applied) = call(cp.http, "POST", "/api/v1/rules", &lane("gray"));
    assert_eq!(
        (status, &applied["revision"]),
        (200, &json!(1)),
        "{applied}"
    );
    cp.cli(&["rules", "get", "Lane/gray"]).assert_ok();
    let (status, stale) = call(
        cp.http,
        "POST",
        "/api/v1/rules?expectRevision=0",
        &lane("blue"),
    );
    assert_eq!(status, 409, "{stale}");
    etcd.stop();
    let (status, down) = eventually(Duration::from_secs(30), "a 503 while etcd is down", || {
        let answer = call(cp.http, "POST", "/api/v1/rules", &lane("blue"));
        (answer.0 == 503).then_some(answer)
    });
    assert_eq!(status, 503);
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{down}"
    );
}

#[test]
fn lanes_and_sidecars_show_who_serves_each_lane_and_where_the_rest_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let strict = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: canary\nspec:\n  tag: canary\n  selector: {version: v3}\n  fallback: []\n";
    let rules = format!("{}---\n{strict}", lane("gray"));
    assert_eq!(call(cp.http, "POST", "/api/v1/rules", &rules).0, 200);
    let mut running = Vec::new();
    for (service, id, version) in [
        ("orders", "orders-1", "v2"),
        ("payments", "payments-1", "v1"),
    ] {
        let app = DemoApp::start(dir.path(), service, version, None);
        let labels = format!("version={version}");
        let sidecar = Sidecar::start(
            dir.path(),
            id,
            &[
                "--service",
                service,
                "--instance-id",
                id,
                "--labels",
                &labels,
                "--app-addr",
                &app.addr.to_string(),
                "--control-plane",
                &cp.url(),
            ],
        );
        sidecar.wait_ready();
        running.push((app, sidecar));
    }
    let sidecars = eventually(Duration::from_secs(20), "both sidecars listed", || {
        let (_, list) = call(cp.http, "GET", "/api/v1/sidecars", "");
        (list.as_array()?.len() == 2).then_some(list)
    });
    let orders = sidecars
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "orders")
        .unwrap();
    assert_eq!(orders["instance"], "orders-1", "{sidecars}");
    assert_eq!(orders["lane"], "gray", "{sidecars}");
    assert_eq!(orders["labels"], json!({"version": "v2"}), "{sidecars}");
    assert!(orders["nack"].is_null(), "{sidecars}");
    // `graylane status` lists the same instances.
    let status = cp.cli(&["status", "-o", "json"]);
    status.assert_ok();
    assert!(
        status.stdout.contains("orders-1") && status.stdout.contains("payments-1"),
        "{status:?}"
    );
    let (status, lanes) = call(cp.http, "GET", "/api/v1/lanes", "");
    assert_eq!(status, 200, "{lanes}");
    let service = |lane: &str, service: &str| {
        let lane = lanes
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == lane)
            .unwrap();
        lane["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == service)
            .unwrap()
            .clone()
    };
    let gray = lanes
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "gray")
        .unwrap();
    assert_eq!(
        (&gray["tag"], &gray["selector"]),
        (&json!("gray"), &json!({"version": "v2"})),
        "{lanes}"
    );
    assert_eq!(
        service("gray", "orders")["instances"],
        json!(["orders-1"]),
        "{lanes}"
    );
    assert!(
        service("gray", "orders")["fallsBackTo"].is_null(),
        "{lanes}"
    );
    assert_eq!(
        service("gray", "payments")["instances"],
        json!([]),
        "{lanes}"
    );
    assert_eq!(
        service("gray", "payments")["fallsBackTo"],
        "base",
        "{lanes}"
    );
    assert_eq!(
        service("canary", "orders")["fallsBackTo"],
        "fail",
        "{lanes}"
    );

    // A RoutePolicy's lane override puts payments' v1 in gray: the sidecars route
    // gray there, and the sidecar list, status and the lanes view say so too.
    let override_ = "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: payments}\n\
        spec:\n  service: payments\n  subsets: [{name: v1, labels: {version: v1}}]\n  \
        lanes: [{tag: gray, subset: v1}]\n";
    assert_eq!(call(cp.http, "POST", "/api/v1/rules", override_).0, 200);
    let (_, sidecars) = call(cp.http, "GET", "/api/v1/sidecars", "");
    let payments = sidecars
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "payments")
        .unwrap();
    assert_eq!(payments["lane"], "gray", "{sidecars}");
    let (_, lanes) = call(cp.http, "GET", "/api/v1/lanes", "");
    let gray_payments = lanes
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "gray")
        .and_then(|l| {
            l["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "payments")
                .cloned()
        })
        .unwrap();
    assert_eq!(gray_payments["instances"], json!(["payments-1"]), "{lanes}");
    assert!(gray_payments["fallsBackTo"].is_null(), "{lanes}");
    let table = cp.cli(&["status"]);
    let row = table
        .assert_ok()
        .stdout
        .lines()
        .find(|l| l.contains("payments-1"))
        .unwrap()
        .to_owned();
    assert!(row.contains("gray"), "{row}");
}
