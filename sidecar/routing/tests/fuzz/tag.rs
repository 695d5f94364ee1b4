//! Target `tag`: `Tag::parse` accepts exactly `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.

use std::sync::LazyLock;

use graylane_routing::{TAG_MAX_LEN, Tag};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

use crate::harness::text;
use crate::strategies::{any_chars, arbitrary_bytes, bytes_of, chars_of, huge, mutated};

static TAG_GRAMMAR: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$").unwrap());

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

const TAG_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

pub(crate) fn valid_tag() -> impl Strategy<Value = String> {
    (chars_of(ALNUM, 1..2), chars_of(TAG_CHARS, 0..TAG_MAX_LEN)).prop_map(|(a, b)| a + &b)
}

pub(crate) fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let near = prop_oneof![
        bytes_of(valid_tag()),
        // Around the length limit.
        (chars_of(ALNUM, 1..2), TAG_MAX_LEN - 2..=TAG_MAX_LEN + 2)
            .prop_map(|(c, n)| c.repeat(n).into_bytes()),
    ];
    prop_oneof![
        12 => arbitrary_bytes(),
        8 => bytes_of(any_chars(0..70)),
        12 => near.clone(),
        16 => mutated(near),
        1 => huge(bytes_of(chars_of("ab.-", 1..5))),
    ]
}

pub(crate) fn check(bytes: &[u8]) -> TestCaseResult {
    let s = text(bytes);
    let parsed = Tag::parse(&s);
    prop_assert_eq!(parsed.is_some(), TAG_GRAMMAR.is_match(&s));
    let json = serde_json::to_string(&s).unwrap();
    match parsed {
        Some(tag) => {
            prop_assert_eq!(tag.as_str(), s.as_str());
            prop_assert_eq!(tag.to_string(), s.as_str());
            prop_assert!(tag.as_str().len() <= TAG_MAX_LEN);
            prop_assert_eq!(s.parse::<Tag>(), Ok(tag.clone()));
            prop_assert_eq!(&serde_json::to_string(&tag).unwrap(), &json);
            prop_assert_eq!(serde_json::from_str::<Tag>(&json).unwrap(), tag);
        }
        None => {
            let e = s.parse::<Tag>().unwrap_err();
            prop_assert!(e.contains("is not a valid tag"), "{}", e);
            prop_assert!(serde_json::from_str::<Tag>(&json).is_err());
        }
    }
    Ok(())
}
