//! What injection adds to a pod besides the sidecar's settings: a native sidecar or
//! a plain container, the app's probes rewritten to the health port, and names it
//! must not collide with.

use serde_json::json;

use super::*;

#[test]
fn injecting_twice_changes_nothing() {
    let mut p = pod(json!({"labels": {"app": "orders"}}), app(json!([])));
    inject_object(&mut p, None, &Config::default()).unwrap();
    let once = p.clone();
    assert_eq!(
        inject_object(&mut p, None, &Config::default()).unwrap(),
        Outcome::Skipped(Skip::AlreadyInjected)
    );
    assert_eq!(p, once);
    // A pod that already has the container (injected by hand), as a container or a
    // native sidecar, or our init container, is left alone too: injected again, it
    // would hold two containers of one name.
    for spec in [
        json!({"containers": [{"name": "app"}, {"name": SIDECAR}]}),
        json!({"containers": [{"name": "app"}], "initContainers": [{"name": SIDECAR, "restartPolicy": "Always"}]}),
        json!({"containers": [{"name": "app"}], "initContainers": [{"name": INIT}]}),
    ] {
        let mut manual = pod(json!({"labels": {"app": "orders"}}), spec);
        let before = manual.clone();
        assert_eq!(
            inject_object(&mut manual, None, &Config::default()).unwrap(),
            Outcome::Skipped(Skip::AlreadyInjected)
        );
        assert_eq!(manual, before);
    }
}

/// A pod's own volume named as the one injection mounts would make two of one name:
/// refused, naming it.
#[test]
fn a_volume_of_the_injected_name_is_refused() {
    let mut spec = app(json!([]));
    spec["volumes"] = json!([{"name": "graylane-token", "emptyDir": {}}]);
    let mut p = pod(json!({"labels": {"app": "orders"}}), spec);
    let before = p.clone();
    let e = inject_object(&mut p, None, &Config::default()).unwrap_err();
    assert_eq!(e, InjectError::VolumeTaken("graylane-token"));
    assert_eq!(p, before, "nothing half-added");
}

/// On a cluster before Kubernetes 1.29 (no native sidecars), the pod asks for a plain
/// container; any other value is refused, naming the annotation.
#[test]
fn a_pod_may_ask_for_a_plain_sidecar_container() {
    let annotated = |value: &str| {
        pod(
            json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/native-sidecar": value}}),
            app(json!([])),
        )
    };
    let mut p = annotated("false");
    inject_object(&mut p, None, &Config::default()).unwrap();
    let names = |list: &str| -> Vec<String> {
        p["spec"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("containers"), ["app", SIDECAR]);
    assert_eq!(names("initContainers"), [INIT]);
    assert_eq!(sidecar(&p)["restartPolicy"], Value::Null);
    let e = inject_object(&mut annotated("no"), None, &Config::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("graylane.io/native-sidecar"), "{e}");
}

/// Under strict mTLS the kubelet's plaintext probe cannot reach the app's port: each
/// `httpGet` probe of an app container goes to the health port instead, and the
/// sidecar is told where it really goes. HTTPS probes, and ports no container names,
/// stay; `graylane.io/rewrite-probes: "false"` leaves them all.
#[test]
fn the_apps_http_probes_go_through_the_health_port() {
    let mut spec = app(json!([{"name": "http", "containerPort": 8080}]));
    let container = &mut spec["containers"][0];
    container["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": "http",
        "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 3});
    container["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": 8080}});
    container["startupProbe"] = json!({"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}});
    let original = spec.clone();
    let mut p = pod(json!({"labels": {"app": "orders"}}), spec);
    inject_object(&mut p, None, &Config::default()).unwrap();
    let app = &p["spec"]["containers"][0];
    assert_eq!(
        app["livenessProbe"],
        json!({"httpGet": {"path": "/app-health/app/livez", "port": 15021}, "periodSeconds": 3}),
        "the probe's timing stays"
    );
    assert_eq!(
        app["readinessProbe"]["httpGet"]["path"],
        "/app-health/app/readyz"
    );
    assert_eq!(
        app["startupProbe"], original["containers"][0]["startupProbe"],
        "an HTTPS probe stays as it is"
    );
    let probes: Value =
        serde_json::from_str(env(&p, "GRAYLANE_APP_PROBES")["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probes,
        json!({
            "/app-health/app/livez": {"port": 8080, "path": "/healthz",
                "headers": [{"name": "X-Probe", "value": "1"}]},
            "/app-health/app/readyz": {"port": 8080, "path": "/ready"},
        })
    );
    // A path without its `/` gets one (as the kubelet's URL does); a probe already
    // on the health port (a re-injected manifest), or with a header no request could
    // carry, stays as it is; a `host` goes along.
    let mut spec = super::app(json!([{"containerPort": 8080}]));
    let container = &mut spec["containers"][0];
    container["livenessProbe"] =
        json!({"httpGet": {"path": "healthz", "port": 8080, "host": "10.0.0.9"}});
    container["readinessProbe"] =
        json!({"httpGet": {"path": "/app-health/app/readyz", "port": 15021}});
    container["startupProbe"] = json!({"httpGet": {"path": "/", "port": 8080,
        "httpHeaders": [{"name": "X-Bad", "value": "a\u{1}b"}]}});
    let before = spec.clone();
    let mut p = pod(json!({"labels": {"app": "orders"}}), spec);
    inject_object(&mut p, None, &Config::default()).unwrap();
    let probes: Value =
        serde_json::from_str(env(&p, "GRAYLANE_APP_PROBES")["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probes,
        json!({"/app-health/app/livez": {"port": 8080, "path": "/healthz", "host": "10.0.0.9"}})
    );
    for kept in ["readinessProbe", "startupProbe"] {
        assert_eq!(
            p["spec"]["containers"][0][kept], before["containers"][0][kept],
            "{kept}"
        );
    }
    let mut kept = pod(
        json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/rewrite-probes": "false"}}),
        original.clone(),
    );
    inject_object(&mut kept, None, &Config::default()).unwrap();
    assert_eq!(
        kept["spec"]["containers"][0]["livenessProbe"],
        original["containers"][0]["livenessProbe"]
    );
    assert_eq!(env(&kept, "GRAYLANE_APP_PROBES"), Value::Null);
}
