//! Header hygiene on every hop.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection only: the standard ones
//! and every header named in `Connection` are removed before forwarding. The fields
//! the mesh itself reads and writes on every hop (the gray tag, `traceparent`,
//! `baggage`, `graylane-*`) and `Host` are never removed that way: a client must not
//! be able to drop the lane by writing `Connection: gray-publish`, leave the app
//! without the trace the sidecar just wrote (`Connection: traceparent`), or hand it
//! the sidecar's address as its Host (`Connection: host`). `Gray_Publish`
//! (underscore) is not the tag and is removed, so no server that folds `_` into `-`
//! can be fooled by it.

use http::HeaderMap;
use http::header::{self, HeaderName};

use crate::tag::TAG_HEADER;

/// Header names, not `&str`s: removing by `&str` parses the name on every call, nine
/// times a message here. Not `Trailer`: it names the fields of the message's trailer
/// section, end to end (RFC 9110 §6.6.2), and hyper writes an HTTP/1.1 trailer field
/// only when `Trailer` declares it.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The h2c upgrade's settings (RFC 7540 §3.2.1): meaningful on one connection only.
    HeaderName::from_static("http2-settings"),
];

/// Whether a `Transfer-Encoding` value is the one coding the sidecar understands:
/// `chunked`, alone. Requests (`server::checks`) and upstream responses
/// (`pool::http1`) are held to it alike; a proxy that dropped another coding would
/// pass the body on mislabelled (nginx and Envoy refuse it too).
pub(crate) fn only_chunked(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Which message is stripped. `TE` is a request's field (RFC 9110 §10.1.4): a
/// request's `TE: trailers` goes on (gRPC needs it end to end), a response's never.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Request,
    Response,
}

/// Removes hop-by-hop headers (except a request's `TE: trailers`, and `Upgrade` when
/// `keep_upgrade`), and every header the `Connection` header names, except the tag.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, message: Message, keep_upgrade: bool) {
    let request = message == Message::Request;
    // Most messages carry none of these: one pass over the fields present decides,
    // instead of a hashed lookup for each. A request's `TE: trailers` alone stays as
    // it is: every gRPC request carries it, and the removals and an insert cost 3 % of
    // one. Only in lowercase, so that the result is what the path below makes of it.
    if !headers.iter().any(|(name, value)| {
        (HOP_BY_HOP.contains(name) && !(request && name == header::TE && value == "trailers"))
            || is_underscore_tag(name)
    }) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !mesh_managed(name))
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    let trailers = request
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // Most messages carry none: one pass over the names present is cheaper than ten
    // hashed removals.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in HOP_BY_HOP {
            if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
                continue;
            }
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, header::HeaderValue::from_static("trailers"));
    }
    remove_underscore_tag(headers);
}

/// Fields a `Connection` header may not remove (see the module doc).
fn mesh_managed(name: &HeaderName) -> bool {
    name.as_str() == TAG_HEADER
        || name == header::HOST
        || name == crate::spans::TRACEPARENT
        || name == crate::tag::BAGGAGE
        || name.as_str().starts_with("graylane-")
}

/// Removes `gray_publish` in any case: it is not the tag.
fn remove_underscore_tag(headers: &mut HeaderMap) {
    let fakes: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_underscore_tag(k))
        .cloned()
        .collect();
    for name in fakes {
        headers.remove(name);
    }
}

fn is_underscore_tag(name: &HeaderName) -> bool {
    name.as_str().eq_ignore_ascii_case("gray_publish")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_cannot_strip_the_tag() {
        let mut h = map(&[
            ("connection", "gray-publish, x-secret"),
            ("gray-publish", "gray"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
        ]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert_eq!(h.get("gray-publish").unwrap(), "gray");
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
    }

    #[test]
    fn connection_cannot_strip_host_or_what_the_mesh_writes() {
        let mut h = map(&[
            (
                "connection",
                "host, traceparent, Baggage, graylane-hops, graylane-debug, x-secret",
            ),
            ("host", "orders"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("baggage", "a=1"),
            ("graylane-hops", "1"),
            ("graylane-debug", "1"),
            ("x-secret", "1"),
        ]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        for kept in [
            "host",
            "traceparent",
            "baggage",
            "graylane-hops",
            "graylane-debug",
        ] {
            assert!(h.contains_key(kept), "{kept}: {h:?}");
        }
        assert!(h.get("x-secret").is_none() && h.get("connection").is_none());
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip")]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert!(h.get("te").is_none());
        // A response's TE means nothing past this hop, in any case, alone or not.
        for fields in [
            &[("te", "trailers")][..],
            &[("te", "Trailers"), ("connection", "x")],
        ] {
            let mut h = map(fields);
            strip_hop_by_hop(&mut h, Message::Response, false);
            assert!(h.is_empty(), "{fields:?}: {h:?}");
        }
    }

    #[test]
    fn te_trailers_alone_leaves_the_message_as_it_came() {
        let fields = [("te", "trailers"), ("content-type", "application/grpc")];
        let mut h = map(&fields);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert_eq!(h, map(&fields));
        // Another case goes on as HTTP/2 requires it.
        let mut h = map(&[("te", "Trailers")]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert_eq!(h, map(&[("te", "trailers")]));
        // Beside a second TE line or a Connection, the rest still goes.
        for (extra, gone) in [("te", "gzip"), ("connection", "x-secret")] {
            let mut h = map(&[("te", "trailers"), (extra, gone), ("x-secret", "1")]);
            strip_hop_by_hop(&mut h, Message::Request, false);
            assert_eq!(h.get_all("te").iter().count(), 1, "{extra}: {h:?}");
            assert_eq!(h.get("te").unwrap(), "trailers", "{extra}: {h:?}");
            assert_eq!(h.contains_key("x-secret"), extra == "te", "{extra}: {h:?}");
            assert!(!h.contains_key("connection"), "{extra}: {h:?}");
        }
    }

    #[test]
    fn the_underscore_tag_is_removed() {
        let mut h = map(&[("gray_publish", "gray")]);
        strip_hop_by_hop(&mut h, Message::Request, false);
        assert!(h.is_empty());
    }

    #[test]
    fn each_standard_hop_by_hop_field_alone_is_removed() {
        for name in &HOP_BY_HOP {
            let mut h = map(&[("host", "orders"), (name.as_str(), "x")]);
            strip_hop_by_hop(&mut h, Message::Request, false);
            assert!(h.get(name).is_none(), "{name} kept");
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }

    #[test]
    fn end_to_end_fields_pass_untouched() {
        let fields = [
            ("host", "orders"),
            ("accept", "a"),
            ("accept", "b"),
            ("gray-publish", "gray"),
            ("x-keep-alive", "not hop-by-hop"),
            ("trailer", "x-checksum"),
        ];
        for message in [Message::Request, Message::Response] {
            let mut h = map(&fields);
            strip_hop_by_hop(&mut h, message, false);
            assert_eq!(h, map(&fields), "{message:?}");
        }
    }

    #[test]
    fn upgrades_keep_their_headers_when_asked() {
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, Message::Request, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
    }
}
