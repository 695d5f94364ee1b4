//! The app's HTTP probes, rewritten to the sidecar's health port. Under `mtls: strict`
//! the inbound sidecar refuses the kubelet's plaintext probe on the app's port, so
//! every probed pod would be restarted; as Istio does, each `httpGet` probe of an app
//! container goes to `:15021/app-health/<container>/<probe>` instead, and the sidecar
//! makes the same request to the app (`GRAYLANE_APP_PROBES`): at the probe's `host`,
//! else the pod's IP, as the kubelet would. HTTPS probes, probes on a named port no
//! container declares or on the health port itself, and probes whose path or headers
//! no HTTP request could carry stay as they are (the sidecar would refuse them, and a
//! native sidecar that does not start holds the whole pod).
//! `graylane.io/rewrite-probes: "false"` leaves them all.

use serde_json::{Map, Value, json};

use super::{HEALTH_PORT, InjectError};

const ANNOTATION: &str = "graylane.io/rewrite-probes";
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// Rewrites the probes of `spec`'s containers; returns the sidecar's env entry saying
/// where each rewritten path goes, if any was rewritten.
pub(super) fn rewrite(
    spec: &mut Map<String, Value>,
    annotation: Option<&str>,
) -> Result<Option<Value>, InjectError> {
    match annotation {
        None | Some("true") => {}
        Some("false") => return Ok(None),
        Some(other) => {
            return Err(InjectError::BadAnnotation {
                annotation: ANNOTATION,
                reason: format!("{other:?}: \"true\" (the default) or \"false\""),
            });
        }
    }
    let mut targets = Map::new();
    let containers = spec.get_mut("containers").and_then(Value::as_array_mut);
    for container in containers.into_iter().flatten() {
        let name = container["name"].as_str().unwrap_or_default().to_owned();
        let ports = container["ports"].clone();
        for (field, kind) in PROBES {
            let Some(get) = container.get_mut(field).and_then(|p| p.get_mut("httpGet")) else {
                continue;
            };
            let https = get["scheme"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"));
            let Some(port) =
                port_of(&get["port"], &ports).filter(|p| !https && *p != u64::from(HEALTH_PORT))
            else {
                continue;
            };
            let Some(target) = target(get, port) else {
                continue;
            };
            let path = format!("/app-health/{name}/{kind}");
            targets.insert(path.clone(), target);
            *get = json!({"path": path, "port": HEALTH_PORT});
        }
    }
    if targets.is_empty() {
        return Ok(None);
    }
    let value = Value::Object(targets).to_string();
    Ok(Some(json!({"name": "GRAYLANE_APP_PROBES", "value": value})))
}

/// Where a probe's request goes, as the sidecar reads it: `None` for one no HTTP
/// request could carry. A path without its leading `/` gets one, as the kubelet's URL
/// does.
fn target(get: &Value, port: u64) -> Option<Value> {
    use axum::http::{HeaderName, HeaderValue, uri::PathAndQuery};
    let path = get["path"].as_str().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.len() > 8192 || path.parse::<PathAndQuery>().is_err() {
        return None;
    }
    let mut target = json!({"port": port, "path": path});
    if let Some(host) = get["host"].as_str().filter(|h| !h.is_empty()) {
        target["host"] = json!(host);
    }
    if let Some(headers) = get.get("httpHeaders").and_then(Value::as_array) {
        let valid = headers.iter().all(|h| {
            let name = h["name"].as_str().map(HeaderName::try_from);
            let value = h["value"].as_str().map(HeaderValue::try_from);
            matches!((name, value), (Some(Ok(_)), Some(Ok(_))))
        });
        if !valid {
            return None;
        }
        target["headers"] = Value::Array(headers.clone());
    }
    Some(target)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port_of(port: &Value, ports: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    if let Some(n) = port.as_str().and_then(|s| s.parse().ok()) {
        return Some(n);
    }
    let name = port.as_str()?;
    ports.as_array()?.iter().find(|p| p["name"] == name)?["containerPort"].as_u64()
}
