//! HTTP/2 clients and upstreams at the edges of a request's life, with real processes:
//!
//! - an upstream that dies mid-response: the HTTP/2 client gets RST_STREAM, never a
//!   stream ended as if complete;
//! - an upstream that answers a request with GOAWAY before processing it: the request
//!   goes again, on a new connection, and the client never sees it fail;
//! - an upstream whose connection closes under a GET, before any answer: the GET goes
//!   again on a new connection;
//! - a POST whose body reached the upstream is never sent twice;
//! - an answer with a large header list passes; one past the limit is a 502, and
//!   later requests are served (on a new connection if h2 closed the old one);
//! - an app that speaks only HTTP/1.1 answers HTTP/2's preface with garbage (to h2):
//!   a 502 naming the service, not a wait for the timeout (504);
//! - the app sees the caller's `:authority` (and no `Host` beside it), through one
//!   sidecar and through two;
//! - a HEAD gets a head alone, from the app through two sidecars and from a sidecar's
//!   own error;
//! - a client cancelling many requests the app has not read yet (it is busy) does not
//!   make the app close the connection other requests share (rapid-reset defences
//!   count streams reset before they were accepted); nor does a client dying with
//!   many uploads the app has not read (their bodies fail in the sidecar).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use graylane_tests::h2raw::{self, Conn, END_HEADERS, END_STREAM, Frame, Outcome};
use graylane_tests::{ControlPlane, Sidecar, eventually};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn runtime() -> tokio::runtime::Runtime {
    // A worker thread drives connections between the test's steps.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn orders(dir: &std::path::Path, cp: &ControlPlane, app: SocketAddr) -> Sidecar {
    let (app, url) = (app.to_string(), cp.url());
    let s = Sidecar::start(
        dir,
        "orders-1",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-1",
            "--app-addr",
            &app,
            "--control-plane",
            &url,
        ],
    );
    s.wait_ready();
    s
}

/// Sends GET `path` over a new HTTP/2 connection to `addr`; the status, and the body
/// or the error that ended it.
async fn h2_get(addr: SocketAddr, path: &str) -> (u16, Result<Bytes, h2::Error>) {
    let (head, body) = h2_send(addr, "GET", &format!("http://orders{path}")).await;
    (head.status.as_u16(), body)
}

/// An HTTP/2 app on port 0: each connection it accepts goes to `serve`, with its
/// number (from 0), in a task of its own.
fn h2_app<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            for n in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(tcp, n));
            }
        });
    });
    addr
}

#[test]
fn an_upstream_dying_mid_response_resets_the_http2_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // An HTTP/2 app that sends its head and part of its body, then dies.
    let app = h2_app(|tcp, _| async move {
        let Ok(mut conn) = h2::server::handshake(tcp).await else {
            return;
        };
        let Some(Ok((_, mut respond))) = conn.accept().await else {
            return;
        };
        let response = http::Response::builder()
            .status(200)
            .header("content-length", "1000")
            .body(())
            .unwrap();
        let mut body = respond.send_response(response, false).unwrap();
        let _ = body.send_data(Bytes::from_static(b"only the first bytes"), false);
        // Flush what was sent, then the connection (the process) is gone.
        let _ = tokio::time::timeout(Duration::from_millis(200), conn.accept()).await;
    });
    let orders = orders(dir.path(), &cp, app);
    let (status, body) = runtime().block_on(h2_get(orders.inbound, "/"));
    assert_eq!(status, 200, "the head had gone out");
    let error = body.expect_err("a truncated body must not end as if complete");
    assert!(error.is_reset(), "{error:?}");
}

/// A sidecar for `frontend`, with no app: its outbound listener is the caller's.
fn frontend(dir: &std::path::Path, cp: &ControlPlane) -> Sidecar {
    let url = cp.url();
    let s = Sidecar::start(
        dir,
        "frontend-1",
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-1",
            "--control-plane",
            &url,
        ],
    );
    s.wait_ready();
    s
}

