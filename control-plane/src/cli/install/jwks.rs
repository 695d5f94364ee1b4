//! `graylane install --k8s-jwks FILE`: sidecars authenticate with projected
//! service-account tokens. The cluster's issuer keys go into a ConfigMap (public keys)
//! mounted into graylane-control, which runs with `--k8s-jwks` and injects projected
//! tokens (`--inject-projected-token`); no sidecar token exists, so no application
//! namespace needs a Secret.
//!
//! The control plane's template stays the one people read (`control-plane.yaml`); the
//! few lines this mode adds go in after lines of it named here, which
//! `every_anchor_is_one_line_of_the_template` holds to exactly one match each.

use std::path::Path;

use super::super::CliError;
use crate::api::Jwks;

/// The ConfigMap with the keys; rendered just before the control plane.
pub(super) const CONFIG_MAP: &str = r#"# The cluster's service-account issuer keys (`kubectl get --raw /openid/v1/jwks`):
# graylane-control checks the sidecars' projected tokens with them. Public keys; when
# the cluster rotates its issuer key, update this ConfigMap (rerun install).
apiVersion: v1
kind: ConfigMap
metadata:
  name: graylane-k8s-jwks
  namespace: graylane-system
  labels: {app.kubernetes.io/part-of: graylane}
data:
  jwks.json: "@K8S_JWKS@"
"#;

/// (a whole line of `control-plane.yaml`, the lines to add after it).
const CONTROL_PLANE_LINES: [(&str, &str); 3] = [
    (
        "            - --tls-key=/etc/graylane/webhook/tls.key\n",
        "            # Sidecars prove their service account with a projected token that\n\
         \x20           # injection mounts, checked with the cluster's issuer keys.\n\
         \x20           - --k8s-jwks=/etc/graylane/jwks/jwks.json\n\
         \x20           - --inject-projected-token\n",
    ),
    (
        "            - {name: etcd-client, mountPath: /etc/graylane/etcd, readOnly: true}\n",
        "            - {name: k8s-jwks, mountPath: /etc/graylane/jwks, readOnly: true}\n",
    ),
    (
        "          secret: {secretName: graylane-etcd-client, defaultMode: 288}\n",
        "        - name: k8s-jwks\n          configMap: {name: graylane-k8s-jwks}\n",
    ),
];

/// The file's text, once it parsed as a JWKS with at least one usable key (the
/// control plane's own parser, so install refuses what graylane-control would).
pub(super) fn read(path: &Path) -> Result<String, CliError> {
    let refuse = |why: String| CliError::usage(format!("--k8s-jwks {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    Jwks::parse(&text).map_err(|e| refuse(format!("not a JWKS with keys: {e}")))?;
    Ok(text)
}

/// `control_plane` (the rendered `control-plane.yaml`) with the `--k8s-jwks` flags
/// and the ConfigMap's volume.
pub(super) fn wire(control_plane: &str) -> String {
    CONTROL_PLANE_LINES
        .iter()
        .fold(control_plane.to_string(), |text, (after, lines)| {
            text.replacen(after, &format!("{after}{lines}"), 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_anchor_is_one_line_of_the_template() {
        let template = include_str!("../../../../deploy/kubernetes/control-plane.yaml");
        for (after, _) in CONTROL_PLANE_LINES {
            assert_eq!(template.matches(after).count(), 1, "{after:?}");
            assert!(template.contains(&format!("\n{after}")), "{after:?}");
        }
        let wired = wire(template);
        assert!(wired.contains("- --k8s-jwks=/etc/graylane/jwks/jwks.json\n"));
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&wired).unwrap();
        let spec = &docs[1]["spec"]["template"]["spec"];
        let args = spec["containers"][0]["args"].as_array().unwrap();
        assert!(args.iter().any(|a| a == "--inject-projected-token"));
        let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "k8s-jwks"));
        let volumes = spec["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["configMap"]["name"] == "graylane-k8s-jwks")
        );
    }
}
