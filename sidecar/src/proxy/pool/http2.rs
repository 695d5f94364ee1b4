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
//! server push refused.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ::h2::client::{Builder, ResponseFuture, SendRequest};
use ::h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::PoolError;
use crate::proxy::{Body, BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

/// A PING this long after the last one answered; a connection whose PONG takes
/// longer than the timeout is dead (a peer gone without a FIN) and is closed, its
/// streams failing instead of waiting forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// Set by the connection's task when the connection ends.
    closed: Arc<AtomicBool>,
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
    let closed = Arc::new(AtomicBool::new(false));
    let ping = connection.ping_pong().expect("taken once, here");
    let ended = Arc::clone(&closed);
    tokio::spawn(async move {
        let end = drive(connection, ping).await;
        ended.store(true, Ordering::Relaxed);
        if let Err(e) = end {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(Sender { send, closed })
}

/// Drives the connection until it ends, PINGing it every [`KEEP_ALIVE_INTERVAL`].
async fn drive<T>(
    connection: ::h2::client::Connection<T, Bytes>,
    mut ping: PingPong,
) -> Result<(), BoxError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = std::pin::pin!(connection);
    loop {
        tokio::select! {
            end = &mut connection => return Ok(end?),
            () = tokio::time::sleep(KEEP_ALIVE_INTERVAL) => {}
        }
        ping.send_ping(Ping::opaque())?;
        let pong = poll_fn(|cx| ping.poll_pong(cx));
        tokio::select! {
            end = &mut connection => return Ok(end?),
            pong = pong => { pong?; }
            () = tokio::time::sleep(KEEP_ALIVE_TIMEOUT) => {
                return Err(format!("no PONG within {KEEP_ALIVE_TIMEOUT:?}").into());
            }
        }
    }
}

impl Sender {
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
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
    pub(super) async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Body>, PoolError> {
        let (head, body) = request.into_parts();
        let end = body.is_end_stream();
        let (response, stream) = self
            .send
            .send_request(Request::from_parts(head, ()), end)
            .map_err(|e| PoolError::Exchange(e.into()))?;
        let mut waiting = Waiting {
            response: Some(response),
            cancel: None,
        };
        // A body failing once the pump has a task of its own says so here.
        let mut failed = None;
        if !end {
            let mut pump = Pump {
                body,
                stream,
                chunk: None,
                cancel: None,
            };
            // Most bodies are at hand whole (a unary gRPC message): sent from here,
            // without a task.
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut pump).poll(cx))).await {
                Poll::Ready(Ok(())) | Poll::Ready(Err(Pumped::Stream(_))) => {}
                Poll::Ready(Err(Pumped::Body(e))) => return Err(PoolError::RequestBody(e)),
                Poll::Pending => {
                    let (tx, rx) = oneshot::channel();
                    pump.cancel = Some(rx);
                    waiting.cancel = Some(tx);
                    let (tx, rx) = oneshot::channel();
                    failed = Some(rx);
                    tokio::spawn(pump.finish(tx));
                }
            }
        }
        let response = match poll_fn(|cx| waiting.poll_response(cx)).await {
            Ok(response) => response,
            // The stream was reset because the request's body failed.
            Err(_) if let Some(Ok(e)) = failed.as_mut().map(oneshot::Receiver::try_recv) => {
                return Err(PoolError::RequestBody(e));
            }
            Err(e) => return Err(PoolError::Exchange(e.into())),
        };
        let length = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        Ok(response.map(|stream| Body::received_h2(Received::new(stream, length))))
    }
}

/// A stream opened and not answered yet. Given up (a timeout, a client gone), it is
/// reset: dropping the response future resets a stream whose body has gone, and a
/// body still being pumped is told to stop (from then on, once the response is in,
/// the body goes on alongside it: a bidirectional stream).
///
/// The reset waits a millisecond. Written right behind the stream's HEADERS, both
/// arrive in one read, and the upstream's h2 counts a stream reset before it was
/// accepted: hyper's server closes the whole connection (GOAWAY ENHANCE_YOUR_CALM,
/// rapid reset) past 20 of them, failing every other request on it. A client
/// cutting a connection with many requests in flight — or this sidecar cutting an
/// abusive one — would do that to a pooled connection other clients share.
struct Waiting {
    response: Option<ResponseFuture>,
    cancel: Option<oneshot::Sender<()>>,
}

/// How long a reset waits (see [`Waiting`]).
const RESET_DELAY: Duration = Duration::from_millis(1);

impl Waiting {
    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<RecvStream>, ::h2::Error>> {
        let response = self
            .response
            .as_mut()
            .expect("polled after it was answered");
        let answer = ready!(Pin::new(response).poll(cx));
        self.response = None;
        self.cancel = None;
        Poll::Ready(answer)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        let cancel = self.cancel.take();
        let reset = async move {
            tokio::time::sleep(RESET_DELAY).await;
            if let Some(cancel) = cancel {
                let _ = cancel.send(());
            }
            drop(response);
        };
        // Outside a runtime (it is shutting down) the reset goes at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reset);
        }
    }
}

