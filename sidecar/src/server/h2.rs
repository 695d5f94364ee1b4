//! HTTP/2 from clients on graylane-http2's connection (sans I/O), driven here: no
//! task, channel or slab entry per stream, and nothing of h2 or hyper.
//!
//! One task per connection reads the socket into the connection, acts on what it
//! says, polls the handlers' futures (each stream's [`incoming::Answer`], in a
//! `FuturesUnordered`, as Envoy keeps a connection's streams on the worker that
//! owns it) and the answers' bodies, and writes what the connection has to send. A
//! request body is shared with its handler ([`Incoming`]): the window goes back to
//! the client as the handler's upstream takes the bytes, so a slow upstream slows
//! the client down instead of the sidecar buffering for it. Reading and pumping
//! pause while more than [`HIGH_WATER`] bytes wait to be written.
//!
//! What hyper's server and h2 did on the way is done here as they did it: a client's
//! reset drops the handler's future (the upstream request is cancelled with it), the
//! response's connection-specific fields are dropped, a `Date` is added where the
//! response has none, `Content-Length` is set from an exact body size, the answer to
//! a HEAD is its head alone, a `CONNECT` gets its stream as a tunnel once answered
//! 2xx, a header list over the limit is answered 431, a handler's error resets the
//! stream as not processed (REFUSED_STREAM), and a PING every 30 s closes a
//! connection whose client is gone.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_util::stream::{FuturesUnordered, Stream as _};
use futures_util::task::AtomicWaker;
use graylane_http2::StreamMap;
use graylane_http2::frame::Reason;
use graylane_http2::server::{Config, Connection, Event};
use http::{HeaderMap, HeaderValue, Method, Request, Response, header, request};
use hyper::body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::oneshot;

use self::answer::Answer;
use super::{H2_MAX_HEADER_LIST, MAX_CONCURRENT_STREAMS};
use crate::proxy::streams::{
    HIGH_WATER, Incoming, KeepAlive, LetGo, Pumped, Reset, Sending, Shared, flush, poll_read,
};
use crate::proxy::upgrade::H2Tunnel;
use crate::proxy::{
    Body, BoxError, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, Message, strip_hop_by_hop,
};

mod answer;
mod tunnel;

/// The HTTP/2 settings of a listener, shared by its connections.
pub(super) fn builder() -> Config {
    Config {
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        initial_window_size: H2_STREAM_WINDOW,
        connection_window_size: H2_CONNECTION_WINDOW,
        max_frame_size: 16 * 1024,
        max_header_list_size: H2_MAX_HEADER_LIST,
        enable_connect_protocol: false,
    }
}

/// One client's HTTP/2 connection: every request handed to `serve`, its answer sent
/// back. Ends when the connection does; dropped, it drops the streams it holds.
pub(super) struct Serving<T, S, F> {
    io: T,
    conn: Connection,
    read: BytesMut,
    serve: S,
    streams: StreamMap<Open>,
    /// The handlers' futures; none while no stream is open: an empty
    /// `FuturesUnordered` holds a stub task the size of one future (1.3 KiB).
    answers: Option<FuturesUnordered<Answer<F>>>,
    /// This task, for the bodies to wake when they took bytes.
    waker: Arc<AtomicWaker>,
    keep_alive: KeepAlive,
    /// Drops the buffers once the connection has been idle a while.
    let_go: LetGo,
    /// What the connection said, kept between reads (its allocation reused).
    events: Vec<Said>,
    /// Where small DATA is staged for the bodies ([`graylane_http2::stage`]); let go
    /// with the read buffer once the connection has been idle a while ([`LetGo`]).
    staging: BytesMut,
    /// The client closed its side: nothing more comes.
    read_closed: bool,
    /// The connection failed: the GOAWAY goes out, then it ends with this.
    failed: Option<BoxError>,
}

/// A stream's side in this task.
struct Open {
    shared: Arc<Shared>,
    /// The answer's body, while it is sent.
    sending: Option<Sending>,
    /// The answer went out whole.
    answered: bool,
    /// The request was a HEAD: its answer ends with its head.
    answers_head: bool,
    /// A CONNECT's tunnel, handed to the handler once answered 2xx.
    connect: Option<oneshot::Sender<DuplexStream>>,
}

