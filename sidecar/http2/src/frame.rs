//! HTTP/2 frames (RFC 9113 §4 and §6): read from a peer's bytes, with every check
//! the RFC puts on each type made here once, and written into a buffer.
//!
//! Reading is in two steps, as a connection reads: [`Head::parse`] on the first 9
//! bytes says how much payload follows (and refuses a frame above this end's
//! `SETTINGS_MAX_FRAME_SIZE` before it is buffered), then [`Frame::parse`] checks
//! and splits the payload, borrowing from it.

use std::fmt;

mod write;

pub use self::write::{
    write_data, write_goaway, write_headers, write_ping, write_rst_stream, write_settings,
    write_settings_ack, write_window_update,
};

/// The size of a frame header.
pub const HEAD_LEN: usize = 9;
/// `SETTINGS_MAX_FRAME_SIZE`'s initial value, and the smallest a peer may set.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1 << 14;
/// The largest `SETTINGS_MAX_FRAME_SIZE` (2^24 - 1).
pub const LARGEST_MAX_FRAME_SIZE: usize = (1 << 24) - 1;
/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The frame types (§6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// The flags this layer reads (§6).
mod flag {
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const ACK: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;
    pub(super) const PADDED: u8 = 0x8;
    pub(super) const PRIORITY: u8 = 0x20;
}

/// The error codes (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);
}

/// As RFC 9113 §7 names it, with its number: `CANCEL (0x8)`.
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        let name = NAMES
            .get(self.0 as usize)
            .unwrap_or(&"an unknown error code");
        write!(f, "{name} ({:#x})", self.0)
    }
}

/// A frame the peer got wrong: the whole connection's error, or one stream's (§5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub reason: Reason,
    /// `None`: a connection error (GOAWAY); `Some(id)`: that stream's (RST_STREAM).
    pub stream: Option<u32>,
    pub what: &'static str,
}

