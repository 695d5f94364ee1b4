//! The control plane's gRPC over TLS (`--grpc-tls-cert/--grpc-tls-key`), with real
//! handshakes and certificates made by `openssl`: the CLI and sidecars connect with
//! `https://` and `--ca-bundle`; `https://` never falls back to plaintext; a plaintext
//! listener beyond loopback is refused unless `--allow-plaintext`. And `--grpc-tls`: a
//! server certificate issued from the mesh CA kept in the store, its CA at `/ca.pem`,
//! renewed at half its lifetime without a restart.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use graylane_tests::{ControlPlane, Sidecar, cli, eventually, http_get, write_file};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`) and, when `server`, a certificate it signed for localhost and
/// 127.0.0.1 (`NAME-server.pem`, `NAME-server.key`).
fn pki(dir: &Path, name: &str, server: bool) {
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "1",
            "-subj",
            "/CN=graylane test CA",
        ],
    );
    if !server {
        return;
    }
    write_file(
        dir,
        "san.ext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    let (key, csr, cert) = (
        format!("{name}-server.key"),
        format!("{name}-server.csr"),
        format!("{name}-server.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

#[test]
fn the_control_plane_over_tls_and_no_plaintext_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "mesh", true);
    pki(d, "other", false);
    let path = |f: &str| d.join(f).to_string_lossy().into_owned();
    let (cert, key, ca, other) = (
        path("mesh-server.pem"),
        path("mesh-server.key"),
        path("mesh-ca.pem"),
        path("other-ca.pem"),
    );
    let cp = ControlPlane::start(d, &["--grpc-tls-cert", &cert, "--grpc-tls-key", &key]);
    assert!(
        cp.proc.log_text().contains("tls=true"),
        "{}",
        cp.proc.log_text()
    );
    let https = format!("https://127.0.0.1:{}", cp.grpc.port());

    cli(&["--server", &https, "--ca-bundle", &ca, "status"]).assert_ok();
    // https:// without a CA to trust: refused before any connection, never plaintext.
    let out = cli(&["--server", &https, "status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--ca-bundle"), "{out:?}");
    // A server whose certificate chains to another CA: the handshake fails.
    let out = cli(&["--server", &https, "--ca-bundle", &other, "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    // Plaintext gRPC to the TLS port: nothing is served.
    let out = cli(&["--server", &cp.url(), "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    // A context's caBundle is used like --ca-bundle.
    let config = path("config.yaml");
    cli(&[
        "--config",
        &config,
        "config",
        "set-context",
        "tls",
        "--server",
        &https,
        "--ca-bundle",
        &ca,
    ])
    .assert_ok();
    cli(&["--config", &config, "--context", "tls", "status"]).assert_ok();

    // A sidecar subscribes over TLS and is seen by the control plane.
    let sidecar = Sidecar::start(
        d,
        "orders-1",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-1",
            "--control-plane",
            &https,
            "--ca-bundle",
            &ca,
        ],
    );
    sidecar.wait_ready();
    eventually(
        std::time::Duration::from_secs(10),
        "the sidecar in status",
        || {
            let out = cli(&[
                "--server",
                &https,
                "--ca-bundle",
                &ca,
                "-o",
                "json",
                "status",
            ]);
            out.stdout.contains("orders-1").then_some(())
        },
    );
    // ... and refuses to start with https:// but no CA bundle.
    let out = Command::new(graylane_tests::bin("graylane-sidecar"))
        .args(["--service", "orders", "--control-plane", &https])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
        ])
        .args(["--inbound-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-bundle"));
}

#[test]
fn plaintext_grpc_beyond_loopback_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_file(
        dir.path(),
        "tokens",
        "admin:admin-token-0123456789\nsidecar:sidecar-token-0123456789\n",
    );
    let store = format!("file:{}", dir.path().join("data").display());
    let out = Command::new(graylane_tests::bin("graylane-control"))
        .args(["--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"])
        .args(["--store", &store, "--token-file", &tokens])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("without TLS") && log.contains("--allow-plaintext"),
        "{log}"
    );
}

/// The certificate `openssl s_client` is served at `addr` (the leaf, PEM).
fn served_certificate(addr: std::net::SocketAddr) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-alpn", "h2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate served: {text}"));
    let end = begin + text[begin..].find("-----END CERTIFICATE-----").unwrap();
    format!("{}-----END CERTIFICATE-----\n", &text[begin..end])
}

