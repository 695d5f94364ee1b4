//! Sidecar injection: one function that turns a pod (its metadata and spec) into an
//! injected one. `graylane inject -f` (offline) and the admission webhook both call it.
//!
//! It adds:
//! - **`graylane-sidecar`** (UID 1337, non-root, read-only root fs), configured through
//!   env:
//!   - the service, version and labels from the pod's labels;
//!   - the pod IP as advertise address (Downward API) and the pod name as instance id;
//!   - the control plane, and its credential ([`Credential`]): a token and the mesh
//!     CA from a Secret, or a projected service-account token;
//!   - the app port from the pod's containers.
//!
//!   It also gets resource requests. Its admin listener (`/config`: every rule and
//!   endpoint of the mesh) stays on loopback; the kubelet's probes go to a health
//!   listener on 15021 that answers `/ready` and `/live` only (Istio's port).
//! - **`graylane-init`**: `init-iptables` with NET_ADMIN. It comes last among the init
//!   containers, so the pod's own init containers reach the network before interception
//!   begins.
//!
//! Pod annotations override the defaults: `graylane.io/sidecar-image`,
//! `graylane.io/service`, `graylane.io/app-port`, `graylane.io/exclude-inbound-ports`,
//! `graylane.io/exclude-outbound-ports`, `graylane.io/exclude-outbound-cidrs`,
//! `graylane.io/endpoint-scope` and `graylane.io/calls` (see `scope`). Which
//! pods are injected at all is [`decide`]d in one place.
//!
//! Plain `serde_json::Value`s: the few fields we touch do not justify k8s-openapi's
//! build cost.

use serde_json::{Map, Value, json};

mod credential;
mod decide;
mod probes;
mod scope;

pub use self::credential::{CA_BUNDLE_ANNOTATION, Credential, TOKEN_AUDIENCE, TOKEN_SECONDS};
pub use self::decide::{Decision, INJECT_LABEL, NEVER, STATUS_ANNOTATION, Skip, decide};

pub const SIDECAR: &str = "graylane-sidecar";
pub const INIT: &str = "graylane-init";
pub const PROXY_UID: u32 = 1337;
const INBOUND_PORT: u16 = 15006;
/// On loopback only: `/config` shows the whole mesh, not for the pod network's eyes.
const ADMIN_PORT: u16 = 15000;
/// `/ready` and `/live` for the kubelet, on the pod IP (Istio's 15021).
const HEALTH_PORT: u16 = 15021;

/// Cluster-wide injection settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The image of both injected containers.
    pub image: String,
    /// The control plane's URL(s), as sidecars reach them.
    pub control_plane: String,
    /// How sidecars authenticate and which CA they trust for the control plane.
    pub credential: Credential,
}

impl Config {
    /// What every injected pod would be given, checked once at start (the flags'
    /// names in the message): a typo here would crash-loop every pod admitted.
    pub fn check(&self, image_flag: &str, control_plane_flag: &str) -> Result<(), String> {
        if self.image.trim().is_empty() {
            return Err(format!("{image_flag}: empty: name the sidecar image"));
        }
        graylane_proto::control_plane_urls(&self.control_plane)
            .map_err(|e| format!("{control_plane_flag} {e}"))?;
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            image: format!("ghcr.io/graylane/graylane:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "https://graylane-control.graylane-system.svc:15010".into(),
            credential: Credential::Secret("graylane-sidecar-token".into()),
        }
    }
}

/// What `inject` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Nothing changed, for this reason.
    Skipped(Skip),
}

/// Why a pod cannot be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("{0}: not an object")]
    NotAnObject(&'static str),
    #[error(
        "no service name: set label app.kubernetes.io/name or app, or annotation graylane.io/service"
    )]
    NoService,
    #[error("annotation {annotation}: {reason}")]
    BadAnnotation {
        annotation: &'static str,
        reason: String,
    },
    /// The service name taken from a label would stop the sidecar.
    #[error("label {label}: {reason}; set annotation graylane.io/service to a valid name")]
    BadServiceLabel { label: &'static str, reason: String },
    /// A container of the pod listens on a port the sidecar binds in the same network
    /// namespace: one of the two could not start.
    #[error(
        "container port {0} is one of the sidecar's ports (15000, 15001, 15006, 15021); move the app off it"
    )]
    PortTaken(u16),
    /// The pod already has a volume of the name the sidecar's credential mounts.
    #[error("the pod already has a volume named {0:?}, which injection adds; rename it")]
    VolumeTaken(&'static str),
}

