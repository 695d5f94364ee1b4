use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graylane_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::Code;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{Identities, ServiceAccount, decide};
use crate::api::auth::{Principal, Role};
use crate::ca::{MeshCa, generate_root};

const TTL: Duration = Duration::from_secs(3600);

fn unbound() -> Principal {
    Principal {
        role: Role::Sidecar,
        bound: None,
        presented: true,
    }
}

fn bound(ns: &str, sa: &str) -> Principal {
    Principal {
        role: Role::Sidecar,
        bound: Some(ServiceAccount::new(ns, sa).unwrap()),
        presented: true,
    }
}

fn csr() -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    CertificateParams::new(vec!["ignored.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn request(ns: &str, sa: &str) -> pb::CertificateRequest {
    pb::CertificateRequest {
        csr_pem: csr(),
        namespace: ns.into(),
        service_account: sa.into(),
        instance_id: "orders-1".into(),
    }
}

fn identities(extra: Vec<String>) -> Identities {
    let root = generate_root("cluster.local").unwrap();
    let ca = MeshCa::from_pem(&root.cert, &root.key).unwrap();
    Identities::new("cluster.local", TTL, Some(ca), extra).unwrap()
}

fn ders(chain: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(chain.as_bytes())
        .map(|c| c.unwrap().to_vec())
        .collect()
}

#[test]
fn a_bound_credential_decides_and_an_unbound_one_asks() {
    let orders = ServiceAccount::new("shop", "orders").unwrap();
    assert_eq!(
        decide(&bound("shop", "orders"), "shop", "orders").unwrap(),
        orders
    );
    let denied = decide(&bound("shop", "orders"), "shop", "payments").unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("shop/orders"), "{denied:?}");
    assert_eq!(
        decide(&bound("default", "orders"), "", "orders").unwrap(),
        ServiceAccount::new("default", "orders").unwrap(),
        "no namespace is `default`"
    );
    assert_eq!(decide(&unbound(), "shop", "orders").unwrap(), orders);
    for (ns, sa) in [
        ("Shop", "orders"),
        ("shop", ""),
        ("a.b", "orders"),
        ("shop", "x/y"),
    ] {
        let err = decide(&unbound(), ns, sa).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{ns}/{sa}");
    }
}

#[test]
fn a_workload_certificate_carries_only_the_identity() {
    let ids = identities(Vec::new());
    let before = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let issued = ids.issue(&unbound(), &request("shop", "orders")).unwrap();
    assert_eq!(issued.identity, "spiffe://cluster.local/ns/shop/sa/orders");
    assert!((issued.not_after - before - 3600).abs() <= 2);
    let chain = ders(&issued.certificate_chain_pem);
    assert_eq!(chain.len(), 1, "a root is never part of the chain");
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        [GeneralName::URI("spiffe://cluster.local/ns/shop/sa/orders")]
    );
    assert!(leaf.subject().iter().next().is_none(), "an empty subject");
    let san_ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap();
    assert!(
        san_ext.critical,
        "with an empty subject the SAN is critical"
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert!(!leaf.is_ca());
    assert_eq!(leaf.validity().not_after.timestamp(), issued.not_after);
    assert!(
        leaf.validity().not_before.timestamp() <= before - 59,
        "backdated"
    );
    assert_eq!(issued.trust_bundle_pem, [ids.ca_pem().unwrap().to_string()]);
}

#[test]
fn errors_issue_nothing() {
    let ids = identities(Vec::new());
    let mut bad = request("shop", "orders");
    bad.csr_pem = "garbage".into();
    assert_eq!(
        ids.issue(&unbound(), &bad).unwrap_err().code(),
        Code::InvalidArgument
    );
    let no_sa = request("shop", "");
    assert_eq!(
        ids.issue(&unbound(), &no_sa).unwrap_err().code(),
        Code::InvalidArgument
    );
    let other = request("shop", "payments");
    assert_eq!(
        ids.issue(&bound("shop", "orders"), &other)
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    // An operator's token is never a workload identity; without credentials (a
    // local mesh) anyone may still get one.
    for role in [Role::Admin, Role::Viewer] {
        let operator = Principal {
            role,
            bound: None,
            presented: true,
        };
        let denied = ids
            .issue(&operator, &request("shop", "orders"))
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{role:?}");
        assert!(
            denied.message().contains("never a workload identity"),
            "{denied:?}"
        );
    }
    ids.issue(&Principal::anyone(), &request("shop", "orders"))
        .unwrap();
    // The store did not hand the CA over yet: retry later.
    let waiting = Identities::new("cluster.local", TTL, None, Vec::new()).unwrap();
    assert!(waiting.trust_bundle().is_none() && waiting.ca_pem().is_none());
    let err = waiting
        .issue(&unbound(), &request("shop", "orders"))
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(Identities::new("Cluster Local", TTL, None, Vec::new()).is_err());
}

#[test]
fn an_operators_intermediate_goes_along_and_extra_trust_follows_the_ca() {
    let root = generate_root("cluster.local").unwrap();
    let root_issuer =
        Issuer::from_ca_cert_pem(&root.cert, KeyPair::from_pem(&root.key).unwrap()).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "graylane intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let intermediate = params.signed_by(&key, &root_issuer).unwrap();
    let ca = MeshCa::from_pem(&intermediate.pem(), &key.serialize_pem()).unwrap();
    let old = generate_root("cluster.local").unwrap().cert;
    let ids = Identities::new("cluster.local", TTL, Some(ca), vec![old.clone()]).unwrap();
    let issued = ids.issue(&unbound(), &request("shop", "orders")).unwrap();
    let chain = ders(&issued.certificate_chain_pem);
    assert_eq!(chain.len(), 2, "leaf, then the intermediate");
    assert_eq!(chain[1], intermediate.der().to_vec());
    assert_eq!(issued.trust_bundle_pem.len(), 2);
    assert_eq!(issued.trust_bundle_pem[0], ids.ca_pem().unwrap());
    assert_eq!(issued.trust_bundle_pem[1], old);
}
