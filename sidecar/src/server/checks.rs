//! What every request must pass before a handler sees it, on both listeners and both
//! protocols: the parts of the sidecar.md error table hyper leaves to us.
//!
//! The HTTP/1.1 server (`h1`, and hyper for the heads it hands over) already refuses
//! differing or listed Content-Lengths, obs-fold and request-line oddities (400), and
//! more than `MAX_HEADERS` fields or a head over its buffer (431); bad chunk framing
//! fails the body (the shared decoder: a 400, the connection closed). Content-Length
//! together with Transfer-Encoding never reaches this check: `h1` hands it to hyper,
//! which drops the Content-Length, frames the body as chunked and closes the
//! connection after the response (RFC 9112 §6.1), so nothing can be smuggled behind
//! it. The h2 crate refuses malformed pseudo-headers and
//! connection-specific fields (RFC 9113 §8.2.2) with a stream reset.

use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version, header};

/// sidecar.md: request headers over 64 KiB in total or over 100 in number get 431.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
pub(crate) const MAX_HEADERS: usize = 100;

/// Why a request is refused before it is handled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400: the request is malformed; the rest of its connection cannot be trusted.
    Malformed(&'static str),
    /// 431: the header block is over the limits.
    HeadersTooLarge,
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// What the mesh itself adds to a request it forwards (`traceparent`, `baggage`,
/// `gray-publish`, `graylane-hops`): a request a client sent within the limits must
/// stay within them at the next sidecar.
pub(crate) const MESH_FIELDS: usize = 4;
pub(crate) const MESH_BYTES: usize = 2 * 1024;

/// Checks one request head. `from_sidecar` says whether another sidecar sent it (a
/// peer that proved a mesh identity; anyone, with mTLS off), asked only of a head over
/// a client's limits: only a sidecar's may carry the mesh's fields on top. A client's
/// own `graylane-hops` lifts nothing.
pub(crate) fn check<B>(
    request: &Request<B>,
    from_sidecar: impl FnOnce() -> bool,
) -> Result<(), Refusal> {
    let headers = request.headers();
    let seen = Scan::of(headers);
    // HTTP/2 has no per-field count in the h2 crate, and its list-size limit counts
    // 32 bytes per field on top, so both limits are checked here for every version.
    let over = |fields: usize, bytes: usize| headers.len() > fields || seen.bytes > bytes;
    if over(MAX_HEADERS, MAX_HEADER_BYTES)
        && (over(MAX_HEADERS + MESH_FIELDS, MAX_HEADER_BYTES + MESH_BYTES) || !from_sidecar())
    {
        return Err(Refusal::HeadersTooLarge);
    }
    // RFC 9110 §4.2.4 and RFC 9113 §8.3.1: userinfo in an http(s) authority is
    // malformed; `evil@orders` must not be read as a host by anyone downstream.
    let userinfo = request
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
        || seen.host_userinfo;
    if userinfo {
        return Err(Refusal::Malformed("userinfo in the request target or Host"));
    }
    // The target's form: authority-form is CONNECT's alone (RFC 9112 §3.2.3), and an
    // absolute target is http or https. Past this hop, `GET orders:80` went on as
    // `GET /`, and `ftp://orders/x` as HTTP.
    let uri = request.uri();
    if request.method() != Method::CONNECT {
        if uri.scheme().is_none() && uri.authority().is_some() {
            return Err(Refusal::Malformed(
                "an authority-form target outside CONNECT",
            ));
        }
        if uri
            .scheme()
            .is_some_and(|s| *s != Scheme::HTTP && *s != Scheme::HTTPS)
        {
            return Err(Refusal::Malformed(
                "a target scheme other than http or https",
            ));
        }
    }
    // Methods are case-sensitive tokens (RFC 9110 §9.1); nginx refuses lower case,
    // which no client sends but a scanner probing for parser differentials.
    if request
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(Refusal::Malformed("lower-case letters in the method"));
    }
    if request.version() >= Version::HTTP_2 {
        return Ok(());
    }
    if seen.codings > 1 {
        return Err(Refusal::Malformed("Transfer-Encoding repeated"));
    }
    if seen
        .coding
        .is_some_and(|te| !crate::proxy::only_chunked(te.as_bytes()))
    {
        return Err(Refusal::Malformed("Transfer-Encoding other than chunked"));
    }
    if seen.lengths_differ {
        return Err(Refusal::Malformed("differing Content-Length values"));
    }
    // RFC 9112 §3.2: a request without Host, or with more than one, is answered 400.
    match seen.hosts {
        0 if request.version() == Version::HTTP_11 => {
            return Err(Refusal::Malformed("HTTP/1.1 request without Host"));
        }
        0 | 1 => {}
        _ => return Err(Refusal::Malformed("more than one Host header")),
    }
    Ok(())
}

