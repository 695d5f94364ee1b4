//! Which port is the app's, and the ports the sidecar keeps for itself.

use serde_json::json;

use super::*;

#[test]
fn a_port_named_http_is_the_app_port() {
    let mut p = pod(
        json!({"labels": {"app.kubernetes.io/name": "orders", "app.kubernetes.io/version": "v3"}}),
        app(
            json!([{"name": "metrics", "containerPort": 9090}, {"name": "http", "containerPort": 8081}]),
        ),
    );
    inject_object(&mut p, None, &Config::default()).unwrap();
    assert_eq!(env(&p, "GRAYLANE_SERVICE")["value"], "orders");
    assert_eq!(env(&p, "GRAYLANE_APP_ADDR")["value"], "127.0.0.1:8081");
    assert_eq!(env(&p, "GRAYLANE_LABELS")["value"], "version=v3");
}

/// A port the sidecar binds in the pod, as the app's port or any container's, would
/// make the sidecar forward to itself or one of the two fail to start: refused at
/// admission, naming the port.
#[test]
fn a_port_of_the_sidecar_s_is_refused_as_the_app_s() {
    for port in ["15006", "15000", "15001", "15021", "0"] {
        let mut p = pod(
            json!({"labels": {"app": "orders"}, "annotations": {"graylane.io/app-port": port}}),
            app(json!([{"containerPort": 8080}])),
        );
        let e = inject_object(&mut p, None, &Config::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("annotation graylane.io/app-port: "),
            "{port}: {text}"
        );
    }
    for port in [15006, 15021] {
        let mut p = pod(
            json!({"labels": {"app": "orders"}}),
            app(json!([{"containerPort": 8080}, {"containerPort": port}])),
        );
        let e = inject_object(&mut p, None, &Config::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("container port {port} is one of the sidecar's")),
            "{e}"
        );
    }
}
