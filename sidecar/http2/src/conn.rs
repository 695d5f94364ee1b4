//! One HTTP/2 connection, sans I/O, either end: bytes from the peer go in
//! ([`Connection::recv`]), what they mean comes out as [`Event`]s, and what the
//! connection must send collects in one buffer ([`Connection::output`]) for the
//! caller to write. Streams are entries in the connection's own table, not tasks
//! or channels: a request costs a table entry and its head, as in HAProxy.
//!
//! Everything RFC 9113 asks of either end is decided here, once: the preface and
//! the first SETTINGS, stream states and ids, both directions of flow control,
//! header blocks in one piece (nothing between a HEADERS and its CONTINUATIONs),
//! trailers, `content-length` against the DATA that came, and what each fault
//! costs: the stream (RST_STREAM) or the connection (GOAWAY). What differs by end
//! (whose streams, what a head is) is the [`Role`]: `server.rs` and `client.rs`.
//!
//! Limits a hostile peer meets: a header block's encoded size while its
//! CONTINUATIONs come (the CONTINUATION flood), and "glitches" as many as half the
//! streams it opened, once there are 1,000 of them: streams it reset before this end
//! answered (the rapid reset attack), streams it made this end reset (MadeYouReset),
//! empty DATA and CONTINUATION frames. Both end the connection with
//! ENHANCE_YOUR_CALM. A stream cancelled after its answer began (a gRPC stream the
//! client is done with) is not a glitch. Frames on a stream that ended are ignored rather than
//! tracked per stream (RFC 9113 §5.1 lets an end that reset a stream ignore what
//! is still in flight on it); their DATA still counts against the connection's
//! window, which is given back at once.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, request, response};

use crate::frame::{Reason, Settings};
use crate::hpack::Decoder;
use crate::streams::StreamMap;

mod head;
mod recv;
mod send;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use self::head::Protocol;
pub(crate) use self::head::{Read, content_length, request_head, response_head, trailers};
pub(crate) use self::send::{encode_headers, http2_field};

/// Glitches a peer may cause before their share of its streams is looked at:
/// streams it reset unanswered, streams it made this end reset, empty DATA frames
/// that do not end a stream, empty CONTINUATIONs. Then at most half as many as the
/// streams it opened, as Envoy's premature-reset check (and the sidecar's own,
/// `server.rs`) allow. A browser cancelling navigations or a gRPC client whose calls
/// time out now and then stays below; a rapid reset attack (CVE-2023-44487),
/// MadeYouReset (CVE-2025-8671) or an empty frame flood (CVE-2019-9518) goes past
/// it within a second.
pub(crate) const GLITCHES_BEFORE_RATIO: usize = 1000;
/// The most fields a header block may hold: `HeaderMap` holds at most 32,768 names,
/// and no honest message comes near this.
pub(crate) const MAX_FIELDS: usize = 8192;
/// The windows' size before SETTINGS say otherwise (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// The settings this end advertises, and holds its peer to.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Streams the peer may open at once (a client's peer opens none: push is off).
    pub max_concurrent_streams: u32,
    /// Each stream's receive window.
    pub initial_window_size: u32,
    /// The connection's receive window (raised from 65,535 by a WINDOW_UPDATE).
    pub connection_window_size: u32,
    /// The largest frame accepted.
    pub max_frame_size: u32,
    /// The largest header list accepted, counted as RFC 9113 §6.5.2 does.
    pub max_header_list_size: u32,
    /// Extended CONNECT (RFC 8441), offered by a server.
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

/// What the peer's bytes meant.
#[derive(Debug)]
pub enum Event<'a> {
    /// (Server) A request's head; with `end_stream` it has no body. `length` is its
    /// `content-length`, checked here (the DATA is held to it): not to be parsed again.
    Request {
        stream: u32,
        head: request::Parts,
        end_stream: bool,
        length: Option<u64>,
    },
    /// (Server) A request whose header list is over the limit: to be answered 431.
    /// Its body, if any, is dropped here.
    TooLarge { stream: u32 },
    /// (Client) An interim response (1xx, not 101): the final one is still to come.
    Informational { stream: u32, head: response::Parts },
    /// (Client) A response's head; with `end_stream` it has no body. `length` is
    /// its body's size by `content-length` (none for a HEAD's, a 204's or a 304's),
    /// checked here as for a request.
    Response {
        stream: u32,
        head: response::Parts,
        end_stream: bool,
        length: Option<u64>,
    },
    /// Some of a message's body. The caller gives the window back with
    /// [`Connection::release`] once it has passed the bytes on.
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
    },
    /// A message's trailers: its body is complete.
    Trailers { stream: u32, trailers: HeaderMap },
    /// A message this end refused as malformed (RFC 9113 §8.1.1), and why: it was
    /// reset with PROTOCOL_ERROR and nothing else of it comes.
    Malformed { stream: u32, what: &'static str },
    /// The peer reset the stream, or the stream broke a rule (then this end has
    /// sent the RST_STREAM). Whatever handles it stops. REFUSED_STREAM, and a
    /// client's stream above a GOAWAY's last, were not processed: safe to send
    /// again, whatever the method.
    Reset { stream: u32, reason: Reason },
    /// The peer opened a send window: the stream's, or all of them (stream 0).
    WindowUpdate { stream: u32 },
    /// The answer to a PING this end sent.
    PingAck { data: [u8; 8] },
    /// The peer is leaving: streams above `last_stream` were not processed by it.
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

/// What differs between the two ends of a connection.
pub trait Role: Sized + private::Sealed {
    /// A header block on `stream` that is not trailers: a new request (server), a
    /// response's head (client).
    #[doc(hidden)]
    fn head(
        conn: &mut Connection<Self>,
        block: Whole<'_>,
        on: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), ConnectionError>;

    /// Whether the peer may send a HEADERS frame on `stream` at all.
    #[doc(hidden)]
    fn peer_may_send_headers(stream: u32) -> bool;

    /// Whether `stream` was never opened: a frame on it is a connection error.
    #[doc(hidden)]
    fn is_idle(conn: &Connection<Self>, stream: u32) -> bool;
}

mod private {
    pub trait Sealed {}
    impl Sealed for crate::server::Server {}
    impl Sealed for crate::client::Client {}
}

/// A whole header block and what its first frame said.
#[doc(hidden)]
#[derive(Debug)]
pub struct Whole<'a> {
    pub(crate) stream: u32,
    pub(crate) end_stream: bool,
    pub(crate) self_dependent: bool,
    pub(crate) block: &'a Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// (Server) Waiting for the client's preface.
    Preface,
    /// Waiting for the peer's first SETTINGS.
    Settings,
    Open,
    /// Ended on an error; nothing more is read.
    Failed,
}

