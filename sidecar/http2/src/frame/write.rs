//! Frames written into a connection's output buffer.

use super::{DEFAULT_MAX_FRAME_SIZE, Head, MAX_WINDOW, Reason, flag, kind};

/// Writes a DATA frame (`data` no longer than the peer's max frame size).
pub fn write_data(stream: u32, end_stream: bool, data: &[u8], dst: &mut Vec<u8>) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    Head {
        len: data.len(),
        kind: kind::DATA,
        flags,
        stream,
    }
    .write(dst);
    dst.extend_from_slice(data);
}

/// Writes a header block as one HEADERS frame and as many CONTINUATIONs as the
/// peer's `max_frame_size` needs, back to back (§4.3: nothing may come between).
pub fn write_headers(
    stream: u32,
    end_stream: bool,
    block: &[u8],
    max_frame_size: usize,
    dst: &mut Vec<u8>,
) {
    let max = max_frame_size.max(DEFAULT_MAX_FRAME_SIZE);
    let mut chunks = block.chunks(max);
    let first = chunks.next().unwrap_or(&[]);
    let more = block.len() > first.len();
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if !more {
        flags |= flag::END_HEADERS;
    }
    Head {
        len: first.len(),
        kind: kind::HEADERS,
        flags,
        stream,
    }
    .write(dst);
    dst.extend_from_slice(first);
    let mut chunks = chunks.peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        Head {
            len: chunk.len(),
            kind: kind::CONTINUATION,
            flags,
            stream,
        }
        .write(dst);
        dst.extend_from_slice(chunk);
    }
}

/// Writes a SETTINGS frame with these settings, in order.
pub fn write_settings(settings: &[(u16, u32)], dst: &mut Vec<u8>) {
    Head {
        len: settings.len() * 6,
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
    }
    .write(dst);
    for (id, value) in settings {
        dst.extend_from_slice(&id.to_be_bytes());
        dst.extend_from_slice(&value.to_be_bytes());
    }
}

/// Writes the acknowledgement of the peer's SETTINGS.
pub fn write_settings_ack(dst: &mut Vec<u8>) {
    Head {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(dst);
}

/// Writes a PING, or its acknowledgement echoing `data`.
pub fn write_ping(ack: bool, data: [u8; 8], dst: &mut Vec<u8>) {
    Head {
        len: 8,
        kind: kind::PING,
        flags: if ack { flag::ACK } else { 0 },
        stream: 0,
    }
    .write(dst);
    dst.extend_from_slice(&data);
}

/// Writes a GOAWAY naming the last stream this end will process.
pub fn write_goaway(last_stream: u32, reason: Reason, debug: &[u8], dst: &mut Vec<u8>) {
    Head {
        len: 8 + debug.len(),
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(dst);
    dst.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    dst.extend_from_slice(&reason.0.to_be_bytes());
    dst.extend_from_slice(debug);
}

/// Writes an RST_STREAM.
pub fn write_rst_stream(stream: u32, reason: Reason, dst: &mut Vec<u8>) {
    Head {
        len: 4,
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
    }
    .write(dst);
    dst.extend_from_slice(&reason.0.to_be_bytes());
}

/// Writes a WINDOW_UPDATE (`increment` from 1 to 2^31-1; stream 0: the connection's).
pub fn write_window_update(stream: u32, increment: u32, dst: &mut Vec<u8>) {
    Head {
        len: 4,
        kind: kind::WINDOW_UPDATE,
        flags: 0,
        stream,
    }
    .write(dst);
    dst.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}
