//! What a connection sends: bodies within the windows, trailers, resets, GOAWAY,
//! PINGs, the window given back as bytes are passed on; and its output buffer.

use bytes::BytesMut;
use http::HeaderMap;

use super::{Connection, Phase, Role, StreamGone};
use crate::StreamMap;
use crate::frame::{self, Reason};
use crate::hpack::encode_field;

impl<R: Role> Connection<R> {
    /// Gives back `n` bytes of a stream's and the connection's receive windows once
    /// they were passed on: a WINDOW_UPDATE goes when half a window is owed, so a
    /// peer streaming a body sends on without waiting and without a frame per DATA
    /// frame.
    pub fn release(&mut self, stream: u32, n: u32) {
        // A stream that ended gave its bytes back then.
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        let n = n.min(state.unreleased);
        state.unreleased -= n;
        self.credit(stream, n);
    }

    /// Gives `n` bytes back to the connection's window and, while the peer may
    /// still send on it, the stream's.
    pub(crate) fn credit(&mut self, stream: u32, n: u32) {
        self.release_connection(n);
        let half = self.config.initial_window_size / 2;
        if let Some(state) = self.streams.get_mut(&stream)
            && state.recv_open
        {
            state.recv_unacked += n;
            if state.recv_unacked >= half.max(1) {
                frame::write_window_update(stream, state.recv_unacked, &mut self.out);
                state.recv_window += i64::from(state.recv_unacked);
                state.recv_unacked = 0;
            }
        }
    }