/// One stream's state: each direction open or not, and its windows.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) recv_open: bool,
    pub(crate) send_open: bool,
    /// The head came (a request's, a final response's): a header block now is
    /// trailers.
    pub(crate) head_received: bool,
    /// (Client) The request was a HEAD: its response has no body.
    pub(crate) head_request: bool,
    /// What the peer may still send before a WINDOW_UPDATE.
    pub(crate) recv_window: i64,
    /// Bytes passed on but not yet given back to the peer.
    pub(crate) recv_unacked: u32,
    /// Bytes handed to the caller in [`Event::Data`] and not yet released: given
    /// back to the connection's window when the stream ends, whatever the caller
    /// did with them.
    pub(crate) unreleased: u32,
    /// What this end may still send.
    pub(crate) send_window: i64,
    /// The body bytes `content-length` says are still to come.
    pub(crate) remaining: Option<u64>,
    /// (Server) The request went over the header list limit: its body is dropped.
    pub(crate) discard: bool,
    /// This end's head went out (a server's answer; a client's request): a reset
    /// from the peer now is a cancellation, not a glitch.
    pub(crate) answered: bool,
}

/// A header block being received: HEADERS, then CONTINUATIONs until END_HEADERS.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) stream: u32,
    pub(crate) end_stream: bool,
    pub(crate) self_dependent: bool,
}

/// One HTTP/2 connection; `R` says which end: [`crate::server::Connection`],
/// [`crate::client::Connection`].
#[derive(Debug)]
pub struct Connection<R> {
    role: std::marker::PhantomData<R>,
    pub(crate) config: Config,
    pub(crate) phase: Phase,
    pub(crate) peer: Settings,
    pub(crate) decoder: Decoder,
    pub(crate) streams: StreamMap<Stream>,
    /// The highest stream the peer opened (a server's clients').
    pub(crate) last_stream: u32,
    /// (Client) The next stream this end opens.
    pub(crate) next_stream: u32,
    /// Set once this end sent a GOAWAY: streams above it are ignored.
    pub(crate) going_away: Option<u32>,
    /// Set once the peer sent one: no new stream is opened.
    pub(crate) peer_going_away: bool,
    pub(crate) block: Option<Block>,
    /// The header block so far (kept between blocks, so its allocation is reused).
    pub(crate) fragments: BytesMut,
    pub(crate) recv_window: i64,
    pub(crate) recv_unacked: u32,
    pub(crate) send_window: i64,
    pub(crate) finished: usize,
    /// Streams the peer opened (a client's requests) or this end did (a client's).
    pub(crate) opened: usize,
    pub(crate) glitches: usize,
    /// The peer acknowledged this end's SETTINGS: its windows apply. Before, the
    /// peer may send as RFC 9113's defaults allow.
    pub(crate) settings_acked: bool,
    pub(crate) out: Vec<u8>,
    pub(crate) written: usize,
    pub(crate) scratch: Vec<u8>,
}

impl<R: Role> Connection<R> {
    /// A connection in `phase` whose opening bytes (`out`) are written already.
    pub(crate) fn with(config: Config, phase: Phase, out: Vec<u8>) -> Self {
        let default = Settings::default().initial_window_size;
        Connection {
            role: std::marker::PhantomData,
            config,
            phase,
            peer: Settings::default(),
            decoder: Decoder::default(),
            streams: StreamMap::default(),
            last_stream: 0,
            next_stream: 1,
            going_away: None,
            peer_going_away: false,
            block: None,
            fragments: BytesMut::new(),
            // The connection's window cannot be lowered below 65,535 (§6.9.2).
            recv_window: i64::from(config.connection_window_size.max(default)),
            recv_unacked: 0,
            send_window: i64::from(default),
            finished: 0,
            opened: 0,
            glitches: 0,
            settings_acked: false,
            out,
            written: 0,
            scratch: Vec::new(),
        }
    }
}
