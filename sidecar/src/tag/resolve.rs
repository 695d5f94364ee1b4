//! Where a request's tag comes from, and the request as the routing crate sees it.

use std::net::IpAddr;

use graylane_routing::{CarriedFrom, RequestView, Tag, trace_id_from_traceparent};
use http::HeaderMap;
use http::header::HeaderName;
use http::request::Parts;

/// The tag header (case-insensitive, as every header name).
pub const TAG_HEADER: &str = "gray-publish";
/// [`TAG_HEADER`] as a header name: made at compile time, and looked up without
/// parsing (a lookup by `&str` parses and validates the name each time).
pub(crate) const TAG_HEADER_NAME: HeaderName = HeaderName::from_static(TAG_HEADER);
/// W3C baggage, where the tag travels too.
pub(crate) const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Where the deciding sidecar found a request's tag (the `source=` of Graylane-Route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagSource {
    Header,
    Baggage,
    Trace,
    Rule,
    None,
}

impl TagSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Baggage => "baggage",
            Self::Trace => "trace",
            Self::Rule => "rule",
            Self::None => "none",
        }
    }
}

/// The tag a request carries itself, found the same way in both directions: the
/// routing crate's [`graylane_routing::carried`] over its header lines.
#[derive(Debug, PartialEq)]
pub(crate) struct Carried {
    pub(crate) tag: Option<Tag>,
    /// `Header`, `Baggage`, or `None`.
    pub(crate) source: TagSource,
    /// The header was there and invalid: the caller counts it.
    pub(crate) invalid_header: bool,
    /// The baggage's `gray-publish` entry was read and is no tag: counted as well.
    pub(crate) invalid_baggage: bool,
    /// A `Gray-Publish` or `baggage` line was there at all, valid or not.
    pub(crate) lines: bool,
}

impl Carried {
    /// Invalid tags the request carried (sidecar.md: each removed and counted).
    pub(crate) fn invalid(&self) -> u64 {
        u64::from(self.invalid_header) + u64::from(self.invalid_baggage)
    }
}

pub(crate) fn carried(headers: &HeaderMap) -> Carried {
    fn text(v: &http::HeaderValue) -> Option<&str> {
        v.to_str().ok()
    }
    let (tags, baggage) = (headers.get_all(TAG_HEADER_NAME), headers.get_all(BAGGAGE));
    let lines = tags.iter().next().is_some() || baggage.iter().next().is_some();
    let c = graylane_routing::carried(tags.iter().map(text), baggage.iter().map(text));
    Carried {
        tag: c.tag,
        source: match c.from {
            CarriedFrom::Header => TagSource::Header,
            CarriedFrom::Baggage => TagSource::Baggage,
            CarriedFrom::None => TagSource::None,
        },
        invalid_header: c.invalid_header,
        invalid_baggage: c.invalid_baggage,
        lines,
    }
}

/// The W3C trace id of the request's `traceparent`, if valid.
pub fn trace_id(headers: &HeaderMap) -> Option<[u8; 16]> {
    headers
        .get(crate::spans::TRACEPARENT)?
        .to_str()
        .ok()
        .and_then(trace_id_from_traceparent)
}

/// A request as `graylane-routing` matches it.
pub struct View<'a> {
    pub parts: &'a Parts,
    pub source_ip: Option<IpAddr>,
}

/// What [`View::header`] answers for a value that is not UTF-8: the character that
/// stands for undecodable input, which no `exact` or `prefix` of a real value equals.
const NOT_TEXT: &str = "\u{FFFD}";

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        // Presence must not depend on the bytes: a value with obs-text (RFC 9110 §5.5)
        // is still there for `present`/`absent`. UTF-8 is read as the text it is; other
        // bytes cannot be a `&str`, so they stand as NOT_TEXT (never a panic).
        let value = self.parts.headers.get(name)?;
        Some(std::str::from_utf8(value.as_bytes()).unwrap_or(NOT_TEXT))
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|line| {
                line.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then_some(v)
                })
            })
    }

    fn query_string(&self) -> Option<&str> {
        // Raw: the routing crate decodes it (`+`, `%XX`), the same way for every
        // reader, so `graylane explain` and this sidecar cannot disagree.
        self.parts.uri.query()
    }

    fn path(&self) -> &str {
        self.parts.uri.path()
    }

    fn method(&self) -> &str {
        self.parts.method.as_str()
    }

    fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
}

#[cfg(test)]
mod tests {
    use graylane_routing::{Pattern, RoutingTable, RuleSet, StringMatch};
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn one_valid_header_value_is_the_tag() {
        let c = carried(&headers(&[("Gray-Publish", "gray")]));
        assert_eq!((c.tag, c.source), (Tag::parse("gray"), TagSource::Header));
        let c = carried(&headers(&[]));
        assert_eq!(
            (c.tag, c.source, c.invalid_header),
            (None, TagSource::None, false)
        );
    }

    #[test]
    fn two_headers_a_list_or_a_bad_value_are_no_tag() {
        let long = "x".repeat(65);
        for bad in [
            &[("gray-publish", "a"), ("gray-publish", "b")][..],
            &[("gray-publish", "a,b")],
            &[("gray-publish", "")],
            &[("gray-publish", long.as_str())],
        ] {
            let c = carried(&headers(bad));
            assert_eq!((c.tag, c.invalid_header), (None, true), "{bad:?}");
        }
    }

