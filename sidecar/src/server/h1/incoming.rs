//! A request body, read off the client's connection by the connection's own task
//! (`h1::serve`, through [`Feed`]) and handed to the handler through a shared slot
//! ([`RequestBody`]), as hyper's server hands its `Incoming` over a channel.
//!
//! The slot holds at most 16 KiB of data (and the trailers): the connection reads on
//! once the handler has taken it, so a slow upstream slows the client, not the
//! sidecar's memory. A handler that drops the body unread (a refusal, an early
//! answer) leaves the rest to be read and thrown away, up to [`DRAIN`] bytes, so the
//! connection can serve its next request (hyper drains the same way); past that the
//! connection closes after the answer. The framing is the pool client's decoder
//! (`proxy::pool::http1::Framing`): one parser of chunked bodies for both directions.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::proxy::BoxError;
use crate::proxy::pool::http1::{Decoded, FIRST_READ, Framing, Want, poll_fill};
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncRead;

/// What is read and thrown away of a body its handler dropped.
const DRAIN: u64 = 64 * 1024;

/// Data read while the handler has not taken what came before is merged up to this
/// (as `proxy::coalesce` merges hyper's frames): many small chunks go upstream as
/// few writes.
const MERGE_UNDER: usize = 16 * 1024;

/// What the connection and the handler share.
#[derive(Default)]
struct Slot {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
    /// All of the body was read off the connection; nothing follows what is here.
    ended: bool,
    failed: Option<BoxError>,
    /// Data bytes not yet read off the connection, when the body has a length.
    left: Option<u64>,
    /// The handler waits for a frame; the connection waits for room.
    reader: Option<Waker>,
    feeder: Option<Waker>,
    /// The handler dropped the body.
    dropped: bool,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

/// The handler's side: the body of a request `h1` serves.
pub(crate) struct RequestBody {
    slot: Arc<Mutex<Slot>>,
}

/// The connection's side.
pub(super) struct Feed {
    slot: Arc<Mutex<Slot>>,
    framing: Framing,
    /// Thrown away since the handler dropped the body.
    drained: u64,
    /// What the next read asks for room for.
    read_size: usize,
    /// The client closed the connection (or it failed) before the body's end.
    client_gone: bool,
}

/// A body framed by `framing`; `length`: its Content-Length.
pub(super) fn channel(framing: Framing, length: Option<u64>) -> (RequestBody, Feed) {
    let slot = Arc::new(Mutex::new(Slot {
        left: length,
        ..Slot::default()
    }));
    let body = RequestBody {
        slot: Arc::clone(&slot),
    };
    let feed = Feed {
        slot,
        framing,
        drained: 0,
        read_size: FIRST_READ,
        client_gone: false,
    };
    (body, feed)
}

impl Feed {
    /// Reads the body into the slot while the handler takes it. `Ready`: nothing more
    /// to do: all of it was read (see [`finished`](Self::finished)), it failed, or the
    /// handler dropped it and more than [`DRAIN`] was left.
    pub(super) fn poll<IO: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut IO,
        read: &mut BytesMut,
    ) -> Poll<()> {
        loop {
            let dropped = {
                let mut slot = lock(&self.slot);
                if slot.ended || slot.failed.is_some() {
                    return Poll::Ready(());
                }
                // All read (what the handler has not taken yet stays in the slot).
                if self.framing == Framing::Done {
                    slot.ended = true;
                    wake(&mut slot.reader);
                    return Poll::Ready(());
                }
                let full = slot.trailers.is_some()
                    || slot.data.as_ref().is_some_and(|d| d.len() >= MERGE_UNDER);
                if full && !slot.dropped {
                    slot.feeder = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                slot.dropped
            };
            if dropped && self.drained > DRAIN {
                return Poll::Ready(());
            }
            match self.framing.decode(read, Want::Any) {
                Ok(Decoded::Frame(frame)) => self.put(frame, dropped),
                // `framing` is done: the top of the loop says so.
                Ok(Decoded::End) => {}
                Ok(Decoded::More) => {
                    // Reads grow while they fill (a large upload in few of them).
                    match poll_fill(io, cx, read, &mut self.read_size) {
                        Poll::Ready(Ok(0)) => {
                            self.client_gone = true;
                            self.fail("the client closed the connection mid-body".into());
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => {
                            self.client_gone = true;
                            self.fail(e.into());
                        }
                        // Woken by the socket, or by the handler dropping the body
                        // (then nothing more is waited for: see `h1::serve`).
                        Poll::Pending => {
                            lock(&self.slot).feeder = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                    }
                }
                Err(e) => self.fail(e),
            }
        }
    }

    /// The client closed the connection before the body's end.
    pub(super) fn client_gone(&self) -> bool {
        self.client_gone
    }

    /// The handler dropped the body.
    pub(super) fn reader_gone(&self) -> bool {
        lock(&self.slot).dropped
    }

    /// All of the body was read off the connection: what follows in `read` is the
    /// next request's.
    pub(super) fn finished(&self) -> bool {
        self.framing == Framing::Done
    }

    fn put(&mut self, frame: Frame<Bytes>, dropped: bool) {
        let mut slot = lock(&self.slot);
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if !dropped {
                    slot.trailers = frame.into_trailers().ok();
                    wake(&mut slot.reader);
                }
                return;
            }
        };
        if let Some(left) = slot.left.as_mut() {
            *left = left.saturating_sub(data.len() as u64);
        }
        if dropped {
            self.drained += data.len() as u64;
            return;
        }
        slot.data = Some(match slot.data.take() {
            Some(queued) => {
                let mut merged = BytesMut::with_capacity(queued.len() + data.len());
                merged.extend_from_slice(&queued);
                merged.extend_from_slice(&data);
                merged.freeze()
            }
            None => data,
        });
        wake(&mut slot.reader);
    }

    fn fail(&mut self, error: BoxError) {
        let mut slot = lock(&self.slot);
        slot.failed = Some(error);
        wake(&mut slot.reader);
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut slot = lock(&self.slot);
        let frame = match slot.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => slot.trailers.take().map(Frame::trailers),
        };
        if let Some(frame) = frame {
            wake(&mut slot.feeder);
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = slot.failed.take() {
            slot.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if slot.ended {
            return Poll::Ready(None);
        }
        slot.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let slot = lock(&self.slot);
        slot.ended && slot.data.is_none() && slot.trailers.is_none() && slot.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let slot = lock(&self.slot);
        let queued = slot.data.as_ref().map_or(0, |d| d.len() as u64);
        match slot.left {
            Some(left) => SizeHint::with_exact(left + queued),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.dropped = true;
        slot.data = None;
        slot.trailers = None;
        wake(&mut slot.feeder);
    }
}
