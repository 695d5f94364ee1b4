//! The pool's own HTTP/1.1 client: one request at a time on a connection the pool
//! lends, driven by the request's own task.
//!
//! hyper's `client::conn` drives each connection from a task of its own: a request
//! crosses to it over a channel, its response comes back over another, and the
//! response body is a third channel fed by that task. That is two task switches and
//! three queues per request; without them a proxied HTTP/1.1 hop costs a sixth fewer
//! instructions (bench/README.md, "Our own HTTP/1.1 client"). Here the request's task writes the
//! head, reads the response head, and the response body reads straight from the
//! socket; the connection rides inside that body and goes back to its pool when both
//! messages are done (see `body`).
//!
//! What it accepts in a response is what hyper's client accepted (httparse's
//! default strictness, at most 100 fields in a 400 KiB head, skipped 1xx answers),
//! less a transfer coding other than chunked (`head`, as Envoy refuses it); what
//! else no proxy may pass on is refused by the caller (`classify::malformed`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::Body;
use super::super::mtls::TlsStream;
use super::PoolError;

mod body;
mod head;
mod upload;

pub(crate) use self::body::{Decoded, Framing, ResponseBody, Want};
pub(crate) use self::head::{
    FieldAt, content_length, declared_trailers, field_offsets, header_map, take_switched,
};
use self::head::{Parsed, Switched};
pub(crate) use self::upload::{OutFraming, Outgoing, Upload};

/// Idle connections kept for one destination; a response body gives its connection
/// back here.
pub(super) type Idle = Arc<Mutex<Vec<(Box<Conn>, Instant)>>>;

/// What is read at once: enough for a typical head and body in one read. A read that
/// fills it doubles the next one, up to `MAX_READ`, as hyper's adaptive buffer does,
/// so a large body costs few system calls.
pub(crate) const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// One upstream connection, plaintext or mesh mTLS, with its buffers.
pub(crate) struct Conn {
    io: Io,
    /// Read and not yet used: the rest of a head, body bytes, the next message.
    read: BytesMut,
    /// How much the next read asks for (see `FIRST_READ`).
    read_size: usize,
    out: Outgoing,
    /// Writing failed: the server closed its side. The connection is not reused.
    write_failed: Option<io::Error>,
    /// Scratch space for parsing response heads.
    fields: Vec<head::FieldAt>,
}

/// The transport under a connection.
pub(crate) enum Io {
    Plain(TcpStream),
    /// Boxed: a TLS session is a kilobyte, a plain socket a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why an exchange failed, and the request when it had no body and no whole answer
/// head came: whole, to go again where its failure and method allow (`written`:
/// whether any of it reached the connection).
pub(super) struct Failed {
    pub(super) error: PoolError,
    pub(super) request: Option<Box<Request<Body>>>,
    pub(super) written: bool,
}

impl Conn {
    pub(super) fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            read: BytesMut::new(),
            read_size: FIRST_READ,
            out: Outgoing::default(),
            write_failed: None,
            fields: Vec::new(),
        })
    }

    /// Whether the server has neither closed this idle connection nor sent anything
    /// on it (an answer no one asked for makes it unusable). Costs no system call
    /// while the socket has had nothing to read since the last response: tokio
    /// remembers that a read came up short.
    pub(super) fn is_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        // A TLS session is read whatever the socket says: it may hold decrypted bytes
        // read with the last response (its socket read then asks tokio's readiness
        // first, and costs no system call either).
        if let Io::Plain(tcp) = &self.io {
            match tcp.poll_read_ready(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Err(_)) => return false,
                Poll::Ready(Ok(())) => {}
            }
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        // Something came, the end (a close_notify included), or stale readiness.
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Reads what the socket has into `read`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, cx, &mut self.read, &mut self.read_size)
    }
}

/// Reads what `io` has into `read`, with room for `read_size` bytes: a read that
/// fills the room doubles the next one, up to `MAX_READ`, a short one goes back to
/// `FIRST_READ` (see `FIRST_READ`). The server side (`server::h1`) reads so too.
pub(crate) fn poll_fill<IO: AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    read: &mut BytesMut,
    read_size: &mut usize,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < *read_size / 2 {
        read.reserve(*read_size);
    }
    let room = read.capacity() - read.len();
    let n = std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, read))?;
    *read_size = if n == room {
        (*read_size * 2).min(MAX_READ)
    } else {
        FIRST_READ
    };
    Poll::Ready(Ok(n))
}

/// Sends `request` on `conn` and reads the response head. The response body reads
/// from the connection and gives it back to `idle` once both messages are done and
/// the server did not close it.
pub(super) async fn send(
    mut conn: Box<Conn>,
    mut request: Box<Request<Body>>,
    idle: &Idle,
) -> Result<Response<Body>, Failed> {
    let framing = head::encode_request(&request, &mut conn.out).map_err(|e| Failed {
        error: PoolError::Unsendable(e),
        request: None,
        written: false,
    })?;
    let method_head = request.method() == http::Method::HEAD;
    let mut upload = framing.map(|framing| {
        let body = std::mem::replace(request.body_mut(), Body::Empty);
        Upload::new(body, framing)
    });
    let had_body = upload.is_some();
    let before = conn.out.written();
    let mut searched = 0;
    let parsed =
        std::future::poll_fn(|cx| exchange(&mut conn, &mut upload, &mut searched, cx)).await;
    match parsed {
        Ok(parsed) => {
            graylane_http2::recycle(std::mem::take(request.headers_mut()));
            finish(conn, parsed, upload, method_head, idle).map_err(|error| Failed {
                error,
                request: None,
                written: true,
            })
        }
        // A body-less request is still whole: it is handed back, so that it can go
        // again without a copy made beforehand for every request. Also after part of
        // an answer's head (a server dying mid-head): whether that may go again is
        // the failure's class and the method's, as for any other.
        Err(error) => Err(Failed {
            error,
            request: (!had_body).then_some(request),
            written: conn.out.written() != before,
        }),
    }
}

