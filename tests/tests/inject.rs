//! `graylane inject -f`: workloads get the sidecar and the init container, other
//! documents pass through byte for byte, a second run changes nothing, and the result
//! validates against the Kubernetes schemas (`kubernetes-validate --strict`, installed
//! by the test command).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use graylane_tests::{cli, write_file};

const MANIFESTS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings   # kept as written
data:
  greeting: \"hi\"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders-v2
spec:
  selector:
    matchLabels: {app: orders, version: v2}
  template:
    metadata:
      labels: {app: orders, version: v2}
    spec:
      initContainers:
        - {name: migrate, image: shop/migrate:1}
      containers:
        - name: orders
          image: shop/orders:2
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /ready, port: http}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: \"0 * * * *\"
  jobTemplate:
    spec:
      template:
        metadata:
          labels: {app: report}
        spec:
          restartPolicy: Never
          containers:
            - {name: report, image: shop/report:1}
---
apiVersion: v1
kind: Service
metadata:
  name: orders
spec:
  selector: {app: orders}
  ports:
    - {port: 8080, targetPort: http}
";

/// `kubernetes-validate` on the PATH, or where scripts/deps.sh puts it.
fn validator() -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/kubernetes-validate");
    if local.exists() {
        return local;
    }
    PathBuf::from("kubernetes-validate")
}

fn validate(file: &str) {
    let out = Command::new(validator())
        .args(["--strict", "--no-warn", file])
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate: {e} (bash scripts/deps.sh test installs it)")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inject_adds_the_sidecar_to_workloads_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "app.yaml", MANIFESTS);
    let once = cli(&["inject", "-f", &input]);
    once.assert_ok();
    let docs: Vec<&str> = once.stdout.split("---\n").collect();
    assert_eq!(docs.len(), 4, "{}", once.stdout);
    assert_eq!(
        docs[0],
        MANIFESTS.split("---\n").next().unwrap(),
        "untouched, comment and all"
    );
    assert_eq!(docs[3], MANIFESTS.split("---\n").nth(3).unwrap());
    for (doc, containers) in [(docs[1], "orders"), (docs[2], "report")] {
        assert!(doc.contains("name: graylane-sidecar"), "{doc}");
        assert!(doc.contains("name: graylane-init"), "{doc}");
        assert!(doc.contains(&format!("name: {containers}")), "{doc}");
        assert!(doc.contains("graylane.io/status: injected"), "{doc}");
    }
    assert!(
        docs[1].contains("value: 127.0.0.1:8080"),
        "the named http port is the app's"
    );
    assert!(
        docs[1].contains("path: /app-health/orders/readyz"),
        "the app's probe goes through the health port: {}",
        docs[1]
    );
    assert!(
        docs[1].find("name: migrate").unwrap() < docs[1].find("name: graylane-init").unwrap(),
        "the pod's own init containers run before interception"
    );
    let injected = write_file(dir.path(), "injected.yaml", &once.stdout);
    validate(&injected);
    validate(&input);

    let twice = cli(&["inject", "-f", &injected]);
    twice.assert_ok();
    assert_eq!(
        twice.stdout, once.stdout,
        "injecting an injected file changes nothing"
    );
}

#[test]
fn bad_input_names_the_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let bad = MANIFESTS.replace(
        "      labels: {app: orders, version: v2}\n    spec:",
        "      labels: {app: orders, version: v2}\n      annotations: {graylane.io/exclude-outbound-ports: \"5432,pg\"}\n    spec:",
    );
    let file = write_file(dir.path(), "bad.yaml", &bad);
    let out = cli(&["inject", "-f", &file]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("bad.yaml: document 2 (Deployment/orders-v2): annotation graylane.io/exclude-outbound-ports: \"pg\" is not a port"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing half-printed: {out:?}");
    let missing = cli(&[
        "inject",
        "-f",
        &dir.path().join("nope.yaml").display().to_string(),
    ]);
    assert_eq!(missing.code, 2, "{missing:?}");
}

/// A Deployment as the other tests' MANIFESTS has it, written as JSON.
const JSON_DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {"name": "orders-v2"},
  "spec": {
    "selector": {"matchLabels": {"app": "orders", "version": "v2"}},
    "template": {
      "metadata": {"labels": {"app": "orders", "version": "v2"}},
      "spec": {"containers": [{"name": "orders", "image": "shop/orders:2"}]}
    }
  }
}
"#;

fn injected(doc: &str) -> bool {
    doc.contains("graylane-sidecar") && doc.contains("graylane-init")
}

#[test]
fn every_way_of_writing_a_workload_is_injected() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = MANIFESTS.split("---\n").nth(1).unwrap();
    let cases = [
        ("json", JSON_DEPLOYMENT.to_string()),
        (
            "comment after the kind",
            deployment.replace("kind: Deployment", "kind: Deployment  # orders"),
        ),
        (
            "quoted keys",
            deployment.replace("kind: Deployment", "\"kind\": \"Deployment\""),
        ),
        (
            "kind not first",
            deployment.replace("apiVersion: apps/v1\nkind: Deployment\n", "")
                + "apiVersion: apps/v1\nkind: Deployment\n",
        ),
    ];
    for (case, text) in cases {
        let file = write_file(dir.path(), "case.yaml", &text);
        let out = cli(&["inject", "-f", &file]);
        out.assert_ok();
        assert!(injected(&out.stdout), "{case}: {}", out.stdout);
        let injected_file = write_file(dir.path(), "case-injected.yaml", &out.stdout);
        validate(&injected_file);
    }
}

#[test]
fn the_items_of_a_list_are_injected() {
    let dir = tempfile::tempdir().unwrap();
    let list = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [{JSON_DEPLOYMENT},
           {{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "settings"}}}}]}}"#
    );
    let file = write_file(dir.path(), "list.json", &list);
    let out = cli(&["inject", "-f", &file]);
    out.assert_ok();
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON in, JSON out");
    let items = value["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", out.stdout);
    let inits = &items[0]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(inits[1]["name"], "graylane-sidecar", "{}", out.stdout);
    assert_eq!(items[1]["metadata"]["name"], "settings");
    validate(&write_file(dir.path(), "list-injected.yaml", &out.stdout));
}

#[test]
fn opted_out_workloads_pass_through_as_written_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let opted_out = MANIFESTS.split("---\n").nth(1).unwrap().replace(
        "      labels: {app: orders, version: v2}\n",
        "      labels: {app: orders, version: v2, graylane.io/inject: disabled}  # not yet\n",
    );
    let file = write_file(dir.path(), "opted-out.yaml", &opted_out);
    let out = cli(&["inject", "-f", &file]);
    out.assert_ok();
    assert_eq!(out.stdout, opted_out, "byte for byte");
    assert!(
        out.stderr.contains(
            "opted-out.yaml: document 1 (Deployment/orders-v2): not injected: labelled graylane.io/inject=disabled"
        ),
        "{out:?}"
    );
}

#[test]
fn invalid_yaml_is_refused_naming_the_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    // Not a workload either, as far as a line-by-line look can tell: still refused.
    let broken = format!("{MANIFESTS}---\nkind: ConfigMap\ndata: {{name: [oops\n");
    let file = write_file(dir.path(), "broken.yaml", &broken);
    let out = cli(&["inject", "-f", &file]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("broken.yaml: document 5: not YAML"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "nothing half-printed: {out:?}");
}
