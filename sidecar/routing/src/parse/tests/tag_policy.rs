use super::{accepts, doc, rejects, rejects_all};
use crate::{HashKey, Incoming, Resource, StringMatch};

fn policy(rules: &str) -> String {
    doc(
        "TagPolicy",
        "edge",
        &format!("  services: [frontend]\n  rules:\n{rules}"),
    )
}

fn rule(matches: &str) -> String {
    policy(&format!("    - tag: gray\n      match:\n{matches}"))
}

#[test]
fn the_spec_example_parses() {
    let text = policy(
        r#"    - tag: gray
      match:
        headers:
          x-user-group: {exact: testers}
    - tag: gray
      match:
        sourceCidrs: [10.8.0.0/16, "2001:db8::/32"]
    - tag: blue
      match:
        any:
          - headers: {a: {exact: "1"}}
          - cookies: {lane: {exact: blue}}
    - tag: gray
      match:
        percent: 10
        hashBy: {header: x-user-id}
"#,
    );
    let r = accepts(&text);
    let Resource::TagPolicy(p) = &r[0] else {
        panic!()
    };
    assert_eq!(p.spec.incoming, Incoming::Strip);
    assert_eq!(p.spec.rules.len(), 4);
    assert_eq!(
        p.spec.rules[0].matches.headers["x-user-group"],
        StringMatch::Exact("testers".into())
    );
    assert_eq!(
        p.spec.rules[3].matches.hash_by,
        Some(HashKey::Header("x-user-id".into()))
    );
    assert_eq!(p.spec.rules[3].matches.percent, Some(10.0));
}

#[test]
fn incoming_reads_each_setting() {
    for (text, want) in [
        ("keep", Incoming::Keep),
        ("keep-known", Incoming::KeepKnown),
        ("strip", Incoming::Strip),
    ] {
        let r = accepts(&doc(
            "TagPolicy",
            "edge",
            &format!("  services: [frontend]\n  incoming: {text}\n"),
        ));
        let Resource::TagPolicy(p) = &r[0] else {
            panic!()
        };
        assert_eq!(p.spec.incoming, want);
    }
}

#[test]
fn unknown_incoming_is_rejected() {
    rejects(
        &doc(
            "TagPolicy",
            "edge",
            "  services: [frontend]\n  incoming: trust\n",
        ),
        "spec.incoming",
        "expected one of: strip, keep, keep-known",
    );
}

#[test]
fn empty_services_is_rejected() {
    rejects(
        &doc("TagPolicy", "edge", "  services: []\n"),
        "spec.services",
        "at least one service",
    );
}

#[test]
fn a_service_listed_twice_in_one_policy_is_rejected() {
    rejects(
        &doc("TagPolicy", "edge", "  services: [a, b, a]\n"),
        "spec.services[2]",
        "listed twice",
    );
}

#[test]
fn invalid_service_name_is_rejected() {
    rejects(
        &doc("TagPolicy", "edge", "  services: [Front_End]\n"),
        "spec.services[0]",
        "not a valid service name",
    );
}

#[test]
fn invalid_rule_tag_is_rejected() {
    rejects(
        &policy("    - tag: \"gray blue\"\n      match: {methods: [GET]}\n"),
        "spec.rules[0].tag",
        "is not a valid tag",
    );
}

#[test]
fn missing_match_is_rejected() {
    rejects(
        &policy("    - tag: gray\n"),
        "spec.rules[0].match",
        "missing required field",
    );
}

#[test]
fn empty_match_block_is_rejected() {
    rejects(
        &rule("        {}\n"),
        "spec.rules[0].match",
        "empty match block",
    );
}

#[test]
fn empty_nested_match_blocks_are_rejected() {
    rejects(
        &rule("        any: [{methods: [GET]}, {}]\n"),
        "spec.rules[0].match.any[1]",
        "empty match block",
    );
    rejects(
        &rule("        not: {}\n"),
        "spec.rules[0].match.not",
        "empty match block",
    );
}

#[test]
fn unknown_field_deep_in_a_matcher_is_rejected() {
    rejects(
        &rule("        headers:\n          x-user-group: {exatc: testers}\n"),
        "spec.rules[0].match.headers.x-user-group.exatc",
        "unknown field",
    );
}

#[test]
fn unknown_match_field_is_rejected() {
    rejects(
        &rule("        header: {a: {exact: b}}\n"),
        "spec.rules[0].match.header",
        "unknown field",
    );
}

#[test]
fn wrong_type_in_a_matcher_is_rejected() {
    rejects(
        &rule("        headers:\n          x-user-group: {exact: [a]}\n"),
        "spec.rules[0].match.headers.x-user-group.exact",
        "expected a string",
    );
}

