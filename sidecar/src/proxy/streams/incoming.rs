//! What a stream shares between its connection's task and whoever holds the body it
//! receives: a client's request body (the inbound listeners, `server::h2`) or an
//! upstream's response body (the pool, `pool::http2`), and the peer's reset.
//!
//! The connection pushes DATA in; the body ([`Incoming`]) takes it out, and what it
//! took is given back to the peer's windows by the connection, so a slow reader
//! holds the peer back instead of the sidecar buffering for it. A reset fails the
//! body and wakes whoever watches for it ([`Shared::watch_reset`]: a handler's
//! future, dropped then).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use graylane_http2::frame::Reason;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::proxy::BoxError;

/// The peer reset the stream, with this reason: relayed as it came where the body
/// goes on over HTTP/2 (a gRPC client reads CANCEL and REFUSED_STREAM apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reset(pub(crate) Reason);

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the stream was reset ({})", self.0)
    }
}

impl std::error::Error for Reset {}

/// DATA below this size is merged with what is queued (up to this size).
const MERGED: usize = 16 * 1024;

/// One stream's shared state.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// The connection's task: woken when the body took bytes (to give the window
    /// back) or was dropped.
    connection: Arc<AtomicWaker>,
}

#[derive(Default)]
struct Inner {
    chunks: VecDeque<Bytes>,
    /// Small DATA frames, merged: a flood of 1-byte frames costs a byte each, not an
    /// allocation each (its order: after `chunks`).
    tail: BytesMut,
    trailers: Option<HeaderMap>,
    /// The client ended its body.
    ended: bool,
    /// A read is being pushed: what it brings is not for the reader yet (see
    /// `Shared::push`).
    filling: bool,
    /// The client reset the stream, or the connection ended.
    reset: Option<Reason>,
    /// Bytes the body took and the connection has not given back yet.
    taken: u32,
    /// The body was dropped before its end: what comes is given back at once.
    dropped: bool,
    /// `content-length`'s bytes not yet taken.
    remaining: Option<u64>,
    body: Option<Waker>,
    answer: Option<Waker>,
}

impl Shared {
    pub(crate) fn new(connection: Arc<AtomicWaker>, length: Option<u64>, ended: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                ended,
                remaining: length,
                ..Inner::default()
            }),
            connection,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it leaves plain data behind: carry on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Some of the body came; `false`: nobody reads it, give the window back. Small
    /// DATA is staged in the connection's `staging` chunk and split off it: a unary
    /// gRPC message costs no allocation of its own. Nothing pushed is for the reader
    /// until the whole read is pushed, [`Shared::wake`] then: a reader polled
    /// meanwhile (its task woken for another stream) took a flood of 1-byte frames
    /// as it came and sent it on to the app as thousands of 20-byte frames, which the
    /// app's `h2` counts as an attack (its DATA frame budget) and answers by closing
    /// the connection, failing every stream on it.
    pub(crate) fn push(&self, data: &[u8], end: bool, staging: &mut BytesMut) -> bool {
        let mut inner = self.lock();
        inner.ended |= end;
        if inner.dropped {
            return false;
        }
        inner.filling = true;
        if data.len() >= MERGED {
            if !inner.tail.is_empty() {
                let tail = inner.tail.split().freeze();
                inner.chunks.push_back(tail);
            }
            inner.chunks.push_back(Bytes::copy_from_slice(data));
        } else {
            if inner.tail.len() + data.len() > MERGED {
                let tail = inner.tail.split().freeze();
                inner.chunks.push_back(tail);
            }
            graylane_http2::stage(staging, data);
            // In place when it follows the tail in the chunk (or the tail is empty);
            // else copied onto the tail, which from then on is a buffer of its own.
            inner.tail.unsplit(staging.split());
        }
        true
    }

    /// The read is pushed: what it brought is there to read; wakes the reader.
    pub(crate) fn wake(&self) {
        let mut inner = self.lock();
        inner.filling = false;
        let waker = inner.body.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn trailers(&self, trailers: HeaderMap) {
        let mut inner = self.lock();
        inner.trailers = Some(trailers);
        inner.ended = true;
        if let Some(waker) = inner.body.take() {
            waker.wake();
        }
    }

    /// The stream is gone: the body fails and the handler's future ends.
    pub(crate) fn reset(&self, reason: Reason) {
        let mut inner = self.lock();
        inner.reset = Some(reason);
        let wakers = (inner.body.take(), inner.answer.take());
        drop(inner);
        wakers.0.into_iter().chain(wakers.1).for_each(Waker::wake);
    }

    /// Nobody will read the body (a request refused before its handler): what comes
    /// is given back at once, and the client told to stop once answered.
    pub(crate) fn abandon(&self) {
        self.lock().dropped = true;
    }

    /// The bytes the body took since the last call: to give back to the client.
    pub(crate) fn taken(&self) -> u32 {
        std::mem::take(&mut self.lock().taken)
    }

    /// Whether the body was dropped before the client ended it.
    pub(crate) fn abandoned(&self) -> bool {
        let inner = self.lock();
        inner.dropped && !inner.ended
    }

    /// Whether the stream was reset; if not, `cx` is woken when it is.
    pub(crate) fn watch_reset(&self, cx: &Context<'_>) -> bool {
        let mut inner = self.lock();
        if inner.reset.is_some() {
            return true;
        }
        inner.answer = Some(cx.waker().clone());
        false
    }

    /// The peer asked this end to stop sending (RST_STREAM NO_ERROR) after a
    /// complete head: what came of the body is all of it, not a failure (RFC 9113
    /// §8.1), unless it is short of its `content-length`: then it was cut.
    pub(crate) fn end_early(&self) {
        let mut inner = self.lock();
        let queued = inner.chunks.iter().map(Bytes::len).sum::<usize>() + inner.tail.len();
        if !inner.ended && inner.remaining.is_some_and(|left| left > queued as u64) {
            drop(inner);
            return self.reset(Reason::NO_ERROR);
        }
        inner.ended = true;
        inner.trailers = None;
        if let Some(waker) = inner.body.take() {
            waker.wake();
        }
    }
}

