//! A hand-rolled HTTP/2 peer for hostile-client tests: it writes the frames a
//! well-behaved client (the `h2` crate) never would, and reads the server's frames
//! back over a blocking socket with a read timeout (no sleeps: a read either returns
//! a frame or times out).
//!
//! Only what the tests need (RFC 9113 §4.1, RFC 7541):
//! - frames: the 9-byte header + payload, any type, flags and stream id;
//! - HPACK out: literal header fields without indexing, new name, plain strings;
//! - HPACK in: only `:status`, which this peer can decode because it announces
//!   `SETTINGS_HEADER_TABLE_SIZE = 0` (the server can index nothing) and a status is
//!   three digits (the five- and six-bit Huffman codes of RFC 7541 Appendix B).
//!
//! Also the sidecar's resource usage from `/proc` (`Usage`), to show an attack stays
//! bounded.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Settings identifiers (RFC 9113 §6.5.2).
pub const HEADER_TABLE_SIZE: u16 = 0x1;
pub const ENABLE_PUSH: u16 = 0x2;
pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One frame, as written or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// What a peer learns about one of its streams (see `Conn::outcome`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Response HEADERS with this `:status` (0 if it could not be decoded).
    Status(u16),
    /// RST_STREAM on the stream, with its error code.
    Reset(u32),
    /// GOAWAY: its error code, last stream id and debug data.
    GoAway {
        code: u32,
        last_stream: u32,
        debug: String,
    },
    /// The server closed the connection without a word on the stream.
    Closed,
    /// Nothing about the stream within the time allowed.
    TimedOut,
}

/// How `Conn::send_data` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// Every frame was written.
    Sent,
    /// A window stayed closed (no WINDOW_UPDATE) for the time allowed.
    Stalled { frames: usize },
    /// The server reset the stream, sent GOAWAY or closed the connection.
    Stopped { frames: usize },
}

/// A client connection that has exchanged prefaces and SETTINGS with the server.
pub struct Conn {
    socket: TcpStream,
    buf: Vec<u8>,
    /// What the server still lets us send (RFC 9113 §6.9): on the connection, on
    /// each stream, and on a new stream (its SETTINGS_INITIAL_WINDOW_SIZE; a later
    /// change of that setting is not followed). WINDOW_UPDATEs add, DATA subtracts.
    conn_credit: i64,
    stream_credit: HashMap<u32, i64>,
    initial_window: i64,
    /// The server's first SETTINGS.
    pub server_settings: Vec<(u16, u32)>,
    /// Every frame read so far, for failure messages and later checks.
    pub seen: Vec<Frame>,
    /// The server closed its side.
    eof: bool,
}

/// Resident memory and CPU time of a process, from `/proc/<pid>/status` and `stat`.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak resident set since start), KiB.
    pub peak_kib: u64,
    /// utime + stime.
    pub cpu: Duration,
}

