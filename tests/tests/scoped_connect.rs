//! `CONNECT` from a sidecar with scoped endpoints (issue 15), with real processes in a
//! network namespace of the test's own (its hosts file maps `payments.stripe.com` and
//! `payments.stripe` to this machine, so "external" hosts are reached without leaving
//! it):
//!
//! - a tunnel to a mesh service the sidecar never called asks for its endpoints and
//!   waits for them, as a plain request does, then reaches an instance;
//! - a tunnel to a host that is no mesh service never waits for the control plane,
//!   whatever its first label (`payments.stripe.com` is not the mesh's `payments`);
//! - a mesh-form name the directory does not know (`payments.stripe`) is an ordinary
//!   host, as for a plain request, and an unknown bare name is the old 502 at once.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use graylane_tests::netns::NetNs;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually};

/// An HTTP server outside the mesh: answers `external` to every request.
fn external() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                if graylane_tests::read_head(&mut stream).is_none() {
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nexternal",
                );
            });
        }
    });
    addr
}

/// `CONNECT authority` through `proxy`: the response head, and when it is a 200 the
/// answer to a `GET /` sent through the tunnel.
fn tunnel_get(proxy: SocketAddr, authority: &str) -> (String, Option<String>) {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return (head, None);
    }
    // Through the tunnel: HTTP in the clear, which the instance's inbound listener
    // serves to its app (as it would hand TLS to the app unread).
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: tunnelled\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    (head, Some(answer))
}

fn requests_served(app: &DemoApp) -> usize {
    app.proc.log_text().matches("request GET").count()
}

const INTEREST: &str = "graylane_sidecar_endpoint_interest_total";
const WAITS: &str = "graylane_sidecar_endpoint_interest_waits_total";

#[test]
fn connect_asks_for_a_mesh_service_and_never_waits_for_a_host_outside_the_mesh() {
    let ns = NetNs::create();
    ns.write_hosts("127.0.0.1 localhost payments.stripe.com payments.stripe\n");
    ns.enter();

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let cp = ControlPlane::start(dir, &[]);
    let url = cp.url();
    let sidecar = |id: &str, service: &str, extra: &[&str]| {
        let args = [
            &[
                "--service",
                service,
                "--instance-id",
                id,
                "--control-plane",
                &url,
                "--otlp-endpoint",
                "none",
            ][..],
            extra,
        ]
        .concat();
        let s = Sidecar::start_in(dir, id, &ns.name, &args);
        s.wait_ready();
        s
    };
    let payments_app = DemoApp::start(dir, "payments", "v1", None);
    let app_addr = payments_app.addr.to_string();
    let _payments = sidecar("payments-1", "payments", &["--app-addr", &app_addr]);
    let web = sidecar("web-1", "web", &["--endpoint-scope", "scoped"]);
    eventually(
        Duration::from_secs(10),
        "the directory to list payments and web",
        || (web.config()["endpointScope"]["directory"] == 2).then_some(()),
    );
    assert_eq!(web.held_services(), ["web"], "its own service only, so far");

    // A service it never called: the tunnel asks for its endpoints, waits for them and
    // reaches its instance (through its inbound listener to the app).
    let (head, answer) = tunnel_get(web.outbound, "payments:443");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer = answer.unwrap();
    assert!(answer.contains("payments"), "{answer}");
    assert_eq!(requests_served(&payments_app), 1);
    assert_eq!(web.held_services(), ["payments", "web"]);
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
    // Held now: the next tunnel neither asks nor waits.
    let (head, _) = tunnel_get(web.outbound, "payments:443");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
    assert_eq!(requests_served(&payments_app), 2);

    // payments.stripe.com is not the mesh's payments: to the host, nothing asked for
    // or waited on (the counters: a wait is counted before it starts), nothing
    // reaching the mesh's payments.
    let port = external().port();
    for host in ["payments.stripe.com", "payments.stripe"] {
        let (head, answer) = tunnel_get(web.outbound, &format!("{host}:{port}"));
        assert!(head.starts_with("HTTP/1.1 200"), "{host}: {head}");
        assert!(answer.unwrap().ends_with("external"), "{host}");
    }
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
    assert_eq!(requests_served(&payments_app), 2);

    // A bare name the directory does not list (a typo): no mesh service, no host by
    // that name either — the old 502 naming it, without waiting.
    let (head, answer) = tunnel_get(web.outbound, "paymnets:443");
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(answer.is_none());
    assert_eq!((web.counter(INTEREST), web.counter(WAITS)), (1, 1));
}