/// Sends `method` to `uri` over a new HTTP/2 connection to `addr`; the answer's head,
/// and its body or the error that ended it.
async fn h2_send(
    addr: SocketAddr,
    method: &str,
    uri: &str,
) -> (http::response::Parts, Result<Bytes, h2::Error>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let (head, mut body) = response.await.unwrap().into_parts();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(data) => {
                let _ = body.flow_control().release_capacity(data.len());
                all.extend_from_slice(&data);
            }
            Err(e) => return (head, Err(e)),
        }
    }
    (head, Ok(Bytes::from(all)))
}

/// An HTTP/2 app that answers every request with the `:authority` and `Host` it saw
/// (`-` for none); a HEAD with that answer's length and no body, as a server does.
fn authority_echo() -> SocketAddr {
    h2_app(|tcp, _| async move {
        let Ok(mut conn) = h2::server::handshake(tcp).await else {
            return;
        };
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            let host = request.headers().get("host");
            let seen = format!(
                "authority={} host={}",
                request.uri().authority().map_or("-", |a| a.as_str()),
                host.map_or("-", |h| h.to_str().unwrap()),
            );
            let head = request.method() == http::Method::HEAD;
            let response = http::Response::builder()
                .status(200)
                .header("content-length", seen.len())
                .body(())
                .unwrap();
            let Ok(mut body) = respond.send_response(response, head) else {
                continue;
            };
            if !head {
                let _ = body.send_data(Bytes::from(seen), true);
            }
        }
    })
}

#[test]
fn http2_requests_reach_the_app_with_the_callers_authority() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let orders = orders(dir.path(), &cp, authority_echo());
    let frontend = frontend(dir.path(), &cp);
    frontend.wait_endpoints("orders", 1);
    let rt = runtime();
    // One sidecar (the inbound), then two (frontend's outbound, over mTLS, then the
    // inbound): the app sees what the caller named, not an address.
    for (addr, uri) in [
        (orders.inbound, "http://orders/a"),
        (frontend.outbound, "http://orders/a"),
        (frontend.outbound, "http://orders.default:80/a"),
    ] {
        let (head, body) = rt.block_on(h2_send(addr, "GET", uri));
        assert_eq!(head.status, 200, "{uri}");
        let authority = uri.trim_start_matches("http://").trim_end_matches("/a");
        assert_eq!(
            body.unwrap(),
            format!("authority={authority} host=-"),
            "{uri} via {addr}"
        );
    }
}

#[test]
fn an_http2_head_gets_a_head_alone_from_the_app_and_from_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let _orders = orders(dir.path(), &cp, authority_echo());
    let frontend = frontend(dir.path(), &cp);
    frontend.wait_endpoints("orders", 1);
    let rt = runtime();
    // The app's answer, through two sidecars: the length a GET would get, no body.
    let (head, body) = rt.block_on(h2_send(frontend.outbound, "HEAD", "http://orders/a"));
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers["content-length"],
        "authority=orders host=-".len().to_string().as_str()
    );
    assert_eq!(body.unwrap(), "", "a HEAD's answer ended with its head");
    // The sidecar's own error: the client's h2 reads DATA on a HEAD as a protocol
    // error, which ended the stream without a status through two sidecars before.
    let (head, body) = rt.block_on(h2_send(frontend.outbound, "HEAD", "http://nosuch/a"));
    assert_eq!(head.status, 502);
    assert_eq!(body.unwrap(), "");
    let (head, body) = rt.block_on(h2_send(frontend.outbound, "GET", "http://nosuch/a"));
    assert_eq!(head.status, 502);
    let text = body.unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("nosuch"),
        "{text:?}"
    );
}

/// An HTTP/2 app that answers its first connection with GOAWAY before taking any
/// stream, then serves every later connection. Counts the requests it served.
fn goaway_then_serve() -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let addr = h2_app(move |tcp, n| {
        let count = Arc::clone(&count);
        async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            if n == 0 {
                // Last processed stream 0: nothing on it was processed.
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                while conn.accept().await.is_some() {}
                return;
            }
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let response = http::Response::builder().status(200).body(()).unwrap();
                let _ = respond.send_response(response, true);
            }
        }
    });
    (addr, served)
}

