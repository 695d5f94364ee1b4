//! The gate API and table-wide behaviour.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::RuleSet;

use super::test_support::{Req, ids, inst, policy, rules, tag};
use super::*;

fn labels(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("version".to_owned(), version.to_owned())])
}

fn gate_of(release: &str, version: &str) -> (Option<String>, Release, bool) {
    let t = RoutingTable::build(
        &rules(&policy("orders", &format!("  release: {release}\n"))),
        Vec::new(),
    );
    let g = t.gate("default", "orders", &labels(version));
    (g.lane.map(str::to_owned), g.release, g.active)
}

#[test]
fn gate_under_release_all_is_active_for_everyone() {
    assert_eq!(
        gate_of("all", "v2"),
        (Some("gray".into()), Release::All, true)
    );
    assert_eq!(gate_of("all", "v1"), (None, Release::All, true));
}

#[test]
fn gate_under_release_gray_is_active_for_lane_instances_only() {
    assert_eq!(
        gate_of("gray", "v2"),
        (Some("gray".into()), Release::Gray, true)
    );
    assert_eq!(gate_of("gray", "v1"), (None, Release::Gray, false));
}

#[test]
fn gate_under_release_prod_is_active_for_base_instances_only() {
    assert_eq!(
        gate_of("prod", "v2"),
        (Some("gray".into()), Release::Prod, false)
    );
    assert_eq!(gate_of("prod", "v1"), (None, Release::Prod, true));
}

#[test]
fn gate_without_a_policy_is_release_all() {
    let t = RoutingTable::build(&rules(""), Vec::new());
    let g = t.gate("default", "users", &labels("v3"));
    assert_eq!(
        (g.lane, g.release, g.active),
        (Some("blue"), Release::All, true)
    );
}

#[test]
fn gate_follows_lane_overrides() {
    let body = "  release: gray\n  subsets: [{name: c, labels: {track: canary}}]\n  lanes: [{tag: gray, subset: c}]\n";
    let t = RoutingTable::build(&rules(&policy("orders", body)), Vec::new());
    let mut canary = labels("v1");
    canary.insert("track".into(), "canary".into());
    assert_eq!(t.gate("default", "orders", &canary).lane, Some("gray"));
    assert_eq!(t.gate("default", "orders", &labels("v2")).lane, None);
    // The lanes an instance is in, as status shows them, follow the override too; a
    // service without one follows the Lanes' selectors.
    assert_eq!(t.lanes_of("default", "orders", &canary), ["gray"]);
    assert!(t.lanes_of("default", "orders", &labels("v2")).is_empty());
    assert_eq!(t.lanes_of("default", "users", &labels("v2")), ["gray"]);
    assert!(t.lanes_of("default", "users", &BTreeMap::new()).is_empty());
}

#[test]
fn instances_are_listed_in_id_order() {
    let list = vec![
        inst("orders", "o2", "v1"),
        inst("orders", "o1", "v1"),
        inst("users", "u1", "v1"),
    ];
    let t = RoutingTable::build(&rules(""), list);
    let ids: Vec<&str> = t
        .instances("default", "orders")
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, vec!["o1", "o2"]);
}

#[test]
fn the_table_is_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<RoutingTable>();
}

#[test]
fn table_answers_policy_questions() {
    let t = RoutingTable::build(
        &rules(&policy("orders", "  release: prod\n  timeout: 2s\n")),
        Vec::new(),
    );
    assert_eq!(t.release_of("default", "orders"), Release::Prod);
    assert_eq!(t.release_of("default", "users"), Release::All);
    assert!(
        t.route_policy("default", "orders")
            .unwrap()
            .spec
            .timeout
            .is_some()
    );
    assert!(t.is_lane_tag(&Tag::parse("red").unwrap()));
    assert!(!t.is_lane_tag(&Tag::parse("purple").unwrap()));
}

mod namespaces;

/// Orders with a weighted split and a mirror, users without a policy.
fn split_and_mirror() -> RuleSet {
    rules(&policy(
        "orders",
        "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n  default: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]\n  mirror: {subset: v2, percent: 100}\n",
    ))
}

/// Everything a table decides about `service`, as text (the services' and policies'
/// own types hold no hash maps, so equal tables print the same).
fn decided(t: &RoutingTable, service: &str) -> String {
    format!(
        "{:?} {:?}",
        t.services.get("default", service),
        t.policy("default", service)
    )
}

/// `table.with_instances` of `instances`, borrowed as the sidecar hands them.
fn with(table: &RoutingTable, instances: &[Instance]) -> RoutingTable {
    table.with_instances(&instances.iter().collect::<Vec<_>>())
}

