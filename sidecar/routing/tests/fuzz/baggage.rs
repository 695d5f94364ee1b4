//! Target `baggage`: `tag_from_baggage`, `baggage_with_tag`, `baggage_without_tag`,
//! `baggage_entry`, `baggage_with`, each against the contract in its doc comment.

use graylane_routing::{
    BAGGAGE_KEY, TAG_MAX_LEN, Tag, baggage_entry, baggage_with, baggage_with_tag,
    baggage_without_tag, tag_from_baggage,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;

use crate::harness::text;
use crate::strategies::{PRINTABLE, arbitrary_bytes, bytes_of, chars_of, huge, huge_text, mutated};
use crate::tag::valid_tag;

/// Keys, spelled as senders spell them.
const BAGGAGE_KEYS: &[&str] = &[
    "gray-publish",
    "Gray-Publish",
    " GRAY-PUBLISH ",
    "\tgray-publish",
    "gray_publish",
    "gray-publish;p",
    "userId",
    "k",
    "",
];

const BAGGAGE_VALUES: &[&str] = &[
    "gray",
    "blue",
    "v2.1_rc-3",
    "%67ray",
    "%67%72%61%79",
    "gr%2",
    "%",
    "%g1",
    "%+1",
    "%ff",
    "%c3%a9",
    "a%20b",
    "-x",
    "",
    " gray ",
    "\"gray\"",
    "gray;ttl=10",
    "gray;p",
    "a=b",
];

fn baggage_member() -> impl Strategy<Value = String> {
    let key = prop_oneof![3 => select(BAGGAGE_KEYS).prop_map(String::from), 1 => chars_of(PRINTABLE, 0..9)];
    let value = prop_oneof![
        3 => select(BAGGAGE_VALUES).prop_map(String::from),
        1 => valid_tag(),
        1 => chars_of(PRINTABLE, 0..13),
    ];
    let props = prop_oneof![Just(""), Just(";p"), Just(";ttl=10"), Just(" ; a = b ")];
    (key, any::<bool>(), value, props).prop_map(|(k, eq, v, p)| {
        if eq {
            format!("{k}={v}{p}")
        } else {
            format!("{k}{p}")
        }
    })
}

fn baggage_header() -> impl Strategy<Value = String> {
    let sep = select(&[",", ", ", " ,", ",,", ",\t"][..]);
    vec((baggage_member(), sep), 0..24).prop_map(|members| {
        let mut out = String::new();
        for (m, sep) in members {
            out.push_str(&m);
            out.push_str(sep);
        }
        out.pop();
        out
    })
}

pub(crate) fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let many = prop_oneof![
        bytes_of(baggage_member().prop_map(|m| m + ",")),
        Just(b"gray-publish=gray,".to_vec()),
        Just(b"a=1,".to_vec()),
        Just(b"%41".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        Just(b"=".to_vec()),
    ];
    prop_oneof![
        12 => arbitrary_bytes(),
        24 => bytes_of(baggage_header()),
        24 => mutated(bytes_of(baggage_header())),
        1 => huge(many),
        // One huge member among normal ones.
        1 => (baggage_header(), huge_text(Just("%61".to_owned())))
            .prop_map(|(h, v)| format!("{h},gray-publish={v},x=y").into_bytes()),
    ]
}

fn members(baggage: &str) -> impl Iterator<Item = &str> {
    baggage.split(',').map(str::trim).filter(|m| !m.is_empty())
}

/// Whether a member is a `gray-publish` entry (with or without `=value`).
fn is_tag_member(member: &str) -> bool {
    let key = member.split_once('=').map_or(member, |(k, _)| k);
    key.trim().eq_ignore_ascii_case(BAGGAGE_KEY)
}

/// `%XX` escapes decoded (exactly two hex digits each), as W3C baggage values are.
fn percent_decoded(value: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'%' {
            out.push(b);
            continue;
        }
        let [hi, lo, tail @ ..] = tail else {
            return None;
        };
        let digit = |c: &u8| char::from(*c).to_digit(16);
        out.push(u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?);
        rest = tail;
    }
    String::from_utf8(out).ok()
}

/// What `tag_from_baggage` must answer: the tag when every `gray-publish=` entry
/// holds the same valid (decoded) tag, else none.
fn expected_baggage_tag(baggage: &str) -> Option<Tag> {
    let mut found: Option<Tag> = None;
    for member in baggage.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case(BAGGAGE_KEY) {
            continue;
        }
        let value = value.split_once(';').map_or(value, |(v, _)| v).trim();
        let tag = Tag::parse(&percent_decoded(value)?)?;
        if found.as_ref().is_some_and(|f| *f != tag) {
            return None;
        }
        found = Some(tag);
    }
    found
}

pub(crate) fn check(bytes: &[u8]) -> TestCaseResult {
    let s = text(bytes);
    let found = tag_from_baggage(&s);
    prop_assert_eq!(&found, &expected_baggage_tag(&s));
    if found.is_some() {
        prop_assert!(baggage_entry(&s, BAGGAGE_KEY).is_some());
    }

    let others: Vec<&str> = members(&s).filter(|m| !is_tag_member(m)).collect();
    let without = baggage_without_tag(&s);
    prop_assert_eq!(&without, &(!others.is_empty()).then(|| others.join(",")));
    if let Some(w) = &without {
        prop_assert_eq!(tag_from_baggage(w), None);
        prop_assert!(!members(w).any(is_tag_member));
        prop_assert_eq!(baggage_without_tag(w), Some(w.clone()));
    }

    for tag in ["gray", "v2.1_rc-3", "z".repeat(TAG_MAX_LEN).as_str()] {
        let tag = Tag::parse(tag).unwrap();
        let with = baggage_with_tag(Some(&s), &tag);
        prop_assert_eq!(tag_from_baggage(&with), Some(tag.clone()));
        prop_assert_eq!(baggage_entry(&with, BAGGAGE_KEY), Some(tag.as_str()));
        let listed: Vec<&str> = members(&with).collect();
        prop_assert_eq!(listed[0], format!("{BAGGAGE_KEY}={tag}"));
        prop_assert_eq!(listed.iter().filter(|m| is_tag_member(m)).count(), 1);
        prop_assert_eq!(&listed[1..], others.as_slice());
        prop_assert_eq!(baggage_with_tag(Some(&with), &tag), with.clone());
        prop_assert_eq!(baggage_without_tag(&with), without.clone());
    }

    let other = baggage_with(Some(&s), "lane-x", "v%201");
    prop_assert_eq!(baggage_entry(&other, "LANE-X"), Some("v%201"));
    prop_assert_eq!(tag_from_baggage(&other), found);
    Ok(())
}
