//! Scoped endpoints (issue 15) with real processes: a sidecar started with
//! `--endpoint-scope scoped` holds the endpoints of its own service and of what it
//! calls, learns a new service from its first call (which waits for the endpoints),
//! tells a host outside the mesh by the directory without waiting, and declares what
//! it learned again after a control-plane restart.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use std::process::Command;

use graylane_tests::{ControlPlane, DemoApp, Proc, Sidecar, bin, eventually, instance};

/// `GET /` with `Host: host` through a sidecar's outbound listener: (status, response).
fn get(outbound: SocketAddr, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// The scoped caller: service `web`, no app behind it.
fn web(dir: &Path, url: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec![
        "--service",
        "web",
        "--instance-id",
        "web-1",
        "--control-plane",
        url,
        "--otlp-endpoint",
        "none",
        "--endpoint-scope",
        "scoped",
    ];
    args.extend(extra);
    let sidecar = Sidecar::start(dir, "web-1", &args);
    sidecar.wait_ready();
    sidecar
}

const INTEREST: &str = "graylane_sidecar_endpoint_interest_total";
const APPLIED: &str = "graylane_sidecar_snapshots_applied_total";
const WAITS: &str = "graylane_sidecar_endpoint_interest_waits_total";
const TIMEOUTS: &str = "graylane_sidecar_endpoint_interest_timeouts_total";

#[test]
fn a_first_call_asks_for_the_service_and_the_sidecar_holds_only_what_it_calls() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let (_pay_app, _pay) = instance(dir, &url, "payments", "payments-1");
    let web = web(dir, &url, &[]);
    eventually(
        Duration::from_secs(10),
        "the directory to list 3 services",
        || (web.config()["endpointScope"]["directory"] == 3).then_some(()),
    );
    assert_eq!(web.held_services(), ["web"], "its own service only, so far");

    // Never declared: the first call waits for the endpoints and gets the answer.
    let (status, response) = get(web.outbound, "orders");
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("orders"), "{response}");
    assert_eq!(web.held_services(), ["orders", "web"]);
    assert_eq!(web.counter(INTEREST), 1);
    assert_eq!(web.counter(WAITS), 1);
    assert_eq!(web.counter(TIMEOUTS), 0);
    let scope = &web.config()["endpointScope"];
    assert_eq!(scope["mode"], "scoped");
    assert_eq!(scope["learned"], serde_json::json!(["orders"]));
    // Held now: the next call does not wait or ask again.
    assert_eq!(get(web.outbound, "orders").0, 200);
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));

    // A host the directory does not name is no mesh service: straight to the host,
    // without asking or waiting.
    let outside = DemoApp::start(dir, "outside", "v1", None);
    let started = Instant::now();
    let (status, response) = get(web.outbound, &format!("localhost:{}", outside.addr.port()));
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("outside"), "{response}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));

    // New instances: those of a called service arrive, those of others do not.
    let (_pay2_app, _pay2) = instance(dir, &url, "payments", "payments-2");
    let (_orders2_app, _orders2) = instance(dir, &url, "orders", "orders-2");
    web.wait_endpoints("orders", 2);
    assert_eq!(
        web.held_services(),
        ["orders", "web"],
        "payments never sent"
    );
}

#[test]
fn declared_calls_are_held_from_the_start_and_unknown_services_fail_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let web = web(dir, &url, &["--calls", "orders,payments.default"]);
    web.wait_endpoints("orders", 1);
    let scope = &web.config()["endpointScope"];
    assert_eq!(scope["declared"], serde_json::json!(["orders", "payments"]));
    // payments has no instance yet: none held, and a call is the old 502 at once.
    let started = Instant::now();
    let (status, _) = get(web.outbound, "payments");
    assert_eq!(status, 502);
    assert!(started.elapsed() < Duration::from_millis(900));
    // Declared: its first instance arrives without any call.
    let (_pay_app, _pay) = instance(dir, &url, "payments", "payments-1");
    web.wait_endpoints("payments", 1);
    assert_eq!(web.counter(INTEREST), 0, "nothing had to be asked for");

    // A typo in --calls is refused at start, naming the flag's value.
    let mut cmd = Command::new(bin("graylane-sidecar"));
    cmd.args(["--service", "web", "--control-plane", &url])
        .args(["--endpoint-scope", "scoped", "--calls", "orders,Orders"]);
    let mut bad = Proc::spawn("bad-calls", cmd, dir.join("bad-calls.log"));
    eventually(
        Duration::from_secs(10),
        "the typo to stop the sidecar",
        || bad.has_exited().then_some(()),
    );
    assert!(bad.log_text().contains("\"Orders\""), "{}", bad.log_text());
}

