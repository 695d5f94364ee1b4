//! The sidecar's workload certificate, end to end with a real control plane: issued
//! for the identity the credential allows (shown on `/config`, never the key), renewed
//! at half its lifetime with a new serial, kept while the control plane is down and
//! `/ready` 503 only once it expired; a bound token asking for another namespace gets
//! neither a certificate nor a stream; a token file rewritten in place is read again.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graylane_tests::{ControlPlane, Sidecar, eventually, http_get, write_file};

const SIDECAR_TOKEN: &str = "sidecar-token-0123456789";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The value of the series `series` (name and labels, exactly) on `/metrics`.
fn metric(sidecar: &Sidecar, series: &str) -> Option<f64> {
    let (_, body) = http_get(sidecar.admin, "/metrics");
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `/config`'s `identity` once the sidecar has a certificate.
fn identity(sidecar: &Sidecar) -> serde_json::Value {
    eventually(Duration::from_secs(40), "a workload certificate", || {
        let id = sidecar.config()["identity"].clone();
        (!id.is_null()).then_some(id)
    })
}

/// A control plane with one unbound and one bound sidecar token.
fn control_plane(dir: &Path, extra: &[&str]) -> ControlPlane {
    let tokens = write_file(
        dir,
        "tokens",
        &format!(
            "admin:admin-token-0123456789\nsidecar:{SIDECAR_TOKEN}\nsidecar:bound-token-0123456789:shop/orders\n"
        ),
    );
    ControlPlane::start(dir, &[&["--token-file", &tokens][..], extra].concat())
}

fn sidecar(dir: &Path, cp: &ControlPlane, token: &str, identity: [&str; 2]) -> Sidecar {
    let [namespace, account] = identity;
    let file = write_file(dir, &format!("token-{namespace}-{account}"), token);
    let url = cp.url();
    Sidecar::start(
        dir,
        &format!("{namespace}-{account}"),
        &[
            "--service",
            "orders",
            "--control-plane",
            &url,
            "--token-file",
            &file,
            "--namespace",
            namespace,
            "--service-account",
            account,
            "--otlp-endpoint",
            "none",
        ],
    )
}

#[test]
fn the_certificate_carries_the_identity_and_is_renewed_at_half_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &["--cert-ttl", "1m"]);
    let sc = sidecar(d, &cp, SIDECAR_TOKEN, ["shop", "checkout"]);
    sc.wait_ready();
    let first = identity(&sc);
    let issued_at = now();
    assert_eq!(first["id"], "spiffe://cluster.local/ns/shop/sa/checkout");
    assert_eq!(first["renewals"], 0);
    let text = first.to_string();
    assert!(!text.contains("PRIVATE"), "{text}");
    // not_after ≈ now + --cert-ttl, in RFC 3339 and as the expiry metric.
    let not_after = first["not_after"].as_str().unwrap();
    assert!(
        not_after.ends_with('Z') && not_after.contains('T'),
        "{not_after}"
    );
    let expiry = metric(&sc, "graylane_certificate_expiry_seconds").unwrap();
    assert!(
        (expiry - issued_at - 60.0).abs() < 5.0,
        "expires {expiry}, issued {issued_at}"
    );
    // The bundle is the mesh CA the control plane serves.
    let (_, ca) = http_get(cp.http, "/ca.pem");
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    assert_eq!(
        first["trust_bundle"].as_array().unwrap().len(),
        1,
        "{first}"
    );
    assert_eq!(
        first["trust_bundle"][0]["sha256"].as_str().unwrap().len(),
        64
    );
    // Renewed at half the lifetime (30 s): a new serial, a later expiry, counted.
    let renewed = eventually(Duration::from_secs(40), "a renewal", || {
        let id = sc.config()["identity"].clone();
        (id["serial"] != first["serial"]).then_some(id)
    });
    let elapsed = now() - issued_at;
    assert!(elapsed > 20.0, "renewed after {elapsed:.1}s: too early");
    assert_eq!(renewed["id"], first["id"]);
    assert_eq!(renewed["renewals"], 1);
    assert!(metric(&sc, "graylane_certificate_expiry_seconds").unwrap() > expiry);
    let ok = r#"graylane_certificate_renewals_total{result="ok"}"#;
    assert_eq!(metric(&sc, ok), Some(2.0));
    assert_eq!(http_get(sc.admin, "/ready").0, 200);
}

