//! A request head parsed in place (values are slices of the read buffer, as the
//! pool's client parses responses), and a response head written as hyper's server
//! writes it.

use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use http::header;
use http::{Method, Request, StatusCode, Uri, Version, response};

use crate::proxy::pool::http1::{
    FieldAt, Framing, OutFraming, content_length, declared_trailers, field_offsets, header_map,
};
use crate::proxy::{self, Body};

/// hyper answers 414 to a longer request target.
const MAX_TARGET: usize = 65_534;

/// A request this side serves, and what its head says of the exchange.
pub(super) struct Head {
    pub(super) request: Request<Body>,
    /// The client keeps the connection open after the answer.
    pub(super) keep_alive: bool,
    /// How its body is framed, and its length if it says; `None`: it has none.
    pub(super) body: Option<(Framing, Option<u64>)>,
    /// The answer's fields: to a `HEAD` (no body), with trailers (`TE: trailers`).
    pub(super) answer: Answer,
}

/// What a request asks of its answer's head.
#[derive(Clone, Copy)]
pub(super) struct Answer {
    pub(super) head_only: bool,
    pub(super) trailers: bool,
}

/// What the read buffer holds.
#[expect(
    clippy::large_enum_variant,
    reason = "taken apart where it is returned; a box would be a malloc per request"
)]
pub(super) enum Parsed {
    /// A request this side serves, taken out of the buffer.
    Plain(Head),
    /// Not all of a head yet.
    Partial,
    /// A head hyper serves: left in the buffer (see `h1`'s module comment).
    HandOff,
}

