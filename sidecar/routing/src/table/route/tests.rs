use std::collections::BTreeMap;

use super::super::test_support::{Draws, Req, ids, inst, policy, rules, tag};
use crate::table::{FallbackInfo, FallbackTarget, RouteError, RoutingTable};

fn table(extra: &str, instances: &[(&str, &str)]) -> RoutingTable {
    let list = instances
        .iter()
        .map(|(id, v)| inst("orders", id, v))
        .collect();
    RoutingTable::build(&rules(extra), list)
}

const WEIGHTS: &str = "  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
  default: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
";

#[test]
fn a_tag_with_a_lane_goes_to_the_lane_instances() {
    let t = table("", &[("o1", "v1"), ("o2", "v2"), ("o3", "v2")]);
    let r = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o2", "o3"]);
    assert_eq!(r.lane, Some("gray"));
    assert_eq!(r.fallback, None);
    assert!(!r.base_fallback);
}

#[test]
fn an_empty_lane_falls_back_to_another_lane() {
    let t = table("", &[("o1", "v1"), ("o2", "v2")]);
    let r = t
        .route("default", "orders", Some(&tag("blue")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o2"]);
    assert_eq!(r.lane, Some("blue"));
    let fb = r.fallback.unwrap();
    assert_eq!(
        fb,
        FallbackInfo {
            from: "blue",
            to: FallbackTarget::Lane("gray"),
            release_prod: false
        }
    );
    assert_eq!(
        fb.to_string(),
        "no ready instance in lane blue, served by lane gray"
    );
}

#[test]
fn a_fallback_lane_own_fallback_is_not_followed() {
    // blue falls back to gray only; gray would fall back to base, but that is not followed.
    let t = table("", &[("o1", "v1")]);
    let e = t
        .route("default", "orders", Some(&tag("blue")), &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e,
        RouteError::NoInstance {
            service: "orders".into(),
            lane: Some("blue".into())
        }
    );
}

#[test]
fn an_empty_lane_falls_back_to_base() {
    let t = table("", &[("o1", "v1"), ("o4", "v4")]);
    let r = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o1"]);
    assert_eq!(r.fallback.unwrap().to, FallbackTarget::Base);
    assert!(!r.base_fallback);
}

#[test]
fn strict_lane_without_instances_is_no_instance_naming_service_and_lane() {
    let t = table("", &[("o1", "v1")]);
    let e = t
        .route("default", "orders", Some(&tag("red")), &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no ready instance of service orders in lane strict"
    );
}

#[test]
fn an_unknown_tag_routes_as_untagged() {
    let t = table("", &[("o1", "v1"), ("o2", "v2")]);
    let r = t
        .route("default", "orders", Some(&tag("purple")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o1"]);
    assert_eq!(r.lane, None);
    assert_eq!(r.fallback, None);
}

#[test]
fn untagged_without_weights_goes_to_base_instances() {
    let t = table("", &[("o1", "v1"), ("o2", "v2"), ("o0", "v0")]);
    let r = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert_eq!(ids(&r), vec!["o0", "o1"]);
    assert_eq!(r.subset, None);
}

#[test]
fn release_gray_serves_only_lane_instances() {
    let t = table(
        &policy("orders", "  release: gray\n"),
        &[("o1", "v1"), ("o2", "v2"), ("o3", "v3")],
    );
    let untagged = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert_eq!(ids(&untagged), vec!["o2", "o3"]);
    assert!(untagged.base_fallback);
    let gray = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&gray), vec!["o2"]);
    // The gray lane's fallback is base: under release gray, base is empty, so any
    // (lane) candidate serves.
    let t = table(
        &policy("orders", "  release: gray\n"),
        &[("o1", "v1"), ("o3", "v3")],
    );
    let gray = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&gray), vec!["o3"]);
    assert!(gray.base_fallback);
}

#[test]
fn release_prod_serves_only_base_instances() {
    let t = table(
        &policy("orders", "  release: prod\n"),
        &[("o1", "v1"), ("o2", "v2")],
    );
    let untagged = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert_eq!(ids(&untagged), vec!["o1"]);
    let gray = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&gray), vec!["o1"]);
    assert_eq!(gray.lane, Some("gray"));
    let fb = gray.fallback.unwrap();
    assert!(fb.release_prod);
    assert_eq!(fb.to_string(), "release prod, served by base");
}

