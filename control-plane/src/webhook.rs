//! The mutating admission webhook (`--webhook-addr`, HTTPS): `POST /inject` takes an
//! AdmissionReview v1 for a Pod and answers with a JSONPatch that injects it, through
//! the same `inject` function as `graylane inject`.
//!
//! Which pods: the MutatingWebhookConfiguration sends pods labelled (or in a namespace
//! labelled) `graylane.io/inject: enabled`; here, the pods `graylane inject` skips are
//! skipped too (one [`inject::decide`]: system namespaces, `graylane.io/inject:
//! disabled`, already injected). A pod whose annotations cannot be honoured is refused
//! with the reason, rather than started without its sidecar.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::inject::{self, Config, Outcome};

/// AdmissionReviews are a pod and some envelope; a few MiB is plenty.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The TLS settings from `--tls-cert` / `--tls-key` (PEM files).
pub fn tls(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert {}: no certificate in it",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("--tls-cert / --tls-key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `POST /inject` over HTTPS until `shutdown`, within `limits` (connection
/// cap, TLS-handshake and header-read timeouts, drain), through the one accept loop of
/// every graylane listener ([`graylane_serve::serve_http`]).
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    config: Arc<Config>,
    limits: graylane_serve::Limits,
    shutdown: watch::Receiver<bool>,
) {
    let tls = Some(tls);
    graylane_serve::serve_http(listener, limits, tls, Arc::new(()), shutdown, move |_| {
        let config = Arc::clone(&config);
        hyper::service::service_fn(move |req| {
            let config = Arc::clone(&config);
            async move { Ok::<_, Infallible>(handle(req, &config).await) }
        })
    })
    .await;
}

async fn handle(
    req: Request<graylane_serve::RequestBody>,
    config: &Config,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/inject" {
        return reply(StatusCode::NOT_FOUND, "not found: POST /inject\n".into());
    }
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview to /inject\n".into(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
    };
    match review(&body, config) {
        Ok(answer) => {
            let mut r = reply(StatusCode::OK, answer.to_string());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(why) => reply(StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// The AdmissionReview answer for one request (`Err`: not an AdmissionReview at all).
pub fn review(body: &[u8], config: &Config) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if review["kind"] != "AdmissionReview" || review["apiVersion"] != "admission.k8s.io/v1" {
        return Err("expected an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or("request.uid: missing")?
        .to_string();
    let allow = |extra: Value| {
        let mut response = json!({"uid": uid, "allowed": true});
        if let (Some(r), Some(e)) = (response.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    };
    let mut pod = request["object"].clone();
    // The configuration sends only pods; anything else passes as it came.
    if request["kind"]["kind"] != "Pod" {
        return Ok(allow(json!({})));
    }
    // `request.kind` says it is a Pod, whether or not the object repeats it.
    if let Some(object) = pod.as_object_mut() {
        object.entry("kind").or_insert_with(|| json!("Pod"));
    }
    let before = pod.clone();
    // The request's namespace: a pod created from a template often has none of its own.
    match inject::inject_object(&mut pod, request["namespace"].as_str(), config) {
        Ok(Outcome::Skipped(why)) => {
            tracing::debug!(%uid, %why, "not injected");
            Ok(allow(json!({})))
        }
        Ok(Outcome::Injected) => {
            let patch = patch(&before, &pod);
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            Ok(allow(json!({"patchType": "JSONPatch", "patch": encoded})))
        }
        Err(e) => {
            let response = json!({
                "uid": uid,
                "allowed": false,
                "status": {"code": 400, "message": format!("graylane injection: {e}")},
            });
            Ok(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            )
        }
    }
}

/// A JSONPatch from `before` to `after` for the fields injection touches: each changed
/// one is set whole (`add` replaces an existing member, RFC 6902).
fn patch(before: &Value, after: &Value) -> Value {
    let mut ops = Vec::new();
    for (section, field) in [
        ("metadata", "annotations"),
        ("spec", "containers"),
        ("spec", "initContainers"),
        ("spec", "volumes"),
    ] {
        let new = &after[section][field];
        if !new.is_null() && *new != before[section][field] {
            ops.push(json!({"op": "add", "path": format!("/{section}/{field}"), "value": new}));
        }
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_of(pod: Value, namespace: &str) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": namespace, "object": pod},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn kube_system_and_opted_out_pods_are_never_patched() {
        let pod = json!({"metadata": {"labels": {"app": "dns"}}, "spec": {"containers": [{"name": "dns"}]}});
        let answer = review(&review_of(pod.clone(), "kube-system"), &Config::default()).unwrap();
        assert_eq!(answer["response"], json!({"uid": "u-1", "allowed": true}));
        let answer = review(&review_of(pod.clone(), "shop"), &Config::default()).unwrap();
        assert!(
            answer["response"].get("patch").is_some(),
            "elsewhere, the same pod is injected: {answer}"
        );
        let mut out = pod;
        out["metadata"]["labels"]["graylane.io/inject"] = json!("disabled");
        let answer = review(&review_of(out, "shop"), &Config::default()).unwrap();
        assert_eq!(answer["response"], json!({"uid": "u-1", "allowed": true}));
    }

    #[test]
    fn not_an_admission_review_is_an_error() {
        assert!(
            review(b"{}", &Config::default())
                .unwrap_err()
                .contains("AdmissionReview")
        );
        assert!(
            review(b"nope", &Config::default())
                .unwrap_err()
                .contains("not JSON")
        );
    }
}
