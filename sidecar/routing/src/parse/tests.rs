//! Reading files: the envelope, document numbering, YAML errors, limits. The checks of
//! each kind are in `tests/<kind>.rs`.

use super::*;
use crate::Kind;

mod lane;
mod lane_rollout;
mod peer_policy;
mod route_policy;
mod tag_policy;

pub(super) const LANE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector:
    version: v2
";

/// A document of `kind` named `name` with this `spec` body (indented two spaces).
pub(super) fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: graylane.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

pub(super) fn errors(text: &str) -> Vec<ValidationError> {
    match parse_file("rules.yaml", text) {
        Ok(r) => panic!("expected errors, got {r:#?}"),
        Err(e) => e,
    }
}

/// Asserts that `text` has exactly one error, at `path`, whose reason contains
/// `fragment`; returns it.
pub(super) fn rejects(text: &str, path: &str, fragment: &str) -> ValidationError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = errs.into_iter().next().unwrap();
    assert_eq!(e.path, path, "{e}");
    assert!(e.reason.contains(fragment), "{e}");
    e
}

/// Asserts that `text` has exactly these errors, in this order: each at its path, with
/// a reason that contains the fragment.
pub(super) fn rejects_all(text: &str, want: &[(&str, &str)]) -> Vec<ValidationError> {
    let errs = errors(text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    let want_paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths, want_paths, "{errs:#?}");
    for (e, (_, fragment)) in errs.iter().zip(want) {
        assert!(e.reason.contains(fragment), "{e}");
    }
    errs
}

pub(super) fn accepts(text: &str) -> Vec<Resource> {
    match parse_file("rules.yaml", text) {
        Ok(r) => r.into_iter().map(|(r, _)| r).collect(),
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn a_valid_lane_parses_with_its_origin() {
    let parsed = parse_file("rules.yaml", &format!("---\n{LANE}")).unwrap();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].0.kind(), Kind::Lane);
    assert_eq!(parsed[0].0.name(), "gray");
    assert_eq!(
        parsed[0].1,
        Origin {
            file: "rules.yaml".into(),
            document: 1
        }
    );
}

#[test]
fn error_display_has_file_document_label_path_and_reason() {
    let text = format!(
        "{LANE}---\n{}",
        doc(
            "RoutePolicy",
            "orders",
            "  service: orders\n  subsets:\n    - {name: v1, labels: {version: v1}}\n  default:\n    - {subset: v1, weight: 95}\n"
        )
    );
    let e = rejects(&text, "spec.default", "weights sum to 95, must be 100");
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 2 (RoutePolicy/orders): spec.default: weights sum to 95, must be 100"
    );
}

#[test]
fn empty_documents_are_skipped_but_counted() {
    let text = format!(
        "{LANE}---\n# nothing here\n---\n---\n{}",
        doc("Lane", "Bad", "  tag: blue\n  selector: {v: b}\n")
    );
    let e = rejects(&text, "metadata.name", "not a valid name");
    assert_eq!(e.document, Some(4));
}

#[test]
fn every_document_is_checked_and_all_errors_reported() {
    let text = format!(
        "{}---\n{LANE}---\n{}",
        doc("Lane", "a", "  tag: -bad\n  selector: {v: a}\n"),
        doc(
            "RoutePolicy",
            "p",
            "  service: p\n  subsets: [{name: v1, labels: {v: '1'}}, {name: v1, labels: {v: '2'}}]\n  default: [{subset: v1, weight: 50}, {subset: v9, weight: 40}]\n  stickyBy: {header: x}\n  retries: {attempts: 0}\n"
        )
    );
    let errs = errors(&text);
    let got: Vec<(Option<usize>, &str)> =
        errs.iter().map(|e| (e.document, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(1), "spec.tag"),
            (Some(3), "spec.subsets[1].name"),
            (Some(3), "spec.default[1].subset"),
            (Some(3), "spec.default"),
            (Some(3), "spec.retries.attempts"),
        ],
        "{errs:#?}"
    );
}

#[test]
fn unknown_kind_is_rejected() {
    let e = rejects(
        &doc("Lanes", "gray", "  tag: gray\n"),
        "kind",
        "unknown kind \"Lanes\"",
    );
    assert_eq!(e.kind.as_deref(), Some("Lanes"));
    assert_eq!(e.name.as_deref(), Some("gray"));
}

#[test]
fn unknown_top_level_field_is_rejected() {
    rejects(&format!("{LANE}status: {{}}\n"), "status", "unknown field");
}

#[test]
fn missing_api_version_is_rejected() {
    rejects(
        LANE.strip_prefix("apiVersion: graylane.io/v1\n").unwrap(),
        "apiVersion",
        "missing required field",
    );
}

#[test]
fn wrong_api_version_is_rejected() {
    rejects(
        &LANE.replace("graylane.io/v1", "graylane.io/v2"),
        "apiVersion",
        "\"graylane.io/v2\" is not supported",
    );
}

#[test]
fn missing_kind_is_rejected() {
    rejects(
        &LANE.replace("kind: Lane\n", ""),
        "kind",
        "missing required field",
    );
}

#[test]
fn missing_metadata_is_rejected() {
    rejects(
        &LANE.replace("metadata:\n  name: gray\n", ""),
        "metadata",
        "missing required field",
    );
}

#[test]
fn missing_metadata_name_is_rejected() {
    let e = rejects(
        &LANE.replace("  name: gray\n", "  labels: {team: a}\n"),
        "metadata.name",
        "missing required field",
    );
    assert_eq!(
        e.to_string(),
        "rules.yaml: document 1 (Lane): metadata.name: missing required field"
    );
}

