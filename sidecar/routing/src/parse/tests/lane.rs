use super::{LANE, accepts, doc, rejects, rejects_all};
use crate::{Fallback, Resource};

fn lane(spec: &str) -> String {
    doc("Lane", "gray", spec)
}

#[test]
fn fallback_defaults_to_base() {
    let r = accepts(LANE);
    let Resource::Lane(l) = &r[0] else { panic!() };
    assert_eq!(l.spec.fallback, vec![Fallback::Base]);
}

#[test]
fn strict_fallback_is_kept_empty() {
    let r = accepts(&lane(
        "  tag: gray\n  selector: {version: v2}\n  fallback: []\n",
    ));
    let Resource::Lane(l) = &r[0] else { panic!() };
    assert!(l.spec.fallback.is_empty());
}

#[test]
fn invalid_lane_tag_is_rejected() {
    rejects(
        &lane("  tag: gr/ay\n  selector: {version: v2}\n"),
        "spec.tag",
        "is not a valid tag",
    );
    rejects(
        &lane(&format!(
            "  tag: {}\n  selector: {{version: v2}}\n",
            "a".repeat(65)
        )),
        "spec.tag",
        "is not a valid tag",
    );
    rejects(
        &lane("  tag: .gray\n  selector: {version: v2}\n"),
        "spec.tag",
        "is not a valid tag",
    );
}

#[test]
fn empty_selector_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {}\n"),
        "spec.selector",
        "would put every instance in this lane",
    );
}

#[test]
fn missing_selector_is_rejected() {
    rejects(
        &lane("  tag: gray\n"),
        "spec.selector",
        "missing required field",
    );
}

#[test]
fn invalid_label_key_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {\"a b\": v2}\n"),
        "spec.selector[\"a b\"]",
        "not a valid label key",
    );
}

#[test]
fn invalid_label_value_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: \"v 2\"}\n"),
        "spec.selector.version",
        "not a valid label value",
    );
    rejects(
        &lane(&format!(
            "  tag: gray\n  selector: {{version: {}}}\n",
            "v".repeat(64)
        )),
        "spec.selector.version",
        "label value",
    );
}

#[test]
fn fallback_to_itself_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: v2}\n  fallback: [gray]\n"),
        "spec.fallback[0]",
        "cannot fall back to itself",
    );
}

#[test]
fn fallback_listed_twice_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: v2}\n  fallback: [blue, blue]\n"),
        "spec.fallback[1]",
        "listed twice",
    );
}

#[test]
fn fallback_after_base_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: v2}\n  fallback: [base, blue]\n"),
        "spec.fallback[1]",
        "unreachable",
    );
}

#[test]
fn fallback_that_is_not_a_name_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: v2}\n  fallback: [Blue]\n"),
        "spec.fallback[0]",
        "neither `base` nor a lane name",
    );
}

#[test]
fn a_lane_named_base_is_rejected() {
    rejects(
        &doc("Lane", "base", "  tag: gray\n  selector: {version: v2}\n"),
        "metadata.name",
        "`base` is reserved",
    );
}

#[test]
fn unknown_spec_field_is_rejected() {
    rejects(
        &lane("  tag: gray\n  selector: {version: v2}\n  fallbacks: []\n"),
        "spec.fallbacks",
        "unknown field",
    );
}

#[test]
fn unknown_fields_in_several_places_are_all_reported() {
    // `selector` is missing because it is misspelt: only the misspelling is reported.
    rejects_all(
        &lane("  tag: gray\n  selectr: {version: v2}\n  fallbak: [base]\n"),
        &[
            ("spec.fallbak", "unknown field"),
            ("spec.selectr", "unknown field"),
        ],
    );
    rejects_all(
        &lane(
            "  tag: gray\n  selector: {version: v2, \"a b\": x, zone: \"\"}\n  fallback: [Blue, blue, blue]\n",
        ),
        &[
            ("spec.fallback[0]", "neither `base` nor a lane name"),
            ("spec.selector[\"a b\"]", "not a valid label key"),
            ("spec.selector.zone", "not a valid label value"),
            ("spec.fallback[2]", "listed twice"),
        ],
    );
}

#[test]
fn a_lane_with_an_unreadable_name_is_not_said_to_fall_back_to_itself() {
    rejects_all(
        &doc(
            "Lane",
            "invalid_",
            "  tag: gray\n  selector: {v: a}\n  fallback: [invalid]\n",
        ),
        &[("metadata.name", "not a valid name")],
    );
}
