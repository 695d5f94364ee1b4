//! The server side of an HTTP/2 connection, sans I/O: bytes from the client go in
//! ([`Connection::recv`]), what they mean comes out as [`Event`]s, and what the
//! connection must send collects in one buffer ([`Connection::output`]) for the
//! caller to write. Streams are entries in the connection's own table, not tasks
//! or channels: a request costs a table entry and its head, as in HAProxy.
//!
//! Everything RFC 9113 asks of a server is decided here, once: the preface and the
//! first SETTINGS, stream states and ids, both directions of flow control, header
//! blocks in one piece (nothing between a HEADERS and its CONTINUATIONs), a
//! request's fields (`head.rs`), `content-length` against the DATA that came, and
//! what each fault costs: the stream (RST_STREAM) or the connection (GOAWAY).
//!
//! Limits a hostile client meets: `SETTINGS_MAX_CONCURRENT_STREAMS` (a stream over
//! it is refused, REFUSED_STREAM), the header list size (the request is handed on
//! as [`Event::TooLarge`], for a 431), a header block's encoded size while its
//! CONTINUATIONs come (the CONTINUATION flood), and resets of streams the client
//! opened beyond the streams it let finish (the rapid reset attack): both end the
//! connection with ENHANCE_YOUR_CALM.

use std::collections::HashMap;

use http::{HeaderMap, request, response};

use crate::frame::{self, Frame, HEAD_LEN, Head, MAX_WINDOW, Reason, Settings, setting};
use crate::hpack::{self, Decoder, encode_field};

mod head;

pub use self::head::Protocol;

/// The client's first bytes (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Resets of open streams a client may make beyond the streams it let finish: a
/// browser cancelling navigations or a gRPC client cancelling calls stays far below;
/// a rapid reset attack (CVE-2023-44487) goes past it within a second.
const RESETS_BEYOND_FINISHED: usize = 1000;

/// The settings this end advertises, and holds the client to.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub max_concurrent_streams: u32,
    /// Each stream's receive window.
    pub initial_window_size: u32,
    /// The connection's receive window (raised from 65,535 by a WINDOW_UPDATE).
    pub connection_window_size: u32,
    /// The largest frame accepted.
    pub max_frame_size: u32,
    /// The largest header list accepted, counted as RFC 9113 §6.5.2 does.
    pub max_header_list_size: u32,
    /// Extended CONNECT (RFC 8441).
    pub enable_connect_protocol: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            connection_window_size: 65_535,
            max_frame_size: 16_384,
            max_header_list_size: 64 * 1024,
            enable_connect_protocol: false,
        }
    }
}

/// What the client's bytes meant.
#[derive(Debug)]
pub enum Event<'a> {
    /// A request's head; with `end_stream` it has no body.
    Request {
        stream: u32,
        head: request::Parts,
        end_stream: bool,
    },
    /// A request whose header list is over the limit: to be answered 431. Its body,
    /// if any, is dropped here.
    TooLarge { stream: u32 },
    /// Some of a request's body. The caller gives the window back with
    /// [`Connection::release`] once it has passed the bytes on.
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
    },
    /// A request's trailers: its body is complete.
    Trailers { stream: u32, trailers: HeaderMap },
    /// A request this end refused as malformed (RFC 9113 §8.1.1), and why: it was
    /// reset with PROTOCOL_ERROR and nothing else of it comes.
    Malformed { stream: u32, what: &'static str },
    /// The client reset the stream, or the request broke a rule of its own (then
    /// this end has sent the RST_STREAM). Whatever handles it stops.
    Reset { stream: u32, reason: Reason },
    /// The client opened a send window: the stream's, or all of them (stream 0).
    WindowUpdate { stream: u32 },
    /// The answer to a PING this end sent.
    PingAck { data: [u8; 8] },
    /// The client is leaving: streams above `last_stream` were not processed by it.
    GoAway { last_stream: u32, reason: Reason },
}

/// The connection has ended on an error: the GOAWAY saying so is in the output,
/// to be written before the socket closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    pub reason: Reason,
    pub what: &'static str,
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (error code {:#x})", self.what, self.reason.0)
    }
}

impl std::error::Error for ConnectionError {}

/// A send on a stream that cannot take it: unknown (finished or reset), or its
/// direction already ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGone {
    pub stream: u32,
}

