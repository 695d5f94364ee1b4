//! Whether a pod gets a sidecar: the one decision `graylane inject` and the admission
//! webhook share, so a pod skipped by one is skipped by the other.

use serde_json::{Map, Value};

/// The label that opts a pod out (`graylane.io/inject: disabled`); `enabled` on a pod
/// or its namespace is what makes the webhook see the pod at all (its selectors).
pub const INJECT_LABEL: &str = "graylane.io/inject";
/// Set on an injected pod, so a second injection changes nothing.
pub const STATUS_ANNOTATION: &str = "graylane.io/status";
/// Namespaces whose pods never get a sidecar: Kubernetes' own, and graylane's.
pub const NEVER: [&str; 2] = ["kube-system", "graylane-system"];

/// What to do with a pod, and why when nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(Skip),
}

/// Why a document or pod is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("not a Pod or a workload with a pod template")]
    NotAWorkload,
    #[error("namespace {0} is never injected")]
    SystemNamespace(String),
    #[error("labelled {INJECT_LABEL}=disabled")]
    OptedOut,
    #[error("already injected")]
    AlreadyInjected,
    #[error("hostNetwork: its traffic rules would be the node's")]
    HostNetwork,
}

/// Decides for a pod that will run in `namespace` (`None`: not known, as for a
/// manifest without one) with these `labels` and `annotations` (its own, or its pod
/// template's), on the node's network or not. The first reason to skip wins, in the
/// order of [`Skip`].
pub fn decide(
    namespace: Option<&str>,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
    host_network: bool,
) -> Decision {
    if let Some(ns) = namespace.filter(|ns| NEVER.contains(ns)) {
        return Decision::Skip(Skip::SystemNamespace(ns.to_string()));
    }
    // Kubernetes label values are strings; anything else cannot be `disabled`.
    if labels.get(INJECT_LABEL).and_then(Value::as_str) == Some("disabled") {
        return Decision::Skip(Skip::OptedOut);
    }
    if annotations.get(STATUS_ANNOTATION).and_then(Value::as_str) == Some("injected") {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    if host_network {
        return Decision::Skip(Skip::HostNetwork);
    }
    Decision::Inject
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn each_reason_to_skip_is_named() {
        let none = Map::new();
        assert_eq!(decide(Some("shop"), &none, &none, false), Decision::Inject);
        assert_eq!(decide(None, &none, &none, false), Decision::Inject);
        assert_eq!(
            decide(Some("kube-system"), &none, &none, false),
            Decision::Skip(Skip::SystemNamespace("kube-system".into()))
        );
        let opted_out = map(json!({INJECT_LABEL: "disabled"}));
        assert_eq!(
            decide(Some("shop"), &opted_out, &none, false),
            Decision::Skip(Skip::OptedOut)
        );
        let enabled = map(json!({INJECT_LABEL: "enabled"}));
        assert_eq!(
            decide(Some("shop"), &enabled, &none, false),
            Decision::Inject
        );
        let injected = map(json!({STATUS_ANNOTATION: "injected"}));
        assert_eq!(
            decide(None, &none, &injected, false),
            Decision::Skip(Skip::AlreadyInjected)
        );
        assert_eq!(
            decide(Some("shop"), &none, &none, true),
            Decision::Skip(Skip::HostNetwork)
        );
        assert_eq!(
            Skip::OptedOut.to_string(),
            "labelled graylane.io/inject=disabled"
        );
    }
}
