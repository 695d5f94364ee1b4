//! HTTP/2 to upstreams on `h2` itself, not hyper's client.
//!
//! hyper's client hands each request to its connection's task through a channel, and
//! that task spawns one more task per request to await the response and hand it back
//! through a oneshot: three tasks and two hand-offs per request, 10 % of an HTTP/2
//! hop's instructions (bench/README.md). Here the request's own task opens the stream
//! and awaits the response; the connection's task only moves frames. What hyper's
//! client did on the way is done here as it did it: the request body pumped within
//! the peer's windows (in the request's task when it can finish at once, in a task
//! of its own when it cannot), the response's window given back as it is read, a
//! RST_STREAM(NO_ERROR) after the response read as its end, keep-alive PINGs, and
//! server push refused. What it did not: hold back resets an app could take for an
//! attack ([`unaccepted`]).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use ::h2::client::{Builder, ResponseFuture, SendRequest};
use ::h2::{PingPong, Reason, RecvStream};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use self::unaccepted::{HOLD_LIMIT, Unaccepted};
use super::{Failure, PoolError};
use crate::proxy::streams::{KeepAlive, Pump, Pumped, Received, content_length};
use crate::proxy::{Body, BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};
/// hyper's client defaults, kept: 1 MiB of a request body buffered per stream past
/// the peer's window, streams opened before the peer's SETTINGS say how many it
/// takes, and locally reset streams per connection before it is given up. (Not its
/// 16 KiB for a response's header list: an app may answer with what a client may
/// ask with, `H2_MAX_HEADER_LIST`, as it may over HTTP/1.1.)
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_RESETS: usize = 1024;

/// One HTTP/2 connection; clones share it. It closes once every clone, and every
/// stream opened on it, is gone.
#[derive(Clone)]
pub(crate) struct Sender {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
}

/// What the clones of a [`Sender`] and its streams share.
#[derive(Default)]
struct Shared {
    /// Set by the connection's task when the connection ends.
    closed: AtomicBool,
    unaccepted: Unaccepted,
}

/// The HTTP/2 handshake over `io`; the connection is then driven by a task of its own.
pub(super) async fn handshake<T>(io: T, address: &str) -> Result<Sender, PoolError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = Builder::new()
        .enable_push(false)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(crate::server::H2_MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_RESETS))
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| PoolError::Connect(format!("h2 handshake with {address}: {e}")))?;
    let shared = Arc::new(Shared::default());
    let ping = connection.ping_pong().expect("taken once, here");
    let ended = Arc::clone(&shared);
    tokio::spawn(async move {
        let end = drive(connection, ping).await;
        ended.closed.store(true, Ordering::Relaxed);
        if let Err(e) = end {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(Sender { send, shared })
}

/// Drives the connection until it ends, with its keep-alive PINGs.
async fn drive<T>(
    connection: ::h2::client::Connection<T, Bytes>,
    ping: PingPong,
) -> Result<(), BoxError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut keep_alive = KeepAlive::new(ping);
    let mut connection = std::pin::pin!(connection);
    poll_fn(|cx| {
        if let Poll::Ready(e) = keep_alive.poll(cx) {
            return Poll::Ready(Err(e));
        }
        connection.as_mut().poll(cx).map_err(Into::into)
    })
    .await
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// Waits until a stream may be opened; an error: the connection is gone, and
    /// nothing was sent.
    pub(super) async fn ready(&mut self) -> Result<(), PoolError> {
        poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(|e| PoolError::Exchange(e.into()))
    }

    /// Opens a stream for `request` (its URI absolute: h2 takes `:scheme` and
    /// `:authority` from it) and awaits the response head. Call [`Self::ready`] first.
    /// With `hand_back`, a body-less request whose stream fails comes back with the
    /// failure: a copy, since h2 takes the head (HTTP/1.1 hands back the request
    /// itself, at no cost).
    pub(super) async fn send(
        &mut self,
        request: Box<Request<Body>>,
        hand_back: bool,
    ) -> Result<Response<Body>, Failure> {
        let (head, body) = request.into_parts();
        let end = body.is_end_stream();
        let copy = (hand_back && end).then(|| crate::proxy::copy_head(&head));
        self.exchange(head, body, end)
            .await
            .map_err(|error| Failure {
                error,
                request: copy,
            })
    }

    async fn exchange(
        &mut self,
        head: http::request::Parts,
        body: Body,
        end: bool,
    ) -> Result<Response<Body>, PoolError> {
        let (response, stream) = self
            .send
            .send_request(Request::from_parts(head, ()), end)
            .map_err(|e| PoolError::Exchange(e.into()))?;
        let mut waiting = Waiting {
            response: Some(response),
            cancel: None,
            shared: &self.shared,
        };
        // A body failing once the pump has a task of its own says so here; the
        // stream is then given up as any other ([`Waiting`]).
        let mut failed = None;
        if !end {
            let mut pump = Pump::new(body, stream);
            // Most bodies are at hand whole (a unary gRPC message): sent from here,
            // without a task.
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut pump).poll(cx))).await {
                Poll::Ready(Ok(())) | Poll::Ready(Err(Pumped::Stream(_))) => {}
                Poll::Ready(Err(Pumped::Body(e))) => return Err(PoolError::RequestBody(e)),
                Poll::Pending => {
                    let (tx, rx) = oneshot::channel();
                    pump.cancel_on(rx);
                    waiting.cancel = Some(tx);
                    let (tx, rx) = oneshot::channel();
                    failed = Some(rx);
                    tokio::spawn(finish(pump, tx));
                }
            }
        }
        let response = poll_fn(|cx| {
            if let Some(rx) = &mut failed {
                match Pin::new(rx).poll(cx) {
                    Poll::Ready(Ok(e)) => return Poll::Ready(Err(PoolError::RequestBody(e))),
                    Poll::Ready(Err(_)) => failed = None,
                    Poll::Pending => {}
                }
            }
            waiting
                .poll_response(cx)
                .map_err(|e| PoolError::Exchange(e.into()))
        })
        .await?;
        let length = content_length(response.headers());
        Ok(response.map(|stream| Body::received_h2(Received::new(stream, length))))
    }
}