/// A body received on one of a connection's streams: a client's request (the
/// inbound listeners) or an upstream's response (the pool).
pub(crate) struct Incoming(pub(crate) Arc<Shared>);

impl HttpBody for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut inner = self.0.lock();
        let next = if inner.filling {
            None
        } else {
            match inner.chunks.pop_front() {
                Some(chunk) => Some(chunk),
                None if !inner.tail.is_empty() => Some(inner.tail.split().freeze()),
                None => None,
            }
        };
        if let Some(chunk) = next {
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            inner.taken = inner.taken.saturating_add(len);
            if let Some(left) = &mut inner.remaining {
                *left = left.saturating_sub(chunk.len() as u64);
            }
            drop(inner);
            self.0.connection.wake();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(reason) = inner.reset {
            return Poll::Ready(Some(Err(Box::new(Reset(reason)))));
        }
        if inner.filling {
            inner.body = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let Some(trailers) = inner.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if inner.ended {
            return Poll::Ready(None);
        }
        inner.body = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let inner = self.0.lock();
        inner.ended
            && inner.chunks.is_empty()
            && inner.tail.is_empty()
            && inner.trailers.is_none()
            && inner.reset.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.lock().remaining {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.dropped = true;
        // What was queued and never read goes back to the client's window too.
        let queued = inner.chunks.drain(..).map(|c| c.len()).sum::<usize>() + inner.tail.len();
        inner.tail = BytesMut::new();
        inner.taken = inner
            .taken
            .saturating_add(u32::try_from(queued).unwrap_or(u32::MAX));
        drop(inner);
        self.0.connection.wake();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    fn stream() -> Incoming {
        Incoming(Shared::new(Arc::default(), None, false))
    }

    async fn next(body: &mut Incoming) -> Bytes {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn small_data_is_split_off_the_connections_chunk_and_merged_per_stream() {
        let mut staging = BytesMut::new();
        let (mut a, mut b) = (stream(), stream());
        assert!(a.0.push(b"hello", false, &mut staging));
        assert!(b.0.push(b"world", false, &mut staging));
        a.0.wake();
        b.0.wake();
        let (hello, world) = (next(&mut a).await, next(&mut b).await);
        assert_eq!((&hello[..], &world[..]), (&b"hello"[..], &b"world"[..]));
        // One allocation for both streams' DATA: one after the other in the chunk.
        assert_eq!(world.as_ptr(), hello.as_ptr().wrapping_add(hello.len()));

        // A stream's small frames merge, in order, whether they follow each other in
        // the chunk or not.
        for (body, data) in [(&a, "1"), (&a, "2"), (&b, "x"), (&a, "3")] {
            assert!(body.0.push(data.as_bytes(), false, &mut staging));
        }
        a.0.wake();
        b.0.wake();
        assert_eq!(next(&mut a).await, "123");
        assert_eq!(next(&mut b).await, "x");
    }

    #[tokio::test]
    async fn what_a_read_brings_is_read_whole_once_the_read_is_pushed() {
        let mut staging = BytesMut::new();
        let mut body = stream();
        let (waker, woken) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        // A reader polled while a read of 1-byte frames is being pushed (its task
        // woken for another stream) takes none of it: it would send it on in crumbs.
        for _ in 0..100 {
            assert!(body.0.push(b"x", false, &mut staging));
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        }
        assert_eq!(woken.load(Ordering::Relaxed), 0);
        body.0.wake();
        assert_eq!(woken.load(Ordering::Relaxed), 1, "woken once for the read");
        assert_eq!(next(&mut body).await.len(), 100);
        // A reset is not held back by a read being pushed.
        assert!(body.0.push(b"y", false, &mut staging));
        body.0.reset(Reason::CANCEL);
        assert!(body.frame().await.is_some_and(|f| f.is_err()));
    }

    fn counting_waker() -> (Waker, Arc<AtomicUsize>) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(Count(Arc::clone(&count)))), count)
    }

    #[tokio::test]
    async fn data_past_the_merge_size_comes_whole_after_what_was_merged() {
        let mut staging = BytesMut::new();
        let mut body = stream();
        let large = vec![7u8; MERGED];
        assert!(body.0.push(b"ab", false, &mut staging));
        assert!(body.0.push(&large, true, &mut staging));
        body.0.wake();
        assert_eq!(next(&mut body).await, "ab");
        assert_eq!(next(&mut body).await.len(), MERGED);
        assert!(body.frame().await.is_none());
    }
}
