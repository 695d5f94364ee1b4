//! Operators see each sidecar's endpoint scope (issue 15) wherever sidecars are
//! listed: `graylane status` (a SCOPE column, and `endpointScope` in `-o json`) and
//! `GET /api/v1/sidecars`, with real processes. A scope grows as the app calls new
//! services; a long one is counted whole and named in part; one past the limit is
//! listed as what it became, `all`. With etcd, every replica lists every sidecar's
//! scope.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use graylane_tests::etcd::Etcd;
use graylane_tests::{ControlPlane, Sidecar, eventually, http_get, instance, raw};
use serde_json::{Value, json};

/// A scoped sidecar of `web` with no app, declaring `calls`.
fn scoped(dir: &Path, url: &str, id: &str, calls: &str) -> Sidecar {
    let args = [
        "--service",
        "web",
        "--instance-id",
        id,
        "--control-plane",
        url,
        "--otlp-endpoint",
        "none",
        "--endpoint-scope",
        "scoped",
        "--calls",
        calls,
    ];
    let sidecar = Sidecar::start(dir, id, &args);
    sidecar.wait_ready();
    sidecar
}

/// `endpointScope` of `instance` in `graylane status -o json`.
fn listed_scope(cp: &ControlPlane, instance: &str) -> Option<Value> {
    let out = cp.cli(&["status", "-o", "json"]);
    out.assert_ok();
    out.json()["sidecars"]
        .as_array()?
        .iter()
        .find(|s| s["instance"] == instance)
        .map(|s| s["endpointScope"].clone())
}

/// The `graylane status` table row of `instance`.
fn row(cp: &ControlPlane, instance: &str) -> String {
    let out = cp.cli(&["status"]);
    out.assert_ok();
    out.stdout
        .lines()
        .find(|l| l.contains(instance))
        .unwrap_or_else(|| panic!("no row for {instance}: {}", out.stdout))
        .to_string()
}

/// `endpointScope` of `instance` in `GET /api/v1/sidecars`.
fn api_scope(http: SocketAddr, instance: &str) -> Option<Value> {
    let (status, body) = http_get(http, "/api/v1/sidecars");
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list.as_array()?
        .iter()
        .find(|s| s["instance"] == instance)
        .map(|s| s["endpointScope"].clone())
}

#[test]
fn status_and_the_api_show_each_sidecars_scope_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let (_pay_app, _pay) = instance(dir, &url, "payments", "payments-1");
    let web = scoped(dir, &url, "web-1", "orders");

    // Side by side: the scoped sidecar names its services (its own and --calls), the
    // default one says `all`.
    let web_scope = json!({"mode": "scoped", "serviceCount": 2, "services": ["orders", "web"]});
    assert_eq!(listed_scope(&cp, "web-1"), Some(web_scope.clone()));
    assert_eq!(listed_scope(&cp, "orders-1"), Some(json!({"mode": "all"})));
    let header = cp.cli(&["status"]).stdout;
    assert!(header.lines().next().unwrap().contains("SCOPE"), "{header}");
    assert!(row(&cp, "web-1").contains("scoped (2)"));
    assert!(row(&cp, "orders-1").trim_end().ends_with(" all"));
    assert_eq!(api_scope(cp.http, "web-1"), Some(web_scope));
    assert_eq!(
        api_scope(cp.http, "payments-1"),
        Some(json!({"mode": "all"}))
    );

    // The app calls payments: the scope the listing shows grows with it.
    eventually(
        Duration::from_secs(10),
        "the directory to list 3 services",
        || (web.config()["endpointScope"]["directory"] == 3).then_some(()),
    );
    let (status, body) = raw(
        web.outbound,
        "GET / HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let grown = json!({
        "mode": "scoped", "serviceCount": 3, "services": ["orders", "payments", "web"]
    });
    eventually(
        Duration::from_secs(10),
        "the listing to show payments",
        || (listed_scope(&cp, "web-1")? == grown).then_some(()),
    );
    assert!(row(&cp, "web-1").contains("scoped (3)"));
    assert_eq!(api_scope(cp.http, "web-1"), Some(grown));
    // A typo the app calls is no mesh service: asked for nowhere, listed nowhere.
    let (status, _) = raw(
        web.outbound,
        "GET / HTTP/1.1\r\nHost: paymnets\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 502);
    assert_eq!(
        listed_scope(&cp, "web-1").unwrap()["serviceCount"],
        3,
        "the typo did not widen the scope"
    );
}

#[test]
fn a_long_scope_is_counted_whole_and_one_past_the_limit_is_listed_as_all() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    // 150 services declared: all counted, the listing names the first 100 only.
    let long: Vec<String> = (0..150).map(|i| format!("s{i:03}")).collect();
    let _long = scoped(dir, &url, "web-long", &long.join(","));
    let scope = listed_scope(&cp, "web-long").unwrap();
    assert_eq!(scope["mode"], "scoped");
    assert_eq!(scope["serviceCount"], 151, "{scope}");
    let names = scope["services"].as_array().unwrap();
    assert_eq!(names.len(), 100);
    assert_eq!(
        (names[0].as_str(), names[99].as_str()),
        (Some("s000"), Some("s099"))
    );
    assert!(row(&cp, "web-long").contains("scoped (151)"));

    // More than the control plane scopes (1,000): it sends every endpoint, and says so.
    let huge: Vec<String> = (0..1_001).map(|i| format!("h{i}")).collect();
    let _huge = scoped(dir, &url, "web-huge", &huge.join(","));
    assert_eq!(listed_scope(&cp, "web-huge"), Some(json!({"mode": "all"})));
    assert!(row(&cp, "web-huge").trim_end().ends_with(" all"));
}

#[test]
fn every_replica_lists_a_scope_another_replica_holds() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let etcd = Etcd::start(dir);
    let a = ControlPlane::start_etcd(dir, &etcd.endpoint(), "/graylane-test", &[]);
    let b = ControlPlane::start_etcd(dir, &etcd.endpoint(), "/graylane-test", &[]);
    let (_orders_app, _orders) = instance(dir, &b.url(), "orders", "orders-1");
    let (_pay_app, _pay) = instance(dir, &b.url(), "payments", "payments-1");
    let web = scoped(dir, &a.url(), "web-1", "orders");

    // Listed through B, which learns web's scope from A's record in etcd.
    let declared = json!({"mode": "scoped", "serviceCount": 2, "services": ["orders", "web"]});
    eventually(Duration::from_secs(10), "B to list web's scope", || {
        (listed_scope(&b, "web-1")? == declared).then_some(())
    });
    // And the other way: A lists B's unscoped sidecar, once B's record has reached it.
    eventually(
        Duration::from_secs(10),
        "A to list orders-1 as unscoped",
        || (listed_scope(&a, "orders-1")? == json!({"mode": "all"})).then_some(()),
    );

    // Widened on A's stream: B's listing follows.
    eventually(
        Duration::from_secs(10),
        "the directory to list 3 services",
        || (web.config()["endpointScope"]["directory"] == 3).then_some(()),
    );
    let (status, body) = raw(
        web.outbound,
        "GET / HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let grown = json!({
        "mode": "scoped", "serviceCount": 3, "services": ["orders", "payments", "web"]
    });
    eventually(Duration::from_secs(10), "B to list the grown scope", || {
        (listed_scope(&b, "web-1")? == grown).then_some(())
    });
}
