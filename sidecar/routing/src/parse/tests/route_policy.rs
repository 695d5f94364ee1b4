use super::{accepts, doc, rejects, rejects_all};
use crate::{Release, Resource, RetryOn};

const SUBSETS: &str = "  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n";

fn policy(extra: &str) -> String {
    doc(
        "RoutePolicy",
        "orders",
        &format!("  service: orders\n{SUBSETS}{extra}"),
    )
}

#[test]
fn the_spec_example_parses() {
    let text = policy(
        "  release: gray
  default:
    - {subset: v1, weight: 90}
    - {subset: v2, weight: 10}
  stickyBy:
    header: x-user-id
  lanes:
    - tag: gray
      subset: v2
  exclude:
    instances: [orders-7]
  timeout: 2s
  retries:
    attempts: 2
    on: [connect-failure, reset, 503]
  mirror:
    subset: v2
    percent: 5
  fault:
    tag: gray
    delay: {percent: 10, duration: 200ms}
    abort: {percent: 1, status: 503}
",
    );
    let r = accepts(&text);
    let Resource::RoutePolicy(p) = &r[0] else {
        panic!()
    };
    assert_eq!(p.spec.release, Release::Gray);
    assert_eq!(p.spec.default[1].weight, 10);
    assert_eq!(p.spec.timeout.unwrap().as_millis(), 2_000);
    let retries = p.spec.retries.as_ref().unwrap();
    assert_eq!(
        retries.on,
        vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503)
        ]
    );
    assert_eq!(
        p.spec
            .fault
            .as_ref()
            .unwrap()
            .delay
            .as_ref()
            .unwrap()
            .duration
            .as_millis(),
        200
    );
}

#[test]
fn release_defaults_to_all() {
    let r = accepts(&policy(""));
    let Resource::RoutePolicy(p) = &r[0] else {
        panic!()
    };
    assert_eq!(p.spec.release, Release::All);
}

#[test]
fn unknown_release_is_rejected() {
    rejects(
        &policy("  release: canary\n"),
        "spec.release",
        "expected one of: all, gray, prod",
    );
}

#[test]
fn weights_not_summing_to_100_are_rejected() {
    let e = rejects(
        &policy("  default: [{subset: v1, weight: 90}, {subset: v2, weight: 5}]\n"),
        "spec.default",
        "weights sum to 95, must be 100",
    );
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 1 (RoutePolicy/orders): spec.default: weights sum to 95, must be 100"
    );
}

#[test]
fn negative_weight_is_rejected() {
    // Both weights are bad: every error of a document is reported.
    rejects_all(
        &policy("  default: [{subset: v1, weight: -10}, {subset: v2, weight: 110}]\n"),
        &[
            ("spec.default[0].weight", "weight -10 is negative"),
            ("spec.default[1].weight", "weight 110 is over 100"),
        ],
    );
}

#[test]
fn fractional_weight_is_rejected() {
    rejects_all(
        &policy("  default: [{subset: v1, weight: 50.5}, {subset: v2, weight: 49.5}]\n"),
        &[
            ("spec.default[0].weight", "whole number"),
            ("spec.default[1].weight", "whole number"),
        ],
    );
}

#[test]
fn undeclared_default_subset_is_rejected() {
    let e = rejects(
        &policy("  default: [{subset: v1, weight: 90}, {subset: v3, weight: 10}]\n"),
        "spec.default[1].subset",
        "\"v3\" is not a declared subset",
    );
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 1 (RoutePolicy/orders): spec.default[1].subset: \"v3\" is not a declared subset"
    );
}

#[test]
fn subset_listed_twice_in_default_is_rejected() {
    rejects(
        &policy("  default: [{subset: v1, weight: 50}, {subset: v1, weight: 50}]\n"),
        "spec.default[1].subset",
        "listed twice",
    );
}

#[test]
fn undeclared_lane_override_subset_is_rejected() {
    rejects(
        &policy("  lanes: [{tag: gray, subset: v3}]\n"),
        "spec.lanes[0].subset",
        "not a declared subset",
    );
}

