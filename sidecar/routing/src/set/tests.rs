use super::*;
use crate::parse::parse_file;

fn lane(name: &str, tag: &str, extra: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {{name: {name}}}\nspec:\n  tag: {tag}\n  selector: {{lane: {name}}}\n{extra}"
    )
}

fn route_policy(name: &str, service: &str, extra: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {{name: {name}}}\nspec:\n  service: {service}\n{extra}"
    )
}

fn tag_policy(name: &str, services: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {{name: {name}}}\nspec:\n  services: {services}\n"
    )
}

fn files(docs: &[&str]) -> Vec<(String, String)> {
    vec![("rules.yaml".to_owned(), docs.join("---\n"))]
}

fn set_errors(docs: &[&str]) -> Vec<ValidationError> {
    RuleSet::from_files(&files(docs)).unwrap_err()
}

fn only(errs: Vec<ValidationError>) -> ValidationError {
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn two_route_policies_for_one_service_are_rejected() {
    let e = only(set_errors(&[
        &route_policy("a", "orders", ""),
        &route_policy("b", "orders", ""),
    ]));
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 2 (RoutePolicy/b): spec.service: service \"orders\" already has RoutePolicy \"a\" (rules.yaml document 1)"
    );
}

#[test]
fn two_lanes_with_one_tag_are_rejected() {
    let e = only(set_errors(&[
        &lane("a", "gray", ""),
        &lane("b", "gray", ""),
    ]));
    assert_eq!((e.document, e.path.as_str()), (Some(2), "spec.tag"));
    assert!(e.reason.contains("already used by Lane \"a\""), "{e}");
}

#[test]
fn duplicate_kind_and_name_across_files_is_rejected() {
    let files = vec![
        ("a.yaml".to_owned(), lane("gray", "gray", "")),
        (
            "b.yaml".to_owned(),
            format!(
                "{}---\n{}",
                tag_policy("edge", "[web]"),
                lane("gray", "gray2", "")
            ),
        ),
    ];
    let e = only(RuleSet::from_files(&files).unwrap_err());
    assert_eq!(
        e.to_string(),
        "b.yaml: document 2 (Lane/gray): metadata.name: Lane \"gray\" is already defined in a.yaml document 1"
    );
}

#[test]
fn fallback_to_an_undeclared_lane_is_rejected() {
    let e = only(set_errors(&[&lane(
        "gray",
        "gray",
        "  fallback: [blue, base]\n",
    )]));
    assert_eq!(e.path, "spec.fallback[0]");
    assert!(e.reason.contains("lane \"blue\" is not declared"), "{e}");
}

#[test]
fn fallback_to_a_declared_lane_is_accepted() {
    RuleSet::from_files(&files(&[
        &lane("gray", "gray", "  fallback: [blue]\n"),
        &lane("blue", "blue", ""),
    ]))
    .unwrap();
}

#[test]
fn a_service_in_two_tag_policies_is_rejected() {
    let e = only(set_errors(&[
        &tag_policy("a", "[web, api]"),
        &tag_policy("b", "[shop, api]"),
    ]));
    assert_eq!((e.document, e.path.as_str()), (Some(2), "spec.services[1]"));
    assert!(
        e.reason.contains("already listed in TagPolicy \"a\""),
        "{e}"
    );
}

#[test]
fn a_lane_override_for_an_undeclared_tag_is_rejected() {
    let p = route_policy(
        "orders",
        "orders",
        "  subsets: [{name: v2, labels: {version: v2}}]\n  lanes: [{tag: grey, subset: v2}]\n",
    );
    let e = only(set_errors(&[&lane("gray", "gray", ""), &p]));
    assert_eq!(e.path, "spec.lanes[0].tag");
    assert!(e.reason.contains("no Lane has tag \"grey\""), "{e}");
}

#[test]
fn document_errors_and_set_errors_are_reported_together() {
    let errs = set_errors(&[
        &lane("a", "gray", ""),
        &lane("b", "gray", ""),
        &lane("c", "-bad", ""),
    ]);
    let got: Vec<(Option<usize>, &str)> =
        errs.iter().map(|e| (e.document, e.path.as_str())).collect();
    assert_eq!(got, vec![(Some(3), "spec.tag"), (Some(2), "spec.tag")]);
}