#[test]
fn string_matcher_with_none_is_rejected() {
    rejects(
        &rule("        headers:\n          x-a: {}\n"),
        "spec.rules[0].match.headers.x-a",
        "needs one of exact, prefix, regex, present, absent",
    );
}

#[test]
fn string_matcher_with_two_is_rejected() {
    rejects(
        &rule("        headers:\n          x-a: {exact: a, prefix: b}\n"),
        "spec.rules[0].match.headers.x-a",
        "found exact and prefix",
    );
}

#[test]
fn present_false_is_rejected() {
    rejects(
        &rule("        headers:\n          x-a: {present: false}\n"),
        "spec.rules[0].match.headers.x-a.present",
        "only `true` is allowed",
    );
    rejects(
        &rule("        cookies:\n          c: {absent: false}\n"),
        "spec.rules[0].match.cookies.c.absent",
        "only `true` is allowed",
    );
}

#[test]
fn invalid_regex_is_rejected() {
    rejects(
        &rule("        path: {regex: \"/api/(v1\"}\n"),
        "spec.rules[0].match.path.regex",
        "invalid regex",
    );
}

#[test]
fn too_long_regex_is_rejected() {
    let long = "a".repeat(1025);
    rejects(
        &rule(&format!("        query:\n          q: {{regex: {long}}}\n")),
        "spec.rules[0].match.query.q.regex",
        "1024-byte limit",
    );
}

#[test]
fn regex_too_large_once_compiled_is_rejected() {
    rejects(
        &rule("        headers:\n          x-a: {regex: '(?:\\w{100}){100}'}\n"),
        "spec.rules[0].match.headers.x-a.regex",
        "too large once compiled",
    );
}

#[test]
fn invalid_cidr_is_rejected() {
    rejects(
        &rule("        sourceCidrs: [10.0.0.0/8, 10.300.0.0/16]\n"),
        "spec.rules[0].match.sourceCidrs[1]",
        "not a valid CIDR",
    );
}

#[test]
fn percent_outside_range_is_rejected() {
    rejects(
        &rule("        percent: 100.5\n        hashBy: {header: x-user-id}\n"),
        "spec.rules[0].match.percent",
        "outside 0-100",
    );
    rejects(
        &rule("        percent: -1\n        hashBy: {cookie: uid}\n"),
        "spec.rules[0].match.percent",
        "outside 0-100",
    );
}

#[test]
fn percent_without_hash_by_is_rejected() {
    rejects(
        &rule("        percent: 10\n"),
        "spec.rules[0].match.percent",
        "percent needs hashBy",
    );
}

#[test]
fn hash_by_without_percent_is_rejected() {
    rejects(
        &rule("        hashBy: {header: x-user-id}\n"),
        "spec.rules[0].match.hashBy",
        "only used with percent",
    );
}

#[test]
fn hash_by_with_an_unknown_source_is_rejected() {
    rejects(
        &rule("        percent: 5\n        hashBy: {query: uid}\n"),
        "spec.rules[0].match.hashBy.query",
        "expected one of: header, cookie",
    );
}

#[test]
fn invalid_header_name_is_rejected() {
    rejects(
        &rule("        headers:\n          \"x user\": {present: true}\n"),
        "spec.rules[0].match.headers[\"x user\"]",
        "not a valid name",
    );
}

#[test]
fn header_listed_twice_in_different_case_is_rejected() {
    rejects(
        &rule("        headers:\n          X-A: {present: true}\n          x-a: {absent: true}\n"),
        "spec.rules[0].match.headers.x-a",
        "case-insensitive",
    );
}

#[test]
fn invalid_method_is_rejected() {
    rejects(
        &rule("        methods: [GET, \"PO ST\"]\n"),
        "spec.rules[0].match.methods[1]",
        "not an HTTP method",
    );
}

#[test]
fn percentages_are_read_to_two_decimals() {
    let r = accepts(&rule(
        "        percent: 12.3456\n        hashBy: {cookie: uid}\n",
    ));
    let Resource::TagPolicy(p) = &r[0] else {
        panic!()
    };
    assert_eq!(p.spec.rules[0].matches.percent, Some(12.35));
}

