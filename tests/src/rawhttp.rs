//! HTTP/1.1 on raw sockets, for hardening tests that must send bytes no HTTP library
//! would write and see exactly what crosses the wire.
//!
//! - [`Wire`]: a TCP stream read with deadlines (head, exact length, chunked, to close);
//! - [`Client`]: a hostile client's side: write anything, read responses one by one, and
//!   tell a closed connection from an open one within a bounded wait;
//! - [`Upstream`]: a raw app on 127.0.0.1:0 that records every byte and every complete
//!   request it receives and answers by path (see [`Upstream::start`]).
//!
//! Every read has a deadline, every loop a bound; nothing sleeps.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most a head may take before it is refused as malformed (both sides).
const MAX_HEAD: usize = 1 << 20;
/// How long an upstream connection may sit idle before its thread gives up on it.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// Why a read stopped short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The peer closed (read returned 0).
    Eof,
    /// The peer reset the connection (or another I/O error).
    Reset(String),
    /// Nothing more arrived before the deadline: the connection is still open.
    Timeout,
    /// Bytes that are not the HTTP/1.1 this reader expects.
    Malformed(String),
}

impl Stop {
    /// Whether the peer ended the connection (EOF or reset), as opposed to a timeout.
    pub fn closed(&self) -> bool {
        matches!(self, Stop::Eof | Stop::Reset(_))
    }
}

/// A message head: the start line and the header fields in order, as received.
#[derive(Clone, Default)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    /// The head exactly as received, up to and including the blank line.
    pub raw: Vec<u8>,
}