impl Frame {
    pub fn new(kind: u8, flags: u8, stream: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            flags,
            stream,
            payload,
        }
    }

    /// The 9-byte header followed by the payload.
    pub fn encode(&self) -> Vec<u8> {
        let len = u32::try_from(self.payload.len()).expect("payload under 16 MiB");
        assert!(len < 1 << 24, "a frame length has 24 bits");
        let mut out = Vec::with_capacity(9 + self.payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn headers(stream: u32, block: Vec<u8>, flags: u8) -> Frame {
        Frame::new(HEADERS, flags, stream, block)
    }

    pub fn continuation(stream: u32, block: Vec<u8>, end_headers: bool) -> Frame {
        Frame::new(
            CONTINUATION,
            if end_headers { END_HEADERS } else { 0 },
            stream,
            block,
        )
    }

    pub fn data(stream: u32, data: &[u8], end_stream: bool) -> Frame {
        Frame::new(
            DATA,
            if end_stream { END_STREAM } else { 0 },
            stream,
            data.to_vec(),
        )
    }

    pub fn rst(stream: u32, code: u32) -> Frame {
        Frame::new(RST_STREAM, 0, stream, code.to_be_bytes().to_vec())
    }

    pub fn settings(values: &[(u16, u32)]) -> Frame {
        let payload = values
            .iter()
            .flat_map(|(id, v)| id.to_be_bytes().into_iter().chain(v.to_be_bytes()))
            .collect();
        Frame::new(SETTINGS, 0, 0, payload)
    }

    pub fn ping(data: [u8; 8]) -> Frame {
        Frame::new(PING, 0, 0, data.to_vec())
    }

    pub fn window_update(stream: u32, increment: u32) -> Frame {
        Frame::new(WINDOW_UPDATE, 0, stream, increment.to_be_bytes().to_vec())
    }

    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(
            self.payload.get(at..at + 4)?.try_into().ok()?,
        ))
    }

    /// The (id, value) pairs of a SETTINGS frame.
    pub fn setting_values(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    fn goaway(&self) -> Outcome {
        let word = |at: usize| {
            self.payload
                .get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        Outcome::GoAway {
            code: word(4),
            last_stream: word(0) & 0x7fff_ffff,
            debug: String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned(),
        }
    }
}

impl Conn {
    /// Connects, sends the preface and SETTINGS (no header table, no push, plus
    /// `extra`), waits for the server's SETTINGS and acknowledges them.
    pub fn connect(addr: SocketAddr, extra: &[(u16, u32)]) -> Conn {
        let socket = TcpStream::connect(addr).expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        socket
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        let mut conn = Conn {
            socket,
            buf: Vec::new(),
            conn_credit: 65_535,
            stream_credit: HashMap::new(),
            initial_window: 65_535,
            eof: false,
            server_settings: Vec::new(),
            seen: Vec::new(),
        };
        let mut settings = vec![(HEADER_TABLE_SIZE, 0), (ENABLE_PUSH, 0)];
        settings.extend_from_slice(extra);
        let mut hello = PREFACE.to_vec();
        hello.extend(Frame::settings(&settings).encode());
        conn.write(&hello).expect("preface");
        let first = conn
            .read_until(Duration::from_secs(5), |f| {
                f.kind == SETTINGS && f.flags & ACK == 0
            })
            .unwrap_or_else(|| panic!("no SETTINGS from the server: {:?}", conn.seen));
        conn.server_settings = first.setting_values();
        if let Some(window) = conn.server_setting(INITIAL_WINDOW_SIZE) {
            conn.initial_window = i64::from(window);
        }
        conn.send(&Frame::new(SETTINGS, ACK, 0, Vec::new()))
            .expect("SETTINGS ACK");
        conn
    }

    /// A value from the server's first SETTINGS.
    pub fn server_setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    pub fn send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.write(&frame.encode())
    }

    /// Writes all `frames` at once (one syscall per ~64 KiB).
    pub fn send_all<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Frame>,
    ) -> std::io::Result<()> {
        let mut out = Vec::new();
        for frame in frames {
            out.extend(frame.encode());
            if out.len() >= 64 * 1024 {
                self.write(&out)?;
                out.clear();
            }
        }
        self.write(&out)
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.socket.write_all(bytes)
    }

    /// The socket, for tests that need to write without reading (or to shut it down).
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Sends `count` DATA frames carrying `chunk` on `stream` (the last one with
    /// END_STREAM when `end`), never beyond the server's flow-control windows. When a
    /// window is closed it waits up to `stall` for a WINDOW_UPDATE; a RST_STREAM on the
    /// stream, a GOAWAY or the connection closing stops it.
    pub fn send_data(
        &mut self,
        stream: u32,
        chunk: &[u8],
        count: usize,
        end: bool,
        stall: Duration,
    ) -> DataEnd {
        let size = i64::try_from(chunk.len()).expect("a small chunk");
        let mut sent = 0;
        while sent < count {
            let credit = |c: &Conn| c.conn_credit.min(c.credit(stream));
            let fit = if size == 0 {
                count - sent
            } else {
                usize::try_from(credit(self).max(0) / size).expect("non-negative")
            };
            if fit == 0 {
                let before = credit(self);
                let updated =
                    self.read_until(stall, |f| f.kind == WINDOW_UPDATE || stops(f, stream));
                match updated {
                    Some(f) if stops(&f, stream) => return DataEnd::Stopped { frames: sent },
                    Some(_) => continue,
                    None if before == credit(self) && !self.closed_now() => {
                        return DataEnd::Stalled { frames: sent };
                    }
                    None => return DataEnd::Stopped { frames: sent },
                }
            }
            // One write of at most ~64 KiB of frames at a time, then a look at what
            // the server said meanwhile.
            let batch = fit.min(count - sent).min(64 * 1024 / (9 + chunk.len()));
            let mut out = Vec::with_capacity(batch * (9 + chunk.len()));
            for i in 0..batch {
                let last = end && sent + i + 1 == count;
                out.extend(Frame::data(stream, chunk, last).encode());
            }
            if self.write(&out).is_err() {
                return DataEnd::Stopped { frames: sent };
            }
            let bytes = size * i64::try_from(batch).expect("a batch fits");
            self.conn_credit -= bytes;
            *self
                .stream_credit
                .entry(stream)
                .or_insert(self.initial_window) -= bytes;
            sent += batch;
            self.poll_available();
            if self.seen.iter().any(|f| stops(f, stream)) {
                return DataEnd::Stopped { frames: sent };
            }
        }
        DataEnd::Sent
    }

    /// What `stream` may still send, by its own window.
    fn credit(&self, stream: u32) -> i64 {
        self.stream_credit
            .get(&stream)
            .copied()
            .unwrap_or(self.initial_window)
    }

    /// Reads whatever frames have already arrived, without waiting.
    fn poll_available(&mut self) {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut chunk = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = self.socket.read(&mut chunk) {
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.socket.set_nonblocking(false).expect("blocking");
        while let Some(frame) = self.parse() {
            self.seen.push(frame);
        }
    }

    /// Whether a GOAWAY has been read (the server is done with this connection).
    fn closed_now(&self) -> bool {
        self.seen.iter().any(|f| f.kind == GOAWAY)
    }

    /// The next frame, or None when the connection closed or nothing came `within`.
    /// Distinguish the two with `closed`.
    pub fn next_frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = self.parse() {
                self.seen.push(frame.clone());
                return Some(frame);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("read timeout");
            let mut chunk = [0u8; 64 * 1024];
            if self.eof {
                return None;
            }
            match self.socket.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until one matches `want` (returned) or `within` passes (None).
    pub fn read_until(
        &mut self,
        within: Duration,
        mut want: impl FnMut(&Frame) -> bool,
    ) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = self.next_frame(left)?;
            if want(&frame) {
                return Some(frame);
            }
        }
    }

    /// What became of `stream` within `within`: a response status, a reset, a GOAWAY
    /// (whatever its last stream id), the connection closing, or nothing.
    pub fn outcome(&mut self, stream: u32, within: Duration) -> Outcome {
        // What arrived while we were writing counts too.
        if let Some(known) = self.seen.iter().find_map(|f| about(f, stream)) {
            return known;
        }
        let deadline = Instant::now() + within;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Outcome::TimedOut;
            };
            let Some(frame) = self.next_frame(left) else {
                return if Instant::now() < deadline {
                    Outcome::Closed
                } else {
                    Outcome::TimedOut
                };
            };
            if let Some(outcome) = about(&frame, stream) {
                return outcome;
            }
        }
    }

    /// The GOAWAY the server sent (reading on until one comes, the connection closes
    /// or `within` passes).
    pub fn goaway(&mut self, within: Duration) -> Option<Outcome> {
        if let Some(frame) = self.seen.iter().find(|f| f.kind == GOAWAY) {
            return Some(frame.goaway());
        }
        self.read_until(within, |f| f.kind == GOAWAY)
            .map(|f| f.goaway())
    }

    /// Whether the server has closed its side (seen by a read).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Reads and discards everything (unparsed) until the server closes the
    /// connection (true) or `within` passes (false).
    pub fn closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut chunk = [0u8; 64 * 1024];
        self.buf.clear();
        while !self.eof {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("read timeout");
            match self.socket.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => self.eof = true,
            }
        }
        true
    }

    fn parse(&mut self) -> Option<Frame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = usize::from(self.buf[0]) << 16
            | usize::from(self.buf[1]) << 8
            | usize::from(self.buf[2]);
        if self.buf.len() < 9 + len {
            return None;
        }
        let stream =
            u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
        let frame = Frame::new(
            self.buf[3],
            self.buf[4],
            stream,
            self.buf[9..9 + len].to_vec(),
        );
        self.buf.drain(..9 + len);
        if let (WINDOW_UPDATE, Ok(bytes)) = (frame.kind, <[u8; 4]>::try_from(&frame.payload[..])) {
            let increment = i64::from(u32::from_be_bytes(bytes) & 0x7fff_ffff);
            if frame.stream == 0 {
                self.conn_credit += increment;
            } else {
                *self
                    .stream_credit
                    .entry(frame.stream)
                    .or_insert(self.initial_window) += increment;
            }
        }
        Some(frame)
    }
}

