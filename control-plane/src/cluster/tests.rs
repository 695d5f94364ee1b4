//! The etcd registry record: what it carries, and what an older replica's lacks.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn a_record_carries_the_namespace_and_service_account() {
    let entry = SidecarEntry {
        hello: Hello {
            service: "orders".into(),
            instance_id: "orders-1".into(),
            address: "10.0.0.7:15006".into(),
            namespace: "shop".into(),
            service_account: "orders-sa".into(),
            ..Hello::default()
        },
        identity: "spiffe://cluster.local/ns/shop/sa/orders-sa".into(),
        cert_not_after: 1_700_000_000,
        connected_at_ms: 1,
        acked_version: 0,
        acked_revision: 2,
        nack: None,
    };
    let json = serde_json::to_vec(&Stored::of(entry, "replica-a")).unwrap();
    let back = serde_json::from_slice::<Stored>(&json).unwrap().entry();
    assert_eq!(
        (back.identity.as_str(), back.cert_not_after),
        ("spiffe://cluster.local/ns/shop/sa/orders-sa", 1_700_000_000)
    );
    assert_eq!(
        (
            back.hello.namespace.as_str(),
            back.hello.service_account.as_str()
        ),
        ("shop", "orders-sa")
    );
}

#[test]
fn a_record_from_an_older_replica_gets_the_defaults() {
    let old = br#"{"service":"orders","instance":"orders-1","address":"10.0.0.7:15006",
        "labels":{},"replica":"replica-a","connectedAtMs":1,"ackedRevision":2,"nack":null}"#;
    let entry = serde_json::from_slice::<Stored>(old).unwrap().entry();
    assert_eq!(
        (
            entry.hello.namespace.as_str(),
            entry.hello.service_account.as_str()
        ),
        ("default", "orders")
    );
    // No identity known (it was decided by an older replica): none shown.
    assert_eq!((entry.identity.as_str(), entry.cert_not_after), ("", 0));
}
