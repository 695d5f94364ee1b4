//! The admission webhook over real HTTPS: certificates made here (openssl), an
//! AdmissionReview posted with curl trusting only that CA, the JSONPatch applied to
//! the pod and the result checked.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use graylane_tests::ControlPlane;
use serde_json::{Value, json};

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=graylane-test-ca",
        ]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=localhost",
        ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]));
}

/// POSTs `review` to the webhook, trusting only the test CA.
fn post(dir: &Path, port: u16, review: &Value) -> Value {
    let url = format!("https://localhost:{port}/inject");
    let out = run(Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &review.to_string(),
            &url,
        ]));
    serde_json::from_slice(&out).unwrap()
}

fn review(uid: &str, namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": namespace, "object": pod},
    })
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
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Applies the `add` operations of a JSONPatch (what the webhook emits).
fn apply(mut doc: Value, patch: &Value) -> Value {
    for op in patch.as_array().unwrap() {
        assert_eq!(op["op"], "add", "{op}");
        let path = op["path"].as_str().unwrap();
        let mut target = &mut doc;
        let tokens: Vec<String> = path[1..]
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        for token in &tokens[..tokens.len() - 1] {
            target = &mut target[token.as_str()];
        }
        target[tokens.last().unwrap().as_str()] = op["value"].clone();
    }
    doc
}

