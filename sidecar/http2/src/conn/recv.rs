//! What a connection reads: frames in, each checked and acted on, events out; the
//! stream and connection errors they cost, and the glitch budget.

use bytes::{Bytes, BytesMut};

use crate::stage;

use super::{
    Block, Connection, ConnectionError, DEFAULT_WINDOW, Event, GLITCHES_BEFORE_RATIO, Phase, Read,
    Role, Whole, trailers,
};
use crate::frame::{self, Frame, HEAD_LEN, Head, MAX_WINDOW, Reason};
use crate::hpack::{self, Decoder};

impl<R: Role> Connection<R> {
    /// Reads what it can of `input` (whole frames), handing what they mean to `on`,
    /// and says how many bytes it used: the rest is an incomplete frame, to be given
    /// again with more bytes after it.
    pub fn recv(
        &mut self,
        input: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<usize, ConnectionError> {
        let mut used = 0;
        if self.phase == Phase::Failed {
            return Ok(input.len());
        }
        if self.phase == Phase::Preface {
            let preface = crate::server::PREFACE;
            let n = input.len().min(preface.len());
            if input[..n] != preface[..n] {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "not an HTTP/2 client preface"));
            }
            if n < preface.len() {
                return Ok(0);
            }
            used = preface.len();
            self.phase = Phase::Settings;
        }
        while input.len() - used >= HEAD_LEN {
            let bytes: [u8; HEAD_LEN] = input[used..used + HEAD_LEN]
                .try_into()
                .unwrap_or([0; HEAD_LEN]);
            let head = Head::parse(bytes, self.config.max_frame_size as usize)
                .map_err(|e| self.fail(e.reason, e.what))?;
            let end = used + HEAD_LEN + head.len;
            if input.len() < end {
                break;
            }
            self.frame(head, &input[used + HEAD_LEN..end], on)?;
            used = end;
        }
        Ok(used)
    }

    fn frame(
        &mut self,
        head: Head,
        payload: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        if let Some(block) = &self.block
            && (head.kind != frame::kind::CONTINUATION || head.stream != block.stream)
        {
            return Err(self.fail(Reason::PROTOCOL_ERROR, "a frame inside a header block"));
        }
        if self.phase == Phase::Settings {
            if head.kind != frame::kind::SETTINGS || head.flags & 0x1 != 0 {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "a first frame other than SETTINGS"));
            }
            self.phase = Phase::Open;
        }
        let result = self.dispatch(head, payload, on);
        if result.is_ok()
            && self.glitches >= GLITCHES_BEFORE_RATIO
            && self.glitches * 2 > self.opened
        {
            return Err(self.fail(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset or empty frames",
            ));
        }
        result
    }

    fn dispatch(
        &mut self,
        head: Head,
        payload: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        let frame = match Frame::parse(head, payload) {
            Ok(frame) => frame,
            Err(e) => {
                return match e.stream {
                    // RST_STREAM is never sent on an idle stream (§6.4): a frame
                    // there other than PRIORITY is a connection error (§5.1).
                    Some(stream)
                        if head.kind != frame::kind::PRIORITY && R::is_idle(self, stream) =>
                    {
                        Err(self.fail(Reason::PROTOCOL_ERROR, e.what))
                    }
                    Some(stream) => {
                        self.refuse(stream, e.reason, on);
                        Ok(())
                    }
                    None => Err(self.fail(e.reason, e.what)),
                };
            }
        };
        match frame {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow,
            } => self.data(stream, end_stream, data, flow, on),
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                fragment,
                self_dependent,
            } => {
                if !R::peer_may_send_headers(stream) {
                    return Err(self.fail(
                        Reason::PROTOCOL_ERROR,
                        "HEADERS on a stream the peer cannot use",
                    ));
                }
                self.fragments.clear();
                stage(&mut self.fragments, fragment);
                self.block = Some(Block {
                    stream,
                    end_stream,
                    self_dependent,
                });
                self.fragment_added(end_headers, on)
            }
            Frame::Continuation {
                end_headers,
                fragment,
                ..
            } => {
                if self.block.is_none() {
                    return Err(self.fail(
                        Reason::PROTOCOL_ERROR,
                        "a CONTINUATION outside a header block",
                    ));
                }
                if fragment.is_empty() && !end_headers {
                    self.glitches += 1;
                }
                stage(&mut self.fragments, fragment);
                self.fragment_added(end_headers, on)
            }
            Frame::RstStream { stream, reason } => {
                if R::is_idle(self, stream) {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
                }
                let answered = self.streams.get(&stream).is_some_and(|s| s.answered);
                if self.remove(stream) {
                    if !answered {
                        self.glitches += 1;
                    }
                    on(Event::Reset { stream, reason });
                }
                Ok(())
            }
            Frame::Settings { ack: true, .. } => {
                self.settings_acked();
                Ok(())
            }
            Frame::Settings {
                ack: false,
                payload,
            } => self.settings(payload, on),
            // A server cannot receive one; a client said SETTINGS_ENABLE_PUSH 0.
            Frame::PushPromise { .. } => Err(self.fail(Reason::PROTOCOL_ERROR, "a PUSH_PROMISE")),
            Frame::Ping { ack: false, data } => {
                frame::write_ping(true, data, &mut self.out);
                Ok(())
            }
            Frame::Ping { ack: true, data } => {
                on(Event::PingAck { data });
                Ok(())
            }
            Frame::GoAway {
                last_stream,
                reason,
                ..
            } => {
                self.peer_goes_away(last_stream, on);
                on(Event::GoAway {
                    last_stream,
                    reason,
                });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.window_update(stream, increment, on),
            Frame::Priority { .. } | Frame::Unknown => Ok(()),
        }
    }

    fn fragment_added(
        &mut self,
        end_headers: bool,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        // A block's encoded size is bounded by what it decodes to (an indexed
        // field is at least 33 bytes decoded for its one): four times the limit
        // is beyond any honest block.
        if self.fragments.len() > 4 * self.config.max_header_list_size as usize + 1024 {
            return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "a header block without end"));
        }
        if !end_headers {
            return Ok(());
        }
        let Some(Block {
            stream,
            end_stream,
            self_dependent,
        }) = self.block.take()
        else {
            return Ok(());
        };
        // Frozen: the fields' values are slices of it (`head.rs`).
        let fragments = self.fragments.split().freeze();
        let whole = Whole {
            stream,
            end_stream,
            self_dependent,
            block: &fragments,
        };
        let trailers = self.streams.get(&stream).is_some_and(|s| s.head_received);
        if trailers {
            self.trailers(whole, on)
        } else {
            R::head(self, whole, on)
        }
    }

    /// A header block after a stream's head: its trailers, which end it.
    fn trailers(
        &mut self,
        whole: Whole<'_>,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        let Whole {
            stream,
            end_stream,
            self_dependent,
            block,
        } = whole;
        let read = self.decode(block, trailers)?;
        let Some((recv_open, remaining, discard)) = self
            .streams
            .get(&stream)
            .map(|s| (s.recv_open, s.remaining, s.discard))
        else {
            return Ok(());
        };
        if !recv_open {
            self.refuse(stream, Reason::STREAM_CLOSED, on);
            return Ok(());
        }
        match read {
            Read::Valid(trailers) if end_stream && !self_dependent => {
                if remaining.is_some_and(|n| n != 0) {
                    self.refuse(stream, Reason::PROTOCOL_ERROR, on);
                    return Ok(());
                }
                if !discard {
                    on(Event::Trailers { stream, trailers });
                }
                self.recv_closed(stream);
            }
            _ => self.refuse(stream, Reason::PROTOCOL_ERROR, on),
        }
        Ok(())
    }

    fn data(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: &[u8],
        flow: usize,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        let flow32 = u32::try_from(flow).unwrap_or(u32::MAX);
        if i64::from(flow32) > self.recv_window {
            return Err(self.fail(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= i64::from(flow32);
        if flow == 0 && !end_stream {
            self.glitches += 1;
        }
        let Some(state) = self.streams.get_mut(&stream) else {
            if R::is_idle(self, stream) {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream that ended: its bytes count against the connection only.
            self.release_connection(flow32);
            return Ok(());
        };
        let fault = if !state.recv_open || !state.head_received {
            Some(if state.recv_open {
                Reason::PROTOCOL_ERROR
            } else {
                Reason::STREAM_CLOSED
            })
        } else if i64::from(flow32) > state.recv_window {
            Some(Reason::FLOW_CONTROL_ERROR)
        } else {
            state.recv_window -= i64::from(flow32);
            let len = data.len() as u64;
            match &mut state.remaining {
                Some(left) if len > *left || (end_stream && len != *left) => {
                    Some(Reason::PROTOCOL_ERROR)
                }
                Some(left) => {
                    *left -= len;
                    None
                }
                None => None,
            }
        };
        if let Some(reason) = fault {
            self.release_connection(flow32);
            self.refuse(stream, reason, on);
            return Ok(());
        }
        let len = u32::try_from(data.len()).unwrap_or(flow32);
        // The padding is given back at once; the data once it is passed on.
        let padding = flow32 - len;
        if state.discard {
            self.credit(stream, flow32);
        } else {
            state.unreleased += len;
            if padding > 0 {
                self.credit(stream, padding);
            }
            on(Event::Data {
                stream,
                data,
                end_stream,
            });
        }
        if end_stream {
            self.recv_closed(stream);
        }
        Ok(())
    }

    fn settings(
        &mut self,
        payload: &[u8],
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        let before = self.peer.initial_window_size;
        if let Err(e) = self.peer.apply(payload) {
            return Err(self.fail(e.reason, e.what));
        }
        let delta = i64::from(self.peer.initial_window_size) - i64::from(before);
        if delta != 0 {
            for state in self.streams.values_mut() {
                state.send_window += delta;
                if state.send_window > i64::from(MAX_WINDOW) {
                    return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "a window above 2^31-1"));
                }
            }
        }
        frame::write_settings_ack(&mut self.out);
        if delta > 0 {
            on(Event::WindowUpdate { stream: 0 });
        }
        Ok(())
    }

    fn window_update(
        &mut self,
        stream: u32,
        increment: u32,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        if stream == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(self.fail(Reason::FLOW_CONTROL_ERROR, "a window above 2^31-1"));
            }
            on(Event::WindowUpdate { stream });
            return Ok(());
        }
        let Some(state) = self.streams.get_mut(&stream) else {
            if R::is_idle(self, stream) {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"));
            }
            return Ok(());
        };
        state.send_window += i64::from(increment);
        if state.send_window > i64::from(MAX_WINDOW) {
            self.refuse(stream, Reason::FLOW_CONTROL_ERROR, on);
            return Ok(());
        }
        on(Event::WindowUpdate { stream });
        Ok(())
    }

    /// The peer's GOAWAY: streams this end opened above `last_stream` were not
    /// processed, and end here as refused (safe to send elsewhere); no new one is
    /// opened.
    fn peer_goes_away(&mut self, last_stream: u32, on: &mut dyn FnMut(Event<'_>)) {
        self.peer_going_away = true;
        let mut unprocessed: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| {
                id % 2 == self.next_stream % 2 && id > last_stream && id < self.next_stream
            })
            .collect();
        unprocessed.sort_unstable();
        for stream in unprocessed {
            self.remove(stream);
            on(Event::Reset {
                stream,
                reason: Reason::REFUSED_STREAM,
            });
        }
    }

    /// A stream error: the stream is reset and whoever handles it told. It counts
    /// as a glitch: a peer that makes this end reset streams costs it work each time
    /// (MadeYouReset).
    pub(crate) fn refuse(&mut self, stream: u32, reason: Reason, on: &mut dyn FnMut(Event<'_>)) {
        frame::write_rst_stream(stream, reason, &mut self.out);
        self.glitches += 1;
        if self.remove(stream) {
            on(Event::Reset { stream, reason });
        }
    }

    /// A stream refused before it was opened (its head malformed, or over the
    /// stream limit): reset, and counted as a glitch.
    pub(crate) fn refuse_new(&mut self, stream: u32, reason: Reason) {
        frame::write_rst_stream(stream, reason, &mut self.out);
        self.glitches += 1;
    }

    /// Takes a stream out of the table, giving the connection's window back what
    /// the caller was handed and did not release: whatever handled the stream is
    /// gone, and those bytes would be lost to every other stream. Later
    /// [`Connection::release`] calls for it count for nothing.
    pub(crate) fn remove(&mut self, stream: u32) -> bool {
        let Some(state) = self.streams.remove(&stream) else {
            return false;
        };
        if state.unreleased > 0 {
            self.release_connection(state.unreleased);
        }
        // Nothing in flight: the staging chunk is let go (freed once the last
        // head read from it is dropped), so an idle connection holds none.
        if self.streams.is_empty() {
            self.fragments = BytesMut::new();
        }
        true
    }

    /// The peer applied this end's SETTINGS: the streams open get this end's
    /// window instead of the default they started with.
    fn settings_acked(&mut self) {
        if self.settings_acked {
            return;
        }
        self.settings_acked = true;
        let delta = i64::from(self.config.initial_window_size) - i64::from(DEFAULT_WINDOW);
        for state in self.streams.values_mut() {
            state.recv_window += delta;
        }
    }

    /// A new stream's receive window: RFC 9113's default until the peer
    /// acknowledged this end's SETTINGS (it may send that much before it knows).
    pub(crate) fn initial_recv_window(&self) -> i64 {
        i64::from(if self.settings_acked {
            self.config.initial_window_size
        } else {
            DEFAULT_WINDOW
        })
    }

    /// Decodes a whole header block with `read`, within this end's header list
    /// limit. Every block is decoded, even one whose stream is dropped: HPACK's
    /// table must stay in step with the peer's. A block that does not decode ends
    /// the connection: nothing after it can be read.
    pub(crate) fn decode<T>(
        &mut self,
        block: &Bytes,
        read: fn(&mut Decoder, &Bytes, &mut BytesMut, usize) -> Result<Read<T>, hpack::Error>,
    ) -> Result<Read<T>, ConnectionError> {
        let limit = self.config.max_header_list_size as usize;
        read(&mut self.decoder, block, &mut self.fragments, limit).map_err(|_| {
            self.fail(
                Reason::COMPRESSION_ERROR,
                "a header block that does not decode",
            )
        })
    }

    /// A connection error: GOAWAY with the last stream processed, then nothing.
    pub(crate) fn fail(&mut self, reason: Reason, what: &'static str) -> ConnectionError {
        if self.phase != Phase::Failed {
            self.phase = Phase::Failed;
            // Never above a GOAWAY already sent (§6.8).
            let last = self.going_away.unwrap_or(self.last_stream);
            frame::write_goaway(last, reason, what.as_bytes(), &mut self.out);
        }
        ConnectionError { reason, what }
    }
}