/// The first request head in `buf`. `max_head`: a longer head goes to hyper, which
/// answers 431. `at` is scratch space kept with the connection.
pub(super) fn parse_request(buf: &mut BytesMut, at: &mut Vec<FieldAt>, max_head: usize) -> Parsed {
    let mut fields =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; super::super::MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        // Too long, too many fields, malformed: hyper's 400 or 431 (and its reasons).
        _ => return Parsed::HandOff,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        // HTTP/1.0's keep-alive rules are hyper's.
        return Parsed::HandOff;
    };
    // Only origin-form: absolute-form, `*` and CONNECT's authority-form are hyper's.
    if !target.starts_with('/') || target.len() > MAX_TARGET {
        return Parsed::HandOff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOff;
    };
    let mut scan = Scan::default();
    for field in parsed.headers.iter() {
        scan.see(field.name, field.value);
    }
    if scan.hyper_serves || scan.te && scan.length.is_some() || method == Method::CONNECT {
        return Parsed::HandOff;
    }
    let base = buf.as_ptr() as usize;
    let target = target.as_ptr() as usize - base..target.as_ptr() as usize - base + target.len();
    field_offsets(buf, parsed.headers, at);
    let head = buf.split_to(len).freeze();
    let (Ok(headers), Ok(uri)) = (
        // Room for what the mesh adds (`traceparent` at least): a map that grows
        // moves every field and hashes each again.
        header_map(&head, at, super::super::MESH_FIELDS, |_, _| Ok(())),
        Uri::from_maybe_shared(head.slice(target)),
    ) else {
        // A field name or target hyper refuses (400): given back, in front.
        let mut whole = BytesMut::with_capacity(head.len() + buf.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(buf);
        *buf = whole;
        return Parsed::HandOff;
    };
    let mut request = Request::new(proxy::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    let answer = Answer {
        head_only: request.method() == Method::HEAD,
        trailers: scan.trailers,
    };
    *request.headers_mut() = headers;
    let body = match (scan.te, scan.length) {
        (true, _) => Some((Framing::chunked(), None)),
        (false, None | Some(0)) => None,
        (false, Some(n)) => Some((Framing::Length(n), Some(n))),
    };
    Parsed::Plain(Head {
        request,
        keep_alive: !scan.close,
        body,
        answer,
    })
}

/// What a request head says, gathered as its fields are added to the map.
#[derive(Default)]
struct Scan {
    close: bool,
    trailers: bool,
    /// `Transfer-Encoding: chunked` (one field, chunked alone).
    te: bool,
    length: Option<u64>,
    /// An upgrade, `Expect`, or framing other than one length or chunked alone
    /// (hyper's 400s and `Content-Length` with `Transfer-Encoding`): hyper's.
    hyper_serves: bool,
}

impl Scan {
    fn see(&mut self, name: &str, value: &[u8]) {
        let is = |known: &header::HeaderName| name.eq_ignore_ascii_case(known.as_str());
        if is(&header::CONNECTION) {
            self.close |= has_token(value, b"close");
        } else if is(&header::TE) {
            self.trailers |= has_token(value, b"trailers");
        } else if is(&header::CONTENT_LENGTH) {
            match content_length(value) {
                Some(n) if self.length.is_none() => self.length = Some(n),
                _ => self.hyper_serves = true,
            }
        } else if is(&header::TRANSFER_ENCODING) {
            self.hyper_serves |= self.te || !crate::proxy::only_chunked(value);
            self.te = true;
        } else if is(&header::UPGRADE) || is(&header::EXPECT) {
            self.hyper_serves = true;
        }
    }
}

/// Writes the head of an answer into `out`, as hyper's server does: the length the
/// body says it has (or the `Content-Length` it came with), else chunked; none of a
/// body after `HEAD`, 204 or 304; `Connection: close` when `close`; `Date` when the
/// answer has none. Returns how the body goes out (`None`: it does not) and whether
/// the connection closes after it (the answer may say so itself).
pub(super) fn encode_response(
    head: &response::Parts,
    body: &Body,
    asked: Answer,
    mut close: bool,
    out: &mut BytesMut,
) -> (Option<OutFraming>, bool) {
    use hyper::body::Body as _;
    let status = head.status;
    out.reserve(256);
    let reason = head.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_slice(b" ");
        match reason {
            Some(reason) => out.put_slice(reason.as_bytes()),
            None => out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.put_slice(b"\r\n");
    }
    let has_body =
        !asked.head_only && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut length = None;
    let (mut dated, mut said_close, mut has_length) = (false, false, false);
    for (name, value) in &head.headers {
        match *name {
            header::TRANSFER_ENCODING => continue,
            // Only a body that can be chunked may have trailers (hyper's rule).
            header::TRAILER if !has_body => continue,
            // A `HEAD`'s answer keeps the length a `GET` would have had.
            header::CONTENT_LENGTH if asked.head_only => has_length = true,
            header::CONTENT_LENGTH => {
                length =
                    length.or_else(|| std::str::from_utf8(value.as_bytes()).ok()?.parse().ok());
                continue;
            }
            header::CONNECTION if has_token(value.as_bytes(), b"close") => {
                (close, said_close) = (true, true);
            }
            header::DATE => dated = true,
            _ => {}
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let framing = if !has_body {
        // A `HEAD` the sidecar answers itself (an error): the length a `GET` would get.
        if asked.head_only
            && !has_length
            && !body.is_end_stream()
            && let Some(n) = body.size_hint().exact()
        {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa(n, &mut [0; 20]));
            out.put_slice(b"\r\n");
        }
        None
    } else if body.is_end_stream() {
        out.put_slice(b"content-length: 0\r\n");
        None
    } else {
        match body.size_hint().exact().or(length) {
            Some(n) => {
                out.put_slice(b"content-length: ");
                out.put_slice(itoa(n, &mut [0; 20]));
                out.put_slice(b"\r\n");
                (n > 0).then_some(OutFraming::Length(n))
            }
            None => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                let trailers = if asked.trailers {
                    declared_trailers(&head.headers)
                } else {
                    Vec::new()
                };
                Some(OutFraming::Chunked { trailers })
            }
        }
    };
    if close && !said_close {
        out.put_slice(b"connection: close\r\n");
    }
    if !dated {
        out.put_slice(b"date: ");
        out.put_slice(super::super::date().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    (framing, close)
}

/// Whether a comma-separated field value lists `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}