#[test]
fn undeclared_mirror_subset_is_rejected() {
    rejects(
        &policy("  mirror: {subset: v3, percent: 5}\n"),
        "spec.mirror.subset",
        "not a declared subset",
    );
}

#[test]
fn duplicate_subset_names_are_rejected() {
    let text = doc(
        "RoutePolicy",
        "orders",
        "  service: orders\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v1, labels: {version: v2}}\n",
    );
    rejects(
        &text,
        "spec.subsets[1].name",
        "subset \"v1\" is declared twice",
    );
}

#[test]
fn subset_without_labels_is_rejected() {
    rejects(
        &doc(
            "RoutePolicy",
            "orders",
            "  service: orders\n  subsets: [{name: v1, labels: {}}]\n",
        ),
        "spec.subsets[0].labels",
        "at least one label",
    );
}

#[test]
fn misspelt_subset_field_is_rejected() {
    let e = rejects(
        &doc(
            "RoutePolicy",
            "orders",
            "  service: orders\n  subsets: [{name: v1, lables: {version: v1}}]\n",
        ),
        "spec.subsets[0].lables",
        "unknown field",
    );
    assert!(
        e.to_string()
            .ends_with("spec.subsets[0].lables: unknown field (expected one of: name, labels)"),
        "{e}"
    );
}

#[test]
fn weights_without_subsets_are_rejected() {
    rejects(
        &doc(
            "RoutePolicy",
            "orders",
            "  service: orders\n  default: [{subset: v1, weight: 100}]\n",
        ),
        "spec.default",
        "spec.subsets is empty",
    );
}

#[test]
fn sticky_by_without_default_weights_is_rejected() {
    rejects(
        &policy("  stickyBy: {cookie: uid}\n"),
        "spec.stickyBy",
        "needs default weights",
    );
}

#[test]
fn invalid_sticky_by_header_is_rejected() {
    rejects(
        &policy("  default: [{subset: v1, weight: 100}]\n  stickyBy: {header: \"x user\"}\n"),
        "spec.stickyBy.header",
        "not a valid header name",
    );
}

#[test]
fn invalid_lane_override_tag_is_rejected() {
    rejects(
        &policy("  lanes: [{tag: \"g@y\", subset: v2}]\n"),
        "spec.lanes[0].tag",
        "is not a valid tag",
    );
}

#[test]
fn lane_overridden_twice_is_rejected() {
    rejects(
        &policy("  lanes: [{tag: gray, subset: v2}, {tag: gray, subset: v1}]\n"),
        "spec.lanes[1].tag",
        "overridden twice",
    );
}

#[test]
fn invalid_service_name_is_rejected() {
    rejects(
        &doc("RoutePolicy", "orders", "  service: Orders_Svc\n"),
        "spec.service",
        "not a valid service name",
    );
}

#[test]
fn dotted_service_names_are_accepted() {
    accepts(&doc("RoutePolicy", "orders", "  service: orders.shop\n"));
}

#[test]
fn bad_durations_are_rejected() {
    for bad in ["2", "2 s", "1.5s", "2sec", "-1s"] {
        rejects(
            &policy(&format!("  timeout: \"{bad}\"\n")),
            "spec.timeout",
            "is not a duration",
        );
    }
    rejects(
        &policy("  fault: {delay: {percent: 1, duration: 5x}}\n"),
        "spec.fault.delay.duration",
        "is not a duration",
    );
}

#[test]
fn hours_are_accepted() {
    let r = accepts(&policy("  timeout: 1h\n"));
    let Resource::RoutePolicy(p) = &r[0] else {
        panic!()
    };
    assert_eq!(p.spec.timeout.unwrap().as_millis(), 3_600_000);
}

#[test]
fn zero_timeout_is_rejected() {
    rejects(&policy("  timeout: 0s\n"), "spec.timeout", "longer than 0");
}

#[test]
fn retry_attempts_outside_1_to_10_are_rejected() {
    rejects(
        &policy("  retries: {attempts: 0}\n"),
        "spec.retries.attempts",
        "must be 1-10",
    );
    rejects(
        &policy("  retries: {attempts: 11}\n"),
        "spec.retries.attempts",
        "must be 1-10",
    );
}