/// What the checks read from the header block, in one pass over it: the pass that
/// sums its size anyway, instead of a hashed lookup per field checked.
#[derive(Default)]
struct Scan<'a> {
    /// The block's size as it was sent: every field's name and value, plus the `: `
    /// and CRLF around them.
    bytes: usize,
    hosts: usize,
    host_userinfo: bool,
    codings: usize,
    coding: Option<&'a HeaderValue>,
    length: Option<&'a HeaderValue>,
    lengths_differ: bool,
}

impl<'a> Scan<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut seen = Self::default();
        for (name, value) in headers {
            seen.bytes += name.as_str().len() + value.len() + 4;
            if name == header::HOST {
                seen.hosts += 1;
                seen.host_userinfo |= value.as_bytes().contains(&b'@');
            } else if name == header::TRANSFER_ENCODING {
                seen.codings += 1;
                seen.coding.get_or_insert(value);
            } else if name == header::CONTENT_LENGTH {
                seen.lengths_differ |= *seen.length.get_or_insert(value) != value;
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's request (not from a sidecar).
    fn check<B>(request: &Request<B>) -> Result<(), Refusal> {
        super::check(request, || false)
    }

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/").version(version);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_target_is_origin_absolute_http_or_a_connects_authority() {
        let with = |method: Method, uri: &str| {
            let r = Request::builder()
                .method(method)
                .uri(uri)
                .header("host", "orders");
            check(&r.body(()).unwrap())
        };
        for ok in [
            "/x",
            "*",
            "http://orders/x",
            "https://orders",
            "http://orders:8080",
        ] {
            assert_eq!(with(Method::GET, ok), Ok(()), "{ok}");
        }
        assert_eq!(with(Method::CONNECT, "orders:443"), Ok(()));
        assert_eq!(
            with(Method::GET, "orders:80"),
            Err(Refusal::Malformed(
                "an authority-form target outside CONNECT"
            ))
        );
        for other in ["ftp://orders/x", "ws://orders/x"] {
            assert_eq!(
                with(Method::GET, other),
                Err(Refusal::Malformed(
                    "a target scheme other than http or https"
                )),
                "{other}"
            );
        }
    }

    #[test]
    fn two_host_headers_are_malformed() {
        let r = request(Version::HTTP_11, &[("host", "a"), ("host", "b")]);
        assert_eq!(
            check(&r),
            Err(Refusal::Malformed("more than one Host header"))
        );
        assert_eq!(check(&request(Version::HTTP_11, &[("host", "a")])), Ok(()));
        assert_eq!(check(&request(Version::HTTP_10, &[])), Ok(()));
    }

    #[test]
    fn the_limits_hold_for_http2_too() {
        let many: Vec<(String, String)> =
            (0..101).map(|i| (format!("x-{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            check(&request(Version::HTTP_2, &many)),
            Err(Refusal::HeadersTooLarge)
        );
        assert_eq!(check(&request(Version::HTTP_2, &many[..100])), Ok(()));
        let big = "x".repeat(70_000);
        assert_eq!(
            check(&request(
                Version::HTTP_11,
                &[("host", "a"), ("x-big", &big)]
            )),
            Err(Refusal::HeadersTooLarge)
        );
        let fits = "x".repeat(60_000);
        assert_eq!(
            check(&request(
                Version::HTTP_11,
                &[("host", "a"), ("x-big", &fits)]
            )),
            Ok(())
        );
    }

    #[test]
    fn mesh_headers_get_room_at_the_next_hop() {
        let many: Vec<(String, String)> =
            (0..102).map(|i| (format!("x-{i}"), "v".into())).collect();
        let mut many: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            check(&request(Version::HTTP_2, &many)),
            Err(Refusal::HeadersTooLarge)
        );
        // A client's own hop count lifts nothing; a sidecar's request gets the room.
        many.push(("graylane-hops", "1"));
        let r = request(Version::HTTP_2, &many);
        assert_eq!(check(&r), Err(Refusal::HeadersTooLarge));
        assert_eq!(super::check(&r, || true), Ok(()));
        many.extend([("x-a", "1"), ("x-b", "1"), ("x-c", "1")]);
        let r = request(Version::HTTP_2, &many);
        assert_eq!(super::check(&r, || true), Err(Refusal::HeadersTooLarge));
    }

    #[test]
    fn only_chunked_is_a_transfer_coding() {
        let te = |v| {
            check(&request(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", v)],
            ))
        };
        assert_eq!(te("chunked"), Ok(()));
        assert_eq!(te(" Chunked "), Ok(()));
        assert!(te("gzip, chunked").is_err());
        assert!(te("xchunked").is_err());
    }

    #[test]
    fn repeated_framing_fields_are_checked_across_their_values() {
        let with = |fields: &[(&str, &str)]| check(&request(Version::HTTP_11, fields));
        let te = ("transfer-encoding", "chunked");
        assert_eq!(
            with(&[("host", "a"), te, te]),
            Err(Refusal::Malformed("Transfer-Encoding repeated"))
        );
        let cl = |v| ("content-length", v);
        assert_eq!(with(&[("host", "a"), cl("3"), cl("3")]), Ok(()));
        assert_eq!(
            with(&[("host", "a"), cl("3"), cl("3"), cl("4")]),
            Err(Refusal::Malformed("differing Content-Length values"))
        );
        assert_eq!(
            with(&[]),
            Err(Refusal::Malformed("HTTP/1.1 request without Host"))
        );
        // Userinfo in any Host value, the second included, before the count.
        assert_eq!(
            with(&[("host", "orders"), ("host", "evil@orders")]),
            Err(Refusal::Malformed("userinfo in the request target or Host"))
        );
    }

    #[test]
    fn userinfo_in_the_host_header_is_malformed() {
        let r = request(Version::HTTP_11, &[("host", "evil@orders")]);
        assert!(matches!(check(&r), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn userinfo_in_the_authority_is_malformed() {
        let r = Request::builder()
            .uri("http://evil@orders/")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert!(matches!(check(&r), Err(Refusal::Malformed(_))));
    }

    proptest::proptest! {
        // Few cases of large heads: each is up to 130 fields of 4 KiB.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Whatever a client sends that hyper lets through, the checks answer without
        /// panicking, and the limits are exactly the spec's.
        #[test]
        fn the_checks_match_the_limits_for_any_head(
            fields in proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,20}", proptest::collection::vec(0x20u8..0x7f, 0..4096)),
                0..130,
            ),
            http2 in proptest::bool::ANY,
            method in "[A-Za-z]{1,8}",
        ) {
            let mut builder = Request::builder()
                .method(method.as_str())
                .uri("/")
                .version(if http2 { Version::HTTP_2 } else { Version::HTTP_11 });
            builder = builder.header("host", "orders");
            for (name, value) in &fields {
                builder = builder.header(name.as_str(), value.as_slice());
            }
            let request = builder.body(()).unwrap();
            let headers = request.headers();
            // The spec's measure: every name and value, plus `: ` and CRLF.
            let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
            let too_large = headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES;
            let result = check(&request);
            if too_large {
                proptest::prop_assert_eq!(&result, &Err(Refusal::HeadersTooLarge));
            }
            if result == Err(Refusal::HeadersTooLarge) {
                proptest::prop_assert!(too_large);
            }
        }
    }
}
