//! The control plane as the mesh's identity issuer (security.md "Identity",
//! "Certificates", "Errors"), against real graylane-control processes: the credential
//! decides the identity (unbound and bound token-file lines, Kubernetes
//! service-account JWTs checked against a JWKS), `IssueCertificate` signs only a good
//! CSR, the certificate carries exactly the SPIFFE id and chains to `/ca.pem`, and
//! `graylane status` shows identity and expiry. Keys, CSRs and JWT signatures come
//! from `openssl`, as an operator's or a pod's would.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use graylane_proto::v1 as pb;
use graylane_proto::v1::admin_client::AdminClient;
use graylane_tests::{ControlPlane, bin, eventually, http_get, write_file};
use tonic::Code;

#[path = "identity/support.rs"]
mod support;

use support::{
    ADMIN, BOUND, Issuer, SHOP_ORDERS, UNBOUND, claims, csr, issue, list_sidecars, openssl,
    openssl_ok, p256_csr, pem, subscribe, tokens, unix_now, with_token,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_token_gets_a_certificate_for_what_it_asks_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = tokens(d, "");
    let cp = ControlPlane::start(d, &["--token-file", &tokens, "--cert-ttl", "2h"]);
    assert!(
        cp.proc.log_text().contains("unbound sidecar tokens"),
        "a warning at start: {}",
        cp.proc.log_text()
    );
    let csr_pem = p256_csr(d, "orders");
    let before = unix_now();
    let issued = issue(&cp, Some(UNBOUND), &csr_pem, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    assert_eq!(issued.identity, SHOP_ORDERS);
    assert!(
        (issued.not_after - before - 7200).abs() <= 5,
        "not_after is --cert-ttl from now: {} vs {before}",
        issued.not_after
    );

    let chain = write_file(d, "chain.pem", &issued.certificate_chain_pem);
    let text = openssl(d, &["x509", "-in", &chain, "-noout", "-text"]);
    assert!(
        text.contains(&format!("URI:{SHOP_ORDERS}")),
        "the SPIFFE id as URI SAN:\n{text}"
    );
    let san = text
        .lines()
        .skip_while(|l| !l.contains("Subject Alternative Name"))
        .nth(1)
        .unwrap()
        .trim();
    assert_eq!(san, format!("URI:{SHOP_ORDERS}"), "its only SAN:\n{text}");
    assert!(
        !text.contains("evil.example"),
        "nothing from the CSR:\n{text}"
    );
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(!text.contains("CA:TRUE"), "{text}");
    // The certificate is for the CSR's key, which never left this test.
    let leaf_key = openssl(d, &["x509", "-in", &chain, "-noout", "-pubkey"]);
    let csr_key = openssl(d, &["req", "-in", "orders.csr", "-noout", "-pubkey"]);
    assert_eq!(leaf_key, csr_key);
    // Lives --cert-ttl: valid in 7190 s, gone in 7210 s.
    assert!(openssl_ok(
        d,
        &["x509", "-in", &chain, "-noout", "-checkend", "7190"]
    ));
    assert!(!openssl_ok(
        d,
        &["x509", "-in", &chain, "-noout", "-checkend", "7210"]
    ));

    // It chains to the CA at /ca.pem, which is also the trust bundle.
    let (status, ca_pem) = http_get(cp.http, "/ca.pem");
    assert_eq!(status, 200, "{ca_pem}");
    assert_eq!(issued.trust_bundle_pem, vec![ca_pem.clone()]);
    assert_eq!(
        issued
            .certificate_chain_pem
            .matches("BEGIN CERTIFICATE")
            .count(),
        1,
        "a root CA is not part of the chain"
    );
    let ca = write_file(d, "ca.pem", &ca_pem);
    for purpose in ["sslserver", "sslclient"] {
        let out = openssl(d, &["verify", "-purpose", purpose, "-CAfile", &ca, &chain]);
        assert!(out.contains(": OK"), "{out}");
    }

    // Unbound: any valid identity it asks for, but not a malformed one.
    let other = issue(&cp, Some(UNBOUND), &csr_pem, ("", "payments"), "p-1")
        .await
        .unwrap();
    assert_eq!(
        other.identity,
        "spiffe://cluster.local/ns/default/sa/payments"
    );
    for (ns, sa) in [("Shop", "orders"), ("shop", ""), ("shop", "a/b")] {
        let err = issue(&cp, Some(UNBOUND), &csr_pem, (ns, sa), "x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ns}/{sa}: {err:?}");
    }

    // No token, a wrong one: nothing issued.
    for token in [None, Some("not-a-token-0123456789"), Some(&UNBOUND[1..])] {
        let err = issue(&cp, token, &csr_pem, ("shop", "orders"), "x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_exactly_its_identity_in_certificates_streams_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = tokens(d, "");
    let cp = ControlPlane::start(d, &["--token-file", &tokens]);
    let csr_pem = p256_csr(d, "orders");

    let denied = issue(&cp, Some(BOUND), &csr_pem, ("shop", "payments"), "orders-1")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("shop/orders"), "{denied:?}");

    // A Hello claiming another identity: refused, and nobody registered.
    let Err(refused) = subscribe(&cp, Some(BOUND), ("shop", "payments"), "orders-1").await else {
        panic!("a stream claiming another identity was opened");
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let Err(refused) = subscribe(&cp, Some(BOUND), ("", "orders"), "orders-1").await else {
        panic!("a stream in `default` with a token bound to `shop` was opened");
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let Err(refused) = subscribe(&cp, None, ("shop", "orders"), "orders-1").await else {
        panic!("a stream without a token was opened");
    };
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(list_sidecars(&cp, ADMIN).await.is_empty());

    // Its own identity: a certificate, a stream, and both in status.
    let issued = issue(&cp, Some(BOUND), &csr_pem, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    assert_eq!(issued.identity, SHOP_ORDERS);
    let (_hold, mut stream) = subscribe(&cp, Some(BOUND), ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bundle = first
        .trust_bundle
        .expect("the first snapshot carries the trust bundle");
    assert_eq!(bundle.certificates_pem, issued.trust_bundle_pem);
    let sidecars = list_sidecars(&cp, ADMIN).await;
    assert_eq!(sidecars.len(), 1);
    assert_eq!(sidecars[0].identity, SHOP_ORDERS);
    assert_eq!(sidecars[0].cert_not_after, issued.not_after);

    let table = cp.cli(&["--token-file", &write_file(d, "admin", ADMIN), "status"]);
    table.assert_ok();
    let header = table.stdout.lines().next().unwrap();
    assert!(
        header.contains("IDENTITY") && header.contains("CERT EXPIRES"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains(SHOP_ORDERS), "{}", table.stdout);
    assert!(
        table.stdout.contains("23h59m") || table.stdout.contains("24h0m"),
        "default --cert-ttl 24h: {}",
        table.stdout
    );
    let json = cp.cli(&[
        "--token-file",
        &write_file(d, "admin", ADMIN),
        "status",
        "-o",
        "json",
    ]);
    let s = &json.json()["sidecars"][0];
    assert_eq!(s["identity"], SHOP_ORDERS);
    assert_eq!(s["certNotAfter"], issued.not_after);

    // Endpoints carry the identity peers must present.
    let (_hold2, mut second) = subscribe(&cp, Some(UNBOUND), ("shop", "payments"), "pay-1")
        .await
        .unwrap();
    // Registrations are published in batches: read on until orders-1 shows up.
    let orders = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = second.message().await.unwrap().unwrap();
            let full = snapshot.endpoints.map(|s| s.endpoints).unwrap_or_default();
            let upserted = snapshot
                .endpoint_changes
                .map(|d| d.upserted)
                .unwrap_or_default();
            if let Some(e) = full
                .into_iter()
                .chain(upserted)
                .find(|e| e.instance_id == "orders-1")
            {
                return e;
            }
        }
    })
    .await
    .expect("orders-1 among the endpoints within 10s");
    assert_eq!(orders.identity, SHOP_ORDERS);
    assert_eq!(orders.namespace, "shop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_are_invalid_arguments_and_nothing_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cp = ControlPlane::start(d, &[]);
    let (_hold, _stream) = subscribe(&cp, None, ("shop", "orders"), "orders-1")
        .await
        .unwrap();

    let p384 = csr(
        d,
        "p384",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let rsa1024 = csr(d, "rsa1024", &["-newkey", "rsa:1024"]);
    // The same request with one bit of its signature flipped.
    let good = p256_csr(d, "good");
    openssl(
        d,
        &[
            "req", "-in", "good.csr", "-outform", "DER", "-out", "good.der",
        ],
    );
    let mut der = std::fs::read(d.join("good.der")).unwrap();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let broken = pem("CERTIFICATE REQUEST", &der);
    let garbled = good.replace("MII", "MIX");
    for (what, csr_pem) in [
        ("P-384", p384.as_str()),
        ("RSA 1024", rsa1024.as_str()),
        ("broken signature", broken.as_str()),
        ("garbled", garbled.as_str()),
        ("empty", ""),
        ("a certificate", &http_get(cp.http, "/ca.pem").1),
    ] {
        let err = issue(&cp, None, csr_pem, ("shop", "orders"), "orders-1")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    let err = issue(&cp, None, &p384, ("shop", "orders"), "orders-1")
        .await
        .unwrap_err();
    assert!(err.message().contains("P-256"), "the reason: {err:?}");
    // Its size is the reason, not a signature that "does not verify" (the verifier
    // refuses such a key too).
    let err = issue(&cp, None, &rsa1024, ("shop", "orders"), "orders-1")
        .await
        .unwrap_err();
    assert!(
        err.message().contains("RSA of 1024 bits"),
        "the reason: {err:?}"
    );
    let err = issue(&cp, None, &broken, ("shop", "orders"), "orders-1")
        .await
        .unwrap_err();
    assert!(err.message().contains("signature"), "the reason: {err:?}");
    let sidecars = list_sidecars(&cp, ADMIN).await;
    assert_eq!(sidecars[0].cert_not_after, 0, "nothing was issued");

    // RSA of 2048 bits is fine.
    let rsa = csr(d, "rsa2048", &["-newkey", "rsa:2048"]);
    let issued = issue(&cp, None, &rsa, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    assert_eq!(issued.identity, SHOP_ORDERS);
    let sidecars = list_sidecars(&cp, ADMIN).await;
    assert_eq!(sidecars[0].cert_not_after, issued.not_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_checked_and_bind_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let issuer = Issuer::new(d, "cluster");
    let jwks = write_file(d, "jwks.json", &issuer.jwks);
    let tokens = write_file(d, "tokens", &format!("admin:{ADMIN}\n"));
    let cp = ControlPlane::start(d, &["--token-file", &tokens, "--k8s-jwks", &jwks]);
    let csr_pem = p256_csr(d, "orders");
    let now = unix_now();
    let sa = "system:serviceaccount:shop:orders";

    let good = issuer.token(d, "RS256", &claims(sa, "graylane", now + 600, now - 10));
    let issued = issue(&cp, Some(&good), &csr_pem, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    assert_eq!(issued.identity, SHOP_ORDERS);
    let denied = issue(&cp, Some(&good), &csr_pem, ("shop", "payments"), "orders-1")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let Err(refused) = subscribe(&cp, Some(&good), ("kube-system", "orders"), "o-1").await else {
        panic!("a stream claiming another namespace was opened");
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A pod's token is never an admin's.
    let admin = AdminClient::connect(cp.url())
        .await
        .unwrap()
        .list_sidecars(with_token(pb::ListSidecarsRequest {}, Some(&good)))
        .await
        .unwrap_err();
    assert_eq!(admin.code(), Code::PermissionDenied, "{admin:?}");

    let stranger = Issuer::new(d, "cluster");
    let unauthenticated = [
        (
            "expired",
            issuer.token(d, "RS256", &claims(sa, "graylane", now - 600, now - 1200)),
        ),
        (
            "not yet valid",
            issuer.token(d, "RS256", &claims(sa, "graylane", now + 1200, now + 600)),
        ),
        (
            "wrong audience",
            issuer.token(d, "RS256", &claims(sa, "kubernetes", now + 600, now - 10)),
        ),
        (
            "another key",
            stranger.token(d, "RS256", &claims(sa, "graylane", now + 600, now - 10)),
        ),
        (
            "alg none",
            issuer.token(d, "none", &claims(sa, "graylane", now + 600, now - 10)),
        ),
        (
            "alg HS256",
            issuer.token(d, "HS256", &claims(sa, "graylane", now + 600, now - 10)),
        ),
        (
            "not a service account",
            issuer.token(
                d,
                "RS256",
                &claims("system:node:n1", "graylane", now + 600, now - 10),
            ),
        ),
    ];
    for (what, token) in &unauthenticated {
        let err = issue(&cp, Some(token), &csr_pem, ("shop", "orders"), "orders-1")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
}

#[test]
fn bad_credentials_flags_stop_the_server_naming_the_flag_or_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |extra: &[&str]| {
        let out = Command::new(bin("graylane-control"))
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .arg("--store")
            .arg(format!("file:{}", d.join("data").display()))
            .args(extra)
            .output()
            .unwrap();
        // 1 from the server's own checks, 2 from clap's (a flag's value parser).
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{extra:?}: {:?}",
            out.status
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = run(&["--k8s-jwks", "/nonexistent/jwks.json"]);
    assert!(log.contains("--k8s-jwks"), "{log}");
    let not_jwks = write_file(
        d,
        "not-jwks.json",
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
    );
    let log = run(&["--k8s-jwks", &not_jwks]);
    assert!(
        log.contains("--k8s-jwks") && log.contains("no RSA or P-256"),
        "{log}"
    );
    let typo = write_file(
        d,
        "typo",
        &format!("admin:{ADMIN}\nsidecar:{BOUND}:Shop/orders\n"),
    );
    let log = run(&["--token-file", &typo]);
    assert!(
        log.contains("line 2") && log.contains("Shop/orders"),
        "{log}"
    );
    let log = run(&["--cert-ttl", "30s"]);
    assert!(
        log.contains("--cert-ttl") && log.contains("minimum"),
        "{log}"
    );
    // A far lifetime overflowed the certificate's date: every issue panicked.
    let log = run(&["--cert-ttl", "90000000h"]);
    assert!(
        log.contains("--cert-ttl") && log.contains("maximum of 2160h"),
        "{log}"
    );
    let log = run(&["--trust-bundle", &write_file(d, "empty.pem", "")]);
    assert!(log.contains("--trust-bundle"), "{log}");
    let log = run(&["--trust-domain", "Not A Domain"]);
    assert!(log.contains("--trust-domain"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_and_extra_trust_survive_a_restart_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An old CA still trusted during a rotation.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "old.key",
            "-out",
            "old.pem",
            "-days",
            "1",
            "-subj",
            "/CN=old mesh CA",
        ],
    );
    let old = std::fs::read_to_string(d.join("old.pem")).unwrap();
    let old_path = d.join("old.pem").display().to_string();
    let args = ["--trust-bundle", old_path.as_str()];
    let csr_pem = p256_csr(d, "orders");
    let cp = ControlPlane::start(d, &args);
    let issued = issue(&cp, None, &csr_pem, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    assert_eq!(issued.trust_bundle_pem.len(), 2);
    assert_eq!(issued.trust_bundle_pem[1].trim(), old.trim());
    let chain = write_file(d, "chain.pem", &issued.certificate_chain_pem);
    drop(cp);

    let cp = ControlPlane::start(d, &args);
    let (_, ca_pem) = http_get(cp.http, "/ca.pem");
    let ca = write_file(d, "ca.pem", &ca_pem);
    let out = openssl(d, &["verify", "-CAfile", &ca, &chain]);
    assert!(
        out.contains(": OK"),
        "issued before the restart, verified after: {out}"
    );
    assert!(!openssl_ok(d, &["verify", "-CAfile", "old.pem", &chain]));
    let (_hold, mut stream) = subscribe(&cp, None, ("shop", "orders"), "orders-1")
        .await
        .unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let bundle = snapshot.trust_bundle.unwrap().certificates_pem;
    assert_eq!(bundle, vec![ca_pem, issued.trust_bundle_pem[1].clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_intermediate_ca_signs_and_goes_along_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let root = [
        &["req", "-x509"][..],
        &p256,
        &["-keyout", "root.key", "-out", "root.pem"],
    ];
    openssl(
        d,
        &[
            &root.concat()[..],
            &["-days", "2", "-subj", "/CN=operator root"],
        ]
        .concat(),
    );
    let req = [
        &["req", "-new"][..],
        &p256,
        &["-keyout", "inter.key", "-out", "inter.csr"],
    ];
    openssl(
        d,
        &[&req.concat()[..], &["-subj", "/CN=operator intermediate"]].concat(),
    );
    write_file(
        d,
        "inter.ext",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "inter.ext",
            "-out",
            "inter.pem",
        ],
    );
    let path = |name: &str| d.join(name).display().to_string();
    let (cert, key) = (path("inter.pem"), path("inter.key"));
    let cp = ControlPlane::start(d, &["--ca-cert", &cert, "--ca-key", &key]);
    let issued = issue(&cp, None, &p256_csr(d, "orders"), ("shop", "orders"), "o-1")
        .await
        .unwrap();
    let intermediate = std::fs::read_to_string(d.join("inter.pem")).unwrap();
    let chain: Vec<&str> = issued
        .certificate_chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(chain.len(), 2, "leaf, then the intermediate, not the root");
    assert_eq!(chain[1].trim(), intermediate.trim());
    assert_eq!(
        issued.trust_bundle_pem,
        vec![http_get(cp.http, "/ca.pem").1]
    );
    write_file(d, "leaf.pem", chain[0]);
    let out = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    assert!(!openssl_ok(
        d,
        &["verify", "-CAfile", "root.pem", "leaf.pem"]
    ));
}

/// With etcd, every replica issues from the one CA in etcd and shows every replica's
/// sidecars with their identity and certificate expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_etcd_share_the_ca_and_each_others_identities() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let etcd = graylane_tests::etcd::Etcd::start(d);
    let tokens = tokens(d, "");
    let args = ["--token-file", tokens.as_str()];
    let a = ControlPlane::start_etcd(d, &etcd.endpoint(), "/identity", &args);
    let b = ControlPlane::start_etcd(d, &etcd.endpoint(), "/identity", &args);
    assert_eq!(http_get(a.http, "/ca.pem"), http_get(b.http, "/ca.pem"));

    let issued = issue(
        &a,
        Some(BOUND),
        &p256_csr(d, "orders"),
        ("shop", "orders"),
        "o-1",
    )
    .await
    .unwrap();
    let (_hold, _stream) = subscribe(&a, Some(BOUND), ("shop", "orders"), "o-1")
        .await
        .unwrap();
    let admin = write_file(d, "admin", ADMIN);
    let s = eventually(
        Duration::from_secs(10),
        "replica B to show o-1 with its certificate",
        || {
            let out = b.cli(&["--token-file", &admin, "status", "-o", "json"]);
            let sidecars = out.json()["sidecars"].as_array().cloned()?;
            sidecars
                .into_iter()
                .find(|s| s["instance"] == "o-1" && s["certNotAfter"] == issued.not_after)
        },
    );
    assert_eq!(s["identity"], SHOP_ORDERS);
}
