//! The request path a `path` matcher sees: normalised the way Envoy's
//! `normalize_path` and `merge_slashes` (Istio's `MERGE_SLASHES`) do, so a rule keeping
//! `/internal` out of a lane is not dodged by `/%69nternal`, `//internal`,
//! `/./internal` or `/x/../internal`, which apps and frameworks serve as `/internal`.
//! Only matching reads it: the request goes on as it came.

use std::borrow::Cow;

/// `path` normalised (RFC 3986 §6.2.2): percent-encoded unreserved characters
/// (letters, digits, `-._~`) decoded and other percent-encodings' hex digits in upper
/// case (§6.2.2.1-2), runs of `/` merged into one, then `.` and `..` segments removed
/// (§5.2.4; `..` never climbs above the root). `%2F` stays encoded: decoding it would
/// turn one segment into two. Borrows when there is nothing to change (the common
/// case); never panics, whatever the input.
pub fn normalized_path(path: &str) -> Cow<'_, str> {
    if !needs_work(path.as_bytes()) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    let absolute = decoded.starts_with('/');
    // `/a/` keeps its trailing slash; so does a path ending in `.` or `..`
    // (`/a/b/..` is `/a/`).
    let mut trailing = false;
    for segment in decoded.split('/') {
        trailing = false;
        match segment {
            // Empty segments are the merged slashes (and the leading one).
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                segments.pop();
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Whether normalising could change `path`: a `%`, a `//`, or a `.` segment.
fn needs_work(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| match b {
        b'%' => true,
        b'/' => path.get(i + 1) == Some(&b'/'),
        b'.' => {
            let starts = i == 0 || path[i - 1] == b'/';
            let rest = &path[i + 1..];
            starts
                && (rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/')))
        }
        _ => false,
    })
}

/// `%XX` of an unreserved character decoded, any other `%XX` in upper case, a `%`
/// not followed by two hex digits left as it is.
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2))
        {
            let byte = u8::try_from(hi * 16 + lo).unwrap_or(0);
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        if bytes[i] == b'%' {
            // Not an escape: a `%` as written.
            out.push('%');
            i += 1;
            continue;
        }
        // Copies up to the next `%` at once. `i` only ever stops after ASCII (a `%`
        // or an escape), so it is on a character boundary, and so is the next `%`.
        let next = path[i..].find('%').map_or(path.len(), |n| i + n);
        out.push_str(&path[i..next]);
        i = next;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::normalized_path as n;

    proptest! {
        #[test]
        fn normalising_leaves_no_way_around(p in "[/.a%0-9eE2fF\u{e9}]{0,24}") {
            let once = n(&p).into_owned();
            // Decoding is one pass, as Envoy's: `%%30a` is `%0a`, an escape only then.
            if !p.contains('%') {
                prop_assert_eq!(n(&once), once.as_str());
            }
            prop_assert!(!once.contains("//"), "{}", once);
            let segments: Vec<&str> = once.split('/').collect();
            prop_assert!(!segments.iter().any(|s| *s == "." || *s == ".."), "{}", once);
        }
    }

    #[test]
    fn ordinary_paths_are_borrowed_as_they_are() {
        for p in [
            "/",
            "/orders/7",
            "/a.b/c..d/.e",
            "/v1/items?",
            "",
            "relative/x",
        ] {
            assert!(matches!(n(p), std::borrow::Cow::Borrowed(_)), "{p}");
            assert_eq!(n(p), p);
        }
    }

    #[test]
    fn the_ways_around_a_prefix_all_normalise_to_it() {
        for p in [
            "/%69nternal/a",
            "/%69%6E%74ernal/a",
            "//internal/a",
            "/./internal/a",
            "/x/../internal/a",
            "/x/%2e%2e/internal/a",
            "///internal//a",
            "/../../internal/a",
        ] {
            assert_eq!(n(p), "/internal/a", "{p}");
        }
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        // §5.2.4's examples, and trailing slashes kept where a segment ended.
        assert_eq!(n("/a/b/c/./../../g"), "/a/g");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/a/"), "/a/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/."), "/");
        assert_eq!(n("//"), "/");
    }

    #[test]
    fn reserved_and_broken_escapes_stay_encoded() {
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%2Fb/%3f"), "/a%2Fb/%3F");
        assert_eq!(n("/a%zz/%4"), "/a%zz/%4");
        assert_eq!(n("/%"), "/%");
        assert_eq!(n("/é%41/ü"), "/éA/ü");
        assert_eq!(n("/%C3%A9"), "/%C3%A9");
    }
}
