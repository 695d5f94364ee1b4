//! The gray tag value and where it travels: `Gray-Publish`, W3C `baggage`, and the
//! W3C `traceparent` trace id it is remembered under.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::quote;

mod baggage;
mod carried;
mod traceparent;

pub use self::baggage::{
    BAGGAGE_KEY, baggage_entry, baggage_with, baggage_with_tag, baggage_without_tag,
    tag_from_baggage,
};
pub use self::carried::{Carried, CarriedFrom, carried};
pub use self::traceparent::{TraceParent, push_hex, trace_id_from_traceparent};

/// Longest tag value, in bytes (all tag characters are ASCII).
pub const TAG_MAX_LEN: usize = 64;

/// A valid tag value: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, valid by construction.
///
/// rules.md words it as `[A-Za-z0-9._-]{1,64}`; sidecar.md's stricter grammar (first
/// character alphanumeric) is used everywhere, so a value that rules accept is always
/// one the sidecar forwards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag, or `None` when `value` does not match the grammar exactly (no trimming:
    /// a header value with spaces or commas is not a tag).
    pub fn parse(value: &str) -> Option<Tag> {
        is_valid(value).then(|| Tag(value.to_owned()))
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_valid(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
}

/// The reason a rule value is not a tag, for validation messages.
pub(crate) fn tag_error(value: &str) -> String {
    format!(
        "{} is not a valid tag: 1-64 characters from [A-Za-z0-9._-], starting with a letter or digit",
        quote(value)
    )
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Tag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tag::parse(s).ok_or_else(|| tag_error(s))
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if is_valid(&s) {
            Ok(Tag(s))
        } else {
            Err(serde::de::Error::custom(tag_error(&s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in ["gray", "a", "G1", "v2.1_rc-3", "0", &"a".repeat(64)] {
            assert!(Tag::parse(ok).is_some(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(65);
        for bad in [
            "",
            "-gray",
            ".x",
            "_x",
            "gr ay",
            "gray,blue",
            " gray",
            "gray\n",
            "灰",
            &long,
        ] {
            assert!(Tag::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trips_and_rejects_bad_values() {
        let t: Tag = serde_json::from_str("\"gray\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"gray\"");
        let e = serde_json::from_str::<Tag>("\"-x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a valid tag"), "{e}");
    }
}
