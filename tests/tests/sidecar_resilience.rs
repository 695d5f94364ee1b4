//! The data path under stress, with real processes: SIGTERM drains in-flight requests,
//! and killing an instance under load fails no idempotent request.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually};

fn get(addr: SocketAddr, host: &str, extra: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    (
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        response,
    )
}

fn instance(
    dir: &std::path::Path,
    url: &str,
    service: &str,
    id: &str,
    extra: &[&str],
) -> (DemoApp, Sidecar) {
    let app = DemoApp::start(dir, service, "v1", None);
    let mut args = vec![
        "--service",
        service,
        "--instance-id",
        id,
        "--control-plane",
        url,
    ];
    let addr = app.addr.to_string();
    args.extend(["--app-addr", &addr]);
    args.extend(extra);
    let sidecar = Sidecar::start(dir, id, &args);
    sidecar.wait_ready();
    (app, sidecar)
}

/// A frontend sidecar with no app behind it, ready: the test's way into the mesh.
fn caller(dir: &std::path::Path, url: &str) -> Sidecar {
    let client = Sidecar::start(
        dir,
        "frontend-1",
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-1",
            "--control-plane",
            url,
        ],
    );
    client.wait_ready();
    client
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (_app, mut orders) = instance(
        dir.path(),
        &cp.url(),
        "orders",
        "orders-1",
        &["--drain-timeout", "10s"],
    );
    let inbound = orders.inbound;
    let slow = std::thread::spawn(move || get(inbound, "orders", "x-demo-delay-ms: 1500\r\n"));
    // The request is in flight once the app has it: wait for its connection to the app
    // to exist, i.e. the sidecar has accepted and forwarded it.
    eventually(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || {
            let (_, metrics) = graylane_tests::http_get(orders.admin, "/metrics");
            metrics
                .contains("graylane_sidecar_requests_in_flight 1")
                .then_some(())
        },
    );
    let status = orders.proc.terminate(Duration::from_secs(15));
    let (code, body) = slow.join().unwrap();
    assert_eq!(
        code, 200,
        "the in-flight request completes during the drain: {body}"
    );
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn killing_an_instance_under_load_fails_no_idempotent_request() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let (_a1, o1) = instance(dir.path(), &url, "orders", "orders-1", &[]);
    let (_a2, mut o2) = instance(dir.path(), &url, "orders", "orders-2", &[]);
    let client = caller(dir.path(), &url);
    client.wait_endpoints("orders", 2);
    let outbound = client.outbound;
    // Four clients at once, each request held 10 ms by the app, so requests are in
    // flight at orders-2 when it dies: they are reset mid-request, not only refused.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..100 {
                    let (code, body) = get(outbound, "orders", "x-demo-delay-ms: 10\r\n");
                    let i = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if code != 200 {
                        failures.lock().unwrap().push((i, code, body));
                    }
                }
            });
        }
        eventually(Duration::from_secs(30), "100 requests answered", || {
            (done.load(std::sync::atomic::Ordering::SeqCst) >= 100).then_some(())
        });
        // Its inbound now resets what it holds and refuses new connections;
        // discovery learns of it later.
        o2.proc.kill();
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of 400 GETs failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    drop(o1);
}

/// Lane `gray` served by `version` (the swap alternates v1 and v2).
fn lane(version: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: gray\nspec:\n  tag: gray\n  selector: {{version: {version}}}\n  fallback: []\n"
    )
}

