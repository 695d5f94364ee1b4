//! HTTP/1.1 requests served here rather than by hyper: those without a body, and
//! those whose body has one `Content-Length` or is chunked alone (`incoming`).
//!
//! Why: hyper's server spent about a third of a proxied request's user-space
//! instructions around the handler (its dispatcher, its head parser building a
//! `HeaderMap` field by field, its encoder, and a header timer per connection); see
//! bench/README.md, "Our own HTTP/1.1 server side". The request's head is parsed in
//! place with the pool client's code (`proxy::pool::http1`), and the answer goes out
//! through its `Outgoing` and `Upload`.
//!
//! What is not served here goes to hyper, whole: an upgrade, `Expect`, `CONNECT`, a
//! target that is not a path, HTTP/1.0, framing other than the above, and every head
//! hyper would refuse (its 400 and 431, with the reasons). Its bytes stay in the read
//! buffer and are replayed to a hyper connection, which serves the connection until
//! it is parked (see `connection`); then this side takes it back.
//!
//! What it keeps of hyper's behaviour: pipelined requests answered in order, one at a
//! time; a client that closes its connection while its request is handled cancels
//! the request (hyper's default, no half-close); the connection's header-read timer
//! and park grace (`idle::ParkTimer`); `Connection: close` on the last answer of a
//! graceful close; `Date`, `Content-Length` or chunked, and trailers only when the
//! client said `TE: trailers` and the answer declared them.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use hyper::rt::Timer as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::connection::{Serve, head_begun};
use super::idle::ParkTimer;
use super::{Handler, MAX_HEAD};
use crate::proxy::pool::http1::{FIRST_READ, FieldAt, Outgoing, Upload, poll_fill};
use crate::proxy::{Body, BoxError};

mod head;
mod incoming;
#[cfg(test)]
mod tests;

use self::head::Parsed;
use self::incoming::Feed;
pub(crate) use self::incoming::RequestBody;

/// Body bytes queued before they are written.
const QUEUE: usize = 16 * 1024;

/// A connection's state that outlives a park: what was read and not served, and
/// the buffers (empty while parked).
#[derive(Default)]
pub(super) struct Own {
    read: BytesMut,
    out: Outgoing,
    fields: Vec<FieldAt>,
    /// The head at the start of `read` is hyper's to serve.
    hand_off: bool,
}

impl Own {
    /// What was read and not served.
    pub(super) fn read(&self) -> &[u8] {
        &self.read
    }

    /// Whether serving ended at a head that is hyper's; its bytes are in `read`.
    pub(super) fn take_hand_off(&mut self) -> bool {
        std::mem::take(&mut self.hand_off)
    }

    /// Everything read and not served, taken.
    pub(super) fn take_read(&mut self) -> bytes::Bytes {
        std::mem::take(&mut self.read).freeze()
    }

    pub(super) fn append(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.read.reserve(FIRST_READ.max(bytes.len()));
            self.read.extend_from_slice(bytes);
        }
    }

    /// Parked: no buffers are kept, only the bytes of a head begun (copied: the rest
    /// of the buffer would stay allocated with them).
    pub(super) fn park(&mut self) {
        self.read = BytesMut::from(&self.read[..]);
        self.out = Outgoing::default();
        self.fields = Vec::new();
    }
}

/// Why serving ended other than at the client's close or a hand-off.
#[derive(Debug)]
pub(super) enum Ended {
    /// No whole head by the header-read deadline.
    HeadLate,
    Io(io::Error),
    /// The client closed the connection while its request was handled.
    ClientGone,
    /// A plaintext request after the listener turned strict.
    Refused,
    /// The answer's body failed after its head was sent.
    Body(BoxError),
}

impl Ended {
    pub(super) fn is_head_late(&self) -> bool {
        matches!(self, Self::HeadLate)
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadLate => f.write_str("no request head within the header-read timeout"),
            Self::Io(e) => write!(f, "{e}"),
            Self::ClientGone => f.write_str("the client closed the connection mid-request"),
            Self::Refused => f.write_str("plaintext after the listener turned strict"),
            Self::Body(e) => write!(f, "the answer's body: {e}"),
        }
    }
}