#[test]
fn stored_resources_are_named_as_stored_rules() {
    let mut set = RuleSet::new();
    for (r, _) in parse_file("x", &lane("gray", "gray", "  fallback: [blue]\n")).unwrap() {
        set.insert(r, None);
    }
    let e = only(set.validate().unwrap_err());
    assert_eq!(
        e.to_string(),
        "(stored rules) (Lane/gray): spec.fallback[0]: lane \"blue\" is not declared"
    );
}

#[test]
fn a_set_over_ten_thousand_resources_is_rejected() {
    let (template, _) = parse_file("x", &lane("l", "t", "")).unwrap().remove(0);
    let Resource::Lane(template) = template else {
        panic!()
    };
    let mut set = RuleSet::new();
    for i in 0..=MAX_DOCUMENTS {
        let mut l = template.clone();
        l.metadata.name = crate::Name::new(format!("l{i}")).unwrap();
        l.spec.tag = crate::Tag::parse(&format!("t{i}")).unwrap();
        set.insert(Resource::Lane(l), None);
    }
    let e = only(set.validate().unwrap_err());
    assert!(
        e.reason.contains("10001 resources, over the 10000 limit"),
        "{e}"
    );
}

fn sample() -> RuleSet {
    RuleSet::from_files(&files(&[
        &tag_policy("edge", "[web]"),
        &route_policy("orders", "orders", "  release: gray\n"),
        &lane("gray", "gray", ""),
        &lane("blue", "blue", "  fallback: [gray, base]\n"),
    ]))
    .unwrap()
}

#[test]
fn iteration_is_by_kind_then_name() {
    let set = sample();
    let got: Vec<(Kind, &str)> = set.iter().map(|r| (r.kind(), r.name())).collect();
    assert_eq!(
        got,
        vec![
            (Kind::Lane, "blue"),
            (Kind::Lane, "gray"),
            (Kind::RoutePolicy, "orders"),
            (Kind::TagPolicy, "edge")
        ]
    );
    assert_eq!(
        set.origin(Kind::Lane, "default", "gray").unwrap().document,
        3
    );
}

#[test]
fn to_yaml_parses_back_to_an_equal_set() {
    let set = sample();
    let text = set.to_yaml();
    assert_eq!(RuleSet::from_yaml("rules.yaml", &text).unwrap(), set);
    assert_eq!(
        text.matches("\n---\n").count() + usize::from(text.starts_with("---\n")),
        3,
        "{text}"
    );
}

#[test]
fn an_empty_set_is_empty_yaml() {
    assert_eq!(RuleSet::new().to_yaml(), "");
    assert!(RuleSet::from_yaml("x", "").unwrap().is_empty());
}

#[test]
fn insert_replaces_and_remove_returns() {
    let mut set = sample();
    let old = set.get(Kind::Lane, "default", "gray").unwrap().clone();
    assert_eq!(set.insert(old.clone(), None), Some(old.clone()));
    assert_eq!(set.len(), 4);
    assert_eq!(set.remove(Kind::Lane, "default", "gray"), Some(old));
    assert_eq!(set.remove(Kind::Lane, "default", "gray"), None);
    assert_eq!(set.len(), 3);
    assert!(set.get(Kind::Lane, "default", "gray").is_none());
}

#[test]
fn equality_ignores_origins() {
    let a = sample();
    let mut b = RuleSet::new();
    for r in a.iter() {
        b.insert(r.clone(), None);
    }
    assert_eq!(a, b);
}

#[test]
fn policy_and_release_lookups() {
    let set = sample();
    assert_eq!(
        set.route_policy_for("default", "orders")
            .unwrap()
            .metadata
            .name
            .as_str(),
        "orders"
    );
    assert!(set.route_policy_for("default", "users").is_none());
    assert_eq!(set.release_of("default", "orders"), Release::Gray);
    assert_eq!(set.release_of("default", "users"), Release::All);
}

#[test]
fn kind_reads_cli_spellings() {
    for (s, k) in [
        ("Lane", Kind::Lane),
        ("lanes", Kind::Lane),
        ("routepolicy", Kind::RoutePolicy),
        ("routepolicies", Kind::RoutePolicy),
        ("TagPolicy", Kind::TagPolicy),
        ("tagpolicies", Kind::TagPolicy),
        ("PeerPolicy", Kind::PeerPolicy),
        ("peerpolicy", Kind::PeerPolicy),
        ("peerpolicies", Kind::PeerPolicy),
    ] {
        assert_eq!(s.parse::<Kind>().unwrap(), k);
    }
    assert!("Lanes".parse::<Kind>().is_err());
    assert_eq!(Kind::RoutePolicy.to_string(), "RoutePolicy");
}