/// An event of the connection, its data owned.
enum Said {
    /// A stream to reset once `recv` is done (a CONNECT with a body).
    Refuse(u32, Reason),
    TooLarge(u32),
    /// DATA that nobody reads: its window goes back at once.
    Unread(u32, u32),
    /// DATA in the body's queue: its reader is woken once `recv` is done (and once
    /// per read, not per frame: see `Shared::push`); `true`: the request ended.
    Pushed(u32, bool),
    Trailers(u32, HeaderMap),
    Reset(u32, Reason),
    PingAck,
    Other,
}

impl<T, S, F, E> Serving<T, S, F>
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<Body>) -> F + Unpin,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Display,
{
    /// Serves `io` (its first bytes the client's preface) with `serve`.
    pub(super) fn new(config: &Config, io: T, serve: S) -> Self {
        Self {
            io,
            conn: Connection::new(*config),
            read: BytesMut::new(),
            serve,
            streams: StreamMap::default(),
            answers: None,
            waker: Arc::default(),
            keep_alive: KeepAlive::new(),
            let_go: LetGo::new(),
            events: Vec::new(),
            staging: BytesMut::new(),
            read_closed: false,
            failed: None,
        }
    }

    /// A GOAWAY: the streams open go on to their end, no new one is taken.
    pub(super) fn graceful_shutdown(&mut self) {
        self.conn.go_away();
        self.waker.wake();
    }

    /// What the client's bytes said, acted on.
    fn received(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        let (streams, serve, answers, waker, staging) = (
            &mut self.streams,
            &mut self.serve,
            &mut self.answers,
            &self.waker,
            &mut self.staging,
        );
        let result = self.conn.recv(&self.read, &mut |event| {
            let said = match event {
                // Started here: DATA for it may follow in the same read.
                Event::Request {
                    stream,
                    head,
                    end_stream,
                    length,
                } => match start(
                    serve,
                    streams,
                    answers,
                    waker,
                    stream,
                    head,
                    (end_stream, length),
                ) {
                    Some(reason) => Said::Refuse(stream, reason),
                    None => Said::Other,
                },
                Event::TooLarge { stream } => Said::TooLarge(stream),
                // Into the body's queue here, copied once from the read buffer (small
                // DATA into the staging chunk).
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => match streams.get(&stream) {
                    Some(open) if open.shared.push(data, end_stream, staging) => {
                        Said::Pushed(stream, end_stream)
                    }
                    _ => Said::Unread(stream, u32::try_from(data.len()).unwrap_or(u32::MAX)),
                },
                Event::Trailers { stream, trailers } => Said::Trailers(stream, trailers),
                Event::Reset { stream, reason } => Said::Reset(stream, reason),
                Event::Malformed { stream, what } => {
                    tracing::debug!(stream, what, "malformed h2 request: reset");
                    Said::Other
                }
                Event::PingAck { .. } => Said::PingAck,
                _ => Said::Other,
            };
            // A run of DATA on one stream wakes its reader once.
            if let Said::Pushed(stream, ended) = said
                && let Some(Said::Pushed(last, last_ended)) = events.last_mut()
                && *last == stream
                && !*last_ended
            {
                *last_ended = ended;
                return;
            }
            events.push(said);
        });
        match result {
            Ok(used) => self.read.advance(used),
            Err(e) => self.failed = Some(e.into()),
        }
        for said in events.drain(..) {
            self.act(said);
        }
        self.events = events;
    }

    fn act(&mut self, said: Said) {
        match said {
            Said::Refuse(stream, reason) => self.conn.reset(stream, reason),
            Said::TooLarge(stream) => {
                let shared = Shared::new(Arc::clone(&self.waker), None, false);
                shared.abandon();
                self.streams.insert(stream, Open::new(shared, false));
                let refusal = super::refuse(&super::checks::Refusal::HeadersTooLarge);
                self.answer(stream, refusal);
            }
            Said::Unread(stream, len) => {
                self.conn.release(stream, len);
                self.settle(stream);
            }
            Said::Pushed(stream, ended) => {
                if let Some(open) = self.streams.get(&stream) {
                    open.shared.wake();
                }
                if ended {
                    self.settle(stream);
                }
            }
            Said::Trailers(stream, trailers) => {
                if let Some(open) = self.streams.get(&stream) {
                    open.shared.trailers(trailers);
                }
                self.settle(stream);
            }
            Said::Reset(stream, reason) => {
                if let Some(open) = self.streams.remove(&stream) {
                    tracing::debug!(stream, ?reason, "client reset the stream");
                    open.shared.reset(reason);
                }
            }
            Said::PingAck => self.keep_alive.ponged(),
            Said::Other => {}
        }
    }

    /// The handler's answer to `stream`: `None` if the client reset it first.
    fn answered(&mut self, stream: u32, answer: Option<Result<Response<Body>, E>>) {
        match answer {
            None => {}
            Some(Ok(response)) => self.answer(stream, response),
            // Nothing was processed: the client may try again elsewhere.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request refused");
                self.conn.reset(stream, Reason::REFUSED_STREAM);
                self.forget(stream);
            }
        }
    }

    /// Sends `response` on `stream`: its head now, its body as the windows allow.
    fn answer(&mut self, stream: u32, response: Response<Body>) {
        let Some(open) = self.streams.get_mut(&stream) else {
            return;
        };
        let (mut head, body) = response.into_parts();
        // A response the sidecar made itself may carry `Connection: close`.
        strip_hop_by_hop(&mut head.headers, Message::Response, false);
        if let header::Entry::Vacant(date) = head.headers.entry(header::DATE) {
            date.insert(super::date());
        }
        let connect = open.connect.take();
        if connect.is_some() && !head.status.is_success() {
            // No tunnel: what the client sends on the stream is read by nobody, and
            // once answered it is told to stop (RST_STREAM NO_ERROR).
            open.shared.abandon();
        }
        if let Some(opened) = connect
            && head.status.is_success()
        {
            head.headers.remove(header::CONTENT_LENGTH);
            if self.conn.send_response(stream, &head, false).is_err() {
                return self.forget(stream);
            }
            match tunnel::open(opened, Incoming(Arc::clone(&open.shared))) {
                Some(body) => {
                    open.sending = Some(Sending::new(body));
                }
                None => {
                    self.conn.reset(stream, Reason::CANCEL);
                    self.forget(stream);
                }
            }
            return;
        }
        let empty = body.is_end_stream();
        // For a HEAD too: the length the body would have had, as a GET would see it.
        if !empty && let Some(length) = body.size_hint().exact() {
            head.headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(length));
        }
        let end = empty || open.answers_head;
        let sent = self.conn.send_response(stream, &head, end);
        graylane_http2::recycle(head.headers);
        if sent.is_err() {
            return self.forget(stream);
        }
        if end {
            open.answered = true;
            self.settle(stream);
        } else {
            open.sending = Some(Sending::new(body));
        }
    }

    /// The answers' bodies, as far as the windows and the output bound allow.
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        for (&stream, open) in &mut self.streams {
            let Some(sending) = &mut open.sending else {
                continue;
            };
            match sending.pump(&mut self.conn, stream, HIGH_WATER, cx, &mut progress) {
                Pumped::Waiting => continue,
                Pumped::Done => {}
                Pumped::Failed(e) => {
                    tracing::debug!(error = %e, "response body failed");
                    self.conn.reset(stream, reset_reason(&*e));
                    progress = true;
                }
            }
            open.sending = None;
            open.answered = true;
            finished.push(stream);
        }
        for stream in finished {
            self.settle(stream);
        }
        progress
    }

    /// Forgets a stream whose answer went out whole and whose request ended (or
    /// whose handler dropped its body: the client is told to stop sending).
    fn settle(&mut self, stream: u32) {
        let Some(open) = self.streams.get(&stream) else {
            return;
        };
        if !open.answered {
            return;
        }
        if open.shared.abandoned() {
            self.conn.reset(stream, Reason::NO_ERROR);
        } else if self.conn.is_open(stream) {
            return;
        }
        self.streams.remove(&stream);
    }

    /// Forgets a stream this end has reset or cannot answer.
    fn forget(&mut self, stream: u32) {
        if let Some(open) = self.streams.remove(&stream) {
            open.shared.reset(Reason::CANCEL);
        }
    }

    /// Gives the client's windows back what the bodies took.
    fn release(&mut self) {
        let mut abandoned = Vec::new();
        for (&stream, open) in &self.streams {
            let taken = open.shared.taken();
            if taken > 0 {
                self.conn.release(stream, taken);
            }
            if open.answered && open.shared.abandoned() {
                abandoned.push(stream);
            }
        }
        for stream in abandoned {
            self.settle(stream);
        }
    }

    /// Whether the connection is done: failed, closed by the client, or closing
    /// with nothing left open.
    fn ended(&self) -> bool {
        self.read_closed
            || self.failed.is_some()
            || (self.conn.is_closing() && self.streams.is_empty() && self.conn.is_idle())
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
        me.waker.register(cx.waker());
        if let Poll::Ready(e) = me.keep_alive.poll(cx, &mut me.conn) {
            return Poll::Ready(Err(e));
        }
        // Whether this poll did anything: an idle connection's grace starts again.
        let mut worked = false;
        loop {
            let mut progress = false;
            // The handlers first: what they answer goes out in this same round.
            while let Some(answers) = me.answers.as_mut()
                && let Poll::Ready(Some((stream, answer))) = Pin::new(answers).poll_next(cx)
            {
                me.answered(stream, answer);
                progress = true;
            }
            me.release();
            progress |= me.pump(cx);
            match flush(&mut me.io, &mut me.conn, cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if me.ended() && me.conn.output().is_empty() {
                return Poll::Ready(match me.failed.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
            if me.conn.output().len() < HIGH_WATER && !me.read_closed && me.failed.is_none() {
                match poll_read(&mut me.io, cx, &mut me.read) {
                    Poll::Ready(Ok(0)) => {
                        me.read_closed = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        me.received();
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            worked |= progress;
            if !progress {
                let quiet = me.streams.is_empty()
                    && me.answers.as_ref().is_none_or(FuturesUnordered::is_empty);
                let (conn, read, staging) = (&mut me.conn, &mut me.read, &mut me.staging);
                if me.let_go.poll(cx, (quiet, worked), conn, read, staging) {
                    me.streams = StreamMap::default();
                    me.answers = None;
                    me.events = Vec::new();
                }
                return Poll::Pending;
            }
        }
    }
}

/// A request: handed to `serve`, its future polled in the connection's task. Its
/// `content-length` comes checked with it, not parsed again.
/// `Some(reason)`: refused, the stream to be reset with it.
fn start<S, F, E>(
    serve: &mut S,
    streams: &mut StreamMap<Open>,
    answers: &mut Option<FuturesUnordered<Answer<F>>>,
    waker: &Arc<AtomicWaker>,
    stream: u32,
    mut head: request::Parts,
    (end_stream, length): (bool, Option<u64>),
) -> Option<Reason>
where
    S: FnMut(Request<Body>) -> F,
    F: Future<Output = Result<Response<Body>, E>>,
{
    let answers_head = head.method == Method::HEAD;
    let shared = Shared::new(Arc::clone(waker), length, end_stream);
    let mut open = Open::new(Arc::clone(&shared), answers_head);
    let body = if head.method == Method::CONNECT {
        // The stream is the tunnel: a CONNECT carries no body of its own.
        if length.is_some_and(|n| n != 0) {
            tracing::debug!("h2 CONNECT with a body: reset");
            return Some(Reason::PROTOCOL_ERROR);
        }
        let (tunnel, opened) = H2Tunnel::new();
        head.extensions.insert(tunnel);
        open.connect = Some(opened);
        Body::Empty
    } else if end_stream {
        Body::Empty
    } else {
        Body::received_h2(Incoming(Arc::clone(&shared)))
    };
    let answer = serve(Request::from_parts(head, body));
    answers
        .get_or_insert_with(FuturesUnordered::new)
        .push(Answer::new(stream, shared, answer));
    streams.insert(stream, open);
    None
}

impl<T, S, F> Drop for Serving<T, S, F> {
    fn drop(&mut self) {
        // The bodies the handlers still hold fail instead of waiting forever.
        for open in self.streams.values() {
            open.shared.reset(Reason::CANCEL);
        }
    }
}

impl Open {
    fn new(shared: Arc<Shared>, answers_head: bool) -> Self {
        Self {
            shared,
            sending: None,
            answered: false,
            answers_head,
            connect: None,
        }
    }
}

/// The reset a failed response body is relayed with: the upstream's own reason when
/// it reset its stream (a gRPC client reads CANCEL and REFUSED_STREAM apart), else
/// INTERNAL_ERROR, as hyper's server did.
fn reset_reason(error: &(dyn std::error::Error + 'static)) -> Reason {
    let mut source = Some(error);
    while let Some(e) = source {
        // Not NO_ERROR, though: a body that failed must not read as one stopped
        // cleanly (an answer cut short of its length).
        if let Some(Reset(reason)) = e.downcast_ref::<Reset>()
            && *reason != Reason::NO_ERROR
        {
            return *reason;
        }
        source = e.source();
    }
    Reason::INTERNAL_ERROR
}

#[cfg(test)]
mod tests;
