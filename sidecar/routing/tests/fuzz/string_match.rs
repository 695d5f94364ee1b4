//! Target `string_match`: `StringMatch::matches` and anchored `Pattern`s on hostile
//! values.

use std::sync::LazyLock;

use graylane_routing::{Pattern, REGEX_MAX_LEN, StringMatch};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;

use crate::harness::text;
use crate::strategies::{any_chars, arbitrary_bytes, bytes_of, chars_of, huge};

/// Regexes with a reputation (nested repetition, overlapping alternatives): harmless
/// for the linear-time regex crate, and the 64 KiB values show it stays so.
pub(crate) const PATTERNS: &[&str] = &[
    "gray|blue",
    "[a-z]+",
    "(a|aa)*b",
    "(x+x+)+y",
    ".*gray.*",
    "(?i)GRAY",
    "/api/.*",
    "\\d{3}",
    "[^;]*",
    "",
    "(.*=.*;)*",
];

/// Each of [`PATTERNS`] as a `Pattern`, and anchored by hand with `\A…\z`.
pub(crate) static COMPILED: LazyLock<Vec<(Pattern, regex::Regex)>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|p| {
            let whole = regex::Regex::new(&format!("\\A(?:{p})\\z")).unwrap();
            (Pattern::new(p).unwrap(), whole)
        })
        .collect()
});

/// Units of long values: repeated, they feed the regexes their worst case.
const HOSTILE_UNITS: &[&[u8]] = &[b"a", b"x", b"gray", b"=;", b"\xff"];

pub(crate) fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => arbitrary_bytes(),
        8 => bytes_of(any_chars(0..41)),
        8 => bytes_of(chars_of("ax=;y", 0..41)),
        1 => huge(select(HOSTILE_UNITS).prop_map(<[u8]>::to_vec)),
    ]
}

pub(crate) fn check(bytes: &[u8]) -> TestCaseResult {
    let v = text(bytes);
    let v = v.as_str();
    let cut = v.char_indices().nth(3).map_or(v.len(), |(i, _)| i);
    let head = &v[..cut];
    let (longer, behind) = (format!("{v}x"), format!("x{v}"));
    prop_assert!(StringMatch::Exact(v.to_owned()).matches(Some(v)));
    prop_assert!(!StringMatch::Exact(longer.clone()).matches(Some(v)));
    prop_assert!(StringMatch::Prefix(head.to_owned()).matches(Some(v)));
    prop_assert!(!StringMatch::Prefix(longer.clone()).matches(Some(v)));
    prop_assert!(StringMatch::Present.matches(Some(v)));
    prop_assert!(!StringMatch::Absent.matches(Some(v)));
    for m in [
        StringMatch::Exact(v.to_owned()),
        StringMatch::Prefix(String::new()),
    ] {
        prop_assert!(!m.matches(None));
    }

    // A literal, escaped, matches itself and nothing longer: the anchors hold.
    let literal = regex::escape(v);
    match Pattern::new(&literal) {
        Ok(p) => {
            prop_assert_eq!(p.as_str(), literal.as_str());
            prop_assert!(p.is_match(v));
            prop_assert!(!p.is_match(&longer));
            prop_assert!(!p.is_match(&behind));
            prop_assert!(StringMatch::Regex(p).matches(Some(v)));
        }
        Err(e) => prop_assert!(
            literal.len() > REGEX_MAX_LEN || e.contains("too large"),
            "{}",
            e
        ),
    }

    for (p, anchored) in COMPILED.iter() {
        let whole = p.is_match(v);
        prop_assert_eq!(whole, anchored.is_match(v), "{:?}", p);
        prop_assert_eq!(StringMatch::Regex(p.clone()).matches(Some(v)), whole);
    }
    Ok(())
}
