//! The control plane's gRPC over TLS (`--grpc-tls-cert/--grpc-tls-key`), with real
//! handshakes and certificates made by `openssl`: the CLI and sidecars connect with
//! `https://` and `--ca-bundle`; `https://` never falls back to plaintext; a plaintext
//! listener beyond loopback is refused unless `--allow-plaintext`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use graylane_tests::{ControlPlane, Sidecar, cli, eventually, write_file};

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
