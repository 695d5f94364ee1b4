use super::super::test_support::{Req, rules, tag};
use crate::table::{InboundSource, InboundTag, RoutingTable};

fn table(incoming: &str) -> RoutingTable {
    let doc = format!(
        "apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {{name: edge}}
spec:
  services: [frontend]
  incoming: {incoming}
  rules:
    - tag: gray
      match: {{headers: {{x-user-group: {{exact: testers}}}}}}
    - tag: blue
      match: {{cookies: {{lane: {{exact: blue}}}}}}
    - tag: gray
      match: {{cookies: {{lane: {{present: true}}}}}}
"
    );
    RoutingTable::build(&rules(&doc), Vec::new())
}

fn none(stripped: bool) -> InboundTag {
    InboundTag {
        tag: None,
        source: InboundSource::None,
        rule: None,
        stripped,
    }
}

#[test]
fn without_a_tag_policy_the_incoming_tag_is_kept() {
    let t = table("strip");
    let got = t.inbound_tag("default", "orders", Some(tag("purple")), &Req::new());
    assert_eq!(got.tag, Some(tag("purple")));
    assert_eq!(got.source, InboundSource::Incoming);
    assert_eq!(
        t.inbound_tag("default", "orders", None, &Req::new()),
        none(false)
    );
}

#[test]
fn strip_removes_the_incoming_tag_then_rules_decide() {
    let t = table("strip");
    assert_eq!(
        t.inbound_tag("default", "frontend", Some(tag("gray")), &Req::new()),
        none(true)
    );
    let got = t.inbound_tag(
        "default",
        "frontend",
        Some(tag("gray")),
        &Req::new().with_cookie("lane", "blue"),
    );
    assert_eq!(
        got,
        InboundTag {
            tag: Some(tag("blue")),
            source: InboundSource::Rule,
            rule: Some(1),
            stripped: true
        }
    );
}

#[test]
fn keep_keeps_any_valid_incoming_tag() {
    let t = table("keep");
    let got = t.inbound_tag(
        "default",
        "frontend",
        Some(tag("purple")),
        &Req::new().with_cookie("lane", "blue"),
    );
    assert_eq!(
        got,
        InboundTag {
            tag: Some(tag("purple")),
            source: InboundSource::Incoming,
            rule: None,
            stripped: false
        }
    );
}

#[test]
fn keep_known_keeps_only_tags_of_declared_lanes() {
    let t = table("keep-known");
    let got = t.inbound_tag("default", "frontend", Some(tag("gray")), &Req::new());
    assert_eq!(got.source, InboundSource::Incoming);
    assert_eq!(
        t.inbound_tag("default", "frontend", Some(tag("purple")), &Req::new()),
        none(true)
    );
}

#[test]
fn the_first_matching_rule_wins() {
    let t = table("strip");
    let req = Req::new()
        .with_header("x-user-group", "testers")
        .with_cookie("lane", "blue");
    let got = t.inbound_tag("default", "frontend", None, &req);
    assert_eq!((got.tag, got.rule), (Some(tag("gray")), Some(0)));
    let got = t.inbound_tag(
        "default",
        "frontend",
        None,
        &Req::new().with_cookie("lane", "other"),
    );
    assert_eq!((got.tag, got.rule), (Some(tag("gray")), Some(2)));
}

#[test]
fn no_matching_rule_leaves_the_request_untagged() {
    assert_eq!(
        table("strip").inbound_tag("default", "frontend", None, &Req::new()),
        none(false)
    );
}