#[test]
fn resources_deserialize_with_document_checks() {
    let r: Resource = serde_json::from_value(serde_json::json!({
        "apiVersion": "graylane.io/v1", "kind": "Lane", "metadata": {"name": "gray"},
        "spec": {"tag": "gray", "selector": {"version": "v2"}}
    }))
    .unwrap();
    assert_eq!(r.name(), "gray");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["kind"], "Lane");
    assert_eq!(serde_json::from_value::<Resource>(json).unwrap(), r);
    let e = serde_json::from_value::<Resource>(serde_json::json!({
        "apiVersion": "graylane.io/v1", "kind": "Lane", "metadata": {"name": "gray"},
        "spec": {"tag": "gray", "selector": {}}
    }))
    .unwrap_err();
    assert!(
        e.to_string().contains("spec.selector: an empty selector"),
        "{e}"
    );
}

fn peer_policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: graylane.io/v1\nkind: PeerPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

#[test]
fn a_second_mesh_wide_peer_policy_is_rejected() {
    let e = only(set_errors(&[
        &peer_policy("a", "  mtls: strict\n"),
        &peer_policy("b", "  mtls: off\n"),
    ]));
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 2 (PeerPolicy/b): spec.services: PeerPolicy \"a\" (rules.yaml document 1) already covers the whole mesh; list the services this one covers"
    );
}

#[test]
fn a_service_in_two_peer_policies_is_rejected_and_every_conflict_reported() {
    let errs = set_errors(&[
        &peer_policy("a", "  mtls: strict\n  services: [orders, cart]\n"),
        &peer_policy("b", "  mtls: off\n  services: [shop, cart, orders]\n"),
        &peer_policy("c", "  mtls: off\n"),
        &peer_policy("d", "  mtls: strict\n"),
    ]);
    let got: Vec<(Option<usize>, &str, &str)> = errs
        .iter()
        .map(|e| (e.document, e.path.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Some(2),
                "spec.services[1]",
                "service \"cart\" is already listed in PeerPolicy \"a\" (rules.yaml document 1)"
            ),
            (
                Some(2),
                "spec.services[2]",
                "service \"orders\" is already listed in PeerPolicy \"a\" (rules.yaml document 1)"
            ),
            (
                Some(4),
                "spec.services",
                "PeerPolicy \"c\" (rules.yaml document 3) already covers the whole mesh; list the services this one covers"
            ),
        ]
    );
}

#[test]
fn a_service_may_be_in_a_peer_policy_and_a_tag_policy() {
    RuleSet::from_files(&files(&[
        &peer_policy("a", "  mtls: strict\n  services: [web]\n"),
        &tag_policy("a", "[web]"),
    ]))
    .unwrap();
}

#[test]
fn mtls_mode_is_the_naming_policy_then_the_mesh_wide_then_permissive() {
    let empty = RuleSet::new();
    assert_eq!(empty.mtls_mode("default", "orders"), MtlsMode::Permissive);
    let named_only = RuleSet::from_files(&files(&[&peer_policy(
        "orders",
        "  mtls: off\n  services: [orders]\n",
    )]))
    .unwrap();
    assert_eq!(named_only.mtls_mode("default", "orders"), MtlsMode::Off);
    assert_eq!(
        named_only.mtls_mode("default", "cart"),
        MtlsMode::Permissive
    );
    let both = RuleSet::from_files(&files(&[
        // Named "a" so the mesh-wide one comes first: order must not matter.
        &peer_policy("a", "  mtls: strict\n"),
        &peer_policy("b", "  mtls: off\n  services: [orders]\n"),
    ]))
    .unwrap();
    assert_eq!(both.mtls_mode("default", "orders"), MtlsMode::Off);
    assert_eq!(both.mtls_mode("default", "cart"), MtlsMode::Strict);
}

#[test]
fn kind_names_list_every_kind() {
    let all: Vec<&str> = Kind::ALL.iter().map(Kind::as_str).collect();
    assert_eq!(Kind::NAMES, all.join(", "));
    for k in Kind::ALL {
        assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
    }
    let e = "Peer".parse::<Kind>().unwrap_err();
    assert!(e.ends_with(Kind::NAMES), "{e}");
}

mod namespaces;

mod rollouts;