/// What `frame` says about `stream`, if anything.
fn about(frame: &Frame, stream: u32) -> Option<Outcome> {
    match frame.kind {
        HEADERS if frame.stream == stream => {
            Some(Outcome::Status(status(&frame.payload).unwrap_or(0)))
        }
        RST_STREAM if frame.stream == stream => {
            Some(Outcome::Reset(frame.error_code().unwrap_or(u32::MAX)))
        }
        GOAWAY => Some(frame.goaway()),
        _ => None,
    }
}

/// Whether `frame` ends sending on `stream`: its RST_STREAM, or a GOAWAY.
fn stops(frame: &Frame, stream: u32) -> bool {
    frame.kind == GOAWAY || (frame.kind == RST_STREAM && frame.stream == stream)
}

/// An HPACK block of literal fields without indexing, new names, plain strings
/// (RFC 7541 §6.2.2). Names are written as given: upper case stays upper case.
pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(name.len(), 7, 0x00, &mut out);
        out.extend_from_slice(name.as_bytes());
        integer(value.len(), 7, 0x00, &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The pseudo-header fields of a request, then `extra`.
pub fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", "orders"),
    ];
    fields.extend_from_slice(extra);
    hpack(&fields)
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1); `high` holds the
/// bits above the prefix in the first byte.
pub fn integer(mut value: usize, prefix: u32, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | u8::try_from(value).expect("under the prefix"));
        return;
    }
    out.push(high | u8::try_from(max).expect("a prefix is at most 8 bits"));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).expect("7 bits") | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).expect("7 bits"));
}

