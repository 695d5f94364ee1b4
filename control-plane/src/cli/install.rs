//! `graylane install`: the production manifests of `deploy/kubernetes/`, rendered with
//! freshly generated webhook certificates (a CA for the MutatingWebhookConfiguration,
//! a server certificate for the control plane's Service), a mesh CA (the control
//! plane's `--ca-cert/--ca-key`, from which it issues its own gRPC certificate; the
//! sidecars get its certificate only), etcd's client TLS ([`etcd`]) and tokens, the
//! way `linkerd install` does: `graylane install | kubectl apply -f -`. With
//! `--k8s-jwks`, sidecars use projected service-account tokens instead of a shared
//! token ([`jwks`]).
//!
//! Values go into the templates as the *contents* of double-quoted YAML scalars,
//! escaped so that no value can end its scalar (see [`quoted`]), rather than by parsing
//! and re-serialising every object: the output keeps the templates' comments and layout,
//! which is what people read before they apply it, and a placeholder inside a string
//! (`--inject-image=@SIDECAR_IMAGE@`) needs no special case.

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use super::{CliError, output};
use crate::ca;

mod etcd;
mod jwks;

/// The template files, in apply order (the `resources` of kustomization.yaml).
const FILES: [&str; 7] = [
    "namespace.yaml",
    "network-policy.yaml",
    "secrets.yaml",
    "etcd.yaml",
    "control-plane.yaml",
    "webhook.yaml",
    "sample-app.yaml",
];

/// Their text, in the same order. Every `@PLACEHOLDER@` sits inside a double-quoted
/// scalar; `every_placeholder_is_inside_a_double_quoted_scalar` holds them to that.
const TEMPLATES: [&str; 7] = [
    include_str!("../../../deploy/kubernetes/namespace.yaml"),
    include_str!("../../../deploy/kubernetes/network-policy.yaml"),
    include_str!("../../../deploy/kubernetes/secrets.yaml"),
    include_str!("../../../deploy/kubernetes/etcd.yaml"),
    include_str!("../../../deploy/kubernetes/control-plane.yaml"),
    include_str!("../../../deploy/kubernetes/webhook.yaml"),
    include_str!("../../../deploy/kubernetes/sample-app.yaml"),
];

/// The sidecars' token Secret, rendered into each `--namespace`: injected sidecars read
/// it from their own namespace (the same document as the sample app's). It carries the
/// mesh CA's certificate (`ca.pem`, the sidecars' `--ca-bundle`), never its key.
const SIDECAR_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: graylane-sidecar-token
  namespace: "@NAMESPACE@"
  labels: {app.kubernetes.io/part-of: graylane}
type: Opaque
stringData:
  token: "@SIDECAR_TOKEN@"
  ca.pem: "@MESH_CA_CERT@"
"#;

/// The trust domain of the generated mesh CA (graylane-control's default).
const TRUST_DOMAIN: &str = "cluster.local";

/// The sample app's namespace, which already carries its own token Secret.
const SAMPLE_NAMESPACE: &str = "shop";

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
    /// An application namespace whose injected sidecars need the
    /// `graylane-sidecar-token` Secret; repeatable. The namespace must already exist
    /// (install renders the Secret, not the namespace). Without it, install prints on
    /// standard error the `kubectl create secret` line that makes the Secret.
    // The id of the global `-n`: clap then keeps this (repeatable) flag for install
    // instead of propagating the global one here.
    #[arg(id = "namespace", long = "namespace", value_name = "NS", value_parser = namespace)]
    pub namespaces: Vec<String>,
    /// The cluster's service-account issuer keys, as `kubectl get --raw
    /// /openid/v1/jwks` prints them: sidecars then authenticate with projected
    /// service-account tokens (their identity is their service account), and no
    /// application namespace needs a token Secret.
    #[arg(long, value_name = "FILE", conflicts_with = "namespace")]
    pub k8s_jwks: Option<std::path::PathBuf>,
}

