//! Namespaces in a rule set: defaults, validation, identity per (kind, namespace,
//! name), service references, and lookups per (namespace, service).

use super::*;

/// A document of `kind` named `name`, in `namespace` when given, with this spec body.
fn doc(kind: &str, name: &str, namespace: Option<&str>, spec: &str) -> String {
    let ns = namespace.map_or_else(String::new, |n| format!(", namespace: {n}"));
    format!(
        "apiVersion: graylane.io/v1\nkind: {kind}\nmetadata: {{name: {name}{ns}}}\nspec:\n{spec}"
    )
}

fn policy(name: &str, namespace: Option<&str>, service: &str, release: &str) -> String {
    doc(
        "RoutePolicy",
        name,
        namespace,
        &format!("  service: {service}\n  release: {release}\n"),
    )
}

fn peer(name: &str, namespace: Option<&str>, mtls: &str, services: Option<&str>) -> String {
    let services = services.map_or_else(String::new, |s| format!("  services: {s}\n"));
    doc(
        "PeerPolicy",
        name,
        namespace,
        &format!("  mtls: \"{mtls}\"\n{services}"),
    )
}

fn set(docs: &[&str]) -> RuleSet {
    RuleSet::from_yaml("rules.yaml", &docs.join("---\n")).unwrap()
}

#[test]
fn a_document_without_a_namespace_is_in_default_and_writing_it_changes_nothing() {
    let bare = set(&[&policy("orders", None, "orders", "gray")]);
    let explicit = set(&[&policy("orders", Some("default"), "orders", "gray")]);
    assert_eq!(bare, explicit);
    let r = bare.get(Kind::RoutePolicy, "default", "orders").unwrap();
    assert_eq!(r.namespace(), "default");
    assert_eq!(r.metadata().namespace, None);
    // The stored form of a set written before namespaces existed is unchanged.
    assert!(!bare.to_yaml().contains("namespace"));
    assert_eq!(bare.release_of("default", "orders"), Release::Gray);
    assert_eq!(bare.release_of("shop", "orders"), Release::All);
}

#[test]
fn a_namespace_that_is_no_dns_label_is_refused_naming_the_field() {
    for bad in ["Shop", "shop.staging", "-shop", "sh_op"] {
        let errors = set_errors(&[&policy("orders", Some(bad), "orders", "all")]);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert_eq!(errors[0].path, "metadata.namespace", "{bad}");
        assert!(errors[0].reason.contains("not a valid name"), "{errors:?}");
    }
}

