//! Frames as a client writes them, and the server end's events and output as the
//! attack tests compare them.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub use graylane_http2::frame::{
    self, DEFAULT_MAX_FRAME_SIZE, Frame, HEAD_LEN, Head, Reason, kind, setting,
};
pub use graylane_http2::hpack::encode_field;
pub use graylane_http2::server::{Config, Connection, ConnectionError, Event, PREFACE};

#[derive(Debug, PartialEq, Clone)]
pub enum Seen {
    Request(u32, String, bool),
    TooLarge(u32),
    Data(u32, Vec<u8>, bool),
    Trailers(u32, usize),
    Malformed(u32, &'static str),
    Reset(u32, Reason),
    WindowUpdate(u32),
    Other,
}

pub fn open(config: Config) -> Connection {
    let mut conn = Connection::new(config);
    let mut hello = PREFACE.to_vec();
    frame::write_settings(&[], &mut hello);
    assert_eq!(conn.recv(&hello, &mut |_| ()), Ok(hello.len()));
    let n = conn.output().len();
    conn.advance(n);
    conn
}

pub fn feed(conn: &mut Connection, bytes: &[u8]) -> (Result<usize, ConnectionError>, Vec<Seen>) {
    let mut seen = Vec::new();
    let result = conn.recv(bytes, &mut |e| seen.push(owned(e)));
    (result, seen)
}

pub fn owned(e: Event<'_>) -> Seen {
    match e {
        Event::Request {
            stream,
            head,
            end_stream,
            ..
        } => Seen::Request(stream, head.uri.to_string(), end_stream),
        Event::TooLarge { stream } => Seen::TooLarge(stream),
        Event::Data {
            stream,
            data,
            end_stream,
        } => Seen::Data(stream, data.to_vec(), end_stream),
        Event::Trailers { stream, trailers } => Seen::Trailers(stream, trailers.len()),
        Event::Malformed { stream, what } => Seen::Malformed(stream, what),
        Event::Reset { stream, reason } => Seen::Reset(stream, reason),
        Event::WindowUpdate { stream } => Seen::WindowUpdate(stream),
        _ => Seen::Other,
    }
}

/// Feeds byte by byte, as a driver keeping unconsumed bytes would.
pub fn feed_slowly(
    conn: &mut Connection,
    bytes: &[u8],
) -> (Result<usize, ConnectionError>, Vec<Seen>) {
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0;
    for &b in bytes {
        buf.push(b);
        match conn.recv(&buf, &mut |e| seen.push(owned(e))) {
            Ok(n) => {
                buf.drain(..n);
                total += n;
            }
            Err(e) => return (Err(e), seen),
        }
    }
    (Ok(total), seen)
}

/// (type, stream, reason, last_stream for GOAWAY, increment for WINDOW_UPDATE)
pub fn written(conn: &mut Connection) -> Vec<(u8, u32, Option<Reason>, u32)> {
    let out = conn.output().to_vec();
    conn.advance(out.len());
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while !rest.is_empty() {
        let head = Head::parse(rest[..HEAD_LEN].try_into().unwrap(), 1 << 24).unwrap();
        let payload = &rest[HEAD_LEN..HEAD_LEN + head.len];
        let (reason, extra) = match Frame::parse(head, payload) {
            Ok(Frame::RstStream { reason, .. }) => (Some(reason), 0),
            Ok(Frame::GoAway {
                reason,
                last_stream,
                ..
            }) => (Some(reason), last_stream),
            Ok(Frame::WindowUpdate { increment, .. }) => (None, increment),
            _ => (None, 0),
        };
        frames.push((head.kind, head.stream, reason, extra));
        rest = &rest[HEAD_LEN + head.len..];
    }
    frames
}

pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        encode_field(name.as_bytes(), value.as_bytes(), false, &mut block);
    }
    block
}

pub const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "orders"),
    (":path", "/a"),
];
pub const POST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "orders"),
    (":path", "/a"),
];

pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_headers(
        stream,
        end_stream,
        &block(fields),
        DEFAULT_MAX_FRAME_SIZE,
        &mut out,
    );
    out
}

pub fn data(stream: u32, bytes: &[u8], end_stream: bool) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_data(stream, end_stream, bytes, &mut out);
    out
}

pub fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_window_update(stream, inc, &mut out);
    out
}
