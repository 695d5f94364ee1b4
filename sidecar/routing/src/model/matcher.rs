//! String matchers: `exact`, `prefix`, `regex`, `present: true`, `absent: true`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::quote;

/// Longest regex source accepted, in bytes.
pub const REGEX_MAX_LEN: usize = 1024;
/// Largest compiled regex program accepted, in bytes (the `regex` crate's size limit).
pub const REGEX_MAX_COMPILED: usize = 256 * 1024;

/// One condition on an optional string (a header, cookie, query parameter or path).
/// In YAML, a mapping with exactly one of `exact`, `prefix`, `regex`, `present: true`,
/// `absent: true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStringMatch", into = "RawStringMatch")]
pub enum StringMatch {
    /// The value equals this string (case-sensitive).
    Exact(String),
    /// The value starts with this string (case-sensitive).
    Prefix(String),
    /// The whole value matches this regex.
    Regex(Pattern),
    /// The value is there, whatever it is.
    Present,
    /// The value is not there.
    Absent,
}

impl StringMatch {
    /// Whether `value` (None = missing) satisfies the condition.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Self::Present, v) => v.is_some(),
            (Self::Absent, v) => v.is_none(),
            (_, None) => false,
            (Self::Exact(e), Some(v)) => v == e,
            (Self::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (Self::Regex(r), Some(v)) => r.is_match(v),
        }
    }
}

/// A regex in RE2 syntax (the `regex` crate), anchored as `^(?:…)$` so it must match
/// the whole value, at most [`REGEX_MAX_LEN`] bytes of source and
/// [`REGEX_MAX_COMPILED`] bytes compiled. Compiled once, when read.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`; the error is the reason, for a human.
    pub fn new(source: &str) -> Result<Self, String> {
        if source.len() > REGEX_MAX_LEN {
            return Err(format!(
                "regex is {} bytes, over the {REGEX_MAX_LEN}-byte limit",
                source.len()
            ));
        }
        // The source is compiled alone first: wrapped unchecked, `a)|(b` would
        // escape the anchoring group and match any value starting with `a`.
        compile(source, source)?;
        let regex = compile(&format!("^(?:{source})$"), source)?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The regex as written (without the added anchors).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

fn compile(pattern: &str, source: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_MAX_COMPILED)
        .dfa_size_limit(REGEX_MAX_COMPILED)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "regex {} is too large once compiled (limit {} KiB)",
                quote(source),
                REGEX_MAX_COMPILED / 1024
            ),
            other => format!("invalid regex {}: {}", quote(source), syntax_reason(&other)),
        })
}

/// The one-line reason of a regex syntax error (its Display is a multi-line drawing).
fn syntax_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default())
        .trim()
        .to_owned()
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The YAML shape; turned into [`StringMatch`] by checking that exactly one is set.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<Pattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    present: Option<OnlyTrue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    absent: Option<OnlyTrue>,
}

/// `true`, the only value `present` and `absent` take.
#[derive(Clone, Copy)]
struct OnlyTrue;

impl Serialize for OnlyTrue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for OnlyTrue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if bool::deserialize(d)? {
            Ok(OnlyTrue)
        } else {
            Err(serde::de::Error::custom(
                "only `true` is allowed: write `present: true` or `absent: true`",
            ))
        }
    }
}

impl TryFrom<RawStringMatch> for StringMatch {
    type Error = String;

    fn try_from(raw: RawStringMatch) -> Result<Self, String> {
        let mut set = Vec::new();
        let mut out = None;
        let mut take = |name: &'static str, m: Option<StringMatch>| {
            if let Some(m) = m {
                set.push(name);
                out = Some(m);
            }
        };
        take("exact", raw.exact.map(StringMatch::Exact));
        take("prefix", raw.prefix.map(StringMatch::Prefix));
        take("regex", raw.regex.map(StringMatch::Regex));
        take("present", raw.present.map(|_| StringMatch::Present));
        take("absent", raw.absent.map(|_| StringMatch::Absent));
        match (set.len(), out) {
            (1, Some(m)) => Ok(m),
            (0, _) => {
                Err("a string matcher needs one of exact, prefix, regex, present, absent".into())
            }
            _ => Err(format!(
                "a string matcher takes exactly one of exact, prefix, regex, present, absent; found {}",
                set.join(" and ")
            )),
        }
    }
}

impl From<StringMatch> for RawStringMatch {
    fn from(m: StringMatch) -> Self {
        let mut raw = RawStringMatch::default();
        match m {
            StringMatch::Exact(s) => raw.exact = Some(s),
            StringMatch::Prefix(s) => raw.prefix = Some(s),
            StringMatch::Regex(p) => raw.regex = Some(p),
            StringMatch::Present => raw.present = Some(OnlyTrue),
            StringMatch::Absent => raw.absent = Some(OnlyTrue),
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_anchored() {
        let p = Pattern::new("ab|cd").unwrap();
        assert!(p.is_match("ab"));
        assert!(p.is_match("cd"));
        assert!(!p.is_match("abcd"));
        assert!(!p.is_match("xab"));
    }

    #[test]
    fn a_regex_cannot_escape_its_anchors() {
        assert!(Pattern::new("a)|(b").is_err());
        assert!(Pattern::new("a)(?:b").is_err());
    }

    #[test]
    fn regex_errors_are_one_line() {
        let e = Pattern::new("(a").err().unwrap();
        assert!(e.starts_with("invalid regex \"(a\": "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn regex_size_is_limited() {
        assert!(
            Pattern::new(&"a".repeat(1025))
                .err()
                .unwrap()
                .contains("1024-byte limit")
        );
        let e = Pattern::new(r"(?:\w{100}){100}").err().unwrap();
        assert!(e.contains("too large once compiled"), "{e}");
    }

    #[test]
    fn each_matcher_matches_as_documented() {
        assert!(StringMatch::Exact("a".into()).matches(Some("a")));
        assert!(!StringMatch::Exact("a".into()).matches(Some("A")));
        assert!(!StringMatch::Exact("a".into()).matches(None));
        assert!(StringMatch::Prefix("/api".into()).matches(Some("/api/x")));
        assert!(StringMatch::Present.matches(Some("")));
        assert!(!StringMatch::Present.matches(None));
        assert!(StringMatch::Absent.matches(None));
        assert!(!StringMatch::Absent.matches(Some("x")));
    }
}