#[test]
fn every_value_error_of_a_rule_is_reported() {
    let bad = "    - tag: \"gray!\"\n      match: {headers: {x: {regex: \"a(b\"}}, sourceCidrs: [10.0.0.0/33], percent: 120, hashBy: {header: uid}}\n";
    rejects_all(
        &policy(bad),
        &[
            (
                "spec.rules[0].match.headers.x.regex",
                "invalid regex \"a(b\"",
            ),
            ("spec.rules[0].match.sourceCidrs[0]", "not a valid CIDR"),
            ("spec.rules[0].tag", "\"gray!\" is not a valid tag"),
            (
                "spec.rules[0].match.percent",
                "percent 120 is outside 0-100",
            ),
        ],
    );
    // Without hashBy, percent gets the reason it gets alone.
    rejects_all(
        &policy(&bad.replace(", hashBy: {header: uid}", "")),
        &[
            ("spec.rules[0].match.headers.x.regex", "invalid regex"),
            ("spec.rules[0].match.sourceCidrs[0]", "not a valid CIDR"),
            ("spec.rules[0].tag", "is not a valid tag"),
            ("spec.rules[0].match.percent", "percent needs hashBy"),
        ],
    );
}

#[test]
fn list_errors_keep_the_indices_as_written() {
    rejects_all(
        &rule("        sourceCidrs: [bad1, 10.0.0.0/8, bad2]\n"),
        &[
            (
                "spec.rules[0].match.sourceCidrs[0]",
                "\"bad1\" is not a valid CIDR",
            ),
            (
                "spec.rules[0].match.sourceCidrs[2]",
                "\"bad2\" is not a valid CIDR",
            ),
        ],
    );
    // A semantic error after a dropped element names the element as written too.
    rejects_all(
        &rule("        methods: [1, GET, \"PO ST\"]\n"),
        &[
            ("spec.rules[0].match.methods[0]", "expected a string"),
            ("spec.rules[0].match.methods[2]", "not an HTTP method"),
        ],
    );
    // A check that reads a dropped sibling (percent needs hashBy) stays quiet, also
    // when its rule moved up in the list.
    rejects_all(
        &policy(
            "    - 5\n    - {tag: a, match: {methods: [GET]}}\n    - tag: gray\n      match: {percent: 5, hashBy: {query: q}}\n",
        ),
        &[
            ("spec.rules[0]", "expected struct TagRule"),
            (
                "spec.rules[2].match.hashBy.query",
                "expected one of: header, cookie",
            ),
        ],
    );
    // Indices of later rules are not shifted by a dropped rule.
    rejects_all(
        &policy("    - 5\n    - tag: gray\n      match: {sourceCidrs: [x]}\n"),
        &[
            ("spec.rules[0]", "expected struct TagRule"),
            ("spec.rules[1].match.sourceCidrs[0]", "not a valid CIDR"),
        ],
    );
}

#[test]
fn errors_of_several_rules_and_services_are_all_reported() {
    rejects_all(
        &doc(
            "TagPolicy",
            "edge",
            "  services: [a, B, a]\n  incoming: trust\n  rules:\n    - {tag: gray, match: {headers: {x-a: {exact: a, regex: \"(\"}}}}\n    - {tag: blue, match: {methods: [GET], percent: 5, hashBy: {query: q}}}\n",
        ),
        &[
            ("spec.incoming", "expected one of: strip, keep, keep-known"),
            ("spec.rules[0].match.headers.x-a.regex", "invalid regex"),
            (
                "spec.rules[1].match.hashBy.query",
                "expected one of: header, cookie",
            ),
            ("spec.services[1]", "not a valid service name"),
            ("spec.services[2]", "listed twice"),
        ],
    );
}

#[test]
fn a_path_no_request_could_have_is_refused_naming_the_one_to_write() {
    rejects_all(
        &rule("        path: {exact: orders}\n"),
        &[(
            "spec.rules[0].match.path",
            "\"orders\" never matches: a request path starts with /",
        )],
    );
    rejects_all(
        &rule("        any: [{path: {prefix: \"//internal/./x\"}}]\n"),
        &[(
            "spec.rules[0].match.any[0].path",
            "paths are matched normalised (escapes of letters and digits decoded, // merged, . and .. resolved); write \"/internal/x\"",
        )],
    );
    rejects_all(
        &rule("        path: {exact: \"/%69nternal\"}\n"),
        &[("spec.rules[0].match.path", "write \"/internal\"")],
    );
    // Regexes are the author's to anchor; `present` and the normal forms are fine.
    for ok in [
        "{regex: \"orders.*\"}",
        "{present: true}",
        "{prefix: /}",
        "{exact: /a%2Fb}",
    ] {
        crate::RuleSet::from_yaml("t.yaml", &rule(&format!("        path: {ok}\n"))).unwrap();
    }
}

#[test]
fn a_percent_written_as_text_is_told_what_a_percentage_is() {
    for written in ["\"10%\"", "ten", "\"10\""] {
        rejects_all(
            &rule(&format!(
                "        percent: {written}\n        hashBy: {{header: uid}}\n"
            )),
            &[(
                "spec.rules[0].match.percent",
                "a percentage is a number from 0 to 100 (e.g. 10 or 2.5), without a % sign",
            )],
        );
    }
}
