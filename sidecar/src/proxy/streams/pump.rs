//! A body going out on its HTTP/2 stream within the peer's windows, polled by the
//! connection's task: an answer's body (the inbound listeners) or a request's (the
//! pool). A frame is taken from the body only once the windows have room for what
//! was taken before, so a stalled peer stalls the body instead of the sidecar
//! buffering for it; trailers last.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use graylane_http2::{Connection, Role};
use hyper::body::Body as HttpBody;
use tokio::io::AsyncWrite;

use crate::proxy::{Body, BoxError};

/// A body on its way: what it gave and the windows have not let go yet.
pub(crate) struct Sending {
    body: Body,
    chunk: Bytes,
    /// `chunk` is the body's last.
    last: bool,
}

/// Where a [`Sending::pump`] left its body.
pub(crate) enum Pumped {
    /// Sent whole (its trailers too), or its stream is gone.
    Done,
    /// Waiting for the body, the windows, or room in the output.
    Waiting,
    /// The body failed: the stream is the caller's to reset, with its own reason.
    Failed(BoxError),
}

impl Sending {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            last: false,
        }
    }

    /// Sends what the body has, as far as `stream`'s windows allow and while the
    /// connection's output is below `high_water`; `progress` is set if anything went.
    pub(crate) fn pump<R: Role>(
        &mut self,
        conn: &mut Connection<R>,
        stream: u32,
        high_water: usize,
        cx: &mut Context<'_>,
        progress: &mut bool,
    ) -> Pumped {
        loop {
            if conn.output().len() >= high_water {
                return Pumped::Waiting;
            }
            if !self.chunk.is_empty() || self.last {
                if !self.chunk.is_empty() && conn.capacity(stream) == 0 {
                    return Pumped::Waiting;
                }
                let Ok(n) = conn.send_data(stream, &self.chunk, self.last) else {
                    return Pumped::Done;
                };
                self.chunk.advance(n);
                *progress = true;
                if self.chunk.is_empty() && self.last {
                    return Pumped::Done;
                }
                continue;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // The last DATA frame ends the stream itself.
                        self.last = self.body.is_end_stream();
                        self.chunk = data;
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = conn.send_trailers(stream, &trailers);
                            graylane_http2::recycle(trailers);
                            *progress = true;
                        }
                        return Pumped::Done;
                    }
                },
                Poll::Ready(None) => self.last = true,
                Poll::Ready(Some(Err(e))) => return Pumped::Failed(e),
                Poll::Pending => return Pumped::Waiting,
            }
        }
    }
}

/// Writes what `conn` has to send to `io`, as far as the socket takes it; `true` if
/// anything went.
pub(crate) fn flush<R: Role, T: AsyncWrite + Unpin>(
    io: &mut T,
    conn: &mut Connection<R>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let mut wrote = false;
    while !conn.output().is_empty() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, conn.output()))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        conn.advance(n);
        wrote = true;
    }
    if wrote {
        // TLS holds records until flushed.
        ready!(Pin::new(io).poll_flush(cx))?;
    }
    Poll::Ready(Ok(wrote))
}
