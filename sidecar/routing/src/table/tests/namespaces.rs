//! The table keyed by (namespace, service): instances, policies and tag policies of
//! one namespace never answer for another.

use super::*;
use crate::table::test_support::{Req, ids, tag};

fn in_ns(namespace: &str, service: &str, id: &str, version: &str) -> Instance {
    Instance {
        namespace: namespace.to_owned(),
        ..inst(service, id, version)
    }
}

fn table(extra: &str) -> RoutingTable {
    RoutingTable::build(
        &rules(extra),
        vec![
            in_ns("shop", "orders", "shop-1", "v1"),
            in_ns("staging", "orders", "staging-1", "v1"),
            in_ns("staging", "orders", "staging-2", "v2"),
            // No namespace from an older control plane: `default`.
            in_ns("", "orders", "default-1", "v1"),
        ],
    )
}

const STAGING_GRAY: &str = "apiVersion: graylane.io/v1\nkind: RoutePolicy\n\
    metadata: {name: orders, namespace: staging}\nspec: {service: orders, release: gray}\n";

#[test]
fn each_namespace_routes_to_its_own_instances() {
    let t = table("");
    let req = Req::new();
    let route = |ns| ids(&t.route(ns, "orders", None, &req, 0).unwrap());
    assert_eq!(route("shop"), ["shop-1"]);
    // staging-2 (v2) is in lane gray: untagged requests go to the base instance.
    assert_eq!(route("staging"), ["staging-1"]);
    let gray = tag("gray");
    assert_eq!(
        ids(&t.route("staging", "orders", Some(&gray), &req, 0).unwrap()),
        ["staging-2"]
    );
    assert_eq!(route("default"), ["default-1"]);
    assert_eq!(t.instances("staging", "orders").len(), 2);
    assert_eq!(
        t.route("prod", "orders", None, &req, 0).unwrap_err(),
        RouteError::UnknownService {
            service: "orders.prod".into()
        }
    );
}

#[test]
fn a_release_state_changes_only_its_namespace() {
    let t = table(STAGING_GRAY);
    let req = Req::new();
    assert_eq!(
        ids(&t.route("staging", "orders", None, &req, 0).unwrap()),
        ["staging-2"]
    );
    assert_eq!(
        ids(&t.route("shop", "orders", None, &req, 0).unwrap()),
        ["shop-1"]
    );
    assert_eq!(t.release_of("staging", "orders"), Release::Gray);
    assert_eq!(t.release_of("shop", "orders"), Release::All);
    assert!(t.route_policy("shop", "orders").is_none());
    let labels = BTreeMap::from([("version".to_owned(), "v1".to_owned())]);
    assert!(!t.gate("staging", "orders", &labels).active);
    assert!(t.gate("shop", "orders", &labels).active);
}

#[test]
fn a_tag_policy_applies_in_its_namespace_only() {
    let t = table(
        "apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {name: edge, namespace: shop}\n\
         spec:\n  services: [orders]\n  rules: [{tag: gray, match: {headers: {x-beta: {exact: \"1\"}}}}]\n",
    );
    let req = Req::new().with_header("x-beta", "1");
    assert_eq!(
        t.inbound_tag("shop", "orders", None, &req).tag,
        Some(tag("gray"))
    );
    assert_eq!(t.inbound_tag("staging", "orders", None, &req).tag, None);
    assert!(t.has_tag_policy("shop", "orders"));
    assert!(!t.has_tag_policy("default", "orders"));
}

#[test]
fn explain_names_the_namespace_of_the_service() {
    let t = table(STAGING_GRAY);
    let e = t.explain("staging", "orders", None, None, &Req::new(), 0);
    assert!(
        e.steps[1].starts_with("2. orders in namespace staging: 2 instance(s), release state gray"),
        "{:?}",
        e.steps
    );
    let e = t.explain("default", "orders", None, None, &Req::new(), 0);
    assert!(
        e.steps[1].starts_with("2. orders: 1 instance(s)"),
        "{:?}",
        e.steps
    );
    let e = t.explain("prod", "orders", None, None, &Req::new(), 0);
    assert!(
        e.steps
            .iter()
            .any(|s| s.contains("no instance of orders.prod is registered")),
        "{:?}",
        e.steps
    );
}

#[test]
fn a_namespace_is_known_by_its_instances_or_its_policies() {
    let policy_only = "apiVersion: graylane.io/v1\nkind: RoutePolicy\n\
        metadata: {name: orders, namespace: quiet}\nspec: {service: orders}\n";
    let t = table(policy_only);
    for known in ["shop", "staging", "default", "quiet"] {
        assert!(t.has_namespace(known), "{known}");
    }
    assert!(!t.has_namespace("corp"));
    assert!(!t.has_namespace(""));
}
