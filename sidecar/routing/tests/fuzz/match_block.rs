//! MatchBlocks for the `request` target: generated ones, and their meaning written
//! out from MatchBlock's documentation.

use std::collections::BTreeMap;

use graylane_routing::{
    Cidr, HashKey, MatchBlock, RequestView, StableHasher, StringMatch, normalized_path,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::string_match::{COMPILED, PATTERNS};
use crate::view::{
    CIDRS, COOKIE_NAMES, HEADER_NAMES, QUERY_NAMES, RULE_METHODS, VALUES, View, names,
};

fn string_match() -> impl Strategy<Value = StringMatch> {
    let listed = || select(VALUES).prop_map(String::from);
    prop_oneof![
        2 => listed().prop_map(StringMatch::Exact),
        2 => listed().prop_map(StringMatch::Prefix),
        // Compiled once: compiling per case would be most of the cost.
        2 => (0..PATTERNS.len()).prop_map(|i| StringMatch::Regex(COMPILED[i].0.clone())),
        1 => Just(StringMatch::Present),
        1 => Just(StringMatch::Absent),
    ]
}

fn hash_key() -> impl Strategy<Value = HashKey> {
    prop_oneof![
        select(HEADER_NAMES).prop_map(|h| HashKey::Header(h.to_owned())),
        select(COOKIE_NAMES).prop_map(|c| HashKey::Cookie(c.to_owned())),
    ]
}

/// One condition, as a block.
fn condition() -> impl Strategy<Value = MatchBlock> {
    let block = MatchBlock::default;
    let one = |name, m| BTreeMap::from([(name, m)]);
    let percent = (0u32..=10_000).prop_map(|k| f64::from(k) / 100.0);
    prop_oneof![
        3 => (names(HEADER_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { headers: one(n, m), ..block() }),
        2 => (names(COOKIE_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { cookies: one(n, m), ..block() }),
        2 => (names(QUERY_NAMES), string_match())
            .prop_map(move |(n, m)| MatchBlock { query: one(n, m), ..block() }),
        1 => string_match().prop_map(move |m| MatchBlock { path: Some(m), ..block() }),
        1 => vec(names(RULE_METHODS), 1..3)
            .prop_map(move |methods| MatchBlock { methods, ..block() }),
        1 => vec(select(CIDRS).prop_map(|c| Cidr::parse(c).unwrap()), 1..3)
            .prop_map(move |source_cidrs| MatchBlock { source_cidrs, ..block() }),
        1 => (percent, hash_key()).prop_map(move |(p, key)| MatchBlock {
            percent: Some(p),
            hash_by: Some(key),
            ..block()
        }),
    ]
}

/// Up to three conditions in one block; none is allowed too, since the table is built
/// from unchecked sets as well.
fn leaf_block() -> impl Strategy<Value = MatchBlock> {
    vec(condition(), 0..4).prop_map(|conds| {
        let mut all = MatchBlock::default();
        for c in conds {
            all.headers.extend(c.headers);
            all.cookies.extend(c.cookies);
            all.query.extend(c.query);
            all.path = c.path.or(all.path);
            all.methods.extend(c.methods);
            all.source_cidrs.extend(c.source_cidrs);
            if c.percent.is_some() {
                (all.percent, all.hash_by) = (c.percent, c.hash_by);
            }
        }
        all
    })
}

pub(crate) fn match_block() -> impl Strategy<Value = MatchBlock> {
    leaf_block().prop_recursive(3, 12, 3, |inner| {
        (
            leaf_block(),
            vec(inner.clone(), 0..3),
            proptest::option::weighted(0.3, inner),
        )
            .prop_map(|(mut b, any, not)| {
                b.any = any;
                b.not = not.map(Box::new);
                b
            })
    })
}

/// Whether `block` holds for `req`, from MatchBlock's documentation: every given
/// condition holds; header names and methods are case-insensitive; `percent` keeps
/// `stable_hash(salt ‖ 0xff ‖ key) % 10 000` below `percent × 100`, an empty key
/// being no key (release.md: "users without it stay out").
pub(crate) fn expected_match(block: &MatchBlock, salt: &str, view: &View<'_>) -> bool {
    let header = |name: &str| view.header(&name.to_ascii_lowercase());
    let key_value = |key: &HashKey| {
        match key {
            HashKey::Header(h) => header(h),
            HashKey::Cookie(c) => view.cookie(c),
        }
        .filter(|v| !v.is_empty())
    };
    let in_bucket = |percent: f64, key: &str| {
        let mut h = StableHasher::new();
        h.write(salt.as_bytes())
            .write(&[0xff])
            .write(key.as_bytes());
        let bucket = u32::try_from(h.finish() % 10_000).unwrap();
        f64::from(bucket) < (percent * 100.0).round()
    };
    (block.methods.is_empty()
        || block
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(view.method())))
        && block
            .path
            .as_ref()
            .is_none_or(|m| m.matches(Some(&normalized_path(view.path()))))
        && block.headers.iter().all(|(n, m)| m.matches(header(n)))
        && block.query.iter().all(|(n, m)| m.matches(view.query(n)))
        && block.cookies.iter().all(|(n, m)| m.matches(view.cookie(n)))
        && (block.source_cidrs.is_empty()
            || view
                .source_ip()
                .is_some_and(|ip| block.source_cidrs.iter().any(|c| c.contains(ip))))
        && match (block.percent, &block.hash_by) {
            (Some(p), Some(key)) => key_value(key).is_some_and(|v| in_bucket(p, v)),
            _ => true,
        }
        && (block.any.is_empty() || block.any.iter().any(|b| expected_match(b, salt, view)))
        && block
            .not
            .as_ref()
            .is_none_or(|b| !expected_match(b, salt, view))
}