impl std::fmt::Display for StreamGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream {} is closed for sending", self.stream)
    }
}

impl std::error::Error for StreamGone {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's preface.
    Preface,
    /// Waiting for the client's first SETTINGS.
    Settings,
    Open,
    /// Ended on an error; nothing more is read.
    Failed,
}

/// One stream's state: each direction open or not, and its windows.
#[derive(Debug)]
struct Stream {
    recv_open: bool,
    send_open: bool,
    /// What the client may still send before a WINDOW_UPDATE.
    recv_window: i64,
    /// Bytes passed on but not yet given back to the client.
    recv_unacked: u32,
    /// What this end may still send.
    send_window: i64,
    /// The body bytes `content-length` says are still to come.
    remaining: Option<u64>,
    /// The request went over the header list limit: its body is dropped here.
    discard: bool,
}

/// A header block being received: HEADERS, then CONTINUATIONs until END_HEADERS.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
}

/// The server side of one HTTP/2 connection.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    phase: Phase,
    peer: Settings,
    decoder: Decoder,
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened.
    last_stream: u32,
    /// Set once this end sent a GOAWAY: streams above it are ignored.
    going_away: Option<u32>,
    block: Option<Block>,
    /// The header block so far (kept between blocks, so its allocation is reused).
    fragments: Vec<u8>,
    recv_window: i64,
    recv_unacked: u32,
    send_window: i64,
    finished: usize,
    resets: usize,
    out: Vec<u8>,
    written: usize,
    scratch: Vec<u8>,
}

