use super::super::test_support::Req;
use super::{Compiled, percent_bucket};
use crate::MatchBlock;

fn block(yaml: &str) -> Compiled {
    let b: MatchBlock = serde_saphyr::from_str(yaml).unwrap();
    Compiled::new(&b, "gray")
}

#[test]
fn headers_match_by_lowercase_name() {
    let m = block("headers: {X-User-Group: {exact: testers}}");
    assert!(m.matches(&Req::new().with_header("x-user-group", "testers")));
    assert!(!m.matches(&Req::new().with_header("x-user-group", "Testers")));
    assert!(!m.matches(&Req::new()));
}

#[test]
fn every_field_of_a_block_must_hold() {
    let m = block("headers: {a: {present: true}}\nmethods: [GET]");
    assert!(m.matches(&Req::new().with_header("a", "1")));
    assert!(!m.matches(&Req::new().with_header("a", "1").with_method("POST")));
}

#[test]
fn cookies_match() {
    let m = block("cookies: {lane: {exact: blue}}");
    assert!(m.matches(&Req::new().with_cookie("lane", "blue")));
    assert!(!m.matches(&Req::new().with_cookie("lane", "gray")));
}

#[test]
fn query_parameters_match() {
    let m = block("query: {debug: {absent: true}}");
    assert!(m.matches(&Req::new()));
    assert!(!m.matches(&Req::new().with_query("debug", "1")));
}

#[test]
fn a_raw_query_string_is_matched_decoded() {
    let m = block("query: {group: {exact: beta testers}}");
    for raw in [
        "group=beta%20testers",
        "group=beta+testers",
        "gr%6Fup=beta+testers&group=other",
        "x=1&&group=beta%20testers",
    ] {
        assert!(m.matches(&Req::new().with_raw_query(raw)), "{raw}");
    }
    for raw in ["group=beta%2Btesters", "group=beta testers2", "group", ""] {
        assert!(!m.matches(&Req::new().with_raw_query(raw)), "{raw}");
    }
    // The raw query is the request's: decoded parameters beside it are not asked.
    let both = Req::new()
        .with_query("group", "beta testers")
        .with_raw_query("group=beta");
    assert!(!m.matches(&both));
}

#[test]
fn a_raw_query_value_that_is_not_utf8_matches_as_replaced() {
    let m = block("query: {q: {present: true}}");
    assert!(m.matches(&Req::new().with_raw_query("q=%FF")));
    let m = block("query: {q: {exact: \"a\\ufffd\"}}");
    assert!(m.matches(&Req::new().with_raw_query("q=a%FF")));
}

#[test]
fn path_matches_by_prefix_and_regex() {
    let m = block("path: {prefix: /api/}");
    assert!(m.matches(&Req::new().with_path("/api/orders")));
    assert!(!m.matches(&Req::new().with_path("/web")));
    let m = block("path: {regex: '/orders/[0-9]+'}");
    assert!(m.matches(&Req::new().with_path("/orders/42")));
    assert!(!m.matches(&Req::new().with_path("/orders/42/items")));
}

#[test]
fn methods_match_case_insensitively() {
    let m = block("methods: [get, POST]");
    assert!(m.matches(&Req::new().with_method("GET")));
    assert!(m.matches(&Req::new().with_method("post")));
    assert!(!m.matches(&Req::new().with_method("DELETE")));
}

#[test]
fn source_cidrs_match_ipv4_and_ipv6() {
    let m = block("sourceCidrs: [10.8.0.0/16, \"2001:db8::/32\"]");
    assert!(m.matches(&Req::new().with_ip("10.8.1.2")));
    assert!(m.matches(&Req::new().with_ip("::ffff:10.8.1.2")));
    assert!(m.matches(&Req::new().with_ip("2001:db8::7")));
    assert!(!m.matches(&Req::new().with_ip("10.9.0.1")));
    assert!(!m.matches(&Req::new().with_ip("2001:db9::7")));
    assert!(!m.matches(&Req::new()));
}

#[test]
fn percent_selects_a_stable_share_of_keys() {
    let m = block("percent: 10\nhashBy: {header: X-User-Id}");
    let mut hits = 0;
    for user in 0..10_000 {
        let req = Req::new().with_header("x-user-id", &format!("user-{user}"));
        let first = m.matches(&req);
        assert_eq!(m.matches(&req), first);
        hits += u32::from(first);
    }
    assert!((850..1150).contains(&hits), "{hits}");
    assert!(!m.matches(&Req::new()), "no key, no match");
}

#[test]
fn percent_buckets_are_pinned_and_raising_percent_keeps_earlier_users() {
    // Part of the contract between sidecars of different versions.
    assert_eq!(
        percent_bucket("gray", "user-1"),
        percent_bucket("gray", "user-1")
    );
    let ten = block("percent: 10\nhashBy: {cookie: uid}");
    let twenty = block("percent: 20\nhashBy: {cookie: uid}");
    for user in 0..2_000 {
        let req = Req::new().with_cookie("uid", &format!("u{user}"));
        assert!(!ten.matches(&req) || twenty.matches(&req));
    }
}

#[test]
fn percent_zero_and_hundred_are_none_and_all() {
    let none = block("percent: 0\nhashBy: {cookie: uid}");
    let all = block("percent: 100\nhashBy: {cookie: uid}");
    for user in 0..500 {
        let req = Req::new().with_cookie("uid", &format!("u{user}"));
        assert!(!none.matches(&req));
        assert!(all.matches(&req));
    }
}

#[test]
fn an_empty_or_missing_hash_key_is_no_user_and_stays_out() {
    let all = block("percent: 100\nhashBy: {header: x-user-id}");
    assert!(all.matches(&Req::new().with_header("x-user-id", "u1")));
    assert!(!all.matches(&Req::new().with_header("x-user-id", "")));
    assert!(!all.matches(&Req::new()));
    let by_cookie = block("percent: 100\nhashBy: {cookie: uid}");
    assert!(!by_cookie.matches(&Req::new().with_cookie("uid", "")));
}

#[test]
fn percent_buckets_of_different_tags_are_independent() {
    let both = (0..10_000)
        .filter(|u| {
            let key = format!("user-{u}");
            percent_bucket("gray", &key) < 1_000 && percent_bucket("blue", &key) < 1_000
        })
        .count();
    // Independent 10% draws overlap on about 1% of keys, not 10%.
    assert!((50..200).contains(&both), "{both}");
}

#[test]
fn any_is_an_or_of_blocks() {
    let m = block("any:\n  - headers: {a: {exact: \"1\"}}\n  - cookies: {lane: {exact: blue}}");
    assert!(m.matches(&Req::new().with_header("a", "1")));
    assert!(m.matches(&Req::new().with_cookie("lane", "blue")));
    assert!(!m.matches(&Req::new().with_header("a", "2")));
}

#[test]
fn not_negates_a_block() {
    let m = block("methods: [GET]\nnot: {path: {prefix: /admin}}");
    assert!(m.matches(&Req::new().with_path("/shop")));
    assert!(!m.matches(&Req::new().with_path("/admin/x")));
}
