//! `graylane install`: the production manifests of `deploy/kubernetes/`, rendered with
//! freshly generated webhook certificates (a CA for the MutatingWebhookConfiguration,
//! a server certificate for the control plane's Service) and tokens, the way
//! `linkerd install` does: `graylane install | kubectl apply -f -`.

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::{CliError, output};

/// The template files, in apply order (the `resources` of kustomization.yaml).
const FILES: [&str; 6] = [
    "namespace.yaml",
    "etcd.yaml",
    "secrets.yaml",
    "control-plane.yaml",
    "webhook.yaml",
    "sample-app.yaml",
];

/// Their text, in the same order.
const TEMPLATES: [&str; 6] = [
    include_str!("../../../deploy/kubernetes/namespace.yaml"),
    include_str!("../../../deploy/kubernetes/etcd.yaml"),
    include_str!("../../../deploy/kubernetes/secrets.yaml"),
    include_str!("../../../deploy/kubernetes/control-plane.yaml"),
    include_str!("../../../deploy/kubernetes/webhook.yaml"),
    include_str!("../../../deploy/kubernetes/sample-app.yaml"),
];

/// The names the control plane's Service answers to (the webhook's TLS name).
const SERVICE_NAMES: [&str; 3] = [
    "graylane-control.graylane-system.svc",
    "graylane-control.graylane-system.svc.cluster.local",
    "graylane-control.graylane-system",
];

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The control-plane image.
    #[arg(long, default_value = concat!("ghcr.io/graylane/graylane-control:", env!("CARGO_PKG_VERSION")))]
    pub control_image: String,
    /// The sidecar image (also the demo app's).
    #[arg(long, default_value = concat!("ghcr.io/graylane/graylane:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// Leave out the sample app (namespace `shop`).
    #[arg(long)]
    pub no_sample_app: bool,
}

pub(crate) fn run(args: &InstallArgs) -> Result<(), CliError> {
    let certs =
        certificates().map_err(|e| CliError::refused(format!("generating certificates: {e}")))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (admin, sidecar) = (token(), token());
    let rendered: Vec<String> = FILES
        .iter()
        .zip(TEMPLATES)
        .filter(|(name, _)| !(args.no_sample_app && **name == "sample-app.yaml"))
        .map(|(_, t)| {
            t.replace("@CA_BUNDLE@", &b64(&certs.ca))
                .replace("@TLS_CRT@", &b64(&certs.cert))
                .replace("@TLS_KEY@", &b64(&certs.key))
                .replace("@ADMIN_TOKEN@", &admin)
                .replace("@SIDECAR_TOKEN@", &sidecar)
                .replace("@CONTROL_IMAGE@", &args.control_image)
                .replace("@SIDECAR_IMAGE@", &args.sidecar_image)
        })
        .collect();
    output::text(&rendered.join("---\n"));
    Ok(())
}

struct Certs {
    ca: String,
    cert: String,
    key: String,
}

/// A CA, and a server certificate for the control plane's Service signed by it.
fn certificates() -> Result<Certs, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "graylane webhook CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(
        SERVICE_NAMES
            .iter()
            .map(|s| (*s).to_string())
            .collect::<Vec<_>>(),
    )?;
    params
        .distinguished_name
        .push(DnType::CommonName, SERVICE_NAMES[0]);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Certs {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// 32 random hex characters.
fn token() -> String {
    (0..16)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubectl kustomize deploy/kubernetes` and `graylane install` render the same
    /// files in the same order.
    #[test]
    fn install_renders_what_kustomization_lists() {
        let kustomization = include_str!("../../../deploy/kubernetes/kustomization.yaml");
        let listed: Vec<&str> = kustomization
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .collect();
        assert_eq!(listed, FILES);
        for (name, text) in FILES.iter().zip(TEMPLATES) {
            let on_disk = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy/kubernetes")
                    .join(name),
            )
            .unwrap();
            assert_eq!(on_disk, text, "{name}");
        }
    }

    #[test]
    fn the_server_certificate_is_signed_by_the_generated_ca() {
        let certs = certificates().unwrap();
        assert!(certs.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key.contains("PRIVATE KEY"));
        assert_ne!(token(), token());
    }
}
