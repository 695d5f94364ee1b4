use super::super::test_support::{Req, inst, policy, rules, tag};
use crate::table::{Explanation, RoutingTable};

fn table(extra: &str, instances: &[(&str, &str)]) -> RoutingTable {
    let list = instances
        .iter()
        .map(|(id, v)| inst("orders", id, v))
        .collect();
    RoutingTable::build(&rules(extra), list)
}

fn explain(t: &RoutingTable, tag_: Option<&str>, req: &Req) -> Explanation {
    t.explain("default", "orders", None, tag_.map(tag), req, 0)
}

/// The steps, checked to be numbered 1, 2, 3… and returned without the numbers.
fn steps(e: &Explanation) -> Vec<String> {
    e.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let prefix = format!("{}. ", i + 1);
            let Some(text) = s.strip_prefix(&prefix) else {
                panic!("step {} is {s:?}: {:#?}", i + 1, e.steps)
            };
            text.to_owned()
        })
        .collect()
}

const OVERRIDE: &str = "  subsets:
    - {name: stable, labels: {version: v1}}
    - {name: canary, labels: {version: v5}}
  lanes: [{tag: gray, subset: canary}]
";

#[test]
fn a_lane_override_names_the_subset_it_maps_to() {
    let t = table(
        &policy("orders", OVERRIDE),
        &[("o1", "v1"), ("o2", "v2"), ("o5", "v5")],
    );
    let e = explain(&t, Some("gray"), &Req::new());
    let steps = steps(&e);
    assert_eq!(
        steps[2],
        "tag gray is lane gray (RoutePolicy orders maps it to subset canary: version=v5): \
         1 of its instances may serve: o5",
        "{steps:#?}"
    );
    let outcome = e.outcome.unwrap();
    assert_eq!(outcome.subset.as_deref(), Some("canary"));
    let ids: Vec<&str> = outcome.candidates.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["o5"]);
}

#[test]
fn a_fallback_lane_is_named_with_its_override_subset() {
    // blue (v3) has no instance and falls back to gray, which orders maps to canary.
    let t = table(&policy("orders", OVERRIDE), &[("o1", "v1"), ("o5", "v5")]);
    let e = explain(&t, Some("blue"), &Req::new());
    let steps = steps(&e);
    assert!(
        steps[2].ends_with(
            "fallback to lane gray (RoutePolicy orders maps it to subset canary: version=v5): o5"
        ),
        "{steps:#?}"
    );
    assert_eq!(e.outcome.unwrap().subset.as_deref(), Some("canary"));
}

#[test]
fn release_gray_says_why_base_instances_do_not_serve() {
    let t = table(
        &policy("orders", "  release: gray\n"),
        &[("o1", "v1"), ("o2", "v2")],
    );
    let e = explain(&t, None, &Req::new());
    let steps = steps(&e);
    assert_eq!(
        steps,
        [
            "no tag: untagged",
            "orders: 2 instance(s), release state gray; 1 may serve (the others are excluded \
             or held back by the release state)",
            "untagged: no base candidate (release state gray: only lane instances may serve): \
             any candidate serves",
            "candidates: o2 (the sidecar picks the less loaded of two at random)",
        ]
    );
    let r = t.route("default", "orders", None, &Req::new(), 0).unwrap();
    assert!(r.base_fallback);
}

#[test]
fn a_service_with_only_lane_instances_says_so() {
    let t = table("", &[("o2", "v2"), ("o3", "v3")]);
    let steps = steps(&explain(&t, None, &Req::new()));
    assert_eq!(
        steps[2],
        "untagged: no base candidate (every instance that may serve is in a lane): any \
         candidate serves"
    );
}

#[test]
fn base_instances_are_listed_when_they_serve() {
    let t = table("", &[("o1", "v1"), ("o2", "v2")]);
    let steps = steps(&explain(&t, Some("purple"), &Req::new()));
    assert_eq!(
        steps[2],
        "no Lane declares tag purple: routed as untagged (the tag still travels)"
    );
    assert_eq!(steps[3], "untagged: the base instances (in no lane): o1");
}

#[test]
fn weights_without_a_ready_subset_say_any_candidate_serves() {
    let weights = "  subsets:
    - {name: v1, labels: {version: v1}}
  default: [{subset: v1, weight: 100}]
";
    let t = table(&policy("orders", weights), &[("o2", "v2")]);
    let e = explain(&t, None, &Req::new());
    assert_eq!(
        steps(&e)[2],
        "untagged: weights v1 100 (0 ready); no subset has an instance that may serve: any \
         candidate serves"
    );
    assert_eq!(
        e.outcome.unwrap().fallback.as_deref(),
        Some("no candidate by weights or base: any candidate")
    );
}

#[test]
fn a_sticky_draw_names_the_subset_route_chose() {
    let sticky = "  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
  default: [{subset: v1, weight: 50}, {subset: v2, weight: 50}]
  stickyBy: {header: x-user}
";
    let t = table(&policy("orders", sticky), &[("o1", "v1"), ("o2", "v2")]);
    for user in 0..20 {
        let req = Req::new().with_header("x-user", &format!("user-{user}"));
        let subset = t
            .route("default", "orders", None, &req, 0)
            .unwrap()
            .subset
            .unwrap();
        let e = explain(&t, None, &req);
        let line = &steps(&e)[2];
        assert!(line.ends_with(&format!(", subset {subset}")), "{line}");
        assert_eq!(e.outcome.unwrap().subset.as_deref(), Some(subset));
    }
}

#[test]
fn steps_are_numbered_without_gaps() {
    let t = table(
        &policy("orders", "  release: prod\n"),
        &[("o1", "v1"), ("o2", "v2")],
    );
    for tag_ in [None, Some("gray"), Some("red"), Some("purple")] {
        steps(&explain(&t, tag_, &Req::new()));
    }
    let lane_only = table("", &[("o2", "v2")]);
    for tag_ in [None, Some("gray"), Some("blue"), Some("red")] {
        steps(&explain(&lane_only, tag_, &Req::new()));
    }
    let e = t.explain(
        "default",
        "payments",
        Some(("default", "frontend")),
        None,
        &Req::new(),
        0,
    );
    assert_eq!(
        steps(&e),
        [
            "entering at frontend: no tag, and no TagPolicy rule matched: untagged",
            "no instance of payments is registered: 502",
        ]
    );
}

#[test]
fn a_tag_policy_query_rule_matches_a_raw_query_decoded() {
    let edge = "apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {name: edge}
spec:
  services: [frontend]
  rules:
    - {tag: gray, match: {query: {group: {exact: beta testers}}}}
";
    let t = table(edge, &[("o1", "v1"), ("o2", "v2")]);
    for raw in ["group=beta%20testers", "group=beta+testers"] {
        let req = Req::new().with_raw_query(raw);
        let e = t.explain(
            "default",
            "orders",
            Some(("default", "frontend")),
            None,
            &req,
            0,
        );
        assert_eq!(e.tag, Some(tag("gray")), "{raw}");
        let r = t
            .route("default", "orders", e.tag.as_ref(), &req, 0)
            .unwrap();
        assert_eq!(r.lane, Some("gray"));
    }
    let decoded = Req::new().with_query("group", "beta testers");
    let e = t.explain(
        "default",
        "orders",
        Some(("default", "frontend")),
        None,
        &decoded,
        0,
    );
    assert_eq!(e.tag, Some(tag("gray")));
}
