//! The `gray-publish` entry of a W3C `baggage` header
//! (<https://www.w3.org/TR/baggage/>): `key=value;prop, key2=value2`.

use super::Tag;

/// The baggage key that carries the tag.
pub const BAGGAGE_KEY: &str = "gray-publish";

/// The tag in the `gray-publish` entry of a `baggage` header value.
///
/// Tolerates optional whitespace around members, keys and values, properties after
/// `;`, and percent-encoded values. The key is compared ASCII-case-insensitively.
/// `None` when there is no such entry, when its value is not a valid tag, or when
/// several entries disagree (like two `Gray-Publish` headers, that is no tag).
pub fn tag_from_baggage(baggage: &str) -> Option<Tag> {
    baggage_tag(baggage).ok().flatten()
}

/// [`tag_from_baggage`], telling "no entry" (`Ok(None)`) from an entry that is no tag
/// (`Err`: a value outside the grammar, entries that disagree), which is counted.
pub(super) fn baggage_tag(baggage: &str) -> Result<Option<Tag>, ()> {
    let mut found: Option<Tag> = None;
    for member in baggage.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case(BAGGAGE_KEY) {
            continue;
        }
        let value = value.split(';').next().unwrap_or_default().trim();
        let tag = percent_decode(value)
            .and_then(|v| Tag::parse(&v))
            .ok_or(())?;
        match &found {
            Some(prev) if *prev != tag => return Err(()),
            _ => found = Some(tag),
        }
    }
    Ok(found)
}

/// A `baggage` value with the `gray-publish` entry set to `tag`: any existing entry is
/// removed and the new one put first (W3C asks that updated entries go first, since
/// members at the end are the ones dropped when a header is too long). Other members
/// are kept as they were, without surrounding whitespace; empty members are dropped.
pub fn baggage_with_tag(existing: Option<&str>, tag: &Tag) -> String {
    // Tag characters are all baggage-octets, so the value needs no encoding.
    baggage_with(existing, BAGGAGE_KEY, tag.as_str())
}

/// A `baggage` value with entry `key` set to `value` (first, replacing any other
/// `key` entry). `value` must already be baggage-octets (no `,`, `;`, `=`...).
pub fn baggage_with(existing: Option<&str>, key: &str, value: &str) -> String {
    let mut out = format!("{key}={value}");
    for member in members_except(existing.unwrap_or_default(), key) {
        out.push(',');
        out.push_str(member);
    }
    out
}

/// The raw value of the first `key` entry (properties and whitespace stripped).
pub fn baggage_entry<'a>(baggage: &'a str, key: &str) -> Option<&'a str> {
    baggage.split(',').find_map(|member| {
        let (k, v) = member.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.split(';').next().unwrap_or_default().trim())
    })
}

/// A `baggage` value without any `gray-publish` entry (what a sidecar forwards when a
/// TagPolicy removed the caller's tag); `None` when no other member is left.
pub fn baggage_without_tag(existing: &str) -> Option<String> {
    let rest: Vec<&str> = members_except(existing, BAGGAGE_KEY).collect();
    (!rest.is_empty()).then(|| rest.join(","))
}

/// The members other than `key`, trimmed, empty ones dropped.
fn members_except<'a>(baggage: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> {
    baggage.split(',').map(str::trim).filter(move |member| {
        let k = member.split_once('=').map_or(*member, |(k, _)| k).trim();
        !member.is_empty() && !k.eq_ignore_ascii_case(key)
    })
}

/// Decodes `%XX` escapes; `None` on a broken escape or bytes that are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    if !value.contains('%') {
        return Some(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn removing_the_tag_keeps_the_other_members() {
        assert_eq!(
            super::baggage_without_tag("a=1, Gray-Publish=gray ,b=2").as_deref(),
            Some("a=1,b=2")
        );
        assert_eq!(super::baggage_without_tag("gray-publish=gray"), None);
    }

    use super::*;

    fn tag(s: &str) -> Option<String> {
        tag_from_baggage(s).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn reads_the_entry_among_others() {
        assert_eq!(
            tag("userId=alice, gray-publish=gray ,x=y"),
            Some("gray".into())
        );
        assert_eq!(tag("gray-publish = gray;ttl=10"), Some("gray".into()));
        assert_eq!(tag("Gray-Publish=blue"), Some("blue".into()));
    }

    #[test]
    fn decodes_percent_encoding() {
        assert_eq!(tag("gray-publish=%67ray"), Some("gray".into()));
        assert_eq!(tag("gray-publish=gr%2"), None);
        assert_eq!(tag("gray-publish=%ff"), None);
    }

    #[test]
    fn invalid_or_missing_values_are_no_tag() {
        assert_eq!(tag(""), None);
        assert_eq!(tag("gray-publish"), None);
        assert_eq!(tag("gray-publish="), None);
        assert_eq!(tag("gray-publish=a%20b"), None);
        assert_eq!(tag("other=gray"), None);
    }

    #[test]
    fn disagreeing_entries_are_no_tag() {
        assert_eq!(tag("gray-publish=gray,gray-publish=blue"), None);
        assert_eq!(
            tag("gray-publish=gray,gray-publish=gray"),
            Some("gray".into())
        );
    }

    #[test]
    fn with_tag_replaces_and_puts_first() {
        let t = Tag::parse("gray").unwrap();
        assert_eq!(baggage_with_tag(None, &t), "gray-publish=gray");
        assert_eq!(baggage_with_tag(Some("  "), &t), "gray-publish=gray");
        assert_eq!(
            baggage_with_tag(Some("a=1, gray-publish=blue;p ,, b=2"), &t),
            "gray-publish=gray,a=1,b=2"
        );
        assert_eq!(tag(&baggage_with_tag(Some("x=y"), &t)), Some("gray".into()));
    }
}