    #[test]
    fn the_underscore_variant_is_not_the_tag() {
        let c = carried(&headers(&[("gray_publish", "gray")]));
        assert_eq!((c.tag, c.invalid_header), (None, false));
    }

    #[test]
    fn baggage_and_traceparent_are_read() {
        let h = headers(&[
            ("baggage", "a=1, gray-publish=blue"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        assert_eq!(carried(&h).tag, Tag::parse("blue"));
        assert_eq!(carried(&h).source, TagSource::Baggage);
        assert_eq!(trace_id(&h).map(|t| t[0]), Some(0x4b));
    }

    /// Headers from raw bytes, which `headers` cannot build (`&str` values).
    fn raw_headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn two_baggage_headers_read_as_one_list() {
        let gray = Tag::parse("gray");
        for (lines, want) in [
            (&["gray-publish=gray", "gray-publish=blue"][..], None),
            (
                &["gray-publish=gray", "a=1, Gray-Publish=gray"],
                gray.clone(),
            ),
            (&["a=1", "gray-publish=gray;p"], gray),
            (&["gray-publish=%zz", "gray-publish=gray"], None),
            (&["a=1", "b=2", "gray-publish=blue"], Tag::parse("blue")),
        ] {
            let split: Vec<_> = lines.iter().map(|l| ("baggage", *l)).collect();
            assert_eq!(carried(&headers(&split)).tag, want, "{lines:?}");
            let joined = headers(&[("baggage", &lines.join(","))]);
            assert_eq!(carried(&joined).tag, want, "{lines:?} in one line");
        }
    }

    #[test]
    fn a_baggage_line_that_is_not_ascii_makes_the_list_unreadable() {
        let split = raw_headers(&[("baggage", b"gray-publish=gray"), ("baggage", b"x=\xff")]);
        let joined = raw_headers(&[("baggage", b"gray-publish=gray,x=\xff")]);
        assert_eq!(carried(&split).tag, None);
        assert_eq!(carried(&joined).tag, None);
    }

    fn parts(headers: HeaderMap) -> Parts {
        let mut req = http::Request::new(());
        *req.headers_mut() = headers;
        req.into_parts().0
    }

    #[test]
    fn a_header_with_non_utf8_bytes_is_present() {
        let parts = parts(raw_headers(&[("x-user", b"gr\xffy")]));
        let view = View {
            parts: &parts,
            source_ip: None,
        };
        let value = view.header("x-user");
        assert!(StringMatch::Present.matches(value));
        assert!(!StringMatch::Absent.matches(value));
        let lossy = String::from_utf8_lossy(b"gr\xffy").into_owned();
        for m in [
            StringMatch::Exact(lossy),
            StringMatch::Exact("gray".into()),
            StringMatch::Prefix("gr".into()),
            StringMatch::Regex(Pattern::new("gr.*y").unwrap()),
        ] {
            assert!(!m.matches(value), "{m:?}");
        }
    }

    #[test]
    fn a_tag_policy_sees_a_non_utf8_header_as_present() {
        let yaml = "apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {name: edge}
spec:
  services: [frontend]
  rules:
    - {tag: anon, match: {headers: {x-user: {absent: true}}}}
    - {tag: known, match: {headers: {x-user: {present: true}}}}
";
        let table = RoutingTable::build(&RuleSet::from_yaml("t.yaml", yaml).unwrap(), vec![]);
        for (headers, want) in [
            (raw_headers(&[("X-User", b"\xe9\xff")]), "known"),
            (raw_headers(&[("x-user", b"alice")]), "known"),
            (raw_headers(&[("x-other", b"\xff")]), "anon"),
        ] {
            let parts = parts(headers);
            let view = View {
                parts: &parts,
                source_ip: None,
            };
            let got = table.inbound_tag("default", "frontend", None, &view).tag;
            assert_eq!(got, Tag::parse(want), "{:?}", parts.headers);
        }
    }

    #[test]
    fn a_tag_policy_matches_the_query_decoded() {
        let yaml = "apiVersion: graylane.io/v1
kind: TagPolicy
metadata: {name: edge}
spec:
  services: [frontend]
  rules:
    - {tag: gray, match: {query: {group: {exact: beta testers}}}}
";
        let table = RoutingTable::build(&RuleSet::from_yaml("t.yaml", yaml).unwrap(), vec![]);
        for (uri, want) in [
            ("/?group=beta%20testers", Some("gray")),
            ("/?group=beta+testers", Some("gray")),
            ("/a?x=%zz&gr%6Fup=beta+testers", Some("gray")),
            ("/?group=beta%2Btesters", None),
            ("/?group=beta%FFtesters", None),
            ("/", None),
        ] {
            let (parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
            let view = View {
                parts: &parts,
                source_ip: None,
            };
            let got = table.inbound_tag("default", "frontend", None, &view).tag;
            assert_eq!(got, want.and_then(Tag::parse), "{uri}");
        }
    }

    #[test]
    fn a_utf8_header_value_is_read_as_text() {
        let parts = parts(raw_headers(&[("x-user", "zoë".as_bytes())]));
        let view = View {
            parts: &parts,
            source_ip: None,
        };
        assert_eq!(view.header("x-user"), Some("zoë"));
        assert!(StringMatch::Exact("zoë".into()).matches(view.header("x-user")));
    }
}