fn read_integer(block: &[u8], at: &mut usize, prefix: u32) -> Option<usize> {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(*block.get(*at)?) & max;
    *at += 1;
    if value < max {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*at)?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return Some(value);
        }
    }
}

/// The `:status` of a response header block that indexes nothing dynamic (see the
/// module comment); None when it starts with anything else.
pub fn status(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let mut at = 0;
    // Dynamic table size updates (ours is 0) may come first.
    while block.get(at)? & 0xe0 == 0x20 {
        read_integer(block, &mut at, 5)?;
    }
    let first = *block.get(at)?;
    let name = if first & 0x80 != 0 {
        let index = read_integer(block, &mut at, 7)?;
        return STATIC.get(index.checked_sub(8)?).copied();
    } else if first & 0x40 != 0 {
        read_integer(block, &mut at, 6)?
    } else {
        read_integer(block, &mut at, 4)?
    };
    if !(8..=14).contains(&name) {
        return None;
    }
    let huffman = block.get(at)? & 0x80 != 0;
    let len = read_integer(block, &mut at, 7)?;
    let value = block.get(at..at + len)?;
    let digits = if huffman {
        huffman_digits(value)?
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    digits.parse().ok()
}

/// Decodes a Huffman string of decimal digits: '0'-'2' are 00000-00010, '3'-'9' are
/// 011001-011111 (RFC 7541 Appendix B); the rest is the all-ones padding.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let code = |from: usize, n: usize| {
        bits.get(from..from + n)
            .map(|b| b.iter().fold(0u8, |acc, bit| acc << 1 | bit))
    };
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let five = code(at, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
        } else if (0b01100..=0b01111).contains(&five) {
            let six = code(at, 6)?;
            out.push(char::from(b'0' + six.checked_sub(0b010110)?));
            at += 6;
        } else if bits[at..].iter().all(|b| *b == 1) {
            break;
        } else {
            return None;
        }
    }
    Some(out)
}

impl Usage {
    /// Reads `/proc/<pid>`; panics if the process is gone.
    pub fn of(pid: i32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let ticks = fields[11] + fields[12];
        Usage {
            rss_kib: kib("VmRSS:"),
            peak_kib: kib("VmHWM:"),
            cpu: Duration::from_millis(ticks * 1000 / clock_ticks()),
        }
    }
}

/// USER_HZ, the unit of utime and stime.
fn clock_ticks() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf(3) only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for value in [0, 30, 126, 127, 128, 300, 70_000] {
            let mut out = Vec::new();
            integer(value, 7, 0, &mut out);
            assert_eq!(read_integer(&out, &mut 0, 7), Some(value));
        }
    }

    #[test]
    fn statuses_decode() {
        assert_eq!(status(&[0x88]), Some(200));
        assert_eq!(status(&[0x20, 0x8c]), Some(400));
        // ":status: 431", literal with name index 8, Huffman 011010 011001 00001 + 1s.
        assert_eq!(status(&[0x08, 0x83, 0x69, 0x90, 0xff]), Some(431));
        assert_eq!(status(&[0x48, 0x82, 0x6c, 0x02]), Some(502));
        assert_eq!(status(&[0x48, 0x03, b'5', b'0', b'2']), Some(502));
    }

    #[test]
    fn frames_encode() {
        let f = Frame::rst(3, CANCEL).encode();
        assert_eq!(f, [0, 0, 4, RST_STREAM, 0, 0, 0, 0, 3, 0, 0, 0, 8]);
    }
}