/// Serves requests on `io` until the client is done, a graceful close (`closing`)
/// ends it, a head is hyper's (`Own::take_hand_off`), or an error. `timer` is the
/// connection's head-wait timer: its grace asks the caller to park (the caller drops
/// this future then), its deadline ends with [`Ended::HeadLate`].
pub(super) async fn serve<IO, H>(
    io: &mut IO,
    own: &mut Own,
    serve: &Serve<H>,
    timer: &ParkTimer,
    closing: &AtomicBool,
    header_read_timeout: Duration,
) -> Result<(), Ended>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    // The wait under way: `timer` bounds the first by the deadline it was made with.
    let next_deadline = || (Instant::now() + header_read_timeout).into_std();
    let mut wait = timer.sleep_until(next_deadline());
    loop {
        let head = loop {
            match head::parse_request(&mut own.read, &mut own.fields, MAX_HEAD) {
                Parsed::Plain(head) => break head,
                Parsed::HandOff => {
                    own.hand_off = true;
                    return Ok(());
                }
                Parsed::Partial => {}
            }
            if !read_head(io, &mut own.read, closing, wait.as_mut()).await? {
                return Ok(());
            }
        };
        let answer = head.answer;
        let mut request = head.request;
        let mut feed = head.body.map(|(framing, length)| {
            let (body, feed) = incoming::channel(framing, length);
            *request.body_mut() = Body::Downstream(body);
            feed
        });
        // Pinned where it is made: the handler's future is kilobytes, and each move a
        // copy.
        let call = pin!(serve.call(request));
        let read = &mut own.read;
        let Some(response) = handle(io, read, call, feed.as_mut()).await else {
            return Err(Ended::ClientGone);
        };
        let response = response.map_err(|_| Ended::Refused)?;
        let (parts, body) = response.into_parts();
        let close = !head.keep_alive || closing.load(Ordering::Relaxed) || serve.turned_strict();
        let (framing, close) = head::encode_response(&parts, &body, answer, close, own.out.head());
        graylane_http2::recycle(parts.headers);
        let upload = framing.map(|f| Upload::new(body, f));
        write_answer(io, &mut own.out, upload, feed.as_mut(), read).await?;
        own.out.shrink(QUEUE);
        // The rest of the body: taken by a handler still reading it (an upload the
        // upstream answered early), or thrown away (see `incoming`).
        if let Some(feed) = feed.as_mut() {
            poll_fn(|cx| match feed.poll(cx, io, read) {
                // What has come is thrown away; a client still sending the body of a
                // request answered without it is not waited for (hyper's rule).
                Poll::Pending if feed.reader_gone() => Poll::Ready(()),
                polled => polled,
            })
            .await;
        }
        let unread = feed.as_ref().is_some_and(|f| !f.finished());
        // A graceful close begun while the answer went out: pipelined requests are
        // not taken (hyper's rule). Nor after a body not all read: where the next
        // request starts is not known.
        if close || unread || closing.load(Ordering::Relaxed) {
            let _ = io.shutdown().await;
            return Ok(());
        }
        timer.reset(&mut wait, next_deadline());
    }
}

/// Reads more of a head. `false`: the client closed the connection, or a graceful
/// close began with no head begun.
async fn read_head<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    closing: &AtomicBool,
    mut wait: Pin<&mut dyn hyper::rt::Sleep>,
) -> Result<bool, Ended> {
    // A head is read a read's worth at a time (growth is for bodies).
    let mut size = FIRST_READ;
    poll_fn(|cx| {
        match poll_fill(io, cx, read, &mut size) {
            // The client is done; a head it left unfinished has no one to answer.
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => return Poll::Ready(Ok(true)),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Ended::Io(e))),
            Poll::Pending => {}
        }
        if closing.load(Ordering::Relaxed) && !head_begun(read) {
            return Poll::Ready(Ok(false));
        }
        ready!(wait.as_mut().poll(cx));
        Poll::Ready(Err(Ended::HeadLate))
    })
    .await
}

/// The handler's answer, its request's body (if any) read meanwhile. `None`: the
/// client closed the connection first, and the request is dropped. As hyper's server
/// does, the close is watched for while nothing else is buffered (the bytes of a
/// pipelined request end the watch and stay in `read`), from before the handler is
/// first polled: a client that pipelined a request and closed is gone before that
/// one reaches the app.
async fn handle<IO: AsyncRead + Unpin, F: Future>(
    io: &mut IO,
    read: &mut BytesMut,
    mut call: Pin<&mut F>,
    mut feed: Option<&mut Feed>,
) -> Option<F::Output> {
    let mut watch = feed.is_none() && read.is_empty();
    poll_fn(|cx| {
        if closed(io, read, cx, &mut watch) {
            return Poll::Ready(None);
        }
        // The body first: a client gone before the end of it is gone before the
        // request starts (hyper's order).
        if let Some(body) = feed.as_mut()
            && body.poll(cx, io, read).is_ready()
        {
            if body.client_gone() {
                return Poll::Ready(None);
            }
            // Read whole (or malformed: the handler hears it from the body, and
            // answers 400). Watched from here like a request without one.
            watch = body.finished() && read.is_empty();
            feed = None;
            if closed(io, read, cx, &mut watch) {
                return Poll::Ready(None);
            }
        }
        if let Poll::Ready(answer) = call.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        Poll::Pending
    })
    .await
}

/// Whether the client closed the connection (while `watch`); bytes it sent end the
/// watch.
fn closed<IO: AsyncRead + Unpin>(
    io: &mut IO,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
    watch: &mut bool,
) -> bool {
    if !*watch {
        return false;
    }
    let mut size = FIRST_READ;
    match poll_fill(io, cx, read, &mut size) {
        Poll::Ready(Ok(0) | Err(_)) => true,
        Poll::Ready(Ok(_)) => {
            *watch = false;
            false
        }
        Poll::Pending => false,
    }
}

/// Writes the queued head, then the body as it comes, merging what is ready; the
/// request's body goes on being read meanwhile (`feed`: an upstream may answer
/// before it has all of it, and read on).
async fn write_answer<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    out: &mut Outgoing,
    mut body: Option<Upload>,
    mut feed: Option<&mut Feed>,
    read: &mut BytesMut,
) -> Result<(), Ended> {
    poll_fn(|cx: &mut Context<'_>| {
        if let Some(request) = feed.as_mut()
            && request.poll(cx, io, read).is_ready()
        {
            feed = None;
        }
        loop {
            if let Some(upload) = body.as_mut()
                && out.has_room(QUEUE)
            {
                match upload.poll_next(cx, out) {
                    Poll::Ready(Ok(true)) => continue,
                    Poll::Ready(Ok(false)) => body = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Ended::Body(e))),
                    Poll::Pending if out.is_empty() => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            ready!(out.poll_write(io, cx)).map_err(Ended::Io)?;
            if body.is_none() {
                return Poll::Ready(Ok(()));
            }
        }
    })
    .await
}