#[test]
fn missing_spec_is_rejected() {
    rejects(
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\n",
        "spec",
        "missing required field",
    );
}

#[test]
fn invalid_name_is_rejected() {
    for bad in ["Gray", "-gray", "gray_1", "a.b"] {
        rejects(
            &LANE.replace("name: gray", &format!("name: {bad}")),
            "metadata.name",
            "not a valid name",
        );
    }
    rejects(
        &LANE.replace("name: gray", &format!("name: {}", "a".repeat(64))),
        "metadata.name",
        "not a valid name",
    );
}

#[test]
fn spec_errors_are_reported_even_when_metadata_is_bad() {
    let errs = errors(
        &LANE
            .replace("name: gray", "name: Gray")
            .replace("tag: gray", "tag: -x"),
    );
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["metadata.name", "spec.tag"]);
}

#[test]
fn every_metadata_error_is_reported_with_the_spec_errors() {
    let errs = rejects_all(
        &LANE
            .replace("name: gray", "name: Gray\n  nmespace: x")
            .replace("tag: gray", "tag: -x"),
        &[
            ("metadata.name", "not a valid name"),
            ("metadata.nmespace", "unknown field"),
            ("spec.tag", "is not a valid tag"),
        ],
    );
    assert_eq!(
        errs[2].to_string(),
        "rules.yaml: document 1 (Lane/Gray): spec.tag: \"-x\" is not a valid tag: 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit"
    );
}

#[test]
fn a_field_missing_as_written_is_reported_with_the_others() {
    rejects_all(
        &doc(
            "TagPolicy",
            "edge",
            "  services: [Front_End]\n  rules: [{tag: \"gray!\"}]\n",
        ),
        &[
            ("spec.rules[0].tag", "is not a valid tag"),
            ("spec.rules[0].match", "missing required field"),
            ("spec.services[0]", "not a valid service name"),
        ],
    );
}

#[test]
fn a_document_with_thousands_of_errors_stops_reading_with_a_note() {
    let cidrs = vec!["bad"; 1000].join(", ");
    let errs = errors(&doc(
        "TagPolicy",
        "edge",
        &format!("  services: [a]\n  rules: [{{tag: t, match: {{sourceCidrs: [{cidrs}]}}}}]\n"),
    ));
    assert!(errs.len() < 300, "{}", errs.len());
    assert_eq!(errs[1].path, "spec.rules[0].match.sourceCidrs[1]");
    let last = errs.last().unwrap();
    assert_eq!(last.path, "spec");
    assert!(last.reason.contains("too many errors"), "{last}");
}

#[test]
fn metadata_labels_and_annotations_are_kept() {
    let r = accepts(&LANE.replace(
        "  name: gray\n",
        "  name: gray\n  labels: {team: shop}\n  annotations: {note: hi}\n",
    ));
    assert_eq!(r[0].metadata().labels["team"], "shop");
    assert_eq!(r[0].metadata().annotations["note"], "hi");
}

#[test]
fn unknown_metadata_field_is_rejected() {
    rejects(
        &LANE.replace("  name: gray\n", "  name: gray\n  nmespace: x\n"),
        "metadata.nmespace",
        "unknown field",
    );
}

#[test]
fn a_lane_with_a_namespace_is_refused_as_mesh_wide() {
    for ns in ["shop", "default"] {
        let e = rejects(
            &LANE.replace(
                "  name: gray\n",
                &format!("  name: gray\n  namespace: {ns}\n"),
            ),
            "metadata.namespace",
            "lanes are mesh-wide",
        );
        assert_eq!(
            e.to_string(),
            "rules.yaml: document 1 (Lane/gray): metadata.namespace: lanes are mesh-wide \
             (a lane spans namespaces): a Lane takes no namespace"
        );
    }
}

#[test]
fn a_document_that_is_not_a_mapping_is_rejected() {
    rejects("- a\n- b\n", "", "must be a mapping");
}

#[test]
fn yaml_syntax_errors_give_the_line_in_the_file() {
    let text = format!("{LANE}---\napiVersion: graylane.io/v1\nkind: [Lane\n");
    let e = rejects(&text, "", "invalid YAML");
    assert_eq!(e.document, Some(2));
    assert!(e.reason.contains("line 11"), "{e}");
}

#[test]
fn yaml_duplicate_keys_are_rejected() {
    let e = rejects(
        &LANE.replace("  tag: gray\n", "  tag: gray\n  tag: blue\n"),
        "",
        "duplicate mapping key: tag at line",
    );
    assert!(
        !e.reason.contains("Options"),
        "no advice on the library's: {e}"
    );
}

#[test]
fn a_document_over_one_mebibyte_is_rejected() {
    let big = format!("{LANE}  # {}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    let e = rejects(&big, "", "over the 1 MiB limit");
    assert_eq!(e.document, Some(1));
}

#[test]
fn a_file_over_ten_thousand_documents_is_rejected() {
    let one = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: l}\nspec: {tag: t, selector: {v: a}}\n";
    let text = vec![one; MAX_DOCUMENTS + 1].join("---\n");
    let errs = errors(&text);
    let last = errs.last().unwrap();
    assert_eq!(last.document, None);
    assert!(last.reason.contains("more than 10000 documents"), "{last}");
}

#[test]
fn yes_and_no_stay_strings() {
    let r = accepts(&LANE.replace("version: v2", "enabled: yes"));
    let Resource::Lane(l) = &r[0] else { panic!() };
    assert_eq!(l.spec.selector.as_map()["enabled"], "yes");
}

#[test]
fn numbers_where_strings_belong_are_rejected_with_a_hint() {
    rejects(
        &LANE.replace("version: v2", "version: 2"),
        "spec.selector.version",
        "(quote it)",
    );
}
