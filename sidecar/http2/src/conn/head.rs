//! Header blocks made into request heads, response heads and trailers, with RFC
//! 9113 §8's rules on what a message may carry checked once, here: field names in
//! lowercase, no connection-specific fields, `te` only as `trailers`, the
//! pseudo-header fields each message needs, each once and before the others.

use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, response};

use super::MAX_FIELDS;
use crate::hpack::{self, Decoder, Field};
use bytes::{Bytes, BytesMut};

use crate::stage;

/// What a size limit counts per field on top of its name and value (RFC 9113 §6.5.2).
const FIELD_OVERHEAD: usize = 32;

/// A header block read as a request head or as trailers.
#[derive(Debug)]
pub(crate) enum Read<T> {
    Valid(T),
    /// Not a valid message: the stream is reset with PROTOCOL_ERROR (§8.1.1).
    Malformed(&'static str),
    /// Over this end's `SETTINGS_MAX_HEADER_LIST_SIZE`: answered 431.
    TooLarge,
}

/// The pseudo-header fields of a request, as they came.
#[derive(Default)]
struct Pseudo {
    method: Option<Method>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<PathAndQuery>,
    protocol: Option<HeaderValue>,
}

/// Decodes a request's header block. An `Err` is the decoder's: the connection is
/// out of step with its peer and ends (COMPRESSION_ERROR).
pub(crate) fn request_head(
    decoder: &mut Decoder,
    block: &Bytes,
    spill: &mut BytesMut,
    limit: usize,
) -> Result<Read<Parts>, hpack::Error> {
    let mut pseudo = Pseudo::default();
    let mut headers = crate::header_map(0);
    let mut regular = false;
    let read = fields(decoder, block, limit, |field| {
        if let Some(name) = field.name.strip_prefix(b":") {
            if regular {
                return Err("a pseudo-header field after a regular one");
            }
            return pseudo.take(name, field.value, block, spill);
        }
        regular = true;
        regular_field(field, &mut headers, block, spill)
    })?;
    Ok(match read {
        Read::Valid(()) => match pseudo.into_head(headers) {
            Ok(parts) => Read::Valid(parts),
            Err(why) => Read::Malformed(why),
        },
        Read::Malformed(why) => Read::Malformed(why),
        Read::TooLarge => Read::TooLarge,
    })
}

/// Decodes a response's header block: `:status` alone of the pseudo-header fields,
/// first. 101 is not HTTP/2's (§8.6).
pub(crate) fn response_head(
    decoder: &mut Decoder,
    block: &Bytes,
    spill: &mut BytesMut,
    limit: usize,
) -> Result<Read<response::Parts>, hpack::Error> {
    let mut status = None;
    let mut headers = crate::header_map(0);
    let mut regular = false;
    let read = fields(decoder, block, limit, |field| {
        if field.name.first() == Some(&b':') {
            if regular {
                return Err("a pseudo-header field after a regular one");
            }
            if field.name != b":status" {
                return Err("a pseudo-header field other than :status in a response");
            }
            if status.is_some() {
                return Err("a pseudo-header field twice");
            }
            status = Some(
                StatusCode::from_bytes(field.value)
                    .ok()
                    .filter(|_| field.value.len() == 3)
                    .ok_or("an invalid :status")?,
            );
            return Ok(());
        }
        regular = true;
        regular_field(field, &mut headers, block, spill)
    })?;
    Ok(match read {
        Read::Valid(()) => match status {
            None => Read::Malformed("no :status"),
            Some(StatusCode::SWITCHING_PROTOCOLS) => Read::Malformed("a 101 over HTTP/2"),
            Some(status) => {
                let (mut parts, ()) = Response::new(()).into_parts();
                parts.status = status;
                parts.version = http::Version::HTTP_2;
                parts.headers = headers;
                Read::Valid(parts)
            }
        },
        Read::Malformed(why) => Read::Malformed(why),
        Read::TooLarge => Read::TooLarge,
    })
}

/// Decodes a trailer block: regular fields only (§8.1).
pub(crate) fn trailers(
    decoder: &mut Decoder,
    block: &Bytes,
    spill: &mut BytesMut,
    limit: usize,
) -> Result<Read<HeaderMap>, hpack::Error> {
    let mut headers = crate::header_map(0);
    let read = fields(decoder, block, limit, |field| {
        if field.name.first() == Some(&b':') {
            return Err("a pseudo-header field in trailers");
        }
        regular_field(field, &mut headers, block, spill)
    })?;
    Ok(match read {
        Read::Valid(()) => Read::Valid(headers),
        Read::Malformed(why) => Read::Malformed(why),
        Read::TooLarge => Read::TooLarge,
    })
}

/// Decodes a whole block (HPACK needs every field), handing each to `take` until
/// one is refused or the list goes over `limit`.
fn fields(
    decoder: &mut Decoder,
    block: &[u8],
    limit: usize,
    mut take: impl FnMut(Field<'_>) -> Result<(), &'static str>,
) -> Result<Read<()>, hpack::Error> {
    let mut size = 0;
    let mut count = 0;
    let mut fault = None;
    decoder.decode(block, |field| {
        size += field.name.len() + field.value.len() + FIELD_OVERHEAD;
        count += 1;
        if fault.is_none() && size <= limit && count <= MAX_FIELDS {
            fault = take(field).err();
        }
    })?;
    Ok(if size > limit || count > MAX_FIELDS {
        Read::TooLarge
    } else if let Some(why) = fault {
        Read::Malformed(why)
    } else {
        Read::Valid(())
    })
}

fn regular_field(
    field: Field<'_>,
    headers: &mut HeaderMap,
    block: &Bytes,
    spill: &mut BytesMut,
) -> Result<(), &'static str> {
    // Sent by index again: the same bytes as when it was checked and made.
    if let Some(made) = field.memo.as_ref().and_then(|memo| memo.made.as_deref()) {
        headers.append(made.0.clone(), made.1.clone());
        return Ok(());
    }
    // A fold, not `any`: without the early exit the check is vectorised (it was
    // 1 % of a gRPC hop byte by byte).
    if field
        .name
        .iter()
        .fold(false, |upper, b| upper | b.is_ascii_uppercase())
    {
        return Err("a field name with uppercase letters");
    }
    let name = crate::field_name(field.name).map_err(|_| "a field name not a token")?;
    if is_connection_specific(&name) {
        return Err("a connection-specific field");
    }
    if name == http::header::TE && field.value != b"trailers" {
        return Err("te other than trailers");
    }
    // §8.2.1: no whitespace around a value (an HTTP/1.1 hop would strip it, and
    // two hops would then disagree on it).
    if field
        .value
        .first()
        .is_some_and(|b| matches!(b, b' ' | b'\t'))
        || field
            .value
            .last()
            .is_some_and(|b| matches!(b, b' ' | b'\t'))
    {
        return Err("a field value with whitespace around it");
    }
    // A field from the dynamic table shares the table's bytes (no copy, and a value
    // kept in its memo pins no staging chunk).
    let bytes = match &field.memo {
        Some(memo) => memo.value(),
        None => shared(block, field.value, spill),
    };
    let mut value = HeaderValue::from_maybe_shared(bytes)
        .map_err(|_| "a field value with a control character")?;
    // Kept never-indexed on the next hop too (RFC 7541 §7.1.3).
    value.set_sensitive(field.sensitive);
    if let Some(memo) = field.memo {
        *memo.made = Some(Box::new((name.clone(), value.clone())));
    }
    headers.append(name, value);
    Ok(())
}

/// The fields HTTP/2 forbids (§8.2.2): they belong to an HTTP/1.1 connection.
pub(crate) fn is_connection_specific(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, TRANSFER_ENCODING, UPGRADE};
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

impl Pseudo {
    fn take(
        &mut self,
        name: &[u8],
        value: &[u8],
        block: &Bytes,
        spill: &mut BytesMut,
    ) -> Result<(), &'static str> {
        fn once<T>(
            slot: &mut Option<T>,
            value: Option<T>,
            bad: &'static str,
        ) -> Result<(), &'static str> {
            if slot.is_some() {
                return Err("a pseudo-header field twice");
            }
            *slot = Some(value.ok_or(bad)?);
            Ok(())
        }
        match name {
            b"method" => once(
                &mut self.method,
                Method::from_bytes(value).ok(),
                "an invalid :method",
            ),
            b"scheme" => once(
                &mut self.scheme,
                Scheme::try_from(value).ok(),
                "an invalid :scheme",
            ),
            b"authority" => once(
                &mut self.authority,
                Authority::from_maybe_shared(shared(block, value, spill)).ok(),
                "an invalid :authority",
            ),
            b"path" => once(
                &mut self.path,
                // Origin form, or `*` (for OPTIONS: checked with the method).
                PathAndQuery::from_maybe_shared(shared(block, value, spill))
                    .ok()
                    .filter(|_| value.first() == Some(&b'/') || value == b"*"),
                "a :path neither absolute nor *",
            ),
            b"protocol" => once(
                &mut self.protocol,
                HeaderValue::from_bytes(value).ok(),
                "an invalid :protocol",
            ),
            _ => Err("an unknown pseudo-header field"),
        }
    }

    fn into_head(self, headers: HeaderMap) -> Result<Parts, &'static str> {
        let method = self.method.ok_or("no :method")?;
        let (mut parts, ()) = Request::new(()).into_parts();
        let uri = if method == Method::CONNECT && self.protocol.is_none() {
            // A tunnel (§8.5): :authority alone.
            if self.scheme.is_some() || self.path.is_some() {
                return Err("a CONNECT with :scheme or :path");
            }
            let authority = self.authority.ok_or("a CONNECT without :authority")?;
            // A tunnel's target is a host and a port (RFC 9110 §9.3.6).
            if authority.port().is_none() {
                return Err("a CONNECT without a port");
            }
            Uri::from(authority)
        } else {
            if self.protocol.is_some() && method != Method::CONNECT {
                return Err(":protocol on a method other than CONNECT");
            }
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            if path.as_str() == "*" && method != Method::OPTIONS {
                return Err(":path * on a method other than OPTIONS");
            }
            // §8.3.1: no userinfo in an http or https authority. A `host` naming
            // another authority is passed on as it came (the RFC's SHOULD, not a
            // MUST): clients such as hyper send the one the caller set beside
            // `:authority`, and h2 took them; what is routed on is `:authority`.
            if self
                .authority
                .as_ref()
                .is_some_and(|a| a.as_str().contains('@'))
            {
                return Err("an :authority with userinfo");
            }
            // A URI cannot hold a scheme without an authority: a request that names
            // none (its `host` field may) keeps the path alone, as h2 does.
            let uri = match self.authority {
                Some(authority) => Uri::builder().scheme(scheme).authority(authority),
                None => Uri::builder(),
            };
            uri.path_and_query(path)
                .build()
                .map_err(|_| "a request target that is not a URI")?
        };
        if let Some(protocol) = self.protocol {
            parts.extensions.insert(Protocol(protocol));
        }
        parts.method = method;
        parts.uri = uri;
        parts.version = http::Version::HTTP_2;
        parts.headers = headers;
        Ok(parts)
    }
}

