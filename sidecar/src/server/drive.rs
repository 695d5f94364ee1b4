//! What watches a connection while it is served (`h1` or hyper) and while it is
//! parked: the first head's deadline, the next head's deadline, rapid reset, shutdown
//! and a switch to strict mTLS. The limits are the same in both states; only who reads differs.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::{ArcWake, AtomicWaker, waker_ref};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Resets;
use super::idle::{H2_PREFACE, Park, Readable};
use crate::metrics::Connections;

/// One connection's watchers. `no_first_head` completes at the first head's deadline
/// unless a request has been seen; `close_when` begins a graceful close.
pub(super) struct Watch<'a, N, C> {
    pub(super) no_first_head: Pin<&'a mut N>,
    pub(super) close_when: Pin<&'a mut C>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// A graceful close has begun: no park, and `close_when` is done or moot.
    pub(super) closing: bool,
    pub(super) counters: &'a Connections,
    pub(super) resets: &'a Resets,
    pub(super) addr: SocketAddr,
    pub(super) woken: Arc<Woken>,
}

/// Wakes a connection's task on behalf of its watchers, and remembers that it did.
/// The watchers (the first head's deadline, rapid reset, shutdown, a switch to
/// strict) rarely fire, but a select polls every branch on every wake of the task,
/// and each poll takes a lock or reads a timer: ~850 instructions an HTTP/1.1
/// request. Polled only after one of them woke the task, they cost an atomic swap.
#[derive(Default)]
pub(super) struct Woken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Woken {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// How [`Watch::drive`] left a connection.
pub(super) enum Driven {
    /// To be parked until this deadline for its next head.
    Parked(Instant),
    /// Ended, or closed by a limit.
    Closed,
    /// A request head was not complete by its deadline: answer 408 where one was
    /// begun (sidecar.md), then close.
    HeadLate,
}

/// Which watcher of [`Watch::drive`] fired.
enum Alarm {
    NoFirstHead,
    RapidReset,
    Shutdown,
    CloseWhen,
}

impl<N, C> Watch<'_, N, C>
where
    N: Future<Output = ()>,
    C: Future<Output = ()>,
{
    /// Serves `conn` until it ends or a limit closes it, or until `park` asks for the
    /// connection to be parked. `head_late`: whether `conn`'s error is its own
    /// header-read timeout.
    pub(super) async fn drive<F, E>(
        &mut self,
        mut conn: Pin<&mut F>,
        graceful: impl Fn(Pin<&mut F>),
        head_late: impl Fn(&E) -> bool,
        park: Option<&Park>,
    ) -> Driven
    where
        F: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let addr = self.addr;
        loop {
            // Biased: the park request is set while `conn` is polled, and read right
            // after it.
            tokio::select! {
                biased;
                ended = conn.as_mut() => {
                    return match ended {
                        Err(e) if head_late(&e) => {
                            head_timed_out(self.counters, addr);
                            Driven::HeadLate
                        }
                        Err(e) => {
                            tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                            Driven::Closed
                        }
                        Ok(()) => Driven::Closed,
                    };
                }
                deadline = requested(park), if !self.closing => return Driven::Parked(deadline),
                alarm = self.alarm() => match alarm {
                    Alarm::NoFirstHead => {
                        head_timed_out(self.counters, addr);
                        return Driven::HeadLate;
                    }
                    Alarm::RapidReset => {
                        self.counters.reset_abuse.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = %addr, "closed: the client cancels most of its requests (rapid reset)");
                        return Driven::Closed;
                    }
                    // Requests in flight finish; HTTP/1 answers its current one with
                    // `Connection: close`, HTTP/2 sends GOAWAY.
                    Alarm::Shutdown | Alarm::CloseWhen => {
                        if matches!(alarm, Alarm::CloseWhen) {
                            tracing::debug!(peer = %addr, "closing gracefully: the listener's mode changed");
                        }
                        self.closing = true;
                        graceful(conn.as_mut());
                    }
                },
            }
        }
    }

    /// The first of `drive`'s watchers to fire, each polled only once it has woken
    /// the task ([`Woken`]); shutdown and a switch to strict not once closing.
    async fn alarm(&mut self) -> Alarm {
        let woken = Arc::clone(&self.woken);
        // New futures below: polled once, to be registered.
        woken.woken.store(true, Ordering::Relaxed);
        let closing = self.closing;
        let resets = self.resets;
        let mut abusive = pin!(resets.abusive.notified());
        let mut shutdown = pin!(self.shutdown.wait_for(|down| *down));
        let (first, close_when) = (&mut self.no_first_head, &mut self.close_when);
        poll_fn(|cx| {
            woken.task.register(cx.waker());
            if !woken.woken.swap(false, Ordering::Acquire) {
                return Poll::Pending;
            }
            let waker = waker_ref(&woken);
            let cx = &mut Context::from_waker(&waker);
            if first.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Alarm::NoFirstHead);
            }
            if abusive.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Alarm::RapidReset);
            }
            if closing {
                return Poll::Pending;
            }
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Alarm::Shutdown);
            }
            if close_when.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Alarm::CloseWhen);
            }
            Poll::Pending
        })
        .await
    }

    /// Parked (or not yet served): the next bytes of the connection, read into a small
    /// buffer (after a park, none: only readable, where `io` can tell), or why it is to
    /// be closed: the client closed it, shutdown, or a switch to strict (an idle
    /// connection has no request to finish first), or the head was not complete by
    /// `head_by` ([`Driven::HeadLate`]). On the `first` read, a prefix of the HTTP/2
    /// preface is read on until it is whole or differs.
    pub(super) async fn next_bytes<T: AsyncRead + Readable + Unpin>(
        &mut self,
        io: &mut T,
        first: bool,
        head_by: Instant,
    ) -> Result<Bytes, Driven> {
        let mut head_timeout = std::pin::pin!(tokio::time::sleep_until(head_by));
        // After a park, readable is enough where the stream can tell: the server reads.
        if !first {
            let readable = std::future::poll_fn(|cx| io.poll_readable(cx));
            if self.watched(readable, head_timeout.as_mut()).await? {
                return Ok(Bytes::new());
            }
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        let mut len = 0;
        loop {
            match self
                .watched(io.read(&mut buf[len..]), head_timeout.as_mut())
                .await?
            {
                Ok(0) | Err(_) => return Err(Driven::Closed),
                Ok(n) => len += n,
            }
            if !first || len == buf.len() || !H2_PREFACE.starts_with(&buf[..len]) {
                return Ok(Bytes::copy_from_slice(&buf[..len]));
            }
        }
    }

    /// `wait`'s output, or why the connection is to be closed (see
    /// [`next_bytes`](Self::next_bytes)).
    async fn watched<F: Future>(
        &mut self,
        wait: F,
        head_timeout: Pin<&mut tokio::time::Sleep>,
    ) -> Result<F::Output, Driven> {
        let addr = self.addr;
        tokio::select! {
            biased;
            done = wait => Ok(done),
            () = self.no_first_head.as_mut() => {
                head_timed_out(self.counters, addr);
                Err(Driven::HeadLate)
            }
            () = head_timeout => {
                tracing::debug!(peer = %addr, "no request head within the header-read timeout; closed");
                Err(Driven::HeadLate)
            }
            _ = self.shutdown.wait_for(|down| *down) => Err(Driven::Closed),
            () = self.close_when.as_mut(), if !self.closing => Err(Driven::Closed),
        }
    }

    /// A head begun before a park was not finished by its deadline.
    pub(super) fn head_left_unfinished(&self) {
        head_timed_out(self.counters, self.addr);
    }
}

fn head_timed_out(counters: &Connections, addr: SocketAddr) {
    counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(peer = %addr, "no request head within the header-read timeout; closed");
}

/// Completes once `park` asks for a park; never without one (HTTP/2).
async fn requested(park: Option<&Park>) -> Instant {
    match park {
        Some(park) => park.requested().await,
        None => std::future::pending().await,
    }
}