impl std::fmt::Debug for Head {
    /// The start line and the fields, without the raw bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head")
            .field("start_line", &self.start_line)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Head {
    /// Parses a head (without requiring it to be valid: lines without a colon are kept
    /// as a header with an empty value, so the tests can see them).
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Head {
            start_line,
            headers,
            raw: raw.to_vec(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let name = name.to_string();
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any header is named `name` (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The method (first word of a request line).
    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or_default()
    }

    /// The request target (second word of a request line).
    pub fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or_default()
    }

    /// The status code of a response head, 0 if there is none.
    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// How the body that follows this head is framed, per RFC 9112 §6.3 for the cases
    /// these tests produce: chunked when the last transfer coding is chunked, else the
    /// Content-Length, else none (requests) or to the close (responses).
    fn framing(&self, response: bool) -> Result<Framing, Stop> {
        let status = self.status();
        if response && ((100..200).contains(&status) || status == 204 || status == 304) {
            return Ok(Framing::Length(0));
        }
        let codings: Vec<String> = self
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(last) = codings.last() {
            return if last == "chunked" {
                Ok(Framing::Chunked)
            } else if response {
                Ok(Framing::ToClose)
            } else {
                Err(Stop::Malformed(format!("transfer-encoding {codings:?}")))
            };
        }
        match self.get("content-length") {
            Some(v) => v
                .parse()
                .map(Framing::Length)
                .map_err(|_| Stop::Malformed(format!("content-length {v:?}"))),
            None if response => Ok(Framing::ToClose),
            None => Ok(Framing::Length(0)),
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
    ToClose,
}

/// A TCP stream read through a buffer, every read bounded by a deadline.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Called with every chunk of bytes as it is read (the upstream's recorder).
    tap: Option<Box<dyn FnMut(&[u8]) + Send>>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            tap: None,
        }
    }

    /// The underlying stream (to write, or to shut down).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Bytes read but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads once more into the buffer, waiting until `deadline` at most.
    pub fn fill(&mut self, deadline: Instant) -> Result<usize, Stop> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Timeout);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| Stop::Reset(e.to_string()))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Stop::Eof),
            Ok(n) => {
                if let Some(tap) = &mut self.tap {
                    tap(&chunk[..n]);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(Stop::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(Stop::Reset(e.to_string())),
        }
    }

    /// Reads a head up to its blank line (CRLF CRLF).
    pub fn read_head(&mut self, deadline: Instant) -> Result<Head, Stop> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(Head::parse(&raw));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Malformed("head over 1 MiB".into()));
            }
            self.fill(deadline)?;
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, Stop> {
        while self.buf.len() < n {
            self.fill(deadline)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one CRLF-terminated line, without its CRLF.
    fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..end + 2).collect();
                line.truncate(end);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Stop::Malformed("line over 1 MiB".into()));
            }
            self.fill(deadline)?;
        }
    }

    /// Reads a chunked body (RFC 9112 §7.1) to its last chunk and trailers; returns
    /// the decoded data. Chunk extensions are skipped.
    pub fn read_chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, Stop> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| Stop::Malformed(format!("chunk size {text:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.read_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact(size, deadline)?);
            if !self.read_line(deadline)?.is_empty() {
                return Err(Stop::Malformed("chunk data longer than its size".into()));
            }
        }
    }

    /// Reads whatever comes until the peer closes or `deadline`; returns the bytes and
    /// why it stopped.
    pub fn read_to_end(&mut self, deadline: Instant) -> (Vec<u8>, Stop) {
        loop {
            if let Err(stop) = self.fill(deadline) {
                return (std::mem::take(&mut self.buf), stop);
            }
        }
    }

    /// Reads the body that follows `head` (a response when `response`).
    fn read_body(
        &mut self,
        head: &Head,
        response: bool,
        deadline: Instant,
    ) -> Result<Vec<u8>, Stop> {
        match head.framing(response)? {
            Framing::Length(n) => self.read_exact(n, deadline),
            Framing::Chunked => self.read_chunked(deadline),
            Framing::ToClose => match self.read_to_end(deadline) {
                (body, Stop::Eof) => Ok(body),
                (_, stop) => Err(stop),
            },
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One response as the client read it.
#[derive(Clone)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    /// The head, and the body as text (its first 200 bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(200)];
        f.debug_struct("Response")
            .field("head", &self.head)
            .field("body", &String::from_utf8_lossy(shown))
            .finish()
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes raw bytes and reads what comes back.
pub struct Client {
    pub wire: Wire,
    pub connected: Instant,
}

impl Client {
    /// Connects (within 2 s) to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        Client {
            wire: Wire::new(stream),
            connected: Instant::now(),
        }
    }

    /// Writes `bytes`; an error means the peer already closed.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wire.stream().write_all(bytes)
    }

    /// Reads one response (informational ones included) within `within`.
    pub fn response(&mut self, within: Duration) -> Result<Response, Stop> {
        let deadline = Instant::now() + within;
        let head = self.wire.read_head(deadline)?;
        let body = self.wire.read_body(&head, true, deadline)?;
        Ok(Response { head, body })
    }

    /// Reads the next final (non-1xx) response within `within`; returns it and the
    /// informational responses before it.
    pub fn final_response(&mut self, within: Duration) -> Result<(Response, Vec<Response>), Stop> {
        let deadline = Instant::now() + within;
        let mut informational = Vec::new();
        // Bounded: a server gets at most 16 informational responses per request here.
        for _ in 0..16 {
            let response = self.response(deadline.saturating_duration_since(Instant::now()))?;
            if response.status() >= 200 {
                return Ok((response, informational));
            }
            informational.push(response);
        }
        Err(Stop::Malformed(
            "more than 16 informational responses".into(),
        ))
    }

    /// Reads every response until the connection closes or `within` passes: the
    /// responses, any bytes after them that are not a whole response, and why reading
    /// stopped (a timeout means the connection was still open).
    pub fn responses_until_close(&mut self, within: Duration) -> (Vec<Response>, Vec<u8>, Stop) {
        let deadline = Instant::now() + within;
        let mut responses = Vec::new();
        // Bounded: 64 responses are far more than any case here provokes.
        for _ in 0..64 {
            match self.response(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => responses.push(r),
                Err(Stop::Malformed(_)) => {
                    let (rest, stop) = self.wire.read_to_end(deadline);
                    return (responses, rest, stop);
                }
                Err(stop) => return (responses, self.wire.buf.split_off(0), stop),
            }
        }
        (responses, Vec::new(), Stop::Timeout)
    }

    /// Waits up to `within` for the server to close: Ok(time since connect) when it
    /// did, Err(bytes it sent meanwhile, why reading stopped) when it did not.
    /// Whatever the server sends meanwhile is read and discarded.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Duration, (Vec<u8>, Stop)> {
        let deadline = Instant::now() + within;
        let (bytes, stop) = self.wire.read_to_end(deadline);
        if stop.closed() {
            Ok(self.connected.elapsed())
        } else {
            Err((bytes, stop))
        }
    }
}

