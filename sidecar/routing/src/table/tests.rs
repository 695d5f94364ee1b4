//! The gate API and table-wide behaviour.

use std::collections::BTreeMap;

use super::test_support::{inst, policy, rules};
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
