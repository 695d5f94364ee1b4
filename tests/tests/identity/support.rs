//! What the identity scenarios share: tokens, openssl-made keys and CSRs, the
//! Discovery and Admin calls of a sidecar-like client, and an RS256 service-account
//! token issuer with its JWKS (as a Kubernetes API server serves it).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use graylane_proto::v1 as pb;
use graylane_proto::v1::admin_client::AdminClient;
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_tests::{ControlPlane, write_file};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef";
pub(crate) const UNBOUND: &str = "sidecar-token-0123456789abcdef";
pub(crate) const BOUND: &str = "bound-token-0123456789abcdef";
pub(crate) const SHOP_ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";

/// Runs openssl in `dir`; returns its standard output.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether openssl succeeds (for checks expected to fail).
pub(crate) fn openssl_ok(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

/// A CSR (PEM) for a new key made by `newkey` (e.g. `ec` with `-pkeyopt`, or
/// `rsa:2048`), saved as `NAME.csr` with its key in `NAME.key`. Its subject and SAN
/// ask for something else than any identity: the control plane must ignore them.
pub(crate) fn csr(dir: &Path, name: &str, newkey: &[&str]) -> String {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-subj",
        "/CN=evil.example",
        "-addext",
        "subjectAltName=DNS:evil.example,URI:spiffe://cluster.local/ns/kube-system/sa/admin",
    ]);
    openssl(dir, &args);
    std::fs::read_to_string(dir.join(csr)).unwrap()
}

pub(crate) fn p256_csr(dir: &Path, name: &str) -> String {
    csr(
        dir,
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
}

pub(crate) async fn discovery(cp: &ControlPlane) -> DiscoveryClient<tonic::transport::Channel> {
    DiscoveryClient::connect(cp.url()).await.unwrap()
}

pub(crate) fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

pub(crate) async fn issue(
    cp: &ControlPlane,
    token: Option<&str>,
    csr_pem: &str,
    (namespace, service_account): (&str, &str),
    instance: &str,
) -> Result<pb::CertificateResponse, tonic::Status> {
    let request = pb::CertificateRequest {
        csr_pem: csr_pem.to_string(),
        namespace: namespace.into(),
        service_account: service_account.into(),
        instance_id: instance.into(),
    };
    discovery(cp)
        .await
        .issue_certificate(with_token(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// A sidecar-like stream saying Hello as (`namespace`, `service_account`); the
/// sender keeps the stream open while held.
pub(crate) async fn subscribe(
    cp: &ControlPlane,
    token: Option<&str>,
    (namespace, service_account): (&str, &str),
    instance: &str,
) -> Result<
    (
        mpsc::Sender<pb::SidecarMessage>,
        tonic::Streaming<pb::Snapshot>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(4);
    let hello = pb::Hello {
        service: "orders".into(),
        instance_id: instance.into(),
        address: "127.0.0.1:15006".into(),
        namespace: namespace.into(),
        service_account: service_account.into(),
        ..pb::Hello::default()
    };
    tx.send(pb::SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await
    .unwrap();
    let stream = discovery(cp)
        .await
        .subscribe(with_token(ReceiverStream::new(rx), token))
        .await?
        .into_inner();
    Ok((tx, stream))
}

pub(crate) async fn list_sidecars(cp: &ControlPlane, token: &str) -> Vec<pb::SidecarStatus> {
    AdminClient::connect(cp.url())
        .await
        .unwrap()
        .list_sidecars(with_token(pb::ListSidecarsRequest {}, Some(token)))
        .await
        .unwrap()
        .into_inner()
        .sidecars
}

pub(crate) fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

pub(crate) fn tokens(dir: &Path, extra: &str) -> String {
    write_file(
        dir,
        "tokens",
        &format!("admin:{ADMIN}\nsidecar:{UNBOUND}\nsidecar:{BOUND}:shop/orders\n{extra}"),
    )
}

/// Base64 (standard or URL-safe without padding), for PEM and JWTs.
pub(crate) fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der, false);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// An RS256 service-account token issuer: `NAME.key` (openssl genrsa) and its JWKS.
pub(crate) struct Issuer {
    pub(crate) key: String,
    pub(crate) jwks: String,
}

impl Issuer {
    pub(crate) fn new(dir: &Path, name: &str) -> Issuer {
        let key = format!("{name}.key");
        openssl(dir, &["genrsa", "-out", &key, "2048"]);
        let modulus = openssl(dir, &["rsa", "-in", &key, "-noout", "-modulus"]);
        let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let jwks = format!(
            r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"{name}","alg":"RS256","n":"{}","e":"AQAB"}}]}}"#,
            base64(&bytes, true)
        );
        Issuer { key, jwks }
    }

    /// A token with `claims`, signed with `alg` in the header (the signature is
    /// RS256 whatever it says; `none` gets an empty one).
    pub(crate) fn token(&self, dir: &Path, alg: &str, claims: &serde_json::Value) -> String {
        let header = format!(
            r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#,
            self.key.trim_end_matches(".key")
        );
        let input = format!(
            "{}.{}",
            base64(header.as_bytes(), true),
            base64(claims.to_string().as_bytes(), true)
        );
        if alg == "none" {
            return format!("{input}.");
        }
        std::fs::write(dir.join("input"), &input).unwrap();
        openssl(
            dir,
            &[
                "dgst", "-sha256", "-sign", &self.key, "-out", "sig", "input",
            ],
        );
        let sig = std::fs::read(dir.join("sig")).unwrap();
        format!("{input}.{}", base64(&sig, true))
    }
}

pub(crate) fn claims(sub: &str, aud: &str, exp: i64, nbf: i64) -> serde_json::Value {
    serde_json::json!({
        "aud": [aud], "exp": exp, "nbf": nbf, "iat": unix_now(), "sub": sub,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "orders"}},
    })
}