/// The ports the injected sidecar binds in the pod: admin, outbound, inbound, health.
const SIDECAR_PORTS: [u16; 4] = [ADMIN_PORT, 15001, INBOUND_PORT, HEALTH_PORT];

/// Injects the pod whose `metadata` and `spec` are given (as in a Pod, or a template),
/// to run in `namespace`, unless [`decide`] says otherwise.
pub fn inject(
    metadata: &mut Value,
    spec: &mut Value,
    namespace: Option<&str>,
    config: &Config,
) -> Result<Outcome, InjectError> {
    if !metadata.is_object() {
        *metadata = json!({});
    }
    let meta = metadata
        .as_object_mut()
        .ok_or(InjectError::NotAnObject("metadata"))?;
    let spec_obj = spec
        .as_object_mut()
        .ok_or(InjectError::NotAnObject("spec"))?;
    let annotations = meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let labels = meta
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // A host-network pod's NAT rules are the node's: redirecting them would send the
    // kubelet's, ssh's and every NodePort's traffic to a proxy (Istio and Linkerd
    // skip such pods too).
    let host_network = spec_obj.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    if let Decision::Skip(why) = decide(namespace, &labels, &annotations, host_network) {
        return Ok(Outcome::Skipped(why));
    }
    // A sidecar added by hand, without the status annotation, is not added twice:
    // ours by name, as a container or a native sidecar, or our init container.
    let has_sidecar = ["containers", "initContainers"].into_iter().any(|list| {
        spec_obj
            .get(list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == SIDECAR || c["name"] == INIT))
    });
    if has_sidecar {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    let text = |key: &str| annotations.get(key).and_then(Value::as_str).map(str::trim);
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    // Checked as the sidecar checks its flags, so a pod admitted is a pod whose
    // sidecar starts (not one that crash-loops on `--service Orders`).
    let service = match text("graylane.io/service") {
        Some(s) => graylane_routing::Name::new(s).map_err(|reason| InjectError::BadAnnotation {
            annotation: "graylane.io/service",
            reason,
        })?,
        None => {
            let (label, value) = [
                ("app.kubernetes.io/name", label("app.kubernetes.io/name")),
                ("app", label("app")),
            ]
            .into_iter()
            .find_map(|(k, v)| Some((k, v?)))
            .ok_or(InjectError::NoService)?;
            graylane_routing::Name::new(value)
                .map_err(|reason| InjectError::BadServiceLabel { label, reason })?
        }
    }
    .as_str()
    .to_string();
    let version = label("version").or_else(|| label("app.kubernetes.io/version"));
    if let Some(port) = container_ports(spec_obj).find(|p| SIDECAR_PORTS.contains(p)) {
        return Err(InjectError::PortTaken(port));
    }
    let volumes = spec_obj.get("volumes").and_then(Value::as_array);
    if volumes.is_some_and(|vs| vs.iter().any(|v| v["name"] == credential::VOLUME)) {
        return Err(InjectError::VolumeTaken(credential::VOLUME));
    }
    let app_port = match text("graylane.io/app-port") {
        Some(p) => p
            .parse::<u16>()
            .map_err(|e| format!("{p:?}: {e}"))
            .and_then(|port| match port {
                0 => Err("0 is no port".to_owned()),
                p if SIDECAR_PORTS.contains(&p) => Err(format!(
                    "{p} is one of the sidecar's ports (15000, 15001, 15006, 15021): the sidecar would forward to itself"
                )),
                p => Ok(p),
            })
            .map_err(|reason| InjectError::BadAnnotation {
                annotation: "graylane.io/app-port",
                reason,
            })?,
        None => app_port(spec_obj).unwrap_or(8080),
    };
    let image = match text("graylane.io/sidecar-image") {
        Some("") => {
            return Err(InjectError::BadAnnotation {
                annotation: "graylane.io/sidecar-image",
                reason: "empty: name an image, or leave the annotation out".into(),
            });
        }
        Some(image) => image,
        None => &config.image,
    }
    .to_string();

    // The pod's labels an instance label can be (the rules' label rule, as the
    // sidecar's `--labels` checks it); others (`app: MyApp`, an empty value) no
    // selector could name, and would stop the sidecar: left out.
    let instance_label = |k: &str, v: &str| {
        graylane_routing::Labels::new([(k.to_owned(), v.to_owned())].into()).is_ok()
    };
    let mut graylane_labels: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !k.contains('/'))
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
        .filter(|(k, v)| instance_label(k, v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if let Some(v) = version
        && label("version").is_none()
        && instance_label("version", v)
    {
        graylane_labels.push(format!("version={v}"));
    }
    let mut env = vec![
        json!({"name": "GRAYLANE_SERVICE", "value": service}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "GRAYLANE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        // The instance id is unique across the mesh, and a credential may hold only
        // its own (`Hub::register`); pod names are unique within a namespace only
        // (StatefulSets name theirs `db-0` in every namespace). `name.namespace`, as
        // Istio names its proxies. Kubernetes expands `$(VAR)` from the variables
        // listed before it.
        json!({"name": "GRAYLANE_INSTANCE_ID", "value": "$(POD_NAME).$(GRAYLANE_NAMESPACE)"}),
        json!({"name": "GRAYLANE_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}),
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "GRAYLANE_ADVERTISE_ADDR", "value": format!("$(POD_IP):{INBOUND_PORT}")}),
        json!({"name": "GRAYLANE_LABELS", "value": graylane_labels.join(",")}),
        json!({"name": "GRAYLANE_APP_ADDR", "value": format!("127.0.0.1:{app_port}")}),
        json!({"name": "GRAYLANE_CONTROL_PLANE", "value": config.control_plane}),
        json!({"name": "GRAYLANE_INBOUND_ADDR", "value": format!("0.0.0.0:{INBOUND_PORT}")}),
        json!({"name": "GRAYLANE_ADMIN_ADDR", "value": format!("127.0.0.1:{ADMIN_PORT}")}),
        json!({"name": "GRAYLANE_HEALTH_ADDR", "value": format!("0.0.0.0:{HEALTH_PORT}")}),
    ];
    env.extend(scope::env(text)?);
    env.extend(probes::rewrite(
        spec_obj,
        text("graylane.io/rewrite-probes"),
    )?);
    let mut mounts = Vec::new();
    let mut new_annotations = annotations.clone();
    config
        .credential
        .apply(&mut new_annotations, spec_obj, &mut env, &mut mounts);
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": HEALTH_PORT}, "periodSeconds": 5});
    let sidecar = json!({
        "name": SIDECAR,
        "image": image,
        "env": env,
        "ports": [
            {"name": "graylane-in", "containerPort": INBOUND_PORT},
            {"name": "graylane-health", "containerPort": HEALTH_PORT},
        ],
        "readinessProbe": probe("/ready"),
        "livenessProbe": probe("/live"),
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": {
            "runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    });
    let mut init_args = vec![
        "init-iptables".to_string(),
        "--proxy-uid".into(),
        PROXY_UID.to_string(),
    ];
    for (annotation, flag) in [
        (
            "graylane.io/exclude-inbound-ports",
            "--exclude-inbound-ports",
        ),
        (
            "graylane.io/exclude-outbound-ports",
            "--exclude-outbound-ports",
        ),
        (
            "graylane.io/exclude-outbound-cidrs",
            "--exclude-outbound-cidrs",
        ),
    ] {
        let mut value = text(annotation).unwrap_or_default().to_string();
        if annotation == "graylane.io/exclude-inbound-ports" {
            // The health port stays reachable for the kubelet's probes; the admin
            // port needs no exemption, as nothing but loopback reaches it.
            value = [HEALTH_PORT.to_string(), value]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(",");
        }
        if value.is_empty() {
            continue;
        }
        init_args.extend([flag.to_string(), check_list(annotation, &value)?]);
    }
    let init = json!({
        "name": INIT,
        "image": image,
        "command": ["graylane-sidecar"],
        "args": init_args,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    });
    push(spec_obj, "initContainers", init);
    add_sidecar(spec_obj, sidecar, text("graylane.io/native-sidecar"))?;
    new_annotations.insert(STATUS_ANNOTATION.into(), json!("injected"));
    meta.insert("annotations".into(), Value::Object(new_annotations));
    Ok(Outcome::Injected)
}

/// Adds the sidecar as a native sidecar (Kubernetes 1.29+: an init container that
/// keeps running, `restartPolicy: Always`), after the init container, unless the pod
/// says `graylane.io/native-sidecar: "false"` (an older cluster). As a native sidecar
/// it starts, and is ready, before the app (its startup probe: the app's first calls
/// find it routing, rules in hand), and it stops after the app: a Job or CronJob pod
/// completes when its job does, where an ordinary sidecar container kept it running
/// for ever.
fn add_sidecar(
    spec: &mut Map<String, Value>,
    mut sidecar: Value,
    native: Option<&str>,
) -> Result<(), InjectError> {
    let native = match native {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(InjectError::BadAnnotation {
                annotation: "graylane.io/native-sidecar",
                reason: format!("{other:?}: \"true\" (the default) or \"false\""),
            });
        }
    };
    if !native {
        push(spec, "containers", sidecar);
        return Ok(());
    }
    sidecar["restartPolicy"] = json!("Always");
    // Up to 10 minutes for its first rules (the control plane's own restart).
    sidecar["startupProbe"] = json!({
        "httpGet": {"path": "/ready", "port": HEALTH_PORT},
        "periodSeconds": 1,
        "failureThreshold": 600,
    });
    push(spec, "initContainers", sidecar);
    Ok(())
}

/// Every `containerPort` of the pod's containers.
fn container_ports(spec: &Map<String, Value>) -> impl Iterator<Item = u16> + '_ {
    spec.get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| u16::try_from(p["containerPort"].as_u64()?).ok())
}

/// The app's port: a container port named `http`, else the first container port.
fn app_port(spec: &Map<String, Value>) -> Option<u16> {
    let ports: Vec<&Value> = spec
        .get("containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let port = ports
        .iter()
        .find(|p| p["name"] == "http")
        .or_else(|| ports.first())?;
    u16::try_from(port["containerPort"].as_u64()?).ok()
}

/// Appends `item` to the array `key` of `obj`, creating it when missing.
fn push(obj: &mut Map<String, Value>, key: &str, item: Value) {
    let list = obj.entry(key).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        a.push(item);
    }
}

/// A comma list of ports or CIDRs, checked now so a typo fails the injection, not the
/// pod's init container, and written as init-iptables reads it (`"9090, 9091"` has a
/// space its flag refuses).
fn check_list(annotation: &'static str, value: &str) -> Result<String, InjectError> {
    let cidrs = annotation.ends_with("cidrs");
    let mut items = Vec::new();
    for item in value.split(',').map(str::trim) {
        let bad = |reason: String| InjectError::BadAnnotation { annotation, reason };
        if cidrs {
            match item.parse::<ipnet::IpNet>() {
                Ok(ipnet::IpNet::V4(_)) => {}
                Ok(ipnet::IpNet::V6(_)) => {
                    return Err(bad(format!(
                        "{item:?} is an IPv6 network: interception is IPv4 (init-iptables), so there is nothing to exclude"
                    )));
                }
                Err(_) => return Err(bad(format!("{item:?} is not a CIDR"))),
            }
        } else if !item.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(bad(format!("{item:?} is not a port")));
        }
        items.push(item);
    }
    Ok(items.join(","))
}