#[test]
fn after_a_control_plane_restart_the_learned_scope_is_declared_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let web = web(dir, &url, &["--endpoint-grace", "0s"]);
    eventually(
        Duration::from_secs(10),
        "the directory to list orders",
        || (web.config()["endpointScope"]["directory"] == 2).then_some(()),
    );
    assert_eq!(get(web.outbound, "orders").0, 200);
    let connects = web.counter("graylane_sidecar_control_plane_connects_total");
    let applied = web.counter(APPLIED);

    let grpc = cp.grpc.to_string();
    cp.proc.kill();
    let _cp = ControlPlane::start_on(dir, &grpc, &[]);
    eventually(Duration::from_secs(20), "web to reconnect", || {
        (web.counter("graylane_sidecar_control_plane_connects_total") > connects).then_some(())
    });
    // With no grace, orders is held again only if the new stream's Hello named it.
    // (Listed by a snapshot of the new control plane: until web applies one, its
    // table is the old one, and the first may come before orders is back.)
    eventually(
        Duration::from_secs(10),
        "orders listed by the new control plane",
        || {
            let fresh = web.counter(APPLIED) > applied;
            (fresh && web.config()["endpoints"]["orders"].as_array()?.len() == 1).then_some(())
        },
    );
    let (status, body) = get(web.outbound, "orders");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        web.counter(INTEREST),
        1,
        "declared again, not asked for again"
    );
}

#[test]
fn a_scoped_sidecar_started_from_its_cache_routes_what_it_had_learned() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let (_pay_app, _pay) = instance(dir, &url, "payments", "payments-1");
    let cache = dir.join("web-cache");
    let cache_arg = cache.to_string_lossy().into_owned();
    let first = web(dir, &url, &["--cache-dir", &cache_arg]);
    eventually(
        Duration::from_secs(10),
        "the directory to list 3 services",
        || (first.config()["endpointScope"]["directory"] == 3).then_some(()),
    );
    assert_eq!(get(first.outbound, "orders").0, 200);
    // In the snapshot file, or in the endpoint log after it.
    eventually(Duration::from_secs(10), "orders in the cache", || {
        let files = std::fs::read_dir(&cache).ok()?;
        files
            .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
            .any(|text| text.contains("orders-1"))
            .then_some(())
    });
    drop(first);
    cp.proc.kill();

    // The control plane is down: routes, directory and learned endpoints from the file.
    let web = web(dir, &url, &["--cache-dir", &cache_arg]);
    let config = web.config();
    assert_eq!(config["source"], "cache");
    assert_eq!(web.held_services(), ["orders", "web"]);
    let (status, response) = get(web.outbound, "orders");
    assert_eq!(status, 200, "{response}");
    assert_eq!(web.counter(WAITS), 0, "held: no wait");
    // payments is a mesh service the file has no endpoints for, and no control plane
    // can send them: one bounded wait, then the old answer.
    let started = Instant::now();
    let (status, _) = get(web.outbound, "payments");
    assert_eq!(status, 502);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!((web.counter(WAITS), web.counter(TIMEOUTS)), (1, 1));
    // The next calls fail at once for a while: a dead control plane does not cost
    // every caller a second.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(get(web.outbound, "payments").0, 502);
        assert!(started.elapsed() < Duration::from_millis(900));
    }
    assert_eq!((web.counter(WAITS), web.counter(TIMEOUTS)), (1, 1));
}

/// HTTP/2 with prior knowledge (how gRPC clients call): the service comes from
/// `:authority`, and the first call to it asks and waits as an HTTP/1.1 call does.
#[test]
fn an_http2_call_by_authority_asks_for_the_service_too() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let (_orders_app, _orders) = instance(dir, &url, "orders", "orders-1");
    let web = web(dir, &url, &[]);
    eventually(
        Duration::from_secs(10),
        "the directory to list 2 services",
        || (web.config()["endpointScope"]["directory"] == 2).then_some(()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |authority: &str| {
        runtime.block_on(async {
            let tcp = tokio::net::TcpStream::connect(web.outbound).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(connection);
            let mut client = client.ready().await.unwrap();
            let request = http::Request::builder()
                .uri(format!("http://{authority}/"))
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            response.await.unwrap().status().as_u16()
        })
    };
    assert_eq!(call("orders"), 200);
    assert_eq!(web.held_services(), ["orders", "web"]);
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
    // A host outside the mesh forms is not the mesh's orders: nothing asked for.
    assert_eq!(call("orders.example.invalid"), 502);
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
}