pub(crate) fn run(args: &InstallArgs) -> Result<(), CliError> {
    let jwks = args.k8s_jwks.as_deref().map(jwks::read).transpose()?;
    let certs =
        certificates().map_err(|e| CliError::refused(format!("generating certificates: {e}")))?;
    let etcd = etcd::generate()
        .map_err(|e| CliError::refused(format!("generating etcd's certificates: {e}")))?;
    // The same kind of root graylane-control generates for itself without --ca-cert.
    let mesh = ca::generate_root(TRUST_DOMAIN)
        .map_err(|e| CliError::refused(format!("generating the mesh CA: {e}")))?;
    let token = || {
        token(getrandom::fill)
            .map_err(|e| CliError::refused(format!("reading the OS random source: {e}")))
    };
    let (admin, sidecar) = (token()?, token()?);
    // With service-account tokens there is no sidecar token to leak.
    let tokens = match jwks {
        Some(_) => format!("admin:{admin}\n"),
        None => format!("admin:{admin}\nsidecar:{sidecar}\n"),
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (ca, crt, key) = (b64(&certs.ca), b64(&certs.cert), b64(&certs.key));
    let values = [
        ("@CA_BUNDLE@", ca.as_str()),
        ("@TLS_CRT@", crt.as_str()),
        ("@TLS_KEY@", key.as_str()),
        ("@TOKENS@", tokens.as_str()),
        ("@SIDECAR_TOKEN@", sidecar.as_str()),
        ("@MESH_CA_CERT@", mesh.cert.as_str()),
        ("@MESH_CA_KEY@", mesh.key.as_str()),
        ("@ETCD_CA@", etcd.ca.as_str()),
        ("@ETCD_SERVER_CERT@", etcd.server_cert.as_str()),
        ("@ETCD_SERVER_KEY@", etcd.server_key.as_str()),
        ("@ETCD_CLIENT_CERT@", etcd.client_cert.as_str()),
        ("@ETCD_CLIENT_KEY@", etcd.client_key.as_str()),
        ("@CONTROL_IMAGE@", args.control_image.as_str()),
        ("@SIDECAR_IMAGE@", args.sidecar_image.as_str()),
    ];
    let mut rendered = Vec::new();
    for (name, template) in FILES.iter().zip(TEMPLATES) {
        match (*name, &jwks) {
            ("sample-app.yaml", _) if args.no_sample_app => {}
            ("sample-app.yaml", Some(_)) => {
                rendered.push(without_secrets(&fill(template, &values)));
            }
            ("control-plane.yaml", Some(keys)) => {
                rendered.push(fill(jwks::CONFIG_MAP, &[("@K8S_JWKS@", keys)]));
                rendered.push(jwks::wire(&fill(template, &values)));
            }
            _ => rendered.push(fill(template, &values)),
        }
    }
    if jwks.is_some() {
        output::text(&rendered.join("---\n"));
        return Ok(());
    }
    for ns in app_namespaces(args) {
        rendered.push(fill(
            SIDECAR_SECRET,
            &[
                ("@NAMESPACE@", ns),
                ("@SIDECAR_TOKEN@", sidecar.as_str()),
                ("@MESH_CA_CERT@", mesh.cert.as_str()),
            ],
        ));
    }
    output::text(&rendered.join("---\n"));
    if args.namespaces.is_empty() {
        eprintln!("{}", secret_hint(&sidecar, &mesh.cert));
    }
    Ok(())
}

/// `text`'s documents but its Secrets (the sample app's token Secret, which
/// service-account tokens make unneeded).
fn without_secrets(text: &str) -> String {
    text.split("\n---\n")
        .filter(|doc| !doc.lines().any(|l| l == "kind: Secret"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The `--namespace`s, each once, less the sample app's (it has its Secret already).
fn app_namespaces(args: &InstallArgs) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for ns in &args.namespaces {
        let sample = !args.no_sample_app && ns == SAMPLE_NAMESPACE;
        if !sample && !out.contains(&ns.as_str()) {
            out.push(ns);
        }
    }
    out
}

/// What to run for each application namespace when install rendered no Secret there:
/// the token and this run's mesh CA certificate (public; the key is not in it).
fn secret_hint(sidecar_token: &str, mesh_ca_cert: &str) -> String {
    format!(
        "graylane install: injected sidecars read their token and the mesh CA from the \
         Secret graylane-sidecar-token in their own namespace; create it in each \
         application namespace NS (or rerun install with --namespace NS), with the mesh \
         CA certificate below saved as graylane-ca.pem:\n  \
         kubectl create secret generic graylane-sidecar-token -n NS \
         --from-literal=token={sidecar_token} --from-file=ca.pem=graylane-ca.pem\n\
         {}",
        mesh_ca_cert.trim_end()
    )
}

/// `template` with every placeholder replaced by its value, escaped for the
/// double-quoted scalar the placeholder sits in.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |text, (placeholder, value)| {
            text.replace(placeholder, &quoted(value))
        })
}