#[test]
fn rules_swapped_every_50ms_under_load_fail_no_request_and_none_uses_stale_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let v1 = graylane_tests::write_file(dir.path(), "v1.yaml", &lane("v1"));
    let v2 = graylane_tests::write_file(dir.path(), "v2.yaml", &lane("v2"));
    cp.cli(&["rules", "apply", "-f", &v1]).assert_ok();
    let app1 = DemoApp::start(dir.path(), "orders", "v1", None);
    let app2 = DemoApp::start(dir.path(), "orders", "v2", None);
    let mut sidecars = Vec::new();
    for (id, version, app) in [("orders-1", "v1", &app1), ("orders-2", "v2", &app2)] {
        let labels = format!("version={version}");
        let addr = app.addr.to_string();
        let s = Sidecar::start(
            dir.path(),
            id,
            &[
                "--service",
                "orders",
                "--instance-id",
                id,
                "--labels",
                &labels,
                "--app-addr",
                &addr,
                "--control-plane",
                &url,
            ],
        );
        s.wait_ready();
        sidecars.push(s);
    }
    let client = caller(dir.path(), &url);
    client.wait_endpoints("orders", 2);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut applied = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                let file = if applied % 2 == 0 { &v2 } else { &v1 };
                graylane_tests::cli(&["--server", &url, "rules", "apply", "-f", file]).assert_ok();
                applied += 1;
                // Pacing the swaps (one every 50 ms), not waiting for anything.
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            applied
        })
    };
    // Meanwhile: a request sent after the control plane recorded the client's ACK of
    // revision A must be routed by A or newer (the revision is in its hop-trail entry).
    let checker = {
        let (stop, url, outbound) = (std::sync::Arc::clone(&stop), cp.url(), client.outbound);
        std::thread::spawn(move || {
            let (mut checks, mut stale) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let acked = acked_revision(&url, "frontend-1");
                let (code, response) = get(
                    outbound,
                    "orders",
                    "Gray-Publish: gray\r\nGraylane-Debug: 1\r\n",
                );
                if code != 200 {
                    continue; // counted by the load loop's own requests
                }
                let routed = routed_revision(&response);
                if routed < acked {
                    stale.push((acked, routed));
                }
                checks += 1;
            }
            (checks, stale)
        })
    };
    let (mut ok, mut seen_v1, mut seen_v2, mut failures) = (0u32, false, false, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let (code, body) = get(client.outbound, "orders", "Gray-Publish: gray\r\n");
        if code == 200 {
            ok += 1;
            seen_v1 |= body.contains("\"version\":\"v1\"");
            seen_v2 |= body.contains("\"version\":\"v2\"");
        } else {
            failures.push((code, body));
        }
    }
    let applied = swapper.join().unwrap();
    let (checks, stale) = checker.join().unwrap();
    assert!(
        stale.is_empty(),
        "{} of {checks} requests were routed by a revision older than one already ACKed \
         (acked, routed): {stale:?}",
        stale.len()
    );
    assert!(checks >= 20, "only {checks} ACK checks");
    assert!(
        failures.is_empty(),
        "{} requests failed during {applied} swaps, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(applied >= 20 && ok >= 100, "{applied} swaps, {ok} requests");
    assert!(
        seen_v1 && seen_v2,
        "the swaps took effect while requests flowed"
    );
    drop(sidecars);
}

/// The revision `instance` last ACKed, as the control plane recorded it.
fn acked_revision(url: &str, instance: &str) -> u64 {
    let status = graylane_tests::cli(&["--server", url, "status", "-o", "json"])
        .assert_ok()
        .json();
    status["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"] == instance)
        .and_then(|s| s["ackedRevision"].as_u64())
        .unwrap_or_else(|| panic!("{instance} not in {status}"))
}

/// The `revision=` of the first hop-trail entry of a raw response.
fn routed_revision(response: &str) -> u64 {
    response
        .lines()
        .find_map(|l| l.strip_prefix("graylane-route: "))
        .and_then(|trail| {
            trail
                .split(',')
                .next()?
                .split(';')
                .find_map(|f| f.strip_prefix("revision="))
        })
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in the hop trail: {response}"))
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_upload_streams_through_two_sidecars_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let (_app, orders) = instance(dir.path(), &url, "orders", "orders-1", &[]);
    let client = caller(dir.path(), &url);
    client.wait_endpoints("orders", 1);
    let before = (
        peak_rss_kib(client.proc.pid()),
        peak_rss_kib(orders.proc.pid()),
    );

    const TOTAL: usize = 100 * 1024 * 1024;
    let mut stream = TcpStream::connect(client.outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..TOTAL / chunk.len() {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&format!("{{\"received\":{TOTAL}}}")),
        "every byte arrived: {response}"
    );

    // Streaming, not buffering: neither sidecar's peak memory grew by anything near
    // the 100 MiB that passed through it.
    let after = (
        peak_rss_kib(client.proc.pid()),
        peak_rss_kib(orders.proc.pid()),
    );
    assert!(
        after.0 - before.0 < 16 * 1024 && after.1 - before.1 < 16 * 1024,
        "peak RSS grew {before:?} → {after:?} KiB"
    );
}

