//! HTTP/2 on `h2` itself, what its client side (`pool::http2`, to upstreams) and its
//! server side (`server::h2`, from clients) share: a body sent within the peer's
//! windows (`Pump`), a body received with its window given back as it is read
//! (`Received`), and keep-alive PINGs (`KeepAlive`). A request body going up and a
//! response body coming back down are the same thing to h2, so each is written once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ::h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::{Body, BoxError};

/// Why a body stopped going out.
pub(crate) enum Pumped {
    /// The body itself failed (its sender reset it, or went away): the stream is to
    /// be reset, through no fault of the peer.
    Body(BoxError),
    /// The stream ended under it (the peer reset it, or the connection went): the
    /// other half of the exchange says the rest.
    Stream(::h2::Error),
}

/// A body going out on its stream, as hyper's `PipeToSendStream` does it: a frame
/// taken from the body only when it can be sent, the window claimed a byte at a time
/// (hyper#4003), trailers last.
pub(crate) struct Pump {
    body: Body,
    stream: SendStream<Bytes>,
    /// A data frame taken from the body and waiting for send capacity, and whether
    /// it ends the body.
    chunk: Option<(Bytes, bool)>,
    /// Fires when the exchange was given up (the client's request, unanswered).
    cancel: Option<oneshot::Receiver<()>>,
}

impl Pump {
    pub(crate) fn new(body: Body, stream: SendStream<Bytes>) -> Self {
        Self {
            body,
            stream,
            chunk: None,
            cancel: None,
        }
    }

    /// Stops the pump, resetting the stream with CANCEL, once `cancel` fires; a
    /// dropped sender only ends the watch.
    pub(crate) fn cancel_on(&mut self, cancel: oneshot::Receiver<()>) {
        self.cancel = Some(cancel);
    }

    /// Waits until the sender given to [`Self::cancel_on`] fires or is dropped (at
    /// once without one).
    pub(crate) async fn cancelled(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.await;
        }
    }

    pub(crate) fn reset(&mut self, reason: Reason) {
        self.stream.send_reset(reason);
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
                Poll::Ready(Err(_)) => me.cancel = None,
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
                // The caller resets the stream, with the reason it chooses.
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

/// A body as h2 receives it (a client's request, an upstream's response), its window
/// given back as it is read.
pub(crate) struct Received {
    stream: RecvStream,
    data_done: bool,
    /// What `Content-Length` says is still to come (`None`: not given).
    left: Option<u64>,
}

impl Received {
    /// `length`: the message's `Content-Length` (h2 checks it against the data).
    pub(crate) fn new(stream: RecvStream, length: Option<u64>) -> Self {
        Self {
            // An unframed body whose stream has already ended is empty.
            left: length.or_else(|| stream.is_end_stream().then_some(0)),
            stream,
            data_done: false,
        }
    }
}

/// The `Content-Length` of a message h2 received, if it has a valid one.
pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
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

/// A PING this long after the last one was answered; a peer whose PONG takes longer
/// than the timeout is gone (without a FIN), and its connection is closed, its
/// streams failing instead of waiting forever. The same on both sides of the proxy.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's keep-alive PINGs, polled beside the connection.
pub(crate) struct KeepAlive {
    ping: PingPong,
    /// The next PING's time, or the PONG's deadline while one is awaited.
    timer: Pin<Box<Sleep>>,
    awaiting: bool,
}

impl KeepAlive {
    pub(crate) fn new(ping: PingPong) -> Self {
        Self {
            ping,
            timer: Box::pin(tokio::time::sleep(KEEP_ALIVE_INTERVAL)),
            awaiting: false,
        }
    }

    /// `Ready(error)` once the connection is to be closed: its PONG is overdue, or
    /// the PING could not be sent. Pending otherwise, with the next wake-up set.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        loop {
            if self.awaiting {
                match self.ping.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting = false;
                        let next = Instant::now() + KEEP_ALIVE_INTERVAL;
                        self.timer.as_mut().reset(next);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                    Poll::Pending => {}
                }
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.awaiting {
                return Poll::Ready(format!("no PONG within {KEEP_ALIVE_TIMEOUT:?}").into());
            }
            if let Err(e) = self.ping.send_ping(Ping::opaque()) {
                return Poll::Ready(e.into());
            }
            self.awaiting = true;
            let deadline = Instant::now() + KEEP_ALIVE_TIMEOUT;
            self.timer.as_mut().reset(deadline);
        }
    }
}