/// A stream opened and not answered yet. Given up (a timeout, a client gone, its
/// request body failed), it is reset: dropping the response future resets a stream
/// whose body has gone, and a body still being pumped is told to stop through
/// `cancel` (a dropped `cancel` says the answer is in: from then on the body goes on
/// alongside it, a bidirectional stream). Unless the app may not have accepted it
/// yet and too many such resets are out: then it is held until the app answers it or
/// a later stream ([`unaccepted`]).
struct Waiting<'a> {
    response: Option<ResponseFuture>,
    cancel: Option<oneshot::Sender<()>>,
    shared: &'a Arc<Shared>,
}

impl Waiting<'_> {
    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<RecvStream>, ::h2::Error>> {
        let response = self
            .response
            .as_mut()
            .expect("polled after it was answered");
        let answer = ready!(Pin::new(&mut *response).poll(cx));
        if self.shared.unaccepted.watching() && answer.is_ok() {
            self.shared.unaccepted.answered(response.stream_id().into());
        }
        self.response = None;
        self.cancel = None;
        Poll::Ready(answer)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        let cancel = self.cancel.take();
        let id = response.stream_id().into();
        // Outside a runtime (it is shutting down) the reset goes at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.unaccepted.may_reset(id) {
            if let Some(cancel) = cancel {
                let _ = cancel.send(());
            }
            return;
        }
        let shared = Arc::clone(self.shared);
        runtime.spawn(async move {
            let unaccepted = &shared.unaccepted;
            let held = async {
                tokio::select! {
                    answer = response => if answer.is_ok() {
                        unaccepted.answered(id);
                    },
                    () = unaccepted.accepted(id) => {}
                }
            };
            let _ = tokio::time::timeout(HOLD_LIMIT, held).await;
            unaccepted.release();
            if let Some(cancel) = cancel {
                let _ = cancel.send(());
            }
        });
    }
}

/// The rest of a request body, in a task of its own. A failure of the body goes to
/// `failed`, and the stream is reset once its [`Waiting`] lets it: given up (at once,
/// or after a hold), or answered.
async fn finish(mut pump: Pump, failed: oneshot::Sender<BoxError>) {
    match (&mut pump).await {
        Ok(()) => {}
        Err(Pumped::Body(e)) => {
            tracing::debug!(error = %e, "request body failed");
            let _ = failed.send(e);
            pump.cancelled().await;
            pump.reset(Reason::CANCEL);
        }
        Err(Pumped::Stream(e)) => tracing::debug!(error = %e, "request body cut"),
    }
}

#[cfg(test)]
mod tests;
mod unaccepted;