#[test]
fn one_name_in_two_namespaces_is_two_resources_and_twice_in_one_is_refused() {
    let two = set(&[
        &policy("orders", Some("shop"), "orders", "gray"),
        &policy("orders", Some("staging"), "orders", "prod"),
    ]);
    assert_eq!(two.len(), 2);
    assert_eq!(two.release_of("shop", "orders"), Release::Gray);
    assert_eq!(two.release_of("staging", "orders"), Release::Prod);
    assert_eq!(two.release_of("default", "orders"), Release::All);
    let errors = set_errors(&[
        &policy("orders", Some("shop"), "orders", "gray"),
        &policy("orders", Some("shop"), "payments", "gray"),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "rules.yaml: document 2 (RoutePolicy/orders): metadata.name: RoutePolicy \"orders\" \
         in namespace \"shop\" is already defined in rules.yaml document 1"
    );
}

#[test]
fn a_reference_names_its_namespace_or_the_documents() {
    let s = set(&[&policy(
        "staging-orders",
        Some("shop"),
        "orders.staging",
        "gray",
    )]);
    assert_eq!(s.release_of("staging", "orders"), Release::Gray);
    assert_eq!(s.release_of("shop", "orders"), Release::All);
    assert!(s.route_policy_for("staging", "orders").is_some());
    // Two policies naming one service, from two namespaces, conflict.
    let errors = set_errors(&[
        &policy("mine", Some("shop"), "orders.staging", "gray"),
        &policy("orders", Some("staging"), "orders", "prod"),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.service");
    assert!(
        errors[0].reason.contains(
            "service \"orders.staging\" already has RoutePolicy \"mine\" in namespace \"shop\""
        ),
        "{errors:?}"
    );
}

#[test]
fn a_host_form_is_no_reference() {
    let errors = set_errors(&[&policy("orders", None, "orders.shop.svc", "all")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.service");
    assert!(errors[0].reason.contains("NAME.NAMESPACE"), "{errors:?}");
    let tagged = doc(
        "TagPolicy",
        "edge",
        Some("shop"),
        "  services: [frontend, web.a.b]\n",
    );
    let errors = set_errors(&[&tagged]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.services[1]");
}

#[test]
fn tag_policies_claim_services_per_namespace() {
    let edge = |name: &str, ns: Option<&str>, services: &str| {
        doc("TagPolicy", name, ns, &format!("  services: {services}\n"))
    };
    set(&[
        &edge("edge", Some("shop"), "[frontend]"),
        &edge("edge", Some("staging"), "[frontend]"),
    ]);
    let errors = set_errors(&[
        &edge("a", Some("shop"), "[frontend]"),
        &edge("b", None, "[frontend.shop]"),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.services[0]");
}

#[test]
fn the_mtls_mode_is_per_namespace_and_the_mesh_wide_policy_any_namespaces() {
    let s = set(&[
        &peer("shop-orders", Some("shop"), "strict", Some("[orders]")),
        &peer(
            "staging-orders",
            Some("shop"),
            "off",
            Some("[orders.staging]"),
        ),
        &peer("mesh", Some("security"), "permissive", None),
    ]);
    assert_eq!(s.mtls_mode("shop", "orders"), MtlsMode::Strict);
    assert_eq!(s.mtls_mode("staging", "orders"), MtlsMode::Off);
    assert_eq!(s.mtls_mode("default", "orders"), MtlsMode::Permissive);
    let strict = set(&[&peer("mesh", Some("security"), "strict", None)]);
    assert_eq!(strict.mtls_mode("anywhere", "orders"), MtlsMode::Strict);
    // Still one mesh-wide policy, whatever the namespaces.
    let errors = set_errors(&[
        &peer("a", Some("shop"), "strict", None),
        &peer("b", Some("staging"), "off", None),
    ]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.services");
}

#[test]
fn release_set_writes_a_policy_in_the_services_namespace() {
    let mut s = set(&[&policy("orders", None, "orders", "all")]);
    s.set_release("staging", "orders", Release::Gray).unwrap();
    assert_eq!(s.release_of("staging", "orders"), Release::Gray);
    assert_eq!(s.release_of("default", "orders"), Release::All);
    let created = s.get(Kind::RoutePolicy, "staging", "orders").unwrap();
    assert!(created.to_yaml().contains("namespace: staging"));
    // What was written reads back as the same set.
    assert_eq!(RuleSet::from_yaml("stored", &s.to_yaml()).unwrap(), s);
    let errors = s
        .set_release("Staging", "orders", Release::Gray)
        .unwrap_err();
    assert_eq!(errors[0].path, "metadata.namespace");
}

#[test]
fn a_removal_names_its_namespace() {
    let mut s = set(&[
        &policy("orders", Some("shop"), "orders", "gray"),
        &policy("orders", Some("staging"), "orders", "gray"),
    ]);
    assert!(s.remove(Kind::RoutePolicy, "default", "orders").is_none());
    assert!(s.remove(Kind::RoutePolicy, "shop", "orders").is_some());
    assert_eq!(s.release_of("shop", "orders"), Release::All);
    assert_eq!(s.release_of("staging", "orders"), Release::Gray);
}

#[test]
fn a_prune_scoped_to_a_namespace_removes_only_that_namespaces_resources() {
    let lane = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\n\
                spec: {tag: gray, selector: {version: v2}}\n";
    let in_force = set(&[
        lane,
        &policy("orders", Some("shop"), "orders", "gray"),
        &policy("cart", Some("shop"), "cart", "gray"),
        &policy("orders", Some("staging"), "orders", "gray"),
        &peer("strict", Some("staging"), "strict", None),
    ]);
    let files = set(&[&policy("orders", Some("shop"), "orders", "all")]);

    let mut scoped = in_force.clone();
    scoped.apply(files.clone(), &Prune::new(true, Some("shop")));
    let kept: std::collections::BTreeSet<String> =
        scoped.iter().map(Resource::display_ref).collect();
    let expected = [
        "Lane/gray",
        "RoutePolicy/orders (shop)",
        "RoutePolicy/orders (staging)",
        "PeerPolicy/strict (staging)",
    ];
    assert_eq!(kept, expected.map(String::from).into_iter().collect());
    assert!(scoped.get(Kind::RoutePolicy, "shop", "cart").is_none());
    assert_eq!(scoped.release_of("shop", "orders"), Release::All);
    assert_eq!(scoped.release_of("staging", "orders"), Release::Gray);

    let mut whole = in_force.clone();
    whole.apply(files.clone(), &Prune::new(true, None));
    assert_eq!(
        whole, files,
        "an unscoped prune makes the files the whole set"
    );

    let mut merged = in_force.clone();
    merged.apply(files, &Prune::new(false, Some("shop")));
    assert_eq!(merged.len(), in_force.len(), "no prune removes nothing");
    assert_eq!(
        Prune::new(true, Some("")),
        Prune::Namespace("default".into())
    );
}