#[test]
fn release_prod_sends_strict_lanes_to_base_too() {
    let t = table(
        &policy("orders", "  release: prod\n"),
        &[("o1", "v1"), ("o4", "v4")],
    );
    let r = t
        .route("default", "orders", Some(&tag("red")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o1"]);
}

#[test]
fn release_prod_with_only_lane_instances_is_no_instance() {
    let t = table(&policy("orders", "  release: prod\n"), &[("o2", "v2")]);
    let e = t
        .route("default", "orders", None, &Req::new(), 0)
        .unwrap_err();
    assert_eq!(e.to_string(), "no ready instance of service orders");
    let e = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no ready instance of service orders in lane gray"
    );
}

#[test]
fn release_all_lets_tagged_and_untagged_requests_use_their_instances() {
    let t = table(&policy("orders", ""), &[("o1", "v1"), ("o2", "v2")]);
    assert_eq!(
        ids(&t.route("default", "orders", None, &Req::new(), 0).unwrap()),
        vec!["o1"]
    );
    assert_eq!(
        ids(&t
            .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
            .unwrap()),
        vec!["o2"]
    );
}

fn share_of_v2(t: &RoutingTable, draws: usize) -> f64 {
    let mut v2 = 0u32;
    for random in Draws(7).take(draws) {
        let r = t
            .route("default", "orders", None, &Req::new(), random)
            .unwrap();
        if r.subset == Some("v2") {
            v2 += 1;
        }
    }
    f64::from(v2) / f64::from(u32::try_from(draws).unwrap())
}

#[test]
fn weights_split_untagged_traffic() {
    let t = table(
        &policy("orders", WEIGHTS),
        &[("o1", "v1"), ("o2", "v1"), ("o3", "v2")],
    );
    // 20,000 draws at p = 0.1: sigma is about 0.0021; allow more than 4 sigma.
    let share = share_of_v2(&t, 20_000);
    assert!((0.09..0.11).contains(&share), "{share}");
    let r = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    let want: Vec<&str> = if r.subset == Some("v1") {
        vec!["o1", "o2"]
    } else {
        vec!["o3"]
    };
    assert_eq!(ids(&r), want);
}

#[test]
fn sticky_key_always_gets_the_same_subset() {
    let body = format!("{WEIGHTS}  stickyBy: {{header: X-User-Id}}\n");
    let t = table(&policy("orders", &body), &[("o1", "v1"), ("o3", "v2")]);
    let mut seen = BTreeMap::new();
    for user in 0..1_000 {
        let req = Req::new().with_header("x-user-id", &format!("user-{user}"));
        let first = t.route("default", "orders", None, &req, 0).unwrap().subset;
        for random in Draws(user).take(20) {
            assert_eq!(
                t.route("default", "orders", None, &req, random)
                    .unwrap()
                    .subset,
                first
            );
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Without the key, the random number decides.
    assert!((0.07..0.13).contains(&share_of_v2(&t, 5_000)));
}

#[test]
fn sticky_by_cookie_uses_the_cookie() {
    let body = format!("{WEIGHTS}  stickyBy: {{cookie: uid}}\n");
    let t = table(&policy("orders", &body), &[("o1", "v1"), ("o3", "v2")]);
    let req = Req::new().with_cookie("uid", "alice");
    let first = t.route("default", "orders", None, &req, 1).unwrap().subset;
    assert!(
        Draws(3)
            .take(50)
            .all(|r| t.route("default", "orders", None, &req, r).unwrap().subset == first)
    );
}

#[test]
fn weights_are_renormalised_over_subsets_with_candidates() {
    let body = "  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v9, labels: {version: v9}}
  default: [{subset: v1, weight: 50}, {subset: v2, weight: 30}, {subset: v9, weight: 20}]
";
    let t = table(&policy("orders", body), &[("o1", "v1"), ("o2", "v2")]);
    let share = share_of_v2(&t, 20_000);
    // 30 / (50 + 30) = 0.375.
    assert!((0.36..0.39).contains(&share), "{share}");
}

#[test]
fn weights_without_any_candidate_fall_back_to_any_candidate() {
    let body =
        "  subsets: [{name: v9, labels: {version: v9}}]\n  default: [{subset: v9, weight: 100}]\n";
    let t = table(&policy("orders", body), &[("o1", "v1"), ("o2", "v2")]);
    let r = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert_eq!(ids(&r), vec!["o1", "o2"]);
    assert!(r.base_fallback);
}

#[test]
fn excluded_instances_get_no_traffic() {
    let t = table(
        &policy("orders", "  exclude: {instances: [o1, \"o3:8080\"]}\n"),
        &[("o1", "v1"), ("o2", "v1"), ("o3", "v1")],
    );
    assert_eq!(
        ids(&t.route("default", "orders", None, &Req::new(), 0).unwrap()),
        vec!["o2"]
    );
    assert_eq!(t.instances("default", "orders").len(), 3);
}

#[test]
fn a_service_with_every_instance_excluded_has_no_instance() {
    let t = table(
        &policy("orders", "  exclude: {instances: [o1]}\n"),
        &[("o1", "v1")],
    );
    let e = t
        .route("default", "orders", None, &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e,
        RouteError::NoInstance {
            service: "orders".into(),
            lane: None
        }
    );
}

#[test]
fn a_lane_override_picks_the_service_subset() {
    let body = "  subsets: [{name: canary, labels: {track: canary}}]\n  lanes: [{tag: gray, subset: canary}]\n";
    let mut canary = inst("orders", "c1", "v1");
    canary.labels.insert("track".into(), "canary".into());
    let list = vec![
        inst("orders", "o1", "v1"),
        inst("orders", "o2", "v2"),
        canary,
    ];
    let t = RoutingTable::build(&rules(&policy("orders", body)), list);
    let r = t
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["c1"]);
    assert_eq!(r.subset, Some("canary"));
    // With the override, version=v2 is not a gray instance of orders: it is base.
    assert_eq!(
        ids(&t.route("default", "orders", None, &Req::new(), 0).unwrap()),
        vec!["o1", "o2"]
    );
}

#[test]
fn a_service_only_in_a_lane_still_answers_untagged_traffic() {
    let t = table("", &[("o2", "v2")]);
    let r = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert_eq!(ids(&r), vec!["o2"]);
    assert!(r.base_fallback);
}

#[test]
fn unknown_service_differs_from_no_instance() {
    let t = table("", &[("o1", "v1")]);
    let e = t
        .route("default", "users", None, &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e,
        RouteError::UnknownService {
            service: "users".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown service users: no instance is registered"
    );
    assert!(t.instances("default", "users").is_empty());
    // Declared by a RoutePolicy, a service whose instances all left is known: 503.
    let declared = "apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: users}\nspec: {service: users}\n";
    let t = table(declared, &[("o1", "v1")]);
    let e = t
        .route("default", "users", Some(&tag("gray")), &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no ready instance of service users in lane gray",
        "{e:?}"
    );
}

#[test]
fn without_its_last_instance_a_lane_follows_its_fallback() {
    let t = table("", &[("o1", "v1"), ("o2", "v2"), ("o4", "v4")]);
    let gray = Some(tag("gray"));
    let rest = t
        .without("default", "orders", |i| i.address == "o2:8080")
        .unwrap();
    let r = rest
        .route("default", "orders", gray.as_ref(), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o1"]);
    assert_eq!(r.lane, Some("gray"));
    assert_eq!(r.fallback.unwrap().to, FallbackTarget::Base);
    // A strict lane has nowhere else to go.
    let rest = t
        .without("default", "orders", |i| i.address == "o4:8080")
        .unwrap();
    let e = rest
        .route("default", "orders", Some(&tag("red")), &Req::new(), 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no ready instance of service orders in lane strict"
    );
}

#[test]
fn without_one_subset_s_instance_a_split_goes_to_the_other_subset() {
    let t = table(&policy("orders", WEIGHTS), &[("o1", "v1"), ("o2", "v2")]);
    let rest = t
        .without("default", "orders", |i| i.address == "o2:8080")
        .unwrap();
    for draw in Draws(7).take(50) {
        let r = rest
            .route("default", "orders", None, &Req::new(), draw)
            .unwrap();
        assert_eq!(ids(&r), vec!["o1"]);
    }
    // The original table is untouched.
    assert!((0.05..0.15).contains(&share_of_v2(&t, 5_000)));
}

#[test]
fn without_an_address_no_instance_has_is_none_and_without_the_last_is_empty() {
    let t = table("", &[("o1", "v1")]);
    assert!(
        t.without("default", "orders", |i| i.address == "elsewhere:1")
            .is_none()
    );
    assert!(
        t.without("default", "payments", |i| i.address == "o1:8080")
            .is_none()
    );
    let rest = t
        .without("default", "orders", |i| i.address == "o1:8080")
        .unwrap();
    assert!(matches!(
        rest.route("default", "orders", None, &Req::new(), 0),
        Err(RouteError::UnknownService { .. })
    ));
}

#[test]
fn without_every_lane_instance_a_lane_follows_its_fallback() {
    let t = table("", &[("o1", "v1"), ("o2", "v2"), ("o3", "v2")]);
    let gone = ["o2:8080", "o3:8080"];
    let rest = t
        .without("default", "orders", |i| gone.contains(&i.address.as_str()))
        .unwrap();
    let r = rest
        .route("default", "orders", Some(&tag("gray")), &Req::new(), 0)
        .unwrap();
    assert_eq!(ids(&r), vec!["o1"]);
    assert_eq!(r.fallback.unwrap().to, FallbackTarget::Base);
}