#[test]
fn the_webhook_patches_pods_over_https() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let cert = dir.path().join("tls.pem").display().to_string();
    let key = dir.path().join("tls.key").display().to_string();
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--inject-image",
            "registry.local/graylane:test",
            "--inject-control-plane",
            "http://graylane-control.graylane-system.svc:15010",
        ],
    );
    let log = cp.proc.log_text();
    let port: u16 = log
        .split("webhook_addr=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no webhook_addr in {log}"));

    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-7d9", "namespace": "shop",
                     "labels": {"app": "orders", "version": "v2", "graylane.io/inject": "enabled"}},
        "spec": {"containers": [{"name": "orders", "image": "shop/orders:2",
                                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let answer = post(dir.path(), port, &review("uid-1", "shop", pod.clone()));
    let response = &answer["response"];
    assert_eq!(response["uid"], "uid-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value =
        serde_json::from_slice(&base64_decode(response["patch"].as_str().unwrap())).unwrap();
    let injected = apply(pod.clone(), &patch);
    assert_eq!(
        injected["spec"]["containers"], pod["spec"]["containers"],
        "the app container is untouched"
    );
    // A native sidecar: an init container that keeps running, after interception.
    let inits = injected["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits[1]["name"], "graylane-sidecar");
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(inits[1]["image"], "registry.local/graylane:test");
    let env = |name: &str| {
        inits[1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(env("GRAYLANE_SERVICE")["value"], "orders");
    assert_eq!(
        env("GRAYLANE_CONTROL_PLANE")["value"],
        "http://graylane-control.graylane-system.svc:15010"
    );
    assert_eq!(
        injected["spec"]["initContainers"][0]["name"],
        "graylane-init"
    );
    assert_eq!(
        injected["metadata"]["annotations"]["graylane.io/status"],
        "injected"
    );

    // An injected pod comes back without a patch; kube-system is never touched.
    let again = post(dir.path(), port, &review("uid-2", "shop", injected));
    assert_eq!(again["response"], json!({"uid": "uid-2", "allowed": true}));
    let system = post(
        dir.path(),
        port,
        &review("uid-3", "kube-system", pod.clone()),
    );
    assert_eq!(system["response"], json!({"uid": "uid-3", "allowed": true}));
    // A host-network pod is let through untouched: its NAT rules would be the node's.
    let mut host = pod.clone();
    host["spec"]["hostNetwork"] = json!(true);
    let host = post(dir.path(), port, &review("uid-5", "shop", host));
    assert_eq!(host["response"], json!({"uid": "uid-5", "allowed": true}));
    // A service name the sidecar would refuse at start is refused here, named.
    let mut crashing = pod.clone();
    crashing["metadata"]["annotations"] = json!({"graylane.io/service": "Orders"});
    let refused = post(dir.path(), port, &review("uid-6", "shop", crashing));
    assert_eq!(refused["response"]["allowed"], false, "{refused}");
    let message = refused["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("graylane.io/service"), "{message}");
    // A pod whose annotations cannot be honoured is refused with the reason.
    let mut bad = pod;
    bad["metadata"]["annotations"] = json!({"graylane.io/exclude-outbound-cidrs": "10.0.0.0/99"});
    let refused = post(dir.path(), port, &review("uid-4", "shop", bad));
    assert_eq!(refused["response"]["allowed"], false);
    let message = refused["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("graylane.io/exclude-outbound-cidrs") && message.contains("10.0.0.0/99"),
        "{message}"
    );

    // Real TLS: a client that does not trust the CA gets nowhere.
    let untrusted = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            &format!("https://localhost:{port}/inject"),
        ])
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    // Not an AdmissionReview: 400 saying so.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .args([
            "-w",
            "\n%{http_code}",
            "--data-binary",
            "{}",
            &format!("https://localhost:{port}/inject"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("400") && text.contains("AdmissionReview"),
        "{text}"
    );
}

/// `kubernetes-validate` from the venv `scripts/deps.sh test` installs, else `PATH`.
fn validator() -> std::path::PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py/bin/kubernetes-validate");
    if local.exists() {
        return local;
    }
    "kubernetes-validate".into()
}

/// An issuer key as `/openid/v1/jwks` serves it (RFC 7517's P-256 example key).
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","use":"sig","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

/// A control plane checking service-account tokens (`--k8s-jwks`) injects a projected
/// token and the mesh CA (the one it serves gRPC TLS from) through the pod's own
/// annotation, overwriting one the pod brought; the patched pod validates.
#[test]
fn with_service_account_tokens_the_webhook_mounts_a_projected_token_and_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let path = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(dir.path().join("jwks.json"), JWKS).unwrap();
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &path("tls.pem"),
            "--tls-key",
            &path("tls.key"),
            "--ca-cert",
            &path("ca.pem"),
            "--ca-key",
            &path("ca.key"),
            "--k8s-jwks",
            &path("jwks.json"),
            "--inject-projected-token",
        ],
    );
    let log = cp.proc.log_text();
    let port: u16 = log
        .split("webhook_addr=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no webhook_addr in {log}"));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-7d9", "namespace": "shop",
                     "labels": {"app": "orders"},
                     "annotations": {"graylane.io/ca-bundle": "the pod's own CA"}},
        "spec": {"serviceAccountName": "orders",
                 "containers": [{"name": "orders", "image": "shop/orders:2"}]},
    });
    let answer = post(dir.path(), port, &review("uid-1", "shop", pod.clone()));
    let patch: Value = serde_json::from_slice(&base64_decode(
        answer["response"]["patch"].as_str().unwrap(),
    ))
    .unwrap();
    let injected = apply(pod, &patch);
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    assert_eq!(
        injected["metadata"]["annotations"]["graylane.io/ca-bundle"]
            .as_str()
            .unwrap()
            .trim_end(),
        ca.trim_end(),
        "the mesh CA, not the pod's"
    );
    let volume = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "graylane-token")
        .unwrap();
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"],
        json!({"audience": "graylane", "expirationSeconds": 3600, "path": "token"})
    );
    let text = injected.to_string();
    assert!(
        !text.contains("graylane-sidecar-token"),
        "no Secret: {text}"
    );
    let file = dir.path().join("injected.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(validator())
        .args(["--strict", "--no-warn"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Projected tokens are only worth injecting when the control plane can check them.
#[test]
fn inject_projected_token_without_k8s_jwks_is_refused_naming_the_flag() {
    let out = Command::new(graylane_tests::bin("graylane-control"))
        .args(["--inject-projected-token", "--store", "memory:"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--k8s-jwks"), "{stderr}");
}

/// What the webhook writes into every pod is checked at start: a mistyped scheme or an
/// empty image would crash-loop every pod it admits.
#[test]
fn injection_settings_that_would_stop_every_sidecar_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let path = |f: &str| dir.path().join(f).display().to_string();
    for (flag, value, says) in [
        (
            "--inject-control-plane",
            "htps://graylane-control.graylane-system.svc:15010",
            "scheme \"htps\" is neither http nor https",
        ),
        ("--inject-control-plane", " , ", "no URL given"),
        ("--inject-image", "", "--inject-image: empty"),
    ] {
        let out = Command::new(graylane_tests::bin("graylane-control"))
            .args(["--store", "memory:", "--grpc-addr", "127.0.0.1:0"])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--webhook-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--tls-cert",
                &path("tls.pem"),
                "--tls-key",
                &path("tls.key"),
            ])
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(flag) && stderr.contains(says),
            "{flag} {value:?}: {:?} {stderr}",
            out.status
        );
    }
}
