//! `--health-addr`: a listener for the kubelet's probes beside a loopback-only admin
//! listener. It answers `/live` and `/ready` (503 until a snapshot is in force, as
//! admin does) and 404 for everything else, `/config` and `/metrics` included; without
//! the flag there is no such listener. Both listeners answer reads only (405 else).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use graylane_tests::{ControlPlane, Sidecar, eventually, http_get};

fn args(control_plane: &str) -> Vec<&str> {
    vec![
        "--service",
        "orders",
        "--control-plane",
        control_plane,
        "--otlp-endpoint",
        "none",
        "--health-addr",
        "127.0.0.1:0",
    ]
}

#[test]
fn health_listener_serves_probes_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let sidecar = Sidecar::start(dir.path(), "orders", &args(&url));
    let health = sidecar
        .health()
        .expect("health_addr= in the listening line");
    assert_ne!(health, sidecar.admin);
    eventually(Duration::from_secs(20), "/ready on the health port", || {
        (http_get(health, "/ready").0 == 200).then_some(())
    });
    assert_eq!(http_get(health, "/live").0, 200);
    for path in ["/config", "/metrics", "/gates/self", "/"] {
        let (status, body) = http_get(health, path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("endpoints"), "{path}: {body}");
    }
    assert_eq!(
        http_get(sidecar.admin, "/config").0,
        200,
        "admin still serves it"
    );
    // Every path of both is a read: a POST (to the gate API, say) is 405, not served
    // as a GET.
    for addr in [health, sidecar.admin] {
        let (status, text) = graylane_tests::raw(
            addr,
            "POST /gates/self HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 405, "{addr}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("allow: get, head"),
            "{text}"
        );
    }
}

#[test]
fn health_is_unready_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on a port just freed: the control plane is unreachable.
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let sidecar = Sidecar::start(dir.path(), "orders", &args(&unreachable));
    let health = sidecar.health().unwrap();
    assert_eq!(http_get(health, "/live").0, 200);
    let (status, body) = http_get(health, "/ready");
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(sidecar.admin, "/ready").0, 503);
}

#[test]
fn without_the_flag_there_is_no_health_listener() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(
        dir.path(),
        "orders",
        &["--service", "orders", "--otlp-endpoint", "none"],
    );
    assert_eq!(sidecar.health(), None, "{}", sidecar.proc.log_text());
}
