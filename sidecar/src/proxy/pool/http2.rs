//! HTTP/2 to upstreams on graylane-http2's client end (sans I/O), driven here.
//!
//! One task per connection (`drive.rs`) reads the socket into the connection, hands
//! each response head to the request waiting for it and its DATA to the response's
//! body ([`Incoming`]: the window goes back to the upstream as the body is read),
//! pumps the request bodies within the upstream's windows, and writes. A request's
//! own task opens its stream and waits for its head through the connection's lock:
//! no channel, task or oneshot per request (hyper's client took three tasks and two
//! hand-offs, 10 % of an HTTP/2 hop: bench/README.md), and a request's head, its
//! body at hand and those of the requests beside it go out in one write.
//!
//! What hyper's client did on the way is done here as it did it: keep-alive PINGs,
//! push refused, a response the upstream ends early with RST_STREAM(NO_ERROR) is
//! whole, a request given up before its answer is reset (CANCEL). What it did not:
//! hold back resets an app could take for an attack ([`unaccepted`]).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use graylane_http2::StreamMap;
use graylane_http2::client::{Config, Connection, ConnectionError, Unsendable};
use graylane_http2::frame::Reason;
use http::{Request, Response, response};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use self::unaccepted::{HOLD_LIMIT, Unaccepted};
use super::{Failure, PoolError};
use crate::proxy::streams::{Incoming, Reset, Sending, Shared as BodyShared};
use crate::proxy::{Body, BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

mod drive;
#[cfg(test)]
mod tests;
mod unaccepted;

/// One HTTP/2 connection; clones share it. It closes once every clone, and every
/// stream opened on it, is gone.
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

/// What the clones of a [`Sender`], its streams and its task share.
struct Shared {
    state: Mutex<State>,
    /// The connection's task: woken when there is something to write, a body took
    /// bytes, a request gave up, or the last handle went.
    task: Arc<AtomicWaker>,
    unaccepted: Unaccepted,
    /// Set once no new stream may be opened: the connection ended or is closing.
    closed: AtomicBool,
    /// Live [`Sender`]s.
    handles: AtomicUsize,
}

struct State {
    conn: Connection,
    streams: StreamMap<Slot>,
    /// Requests waiting for a stream (as many open as the upstream allows).
    queued: Vec<Waker>,
    /// Why the connection ended: every stream still waiting fails with it.
    ended: Option<Ended>,
    /// Where small DATA is staged for the response bodies ([`graylane_http2::stage`]).
    staging: BytesMut,
}

/// One stream's side in the connection's state.
#[derive(Default)]
struct Slot {
    /// The response's head, its body (`None`: it has none), until the request takes
    /// them.
    head: Option<(response::Parts, Option<Arc<BodyShared>>)>,
    /// Why the stream failed before its head (or its request body did), until the
    /// request takes it.
    failed: Option<PoolError>,
    /// The request's task, waiting for one of the two.
    waiter: Option<Waker>,
    /// The response body, while DATA may come for it.
    body: Option<Arc<BodyShared>>,
    /// The request body, while it goes out.
    sending: Option<Sending>,
    /// Nobody waits for the answer any more (taken, or given up): the slot goes once
    /// the stream has ended.
    taken: bool,
    /// The stream has been reset or held already, by a request giving up or by the
    /// connection's task when its request body failed: the other has nothing left
    /// to decide.
    settled: bool,
}

/// How a connection ended.
#[derive(Clone)]
enum Ended {
    Io(std::io::ErrorKind, String),
    /// The upstream broke HTTP/2 (the GOAWAY saying so went out).
    Protocol(ConnectionError),
}

impl Ended {
    fn error(&self) -> BoxError {
        match self {
            Ended::Io(kind, text) => Box::new(std::io::Error::new(*kind, text.clone())),
            Ended::Protocol(e) => Box::new(e.clone()),
        }
    }
}

/// The settings this end asks of upstreams: the windows every HTTP/2 hop of the
/// sidecar uses, and a header list as large as a client may send the sidecar.
fn config() -> Config {
    Config {
        max_concurrent_streams: 0,
        initial_window_size: H2_STREAM_WINDOW,
        connection_window_size: H2_CONNECTION_WINDOW,
        max_frame_size: 16 * 1024,
        max_header_list_size: crate::server::H2_MAX_HEADER_LIST,
        enable_connect_protocol: false,
    }
}

/// An HTTP/2 connection over `io` (its preface and SETTINGS are the first bytes
/// written), driven by a task of its own. A request may go at once.
pub(super) fn handshake<T>(io: T) -> Sender
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            conn: Connection::new(config()),
            streams: StreamMap::default(),
            queued: Vec::new(),
            ended: None,
            staging: BytesMut::new(),
        }),
        task: Arc::default(),
        unaccepted: Unaccepted::default(),
        closed: AtomicBool::new(false),
        handles: AtomicUsize::new(1),
    });
    tokio::spawn(drive::drive(io, Arc::clone(&shared)));
    Sender { shared }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain data behind: carry on with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Ready once a stream may be opened; an error: the connection is gone or
    /// closing, and nothing was sent.
    fn poll_open(&mut self, cx: &Context<'_>) -> Poll<Result<(), PoolError>> {
        if let Some(ended) = &self.ended {
            return Poll::Ready(Err(PoolError::Exchange(ended.error())));
        }
        match self.conn.can_send() {
            Ok(()) => Poll::Ready(Ok(())),
            Err(Unsendable::AtLimit) => {
                self.queued.push(cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(PoolError::Exchange(Box::new(e)))),
        }
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.task.wake();
        }
    }
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Waits until a stream may be opened; an error: the connection is gone, and
    /// nothing was sent.
    pub(super) async fn ready(&mut self) -> Result<(), PoolError> {
        poll_fn(|cx| self.shared.lock().poll_open(cx)).await
    }

    /// Opens a stream for `request` (its URI absolute: `:scheme` and `:authority`
    /// come from it) and awaits the response head. With `hand_back`, a body-less
    /// request whose stream fails comes back with the failure, its head as it was.
    pub(super) async fn send(
        &mut self,
        request: Box<Request<Body>>,
        hand_back: bool,
    ) -> Result<Response<Body>, Failure> {
        let (head, body) = request.into_parts();
        let end = body.is_end_stream();
        let mut body = Some(body);
        // Opened under the lock, once the connection has room for it.
        let opened = poll_fn(|cx| {
            let mut state = self.shared.lock();
            ready!(state.poll_open(cx))?;
            let stream = state.conn.send_request(&head, end).map_err(|e| match e {
                Unsendable::Malformed(_) => PoolError::Unsendable(Box::new(e)),
                _ => PoolError::Exchange(Box::new(e)),
            })?;
            let sending = body.take().filter(|_| !end).map(Sending::new);
            state.streams.insert(
                stream,
                Slot {
                    sending,
                    ..Slot::default()
                },
            );
            Poll::Ready(Ok(stream))
        })
        .await;
        let stream = match opened {
            Ok(stream) => stream,
            Err(error) => {
                let body = body.unwrap_or(Body::Empty);
                return Err(Failure {
                    error,
                    request: Some(Box::new(Request::from_parts(head, body))),
                });
            }
        };
        self.shared.task.wake();
        let mut waiting = Waiting {
            shared: &self.shared,
            stream,
            done: false,
        };
        match poll_fn(|cx| waiting.poll(cx)).await {
            Ok(response) => {
                graylane_http2::recycle(head.headers);
                Ok(response)
            }
            Err(error) => Err(Failure {
                error,
                request: (hand_back && end)
                    .then(|| Box::new(Request::from_parts(head, Body::Empty))),
            }),
        }
    }
}

