//! Heads: the request's written, the response's parsed in place (values are slices of
//! the read buffer, as hyper's are), and how each message's body is framed.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::super::{Body, BoxError};
use super::Io;
use super::upload::{OutFraming, Outgoing};

/// hyper's limits for a response head: 100 fields, and its read buffer's bound.
const MAX_HEADERS: usize = 100;
pub(super) const MAX_HEAD: usize = 8192 + 4096 * 100;

/// A final response head, and what it says of the connection.
pub(super) struct Parsed {
    pub(super) response: Response<()>,
    pub(super) length: Length,
    /// The server keeps the connection open after this response (if its body does
    /// not run to the close).
    pub(super) keep_alive: bool,
}

/// How a response says its body ends (before the request method and status are
/// taken into account: see `body::Framing::of`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Length {
    Exact(u64),
    Chunked,
    /// At the connection's end: no `Content-Length`, or a transfer coding other than
    /// chunked last.
    Close,
}

/// Writes `request`'s head into `out`: origin-form target, its fields as they are,
/// and the framing its body needs. `None`: no body follows.
pub(super) fn encode_request(
    request: &Request<Body>,
    out: &mut Outgoing,
) -> Result<Option<OutFraming>, BoxError> {
    use hyper::body::Body as _;
    let headers = request.headers();
    let body = request.body();
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let buf = out.head();
    buf.reserve(256);
    buf.extend_from_slice(request.method().as_str().as_bytes());
    buf.extend_from_slice(b" ");
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length = None;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            length = Some(value);
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    // The client's own length, when it gave one, is what its body is checked against.
    let framing = match length {
        Some(value) => match content_length(value.as_bytes()) {
            Some(0) => None,
            Some(n) => Some(OutFraming::Length(n)),
            None => return Err(format!("request Content-Length {value:?} is not a length").into()),
        },
        None if body.is_end_stream() => None,
        None => match body.size_hint().exact() {
            Some(n) => {
                buf.extend_from_slice(b"content-length: ");
                buf.extend_from_slice(n.to_string().as_bytes());
                buf.extend_from_slice(b"\r\n");
                Some(OutFraming::Length(n))
            }
            None => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Some(OutFraming::Chunked {
                    trailers: declared_trailers(headers),
                })
            }
        },
    };
    buf.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// The trailer fields a chunked request may carry on: those its `Trailer` field
/// declares, less those no trailer may hold (RFC 9110 §6.5.1). hyper's rule, kept.
pub(crate) fn declared_trailers(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| {
            !matches!(
                *name,
                header::AUTHORIZATION
                    | header::CACHE_CONTROL
                    | header::CONTENT_ENCODING
                    | header::CONTENT_LENGTH
                    | header::CONTENT_RANGE
                    | header::CONTENT_TYPE
                    | header::HOST
                    | header::MAX_FORWARDS
                    | header::SET_COOKIE
                    | header::TRAILER
                    | header::TRANSFER_ENCODING
                    | header::TE
            )
        })
        .collect()
}

/// Where one field's name and value are in a head (start and end of each): taken
/// while the parser borrows the buffer, used once the head is split off it.
pub(crate) type FieldAt = [usize; 4];

/// Notes in `at` where each of `fields`, parsed from `buf`, lies in it.
pub(crate) fn field_offsets(buf: &[u8], fields: &[httparse::Header<'_>], at: &mut Vec<FieldAt>) {
    let base = buf.as_ptr() as usize;
    let offset = |field: &[u8]| field.as_ptr() as usize - base;
    at.clear();
    at.extend(fields.iter().map(|field| {
        let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
        [
            name,
            name + field.name.len(),
            value,
            value + field.value.len(),
        ]
    }));
}

/// The fields `at` notes in `head`, their values slices of it (no copy), each shown
/// to `see` as it is added (a response's framing is read that way). `room`: fields
/// the map takes on top without growing (a request gets the mesh's).
pub(crate) fn header_map(
    head: &Bytes,
    at: &[FieldAt],
    room: usize,
    mut see: impl FnMut(&HeaderName, &HeaderValue) -> Result<(), BoxError>,
) -> Result<HeaderMap, BoxError> {
    let mut headers = graylane_http2::header_map(at.len() + room);
    for &[ns, ne, vs, ve] in at {
        let name = graylane_http2::field_name(&head[ns..ne]).map_err(|_| "a field name")?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(vs..ve)).map_err(|_| "a field value")?;
        see(&name, &value)?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The first final response head in `buf`, taken out of it; interim (1xx) answers
/// before it are skipped, as hyper's client skips them (`101` is final). `None`:
/// not all of it has come. `at` is scratch space kept with the connection (an
/// array of a hundred fields zeroed per response was 8 % of a hop's instructions).
pub(super) fn parse_response(
    buf: &mut BytesMut,
    at: &mut Vec<FieldAt>,
) -> Result<Option<Parsed>, BoxError> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        ) {
            // The bound holds however the head was read: in one read or many.
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err("response head over 400 KiB".into());
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err("response head over 400 KiB".into());
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("malformed response head: {e}").into()),
        };
        let code = parsed.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| format!("malformed response head: status {code}"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let reason = parsed.reason.unwrap_or_default();
        let reason = (!reason.is_empty() && status.canonical_reason() != Some(reason))
            .then(|| Bytes::copy_from_slice(reason.as_bytes()));
        field_offsets(buf, parsed.headers, at);
        let head = buf.split_to(len).freeze();
        let mut framing = Framing::default();
        let mut headers = header_map(&head, at, 0, |name, value| framing.see(name, value))
            .map_err(|e| format!("malformed response head: {e}"))?;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        if let Some(reason) = reason
            && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
        {
            response.extensions_mut().insert(reason);
        }
        let listed = framing.listed;
        let (length, keep_alive) = framing.decide(version, status)?;
        if let (true, Length::Exact(n)) = (listed, length) {
            // `5, 5` or two fields of 5 (RFC 9110 §8.6 lets a recipient take it as 5):
            // the client gets the one length, not a list it may refuse.
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        *response.headers_mut() = headers;
        return Ok(Some(Parsed {
            response,
            length,
            keep_alive,
        }));
    }
}

