//! Field names as `HeaderName`s, without an allocation for the ones a mesh hop sees
//! on most calls. `http` knows the standard names; any other name it copies into an
//! allocation of its own, and a gRPC call carries four (`grpc-status` and
//! `grpc-message` in its trailers, `grpc-encoding` and `grpc-accept-encoding`), a
//! traced one `traceparent`, a tagged one `gray-publish` or `baggage`, on every hop.
//! The names below are static: made from one costs nothing.

use http::header::{HeaderName, InvalidHeaderName};

/// `name` as a `HeaderName`: one of the names below (in lowercase, as HTTP/2 sends
/// every name) without allocating, else as `HeaderName::from_bytes` makes it
/// (lower-cased; an error for a name that is no token).
pub fn field_name(name: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    match known(name) {
        Some(known) => Ok(HeaderName::from_static(known)),
        None => HeaderName::from_bytes(name),
    }
}

/// Dispatched on length and first byte, so that a standard name (most of them) costs
/// two comparisons here before `http` looks it up.
fn known(name: &[u8]) -> Option<&'static str> {
    let candidates: &[&'static str] = match (name.len(), name.first()?) {
        (2, b'b') => &["b3"],
        (7, b'b') => &["baggage"],
        (9, b'x') => &["x-real-ip"],
        (10, b't') => &["tracestate"],
        (10, b'k') => &["keep-alive"],
        (11, b'g') => &["grpc-status"],
        (11, b't') => &["traceparent"],
        (11, b'x') => &["x-b3-spanid"],
        (12, b'g') => &["grpc-message", "grpc-timeout", "gray-publish"],
        (12, b'x') => &["x-request-id", "x-b3-traceid", "x-b3-sampled"],
        (13, b'g') => &["grpc-encoding", "graylane-hops"],
        (15, b'x') => &["x-forwarded-for"],
        (16, b'x') => &["x-forwarded-host"],
        (16, b'p') => &["proxy-connection"],
        (17, b'x') => &["x-forwarded-proto", "x-b3-parentspanid"],
        (20, b'g') => &["grpc-accept-encoding"],
        (23, b'g') => &["grpc-status-details-bin"],
        _ => return None,
    };
    candidates.iter().copied().find(|c| c.as_bytes() == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_static_and_equal_to_what_http_makes() {
        for name in [
            "grpc-status",
            "grpc-message",
            "grpc-encoding",
            "grpc-accept-encoding",
            "grpc-timeout",
            "grpc-status-details-bin",
            "traceparent",
            "tracestate",
            "baggage",
            "gray-publish",
            "graylane-hops",
            "x-request-id",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "b3",
            "keep-alive",
            "proxy-connection",
        ] {
            assert_eq!(known(name.as_bytes()), Some(name), "{name} not known");
            assert_eq!(
                field_name(name.as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap()
            );
        }
    }

    #[test]
    fn names_in_any_case_come_out_lower_cased_as_http_makes_them() {
        for name in [
            "Grpc-Status",
            "TRACEPARENT",
            "X-Request-Id",
            "X-Custom-Thing",
            "Content-Type",
        ] {
            assert_eq!(
                field_name(name.as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "{name}"
            );
        }
        assert_eq!(field_name(b"Grpc-Status").unwrap().as_str(), "grpc-status");
        // Standard names and other names of a listed length and first letter.
        for name in [
            "te",
            "trailer",
            "transfer-encoding",
            "x-grpc-statu",
            "grpc-statusx",
        ] {
            assert_eq!(known(name.as_bytes()), None, "{name}");
            assert_eq!(field_name(name.as_bytes()).unwrap().as_str(), name);
        }
    }

    #[test]
    fn what_is_no_token_is_refused_whatever_its_length() {
        for bad in [
            &b""[..],
            b"grpc status",
            b"x\0y",
            b"a:b",
            &[b'x'; 40][..],
            b"gr\xffpc",
        ] {
            let ours = field_name(bad);
            assert_eq!(
                ours.is_err(),
                HeaderName::from_bytes(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(field_name(b"grpc status").is_err());
        assert!(field_name(b"").is_err());
        // Long names that are tokens are still made, past the static table.
        let long = "x-".repeat(30);
        assert_eq!(field_name(long.as_bytes()).unwrap().as_str(), long);
    }
}