#[test]
fn a_request_the_upstream_refused_with_goaway_goes_again() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, served) = goaway_then_serve();
    let orders = orders(dir.path(), &cp, app);
    let (status, body) = runtime().block_on(h2_get(orders.inbound, "/"));
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

/// An HTTP/2 app whose first connection takes a stream and then closes (no GOAWAY, no
/// answer), as a crashing or restarting app does; later connections are served.
/// Counts the requests it took on each.
fn close_then_serve() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (cut, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (cut_count, served_count) = (Arc::clone(&cut), Arc::clone(&served));
    let addr = h2_app(move |tcp, n| {
        let (cut, served) = (Arc::clone(&cut_count), Arc::clone(&served_count));
        async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                if n == 0 {
                    cut.fetch_add(1, Ordering::SeqCst);
                    // Dropping the connection closes the socket unannounced.
                    return;
                }
                served.fetch_add(1, Ordering::SeqCst);
                let response = http::Response::builder().status(200).body(()).unwrap();
                let _ = respond.send_response(response, true);
            }
        }
    });
    (addr, cut, served)
}

#[test]
fn a_get_whose_upstream_connection_closed_before_answering_goes_again() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, cut, served) = close_then_serve();
    let orders = orders(dir.path(), &cp, app);
    let (status, body) = runtime().block_on(h2_get(orders.inbound, "/"));
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        cut.load(Ordering::SeqCst),
        1,
        "the first connection took it"
    );
    assert_eq!(served.load(Ordering::SeqCst), 1, "then a new one served it");
}

#[test]
fn a_post_whose_body_reached_the_upstream_is_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // Reads the whole request, then dies without answering.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            while !data.ends_with(b"the order") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let orders = orders(dir.path(), &cp, app);
    let client = Sidecar::start(
        dir.path(),
        "frontend",
        &["--service", "frontend", "--control-plane", &cp.url()],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 1);
    let mut stream = std::net::TcpStream::connect(client.outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 9\r\nConnection: close\r\n\r\nthe order")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "the app got the POST once: it is not retried"
    );
    drop(orders);
}

/// An HTTP/2 app answering `/fields-N` with N KiB of extra header fields (`/` with
/// none); counts the connections it accepted.
fn large_heads() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let addr = h2_app(move |tcp, _| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((request, mut respond))) = conn.accept().await {
                let kib: usize = request
                    .uri()
                    .path()
                    .strip_prefix("/fields-")
                    .map_or(0, |n| n.parse().unwrap());
                let mut response = http::Response::builder().status(200);
                for i in 0..kib {
                    response = response.header(format!("x-field-{i}"), "v".repeat(1000));
                }
                let _ = respond.send_response(response.body(()).unwrap(), true);
            }
        }
    });
    (addr, accepted)
}

#[test]
fn answers_with_large_header_lists_pass_up_to_the_limit_and_fail_as_502_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, accepted) = large_heads();
    let orders = orders(dir.path(), &cp, app);
    let rt = runtime();
    // 60 KiB of fields (a large Content-Security-Policy and cookies): as much as a
    // client may send the sidecar, so as much as an app may answer with.
    let (status, body) = rt.block_on(h2_get(orders.inbound, "/fields-60"));
    assert_eq!(status, 200, "{body:?}");
    // Past the limit: that request fails, as a bad gateway, not as a hang, and the
    // connection is kept: the next request goes on it.
    let (status, _) = rt.block_on(h2_get(orders.inbound, "/fields-100"));
    assert_eq!(status, 502);
    let (status, body) = rt.block_on(h2_get(orders.inbound, "/"));
    assert_eq!((status, body.unwrap()), (200, Bytes::new()));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection so far");
    // Far past it, yet short of what no honest block comes near: that request alone
    // fails, as before.
    let (status, _) = rt.block_on(h2_get(orders.inbound, "/fields-200"));
    assert_eq!(status, 502);
    let (status, body) = rt.block_on(h2_get(orders.inbound, "/"));
    assert_eq!((status, body.unwrap()), (200, Bytes::new()));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "still one connection");
    // Over four times the limit (CONTINUATION frames without end): taken for an
    // attack, the connection is closed. That request fails; the next is served on a
    // new connection.
    let (status, _) = rt.block_on(h2_get(orders.inbound, "/fields-600"));
    assert_eq!(status, 502);
    let (status, body) = rt.block_on(h2_get(orders.inbound, "/"));
    assert_eq!((status, body.unwrap()), (200, Bytes::new()));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new connection after it"
    );
}