/// What a response head says of its framing, gathered as its fields are added to
/// the map (one look at each name, not a hashed lookup per field asked about).
#[derive(Default)]
struct Framing {
    /// `Connection: close`, `Connection: keep-alive`.
    close: bool,
    keep_alive: bool,
    /// Transfer-Encoding: present, and one field saying `chunked` alone.
    te: bool,
    only_chunked: bool,
    /// Content-Length, its values all the same; `listed`: given more than once.
    length: Option<u64>,
    listed: bool,
}

impl Framing {
    fn see(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), BoxError> {
        let bytes = value.as_bytes();
        if *name == header::CONNECTION {
            for token in bytes.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if *name == header::TRANSFER_ENCODING {
            // One field, `chunked` alone: the rule requests are held to.
            self.only_chunked = !self.te && super::super::super::only_chunked(bytes);
            self.te = true;
        } else if *name == header::CONTENT_LENGTH {
            for part in bytes.split(|&b| b == b',') {
                let n = content_length(part.trim_ascii()).ok_or("Content-Length")?;
                self.listed |= self.length.is_some();
                if self.length.is_some_and(|l| l != n) {
                    return Err("Content-Lengths differ".into());
                }
                self.length = Some(n);
            }
        }
        Ok(())
    }

    /// How the body ends, and whether the connection stays open after it. A
    /// response no proxy may pass on (`classify::malformed`) is never followed on
    /// its connection.
    fn decide(self, version: Version, status: StatusCode) -> Result<(Length, bool), BoxError> {
        let mut keep_alive = match version {
            Version::HTTP_10 => self.keep_alive,
            _ => !self.close,
        };
        if status.as_u16() > 599 || self.te && self.length.is_some() {
            keep_alive = false;
        }
        let length = match (self.te, self.length) {
            (true, _) if version == Version::HTTP_10 => {
                return Err("malformed response head: Transfer-Encoding in HTTP/1.0".into());
            }
            (true, _) if self.only_chunked => Length::Chunked,
            // A coding the sidecar does not decode (`gzip`) would reach the client as
            // if it were the content, `Transfer-Encoding` being hop-by-hop: refused,
            // as Envoy does.
            (true, _) => {
                return Err("malformed response head: a transfer coding other than chunked".into());
            }
            (false, None) => Length::Close,
            (false, Some(n)) => Length::Exact(n),
        };
        Ok((length, keep_alive))
    }
}

/// A Content-Length: digits only, at most 19 of them.
pub(crate) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A 101 response's connection, from the byte after its head: the switched
/// protocol's. An extension (which must be `Clone`): only the first taker gets it.
#[derive(Clone)]
pub(super) struct Switched(Arc<Mutex<Option<Upgraded>>>);

impl Switched {
    pub(super) fn new(io: Io, read: Bytes) -> Self {
        Self(Arc::new(Mutex::new(Some(Upgraded { io, read }))))
    }
}

/// Takes the upgraded connection out of a 101 response this client received.
pub(crate) fn take_switched<B>(response: &mut Response<B>) -> Option<Upgraded> {
    let switched = response.extensions_mut().remove::<Switched>()?;
    switched
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// The connection after a 101: what was read past the head first, then the socket.
pub(crate) struct Upgraded {
    io: Io,
    read: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
