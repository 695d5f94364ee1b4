//! Which endpoints an injected sidecar receives: only those of the services its app
//! calls (`scoped`, the default for injected pods: a pod in a 1,000-service mesh then
//! holds a few services' endpoints, not all of them), or every endpoint (`all`, what
//! a sidecar started by hand gets). `graylane.io/endpoint-scope: all|scoped` and
//! `graylane.io/calls: svc,svc.namespace` override; both are checked here, so a typo
//! is refused at admission rather than crash-looping the pod.

use graylane_routing::ServiceName;
use serde_json::{Value, json};

use super::InjectError;

const SCOPE: &str = "graylane.io/endpoint-scope";
const CALLS: &str = "graylane.io/calls";

/// The env of the sidecar's endpoint scope, from the pod's annotations (`text`).
pub(super) fn env<'a>(text: impl Fn(&str) -> Option<&'a str>) -> Result<Vec<Value>, InjectError> {
    let scope = text(SCOPE).unwrap_or("scoped");
    if !matches!(scope, "all" | "scoped") {
        return Err(InjectError::BadAnnotation {
            annotation: SCOPE,
            reason: format!("{scope:?}: expected all or scoped"),
        });
    }
    let mut env = vec![json!({"name": "GRAYLANE_ENDPOINT_SCOPE", "value": scope})];
    let Some(calls) = text(CALLS).filter(|c| !c.is_empty()) else {
        return Ok(env);
    };
    if scope == "all" {
        return Err(InjectError::BadAnnotation {
            annotation: CALLS,
            reason: format!("needs {SCOPE}: scoped (with all, every endpoint is sent)"),
        });
    }
    for call in calls.split(',').map(str::trim) {
        ServiceName::new(call)
            .and_then(|name| name.check_reference())
            .map_err(|e| InjectError::BadAnnotation {
                annotation: CALLS,
                reason: format!("{call:?}: {e}"),
            })?;
    }
    env.push(json!({"name": "GRAYLANE_CALLS", "value": calls}));
    Ok(env)
}
