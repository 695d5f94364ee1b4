//! The shared server's limits (graylane-serve) on the listeners beside the data path,
//! each set short by its flag: the admission webhook closes a client that stalls in
//! its TLS handshake (`--tls-handshake-timeout`) and one that completes TLS but never
//! finishes its request head (`--header-read-timeout`); graylane-control's HTTP API
//! and the sidecar's admin listener close a stalled head, and the API ends a request
//! whose body stalls (`--body-read-timeout`); and each keeps serving
//! well-behaved clients meanwhile. An operator's zero timeout is refused at start.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graylane_tests::{ControlPlane, Sidecar, bin, http_get};
use rustls::pki_types::{CertificateDer, ServerName};

/// Longer than the flags below (1 s), shorter than the 10 s defaults: a close within
/// it is the flag's doing.
const PATIENCE: Duration = Duration::from_secs(8);

/// Reads what the server sends until it closes the connection; how long that took.
/// Panics if it stays open for `PATIENCE`.
fn closed_after(stream: &mut impl Read, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", started.elapsed())
            }
            // A reset, or TLS seeing the TCP close without close_notify: closed.
            Err(_) => return started.elapsed(),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Half a request head, then silence: closed by the header-read timeout.
fn assert_stalled_head_is_closed(addr: SocketAddr, what: &str) {
    let mut stream = connect(addr);
    let started = Instant::now();
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_after(&mut stream, started);
    assert!(
        took >= Duration::from_millis(900),
        "{what}: closed after {took:?}, before its 1 s header-read timeout"
    );
}

/// A self-signed certificate for localhost, written as PEM; its DER for the client.
fn certificate(dir: &Path) -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let der = made.cert.der().clone();
    (cert.display().to_string(), key.display().to_string(), der)
}

fn tls_client(trusted: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// A request over TLS, answered: the listener still serves well-behaved clients.
fn tls_request(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, head: &[u8]) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, connect(addr));
    tls.write_all(head).unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    answer
}

#[test]
fn the_webhook_closes_stalled_handshakes_and_stalled_heads() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-handshake-timeout",
            "1s",
            "--header-read-timeout",
            "1s",
        ],
    );
    let log = cp.proc.log_text();
    let webhook: SocketAddr = log
        .split("webhook_addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no webhook_addr in {log}"));

    // A TLS record announcing a 512-byte ClientHello, and 4 bytes of it.
    let mut half_hello = connect(webhook);
    let started = Instant::now();
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .unwrap();
    let took = closed_after(&mut half_hello, started);
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // TLS completes; the request head never does.
    let config = tls_client(der);
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, connect(webhook));
    tls.write_all(b"POST /inject HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    tls.flush().unwrap();
    let started = Instant::now();
    let took = closed_after(&mut tls, started);
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // Meanwhile, and after, a complete request is answered.
    let answer = tls_request(
        webhook,
        &config,
        b"GET /inject HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}

#[test]
fn the_http_api_closes_a_stalled_head() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &["--header-read-timeout", "1s"]);
    assert_stalled_head_is_closed(cp.http, "graylane-control --http-addr");
    assert_eq!(http_get(cp.http, "/ready").0, 200);
}

#[test]
fn the_http_api_ends_a_request_whose_body_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &["--body-read-timeout", "1s"]);
    // A whole head, then 1 byte of the 100 000 it announced, then silence: before
    // the limit, 256 of these held every connection of the listener.
    let mut stream = connect(cp.http);
    let started = Instant::now();
    stream
        .write_all(b"POST /api/v1/rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\nContent-Length: 100000\r\n\r\na")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert!(took < PATIENCE, "still open after {took:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("did not arrive whole within 1s"),
        "{answer}"
    );
    assert_eq!(
        cp.cli(&["rules", "history"]).code,
        0,
        "nothing was half-applied"
    );
    assert_eq!(http_get(cp.http, "/ready").0, 200);
}

#[test]
fn the_sidecar_admin_listener_closes_a_stalled_head() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let sidecar = Sidecar::start(
        dir.path(),
        "orders-1",
        &[
            "--service",
            "orders",
            "--app-addr",
            "127.0.0.1:9",
            "--control-plane",
            &cp.url(),
            "--header-read-timeout",
            "1s",
        ],
    );
    assert_stalled_head_is_closed(sidecar.admin, "graylane-sidecar --admin-addr");
    assert_eq!(http_get(sidecar.admin, "/live").0, 200);
}

#[test]
fn a_zero_timeout_is_refused_naming_the_flag() {
    for flag in [
        "--header-read-timeout",
        "--tls-handshake-timeout",
        "--body-read-timeout",
    ] {
        let out = std::process::Command::new(bin("graylane-control"))
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args([flag, "0s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} 0s was accepted");
        assert!(
            stderr.contains(flag) && stderr.contains("above zero"),
            "{stderr}"
        );
    }
}