#[test]
fn a_table_with_new_instances_decides_as_a_fresh_build() {
    let rules = split_and_mirror();
    let before = vec![
        inst("orders", "o1", "v1"),
        inst("users", "u1", "v1"),
        inst("gone", "g1", "v1"),
    ];
    let old = RoutingTable::build(&rules, before);
    // orders gains its v2 (and with it a mirror target), gone goes, payments comes.
    let after = vec![
        inst("payments", "p1", "v1"),
        inst("orders", "o2", "v2"),
        inst("users", "u1", "v1"),
        inst("orders", "o1", "v1"),
    ];
    let updated = with(&old, &after);
    let fresh = RoutingTable::build(&rules, after);
    for service in ["orders", "users", "gone", "payments"] {
        assert_eq!(
            decided(&updated, service),
            decided(&fresh, service),
            "{service}"
        );
    }
    assert!(updated.instances("default", "gone").is_empty());
    let mirror = updated
        .policy("default", "orders")
        .mirror(0)
        .expect("mirrors to o2");
    assert_eq!(
        mirror.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["o2"]
    );
    let gray = updated.route("default", "orders", Some(&tag("gray")), &Req::new(), 0);
    assert_eq!(gray.map(|r| ids(&r)), Ok(vec!["o2"]));
}

#[test]
fn a_table_with_new_instances_shares_what_did_not_change() {
    let rules = split_and_mirror();
    let old = RoutingTable::build(
        &rules,
        vec![inst("orders", "o1", "v1"), inst("users", "u1", "v1")],
    );
    let same = with(
        &old,
        &[inst("users", "u1", "v1"), inst("orders", "o1", "v1")],
    );
    assert!(Arc::ptr_eq(&old.compiled, &same.compiled));
    for service in ["orders", "users"] {
        let (a, b) = (
            old.services.get("default", service),
            same.services.get("default", service),
        );
        assert!(Arc::ptr_eq(a.unwrap(), b.unwrap()), "{service}");
    }
    let orders = |t: &RoutingTable| std::ptr::from_ref(t.policy("default", "orders"));
    assert_eq!(orders(&old), orders(&same));

    // A label change is a change: that service (and its policy) is compiled again.
    let relabelled = with(
        &same,
        &[inst("users", "u1", "v1"), inst("orders", "o1", "v2")],
    );
    let (a, b) = (
        same.services.get("default", "orders"),
        relabelled.services.get("default", "orders"),
    );
    assert!(!Arc::ptr_eq(a.unwrap(), b.unwrap()));
    assert_ne!(orders(&same), orders(&relabelled));
    let (a, b) = (
        same.services.get("default", "users"),
        relabelled.services.get("default", "users"),
    );
    assert!(Arc::ptr_eq(a.unwrap(), b.unwrap()));
    assert_eq!(
        decided(&relabelled, "orders"),
        decided(
            &RoutingTable::build(
                &rules,
                vec![inst("users", "u1", "v1"), inst("orders", "o1", "v2")]
            ),
            "orders"
        )
    );
}

#[test]
fn instances_of_one_service_in_two_namespaces_stay_two_services() {
    let mut staging = inst("orders", "s1", "v1");
    staging.namespace = "staging".into();
    let mut unnamed = inst("orders", "d2", "v1");
    unnamed.namespace = String::new();
    let t = with(
        &RoutingTable::build(&rules(""), Vec::new()),
        &[staging, inst("orders", "d1", "v1"), unnamed],
    );
    let ids = |ns| {
        t.instances(ns, "orders")
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("default"), ["d1", "d2"]);
    assert_eq!(ids("staging"), ["s1"]);
    // Handed in another order, the same instances are the same service table.
    let again = with(
        &t,
        &[
            inst("orders", "d1", "v1"),
            {
                let mut s = inst("orders", "s1", "v1");
                s.namespace = "staging".into();
                s
            },
            {
                let mut d = inst("orders", "d2", "v1");
                d.namespace = String::new();
                d
            },
        ]
        .into_iter()
        .rev()
        .collect::<Vec<_>>(),
    );
    for ns in ["default", "staging"] {
        let (a, b) = (
            t.services.get(ns, "orders"),
            again.services.get(ns, "orders"),
        );
        assert!(Arc::ptr_eq(a.unwrap(), b.unwrap()), "{ns}");
    }
}

#[test]
fn a_policy_outlives_its_services_instances() {
    let rules = rules(&policy(
        "orders",
        "  timeout: 2s\n  subsets: [{name: v1, labels: {version: v1}}]\n  mirror: {subset: v1, percent: 100}\n",
    ));
    let held = RoutingTable::build(&rules, vec![inst("orders", "o1", "v1")]);
    assert!(held.policy("default", "orders").mirror(0).is_some());
    let none = with(&held, &[]);
    let policy = none.policy("default", "orders");
    assert_eq!(policy.timeout(), Some(std::time::Duration::from_secs(2)));
    assert!(policy.mirror(0).is_none(), "no instance left to mirror to");
    let back = with(&none, &[inst("orders", "o1", "v1")]);
    assert!(back.policy("default", "orders").mirror(0).is_some());
}