/// A stream opened and not answered yet. Given up (a timeout, a client gone), it
/// is reset, unless the app may not have accepted it yet and too many such resets
/// are out: then it is held until the app answers it or a later stream
/// ([`unaccepted`]).
struct Waiting<'a> {
    shared: &'a Arc<Shared>,
    stream: u32,
    done: bool,
}

impl Waiting<'_> {
    fn poll(&mut self, cx: &Context<'_>) -> Poll<Result<Response<Body>, PoolError>> {
        let mut state = self.shared.lock();
        let Some(slot) = state.streams.get_mut(&self.stream) else {
            self.done = true;
            let ended = state.ended.as_ref().map(Ended::error);
            let error = ended.unwrap_or_else(|| Box::new(Reset(Reason::CANCEL)));
            return Poll::Ready(Err(PoolError::Exchange(error)));
        };
        let answer = if let Some(error) = slot.failed.take() {
            Err(error)
        } else if let Some((head, body)) = slot.head.take() {
            let body = body.map_or(Body::Empty, |b| Body::received_h2(Incoming(b)));
            Ok(Response::from_parts(head, body))
        } else {
            slot.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        };
        slot.taken = true;
        self.done = true;
        state.forget_if_ended(self.stream);
        Poll::Ready(answer)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            give_up(self.shared, self.stream);
        }
    }
}

