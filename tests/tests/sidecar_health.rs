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

/// The app's own probes, rewritten by injection to `/app-health/...` on the health port
/// (under strict mTLS the kubelet's plaintext probe cannot reach the app's port): the
/// sidecar asks the app on loopback, and answers 200 for its 2xx/3xx, its status else,
/// 503 when it does not answer.
#[test]
fn the_apps_probes_are_made_on_loopback_for_the_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let up = graylane_tests::DemoApp::start(dir.path(), "orders", "v1", None);
    let failing =
        graylane_tests::DemoApp::start_with(dir.path(), "orders", "v1", None, &["--status", "500"]);
    let closed = graylane_tests::Refusing::bind();
    // An app that redirects: /moved to /ok (200), /broken to /fail (500). The kubelet
    // follows redirects on the same host; so does the sidecar.
    let redirecting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redirects = redirecting.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in redirecting.incoming().map_while(Result::ok) {
            let mut head = [0u8; 4096];
            let n = conn.read(&mut head).unwrap_or(0);
            let line = String::from_utf8_lossy(&head[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let answer = if line.starts_with("GET /moved ") {
                "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n"
            } else if line.starts_with("GET /broken ") {
                "HTTP/1.1 302 Found\r\nLocation: /fail\r\nContent-Length: 0\r\n\r\n"
            } else if line.starts_with("GET /ok ") {
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            } else {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    let probes = serde_json::json!({
        "/app-health/orders/livez": {"port": up.addr.port(), "path": "/healthz",
            "headers": [{"name": "X-Probe", "value": "kubelet"}]},
        "/app-health/orders/readyz": {"port": failing.addr.port(), "path": "/ready"},
        "/app-health/orders/startupz": {"port": closed.addr.port(), "path": "/"},
        "/app-health/moved/livez": {"port": redirects.port(), "path": "/moved"},
        "/app-health/broken/livez": {"port": redirects.port(), "path": "/broken"},
    })
    .to_string();
    let mut sidecar_args = args(&url);
    sidecar_args.extend(["--app-probes", &probes]);
    let sidecar = Sidecar::start(dir.path(), "orders", &sidecar_args);
    let health = sidecar.health().unwrap();
    let (status, body) = http_get(health, "/app-health/orders/livez");
    assert_eq!((status, body.as_str()), (200, "app answered 200 OK\n"));
    let (status, body) = http_get(health, "/app-health/orders/readyz");
    assert_eq!(status, 500, "{body}");
    let (status, body) = http_get(health, "/app-health/orders/startupz");
    assert!(status == 503 && body.contains("failed"), "{status} {body}");
    let (status, _) = http_get(health, "/app-health/other/livez");
    assert_eq!(status, 404);
    assert_eq!(http_get(health, "/app-health/moved/livez").0, 200);
    assert_eq!(
        http_get(health, "/app-health/broken/livez").0,
        500,
        "a redirect to a failing page fails, as the kubelet sees it"
    );
    // A typo in what injection wrote stops the sidecar at start, naming the probe.
    let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
        .args([
            "--service",
            "orders",
            "--app-probes",
            r#"{"/livez": {"port": 1, "path": "/"}}"#,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--app-probes") && stderr.contains("\"/livez\""),
        "{stderr}"
    );
}