    pub(crate) fn release_connection(&mut self, n: u32) {
        self.recv_unacked += n;
        if self.recv_unacked >= (self.config.connection_window_size / 2).max(1) {
            frame::write_window_update(0, self.recv_unacked, &mut self.out);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    /// Sends trailers, which end the stream's sending side.
    pub fn send_trailers(&mut self, stream: u32, trailers: &HeaderMap) -> Result<(), StreamGone> {
        self.sendable(stream)?;
        self.scratch.clear();
        encode_headers(trailers, &mut self.scratch);
        self.send_block(stream, true);
        Ok(())
    }

    /// Writes the header block in `scratch` as HEADERS and CONTINUATIONs.
    pub(crate) fn send_block(&mut self, stream: u32, end_stream: bool) {
        frame::write_headers(
            stream,
            end_stream,
            &self.scratch,
            self.peer.max_frame_size as usize,
            &mut self.out,
        );
        if end_stream {
            self.send_closed(stream);
        }
    }

    /// How much of a body the windows let go now on `stream`.
    pub fn capacity(&self, stream: u32) -> usize {
        let Some(state) = self.streams.get(&stream) else {
            return 0;
        };
        usize::try_from(self.send_window.min(state.send_window).max(0)).unwrap_or(0)
    }

    /// Sends what the windows allow of `data` (in frames of the peer's largest
    /// size) and says how much that was; `end_stream` ends the stream's sending side
    /// once all of `data` went. What is left waits for an
    /// [`super::Event::WindowUpdate`].
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, StreamGone> {
        self.sendable(stream)?;
        let n = data.len().min(self.capacity(stream));
        let max = self.peer.max_frame_size as usize;
        let mut chunks = data[..n].chunks(max).peekable();
        let ends = end_stream && n == data.len();
        if n == 0 && ends {
            frame::write_data(stream, true, &[], &mut self.out);
        }
        while let Some(chunk) = chunks.next() {
            frame::write_data(
                stream,
                ends && chunks.peek().is_none(),
                chunk,
                &mut self.out,
            );
        }
        let sent = i64::try_from(n).unwrap_or(i64::MAX);
        self.send_window -= sent;
        if let Some(state) = self.streams.get_mut(&stream) {
            state.send_window -= sent;
        }
        if ends {
            self.send_closed(stream);
        }
        Ok(n)
    }

    /// Resets a stream (its handler failed, or gave up on the peer's body).
    pub fn reset(&mut self, stream: u32, reason: Reason) {
        if self.remove(stream) {
            frame::write_rst_stream(stream, reason, &mut self.out);
        }
    }

    /// A graceful close: the streams open go on to their end, no new one is taken.
    pub fn go_away(&mut self) {
        if self.going_away.is_none() {
            self.going_away = Some(self.last_stream);
            frame::write_goaway(self.last_stream, Reason::NO_ERROR, b"", &mut self.out);
        }
    }

    /// Sends a PING, answered by an [`super::Event::PingAck`] with the same data.
    pub fn ping(&mut self, data: [u8; 8]) {
        frame::write_ping(false, data, &mut self.out);
    }

    /// Whether `stream` is still open in either direction.
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Whether no stream is open: with a GOAWAY either way, the connection may
    /// close once the output is written.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether nothing is under way: no stream open, no header block half
    /// received, nothing left to write.
    pub fn at_rest(&self) -> bool {
        self.streams.is_empty() && self.block.is_none() && self.output().is_empty()
    }

    /// Lets go of the buffers kept for reuse between messages (the output, the
    /// header block's, the encoder's and the decoder's scratch, the stream table's
    /// room) when nothing is under way: no stream open, no header block half
    /// received, nothing left to write. An idle connection then holds its state
    /// alone (the dynamic table stays: the peer's next block refers to it); the next
    /// message allocates them again. Returns whether it did (the connection was
    /// [at rest](Connection::at_rest)).
    pub fn let_go(&mut self) -> bool {
        if !self.at_rest() {
            return false;
        }
        self.out = Vec::new();
        self.written = 0;
        self.fragments = BytesMut::new();
        self.scratch = Vec::new();
        self.streams = StreamMap::default();
        self.decoder.let_go();
        true
    }

    /// Whether either end said GOAWAY, or the connection failed.
    pub fn is_closing(&self) -> bool {
        self.going_away.is_some() || self.peer_going_away || self.phase == Phase::Failed
    }

    /// The bytes to write to the peer.
    pub fn output(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` bytes of [`Connection::output`] were written.
    pub fn advance(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > 16 * 1024 && self.written * 2 > self.out.len() {
            // A writer that never drains the buffer to the end would keep what it
            // wrote forever: moved out once it is most of the buffer.
            self.out.drain(..self.written);
            self.written = 0;
        }
    }

    pub(crate) fn sendable(&self, stream: u32) -> Result<(), StreamGone> {
        match self.streams.get(&stream) {
            Some(state) if state.send_open => Ok(()),
            _ => Err(StreamGone { stream }),
        }
    }

    pub(crate) fn recv_closed(&mut self, stream: u32) {
        if let Some(state) = self.streams.get_mut(&stream) {
            state.recv_open = false;
            if !state.send_open {
                self.remove(stream);
                self.finished += 1;
            }
        }
    }

    pub(crate) fn send_closed(&mut self, stream: u32) {
        if let Some(state) = self.streams.get_mut(&stream) {
            state.send_open = false;
            if !state.recv_open {
                self.remove(stream);
                self.finished += 1;
            }
        }
    }
}

/// Regular fields, never-indexed where the value is marked sensitive. Those of an
/// HTTP/1.1 connection are left out (RFC 9113 §8.2.2: a peer resets the stream
/// over them), and `te` unless it is `trailers`.
pub(crate) fn encode_headers(headers: &HeaderMap, dst: &mut Vec<u8>) {
    for (name, value) in headers {
        if !http2_field(name, value) {
            continue;
        }
        encode_field(
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            dst,
        );
    }
}

/// Whether a field may go in an HTTP/2 message (§8.2.2).
pub(crate) fn http2_field(name: &http::HeaderName, value: &http::HeaderValue) -> bool {
    !super::head::is_connection_specific(name) && (name != http::header::TE || value == "trailers")
}
