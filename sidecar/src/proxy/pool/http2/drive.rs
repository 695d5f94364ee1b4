//! The task of one upstream HTTP/2 connection: the socket read into the
//! connection, what it says handed to the streams' slots, the request bodies
//! pumped, the windows given back as the response bodies are read, the output
//! written; keep-alive PINGs. It ends when the upstream closes or breaks the
//! connection (every stream still waiting fails with why), or when no handle and no
//! stream is left.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use graylane_http2::client::Event;
use graylane_http2::frame::Reason;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Ended, PoolError, Shared, State, hold};
use crate::proxy::streams::{
    HIGH_WATER, KeepAlive, LetGo, Pumped, Reset, Shared as BodyShared, flush, poll_read,
};

/// What the connection said of a stream, acted on once `recv` is done with it.
enum Said {
    /// DATA in the response body's queue: its reader is woken once the read is
    /// done (once per read, not per frame: see `Shared::push`).
    Pushed(u32),
    /// DATA nobody reads: its window goes back at once.
    Unread(u32, u32),
    /// The stream ended without the rest of its answer: reset by the upstream, or by
    /// this end for a malformed answer (`what`).
    Failed(u32, Reason, Option<&'static str>),
    PingAck,
    GoAway,
}

struct Driver<T> {
    io: T,
    shared: Arc<Shared>,
    read: BytesMut,
    keep_alive: KeepAlive,
    /// Drops the buffers once the connection has been idle a while.
    let_go: LetGo,
    said: Vec<Said>,
    /// The upstream broke HTTP/2: the GOAWAY goes out, then the connection ends.
    failed: Option<Ended>,
}

/// Drives the connection until it ends, then fails what still waits on it.
pub(super) async fn drive<T: AsyncRead + AsyncWrite + Unpin>(io: T, shared: Arc<Shared>) {
    let mut driver = Driver {
        io,
        shared: Arc::clone(&shared),
        read: BytesMut::new(),
        keep_alive: KeepAlive::new(),
        let_go: LetGo::new(),
        said: Vec::new(),
        failed: None,
    };
    let end = poll_fn(|cx| driver.poll(cx)).await;
    if let Err(ended) = &end {
        let error = ended.error();
        tracing::debug!(%error, "upstream h2 connection ended");
    }
    let ended = end.err().unwrap_or_else(|| {
        Ended::Io(
            io::ErrorKind::ConnectionAborted,
            "the connection closed".into(),
        )
    });
    shared.closed.store(true, Ordering::Relaxed);
    let mut state = shared.lock();
    state.ended = Some(ended);
    // The requests waiting find their slot gone and the connection's end instead.
    for (_, slot) in state.streams.drain() {
        if let Some(body) = slot.body {
            body.reset(Reason::INTERNAL_ERROR);
        }
        slot.waiter.into_iter().for_each(Waker::wake);
    }
    state.queued.drain(..).for_each(Waker::wake);
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Ended>> {
        self.shared.task.register(cx.waker());
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        if let Poll::Ready(e) = self.keep_alive.poll(cx, &mut state.conn) {
            return Poll::Ready(Err(Ended::Io(io::ErrorKind::TimedOut, e.to_string())));
        }
        // Whether this poll did anything: an idle connection's grace starts again.
        let mut worked = false;
        loop {
            let mut progress = state.release();
            progress |= state.pump(&shared, cx);
            state.sweep();
            match flush(&mut self.io, &mut state.conn, cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(Ended::Io(
                        e.kind(),
                        format!("writing to the upstream: {e}"),
                    )));
                }
                Poll::Pending => {}
            }
            let written = state.conn.output().is_empty();
            if let Some(failed) = &self.failed
                && written
            {
                return Poll::Ready(Err(failed.clone()));
            }
            let unused = shared.handles.load(Ordering::Acquire) == 0 || state.conn.is_closing();
            if state.streams.is_empty() && unused && written {
                return Poll::Ready(Ok(()));
            }
            if state.conn.output().len() < HIGH_WATER && self.failed.is_none() {
                match poll_read(&mut self.io, cx, &mut self.read) {
                    Poll::Ready(Ok(0)) => {
                        let eof = "the upstream closed the connection";
                        return Poll::Ready(Err(Ended::Io(
                            io::ErrorKind::UnexpectedEof,
                            eof.into(),
                        )));
                    }
                    Poll::Ready(Ok(_)) => {
                        self.received(&shared, &mut state);
                        state.sweep();
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        let text = format!("reading from the upstream: {e}");
                        return Poll::Ready(Err(Ended::Io(e.kind(), text)));
                    }
                    Poll::Pending => {}
                }
            }
            worked |= progress;
            if progress {
                state.queued.drain(..).for_each(Waker::wake);
                continue;
            }
            let State {
                conn,
                staging,
                streams: slots,
                ..
            } = &mut *state;
            if self.let_go.poll(
                cx,
                (slots.is_empty(), worked),
                conn,
                &mut self.read,
                staging,
            ) {
                *slots = graylane_http2::StreamMap::default();
                self.said = Vec::new();
            }
            return Poll::Pending;
        }
    }

    /// What the upstream's bytes said, handed to the streams.
    fn received(&mut self, shared: &Shared, state: &mut State) {
        let State {
            conn,
            streams,
            staging,
            ..
        } = state;
        let said = &mut self.said;
        let result = conn.recv(&self.read, &mut |event| match event {
            Event::Response {
                stream,
                head,
                end_stream,
                length,
            } => {
                if shared.unaccepted.watching() {
                    shared.unaccepted.answered(stream);
                }
                if let Some(slot) = streams.get_mut(&stream) {
                    let body = (!end_stream)
                        .then(|| BodyShared::new(Arc::clone(&shared.task), length, false));
                    slot.body.clone_from(&body);
                    slot.head = Some((head, body));
                    slot.waiter.take().into_iter().for_each(Waker::wake);
                }
            }
            Event::Data {
                stream,
                data,
                end_stream,
            } => {
                let body = streams.get(&stream).and_then(|s| s.body.as_ref());
                if !body.is_some_and(|b| b.push(data, end_stream, staging)) {
                    said.push(Said::Unread(
                        stream,
                        u32::try_from(data.len()).unwrap_or(u32::MAX),
                    ));
                } else if !matches!(said.last(), Some(Said::Pushed(last)) if *last == stream) {
                    said.push(Said::Pushed(stream));
                }
            }
            Event::Trailers { stream, trailers } => {
                if let Some(body) = streams.get(&stream).and_then(|s| s.body.as_ref()) {
                    body.trailers(trailers);
                }
            }
            Event::Malformed { stream, what } => {
                said.push(Said::Failed(stream, Reason::PROTOCOL_ERROR, Some(what)));
            }
            Event::Reset { stream, reason } => said.push(Said::Failed(stream, reason, None)),
            Event::PingAck { .. } => said.push(Said::PingAck),
            Event::GoAway { .. } => said.push(Said::GoAway),
            _ => {}
        });
        match result {
            Ok(used) => self.read.advance(used),
            Err(e) => self.failed = Some(Ended::Protocol(e)),
        }
        for said in self.said.drain(..) {
            match said {
                Said::Pushed(stream) => {
                    if let Some(body) = state.streams.get(&stream).and_then(|s| s.body.as_ref()) {
                        body.wake();
                    }
                }
                Said::Unread(stream, len) => state.conn.release(stream, len),
                Said::Failed(stream, reason, what) => state.failed(stream, reason, what),
                Said::PingAck => self.keep_alive.ponged(),
                Said::GoAway => shared.closed.store(true, Ordering::Relaxed),
            }
        }
    }
}

