//! HTTP/2 from clients on `h2` itself, not hyper's server.
//!
//! hyper's server spawns a task for every stream (a 128-byte-aligned task cell, a trip
//! through the scheduler) and wraps each request body in a type that locks a mutex per
//! DATA frame for its keep-alive bookkeeping. Here, on a current-thread runtime (one
//! worker, `--concurrency 1`), a connection's streams are futures of the connection's
//! own task, polled only when woken (`FuturesUnordered`), as Envoy keeps a
//! connection's streams on the worker that owns it. With several workers each stream
//! still gets a task of its own, so one client's connection is not held to one core.
//!
//! What hyper's server did on the way is done here as it did it: a client's reset
//! drops the handler's future (the upstream request is cancelled with it), the
//! response's connection-specific headers are dropped (h2 refuses to send them), a
//! `Date` is added where the response has none, `Content-Length` is set from an exact
//! body size, a `CONNECT` gets its stream as the tunnel once answered 2xx, and a
//! PING every 30 s closes a connection whose client is gone.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ::h2::server::{Builder, Connection, Handshake, SendResponse};
use ::h2::{Reason, RecvStream};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, Stream as _};
use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::oneshot;

use super::{H2_MAX_HEADER_LIST, MAX_CONCURRENT_STREAMS};
use crate::proxy::streams::{KeepAlive, Pump, Pumped, Received, content_length};
use crate::proxy::upgrade::H2Tunnel;
use crate::proxy::{
    Body, BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, Message, strip_hop_by_hop,
};

mod tunnel;

/// hyper's server defaults, kept: 400 KiB of a response body buffered per stream past
/// the client's window, and locally reset streams per connection before it is given
/// up. h2's own limit on streams reset before they are accepted (20) stays as it is.
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_LOCAL_RESETS: usize = 1024;

/// The HTTP/2 settings of a listener, shared by its connections.
pub(super) fn builder() -> Builder {
    let mut builder = Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_RESETS));
    builder
}

/// One client's HTTP/2 connection: every request handed to `serve`, its answer sent
/// back. Ends when the connection does; dropped, it drops the streams it holds.
pub(super) struct Serving<T, S, F> {
    state: State<T>,
    serve: S,
    /// The streams this task runs (`inline`), while there are any: an empty
    /// `FuturesUnordered` still holds a node the size of a stream's future (~1.5 KiB),
    /// which an idle connection would keep for as long as it is open.
    streams: Option<FuturesUnordered<Stream<F>>>,
    inline: bool,
    /// A graceful close asked for before the handshake was done.
    close_pending: bool,
}

enum State<T> {
    Handshaking(Handshake<T, Bytes>),
    Serving {
        connection: Connection<T, Bytes>,
        keep_alive: KeepAlive,
    },
}

impl<T, S, F, E> Serving<T, S, F>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F + Unpin,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Display,
{
    /// Serves `io` (its first bytes the client's preface) with `serve`.
    pub(super) fn new(builder: &Builder, io: T, serve: S) -> Self {
        let inline = matches!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        Self {
            state: State::Handshaking(builder.handshake(io)),
            serve,
            streams: None,
            inline,
            close_pending: false,
        }
    }

    /// A GOAWAY: the streams open go on to their end, no new one is taken.
    pub(super) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.close_pending = true,
            State::Serving { connection, .. } => connection.graceful_shutdown(),
        }
    }
}

/// A stream for a request h2 has accepted, run in this task (`inline`) or in one of
/// its own.
fn start<S, F, E>(
    serve: &mut S,
    streams: &mut Option<FuturesUnordered<Stream<F>>>,
    inline: bool,
    request: Request<RecvStream>,
    mut reply: SendResponse<Bytes>,
) where
    S: FnMut(Request<Body>) -> F,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Display,
{
    let (mut head, recv) = request.into_parts();
    let length = content_length(&head.headers);
    let answers_head = head.method == Method::HEAD;
    let (body, connect) = if head.method == Method::CONNECT {
        // The stream is the tunnel: a CONNECT carries no body of its own.
        if length.is_some_and(|n| n != 0) {
            tracing::debug!("h2 CONNECT with a body: reset");
            reply.send_reset(Reason::PROTOCOL_ERROR);
            return;
        }
        let (tunnel, opened) = H2Tunnel::new();
        head.extensions.insert(tunnel);
        (Body::Empty, Some((recv, opened)))
    } else if recv.is_end_stream() {
        (Body::Empty, None)
    } else {
        (Body::received_h2(Received::new(recv, length)), None)
    };
    let stream = Stream::Answering {
        answer: serve(Request::from_parts(head, body)),
        reply,
        connect,
        answers_head,
    };
    if inline {
        streams
            .get_or_insert_with(FuturesUnordered::new)
            .push(stream);
    } else {
        tokio::spawn(stream);
    }
}