/// An extended CONNECT's `:protocol` (RFC 8441), in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol(pub HeaderValue);

/// A message's `content-length`: none, or one value all its fields agree on. Fields
/// that agree are made one, as RFC 9110 §8.6 lets a recipient do: sent on as they
/// came, an HTTP/1.1 hop would get two `Content-Length` lines, which servers refuse
/// as a request smuggling attempt (hyper and nginx answer 400).
pub(crate) fn content_length(headers: &mut HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    let mut fields = 0;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        fields += 1;
        let n: u64 = value
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    if fields > 1
        && let Some(n) = length
    {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(length)
}

/// A value's bytes as a `Bytes`: a slice of the block when the value is in it (a
/// literal not Huffman-coded: no copy, and clones of the header map share it), a
/// copy otherwise (from the static or dynamic table, or Huffman-decoded), staged in
/// `spill`'s chunk and split off it (no allocation of its own).
fn shared(block: &Bytes, value: &[u8], spill: &mut BytesMut) -> Bytes {
    let start = block.as_ptr() as usize;
    let at = value.as_ptr() as usize;
    if value.is_empty() {
        Bytes::new()
    } else if at >= start && at + value.len() <= start + block.len() {
        block.slice_ref(value)
    } else {
        stage(spill, value);
        spill.split().freeze()
    }
}