/// An app that speaks only HTTP/1.1: whatever arrives, it answers 400 and closes, as
/// an HTTP/1.1 server does to HTTP/2's preface.
fn http1_only() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    addr
}

#[test]
fn an_http2_request_to_an_app_that_speaks_only_http1_is_a_502_not_a_wait() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let orders = orders(dir.path(), &cp, http1_only());
    let rt = runtime();
    for attempt in 0..2 {
        let (status, body) = rt.block_on(h2_get(orders.inbound, "/"));
        let body = body.unwrap();
        assert_eq!(status, 502, "attempt {attempt}: {body:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("upstream orders"),
            "attempt {attempt}: {text}"
        );
    }
}

/// The app's side of a connection, with a gate: closed, the app reads nothing (as an
/// app busy elsewhere), while the bytes the sidecar sends are kept and their frames
/// counted; opened, the app gets them all in one read.
struct Gated {
    tcp: tokio::net::TcpStream,
    gate: Arc<Gate>,
    held: Vec<u8>,
    /// Where the next frame header in `held` starts.
    scanned: usize,
    /// How much of `held` the app has read.
    handed: usize,
}

#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    /// While closed: HEADERS and RST_STREAM frames that arrived, and whether a DATA
    /// frame carried [`MARKER`].
    counts: Mutex<(usize, usize, bool)>,
    /// The app's read left waiting by the gate (not by the socket), woken on opening.
    waiting: Mutex<Option<std::task::Waker>>,
}

impl Gate {
    fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        if let Some(waker) = self.waiting.lock().unwrap().take() {
            waker.wake();
        }
    }
}

const MARKER: &[u8] = b"after-the-resets";
const PREFACE: usize = 24;

impl Gated {
    /// Counts the whole frames in `held` past `scanned`.
    fn scan(&mut self) {
        let closed = self.gate.closed.load(Ordering::SeqCst);
        let mut counts = self.gate.counts.lock().unwrap();
        while let Some(head) = self.held.get(self.scanned..self.scanned + 9) {
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let Some(payload) = self.held.get(self.scanned + 9..self.scanned + 9 + len) else {
                return;
            };
            if closed {
                match head[3] {
                    h2raw::HEADERS => counts.0 += 1,
                    h2raw::RST_STREAM => counts.1 += 1,
                    h2raw::DATA if payload.windows(MARKER.len()).any(|w| w == MARKER) => {
                        counts.2 = true;
                    }
                    _ => {}
                }
            }
            self.scanned += 9 + len;
        }
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Everything the socket has, kept: a pending read registers the waker.
        let mut eof = false;
        loop {
            let mut chunk = [0u8; 16 * 1024];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.tcp).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    eof = true;
                    break;
                }
                Poll::Ready(Ok(())) => this.held.extend_from_slice(buf.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if this.scanned == 0 && this.held.len() >= PREFACE {
            this.scanned = PREFACE;
        }
        if this.scanned >= PREFACE {
            this.scan();
        }
        if this.gate.closed.load(Ordering::SeqCst) && !eof {
            *this.gate.waiting.lock().unwrap() = Some(cx.waker().clone());
            // Closed in between: nobody would wake it.
            if this.gate.closed.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        let n = out.remaining().min(this.held.len() - this.handed);
        if n == 0 && !eof {
            return Poll::Pending;
        }
        out.put_slice(&this.held[this.handed..this.handed + n]);
        this.handed += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// What [`gated_app`] saw: the paths it accepted, and how its connections ended.
#[derive(Default)]
struct Seen {
    paths: Mutex<Vec<String>>,
    ended: Mutex<Vec<String>>,
    release: tokio::sync::Notify,
}

/// An HTTP/2 app on h2's defaults (hyper's server has them: GOAWAY ENHANCE_YOUR_CALM
/// past 20 streams reset before they were accepted), its connections behind `gate`.
/// `/slow` answers once `release` is notified; the rest at once.
fn gated_app(gate: Arc<Gate>) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app_seen = Arc::clone(&seen);
    let addr = h2_app(move |tcp, _| {
        let (seen, gate) = (Arc::clone(&app_seen), Arc::clone(&gate));
        async move {
            let io = Gated {
                tcp,
                gate,
                held: Vec::new(),
                scanned: 0,
                handed: 0,
            };
            let Ok(mut conn) = h2::server::handshake(io).await else {
                return;
            };
            let end = loop {
                match conn.accept().await {
                    None => break "closed".to_string(),
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok((request, mut respond))) => {
                        let path = request.uri().path().to_string();
                        seen.paths.lock().unwrap().push(path.clone());
                        let seen = Arc::clone(&seen);
                        tokio::spawn(async move {
                            if path == "/slow" {
                                seen.release.notified().await;
                            }
                            let response = http::Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut body) = respond.send_response(response, false) {
                                let _ = body.send_data(Bytes::from(format!("{path} done")), true);
                            }
                        });
                    }
                }
            };
            seen.ended.lock().unwrap().push(end);
        }
    });
    (addr, seen)
}