impl Error {
    fn connection(reason: Reason, what: &'static str) -> Error {
        Error {
            reason,
            stream: None,
            what,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stream {
            None => write!(f, "{} (error code {:#x})", self.what, self.reason.0),
            Some(id) => write!(
                f,
                "{} on stream {id} (error code {:#x})",
                self.what, self.reason.0
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A frame header (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The payload's length.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream (31 bits; the reserved bit is ignored, as §4.1 says).
    pub stream: u32,
}

impl Head {
    /// Reads a frame header, refusing a payload longer than `max_frame_size` (this
    /// end's setting): a connection error, since what follows cannot be skipped
    /// safely (§4.2).
    pub fn parse(bytes: [u8; HEAD_LEN], max_frame_size: usize) -> Result<Head, Error> {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if len > max_frame_size {
            return Err(Error::connection(
                Reason::FRAME_SIZE_ERROR,
                "a frame larger than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        Ok(Head {
            len,
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & MAX_WINDOW,
        })
    }

    pub(crate) fn write(self, dst: &mut Vec<u8>) {
        let len = u32::try_from(self.len).unwrap_or(u32::MAX).to_be_bytes();
        dst.extend_from_slice(&[len[1], len[2], len[3], self.kind, self.flags]);
        dst.extend_from_slice(&(self.stream & MAX_WINDOW).to_be_bytes());
    }
}

/// A stream's priority as sent in HEADERS or PRIORITY (§5.3.2, deprecated by
/// RFC 9113): parsed only to be checked and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub depends_on: u32,
}

/// A frame, its payload borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Padding removed; `flow` is what it counts against the windows, padding
    /// included (§6.1).
    Data {
        stream: u32,
        end_stream: bool,
        data: &'a [u8],
        flow: usize,
    },
    /// The first fragment of a header block (padding and priority removed).
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        fragment: &'a [u8],
        /// Its priority names the stream itself: a stream error (RFC 9113 §5.3.1),
        /// once the block is decoded, which HPACK needs whatever becomes of it.
        self_dependent: bool,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    /// The settings as they came, checked ([`Settings::apply`]).
    Settings {
        ack: bool,
        payload: &'a [u8],
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: &'a [u8],
    },
    /// A type this end does not know: ignored (§4.1, §5.5).
    Unknown,
}

impl<'a> Frame<'a> {
    /// Checks and splits a frame's payload (`payload.len() == head.len`).
    pub fn parse(head: Head, payload: &'a [u8]) -> Result<Frame<'a>, Error> {
        let stream = head.stream;
        let on_stream = |what| {
            if stream == 0 {
                Err(Error::connection(Reason::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        let on_connection = |what| {
            if stream != 0 {
                Err(Error::connection(Reason::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        let sized = |len: usize, what| {
            if payload.len() != len {
                Err(Error::connection(Reason::FRAME_SIZE_ERROR, what))
            } else {
                Ok(())
            }
        };
        Ok(match head.kind {
            kind::DATA => {
                on_stream("a DATA frame on stream 0")?;
                Frame::Data {
                    stream,
                    end_stream: head.flags & flag::END_STREAM != 0,
                    data: unpad(head.flags, payload)?,
                    flow: payload.len(),
                }
            }
            kind::HEADERS => {
                on_stream("a HEADERS frame on stream 0")?;
                let mut fragment = unpad(head.flags, payload)?;
                let mut self_dependent = false;
                if head.flags & flag::PRIORITY != 0 {
                    let (priority, rest) = split_priority(fragment)?;
                    self_dependent = priority.depends_on == stream;
                    fragment = rest;
                }
                Frame::Headers {
                    stream,
                    end_stream: head.flags & flag::END_STREAM != 0,
                    end_headers: head.flags & flag::END_HEADERS != 0,
                    fragment,
                    self_dependent,
                }
            }
            kind::PRIORITY => {
                on_stream("a PRIORITY frame on stream 0")?;
                if payload.len() != 5 {
                    return Err(Error {
                        reason: Reason::FRAME_SIZE_ERROR,
                        stream: Some(stream),
                        what: "a PRIORITY frame not 5 bytes long",
                    });
                }
                let (priority, _) = split_priority(payload)?;
                if priority.depends_on == stream {
                    return Err(Error {
                        reason: Reason::PROTOCOL_ERROR,
                        stream: Some(stream),
                        what: "a stream that depends on itself",
                    });
                }
                Frame::Priority { stream }
            }
            kind::RST_STREAM => {
                on_stream("an RST_STREAM frame on stream 0")?;
                sized(4, "an RST_STREAM frame not 4 bytes long")?;
                Frame::RstStream {
                    stream,
                    reason: Reason(be32(payload)),
                }
            }
            kind::SETTINGS => {
                on_connection("a SETTINGS frame on a stream")?;
                let ack = head.flags & flag::ACK != 0;
                if ack && !payload.is_empty() {
                    return Err(Error::connection(
                        Reason::FRAME_SIZE_ERROR,
                        "a SETTINGS acknowledgement with a payload",
                    ));
                }
                if !payload.len().is_multiple_of(6) {
                    return Err(Error::connection(
                        Reason::FRAME_SIZE_ERROR,
                        "a SETTINGS frame whose length is not a multiple of 6",
                    ));
                }
                Frame::Settings { ack, payload }
            }
            kind::PUSH_PROMISE => {
                on_stream("a PUSH_PROMISE frame on stream 0")?;
                Frame::PushPromise { stream }
            }
            kind::PING => {
                on_connection("a PING frame on a stream")?;
                sized(8, "a PING frame not 8 bytes long")?;
                let mut data = [0u8; 8];
                data.copy_from_slice(payload);
                Frame::Ping {
                    ack: head.flags & flag::ACK != 0,
                    data,
                }
            }
            kind::GOAWAY => {
                on_connection("a GOAWAY frame on a stream")?;
                if payload.len() < 8 {
                    return Err(Error::connection(
                        Reason::FRAME_SIZE_ERROR,
                        "a GOAWAY frame shorter than 8 bytes",
                    ));
                }
                Frame::GoAway {
                    last_stream: be32(payload) & MAX_WINDOW,
                    reason: Reason(be32(&payload[4..])),
                    debug: &payload[8..],
                }
            }
            kind::WINDOW_UPDATE => {
                sized(4, "a WINDOW_UPDATE frame not 4 bytes long")?;
                let increment = be32(payload) & MAX_WINDOW;
                if increment == 0 {
                    return Err(Error {
                        reason: Reason::PROTOCOL_ERROR,
                        stream: (stream != 0).then_some(stream),
                        what: "a WINDOW_UPDATE of 0",
                    });
                }
                Frame::WindowUpdate { stream, increment }
            }
            kind::CONTINUATION => {
                on_stream("a CONTINUATION frame on stream 0")?;
                Frame::Continuation {
                    stream,
                    end_headers: head.flags & flag::END_HEADERS != 0,
                    fragment: payload,
                }
            }
            _ => Frame::Unknown,
        })
    }
}

/// A payload without its padding (§6.1): the pad length byte, then the padding,
/// which must leave room for nothing negative.
fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], Error> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(Error::connection(
            Reason::FRAME_SIZE_ERROR,
            "a padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad > rest.len() {
        return Err(Error::connection(
            Reason::PROTOCOL_ERROR,
            "padding longer than the frame",
        ));
    }
    Ok(&rest[..rest.len() - pad])
}

fn split_priority(payload: &[u8]) -> Result<(Priority, &[u8]), Error> {
    if payload.len() < 5 {
        return Err(Error::connection(
            Reason::FRAME_SIZE_ERROR,
            "a HEADERS frame too short for its priority",
        ));
    }
    let depends_on = be32(payload) & MAX_WINDOW;
    Ok((Priority { depends_on }, &payload[5..]))
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The settings of one end (§6.5.2), as they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: u32,
    pub enable_push: bool,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: Option<u32>,
    /// RFC 8441: extended CONNECT (WebSocket over HTTP/2).
    pub enable_connect_protocol: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_table_size: 4096,
            enable_push: true,
            max_concurrent_streams: None,
            initial_window_size: 65_535,
            max_frame_size: 16_384,
            max_header_list_size: None,
            enable_connect_protocol: false,
        }
    }
}

/// The identifiers of the settings (§6.5.2, RFC 8441 §3).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

impl Settings {
    /// Applies a SETTINGS frame's payload (already a multiple of 6 bytes), in order,
    /// ignoring identifiers it does not know (§6.5.2). Nothing is applied if any
    /// value is invalid.
    pub fn apply(&mut self, payload: &[u8]) -> Result<(), Error> {
        let mut next = *self;
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = be32(&entry[2..]);
            match id {
                setting::HEADER_TABLE_SIZE => next.header_table_size = value,
                setting::ENABLE_PUSH => {
                    next.enable_push = boolean(value, "SETTINGS_ENABLE_PUSH other than 0 or 1")?;
                }
                setting::MAX_CONCURRENT_STREAMS => next.max_concurrent_streams = Some(value),
                setting::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW {
                        return Err(Error::connection(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    next.initial_window_size = value;
                }
                setting::MAX_FRAME_SIZE => {
                    let size = value as usize;
                    if !(DEFAULT_MAX_FRAME_SIZE..=LARGEST_MAX_FRAME_SIZE).contains(&size) {
                        return Err(Error::connection(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1",
                        ));
                    }
                    next.max_frame_size = value;
                }
                setting::MAX_HEADER_LIST_SIZE => next.max_header_list_size = Some(value),
                setting::ENABLE_CONNECT_PROTOCOL => {
                    next.enable_connect_protocol =
                        boolean(value, "SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1")?;
                }
                _ => {}
            }
        }
        *self = next;
        Ok(())
    }
}

/// A setting that is a flag: 0 or 1, anything else a connection error.
fn boolean(value: u32, what: &'static str) -> Result<bool, Error> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::connection(Reason::PROTOCOL_ERROR, what)),
    }
}
