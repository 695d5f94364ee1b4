//! Table tests over pod specs: plain, with init containers, named ports, annotations,
//! already injected, and the workload kinds.

use serde_json::{Value, json};

use super::*;

mod pod_shape;
mod ports;

fn pod(metadata: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

fn app(ports: Value) -> Value {
    json!({"containers": [{"name": "app", "image": "shop/orders:2", "ports": ports}]})
}

/// The injected sidecar of a pod spec: a native sidecar (an init container) unless
/// the pod asked for a plain container.
fn sidecar_of(spec: &Value) -> &Value {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(|list| spec[list].as_array().into_iter().flatten())
        .find(|c| c["name"] == SIDECAR)
        .expect("a sidecar")
}

fn sidecar(pod: &Value) -> &Value {
    sidecar_of(&pod["spec"])
}

fn env(pod: &Value, name: &str) -> Value {
    sidecar(pod)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn init_args(pod: &Value) -> Vec<String> {
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    let init = inits.iter().find(|c| c["name"] == INIT).unwrap();
    init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_plain_pod_gets_the_sidecar_and_the_init_container() {
    let mut p = pod(
        json!({"name": "orders-1", "labels": {"app": "orders", "version": "v2"}}),
        app(json!([{"containerPort": 9000}])),
    );
    assert_eq!(
        inject_object(&mut p, None, &Config::default()).unwrap(),
        Outcome::Injected
    );
    let containers = p["spec"]["containers"].as_array().unwrap();
    assert_eq!(
        containers.len(),
        1,
        "the app's alone: the sidecar is a native one"
    );
    let inits: Vec<&str> = p["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        inits,
        [INIT, SIDECAR],
        "interception first, then the sidecar"
    );
    assert_eq!(
        sidecar(&p)["restartPolicy"],
        "Always",
        "it keeps running, and stops after the app (a Job's pod completes)"
    );
    assert_eq!(sidecar(&p)["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(env(&p, "GRAYLANE_SERVICE")["value"], "orders");
    assert_eq!(env(&p, "GRAYLANE_LABELS")["value"], "app=orders,version=v2");
    assert_eq!(env(&p, "GRAYLANE_APP_ADDR")["value"], "127.0.0.1:9000");
    assert_eq!(
        env(&p, "GRAYLANE_ADVERTISE_ADDR")["value"],
        "$(POD_IP):15006"
    );
    assert_eq!(
        env(&p, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        env(&p, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(&p, "GRAYLANE_INSTANCE_ID")["value"],
        "$(POD_NAME).$(GRAYLANE_NAMESPACE)",
        "StatefulSet pods share names across namespaces; instance ids may not"
    );
    let names: Vec<&str> = sidecar(&p)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        at("POD_NAME") < at("GRAYLANE_INSTANCE_ID")
            && at("GRAYLANE_NAMESPACE") < at("GRAYLANE_INSTANCE_ID"),
        "Kubernetes expands $(VAR) only from variables listed before it: {names:?}"
    );
    assert_eq!(
        env(&p, "GRAYLANE_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace",
        "`orders` means orders in the pod's own namespace"
    );
    assert_eq!(
        env(&p, "GRAYLANE_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName",
        "the identity's service account is the pod's own"
    );
    assert_eq!(
        env(&p, "GRAYLANE_TOKEN_FILE")["value"],
        "/var/run/secrets/graylane/token"
    );
    let container = sidecar(&p);
    assert_eq!(container["securityContext"]["runAsUser"], 1337);
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], 15021);
    assert_eq!(
        env(&p, "GRAYLANE_ADMIN_ADDR")["value"],
        "127.0.0.1:15000",
        "/config shows the whole mesh: loopback only"
    );
    assert_eq!(env(&p, "GRAYLANE_HEALTH_ADDR")["value"], "0.0.0.0:15021");
    assert_eq!(
        container["ports"],
        json!([
            {"name": "graylane-in", "containerPort": 15006},
            {"name": "graylane-health", "containerPort": 15021},
        ]),
        "the admin port is not a container port"
    );
    assert_eq!(
        p["spec"]["volumes"][0]["secret"]["secretName"],
        "graylane-sidecar-token"
    );
    assert_eq!(
        init_args(&p),
        [
            "init-iptables",
            "--proxy-uid",
            "1337",
            "--exclude-inbound-ports",
            "15021"
        ]
    );
    assert_eq!(
        p["spec"]["initContainers"][0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(p["metadata"]["annotations"][STATUS_ANNOTATION], "injected");
}

/// Sidecars reach the control plane over TLS by default and trust the mesh CA from
/// the token Secret; without that Secret, neither a token nor a CA bundle is set.
#[test]
fn sidecars_trust_the_mesh_ca_from_the_token_secret_over_https() {
    let config = Config::default();
    assert_eq!(
        config.control_plane,
        "https://graylane-control.graylane-system.svc:15010"
    );
    let mut p = pod(
        json!({"name": "orders-1", "labels": {"app": "orders"}}),
        app(json!([{"containerPort": 9000}])),
    );
    inject_object(&mut p, None, &config).unwrap();
    assert_eq!(
        env(&p, "GRAYLANE_CONTROL_PLANE")["value"],
        "https://graylane-control.graylane-system.svc:15010"
    );
    assert_eq!(
        env(&p, "GRAYLANE_CA_BUNDLE")["value"],
        "/var/run/secrets/graylane/ca.pem",
        "ca.pem of the mounted graylane-sidecar-token Secret"
    );
    assert_eq!(
        sidecar(&p)["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/graylane"
    );

    let config = Config {
        control_plane: "http://127.0.0.1:15010".into(),
        credential: Credential::None,
        ..Config::default()
    };
    let mut p = pod(
        json!({"name": "orders-1", "labels": {"app": "orders"}}),
        app(json!([{"containerPort": 9000}])),
    );
    inject_object(&mut p, None, &config).unwrap();
    assert_eq!(env(&p, "GRAYLANE_CA_BUNDLE"), Value::Null);
    assert_eq!(env(&p, "GRAYLANE_TOKEN_FILE"), Value::Null);
}

#[test]
fn existing_init_containers_run_before_interception() {
    let mut spec = app(json!([]));
    spec["initContainers"] = json!([{"name": "migrate", "image": "shop/migrate"}]);
    let mut p = pod(json!({"labels": {"app": "orders"}}), spec);
    inject_object(&mut p, None, &Config::default()).unwrap();
    let names: Vec<&str> = p["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["migrate", INIT, SIDECAR]);
}

#[test]
fn annotations_override_image_ports_and_exclusions() {
    let mut p = pod(
        json!({
            "labels": {"app": "orders"},
            "annotations": {
                "graylane.io/sidecar-image": "registry.local/graylane:dev",
                "graylane.io/service": "checkout",
                "graylane.io/app-port": "7000",
                // Spaces after commas, as people write lists: init-iptables' flags
                // refuse them, so they must not reach its arguments.
                "graylane.io/exclude-outbound-ports": "5432, 6379",
                "graylane.io/exclude-outbound-cidrs": " 10.96.0.1/32 ,192.168.0.0/16",
                "graylane.io/exclude-inbound-ports": "9090",
            }
        }),
        app(json!([{"containerPort": 8080}])),
    );
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_SERVICE")["value"], "checkout");
    assert_eq!(env(&p, "GRAYLANE_APP_ADDR")["value"], "127.0.0.1:7000");
    assert_eq!(sidecar(&p)["image"], "registry.local/graylane:dev");
    assert_eq!(
        init_args(&p),
        [
            "init-iptables",
            "--proxy-uid",
            "1337",
            "--exclude-inbound-ports",
            "15021,9090",
            "--exclude-outbound-ports",
            "5432,6379",
            "--exclude-outbound-cidrs",
            "10.96.0.1/32,192.168.0.0/16",
        ]
    );
}

#[test]
fn injected_sidecars_receive_only_the_endpoints_their_app_calls_unless_told() {
    let mut p = pod(json!({"labels": {"app": "web"}}), app(json!([])));
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_ENDPOINT_SCOPE")["value"], "scoped");
    assert_eq!(env(&p, "GRAYLANE_CALLS"), Value::Null);
    let annotated = |scope: &str, calls: &str| {
        pod(
            json!({"labels": {"app": "web"}, "annotations": {
                "graylane.io/endpoint-scope": scope, "graylane.io/calls": calls}}),
            app(json!([])),
        )
    };
    let mut p = annotated("scoped", "orders, payments.shop");
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_CALLS")["value"], "orders, payments.shop");
    let mut p = annotated("all", "");
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_ENDPOINT_SCOPE")["value"], "all");
    for (scope, calls, names) in [
        ("some", "", "graylane.io/endpoint-scope"),
        ("scoped", "orders,Payments", "\"Payments\""),
        ("scoped", "shop/orders", "\"shop/orders\""),
        ("all", "orders", "graylane.io/calls"),
    ] {
        let e = inject_object(&mut annotated(scope, calls), None, &Config::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(names), "{scope} {calls}: {e}");
    }
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let mut p = pod(json!({"labels": {"tier": "web"}}), app(json!([])));
    assert_eq!(
        inject_object(&mut p, None, &Config::default()),
        Err(InjectError::NoService)
    );
    let mut p = pod(
        json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/exclude-outbound-ports": "5432,http"}}),
        app(json!([])),
    );
    let e = inject_object(&mut p, None, &Config::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("graylane.io/exclude-outbound-ports") && e.contains("\"http\""),
        "{e}"
    );
    // init-iptables writes IPv4 rules: an IPv6 network would fail the init container.
    let mut p = pod(
        json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/exclude-outbound-cidrs": "10.0.0.0/8,fd00::/8"}}),
        app(json!([])),
    );
    let e = inject_object(&mut p, None, &Config::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"fd00::/8\" is an IPv6 network"), "{e}");
}

/// A pod admitted is a pod whose sidecar starts: what would stop it (`--service
/// Orders`, an empty image) is refused naming where it came from; pod labels no
/// instance label can be (`app: MyApp`, an empty value) are left out of its labels.
#[test]
fn values_that_would_stop_the_sidecar_are_refused_or_left_out() {
    let refused = |metadata: Value| {
        let mut p = pod(metadata, app(json!([])));
        inject_object(&mut p, None, &Config::default())
            .unwrap_err()
            .to_string()
    };
    for bad in ["Orders", "shop/orders", ""] {
        let e = refused(
            json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/service": bad}}),
        );
        assert!(
            e.starts_with("annotation graylane.io/service: "),
            "{bad}: {e}"
        );
    }
    let e = refused(json!({"labels": {"app": "MyApp"}}));
    assert!(
        e.starts_with("label app: \"MyApp\" is not a valid name"),
        "{e}"
    );
    assert!(e.contains("graylane.io/service"), "{e}");
    let e = refused(
        json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/sidecar-image": ""}}),
    );
    assert!(
        e.starts_with("annotation graylane.io/sidecar-image: empty"),
        "{e}"
    );

    let mut p = pod(
        json!({"labels": {"app": "orders", "version": "v2", "canary": "", "Tier": "Web"},
               "annotations": {"graylane.io/service": "orders"}}),
        app(json!([])),
    );
    inject_object(&mut p, None, &Config::default()).unwrap();
    let labels = env(&p, "GRAYLANE_LABELS")["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed: std::collections::BTreeMap<String, String> = labels
        .split(',')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    assert!(graylane_routing::Labels::new(parsed).is_ok(), "{labels}");
    assert!(
        labels.contains("version=v2") && !labels.contains("canary"),
        "{labels}"
    );
    // The version taken from app.kubernetes.io/version is held to the same rule.
    let mut p = pod(
        json!({"labels": {"app": "orders", "app.kubernetes.io/version": ""}}),
        app(json!([])),
    );
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_LABELS")["value"], "app=orders");
}

/// A host-network pod is left as it is: its NAT rules would be the node's.
#[test]
fn a_host_network_pod_is_skipped() {
    let mut spec = app(json!([]));
    spec["hostNetwork"] = json!(true);
    let mut p = pod(json!({"labels": {"app": "orders"}}), spec);
    let before = p.clone();
    assert_eq!(
        inject_object(&mut p, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::HostNetwork)
    );
    assert_eq!(p, before);
}

#[test]
fn workloads_inject_their_pod_template_and_other_kinds_pass() {
    for kind in ["Deployment", "StatefulSet", "DaemonSet", "Job"] {
        let mut d = json!({
            "kind": kind,
            "metadata": {"name": "orders"},
            "spec": {"template": {"metadata": {"labels": {"app": "orders"}}, "spec": app(json!([]))}},
        });
        assert_eq!(
            inject_object(&mut d, None, &Config::default()).unwrap(),
            Outcome::Injected,
            "{kind}"
        );
        assert_eq!(
            sidecar_of(&d["spec"]["template"]["spec"])["restartPolicy"],
            "Always",
            "{kind}"
        );
        assert!(
            d["metadata"].get("annotations").is_none(),
            "the workload's own metadata is untouched"
        );
    }
    let mut cron = json!({
        "kind": "CronJob",
        "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": {"app": "report"}}, "spec": app(json!([]))}}}},
    });
    inject_object(&mut cron, None, &Config::default()).unwrap();
    // A job's pod completes when its job does: the native sidecar stops after it.
    assert_eq!(
        sidecar_of(&cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])["restartPolicy"],
        "Always"
    );
    let mut cm = json!({"kind": "ConfigMap", "data": {"a": "b"}});
    let before = cm.clone();
    assert_eq!(
        inject_object(&mut cm, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::NotAWorkload)
    );
    assert_eq!(cm, before);
}

#[test]
fn system_namespaces_are_never_injected() {
    for ns in NEVER {
        let mut p = pod(
            json!({"namespace": ns, "labels": {"app": "x"}}),
            app(json!([])),
        );
        let before = p.clone();
        assert_eq!(
            inject_object(&mut p, None, &Config::default()).unwrap(),
            Outcome::Skipped(Skip::SystemNamespace(ns.to_string()))
        );
        assert_eq!(p, before);
    }
}

#[test]
fn an_opted_out_pod_or_template_is_skipped_with_the_reason() {
    let opted_out = json!({"labels": {"app": "orders", "graylane.io/inject": "disabled"}});
    let mut p = pod(opted_out.clone(), app(json!([])));
    let before = p.clone();
    assert_eq!(
        inject_object(&mut p, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::OptedOut)
    );
    assert_eq!(p, before);
    let mut d = json!({
        "kind": "Deployment",
        "metadata": {"name": "orders"},
        "spec": {"template": {"metadata": opted_out, "spec": app(json!([]))}},
    });
    assert_eq!(
        inject_object(&mut d, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::OptedOut)
    );
}

#[test]
fn the_given_namespace_wins_over_the_objects() {
    let mut p = pod(json!({"labels": {"app": "x"}}), app(json!([])));
    assert_eq!(
        inject_object(&mut p, Some("kube-system"), &Config::default()).unwrap(),
        Outcome::Skipped(Skip::SystemNamespace("kube-system".into()))
    );
}

#[test]
fn fields_of_the_wrong_type_are_refused_not_a_panic() {
    for spec in [json!("x"), json!([1]), json!({"template": 3}), Value::Null] {
        let mut d = json!({"kind": "Deployment", "metadata": {"name": "orders"}, "spec": spec});
        assert_eq!(
            inject_object(&mut d, None, &Config::default()),
            Err(InjectError::NotAnObject("spec")),
            "{d}"
        );
    }
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap()
}

/// With service-account tokens: a projected token for the audience `graylane`, an hour
/// long, and the CA from the pod annotation the injection set (overwriting one the
/// pod brought), both where the Secret's `token` and `ca.pem` would be.
#[test]
fn a_service_account_sidecar_gets_a_projected_token_and_the_injected_ca() {
    let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
    let config = Config {
        credential: Credential::ServiceAccount {
            ca_bundle: Some(pem.into()),
        },
        ..Config::default()
    };
    let mut p = pod(
        json!({"name": "orders-1", "labels": {"app": "orders"},
               "annotations": {CA_BUNDLE_ANNOTATION: "a CA of the pod's choosing"}}),
        app(json!([{"containerPort": 9000}])),
    );
    inject_object(&mut p, Some("shop"), &config).unwrap();
    assert_eq!(p["metadata"]["annotations"][CA_BUNDLE_ANNOTATION], pem);
    assert_eq!(
        env(&p, "GRAYLANE_TOKEN_FILE")["value"],
        "/var/run/secrets/graylane/token"
    );
    assert_eq!(
        env(&p, "GRAYLANE_CA_BUNDLE")["value"],
        "/var/run/secrets/graylane/ca.pem"
    );
    assert_eq!(
        env(&p, "GRAYLANE_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName",
        "the identity the token proves"
    );
    let sources = &volume(&p, "graylane-token")["projected"]["sources"];
    assert_eq!(
        sources[0]["serviceAccountToken"],
        json!({"audience": "graylane", "expirationSeconds": 3600, "path": "token"})
    );
    assert_eq!(
        sources[1]["downwardAPI"]["items"][0],
        json!({"path": "ca.pem", "fieldRef": {"fieldPath": "metadata.annotations['graylane.io/ca-bundle']"}})
    );
    assert!(volume(&p, "graylane-token").get("secret").is_none());
    assert_eq!(
        sidecar(&p)["volumeMounts"],
        json!([{"name": "graylane-token", "mountPath": "/var/run/secrets/graylane", "readOnly": true}])
    );
}

/// A plaintext control plane has no CA: the token alone, and a CA annotation the pod
/// brought is dropped rather than trusted. The Secret mode drops it too.
#[test]
fn without_a_ca_only_the_token_is_mounted_and_a_pod_supplied_ca_is_dropped() {
    let brought = json!({"name": "o", "labels": {"app": "orders"},
                         "annotations": {CA_BUNDLE_ANNOTATION: "x", "team": "a"}});
    let config = Config {
        credential: Credential::ServiceAccount { ca_bundle: None },
        ..Config::default()
    };
    let mut p = pod(brought.clone(), app(json!([])));
    inject_object(&mut p, None, &config).unwrap();
    let annotations = p["metadata"]["annotations"].as_object().unwrap();
    assert!(
        !annotations.contains_key(CA_BUNDLE_ANNOTATION),
        "{annotations:?}"
    );
    assert_eq!(annotations["team"], "a", "other annotations stay");
    assert_eq!(env(&p, "GRAYLANE_CA_BUNDLE"), Value::Null);
    let sources = volume(&p, "graylane-token")["projected"]["sources"]
        .as_array()
        .unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");

    let mut p = pod(brought, app(json!([])));
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert!(
        p["metadata"]["annotations"]
            .get(CA_BUNDLE_ANNOTATION)
            .is_none()
    );
    assert_eq!(
        volume(&p, "graylane-token")["secret"]["secretName"],
        "graylane-sidecar-token"
    );
}
