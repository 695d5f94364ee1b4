//! The query string, read the one way every reader of it must agree on: as
//! `application/x-www-form-urlencoded` (the WHATWG URL standard's parser). A sidecar
//! matching a real request and `graylane explain` matching decoded `--query` text see
//! the same parameters only because decoding happens here and nowhere else.

use std::borrow::Cow;

use crate::table::RequestView;

/// The decoded `(name, value)` pairs of a raw query string (what follows `?`, without
/// the fragment), in the order they appear.
///
/// Pairs are separated by `&` and empty ones skipped; a pair without `=` has the value
/// `""`. In names and values `+` is a space and `%XX` (two hex digits) is that byte; a
/// `%` not followed by two hex digits stays as it is. Decoded bytes that are not UTF-8
/// become U+FFFD, as the standard says. Borrows when there is nothing to decode, and
/// never panics, whatever the input.
pub fn query_pairs(raw: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    raw.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(name), decode(value))
    })
}

/// The first value of query parameter `name` in `req`, decoded: from its raw query
/// string when it has one, else from its already decoded parameters.
pub(crate) fn query_param<'r>(req: &'r dyn RequestView, name: &str) -> Option<Cow<'r, str>> {
    match req.query_string() {
        Some(raw) => query_pairs(raw).find_map(|(k, v)| (k == name).then_some(v)),
        None => req.query(name).map(Cow::Borrowed),
    }
}

fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let digit = char::from(*b?).to_digit(16)?;
    u8::try_from(digit).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        query_pairs(raw)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn plus_and_percent_20_are_a_space() {
        assert_eq!(
            pairs("group=beta%20testers"),
            [pair("group", "beta testers")]
        );
        assert_eq!(pairs("group=beta+testers"), [pair("group", "beta testers")]);
        assert_eq!(
            pairs("group=beta%2Btesters"),
            [pair("group", "beta+testers")]
        );
    }

    #[test]
    fn names_are_decoded_too() {
        assert_eq!(
            pairs("gr%6Fup=a&ids%5B%5D=1"),
            [pair("group", "a"), pair("ids[]", "1")]
        );
    }

    #[test]
    fn invalid_escapes_stay_as_they_are() {
        assert_eq!(
            pairs("a=%zz&b=%4&c=%&d=100%25%2"),
            [
                pair("a", "%zz"),
                pair("b", "%4"),
                pair("c", "%"),
                pair("d", "100%%2")
            ]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_become_the_replacement_character() {
        assert_eq!(pairs("a=gr%FFy"), [pair("a", "gr\u{FFFD}y")]);
        assert_eq!(pairs("%C3%A9=%C3%A9"), [pair("é", "é")]);
        // A multi-byte character cut by an invalid escape.
        assert_eq!(pairs("a=%C3"), [pair("a", "\u{FFFD}")]);
    }

    #[test]
    fn empty_pairs_are_skipped_and_a_bare_name_has_an_empty_value() {
        assert_eq!(
            pairs("&a&&=x&b=&c=1=2&"),
            [
                pair("a", ""),
                pair("", "x"),
                pair("b", ""),
                pair("c", "1=2")
            ]
        );
        assert!(pairs("").is_empty());
    }

    #[test]
    fn text_without_escapes_is_borrowed() {
        let (k, v) = query_pairs("group=beta").next().unwrap();
        assert!(matches!(
            (k, v),
            (Cow::Borrowed("group"), Cow::Borrowed("beta"))
        ));
    }

    /// Every byte but the unreserved ones as `%XX`: what a careful client sends.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest! {
        #[test]
        fn decoding_undoes_encoding(k in ".{0,12}", v in ".{0,12}") {
            let raw = format!("x=1&{}={}", encode(&k), encode(&v));
            prop_assert_eq!(pairs(&raw), vec![pair("x", "1"), (k, v)]);
        }

        #[test]
        fn any_input_decodes_without_growing(raw in "[a-z%+=&0-9A-F\u{e9}]{0,40}") {
            // An escape is three bytes for one, and a U+FFFD (three bytes) stands for
            // at least one escape: decoding never lengthens the text.
            let decoded: usize = query_pairs(&raw).map(|(k, v)| k.len() + v.len()).sum();
            prop_assert!(decoded <= raw.len());
        }
    }
}
