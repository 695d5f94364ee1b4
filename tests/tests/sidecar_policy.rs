//! A RoutePolicy's traffic settings in the data path: `retries` on a status moves the
//! request to another instance; `fault.abort` answers tagged requests itself.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, write_file};

fn get(addr: SocketAddr, extra: &str) -> u16 {
    send(addr, "GET", extra, b"")
}

/// One request with `body` (sent with its Content-Length when not empty); the status.
fn send(addr: SocketAddr, method: &str, extra: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    stream
        .write_all(
            format!(
                "{method} / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n{extra}{length}\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\nspec:\n  tag: gray\n  selector: {version: v2}\n";

fn policy(extra: &str) -> String {
    format!(
        "{LANE}---\napiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {{name: orders}}\nspec:\n  service: orders\n{extra}"
    )
}

#[test]
fn retries_on_a_status_and_fault_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let broken = DemoApp::start_with(dir.path(), "orders", "v1", None, &["--status", "503"]);
    let healthy = DemoApp::start(dir.path(), "orders", "v1", None);
    let mut sidecars = Vec::new();
    for (id, app) in [("orders-broken", &broken), ("orders-ok", &healthy)] {
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
                "version=v1",
                "--app-addr",
                &addr,
                "--control-plane",
                &url,
            ],
        );
        s.wait_ready();
        sidecars.push(s);
    }
    let client = Sidecar::start(
        dir.path(),
        "frontend",
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-1",
            "--control-plane",
            &url,
        ],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 2);
    let statuses = |n: usize, extra: &str| {
        (0..n)
            .map(|_| get(client.outbound, extra))
            .collect::<Vec<_>>()
    };

    assert!(
        statuses(40, "").contains(&503),
        "without retries the broken instance shows"
    );

    let retries = write_file(
        dir.path(),
        "retries.yaml",
        &policy("  retries: {attempts: 2, on: [503]}\n"),
    );
    cp.cli(&["rules", "apply", "-f", &retries]).assert_ok();
    eventually(
        Duration::from_secs(10),
        "the client to route by revision 1",
        || (client.config()["revision"] == 1).then_some(()),
    );
    let after = statuses(40, "");
    assert!(
        after.iter().all(|s| *s == 200),
        "a 503 is retried on the other instance: {after:?}"
    );
    // An idempotent request with a small body is retried too, its body sent again
    // whole (held, up to 64 KiB); a larger one goes once, streamed.
    let small: Vec<u16> = (0..40)
        .map(|_| send(client.outbound, "PUT", "", b"0123456789"))
        .collect();
    assert!(small.iter().all(|s| *s == 200), "{small:?}");
    let large = vec![b'x'; 70 * 1024];
    let large: Vec<u16> = (0..40)
        .map(|_| send(client.outbound, "PUT", "", &large))
        .collect();
    assert!(
        large.contains(&503),
        "over 64 KiB, never sent twice: {large:?}"
    );

    // `timeout` bounds the whole request, retries included: every instance answering
    // 503 after 0.7 s, a 1 s timeout ends in a 504 after 1 s, not in 503s after 2.1 s.
    let bounded = write_file(
        dir.path(),
        "bounded.yaml",
        &policy("  timeout: 1s\n  retries: {attempts: 2, on: [503]}\n"),
    );
    cp.cli(&["rules", "apply", "-f", &bounded]).assert_ok();
    eventually(
        Duration::from_secs(10),
        "the client to route by revision 2",
        || (client.config()["revision"] == 2).then_some(()),
    );
    let started = std::time::Instant::now();
    let status = get(
        client.outbound,
        "x-demo-status: 503\r\nx-demo-delay-ms: 700\r\n",
    );
    let waited = started.elapsed();
    assert_eq!(status, 504, "the retry ran out of the request's time");
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(1600),
        "{waited:?}: one deadline for the attempts"
    );

    let fault = write_file(
        dir.path(),
        "fault.yaml",
        &policy("  fault:\n    tag: gray\n    abort: {percent: 100, status: 418}\n"),
    );
    cp.cli(&["rules", "apply", "-f", &fault]).assert_ok();
    eventually(
        Duration::from_secs(10),
        "the client to route by revision 3",
        || (client.config()["revision"] == 3).then_some(()),
    );
    assert_eq!(
        get(client.outbound, "Gray-Publish: gray\r\n"),
        418,
        "the gray lane gets the injected fault"
    );
    assert_ne!(
        get(client.outbound, ""),
        418,
        "untagged requests are not faulted"
    );
    drop(sidecars);
}

#[test]
fn mirror_copies_requests_to_a_subset_and_ignores_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let rules = "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: orders}\nspec:\n  service: orders\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n  default:\n    - {subset: v1, weight: 100}\n  mirror: {subset: v2, percent: 100}\n";
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "mirror.yaml", rules),
    ])
    .assert_ok();
    let v1 = DemoApp::start(dir.path(), "orders", "v1", None);
    // The mirror target answers 500: the caller must never see it.
    let v2 = DemoApp::start_with(dir.path(), "orders", "v2", None, &["--status", "500"]);
    let mut sidecars = Vec::new();
    for (id, version, app) in [("orders-1", "v1", &v1), ("orders-2", "v2", &v2)] {
        let (labels, addr) = (format!("version={version}"), app.addr.to_string());
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
    let client = Sidecar::start(
        dir.path(),
        "frontend",
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-1",
            "--control-plane",
            &url,
        ],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 2);
    for _ in 0..20 {
        assert_eq!(get(client.outbound, ""), 200, "answers come from v1 only");
    }
    eventually(Duration::from_secs(10), "20 mirrored copies at v2", || {
        (v2.proc.log_text().matches("mirror=true").count() == 20).then_some(())
    });
    assert_eq!(v1.proc.log_text().matches("mirror=false").count(), 20);
    // Only the copies carry the marker: an app (through the outbound) or an outside
    // client (through an inbound) that sends it gets a real request served as one.
    assert_eq!(get(client.outbound, "graylane-mirror: 1\r\n"), 200);
    assert_eq!(get(sidecars[0].inbound, "graylane-mirror: 1\r\n"), 200);
    eventually(Duration::from_secs(10), "the 21st copy at v2", || {
        (v2.proc.log_text().matches("mirror=true").count() == 21).then_some(())
    });
    assert_eq!(v1.proc.log_text().matches("mirror=false").count(), 22);
    assert_eq!(v1.proc.log_text().matches("mirror=true").count(), 0);
    drop(sidecars);
}
