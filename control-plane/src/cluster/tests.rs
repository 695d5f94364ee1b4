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
        scope: ListedScope::Unknown,
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
    // Its endpoint scope is not known either: listed as such, not as `all`.
    assert_eq!(entry.scope, ListedScope::Unknown);
}

#[test]
fn a_record_carries_the_endpoint_scope_within_the_listing_bound() {
    let record = |scope: ListedScope| {
        let entry = SidecarEntry {
            hello: Hello {
                service: "web".into(),
                instance_id: "web-1".into(),
                ..Hello::default()
            },
            identity: String::new(),
            cert_not_after: 0,
            connected_at_ms: 1,
            acked_version: 0,
            acked_revision: 2,
            nack: None,
            scope,
        };
        let json = serde_json::to_vec(&Stored::of(entry, "replica-a")).unwrap();
        (
            json.clone(),
            serde_json::from_slice::<Stored>(&json)
                .unwrap()
                .entry()
                .scope,
        )
    };
    for scope in [
        ListedScope::Unknown,
        ListedScope::All,
        ListedScope::Scoped {
            len: 2,
            first: vec![
                ("default".into(), "orders".into()),
                ("shop".into(), "web".into()),
            ]
            .into(),
        },
    ] {
        assert_eq!(record(scope.clone()).1, scope);
    }
    let (json, _) = record(ListedScope::Unknown);
    assert!(!String::from_utf8(json).unwrap().contains("endpointScope"));
    // Another replica's record naming more than a listing shows: cut to the bound,
    // the count kept.
    let names: Vec<_> = (0..LISTED_SCOPE + 5)
        .map(|i| ("default", format!("s{i}")))
        .collect();
    let stored = serde_json::json!({"service": "web", "instance": "web-1", "address": "",
        "labels": {}, "replica": "replica-b", "connectedAtMs": 1, "ackedRevision": 2,
        "nack": null, "endpointScope": {"scoped": true, "serviceCount": 900, "services": names}});
    let entry = serde_json::from_value::<Stored>(stored).unwrap().entry();
    let ListedScope::Scoped { len, first } = entry.scope else {
        panic!("{:?}", entry.scope)
    };
    assert_eq!((len, first.len()), (900, LISTED_SCOPE));
}