/// Why a request body stopped going out.
enum Pumped {
    /// The body itself failed (its client reset it, or went away): the stream is to
    /// be reset with CANCEL, and the request failed through no fault of the upstream.
    Body(BoxError),
    /// The stream ended under it (the upstream answered early and reset it, or the
    /// connection went): the response, or its error, says the rest.
    Stream(::h2::Error),
}

/// A request body going out on its stream, as hyper's `PipeToSendStream` does it.
struct Pump {
    body: Body,
    stream: SendStream<Bytes>,
    /// A data frame taken from the body and waiting for send capacity, and whether
    /// it ends the body.
    chunk: Option<(Bytes, bool)>,
    /// Fires when the request was given up before its response (see [`Waiting`]).
    cancel: Option<oneshot::Receiver<()>>,
}

impl Pump {
    /// The rest of the body, in a task of its own; a failure of the body goes to
    /// `failed` before the stream is reset.
    async fn finish(mut self, failed: oneshot::Sender<BoxError>) {
        match (&mut self).await {
            Ok(()) => {}
            Err(Pumped::Body(e)) => {
                tracing::debug!(error = %e, "request body failed");
                let _ = failed.send(e);
                // Not at once either (see `Waiting`).
                tokio::time::sleep(RESET_DELAY).await;
                self.stream.send_reset(Reason::CANCEL);
            }
            Err(Pumped::Stream(e)) => tracing::debug!(error = %e, "request body cut"),
        }
    }
}

impl Future for Pump {
    type Output = Result<(), Pumped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.get_mut();
        if let Some(cancel) = &mut me.cancel {
            match Pin::new(cancel).poll(cx) {
                Poll::Ready(Ok(())) => {
                    me.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(_)) => me.cancel = None, // the response came
                Poll::Pending => {}
            }
        }
        loop {
            // Registered while waiting for the body or for capacity, so a reset
            // wakes the pump.
            if let Poll::Ready(reset) = me.stream.poll_reset(cx) {
                return Poll::Ready(Err(Pumped::Stream(reset.map_or_else(|e| e, Into::into))));
            }
            if me.chunk.is_some() {
                while me.stream.capacity() == 0 {
                    match ready!(me.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(Pumped::Stream(e))),
                        None => {
                            return Poll::Ready(Err(Pumped::Stream(Reason::STREAM_CLOSED.into())));
                        }
                    }
                }
                let (data, end) = me.chunk.take().expect("checked above");
                me.stream.send_data(data, end).map_err(Pumped::Stream)?;
                if end {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The next frame is taken before any capacity is asked for: capacity
            // claimed for a body with nothing to send would pin the connection's
            // window (hyper#4003).
            match ready!(Pin::new(&mut me.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = me.body.is_end_stream();
                        if data.is_empty() {
                            me.stream.send_data(data, end).map_err(Pumped::Stream)?;
                            if end {
                                return Poll::Ready(Ok(()));
                            }
                            continue;
                        }
                        // One byte claimed, not the chunk: h2 raises the claim to
                        // what is buffered when it is sent.
                        me.stream.reserve_capacity(1);
                        me.chunk = Some((data, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            me.stream.reserve_capacity(0);
                            me.stream.send_trailers(trailers).map_err(Pumped::Stream)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                // The caller resets the stream (see `Waiting`).
                Some(Err(e)) => return Poll::Ready(Err(Pumped::Body(e))),
                None => {
                    me.stream
                        .send_data(Bytes::new(), true)
                        .map_err(Pumped::Stream)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// A response body as h2 receives it, its window given back as it is read.
pub(crate) struct Received {
    stream: RecvStream,
    data_done: bool,
    /// What `Content-Length` says is still to come (`None`: not given).
    left: Option<u64>,
}

impl Received {
    /// `length`: the response's `Content-Length` (h2 checked it against the data).
    fn new(stream: RecvStream, length: Option<u64>) -> Self {
        Self {
            // An unframed body whose stream has already ended is empty.
            left: length.or_else(|| stream.is_end_stream().then_some(0)),
            stream,
            data_done: false,
        }
    }
}

/// RFC 9113 §8.1: a RST_STREAM(NO_ERROR) after a complete response head asks the
/// client to stop sending; the response ends there, it has not failed.
fn early_end(e: &::h2::Error) -> bool {
    e.reason() == Some(Reason::NO_ERROR)
}

impl HttpBody for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = self.get_mut();
        if !me.data_done {
            match ready!(me.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.stream.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut me.left {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) if early_end(&e) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => me.data_done = true,
            }
        }
        match ready!(me.stream.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if early_end(&e) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests;