/// Where a workload keeps its pod template: `(metadata, spec)` paths. `None` for kinds
/// that have no pods (passed through untouched).
pub fn pod_paths(kind: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match kind {
        "Pod" => Some((&["metadata"], &["spec"])),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some((
            &["spec", "template", "metadata"],
            &["spec", "template", "spec"],
        )),
        "CronJob" => Some((
            &["spec", "jobTemplate", "spec", "template", "metadata"],
            &["spec", "jobTemplate", "spec", "template", "spec"],
        )),
        _ => None,
    }
}

/// Injects the pod template of a whole object (Pod, Deployment, ...); other kinds are
/// `Skipped`. `namespace`: where it will run (the webhook's request), else the
/// object's own `metadata.namespace`.
pub fn inject_object(
    object: &mut Value,
    namespace: Option<&str>,
    config: &Config,
) -> Result<Outcome, InjectError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some((meta_path, spec_path)) = pod_paths(kind) else {
        return Ok(Outcome::Skipped(Skip::NotAWorkload));
    };
    let namespace = namespace
        .or_else(|| object["metadata"]["namespace"].as_str())
        .map(str::to_string);
    let mut metadata = take(object, meta_path);
    let mut spec = take(object, spec_path);
    let result = inject(&mut metadata, &mut spec, namespace.as_deref(), config);
    put(object, meta_path, metadata);
    put(object, spec_path, spec);
    result
}

/// The value at `path`, taken out (`Null` when missing); never panics on a document
/// whose fields have the wrong type.
fn take(object: &mut Value, path: &[&str]) -> Value {
    let mut v = object;
    for key in path {
        match v.get_mut(*key) {
            Some(next) => v = next,
            None => return Value::Null,
        }
    }
    v.take()
}

/// Puts back what `take` took: objects missing on the way are created, a field of
/// another type on the way (whose value `take` saw as `Null`) is left as it was.
fn put(object: &mut Value, path: &[&str], value: Value) {
    let mut v = object;
    for key in path {
        if v.is_null() {
            *v = Value::Object(Map::new());
        }
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        v = obj.entry(*key).or_insert(Value::Null);
    }
    *v = value;
}

#[cfg(test)]
mod tests;