#[test]
fn invalid_subset_label_is_rejected() {
    let text = doc(
        "RoutePolicy",
        "orders",
        "  service: orders\n  subsets: [{name: v1, labels: {version: \"v 1\"}}]\n",
    );
    rejects(
        &text,
        "spec.subsets[0].labels.version",
        "not a valid label value",
    );
}

#[test]
fn unknown_retry_condition_is_rejected() {
    rejects(
        &policy("  retries: {attempts: 2, on: [timeout]}\n"),
        "spec.retries.on[0]",
        "not a retry condition",
    );
    rejects(
        &policy("  retries: {attempts: 2, on: [reset, 302]}\n"),
        "spec.retries.on[1]",
        "outside 400-599",
    );
    rejects(
        &policy("  retries: {attempts: 2, on: []}\n"),
        "spec.retries.on",
        "at least one condition",
    );
}

#[test]
fn mirror_percent_outside_range_is_rejected() {
    rejects(
        &policy("  mirror: {subset: v2, percent: 101}\n"),
        "spec.mirror.percent",
        "outside 0-100",
    );
}

#[test]
fn fault_percents_outside_range_are_rejected() {
    rejects(
        &policy("  fault: {delay: {percent: 120, duration: 1s}}\n"),
        "spec.fault.delay.percent",
        "outside 0-100",
    );
    rejects(
        &policy("  fault: {abort: {percent: -5, status: 503}}\n"),
        "spec.fault.abort.percent",
        "outside 0-100",
    );
}

#[test]
fn fault_abort_status_outside_range_is_rejected() {
    rejects(
        &policy("  fault: {abort: {percent: 5, status: 600}}\n"),
        "spec.fault.abort.status",
        "outside 200-599",
    );
    rejects(
        &policy("  fault: {abort: {percent: 5, status: 199}}\n"),
        "spec.fault.abort.status",
        "outside 200-599",
    );
}

#[test]
fn empty_fault_is_rejected() {
    rejects(
        &policy("  fault: {tag: gray}\n"),
        "spec.fault",
        "needs a delay, an abort or both",
    );
}

#[test]
fn invalid_fault_tag_is_rejected() {
    rejects(
        &policy("  fault: {tag: \"-x\", abort: {percent: 5, status: 503}}\n"),
        "spec.fault.tag",
        "is not a valid tag",
    );
}

#[test]
fn empty_exclude_entry_is_rejected() {
    rejects(
        &policy("  exclude: {instances: [orders-1, \"\"]}\n"),
        "spec.exclude.instances[1]",
        "must not be empty",
    );
}

#[test]
fn a_bad_duration_and_a_bad_weight_are_both_reported() {
    // The weight that could not be read does not also make the sum wrong.
    rejects_all(
        &policy(
            "  default: [{subset: v1, weight: 90}, {subset: v2, weight: -5}]\n  timeout: 2sec\n  fault: {delay: {percent: 120, duration: 5x}}\n",
        ),
        &[
            ("spec.default[1].weight", "weight -5 is negative"),
            ("spec.fault.delay.duration", "is not a duration"),
            ("spec.timeout", "is not a duration"),
            ("spec.fault.delay.percent", "outside 0-100"),
        ],
    );
}

#[test]
fn references_to_an_unreadable_subset_are_not_reported() {
    let text = doc(
        "RoutePolicy",
        "orders",
        "  service: orders\n  subsets:\n    - {name: V1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n  default: [{subset: V1, weight: 50}, {subset: v2, weight: 40}]\n  mirror: {subset: V1, percent: 101}\n  retries: {attempts: 0, on: [timeout, reset, 302]}\n",
    );
    rejects_all(
        &text,
        &[
            ("spec.retries.on[0]", "not a retry condition"),
            ("spec.subsets[0].name", "not a valid name"),
            ("spec.default", "weights sum to 90, must be 100"),
            ("spec.retries.attempts", "must be 1-10"),
            ("spec.retries.on[2]", "status 302 is outside 400-599"),
            ("spec.mirror.percent", "outside 0-100"),
        ],
    );
}