/// Nobody waits for `stream`'s answer any more: reset it, or hold it (see
/// [`Waiting`]). Its request body goes on while it is held: the app that reads it
/// late is waiting for the rest.
fn give_up(shared: &Arc<Shared>, stream: u32) {
    let mut state = shared.lock();
    let Some(slot) = state.streams.get_mut(&stream) else {
        return;
    };
    slot.taken = true;
    slot.waiter = None;
    if slot.settled {
        return;
    }
    slot.settled = true;
    let answered = slot.head.take().is_some();
    // Outside a runtime (it is shutting down) the reset goes at once.
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    if answered || !in_runtime || shared.unaccepted.may_reset(stream) {
        state.reset(stream, Reason::CANCEL);
    } else {
        hold(Arc::clone(shared), stream);
    }
    drop(state);
    shared.task.wake();
}

/// Holds `stream` open until the app answers it or a later stream, or
/// [`HOLD_LIMIT`] passes; then resets it. Its answer, if it comes, is dropped.
fn hold(shared: Arc<Shared>, stream: u32) {
    tokio::spawn(async move {
        let unaccepted = &shared.unaccepted;
        let held = async {
            tokio::select! {
                answered = answered(&shared, stream) => if answered {
                    unaccepted.answered(stream);
                },
                () = unaccepted.accepted(stream) => {}
            }
        };
        let _ = tokio::time::timeout(HOLD_LIMIT, held).await;
        unaccepted.release();
        shared.lock().reset(stream, Reason::CANCEL);
        shared.task.wake();
    });
}

/// Resolves when a held `stream` is answered (`true`) or ends without an answer.
/// (Its request body's failure, waiting in `failed` for a request that may be gone,
/// does not end it: that is what it is held through.)
async fn answered(shared: &Shared, stream: u32) -> bool {
    poll_fn(|cx| {
        let mut state = shared.lock();
        let open = state.conn.is_open(stream);
        match state.streams.get_mut(&stream) {
            Some(slot) if slot.body.is_some() || slot.head.is_some() => Poll::Ready(true),
            Some(slot) if open => {
                slot.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(false),
        }
    })
    .await
}

impl State {
    /// Resets `stream` if it is still open, failing what of it is still under way,
    /// and forgets it once nobody waits for it (a request body's failure is yet to be
    /// taken).
    fn reset(&mut self, stream: u32, reason: Reason) {
        if self.conn.is_open(stream) {
            self.conn.reset(stream, reason);
        }
        let Some(slot) = self.streams.get_mut(&stream) else {
            return;
        };
        slot.sending = None;
        if let Some(body) = slot.body.take() {
            body.reset(reason);
        }
        self.forget_if_ended(stream);
    }

    /// Forgets `stream` once nobody waits for it and the connection is done with it.
    fn forget_if_ended(&mut self, stream: u32) {
        let gone = self.streams.get(&stream).is_some_and(|s| s.taken) && !self.conn.is_open(stream);
        if gone {
            self.streams.remove(&stream);
        }
    }
}