impl State {
    /// Forgets the streams nobody waits for that the connection is done with.
    fn sweep(&mut self) {
        let State { conn, streams, .. } = self;
        streams.retain(|&stream, slot| !slot.taken || conn.is_open(stream));
    }

    /// Gives the upstream's windows back what the response bodies took; a body
    /// dropped before its end has its stream reset (CANCEL). `true` if anything
    /// was done.
    fn release(&mut self) -> bool {
        let mut progress = false;
        let mut dropped = Vec::new();
        for (&stream, slot) in &self.streams {
            let Some(body) = &slot.body else { continue };
            let taken = body.taken();
            if taken > 0 {
                self.conn.release(stream, taken);
                progress = true;
            }
            if body.abandoned() {
                dropped.push(stream);
            }
        }
        for stream in dropped {
            self.reset(stream, Reason::CANCEL);
            progress = true;
        }
        progress
    }

    /// The request bodies, as far as the windows and the output bound allow. A
    /// body that failed fails its request (unless answered) and its stream is reset,
    /// or held if the app may not have accepted it yet (see `give_up`).
    fn pump(&mut self, shared: &Arc<Shared>, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut failed = Vec::new();
        for (&stream, slot) in &mut self.streams {
            let Some(sending) = &mut slot.sending else {
                continue;
            };
            match sending.pump(&mut self.conn, stream, HIGH_WATER, cx, &mut progress) {
                Pumped::Waiting => continue,
                Pumped::Done => {}
                Pumped::Failed(e) => failed.push((stream, e)),
            }
            slot.sending = None;
        }
        for (stream, error) in failed {
            tracing::debug!(%error, "request body failed");
            progress = true;
            let Some(slot) = self.streams.get_mut(&stream) else {
                continue;
            };
            let answered = slot.head.is_some() || slot.body.is_some();
            if !answered && !slot.taken {
                slot.failed = Some(PoolError::RequestBody(error));
                slot.waiter.take().into_iter().for_each(Waker::wake);
            }
            if std::mem::replace(&mut slot.settled, true) {
                continue;
            }
            if answered || shared.unaccepted.may_reset(stream) {
                self.reset(stream, Reason::CANCEL);
            } else {
                hold(Arc::clone(shared), stream);
            }
        }
        progress
    }

    /// `stream` ended without the rest of its answer: its request fails, or its
    /// response body does (ends, for a RST_STREAM(NO_ERROR) once answered).
    fn failed(&mut self, stream: u32, reason: Reason, what: Option<&'static str>) {
        let Some(slot) = self.streams.get_mut(&stream) else {
            return;
        };
        slot.sending = None;
        if let Some(body) = &slot.body {
            match what {
                None if reason == Reason::NO_ERROR => body.end_early(),
                _ => body.reset(reason),
            }
        } else if slot.head.is_none() && slot.failed.is_none() {
            slot.failed = Some(PoolError::Exchange(match what {
                Some(what) => format!("the upstream's answer is malformed: {what}").into(),
                None => Box::new(Reset(reason)),
            }));
        }
        slot.waiter.take().into_iter().for_each(Waker::wake);
    }
}
