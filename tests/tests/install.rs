//! `graylane install`: the production manifests render with fresh certificates and
//! tokens, every object (and the injected sample app) validates against the Kubernetes
//! schemas, and the generated certificates really serve the webhook.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use graylane_tests::{ControlPlane, cli, write_file};

fn validator() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/kubernetes-validate");
    if local.exists() {
        return local;
    }
    PathBuf::from("kubernetes-validate")
}

fn validate(file: &str) -> String {
    let out = Command::new(validator())
        .args(["--strict", "--no-warn", file])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate: {e} (bash scripts/deps.sh test installs it)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

/// The quoted value after `key: ` on the first line that has it.
fn field<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in the manifests"))
        .trim_matches('"')
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn install_renders_valid_manifests_with_working_fresh_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["install"]);
    out.assert_ok();
    let manifests = write_file(dir.path(), "install.yaml", &out.stdout);
    let report = validate(&manifests);
    for kind in [
        "namespace/graylane-system",
        "statefulset/graylane-etcd",
        "deployment/graylane-control",
        "poddisruptionbudget/graylane-control",
        "mutatingwebhookconfiguration/graylane-sidecar-injector",
        "deployment/orders-v2",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{kind}: {report}"
        );
    }
    assert!(!out.stdout.contains('@'), "every placeholder is filled in");

    // The sample app, injected, still validates.
    let injected = cli(&["inject", "-f", &manifests]);
    injected.assert_ok();
    assert_eq!(
        injected
            .stdout
            .matches("graylane.io/status: injected")
            .count(),
        2,
        "both versions"
    );
    validate(&write_file(dir.path(), "injected.yaml", &injected.stdout));

    // Fresh every time.
    let again = cli(&["install", "--no-sample-app"]);
    again.assert_ok();
    assert_ne!(
        field(&again.stdout, "caBundle"),
        field(&out.stdout, "caBundle")
    );
    assert!(!again.stdout.contains("namespace: shop"));

    // The certificates chain up and name the control plane's Service...
    let ca = write_file(
        dir.path(),
        "ca.pem",
        &String::from_utf8(base64_decode(field(&out.stdout, "caBundle"))).unwrap(),
    );
    let cert = write_file(
        dir.path(),
        "tls.crt",
        &String::from_utf8(base64_decode(field(&out.stdout, "tls.crt"))).unwrap(),
    );
    let key = write_file(
        dir.path(),
        "tls.key",
        &String::from_utf8(base64_decode(field(&out.stdout, "tls.key"))).unwrap(),
    );
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile", &ca, &cert])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // ... and serve the webhook: a client trusting only that CA reaches it by that name.
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let log = cp.proc.log_text();
    let port = log
        .split("webhook_addr=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no webhook_addr in {log}"));
    let name = "graylane-control.graylane-system.svc";
    let reached = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            &ca,
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
        ])
        .args([
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "{}",
            &format!("https://{name}:{port}/inject"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&reached.stdout);
    assert!(
        reached.status.success() && text.ends_with("400"),
        "TLS by the Service name: {text}{}",
        String::from_utf8_lossy(&reached.stderr)
    );
}