/// An instance labelled `version`, its app answering as that version.
fn versioned(dir: &std::path::Path, url: &str, id: &str, version: &str) -> (DemoApp, Sidecar) {
    let app = DemoApp::start(dir, "orders", version, None);
    let labels = format!("version={version}");
    let sidecar = Sidecar::start(
        dir,
        id,
        &[
            "--service",
            "orders",
            "--instance-id",
            id,
            "--labels",
            &labels,
            "--control-plane",
            url,
            "--app-addr",
            &app.addr.to_string(),
        ],
    );
    sidecar.wait_ready();
    (app, sidecar)
}

/// Both gray instances (the whole v2 subset of a split) stop. Until the control
/// plane says they are gone, their addresses refuse connections: a gray request then
/// goes where the lane's fallback says, and an untagged one to the other subset, not
/// to a dead instance again (502), a POST with its body too. A strict lane still
/// fails, naming one.
#[test]
fn a_lane_s_last_instances_refusing_connections_send_its_requests_down_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let rules = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec: {tag: gray, selector: {version: v2}, fallback: [base]}
---
apiVersion: graylane.io/v1
kind: Lane
metadata: {name: strict}
spec: {tag: red, selector: {version: v2}, fallback: []}
---
apiVersion: graylane.io/v1
kind: RoutePolicy
metadata: {name: orders}
spec:
  service: orders
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
  default: [{subset: v1, weight: 50}, {subset: v2, weight: 50}]
";
    let file = graylane_tests::write_file(dir.path(), "rules.yaml", rules);
    cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
    let (_a1, _o1) = versioned(dir.path(), &url, "orders-1", "v1");
    let (_a2, mut o2) = versioned(dir.path(), &url, "orders-2", "v2");
    let (_a3, mut o3) = versioned(dir.path(), &url, "orders-3", "v2");
    let client = caller(dir.path(), &url);
    client.wait_endpoints("orders", 3);
    let outbound = client.outbound;
    let gray = "gray-publish: gray\r\ngraylane-debug: 1\r\n";
    let (code, response) = get(outbound, "orders", gray);
    assert_eq!(code, 200, "{response}");
    assert!(response.contains("v2"), "a lane instance: {response}");

    // The control plane is held still, so the client keeps both in its table.
    cp.proc.signal(libc::SIGSTOP);
    o2.proc.kill();
    o3.proc.kill();
    let mut rerouted = 0;
    for _ in 0..10 {
        let (code, response) = get(outbound, "orders", gray);
        assert_eq!(code, 200, "a gray request: {response}");
        assert!(
            response.contains("instance=orders-1") && response.contains("fallback=true"),
            "served by base, and the trail says it fell back: {response}"
        );
        // Half of them drew the dead subset: routed again, and said so.
        for _ in 0..3 {
            let (code, response) = get(outbound, "orders", "graylane-debug: 1\r\n");
            assert_eq!(code, 200, "an untagged request: {response}");
            assert!(response.contains("subset=v1;"), "{response}");
            rerouted += usize::from(response.contains("fallback=true"));
        }
        let post = "POST / HTTP/1.1\r\nHost: orders\r\ngray-publish: gray\r\n\
            Content-Length: 5\r\nConnection: close\r\n\r\nhello";
        let (code, response) = graylane_tests::raw(outbound, post);
        assert_eq!(code, 200, "a gray POST: {response}");
    }
    assert!(
        rerouted > 0,
        "none of 30 untagged requests drew the dead subset"
    );
    let (code, response) = get(outbound, "orders", "gray-publish: red\r\n");
    assert_eq!(code, 502, "a strict lane has nowhere else: {response}");
    assert!(
        response.contains("orders-2") || response.contains("orders-3"),
        "{response}"
    );
    cp.proc.signal(libc::SIGCONT);
}