#[test]
fn the_certificate_outlives_the_control_plane_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cp = control_plane(d, &["--cert-ttl", "1m"]);
    let sc = sidecar(d, &cp, SIDECAR_TOKEN, ["shop", "orders"]);
    sc.wait_ready();
    let first = identity(&sc);
    let expiry = metric(&sc, "graylane_certificate_expiry_seconds").unwrap();
    cp.proc.kill();
    // Renewal fails from now on: the certificate stays, and so does readiness, until
    // its expiry; then /ready is 503 and says why.
    let body = eventually(Duration::from_secs(75), "/ready 503 after expiry", || {
        let (status, body) = http_get(sc.admin, "/ready");
        if status == 200 {
            return None;
        }
        assert!(
            now() >= expiry - 1.0,
            "unready {:.0}s before the certificate expired: {body}",
            expiry - now()
        );
        Some(body)
    });
    assert!(body.contains("certificate expired"), "{body}");
    let after = sc.config()["identity"].clone();
    assert_eq!(after["serial"], first["serial"], "kept, never dropped");
    let failed = r#"graylane_certificate_renewals_total{result="error"}"#;
    assert!(metric(&sc, failed).unwrap() >= 1.0);
    eventually(Duration::from_secs(5), "the expiry logged", || {
        sc.proc
            .log_text()
            .contains("workload certificate expired")
            .then_some(())
    });
}

#[test]
fn a_bound_token_gets_only_its_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &[]);
    let bound = "bound-token-0123456789";
    // The token is bound to shop/orders; this sidecar asks for staging/orders.
    let wrong = sidecar(d, &cp, bound, ["staging", "orders"]);
    let right = sidecar(d, &cp, bound, ["shop", "orders"]);
    right.wait_ready();
    assert_eq!(
        identity(&right)["id"],
        "spiffe://cluster.local/ns/shop/sa/orders"
    );
    let failed = r#"graylane_certificate_renewals_total{result="error"}"#;
    eventually(Duration::from_secs(20), "the certificate refused", || {
        (metric(&wrong, failed)? >= 1.0).then_some(())
    });
    let log = wrong.proc.log_text();
    assert!(log.contains("PermissionDenied"), "{log}");
    assert!(log.contains("bound to shop/orders"), "{log}");
    let config = wrong.config();
    assert!(config["identity"].is_null(), "{config}");
    assert_eq!(config["ready"], false, "no stream either: {config}");
    assert_eq!(http_get(wrong.admin, "/ready").0, 503);
}

/// Kubernetes rotates a projected token by rewriting the file: the sidecar reads it
/// again for every request, so a token fixed in place works without a restart.
#[test]
fn a_token_file_rewritten_in_place_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &[]);
    let sc = sidecar(d, &cp, "not-the-token-0123456789", ["shop", "cart"]);
    let failed = r#"graylane_certificate_renewals_total{result="error"}"#;
    eventually(Duration::from_secs(20), "the wrong token refused", || {
        (metric(&sc, failed)? >= 1.0).then_some(())
    });
    assert_eq!(http_get(sc.admin, "/ready").0, 503);
    write_file(d, "token-shop-cart", SIDECAR_TOKEN);
    eventually(Duration::from_secs(40), "ready with the new token", || {
        (http_get(sc.admin, "/ready").0 == 200).then_some(())
    });
    assert_eq!(
        identity(&sc)["id"],
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
}

/// An operator's typo in --service-account (not a DNS name) gets no certificate, says
/// why, and still routes: certificates are optional for routing.
#[test]
fn a_service_account_typo_gets_no_certificate_but_still_routes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &[]);
    let sc = sidecar(d, &cp, SIDECAR_TOKEN, ["shop", "Orders_SA"]);
    sc.wait_ready();
    let failed = r#"graylane_certificate_renewals_total{result="error"}"#;
    eventually(Duration::from_secs(20), "the certificate refused", || {
        (metric(&sc, failed)? >= 1.0).then_some(())
    });
    let log = sc.proc.log_text();
    assert!(
        log.contains("InvalidArgument") && log.contains("service account"),
        "{log}"
    );
    assert!(sc.config()["identity"].is_null());
    assert_eq!(http_get(sc.admin, "/ready").0, 200);
}