/// A GET with `Host: host` on a fresh connection, closed after; the response or why none.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Response, Stop> {
    let mut client = Client::connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    client
        .send(request.as_bytes())
        .map_err(|e| Stop::Reset(e.to_string()))?;
    client.response(Duration::from_secs(10))
}

/// A complete request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub head: Head,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Which upstream connection it came on (0, 1, … in accept order).
    pub connection: usize,
}

/// What happened while streaming a big response (`/big/...`).
#[derive(Clone, Debug, Default)]
pub struct Streamed {
    pub written: u64,
    /// When the last write failed (the peer closed), and why.
    pub ended: Option<(Instant, String)>,
}

#[derive(Default)]
struct Record {
    /// Every byte received, per connection, in accept order.
    bytes: Vec<Vec<u8>>,
    requests: Vec<Received>,
    /// Connections whose bytes stopped being valid HTTP/1.1 (connection, why).
    malformed: Vec<(usize, String)>,
    streamed: Vec<Streamed>,
}

/// A raw upstream app on 127.0.0.1:0. It records every byte and every complete request,
/// and answers by the request's path:
///
/// - `/big/N`: 200 with a body of N bytes (`Content-Length`), written as fast as the
///   peer reads; progress in [`Upstream::streamed`];
/// - `/refuse-417...`: `417` with `Connection: close` as soon as the head is in, without
///   reading the body; then records (never parses) what else arrives;
/// - `/refuse-413...`: `413` as soon as the head is in, keeps the connection, and
///   discards the declared body before reading the next request (RFC 9110 §15.5.14);
///   the request is recorded with an empty body;
/// - `/trailers...`: `200`, chunked, `Trailer: x-checksum`, body `hello` and the
///   trailer field `x-checksum: abc`;
/// - `/status-NNN...`: status NNN (any three digits) with an empty body, then closes;
/// - any request with `Upgrade: h2c`: `101 Switching Protocols` and an HTTP/2 SETTINGS
///   frame, then closes (what an h2c server would do, were the upgrade forwarded);
/// - anything else, after reading the whole body: `200` with body `ok <target>`.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves every connection on its own thread.
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let upstream = Upstream {
            addr,
            record: Arc::clone(&record),
        };
        let accepting = upstream.clone();
        // Detached: the listener lives as long as the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let conn = {
                    let mut r = accepting.lock();
                    r.bytes.push(Vec::new());
                    r.bytes.len() - 1
                };
                let serving = accepting.clone();
                std::thread::spawn(move || serving.serve(stream, conn));
            }
        });
        upstream
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every complete request received so far, in the order they completed.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// Every byte received so far on every connection, concatenated in accept order.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.concat()
    }

    /// Whether `needle` occurs in the bytes received on any one connection.
    pub fn saw(&self, needle: &str) -> bool {
        self.lock()
            .bytes
            .iter()
            .any(|b| find(b, needle.as_bytes()).is_some())
    }

    /// Complete requests whose target contains `needle`.
    pub fn requests_to(&self, needle: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.head.target().contains(needle))
            .collect()
    }

    /// Connections whose bytes were not valid HTTP/1.1, and why.
    pub fn malformed(&self) -> Vec<(usize, String)> {
        self.lock().malformed.clone()
    }

    /// Progress of every `/big/...` response so far.
    pub fn streamed(&self) -> Vec<Streamed> {
        self.lock().streamed.clone()
    }

    fn serve(&self, stream: TcpStream, conn: usize) {
        let record = Arc::clone(&self.record);
        let mut wire = Wire::new(stream);
        wire.tap = Some(Box::new(move |bytes| {
            let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
            r.bytes[conn].extend_from_slice(bytes);
        }));
        // Bounded: a connection serves at most 10,000 requests in these tests.
        for _ in 0..10_000 {
            let deadline = Instant::now() + UPSTREAM_IDLE;
            let head = match wire.read_head(deadline) {
                Ok(head) => head,
                Err(Stop::Malformed(why)) => return self.lock().malformed.push((conn, why)),
                Err(_) => return,
            };
            let target = head.target().to_string();
            if target.starts_with("/refuse-417") {
                self.lock().requests.push(Received {
                    head,
                    body: Vec::new(),
                    connection: conn,
                });
                let _ = wire.stream().write_all(
                    b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = wire.stream().shutdown(Shutdown::Write);
                // Keep recording (through the tap) whatever else the proxy sends.
                let _ = wire.read_to_end(Instant::now() + Duration::from_secs(10));
                return;
            }
            if target.starts_with("/refuse-413") {
                self.lock().requests.push(Received {
                    head: head.clone(),
                    body: Vec::new(),
                    connection: conn,
                });
                let _ = wire
                    .stream()
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n");
                match wire.read_body(&head, false, deadline) {
                    Ok(_) => continue,
                    Err(Stop::Malformed(why)) => return self.lock().malformed.push((conn, why)),
                    Err(_) => return,
                }
            }
            let body = match wire.read_body(&head, false, deadline) {
                Ok(body) => body,
                Err(Stop::Malformed(why)) => return self.lock().malformed.push((conn, why)),
                Err(_) => return,
            };
            let upgrade = head
                .get_all("upgrade")
                .any(|v| v.to_ascii_lowercase().contains("h2c"));
            self.lock().requests.push(Received {
                head,
                body,
                connection: conn,
            });
            if upgrade {
                // 101, then an empty SETTINGS frame (RFC 9113 §3.2, §6.5), then close.
                let _ = wire.stream().write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n\0\0\0\x04\0\0\0\0\0",
                );
                return;
            }
            if let Some(size) = target.strip_prefix("/big/") {
                let size = size.split(['?', '/']).next().unwrap_or_default();
                return self.stream_big(&mut wire, size.parse().unwrap_or(0));
            }
            if let Some(code) = target.strip_prefix("/status-") {
                let code = code.get(..3).unwrap_or_default();
                let response = format!("HTTP/1.1 {code} Odd\r\ncontent-length: 0\r\n\r\n");
                let _ = wire.stream().write_all(response.as_bytes());
                return;
            }
            if target.starts_with("/trailers") {
                let response = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
                                5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n";
                if wire.stream().write_all(response.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            let text = format!("ok {target}");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            if wire.stream().write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Writes a 200 with a `size`-byte body in 64 KiB writes, recording progress.
    fn stream_big(&self, wire: &mut Wire, size: u64) {
        let index = {
            let mut r = self.lock();
            r.streamed.push(Streamed::default());
            r.streamed.len() - 1
        };
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
        let chunk = vec![b'x'; 64 * 1024];
        let stream = wire.stream();
        // A write blocked for this long means the proxy stopped reading for good.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        if let Err(e) = stream.write_all(head.as_bytes()) {
            self.lock().streamed[index].ended = Some((Instant::now(), e.to_string()));
            return;
        }
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            if let Err(e) = stream.write_all(&chunk[..n]) {
                self.lock().streamed[index].ended = Some((Instant::now(), e.to_string()));
                return;
            }
            left -= n as u64;
            self.lock().streamed[index].written += n as u64;
        }
        self.lock().streamed[index].ended = Some((Instant::now(), "complete".into()));
    }
}
