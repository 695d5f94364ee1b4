//! An idle connection's buffers let go: once nothing has been under way for
//! [`LET_GO_AFTER`], the read buffer, the staging chunk and the connection's own
//! (`Connection::let_go`) are dropped, and allocated again by the next message.
//!
//! Why: kept, they are most of what an idle HTTP/2 connection costs (16 KiB of read
//! buffer alone; issue 15 allows 6 KiB per idle connection). HAProxy hands a
//! connection's buffers back as soon as they are empty. Not at once here, though: a
//! busy connection goes idle between every burst of streams (a client with 16 in
//! flight sends the next 16 once these are answered), and allocating the buffers
//! again for each burst cost 1.5–1.8k instructions a request (+5 %, callgrind). The
//! grace, as HTTP/1.1's parking has (`server::idle`), keeps that off busy
//! connections.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use graylane_http2::{Connection, Role};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::READ_CHUNK;

/// How long a connection stays idle before its buffers are let go: HTTP/1.1's
/// parking grace (`server::idle::PARK_AFTER`), for the same reasons.
pub(crate) const LET_GO_AFTER: Duration = Duration::from_millis(5);

/// When a connection lets go of its buffers.
pub(crate) struct LetGo {
    /// Set to [`LET_GO_AFTER`] past the moment the connection went idle. Kept from
    /// one idle spell to the next: moving its deadline later is a compare-and-swap
    /// in tokio, where a new timer is an insertion into the timer wheel under its
    /// lock.
    timer: Pin<Box<Sleep>>,
    /// The connection is idle and the timer set for it.
    waiting: bool,
}

impl LetGo {
    pub(crate) fn new() -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(LET_GO_AFTER)),
            waiting: false,
        }
    }

    /// Called each time the connection's task has nothing more to do. `quiet`: the
    /// caller has no stream of its own under way; `worked`: this poll of the task
    /// read, wrote or answered something (a message may come and go within one
    /// poll): the grace starts again. Returns whether the buffers were let go just
    /// now, for the caller to let go of its own; until the grace has passed, the
    /// timer wakes the task.
    pub(crate) fn poll<R: Role>(
        &mut self,
        cx: &mut Context<'_>,
        (quiet, worked): (bool, bool),
        conn: &mut Connection<R>,
        read: &mut BytesMut,
        staging: &mut BytesMut,
    ) -> bool {
        if !quiet || !read.is_empty() || !conn.at_rest() {
            self.waiting = false;
            return false;
        }
        if worked || !self.waiting {
            self.waiting = true;
            self.timer.as_mut().reset(Instant::now() + LET_GO_AFTER);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.waiting = false;
        conn.let_go();
        *read = BytesMut::new();
        *staging = BytesMut::new();
        true
    }
}

/// What a connection's socket has, read into `read` (`Ok(0)`: the peer closed its
/// side). While the buffer is let go, through a small buffer on the stack: a poll
/// that finds nothing to read (a timer's, a body's wake-up) must not allocate it
/// again.
pub(crate) fn poll_read<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    read: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if read.capacity() > 0 {
        read.reserve(READ_CHUNK);
        return tokio_util::io::poll_read_buf(Pin::new(io), cx, read);
    }
    let mut first = [0; 2048];
    let mut buf = ReadBuf::new(&mut first);
    ready!(Pin::new(io).poll_read(cx, &mut buf))?;
    let filled = buf.filled();
    if !filled.is_empty() {
        read.reserve(READ_CHUNK);
        read.extend_from_slice(filled);
    }
    Poll::Ready(Ok(filled.len()))
}