/// A gRPC server without `IssueCertificate` (an older control plane; here an OTLP
/// collector) answers UNIMPLEMENTED: said once, not counted as a failure, no identity.
#[test]
fn a_control_plane_without_certificates_is_said_once_and_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = graylane_tests::otlp::Receiver::start();
    let url = old.url();
    let sc = Sidecar::start(
        d,
        "old",
        &[
            "--service",
            "orders",
            "--control-plane",
            &url,
            "--otlp-endpoint",
            "none",
        ],
    );
    eventually(Duration::from_secs(20), "UNIMPLEMENTED noticed", || {
        sc.proc
            .log_text()
            .contains("issues no certificates")
            .then_some(())
    });
    let failed = r#"graylane_certificate_renewals_total{result="error"}"#;
    assert_eq!(metric(&sc, failed), Some(0.0));
    assert!(sc.config()["identity"].is_null());
    let log = sc.proc.log_text();
    assert_eq!(log.matches("issues no certificates").count(), 1, "{log}");
}

/// A sidecar credential may replace only an instance of its own identity: one bound
/// to shop/orders claiming cart's `--instance-id` used to push the real cart off the
/// mesh (the newer stream replaced the older, over and over). It is refused, saying
/// why, and cart stays registered.
#[test]
fn a_credential_cannot_take_over_another_identity_s_instance_id() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &[]);
    let start = |name: &str, token: &str, account: &str| {
        let file = write_file(d, &format!("token-{name}"), token);
        Sidecar::start(
            d,
            name,
            &[
                "--service",
                "cart",
                "--instance-id",
                "cart-1",
                "--control-plane",
                &cp.url(),
                "--token-file",
                &file,
                "--namespace",
                "shop",
                "--service-account",
                account,
                "--otlp-endpoint",
                "none",
            ],
        )
    };
    let cart = start("cart", SIDECAR_TOKEN, "cart");
    cart.wait_ready();
    let thief = start("thief", "bound-token-0123456789", "orders");
    eventually(Duration::from_secs(20), "the claim refused", || {
        thief
            .proc
            .log_text()
            .contains("is registered with identity")
            .then_some(())
    });
    let admin = write_file(d, "admin.tok", "admin-token-0123456789");
    let status = cp.cli(&["--token-file", &admin, "status", "-o", "json"]);
    let sidecars = status.assert_ok().json()["sidecars"].clone();
    let cart_1: Vec<&serde_json::Value> = sidecars
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["instance"] == "cart-1")
        .collect();
    assert_eq!(cart_1.len(), 1, "{sidecars}");
    assert_eq!(
        cart_1[0]["identity"], "spiffe://cluster.local/ns/shop/sa/cart",
        "{sidecars}"
    );
    assert_eq!(http_get(cart.admin, "/ready").0, 200);
}

/// control-plane.md: only the sidecar role may subscribe. A sidecar given the admin
/// token was refused a certificate but still listed and routed to, each call failing
/// its mTLS: it is refused the stream, never ready, and not listed.
#[test]
fn an_admin_token_does_not_make_a_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = control_plane(d, &[]);
    let sc = sidecar(d, &cp, "admin-token-0123456789", ["shop", "payments"]);
    eventually(Duration::from_secs(20), "the stream refused", || {
        sc.proc
            .log_text()
            .contains("an admin token may not subscribe as a sidecar")
            .then_some(())
    });
    assert_eq!(http_get(sc.admin, "/ready").0, 503);
    let admin = write_file(d, "admin.tok", "admin-token-0123456789");
    let status = cp.cli(&["--token-file", &admin, "status", "-o", "json"]);
    let sidecars = status.assert_ok().json()["sidecars"].clone();
    assert_eq!(sidecars.as_array().map(Vec::len), Some(0), "{sidecars}");
}
