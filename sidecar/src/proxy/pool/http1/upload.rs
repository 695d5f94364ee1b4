//! What goes out on a connection: a head, then its body as it comes, framed by its
//! length or chunked. The client sends requests with it, the server
//! (`server::h1`) responses.

use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderName;
use hyper::body::Body as _;

use super::super::super::classify::source_text;
use super::super::super::{Body, BoxError};

/// Body data at most this long is copied behind what is queued (one write); longer
/// data is written from its own buffer.
const COPY_UNDER: usize = 8 * 1024;

/// Bytes queued for the connection.
#[derive(Default)]
pub(crate) struct Outgoing {
    buf: BytesMut,
    /// Written after `buf`.
    big: Option<Bytes>,
    /// A chunk's closing CRLF, written after `big`.
    crlf_after_big: bool,
    /// Written since the connection was made, for "did anything leave".
    written: u64,
}

impl Outgoing {
    /// The buffer a head is written into.
    pub(crate) fn head(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Drops a buffer grown past `max` (it is empty between requests).
    pub(crate) fn shrink(&mut self, max: usize) {
        if self.buf.capacity() > max {
            self.buf = BytesMut::new();
        }
    }

    /// Whether more may be queued behind what is, up to `max` bytes: not while a
    /// large piece is being written from its own buffer (what is queued now is
    /// written before it, so a frame queued then would go out ahead of it).
    pub(crate) fn has_room(&self, max: usize) -> bool {
        self.big.is_none() && self.buf.len() < max
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.big.is_none()
    }

    fn push(&mut self, data: Bytes, crlf: bool) {
        debug_assert!(self.big.is_none(), "queued ahead of a piece being written");
        if data.len() < COPY_UNDER || self.big.is_some() {
            self.buf.extend_from_slice(&data);
            if crlf {
                self.buf.extend_from_slice(b"\r\n");
            }
        } else {
            self.big = Some(data);
            self.crlf_after_big = crlf;
        }
    }

    /// Writes everything queued; `Ready(Ok)`: nothing is left. A large piece goes out
    /// in one vectored write with what is queued before it (a chunk-size line, the
    /// last chunk's CRLF), where the stream takes one.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let n = match &self.big {
                Some(big) if !self.buf.is_empty() && io.is_write_vectored() => {
                    let both = [io::IoSlice::new(&self.buf), io::IoSlice::new(big)];
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &both))?
                }
                _ => {
                    let bytes: &[u8] = if !self.buf.is_empty() {
                        &self.buf
                    } else if let Some(big) = &self.big {
                        big
                    } else {
                        return Pin::new(io).poll_flush(cx);
                    };
                    ready!(Pin::new(&mut *io).poll_write(cx, bytes))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n as u64;
            let from_buf = n.min(self.buf.len());
            self.buf.advance(from_buf);
            if let Some(big) = &mut self.big
                && n > from_buf
            {
                big.advance(n - from_buf);
                if big.is_empty() {
                    self.big = None;
                    if std::mem::take(&mut self.crlf_after_big) {
                        self.buf.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
    }
}

/// How an outgoing body is framed on the wire.
pub(crate) enum OutFraming {
    /// This many bytes still to send.
    Length(u64),
    /// Chunked, ending with the declared trailer fields the body yields.
    Chunked { trailers: Vec<HeaderName> },
}

/// A body on its way out (a request's, or a response's).
pub(crate) struct Upload {
    body: Body,
    framing: OutFraming,
}

impl Upload {
    pub(crate) fn new(body: Body, framing: OutFraming) -> Self {
        Self { body, framing }
    }

    /// Queues the body's next frame in `out`. `Ready(Ok(true))`: more may follow;
    /// `Ready(Ok(false))`: the body's end is queued. A failure is the body's own
    /// (its client broke it off, or sent more or less than its length).
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Outgoing,
    ) -> Poll<Result<bool, BoxError>> {
        loop {
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    return Poll::Ready(Err(format!("request body: {}", source_text(&*e)).into()));
                }
                None => return Poll::Ready(self.end(out).map(|()| false)),
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Ok(trailers), OutFraming::Chunked { trailers: declared }) =
                        (frame.into_trailers(), &self.framing)
                    {
                        let head = &mut out.buf;
                        head.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            if declared.contains(name) {
                                head.extend_from_slice(name.as_str().as_bytes());
                                head.extend_from_slice(b": ");
                                head.extend_from_slice(value.as_bytes());
                                head.extend_from_slice(b"\r\n");
                            }
                        }
                        head.extend_from_slice(b"\r\n");
                        return Poll::Ready(Ok(false));
                    }
                    // Trailers on a body with a length have nowhere to go.
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            match &mut self.framing {
                OutFraming::Length(left) => {
                    let len = data.len() as u64;
                    if len > *left {
                        return Poll::Ready(Err(
                            "request body: longer than its Content-Length".into()
                        ));
                    }
                    *left -= len;
                    out.push(data, false);
                    if *left == 0 {
                        return Poll::Ready(Ok(false));
                    }
                }
                OutFraming::Chunked { .. } => {
                    let _ = write!(out.buf, "{:x}\r\n", data.len());
                    out.push(data, true);
                }
            }
            return Poll::Ready(Ok(true));
        }
    }

    /// The body ended.
    fn end(&mut self, out: &mut Outgoing) -> Result<(), BoxError> {
        match self.framing {
            OutFraming::Length(0) => Ok(()),
            OutFraming::Length(left) => {
                Err(format!("request body: ended {left} bytes short of its Content-Length").into())
            }
            OutFraming::Chunked { .. } => {
                out.buf.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }
}