/// `value` as the inside of a YAML double-quoted scalar (YAML 1.2 §5.7, and the same
/// escapes in 1.1): printable ASCII as is, `"`, `\` and newline escaped, everything
/// else as `\u`/`\U` escapes. Non-ASCII goes escaped too because YAML 1.1 parsers read
/// U+0085/U+2028/U+2029 as line breaks and refuse other non-printables, so the output
/// is plain ASCII that every parser reads back as exactly `value`.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // The one control character values carry (PEM, the token file), in the
            // escape every YAML version and JSON read alike.
            '\n' => out.push_str("\\n"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out
}

/// A Kubernetes namespace name: an RFC 1123 label (lowercase alphanumerics and `-`, at
/// most 63, starting and ending alphanumeric).
fn namespace(value: &str) -> Result<String, String> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| alnum(c) || c == '-')
        && value.starts_with(alnum)
        && value.ends_with(alnum);
    if valid {
        Ok(value.to_string())
    } else {
        Err(
            "not a namespace name (lowercase letters, digits and '-', at most 63, \
             starting and ending with a letter or digit)"
                .to_string(),
        )
    }
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
    etcd::set_validity(&mut ca_params);
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
    etcd::set_validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Certs {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// 128 bits from `random` (the OS CSPRNG, `getrandom::fill`, outside tests) as 32 hex
/// characters: the tokens guard the control plane's API, so they must not be guessable
/// from a seed or an earlier token.
fn token<E>(random: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<String, E> {
    let mut bytes = [0u8; 16];
    random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
        // Both expire with the etcd certificates the installer makes, not in 4096.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for pem in [&certs.ca, &certs.cert] {
            use x509_parser::prelude::FromDer as _;
            let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|d: rustls::pki_types::CertificateDer<'_>| d.to_vec())
                .unwrap();
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
            let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap();
            let lifetime = etcd::LIFETIME.as_secs();
            assert!(
                not_after > now + lifetime - 3600 && not_after <= now + lifetime + 3600,
                "not after {not_after}, now {now}"
            );
        }
    }

    /// The mesh CA's key goes only into graylane-system's `graylane-ca` Secret; every
    /// sidecar token Secret carries its certificate, and the hand-made one's hint says so.
    #[test]
    fn only_graylane_ca_holds_the_mesh_ca_key() {
        let holding = |placeholder: &str| -> Vec<&str> {
            FILES
                .iter()
                .zip(TEMPLATES)
                .filter(|(_, t)| t.contains(placeholder))
                .map(|(name, _)| *name)
                .collect()
        };
        assert_eq!(holding("@MESH_CA_KEY@"), ["secrets.yaml"]);
        assert_eq!(
            holding("@MESH_CA_CERT@"),
            ["secrets.yaml", "sample-app.yaml"]
        );
        assert!(SIDECAR_SECRET.contains("ca.pem: \"@MESH_CA_CERT@\""));
        assert!(!SIDECAR_SECRET.contains("KEY"));
        let hint = secret_hint("t0k3n", "-----BEGIN CERTIFICATE-----\nAA==\n");
        assert!(hint.contains("--from-literal=token=t0k3n --from-file=ca.pem=graylane-ca.pem"));
        assert!(
            hint.ends_with("-----BEGIN CERTIFICATE-----\nAA=="),
            "{hint}"
        );
    }

    /// The mesh CA is what graylane-control takes as --ca-cert/--ca-key and can issue
    /// its gRPC certificate from.
    #[test]
    fn the_mesh_ca_serves_as_the_control_planes_ca() {
        let mesh = ca::generate_root(TRUST_DOMAIN).unwrap();
        let ca = ca::MeshCa::from_pem(&mesh.cert, &mesh.key).unwrap();
        let names = vec![SERVICE_NAMES[0].to_string()];
        ca.issue_server(&names, std::time::Duration::from_secs(3600))
            .unwrap();
        assert_ne!(ca::generate_root(TRUST_DOMAIN).unwrap().cert, mesh.cert);
    }

    /// A token is exactly the hex of what the random source gave, so it is as good as
    /// that source: the OS CSPRNG in `run`, and no other generator in this file.
    #[test]
    fn tokens_are_32_hex_chars_from_the_os_csprng() {
        let fixed = token(|b: &mut [u8]| {
            b.iter_mut().zip(0u8..).for_each(|(b, i)| *b = i * 17);
            Ok::<_, ()>(())
        });
        assert_eq!(fixed.unwrap(), "00112233445566778899aabbccddeeff");
        let (a, b) = (
            token(getrandom::fill).unwrap(),
            token(getrandom::fill).unwrap(),
        );
        for t in [&a, &b] {
            assert_eq!(t.len(), 32, "{t}");
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_ne!(a, b);
        // fastrand is not a CSPRNG (its outputs give its state away): never for tokens.
        assert!(!include_str!("install.rs").contains(concat!("fast", "rand::")));
    }

    /// A hostile value (quotes, a newline and a would-be field, a backslash, a comment
    /// and a Unicode line separator) in every placeholder of every template: each
    /// document still parses, holds the value exactly, and gains no field.
    #[test]
    fn every_placeholder_is_inside_a_double_quoted_scalar() {
        let evil = "x\" evil\n  injected: true\\ # \u{2028}é\u{1f600}";
        let placeholders: Vec<&str> = TEMPLATES
            .iter()
            .chain([&SIDECAR_SECRET, &jwks::CONFIG_MAP])
            .flat_map(|t| t.split('@').skip(1).step_by(2))
            .collect();
        assert!(placeholders.len() >= 8, "{placeholders:?}");
        for template in TEMPLATES.iter().chain([&SIDECAR_SECRET, &jwks::CONFIG_MAP]) {
            let values: Vec<(String, &str)> = placeholders
                .iter()
                .map(|p| (format!("@{p}@"), evil))
                .collect();
            let values: Vec<(&str, &str)> = values.iter().map(|(p, v)| (p.as_str(), *v)).collect();
            let text = fill(template, &values);
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let expected = template.matches('@').count() / 2;
            let strings = docs.iter().map(|d| count_evil(d, evil)).sum::<usize>();
            assert_eq!(strings, expected, "{text}");
        }
    }

    /// Strings holding `evil`; panics at an `injected` key.
    fn count_evil(value: &Value, evil: &str) -> usize {
        match value {
            Value::String(s) => s.matches(evil).count(),
            Value::Array(items) => items.iter().map(|v| count_evil(v, evil)).sum(),
            Value::Object(map) => {
                assert!(!map.contains_key("injected"), "{map:?}");
                map.values().map(|v| count_evil(v, evil)).sum()
            }
            _ => 0,
        }
    }

    #[test]
    fn namespaces_are_rfc_1123_labels_each_rendered_once() {
        assert!(namespace("team-a1").is_ok());
        for bad in ["", "Team", "-a", "a-", "a.b", "a\"b", &"a".repeat(64)] {
            assert!(namespace(bad).is_err(), "{bad:?}");
        }
        let args = |no_sample_app, ns: &[&str]| InstallArgs {
            control_image: String::new(),
            sidecar_image: String::new(),
            no_sample_app,
            namespaces: ns.iter().map(|s| (*s).to_string()).collect(),
            k8s_jwks: None,
        };
        let given = args(false, &["a", "shop", "b", "a"]);
        assert_eq!(app_namespaces(&given), ["a", "b"], "shop has the sample's");
        let given = args(true, &["shop", "shop"]);
        assert_eq!(app_namespaces(&given), ["shop"]);
    }
}