/// POSTs `body` to `path` over a new HTTP/2 connection; the status and the body.
async fn h2_post(
    addr: SocketAddr,
    path: &str,
    body: &'static [u8],
) -> (u16, Result<Bytes, h2::Error>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://orders{path}"))
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(Bytes::from_static(body), true).unwrap();
    let response = match response.await {
        Ok(response) => response,
        Err(e) => return (0, Err(e)),
    };
    let status = response.status().as_u16();
    let mut received = response.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = received.data().await {
        match chunk {
            Ok(data) => all.extend_from_slice(&data),
            Err(e) => return (status, Err(e)),
        }
    }
    (status, Ok(Bytes::from(all)))
}

/// A sidecar in front of a [`gated_app`] with a POST in flight on the pooled
/// connection every request shares, and the gate closed: the app is busy.
struct Busy {
    _dir: tempfile::TempDir,
    _cp: ControlPlane,
    gate: Arc<Gate>,
    seen: Arc<Seen>,
    orders: Sidecar,
    rt: tokio::runtime::Runtime,
    slow: tokio::task::JoinHandle<(u16, Result<Bytes, h2::Error>)>,
}

impl Busy {
    fn start() -> Busy {
        let dir = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(dir.path(), &[]);
        let gate = Arc::new(Gate::default());
        let (app, seen) = gated_app(Arc::clone(&gate));
        let orders = orders(dir.path(), &cp, app);
        let rt = runtime();
        let slow = rt.spawn(h2_post(orders.inbound, "/slow", b"the order"));
        eventually(Duration::from_secs(10), "the POST at the app", || {
            seen.paths
                .lock()
                .unwrap()
                .contains(&"/slow".to_string())
                .then_some(())
        });
        gate.closed.store(true, Ordering::SeqCst);
        Busy {
            _dir: dir,
            _cp: cp,
            gate,
            seen,
            orders,
            rt,
            slow,
        }
    }

    /// Waits for [`MARKER`] and at least ten resets at the gate, then opens it: the
    /// resets the busy app got before it read anything.
    fn wake_up(&self) -> usize {
        eventually(
            Duration::from_secs(10),
            "the last request and resets at the gate",
            || {
                let (_, resets, marker) = *self.gate.counts.lock().unwrap();
                (marker && resets >= 10).then_some(())
            },
        );
        let (_, resets_seen, _) = *self.gate.counts.lock().unwrap();
        self.gate.open();
        resets_seen
    }

