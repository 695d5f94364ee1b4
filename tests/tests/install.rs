//! `graylane install`: the production manifests render with fresh certificates and
//! tokens, every object (and the injected sample app) validates against the Kubernetes
//! schemas, and the generated certificates really serve the webhook; values cannot
//! break out of their YAML scalars, tokens are fresh, and application namespaces get
//! the sidecars' token Secret (or a hint how to make it). The control plane serves gRPC
//! over TLS from the rendered mesh CA, whose certificate (never its key) the sidecars'
//! Secrets carry.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use graylane_tests::{CliOutput, ControlPlane, cli, write_file};
use serde_json::Value;

/// A tool of the venv `scripts/deps.sh test` installs, else from `PATH`.
fn venv_tool(name: &str) -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/py/bin")
        .join(name);
    if local.exists() {
        return local;
    }
    PathBuf::from(name)
}

fn validator() -> PathBuf {
    venv_tool("kubernetes-validate")
}

/// Every document of `yaml`, parsed by an independent parser (PyYAML, which
/// kubernetes-validate brings), as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(venv_tool("python3"))
        .args([
            "-c",
            "import json, sys, yaml; \
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3: {e} (bash scripts/deps.sh test installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not YAML: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The documents of `kind` named `name`, in any namespace.
fn objects<'a>(docs: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect()
}

/// The sidecar token of the control plane's token file.
fn sidecar_token(docs: &[Value]) -> String {
    let tokens = objects(docs, "Secret", "graylane-tokens")[0]["stringData"]["tokens"]
        .as_str()
        .unwrap();
    tokens
        .lines()
        .find_map(|l| l.strip_prefix("sidecar:"))
        .unwrap()
        .to_string()
}

/// Validated, and parsed.
fn rendered(out: &CliOutput) -> Vec<Value> {
    out.assert_ok();
    let dir = tempfile::tempdir().unwrap();
    validate(&write_file(dir.path(), "install.yaml", &out.stdout));
    documents(&out.stdout)
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
        "networkpolicy/graylane-etcd",
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
    assert!(
        injected
            .stdout
            .contains("https://graylane-control.graylane-system.svc:15010")
            && injected.stdout.contains("/var/run/secrets/graylane/ca.pem"),
        "sidecars dial TLS and trust the mesh CA: {}",
        injected.stdout
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

/// A value with a quote, a newline and a would-be field stays one string: the output
/// parses, the image is exactly that string, no `injected` field appears, and every
/// object still passes `kubernetes-validate --strict`.
#[test]
fn install_values_cannot_break_out_of_their_yaml_scalars() {
    let evil = "x\" evil\n  injected: true";
    let out = cli(&["install", "--control-image", evil, "--sidecar-image", evil]);
    let docs = rendered(&out);
    let control = &objects(&docs, "Deployment", "graylane-control")[0];
    let container = &control["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], evil);
    let inject_image = format!("--inject-image={evil}");
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| *a == inject_image.as_str()),
        "{container}"
    );
    let orders = &objects(&docs, "Deployment", "orders-v1")[0];
    assert_eq!(
        orders["spec"]["template"]["spec"]["containers"][0]["image"],
        evil
    );
    assert!(!out.stdout.contains("\n  injected: true"));
    assert!(
        !serde_json::to_string(&docs)
            .unwrap()
            .contains("\"injected\":"),
        "no injected field anywhere"
    );
}

/// Tokens are 32 lowercase hex characters, different for admin and sidecar, and fresh
/// on every run.
#[test]
fn install_tokens_are_fresh_32_hex_chars() {
    let tokens = |docs: &[Value]| -> Vec<String> {
        let file = objects(docs, "Secret", "graylane-tokens")[0]["stringData"]["tokens"]
            .as_str()
            .unwrap()
            .to_string();
        file.lines()
            .map(|l| l.split_once(':').unwrap().1.to_string())
            .collect()
    };
    let first = tokens(&documents(&cli(&["install"]).assert_ok().stdout));
    let second = tokens(&documents(&cli(&["install"]).assert_ok().stdout));
    assert_eq!(first.len(), 2, "admin and sidecar: {first:?}");
    for t in first.iter().chain(&second) {
        assert_eq!(t.len(), 32, "{t}");
        assert!(t.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{t}");
    }
    assert_ne!(first[0], first[1]);
    assert!(
        first.iter().all(|t| !second.contains(t)),
        "{first:?} {second:?}"
    );
}

/// `--namespace` (repeatable) renders the sidecars' token Secret into each application
/// namespace, with the token the control plane accepts, and no hint is needed.
#[test]
fn install_namespace_renders_the_sidecar_token_secret_into_each() {
    let out = cli(&[
        "install",
        "--no-sample-app",
        "--namespace",
        "team-a",
        "--namespace",
        "team-b",
        "--namespace",
        "team-a",
    ]);
    let docs = rendered(&out);
    let secrets = objects(&docs, "Secret", "graylane-sidecar-token");
    let namespaces: Vec<&Value> = secrets
        .iter()
        .map(|s| &s["metadata"]["namespace"])
        .collect();
    assert_eq!(namespaces, ["team-a", "team-b"], "each once");
    let token = sidecar_token(&docs);
    for s in &secrets {
        assert_eq!(s["stringData"]["token"], token.as_str());
    }
    assert!(
        objects(&docs, "Namespace", "team-a").is_empty(),
        "it exists already"
    );
    assert!(
        !out.stderr.contains("kubectl create secret"),
        "{}",
        out.stderr
    );

    let bad = cli(&["install", "--namespace", "Team\"A"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("not a namespace name"),
        "{}",
        bad.stderr
    );
}

/// Without `--namespace` (and here without the sample app) no application namespace
/// has the Secret, so install says on standard error how to create it, with the token.
#[test]
fn install_without_namespaces_prints_how_to_create_the_secret() {
    let out = cli(&["install", "--no-sample-app"]);
    let docs = rendered(&out);
    assert!(objects(&docs, "Secret", "graylane-sidecar-token").is_empty());
    let line = format!(
        "kubectl create secret generic graylane-sidecar-token -n NS --from-literal=token={} \
         --from-file=ca.pem=graylane-ca.pem",
        sidecar_token(&docs)
    );
    assert!(out.stderr.contains(&line), "{}", out.stderr);
    let ca = objects(&docs, "Secret", "graylane-ca")[0]["stringData"]["ca.pem"]
        .as_str()
        .unwrap();
    assert!(
        out.stderr.contains(ca.trim_end()) && !out.stderr.contains("PRIVATE KEY"),
        "the mesh CA certificate to save, not its key: {}",
        out.stderr
    );
    assert!(!out.stdout.contains("kubectl"), "stdout is only manifests");
}

/// etcd (no TLS, no auth) takes clients only from graylane-control and peers only from
/// its members.
#[test]
fn install_fences_etcd_off_with_a_network_policy() {
    let docs = documents(&cli(&["install"]).assert_ok().stdout);
    let policy = &objects(&docs, "NetworkPolicy", "graylane-etcd")[0];
    assert_eq!(policy["metadata"]["namespace"], "graylane-system");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "graylane-etcd"
    );
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let rules: Vec<(String, i64)> = spec["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["from"].as_array().unwrap().len(), 1, "{r}");
            assert!(r["from"][0].get("namespaceSelector").is_none(), "{r}");
            assert_eq!(r["ports"].as_array().unwrap().len(), 1, "{r}");
            (
                r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["ports"][0]["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("graylane-control".to_string(), 2379),
            ("graylane-etcd".to_string(), 2380)
        ]
    );
    // The policy comes before etcd, so etcd's pods never run unfenced.
    let position = |kind: &str| docs.iter().position(|d| d["kind"] == kind).unwrap();
    assert!(position("NetworkPolicy") < position("StatefulSet"));
}

/// `openssl ARGS FILE`'s standard output, which must succeed.
fn openssl(args: &[&str], file: &str) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered mesh CA is a matching certificate and key in graylane-system's
/// `graylane-ca` Secret, mounted into graylane-control, which serves gRPC over TLS
/// from it (no plaintext); every sidecar token Secret carries the same certificate and
/// no key; and a control plane started with those files is reached with `https://`
/// and that certificate as the CA bundle.
#[test]
fn install_puts_the_control_plane_on_tls_with_the_mesh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["install", "--namespace", "team-a"]);
    let docs = rendered(&out);
    let secret = objects(&docs, "Secret", "graylane-ca");
    assert_eq!(secret.len(), 1);
    assert_eq!(secret[0]["metadata"]["namespace"], "graylane-system");
    let data = &secret[0]["stringData"];
    let (ca_pem, key_pem) = (
        data["ca.pem"].as_str().unwrap(),
        data["ca-key.pem"].as_str().unwrap(),
    );
    let ca = write_file(dir.path(), "ca.pem", ca_pem);
    let key = write_file(dir.path(), "ca-key.pem", key_pem);
    let subject = openssl(&["x509", "-noout", "-subject", "-in"], &ca);
    assert!(subject.contains("graylane mesh CA"), "{subject}");
    assert_eq!(
        openssl(&["x509", "-noout", "-pubkey", "-in"], &ca),
        openssl(&["pkey", "-pubout", "-in"], &key),
        "the key is the certificate's"
    );

    // Every sidecar token Secret: the same certificate, no key.
    let sidecar = objects(&docs, "Secret", "graylane-sidecar-token");
    let namespaces: Vec<&Value> = sidecar
        .iter()
        .map(|s| &s["metadata"]["namespace"])
        .collect();
    assert_eq!(namespaces, ["shop", "team-a"]);
    for s in &sidecar {
        let keys: Vec<&String> = s["stringData"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ca.pem", "token"], "{s}");
        assert_eq!(s["stringData"]["ca.pem"], ca_pem);
        assert!(!s.to_string().contains("PRIVATE KEY"), "{s}");
    }

    // graylane-control: the mounted CA, TLS, no plaintext, sidecars sent to https://.
    let control = &objects(&docs, "Deployment", "graylane-control")[0]["spec"]["template"]["spec"];
    let container = &control["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for wanted in [
        "--ca-cert=/etc/graylane/ca/ca.pem",
        "--ca-key=/etc/graylane/ca/ca-key.pem",
        "--grpc-tls",
        "--inject-control-plane=https://graylane-control.graylane-system.svc:15010",
    ] {
        assert!(args.contains(&wanted), "{wanted}: {args:?}");
    }
    assert!(!args.iter().any(|a| a.contains("plaintext")), "{args:?}");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/graylane/ca")
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    let volume = control["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "graylane-ca");

    // Those files, on loopback: TLS the CLI verifies against the sidecars' ca.pem.
    let cp = ControlPlane::start(
        dir.path(),
        &["--ca-cert", &ca, "--ca-key", &key, "--grpc-tls"],
    );
    let https = format!("https://127.0.0.1:{}", cp.grpc.port());
    let bundle = write_file(
        dir.path(),
        "bundle.pem",
        sidecar[1]["stringData"]["ca.pem"].as_str().unwrap(),
    );
    cli(&["--server", &https, "--ca-bundle", &bundle, "status"]).assert_ok();
    let plain = cli(&[
        "--server",
        &format!("http://127.0.0.1:{}", cp.grpc.port()),
        "status",
    ]);
    assert_ne!(plain.code, 0, "no plaintext: {plain:?}");
}

/// The args of the first container of Deployment/StatefulSet `name`.
fn container_args<'a>(docs: &'a [Value], kind: &str, name: &str) -> Vec<&'a str> {
    let spec = &objects(docs, kind, name)[0]["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    match container["args"].as_array() {
        Some(args) => args.iter().map(|a| a.as_str().unwrap()).collect(),
        None => Vec::new(),
    }
}

/// An issuer key as `/openid/v1/jwks` serves it (RFC 7517's P-256 example key).
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"1","use":"sig","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

/// `--k8s-jwks`: the keys in a ConfigMap mounted into graylane-control, which checks
/// projected tokens with them and injects such tokens; no sidecar token exists, so no
/// namespace gets a token Secret and no hint is printed; the injected sample app
/// validates. The control plane starts with those flags.
#[test]
fn install_k8s_jwks_wires_service_account_tokens_without_a_sidecar_secret() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = write_file(dir.path(), "jwks.json", JWKS);
    let out = cli(&["install", "--k8s-jwks", &jwks]);
    let docs = rendered(&out);
    let config_map = objects(&docs, "ConfigMap", "graylane-k8s-jwks");
    assert_eq!(config_map[0]["metadata"]["namespace"], "graylane-system");
    assert_eq!(config_map[0]["data"]["jwks.json"], JWKS);
    let args = container_args(&docs, "Deployment", "graylane-control");
    for wanted in [
        "--k8s-jwks=/etc/graylane/jwks/jwks.json",
        "--inject-projected-token",
    ] {
        assert!(args.contains(&wanted), "{wanted}: {args:?}");
    }
    let control = &objects(&docs, "Deployment", "graylane-control")[0]["spec"]["template"]["spec"];
    let mount = control["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/graylane/jwks")
        .unwrap();
    let volume = control["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "graylane-k8s-jwks");
    let config_map_at = docs.iter().position(|d| d["kind"] == "ConfigMap").unwrap();
    let deployment_at = docs.iter().position(|d| d["kind"] == "Deployment").unwrap();
    assert!(config_map_at < deployment_at, "keys before their reader");

    let tokens = objects(&docs, "Secret", "graylane-tokens")[0]["stringData"]["tokens"]
        .as_str()
        .unwrap();
    assert!(
        tokens.starts_with("admin:") && !tokens.contains("sidecar:"),
        "{tokens}"
    );
    assert!(objects(&docs, "Secret", "graylane-sidecar-token").is_empty());
    assert!(
        !out.stderr.contains("kubectl create secret"),
        "{}",
        out.stderr
    );
    assert!(
        !objects(&docs, "Deployment", "orders-v1").is_empty(),
        "sample app kept"
    );

    // The flags install passes are ones graylane-control takes together.
    let token_file = write_file(dir.path(), "tokens", tokens);
    let cp = ControlPlane::start(
        dir.path(),
        &["--token-file", &token_file, "--k8s-jwks", &jwks],
    );
    assert!(cp.proc.log_text().contains("graylane-control listening"));

    let both = cli(&["install", "--k8s-jwks", &jwks, "--namespace", "team-a"]);
    assert_eq!(both.code, 2, "token Secrets are meaningless here: {both:?}");
}

/// A file that is not a JWKS with a usable key is refused before anything is
/// rendered: exit 2, naming the flag.
#[test]
fn install_refuses_a_k8s_jwks_file_that_is_not_a_jwks_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing.json", None),
        ("pem.json", Some("-----BEGIN PUBLIC KEY-----\nAA==\n")),
        ("empty.json", Some(r#"{"keys":[]}"#)),
        (
            "hmac.json",
            Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
        ),
        (
            "kubeconfig.json",
            Some(r#"{"apiVersion":"v1","kind":"Config"}"#),
        ),
    ];
    for (name, content) in cases {
        let path = match content {
            Some(text) => write_file(dir.path(), name, text),
            None => dir.path().join(name).display().to_string(),
        };
        let out = cli(&["install", "--k8s-jwks", &path]);
        assert_eq!(out.code, 2, "{name}: {out:?}");
        assert!(out.stderr.contains("--k8s-jwks"), "{name}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{name}: nothing rendered");
    }
}

/// etcd serves clients over TLS only, with client certificates checked against a CA of
/// its own (not the mesh CA); graylane-control has the one client certificate; both
/// chain to that CA and the server's names cover every member; the CA's key is
/// nowhere in the output; probes use the plaintext metrics port.
#[test]
fn install_puts_etcd_on_client_tls_with_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let docs = rendered(&cli(&["install"]));
    let etcd_args =
        objects(&docs, "StatefulSet", "graylane-etcd")[0]["spec"]["template"]["spec"]["containers"]
            [0]["args"][0]
            .as_str()
            .unwrap()
            .to_string();
    for wanted in [
        "--listen-client-urls https://0.0.0.0:2379",
        "--client-cert-auth --trusted-ca-file /etc/etcd/tls/ca.crt",
        "--cert-file /etc/etcd/tls/tls.crt --key-file /etc/etcd/tls/tls.key",
        "--listen-metrics-urls http://0.0.0.0:2381",
    ] {
        assert!(etcd_args.contains(wanted), "{wanted}: {etcd_args}");
    }
    assert!(
        !etcd_args.contains("--listen-client-urls http://"),
        "{etcd_args}"
    );
    let etcd_pod = &objects(&docs, "StatefulSet", "graylane-etcd")[0]["spec"]["template"]["spec"];
    assert_eq!(
        etcd_pod["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "metrics"
    );
    assert_eq!(
        etcd_pod["volumes"][0]["secret"]["secretName"],
        "graylane-etcd-server"
    );
    let args = container_args(&docs, "Deployment", "graylane-control");
    let store = args.iter().find(|a| a.starts_with("--store=")).unwrap();
    assert!(
        store.starts_with("--store=etcd+https://graylane-etcd-0."),
        "{store}"
    );
    for wanted in [
        "--etcd-ca=/etc/graylane/etcd/ca.crt",
        "--etcd-cert=/etc/graylane/etcd/tls.crt",
        "--etcd-key=/etc/graylane/etcd/tls.key",
    ] {
        assert!(args.contains(&wanted), "{wanted}: {args:?}");
    }

    let secret = |name: &str, key: &str| {
        let file = format!("{name}-{key}");
        let pem = objects(&docs, "Secret", name)[0]["stringData"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{name} {key}"))
            .to_string();
        write_file(dir.path(), &file, &pem)
    };
    let ca = secret("graylane-etcd-server", "ca.crt");
    assert_eq!(
        std::fs::read_to_string(&ca).unwrap(),
        std::fs::read_to_string(secret("graylane-etcd-client", "ca.crt")).unwrap()
    );
    let mesh = secret("graylane-ca", "ca.pem");
    assert_ne!(
        openssl(&["x509", "-noout", "-pubkey", "-in"], &ca),
        openssl(&["x509", "-noout", "-pubkey", "-in"], &mesh),
        "not the mesh CA"
    );
    for (name, purpose) in [
        ("graylane-etcd-server", "sslserver"),
        ("graylane-etcd-client", "sslclient"),
    ] {
        let cert = secret(name, "tls.crt");
        let verify = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile", &ca, &cert])
            .output()
            .unwrap();
        assert!(verify.status.success(), "{name}: {verify:?}");
        assert_eq!(
            openssl(&["x509", "-noout", "-pubkey", "-in"], &cert),
            openssl(&["pkey", "-pubout", "-in"], &secret(name, "tls.key")),
            "{name}: the key is the certificate's"
        );
    }
    let server = secret("graylane-etcd-server", "tls.crt");
    let names = openssl(
        &["x509", "-noout", "-ext", "subjectAltName", "-in"],
        &server,
    );
    for i in 0..3 {
        let name = format!("DNS:graylane-etcd-{i}.graylane-etcd.graylane-system.svc");
        assert!(names.contains(&name), "{name}: {names}");
    }
    // Keys in the output: webhook, mesh CA, etcd server, etcd client. Not etcd's CA.
    let text = serde_json::to_string(&docs).unwrap();
    let private_keys = text.matches("PRIVATE KEY-----\\n").count() / 2
        + docs
            .iter()
            .filter(|d| d["data"]["tls.key"].is_string())
            .count();
    assert_eq!(private_keys, 4, "{text}");
}
