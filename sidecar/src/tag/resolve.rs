//! Where a request's tag comes from, and the request as the routing crate sees it.

use std::net::IpAddr;

use graylane_routing::{RequestView, Tag, tag_from_baggage, trace_id_from_traceparent};
use http::HeaderMap;
use http::request::Parts;

/// The tag header (case-insensitive, as every header name).
pub const TAG_HEADER: &str = "gray-publish";

/// Where the deciding sidecar found a request's tag (the `source=` of Graylane-Route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Header,
    Baggage,
    Trace,
    Rule,
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Baggage => "baggage",
            Self::Trace => "trace",
            Self::Rule => "rule",
            Self::None => "none",
        }
    }
}

/// What the `Gray-Publish` header says.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderTag {
    Absent,
    Valid(Tag),
    /// Two headers, a comma list or a value outside the grammar: no tag, counted by
    /// the caller, never forwarded.
    Invalid,
}

/// The tag carried by the `Gray-Publish` header: exactly one value of the tag grammar.
pub fn from_header(headers: &HeaderMap) -> HeaderTag {
    let mut values = headers.get_all(TAG_HEADER).iter();
    let Some(first) = values.next() else {
        return HeaderTag::Absent;
    };
    if values.next().is_some() {
        return HeaderTag::Invalid;
    }
    first
        .to_str()
        .ok()
        .and_then(Tag::parse)
        .map_or(HeaderTag::Invalid, HeaderTag::Valid)
}

/// The `gray-publish` entry of the W3C `baggage` header(s).
pub fn from_baggage(headers: &HeaderMap) -> Option<Tag> {
    headers
        .get_all(http::header::HeaderName::from_static("baggage"))
        .iter()
        .find_map(|v| v.to_str().ok().and_then(tag_from_baggage))
}

/// The W3C trace id of the request's `traceparent`, if valid.
pub fn trace_id(headers: &HeaderMap) -> Option<[u8; 16]> {
    headers
        .get("traceparent")?
        .to_str()
        .ok()
        .and_then(trace_id_from_traceparent)
}

/// A request as `graylane-routing` matches it.
pub struct View<'a> {
    pub parts: &'a Parts,
    pub source_ip: Option<IpAddr>,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name)?.to_str().ok()
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

    fn query(&self, name: &str) -> Option<&str> {
        self.parts.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
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
        assert_eq!(
            from_header(&headers(&[("Gray-Publish", "gray")])),
            HeaderTag::Valid(Tag::parse("gray").unwrap())
        );
        assert_eq!(from_header(&headers(&[])), HeaderTag::Absent);
    }

    #[test]
    fn two_headers_a_list_or_a_bad_value_are_no_tag() {
        assert_eq!(
            from_header(&headers(&[("gray-publish", "a"), ("gray-publish", "b")])),
            HeaderTag::Invalid
        );
        assert_eq!(
            from_header(&headers(&[("gray-publish", "a,b")])),
            HeaderTag::Invalid
        );
        assert_eq!(
            from_header(&headers(&[("gray-publish", "")])),
            HeaderTag::Invalid
        );
        assert_eq!(
            from_header(&headers(&[("gray-publish", &"x".repeat(65))])),
            HeaderTag::Invalid
        );
    }

    #[test]
    fn the_underscore_variant_is_not_the_tag() {
        assert_eq!(
            from_header(&headers(&[("gray_publish", "gray")])),
            HeaderTag::Absent
        );
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
        assert_eq!(from_baggage(&h), Tag::parse("blue"));
        assert_eq!(trace_id(&h).map(|t| t[0]), Some(0x4b));
    }
}
