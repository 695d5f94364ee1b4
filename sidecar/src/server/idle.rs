//! Idle HTTP/1.1 keep-alive connections hold no buffers: once a connection has waited
//! [`PARK_AFTER`] for its next request head, what serves it (`h1`'s future and its
//! buffers, or hyper's connection, taken apart with `into_parts`) is dropped, and only
//! the socket is kept ("parked") until the next bytes come; then it is served again,
//! from those bytes.
//!
//! Why: hyper keeps each connection's read buffer (8–16 KiB), write buffer (8 KiB) and
//! boxed request and response slots (~6 KiB) at their high-water mark for as long as
//! the connection is open, idle or not: 37 KiB per idle keep-alive connection, where
//! a parked one costs its task and socket (issue 15: ≤ 6 KiB). linkerd2-proxy
//! releases idle buffers for the same reason.
//!
//! When: a server tells us it waits for a head by arming its header-read timer, and
//! that the wait has gone on by polling it; the timer here ([`ParkTimer`]) is that
//! hook (hyper's `Timer`, and `h1`'s head wait). Both arm it only between messages
//! (request body read, response written), so nothing is mid-flight; a response not
//! yet flushed to a client that does not read ([`Lent`] sees the write pending) is
//! not parked. The grace keeps a busy
//! connection (requests µs apart) from paying a rebuild per request.
//!
//! The header-read timeout spans a park: a head wait keeps its deadline across the
//! servings of it (a client dribbling a head byte by byte is cut
//! at the same time as before).

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How long an HTTP/1.1 connection waits for its next head before it is parked.
/// A connection kept busy (a load generator, a pool under load) sends its next
/// request within microseconds to a millisecond and never pays a rebuild; past this,
/// the rebuild (3–7 µs of CPU) costs at most 0.15 % of a core per connection (200
/// requests a second at most). Short, because a connection not yet parked holds
/// ~17 KiB of hyper's buffers, and the allocator keeps the high-water mark of a
/// burst: 1,000 connections opened back to back left 6.6 KiB each parked after
/// 20 ms, 4.9 KiB after 5 ms (bench/conn-memory.py, issue 15's bar is 6 KiB).
pub(super) const PARK_AFTER: Duration = Duration::from_millis(5);

/// The HTTP/2 connection preface (RFC 9113 §3.4): its first bytes tell a prior-
/// knowledge HTTP/2 client from an HTTP/1.1 one.
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One connection's parking state, shared by its timer, its socket wrapper and the
/// loop that serves it.
#[derive(Default)]
pub(super) struct Park {
    /// The grace has passed in a head wait: park, with the wait's deadline.
    requested: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    /// The last write or flush did not complete: hyper still holds response bytes.
    write_pending: AtomicBool,
    /// The timer of the connection's head waits, kept from one wait to the next. A
    /// wait moves its deadline later, which tokio does with one compare-and-swap;
    /// a timer of its own per wait was put into tokio's timer wheel and taken out
    /// again under the wheel's lock, ~1.5k instructions a request. Dropped at a park.
    timer: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

impl Park {
    fn request(&self, deadline: Instant) {
        if let Ok(mut slot) = self.deadline.lock() {
            *slot = Some(deadline);
            self.requested.store(true, Ordering::Relaxed);
        }
    }

    /// The head wait's deadline, if the connection is to be parked now.
    pub(super) fn take(&self) -> Option<Instant> {
        if !self.requested.swap(false, Ordering::Relaxed) {
            return None;
        }
        let deadline = self.deadline.lock().ok()?.take()?;
        // A response still being written stays with hyper until the client reads it
        // (or the send timeout cuts it).
        if self.write_pending.load(Ordering::Relaxed) {
            return None;
        }
        *self.timer() = None;
        Some(deadline)
    }