    /// The POST in flight is answered, once, and the app's connection never ended.
    fn assert_the_post_in_flight_went_through(self, resets_seen: usize) {
        self.seen.release.notify_waiters();
        let (status, body) = self.rt.block_on(self.slow).unwrap();
        let ended = self.seen.ended.lock().unwrap().clone();
        assert_eq!(
            (status, body.as_deref().ok()),
            (200, Some(&b"/slow done"[..])),
            "the POST in flight, {body:?}; the app's connections ended: {ended:?}; {resets_seen} resets reached the busy app",
        );
        assert!(ended.is_empty(), "{ended:?}");
        let paths = self.seen.paths.lock().unwrap();
        let slow = paths.iter().filter(|p| *p == "/slow").count();
        assert_eq!(slow, 1, "the POST reached the app once");
        assert!(
            resets_seen <= 20,
            "{resets_seen} resets of streams the busy app had not accepted"
        );
    }
}

#[test]
fn a_client_cancelling_requests_a_busy_app_has_not_read_does_not_cost_others_the_connection() {
    let busy = Busy::start();
    // A client opens 60 requests; once the sidecar has sent them on, it cancels them.
    let mut client = Conn::connect(busy.orders.inbound, &[]);
    const FLOOD: u32 = 60;
    let block = h2raw::request("GET", "/flood", &[]);
    let heads: Vec<_> = (0..FLOOD)
        .map(|i| Frame::headers(2 * i + 1, block.clone(), END_HEADERS | END_STREAM))
        .collect();
    client.send_all(&heads).unwrap();
    eventually(
        Duration::from_secs(10),
        "the requests sent on to the app",
        || (busy.gate.counts.lock().unwrap().0 >= FLOOD as usize).then_some(()),
    );
    let resets: Vec<_> = (0..FLOOD)
        .map(|i| Frame::rst(2 * i + 1, h2raw::CANCEL))
        .collect();
    client.send_all(&resets).unwrap();
    // Then one more request, on the same connection: behind the resets.
    let after = 2 * FLOOD + 1;
    client
        .send_all(&[
            Frame::headers(after, h2raw::request("POST", "/after", &[]), END_HEADERS),
            Frame::data(after, MARKER, true),
        ])
        .unwrap();
    // The app wakes up to everything at once: the requests, what was reset of them,
    // and the last one. (Before the sidecar held resets back, all 60 were there.)
    let resets_seen = busy.wake_up();
    assert_eq!(
        client.outcome(after, Duration::from_secs(10)),
        Outcome::Status(200)
    );
    busy.assert_the_post_in_flight_went_through(resets_seen);
}

#[test]
fn a_client_dying_with_uploads_a_busy_app_has_not_read_does_not_cost_others_the_connection() {
    let busy = Busy::start();
    // A client starts 60 uploads, sends the first bytes of each, and dies: every
    // upload's body fails in the sidecar, and every request is given up.
    let mut client = Conn::connect(busy.orders.inbound, &[]);
    const UPLOADS: u32 = 60;
    let block = h2raw::request("POST", "/upload", &[("content-length", "1000")]);
    let uploads: Vec<_> = (0..UPLOADS)
        .flat_map(|i| {
            [
                Frame::headers(2 * i + 1, block.clone(), END_HEADERS),
                Frame::data(2 * i + 1, b"the first", false),
            ]
        })
        .collect();
    client.send_all(&uploads).unwrap();
    eventually(
        Duration::from_secs(10),
        "the uploads sent on to the app",
        || (busy.gate.counts.lock().unwrap().0 >= UPLOADS as usize).then_some(()),
    );
    client.socket().shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    eventually(
        Duration::from_secs(10),
        "the uploads given up, the POST in flight left",
        || (busy.orders.counter("graylane_sidecar_requests_in_flight") == 1).then_some(()),
    );
    // Then one more request, from another client: behind whatever the sidecar sent.
    let after = busy
        .rt
        .spawn(h2_post(busy.orders.inbound, "/after", MARKER));
    let resets_seen = busy.wake_up();
    let (status, body) = busy.rt.block_on(after).unwrap();
    assert_eq!(
        (status, body.as_deref().ok()),
        (200, Some(&b"/after done"[..])),
        "{body:?}; the app's connections ended: {:?}",
        busy.seen.ended.lock().unwrap()
    );
    busy.assert_the_post_in_flight_went_through(resets_seen);
}