/// Writes what is to be written and reads until a final response head has come. A
/// server may answer before it has read the whole request (a 413, say) and close:
/// once writing fails, the answer is still read, and the write's error is the
/// exchange's only if none comes. The head is parsed again only when an LF came
/// (`searched`: how much of the buffer has none), so a server trickling a 400 KiB
/// head byte by byte costs a parse per line, not one per byte.
fn exchange(
    conn: &mut Conn,
    upload: &mut Option<Upload>,
    searched: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Parsed, PoolError>> {
    loop {
        let mut progress = false;
        if conn.write_failed.is_none() {
            match conn.out.poll_write(&mut conn.io, cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(up) = upload.as_mut() {
                        match up.poll_next(cx, &mut conn.out) {
                            Poll::Ready(Ok(more)) => {
                                progress = true;
                                if !more {
                                    *upload = None;
                                }
                            }
                            Poll::Ready(Err(e)) => {
                                return Poll::Ready(Err(PoolError::RequestBody(e)));
                            }
                            Poll::Pending => {}
                        }
                    }
                }
                Poll::Ready(Err(e)) => {
                    conn.write_failed = Some(e);
                    *upload = None;
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        if conn.read[*searched..].contains(&b'\n') || conn.read.len() > head::MAX_HEAD {
            match head::parse_response(&mut conn.read, &mut conn.fields) {
                Ok(Some(parsed)) => return Poll::Ready(Ok(parsed)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(PoolError::Exchange(e))),
            }
        }
        *searched = conn.read.len();
        let failed = match conn.poll_fill(cx) {
            Poll::Ready(Ok(0)) => closed(conn.read.is_empty()),
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(e)) => e,
            Poll::Pending if progress => continue,
            Poll::Pending => return Poll::Pending,
        };
        let error = conn.write_failed.take().unwrap_or(failed);
        // rustls' end without close_notify, a reset (a peer killed with bytes unread)
        // and a broken pipe are all the peer closing mid-message: said so in our
        // words, not the OS's or rustls'.
        let error = match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => closed(conn.read.is_empty()),
            _ => error,
        };
        return Poll::Ready(Err(PoolError::Exchange(error.into())));
    }
}

/// The upstream closed the connection before a whole response head: an end of
/// stream, which `classify` reads as the connection lost (an idempotent request may
/// go again), as it read hyper's "connection closed before message completed".
fn closed(nothing_read: bool) -> io::Error {
    let what = if nothing_read {
        "the peer closed the connection mid-message, before any answer"
    } else {
        "the peer closed the connection mid-message, in the response head"
    };
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

/// The response as the caller gets it: its body reads from `conn`, or, with none,
/// `conn` goes back to `idle` now. A body whose framing is broken in what already
/// came with the head (a bad first chunk-size line) fails the exchange: the client
/// gets a 502 saying so, not a head and then a cut connection.
fn finish(
    mut conn: Box<Conn>,
    parsed: Parsed,
    upload: Option<Upload>,
    method_head: bool,
    idle: &Idle,
) -> Result<Response<Body>, PoolError> {
    let Parsed {
        mut response,
        length,
        keep_alive,
    } = parsed;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The connection is the upgraded protocol's from here (`upgrade`).
        let read = std::mem::take(&mut conn.read);
        response
            .extensions_mut()
            .insert(Switched::new(conn.io, read.freeze()));
        return Ok(response.map(|()| Body::Empty));
    }
    let mut framing = body::Framing::of(&response, length, method_head);
    framing.check(&mut conn.read).map_err(PoolError::Exchange)?;
    let keep_alive = keep_alive && framing != body::Framing::Close;
    if framing == body::Framing::Done {
        let idle = keep_alive.then(|| Arc::clone(idle));
        // The end of the request body may still be queued (the answer came first).
        if upload.is_some() || !conn.out.is_empty() {
            body::send_rest(conn, upload, idle);
        } else if let Some(idle) = idle {
            give_back(&idle, conn);
        }
        return Ok(response.map(|()| Body::Empty));
    }
    let body = ResponseBody::new(conn, framing, upload, keep_alive.then(|| Arc::clone(idle)));
    Ok(response.map(|()| Body::Upstream(body)))
}

/// Puts `conn` back among `idle`, within the pool's bound, unless writing on it
/// failed. A connection that read a large body keeps no large buffer while idle:
/// 256 of them per destination are kept.
fn give_back(idle: &Idle, mut conn: Box<Conn>) {
    if conn.write_failed.is_some() {
        return;
    }
    if conn.read.capacity() > 2 * FIRST_READ {
        conn.read = BytesMut::new();
    }
    conn.read_size = FIRST_READ;
    conn.out.shrink(2 * FIRST_READ);
    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() < super::MAX_IDLE {
        idle.push((conn, Instant::now()));
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