    fn timer(&self) -> std::sync::MutexGuard<'_, Option<Pin<Box<tokio::time::Sleep>>>> {
        self.timer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Completes once the connection is to be parked. Only the connection's own poll
    /// sets the request, so polling this right after it (a biased `select!`) needs
    /// no waker.
    pub(super) async fn requested(&self) -> Instant {
        std::future::poll_fn(|_| self.take().map_or(Poll::Pending, Poll::Ready)).await
    }
}

/// hyper's header-read timer for one hyper connection: the deadline of the head
/// wait it continues, and a park request once a wait has lasted [`PARK_AFTER`].
pub(super) struct ParkTimer {
    park: std::sync::Arc<Park>,
    /// The deadline of the head wait under way when this hyper connection was built
    /// (from accept, or from the end of the last response before the park). It bounds
    /// that first wait only: hyper may drop its timer after a head and ask for a new
    /// one for the next, whose deadline is its own (else every busy keep-alive
    /// connection was cut `--header-read-timeout` after it was built).
    head_by: Instant,
    first_wait: std::sync::atomic::AtomicBool,
}

impl ParkTimer {
    pub(super) fn new(park: std::sync::Arc<Park>, head_by: Instant) -> Self {
        Self {
            park,
            head_by,
            first_wait: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl Timer for ParkTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until((Instant::now() + duration).into_std())
    }

    /// hyper's first head wait on this connection: the one under way, whose deadline
    /// was set before the park.
    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        let mut deadline = Instant::from_std(deadline);
        if self
            .first_wait
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            deadline = deadline.min(self.head_by);
        }
        Box::pin(HeadSleep::new(std::sync::Arc::clone(&self.park), deadline))
    }

    /// A new head wait, after a request was served on this hyper connection.
    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadSleep>() {
            Some(sleep) => sleep.get_mut().rearm(Instant::from_std(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// One head wait: fires first at the park grace (asking to park, then going on to
/// the deadline), then at the deadline (hyper's header-read timeout). Its timer is
/// the connection's ([`Park::timer`]), armed for this wait when polled: most heads
/// are in the buffer already, and the wait is over unpolled.
struct HeadSleep {
    deadline: Instant,
    park_at: Option<Instant>,
    park: std::sync::Arc<Park>,
}

impl HeadSleep {
    fn new(park: std::sync::Arc<Park>, deadline: Instant) -> Self {
        Self {
            deadline,
            park_at: Self::park_at(deadline),
            park,
        }
    }

    /// A grace ending before the deadline, if any.
    fn park_at(deadline: Instant) -> Option<Instant> {
        Some(Instant::now() + PARK_AFTER).filter(|at| *at < deadline)
    }

    fn rearm(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.park_at = Self::park_at(deadline);
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut timer = this.park.timer();
        loop {
            let at = this.park_at.unwrap_or(this.deadline);
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            // Left armed by the last wait, at its grace: moved to this one's (later,
            // so without the wheel's lock), or to the deadline once the grace passed.
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            ready!(sleep.as_mut().poll(cx));
            if this.park_at.take().is_none() {
                return Poll::Ready(());
            }
            // hyper polls this only while its head read is pending: the grace has
            // passed with nothing to parse. Park; until the loop does, time the head.
            this.park.request(this.deadline);
        }
    }
}

impl Sleep for HeadSleep {}

/// A stream whose next bytes can be awaited without reading them, so that a parked
/// connection's next request goes straight into the next hyper connection's buffer
/// (no small read first, no second read for the rest).
pub(super) trait Readable {
    /// Ready once a read would not block: `true`; `false` if this stream cannot tell
    /// (TLS may hold decrypted bytes already read off the socket): read instead.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<bool>;
}

impl Readable for tokio::net::TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<bool> {
        // An error is the next read's to report.
        self.poll_read_ready(cx).map(|_| true)
    }
}

impl<T> Readable for Box<tokio_rustls::server::TlsStream<T>> {
    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<bool> {
        Poll::Ready(false)
    }
}

impl<T: Readable> Readable for Lent<T> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.prefix.is_empty() {
            self.inner.poll_readable(cx)
        } else {
            Poll::Ready(true)
        }
    }
}

/// The socket as lent to one hyper connection after another: the bytes read while
/// parked are replayed first, and a pending write is noted for [`Park::take`].
pub(super) struct Lent<T> {
    prefix: Bytes,
    inner: T,
    park: std::sync::Arc<Park>,
}

impl<T> Lent<T> {
    pub(super) fn new(inner: T, park: std::sync::Arc<Park>) -> Self {
        Self {
            prefix: Bytes::new(),
            inner,
            park,
        }
    }

    /// The next hyper connection reads `prefix` before the socket.
    pub(super) fn replay(&mut self, prefix: Bytes) {
        self.prefix = prefix;
    }