/// `--grpc-tls`: the control plane is its own CA. The CA comes from `/ca.pem`, the CLI
/// trusts it, openssl verifies the served certificate and its names, and a restart on
/// the same store keeps the same CA, whose key file only its owner can read.
#[test]
fn grpc_tls_serves_a_certificate_from_the_mesh_ca_kept_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(d, &["--grpc-tls"]);
    assert!(
        cp.proc.log_text().contains("tls=true"),
        "{}",
        cp.proc.log_text()
    );
    let (status, ca) = http_get(cp.http, "/ca.pem");
    assert_eq!(status, 200, "{ca}");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert!(
        !ca.contains("PRIVATE"),
        "only the certificate is public: {ca}"
    );
    let ca_path = write_file(d, "mesh-ca.pem", &ca);
    let https = format!("https://127.0.0.1:{}", cp.grpc.port());
    cli(&["--server", &https, "--ca-bundle", &ca_path, "status"]).assert_ok();

    let leaf = write_file(d, "served.pem", &served_certificate(cp.grpc));
    openssl(d, &["verify", "-CAfile", &ca_path, &leaf]);
    let out = Command::new("openssl")
        .args(["x509", "-in", &leaf, "-noout", "-ext", "subjectAltName"])
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&out.stdout);
    for name in [
        "IP Address:127.0.0.1",
        "DNS:localhost",
        "DNS:graylane-control.graylane-system.svc",
    ] {
        assert!(sans.contains(name), "{name} missing from {sans}");
    }
    let mode = std::fs::metadata(cp.data.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart on the same store: the same CA, so clients keep their bundle.
    drop(cp);
    let cp = ControlPlane::start(d, &["--grpc-tls", "--server-names", "127.0.0.1"]);
    let (status, again) = http_get(cp.http, "/ca.pem");
    assert_eq!((status, again.as_str()), (200, ca.as_str()));
    let https = format!("https://127.0.0.1:{}", cp.grpc.port());
    eventually(
        Duration::from_secs(10),
        "status over TLS after restart",
        || {
            let out = cli(&["--server", &https, "--ca-bundle", &ca_path, "status"]);
            (out.code == 0).then_some(())
        },
    );

    // One source for the server certificate, not two.
    let out = Command::new(graylane_tests::bin("graylane-control"))
        .args([
            "--grpc-tls",
            "--grpc-tls-cert",
            "c.pem",
            "--grpc-tls-key",
            "k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// The serial number of the certificate served at `addr` (`serial=…`).
fn served_serial(addr: std::net::SocketAddr) -> String {
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(served_certificate(addr).as_bytes())
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `--grpc-tls` renews the control plane's own certificate at half its lifetime,
/// live: a steady stream of CLI calls (a new connection each) never fails across the
/// swap, and a sidecar subscribed before it keeps its one stream and stays ready.
#[test]
fn grpc_tls_renews_its_certificate_at_half_life_without_dropping_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let cp = ControlPlane::start(d, &["--grpc-tls", "--cert-ttl", "1m"]);
    let (status, ca) = http_get(cp.http, "/ca.pem");
    assert_eq!(status, 200, "{ca}");
    let ca = write_file(d, "mesh-ca.pem", &ca);
    let https = format!("https://127.0.0.1:{}", cp.grpc.port());
    let first = served_serial(cp.grpc);

    let sidecar = Sidecar::start(
        d,
        "orders-1",
        &[
            "--service",
            "orders",
            "--control-plane",
            &https,
            "--ca-bundle",
            &ca,
        ],
    );
    sidecar.wait_ready();

    let mut calls = 0;
    let renewed = eventually(Duration::from_secs(40), "a renewed certificate", || {
        let out = cli(&["--server", &https, "--ca-bundle", &ca, "status"]);
        assert_eq!(out.code, 0, "status call {calls} failed: {out:?}");
        calls += 1;
        assert_eq!(
            http_get(sidecar.admin, "/ready").0,
            200,
            "sidecar not ready"
        );
        let serial = served_serial(cp.grpc);
        (serial != first).then_some(serial)
    });
    let at = started.elapsed();
    // Issued after `started`, renewed 30 s after that: never earlier.
    assert!(at >= Duration::from_secs(30), "renewed after {at:?}");
    assert!(calls > 10, "only {calls} status calls");
    assert!(
        cp.proc
            .log_text()
            .contains("renewed the gRPC server certificate"),
        "{}",
        cp.proc.log_text()
    );

    // New connections get the new certificate, which the same CA signed.
    cli(&["--server", &https, "--ca-bundle", &ca, "status"]).assert_ok();
    assert_eq!(served_serial(cp.grpc), renewed);
    // The sidecar's stream, opened before the swap, was never dropped.
    assert_eq!(http_get(sidecar.admin, "/ready").0, 200);
    let log = sidecar.proc.log_text();
    assert_eq!(
        log.lines().filter(|l| l.contains("subscribed")).count(),
        1,
        "{log}"
    );
}
