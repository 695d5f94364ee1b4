//! `--log-format json` (env `GRAYLANE_LOG_FORMAT`): one JSON object a line, for log
//! pipelines that parse rather than grep; `GRAYLANE_LOG` is documented in `--help`.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use graylane_tests::{Proc, bin, eventually};

/// Every line of the log is a JSON object; returns them once the server says it is
/// listening (`graylane-control listening`, `graylane-sidecar listening`). Not any
/// line mentioning it: the warning about running without a token says "listening on
/// loopback only" a moment before.
fn json_lines_until_listening(proc: &mut Proc) -> Vec<serde_json::Value> {
    eventually(
        Duration::from_secs(20),
        "a JSON line saying it listens",
        || {
            assert!(!proc.has_exited(), "exited early:\n{}", proc.log_text());
            let lines: Vec<serde_json::Value> = proc
                .log_text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            lines
                .iter()
                .any(|l| {
                    l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.ends_with(" listening"))
                })
                .then_some(lines)
        },
    )
}

#[test]
fn both_servers_log_json_when_asked_and_document_graylane_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = Command::new(bin("graylane-control"));
    control
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--store", "memory:", "--log-format", "json"]);
    let mut control = Proc::spawn("graylane-control", control, dir.path().join("control.log"));
    let lines = json_lines_until_listening(&mut control);
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "graylane-control listening")
        .unwrap();
    assert_eq!(listening["level"], "INFO");
    let grpc = listening["fields"]["grpc_addr"]
        .as_str()
        .unwrap()
        .to_string();

    let mut sidecar = Command::new(bin("graylane-sidecar"));
    sidecar
        .args([
            "--service",
            "orders",
            "--control-plane",
            &format!("http://{grpc}"),
        ])
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
        ])
        .args(["--inbound-addr", "127.0.0.1:0"])
        .env("GRAYLANE_LOG_FORMAT", "json");
    let mut sidecar = Proc::spawn("graylane-sidecar", sidecar, dir.path().join("sidecar.log"));
    let lines = json_lines_until_listening(&mut sidecar);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["service"] == "orders" && l["fields"]["inbound_addr"].is_string()),
        "{lines:?}"
    );

    for binary in ["graylane-control", "graylane-sidecar"] {
        let help = Command::new(bin(binary)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.contains("GRAYLANE_LOG sets what is logged"),
            "{binary}: {help}"
        );
        assert!(help.contains("--log-format"), "{binary}: {help}");
    }
}