    fn wrote<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.park
            .write_pending
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lent<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Emptied, it would still keep its whole buffer for the connection's life.
            self.prefix = Bytes::new();
        }
        // The rest of the head in the same read, if it has come: hyper wants a whole
        // free read size (8 KiB) before each read, and a second read after a short
        // first one would double its buffer. An error or nothing yet: the next read
        // sees it.
        if self.prefix.is_empty() && buf.remaining() > 0 {
            let _ = Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lent<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.wrote(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// hyper's first arm of a rebuilt connection: the wait's deadline, and a park
    /// request once the grace has passed.
    fn first_arm(park: &Arc<Park>, head_by: Instant) -> Pin<Box<dyn Sleep>> {
        let timer = ParkTimer::new(Arc::clone(park), head_by);
        timer.sleep_until((Instant::now() + Duration::from_secs(60)).into_std())
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_wait_asks_to_park_after_the_grace_and_times_out_at_its_deadline() {
        let park = Arc::new(Park::default());
        let started = Instant::now();
        let head_by = started + Duration::from_secs(10);
        let mut sleep = first_arm(&park, head_by);
        assert!(
            tokio::time::timeout(PARK_AFTER / 2, sleep.as_mut())
                .await
                .is_err()
        );
        assert_eq!(park.take(), None, "not before the grace");
        tokio::time::advance(PARK_AFTER).await;
        assert!(futures_poll(sleep.as_mut()).is_pending());
        assert_eq!(
            park.take(),
            Some(head_by),
            "the wait's deadline, not hyper's 60 s"
        );
        assert_eq!(park.take(), None, "asked once");
        sleep.as_mut().await;
        assert_eq!(Instant::now(), head_by);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_wait_after_a_request_gets_a_new_deadline_and_grace() {
        let park = Arc::new(Park::default());
        let timer = ParkTimer::new(Arc::clone(&park), Instant::now() + Duration::from_secs(10));
        let mut sleep = timer.sleep_until((Instant::now() + Duration::from_secs(10)).into_std());
        tokio::time::advance(Duration::from_secs(3)).await;
        // A request was served; hyper starts the next head wait.
        let next = Instant::now() + Duration::from_secs(10);
        timer.reset(&mut sleep, next.into_std());
        tokio::time::advance(PARK_AFTER).await;
        assert!(futures_poll(sleep.as_mut()).is_pending());
        assert_eq!(park.take(), Some(next));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_over_before_its_grace_leaves_no_park_request_and_the_next_wait_its_own() {
        let park = Arc::new(Park::default());
        let timer = ParkTimer::new(Arc::clone(&park), Instant::now() + Duration::from_secs(10));
        let mut first = timer.sleep_until((Instant::now() + Duration::from_secs(10)).into_std());
        assert!(futures_poll(first.as_mut()).is_pending());
        // The head came: hyper drops the wait, the connection's timer stays armed.
        drop(first);
        tokio::time::advance(2 * PARK_AFTER).await;
        assert_eq!(park.take(), None, "no wait, no park");
        let next = Instant::now() + Duration::from_secs(10);
        let mut second = timer.sleep_until(next.into_std());
        assert!(futures_poll(second.as_mut()).is_pending());
        tokio::time::advance(PARK_AFTER / 2).await;
        assert!(futures_poll(second.as_mut()).is_pending());
        assert_eq!(park.take(), None, "not before this wait's own grace");
        tokio::time::advance(PARK_AFTER).await;
        assert!(futures_poll(second.as_mut()).is_pending());
        assert_eq!(park.take(), Some(next));
        assert!(park.timer().is_none(), "a parked connection keeps no timer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_is_not_parked() {
        let park = Arc::new(Park::default());
        // A client that reads nothing: the write stays pending.
        let (near, _far) = tokio::io::duplex(16);
        let mut lent = Lent::new(near, Arc::clone(&park));
        let blocked = tokio::time::timeout(Duration::from_millis(1), lent.write_all(&[0; 64]));
        assert!(blocked.await.is_err());
        park.request(Instant::now());
        assert_eq!(park.take(), None);
    }

    #[tokio::test]
    async fn the_bytes_read_while_parked_come_first_then_the_socket_in_the_same_read() {
        let park = Arc::new(Park::default());
        let (near, mut far) = tokio::io::duplex(64);
        let mut lent = Lent::new(near, park);
        far.write_all(b"rest of the head").await.unwrap();
        lent.replay(Bytes::from_static(b"GET / "));
        let mut buf = [0u8; 64];
        let n = lent.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / rest of the head");
    }

    fn futures_poll(sleep: Pin<&mut dyn Sleep>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        sleep.poll(&mut Context::from_waker(waker))
    }
}