impl<T, S, F, E> Future for Serving<T, S, F>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F + Unpin,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Display,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.get_mut();
        if let State::Handshaking(handshake) = &mut me.state {
            let mut connection = ready!(Pin::new(handshake).poll(cx))?;
            let ping = connection.ping_pong().expect("taken once, here");
            if me.close_pending {
                connection.graceful_shutdown();
            }
            me.state = State::Serving {
                connection,
                keep_alive: KeepAlive::new(ping),
            };
        }
        let State::Serving {
            connection,
            keep_alive,
        } = &mut me.state
        else {
            unreachable!("set above")
        };
        if let Poll::Ready(e) = keep_alive.poll(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            // The streams first: what they write goes out in the connection's poll
            // right after, without another wake-up of this task.
            if let Some(streams) = &mut me.streams {
                while let Poll::Ready(Some(())) = Pin::new(&mut *streams).poll_next(cx) {}
                if streams.is_empty() {
                    me.streams = None;
                }
            }
            let accepted = match connection.poll_accept(cx) {
                Poll::Ready(Some(Ok(accepted))) => accepted,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                // The connection is done: its streams have ended or cannot go on.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            let (request, reply) = accepted;
            // Fields, not `me`: `connection` still borrows `me.state`.
            start(&mut me.serve, &mut me.streams, me.inline, request, reply);
        }
    }
}

pin_project_lite::pin_project! {
    /// One request, from the handler's future to the last frame of its answer.
    #[project = StreamProj]
    enum Stream<F> {
        Answering {
            #[pin]
            answer: F,
            reply: SendResponse<Bytes>,
            // A CONNECT's stream, and where its tunnel goes once answered 2xx.
            connect: Option<(RecvStream, oneshot::Sender<DuplexStream>)>,
            // The request was a HEAD: its answer ends with its head.
            answers_head: bool,
        },
        Sending { pump: Pump },
        Done,
    }
}

impl<F, E> Future for Stream<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Display,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let next = match self.as_mut().project() {
                StreamProj::Answering {
                    answer,
                    reply,
                    connect,
                    answers_head,
                } => match answer.poll(cx) {
                    Poll::Ready(Ok(response)) => {
                        answered(reply, connect.take(), *answers_head, response)
                    }
                    // Not answered yet: a reset from the client ends it here, and
                    // dropping the handler's future cancels what it was doing.
                    Poll::Pending => {
                        let Poll::Ready(reset) = reply.poll_reset(cx) else {
                            return Poll::Pending;
                        };
                        tracing::debug!(reason = ?reset, "client reset the stream");
                        Stream::Done
                    }
                    // Nothing was processed: the client may try again elsewhere.
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "request refused");
                        reply.send_reset(Reason::REFUSED_STREAM);
                        Stream::Done
                    }
                },
                StreamProj::Sending { pump } => {
                    match ready!(Pin::new(&mut *pump).poll(cx)) {
                        Ok(()) => {}
                        Err(Pumped::Body(e)) => {
                            tracing::debug!(error = %e, "response body failed");
                            pump.reset(reset_reason(&*e));
                        }
                        Err(Pumped::Stream(e)) => tracing::debug!(error = %e, "response cut"),
                    }
                    Stream::Done
                }
                StreamProj::Done => return Poll::Ready(()),
            };
            self.set(next);
        }
    }
}

/// Sends the head of `response`, and says what is left: its body, or nothing. The
/// answer to a HEAD is its head alone (RFC 9113 §8.1.1), whatever body it was made
/// with: a client reads DATA on it as a protocol error. hyper's HTTP/1.1 server drops
/// such a body the same way.
fn answered<F>(
    reply: &mut SendResponse<Bytes>,
    connect: Option<(RecvStream, oneshot::Sender<DuplexStream>)>,
    answers_head: bool,
    response: Response<Body>,
) -> Stream<F> {
    let (mut head, body) = response.into_parts();
    // h2 refuses to send connection-specific fields; a response the sidecar made
    // itself may carry `Connection: close`.
    strip_hop_by_hop(&mut head.headers, Message::Response, false);
    if let header::Entry::Vacant(date) = head.headers.entry(header::DATE) {
        date.insert(super::date());
    }
    if let Some((recv, opened)) = connect
        && head.status.is_success()
    {
        head.headers.remove(header::CONTENT_LENGTH);
        match reply.send_response(Response::from_parts(head, ()), false) {
            Ok(send) => tunnel::open(opened, recv, send),
            Err(e) => tracing::debug!(error = %e, "CONNECT answer not sent"),
        }
        return Stream::Done;
    }
    let empty = body.is_end_stream();
    // For a HEAD too: the length the body would have had, as a GET would see it.
    if !empty && let Some(length) = body.size_hint().exact() {
        head.headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(length));
    }
    let end = empty || answers_head;
    match reply.send_response(Response::from_parts(head, ()), end) {
        Ok(send) if !end => Stream::Sending {
            pump: Pump::new(body, send),
        },
        Ok(_) => Stream::Done,
        Err(e) => {
            tracing::debug!(error = %e, "response head not sent");
            reply.send_reset(Reason::INTERNAL_ERROR);
            Stream::Done
        }
    }
}

/// The reset a failed response body is relayed with: the upstream's own reason when
/// it reset its stream (a gRPC client reads CANCEL and REFUSED_STREAM apart), else
/// INTERNAL_ERROR, as hyper's server did.
fn reset_reason(error: &(dyn std::error::Error + 'static)) -> Reason {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(reason) = e
            .downcast_ref::<::h2::Error>()
            .and_then(::h2::Error::reason)
        {
            return reason;
        }
        source = e.source();
    }
    Reason::INTERNAL_ERROR
}

#[cfg(test)]
mod tests;