impl Connection {
    /// A connection whose client's preface is still to come; this end's SETTINGS
    /// (and the connection window, if larger than 65,535) are already in the output.
    pub fn new(config: Config) -> Connection {
        let mut out = Vec::with_capacity(64);
        frame::write_settings(
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.initial_window_size),
                (setting::MAX_FRAME_SIZE, config.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
                (
                    setting::ENABLE_CONNECT_PROTOCOL,
                    u32::from(config.enable_connect_protocol),
                ),
            ],
            &mut out,
        );
        let default = Settings::default().initial_window_size;
        if config.connection_window_size > default {
            frame::write_window_update(0, config.connection_window_size - default, &mut out);
        }
        Connection {
            config,
            phase: Phase::Preface,
            peer: Settings::default(),
            decoder: Decoder::default(),
            streams: HashMap::new(),
            last_stream: 0,
            going_away: None,
            block: None,
            fragments: Vec::new(),
            recv_window: i64::from(config.connection_window_size),
            recv_unacked: 0,
            send_window: i64::from(default),
            finished: 0,
            resets: 0,
            out,
            written: 0,
            scratch: Vec::new(),
        }
    }

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
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "not an HTTP/2 client preface"));
            }
            if n < PREFACE.len() {
                return Ok(0);
            }
            used = PREFACE.len();
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
        let frame = match Frame::parse(head, payload) {
            Ok(frame) => frame,
            Err(e) => {
                return match e.stream {
                    Some(stream) => {
                        self.refuse(stream, e.reason, on);
                        Ok(())
                    }
                    None => Err(self.fail(e.reason, e.what)),
                };
            }
        };
        if self.phase == Phase::Settings {
            if !matches!(frame, Frame::Settings { ack: false, .. }) {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "a first frame other than SETTINGS"));
            }
            self.phase = Phase::Open;
        }
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
                if stream % 2 == 0 {
                    return Err(
                        self.fail(Reason::PROTOCOL_ERROR, "a client stream with an even id")
                    );
                }
                self.fragments.clear();
                self.fragments.extend_from_slice(fragment);
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
                self.fragments.extend_from_slice(fragment);
                self.fragment_added(end_headers, on)
            }
            Frame::RstStream { stream, reason } => {
                if stream > self.last_stream {
                    return Err(self.fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
                }
                if self.streams.remove(&stream).is_some() {
                    self.resets += 1;
                    if self.resets > self.finished + RESETS_BEYOND_FINISHED {
                        return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "too many streams reset"));
                    }
                    on(Event::Reset { stream, reason });
                }
                Ok(())
            }
            Frame::Settings { ack: true, .. } => Ok(()),
            Frame::Settings {
                ack: false,
                payload,
            } => self.settings(payload, on),
            Frame::PushPromise { .. } => {
                Err(self.fail(Reason::PROTOCOL_ERROR, "a PUSH_PROMISE from a client"))
            }
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
        let limit = self.config.max_header_list_size as usize;
        let fragments = std::mem::take(&mut self.fragments);
        let result = self.headers(stream, end_stream, self_dependent, &fragments, limit, on);
        self.fragments = fragments;
        result
    }

    /// A whole header block: a new request, trailers, or one to decode and drop.
    fn headers(
        &mut self,
        stream: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
        limit: usize,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError> {
        if let Some((recv_open, remaining, discard)) = self
            .streams
            .get(&stream)
            .map(|s| (s.recv_open, s.remaining, s.discard))
        {
            let read = head::trailers(&mut self.decoder, block, limit)
                .map_err(|e| self.compression(&e))?;
            if !recv_open {
                self.refuse(stream, Reason::STREAM_CLOSED, on);
                return Ok(());
            }
            if self_dependent {
                self.refuse(stream, Reason::PROTOCOL_ERROR, on);
                return Ok(());
            }
            match read {
                head::Read::Valid(trailers) if end_stream => {
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
            return Ok(());
        }
        // The decoder reads every block, even one that is dropped: its table must
        // stay in step with the client's.
        let read =
            head::request(&mut self.decoder, block, limit).map_err(|e| self.compression(&e))?;
        if stream <= self.last_stream {
            // A stream already finished or reset: nothing more of it is taken.
            return Ok(());
        }
        self.last_stream = stream;
        if self.going_away.is_some() {
            return Ok(());
        }
        let open = self.streams.len();
        let mut state = Stream {
            recv_open: !end_stream,
            send_open: true,
            recv_window: i64::from(self.config.initial_window_size),
            recv_unacked: 0,
            send_window: i64::from(self.peer.initial_window_size),
            remaining: None,
            discard: false,
        };
        let read = if self_dependent {
            head::Read::Malformed("a stream that depends on itself")
        } else {
            read
        };
        match read {
            _ if open >= self.config.max_concurrent_streams as usize => {
                frame::write_rst_stream(stream, Reason::REFUSED_STREAM, &mut self.out);
            }
            head::Read::Malformed(what) => {
                frame::write_rst_stream(stream, Reason::PROTOCOL_ERROR, &mut self.out);
                on(Event::Malformed { stream, what });
            }
            head::Read::TooLarge => {
                state.discard = true;
                self.streams.insert(stream, state);
                on(Event::TooLarge { stream });
            }
            head::Read::Valid(head) => {
                let Ok(remaining) = content_length(&head.headers) else {
                    frame::write_rst_stream(stream, Reason::PROTOCOL_ERROR, &mut self.out);
                    on(Event::Malformed {
                        stream,
                        what: "an invalid content-length",
                    });
                    return Ok(());
                };
                if end_stream && remaining.is_some_and(|n| n != 0) {
                    frame::write_rst_stream(stream, Reason::PROTOCOL_ERROR, &mut self.out);
                    on(Event::Malformed {
                        stream,
                        what: "a content-length with no body",
                    });
                    return Ok(());
                }
                state.remaining = remaining;
                self.streams.insert(stream, state);
                on(Event::Request {
                    stream,
                    head,
                    end_stream,
                });
            }
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
        let Some(state) = self.streams.get_mut(&stream) else {
            if stream > self.last_stream {
                return Err(self.fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream that ended: its bytes count against the connection only.
            self.release_connection(flow32);
            return Ok(());
        };
        let fault = if !state.recv_open {
            Some(Reason::STREAM_CLOSED)
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
        let discard = state.discard;
        // The padding is given back at once; the data once it is passed on.
        let padding = flow32 - u32::try_from(data.len()).unwrap_or(flow32);
        if padding > 0 {
            self.release(stream, padding);
        }
        if discard {
            self.release(stream, flow32 - padding);
        } else {
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
            if stream > self.last_stream {
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

    /// Gives back `n` bytes of a stream's and the connection's receive windows once
    /// they were passed on: a WINDOW_UPDATE goes when half a window is owed, so a
    /// client streaming a body sends on without waiting and without a frame per
    /// DATA frame.
    pub fn release(&mut self, stream: u32, n: u32) {
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

    fn release_connection(&mut self, n: u32) {
        self.recv_unacked += n;
        if self.recv_unacked >= (self.config.connection_window_size / 2).max(1) {
            frame::write_window_update(0, self.recv_unacked, &mut self.out);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
    }

    /// Sends a response's head; with `end_stream`, the whole response.
    pub fn send_response(
        &mut self,
        stream: u32,
        head: &response::Parts,
        end_stream: bool,
    ) -> Result<(), StreamGone> {
        self.sendable(stream)?;
        self.scratch.clear();
        encode_field(
            b":status",
            head.status.as_str().as_bytes(),
            false,
            &mut self.scratch,
        );
        encode_headers(&head.headers, &mut self.scratch);
        self.send_block(stream, end_stream);
        Ok(())
    }

    /// Sends trailers, which end the response.
    pub fn send_trailers(&mut self, stream: u32, trailers: &HeaderMap) -> Result<(), StreamGone> {
        self.sendable(stream)?;
        self.scratch.clear();
        encode_headers(trailers, &mut self.scratch);
        self.send_block(stream, true);
        Ok(())
    }

    fn send_block(&mut self, stream: u32, end_stream: bool) {
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

    /// How much of a response body the windows let go now.
    pub fn capacity(&self, stream: u32) -> usize {
        let Some(state) = self.streams.get(&stream) else {
            return 0;
        };
        usize::try_from(self.send_window.min(state.send_window).max(0)).unwrap_or(0)
    }

    /// Sends what the windows allow of `data` (in frames of the client's largest
    /// size) and says how much that was; `end_stream` ends the response once all
    /// of `data` went. What is left waits for an [`Event::WindowUpdate`].
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

    /// Resets a stream (the handler failed, or gave up on the request's body).
    pub fn reset(&mut self, stream: u32, reason: Reason) {
        if self.streams.remove(&stream).is_some() {
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

    /// Sends a PING, answered by an [`Event::PingAck`] with the same data.
    pub fn ping(&mut self, data: [u8; 8]) {
        frame::write_ping(false, data, &mut self.out);
    }

    /// Whether no stream is open: with [`Connection::go_away`] sent, the connection
    /// may close once the output is written.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether this end said GOAWAY, or the connection failed.
    pub fn is_closing(&self) -> bool {
        self.going_away.is_some() || self.phase == Phase::Failed
    }

    /// The bytes to write to the client.
    pub fn output(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` bytes of [`Connection::output`] were written.
    pub fn advance(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
    }

    fn sendable(&self, stream: u32) -> Result<(), StreamGone> {
        match self.streams.get(&stream) {
            Some(state) if state.send_open => Ok(()),
            _ => Err(StreamGone { stream }),
        }
    }

    fn recv_closed(&mut self, stream: u32) {
        if let Some(state) = self.streams.get_mut(&stream) {
            state.recv_open = false;
            if !state.send_open {
                self.streams.remove(&stream);
                self.finished += 1;
            }
        }
    }

    fn send_closed(&mut self, stream: u32) {
        if let Some(state) = self.streams.get_mut(&stream) {
            state.send_open = false;
            if !state.recv_open {
                self.streams.remove(&stream);
                self.finished += 1;
            }
        }
    }

    /// A stream error: the stream is reset and whoever handles it told.
    fn refuse(&mut self, stream: u32, reason: Reason, on: &mut dyn FnMut(Event<'_>)) {
        frame::write_rst_stream(stream, reason, &mut self.out);
        if self.streams.remove(&stream).is_some() {
            on(Event::Reset { stream, reason });
        }
    }

    /// The decoder is out of step with the client: nothing after can be read.
    fn compression(&mut self, _: &hpack::Error) -> ConnectionError {
        self.fail(
            Reason::COMPRESSION_ERROR,
            "a header block that does not decode",
        )
    }

    /// A connection error: GOAWAY with the last stream processed, then nothing.
    fn fail(&mut self, reason: Reason, what: &'static str) -> ConnectionError {
        if self.phase != Phase::Failed {
            self.phase = Phase::Failed;
            frame::write_goaway(self.last_stream, reason, what.as_bytes(), &mut self.out);
        }
        ConnectionError { reason, what }
    }
}

/// A request's `content-length`: none, or one value all its fields agree on.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let n: u64 = value
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or(())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

fn encode_headers(headers: &HeaderMap, dst: &mut Vec<u8>) {
    for (name, value) in headers {
        encode_field(
            name.as_str().as_bytes(),
            value.as_bytes(),
            value.is_sensitive(),
            dst,
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
