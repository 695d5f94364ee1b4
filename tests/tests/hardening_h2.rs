//! Hostile HTTP/2 clients against the sidecar's inbound listener, end to end: the real
//! `graylane-sidecar` process, real sockets, an app behind it that records what
//! reached it, and a canary client on its own connection that must stay served.
//!
//! Frames no library would send are written by hand (`graylane_tests::h2raw`); what a
//! normal client can send goes through the `h2` crate. Each attack asserts what the
//! attacker gets (GOAWAY / RST_STREAM code, or a status), what the app saw, that the
//! canary is served during and after, and that the sidecar's memory (VmHWM, the peak
//! resident set) and CPU time (utime + stime) stay bounded. The numbers are printed
//! (`cargo nextest run ... --no-capture`), one `hardening_h2 usage` line per attack.
//!
//! The app is an h2c + HTTP/1.1 server in this process rather than
//! `graylane-demo-app`: the demo app logs a request (not a POST) before handling it,
//! and nothing about its body or its cancellation, which is what these tests check.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use graylane_tests::h2raw::{
    self, CANCEL, COMPRESSION_ERROR, Conn, DataEnd, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM,
    Frame, MAX_CONCURRENT_STREAMS, Outcome, PROTOCOL_ERROR, REFUSED_STREAM, Usage,
};
use graylane_tests::{ControlPlane, Sidecar, eventually, http_get};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

const SECOND: Duration = Duration::from_secs(1);

/// The most a flood writes (the sidecar pushes back or closes long before).
const FLOOD_CAP: usize = 256 * 1024 * 1024;

/// The most an attack may grow the sidecar's peak resident set, in KiB. Every attack
/// here measures under 2 MiB; buffering per frame or per stream would cost tens of
/// MiB at these volumes (tens of thousands of streams, megabytes of frames).
const MAX_GROWTH_KIB: u64 = 16 * 1024;

/// What became of a request body at the app.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Body {
    /// Not read (the path does not read bodies) or still being read: bytes so far.
    Open(usize),
    /// Read to its end (END_STREAM): the whole length.
    Complete(usize),
    /// The stream broke (reset) after this many bytes.
    Broken(usize),
}

/// One request as the app saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    /// The `x-case` header: which attack sent it.
    case: String,
    fields: usize,
    body: Body,
    /// The handler was dropped before it answered: the sidecar cancelled the request.
    cancelled: bool,
}

/// The app behind the sidecar. By path: `/hold` never reads the body nor answers,
/// `/slow` answers after `x-delay-ms` (10 s by default), `/canary` after 20 ms (the canary's pace), anything else
/// reads the body to its end and answers `received N`.
#[derive(Default)]
struct App {
    seen: Mutex<Vec<Seen>>,
}

/// Marks a request cancelled if its handler is dropped before it answers.
struct Pending {
    app: Arc<App>,
    index: usize,
    answered: bool,
}

/// The sidecar under attack, its app and the control plane it needs to be ready.
struct Mesh {
    sidecar: Sidecar,
    app: Arc<App>,
    rt: tokio::runtime::Runtime,
    _cp: ControlPlane,
    _dir: tempfile::TempDir,
}

/// A legitimate client on its own HTTP/2 connection, opened before the attack,
/// sending `GET /canary` back to back (paced by the app's 20 ms) until stopped.
struct Canary {
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<usize, String>>,
}

impl App {
    fn arrive(&self, request: &http::Request<Incoming>) -> usize {
        let case = request
            .headers()
            .get("x-case")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen {
            path: request.uri().path().to_string(),
            case,
            fields: request.headers().len(),
            body: Body::Open(0),
            cancelled: false,
        });
        seen.len() - 1
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap()[index]);
    }

    /// The requests an attack's `x-case` (or a path prefix) brought in.
    fn of(&self, case: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.case == case || s.path.starts_with(&format!("/{case}")))
            .cloned()
            .collect()
    }

    async fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let index = self.arrive(&request);
        let mut pending = Pending {
            app: Arc::clone(&self),
            index,
            answered: false,
        };
        let path = request.uri().path().to_string();
        let text = if path.starts_with("/hold") {
            std::future::pending::<()>().await;
            String::new()
        } else if path.starts_with("/slow") {
            let ms = request
                .headers()
                .get("x-delay-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "slow".into()
        } else if path.starts_with("/canary") {
            tokio::time::sleep(Duration::from_millis(20)).await;
            "canary".into()
        } else {
            let mut body = request.into_body();
            let mut read = 0;
            let end = loop {
                match body.frame().await {
                    None => break Body::Complete(read),
                    Some(Err(_)) => break Body::Broken(read),
                    Some(Ok(frame)) => {
                        read += frame.data_ref().map_or(0, Bytes::len);
                        self.update(index, |s| s.body = Body::Open(read));
                    }
                }
            };
            self.update(index, |s| s.body = end.clone());
            format!("received {read}")
        };
        pending.answered = true;
        http::Response::new(Full::new(Bytes::from(text)))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            self.app.update(self.index, |s| s.cancelled = true);
        }
    }
}

impl Mesh {
    /// The app on 127.0.0.1:0, a control plane, and a ready sidecar in front of the app.
    fn start() -> Mesh {
        Self::start_with(&[])
    }

    /// Like `start`, with extra sidecar flags.
    fn start_with(extra: &[&str]) -> Mesh {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = Arc::new(App::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let app_addr = listener.local_addr().unwrap().to_string();
        rt.spawn(serve_app(listener, Arc::clone(&app)));
        let dir = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(dir.path(), &[]);
        let sidecar = Sidecar::start(
            dir.path(),
            "orders",
            &[
                "--service",
                "orders",
                "--instance-id",
                "orders-1",
                "--app-addr",
                &app_addr,
                "--control-plane",
                &cp.url(),
            ]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<_>>(),
        );
        sidecar.wait_ready();
        Mesh {
            sidecar,
            app,
            rt,
            _cp: cp,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sidecar.inbound
    }

    fn usage(&self) -> Usage {
        Usage::of(self.sidecar.proc.pid())
    }

    /// A canary connection that has been served once already.
    fn canary(&self) -> Canary {
        let canary = Canary::start(self.addr());
        canary.wait_served("the canary's first request");
        canary
    }

    /// A client that arrives after the attack, over HTTP/2 and HTTP/1.1, is served.
    fn assert_new_clients_served(&self) {
        let addr = self.addr();
        let response = self.rt.block_on(async move {
            let mut client = h2_connect(addr).await?;
            h2_get(&mut client, "/after", &[]).await
        });
        assert_eq!(
            response,
            Ok((200, "received 0".into())),
            "a new HTTP/2 client"
        );
        let (status, body) = http_get(addr, "/after");
        assert_eq!(
            (status, body.as_str()),
            (200, "received 0"),
            "a new HTTP/1.1 client"
        );
    }

    /// The sidecar goes quiet: within 10 s there is a half second in which it used
    /// under a fifth of a core (the canary alone costs far less). A task spinning on
    /// a dead or blocked attacker would keep a whole core busy.
    fn assert_cpu_settles(&self, what: &str) {
        let mut last = (Instant::now(), self.usage().cpu);
        eventually(
            10 * SECOND,
            &format!("the sidecar's CPU to settle after {what}"),
            || {
                let elapsed = last.0.elapsed();
                if elapsed < SECOND / 2 {
                    return None;
                }
                let cpu = self.usage().cpu;
                let busy = cpu.saturating_sub(last.1);
                last = (Instant::now(), cpu);
                (busy < elapsed / 5).then_some(())
            },
        );
    }

    /// Prints what `attack` cost the sidecar across `connections` attacking
    /// connections, and returns the peak growth of the resident set in KiB.
    fn report(&self, attack: &str, before: Usage, connections: u32) -> u64 {
        let after = self.usage();
        let peak = after
            .peak_kib
            .saturating_sub(before.rss_kib.max(before.peak_kib));
        let grown = after.rss_kib.saturating_sub(before.rss_kib);
        let cpu = after.cpu.saturating_sub(before.cpu);
        eprintln!(
            "hardening_h2 usage: {attack}: {connections} connection(s); RSS {} -> {} KiB, \
             peak +{peak} KiB ({} KiB per connection); CPU {} ms ({} ms per connection)",
            before.rss_kib,
            after.rss_kib,
            peak.max(grown) / u64::from(connections),
            cpu.as_millis(),
            cpu.as_millis() / u128::from(connections),
        );
        peak.max(grown)
    }
}

impl Canary {
    fn start(addr: SocketAddr) -> Canary {
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (Arc::clone(&served), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = h2_connect(addr).await?;
                let started = Instant::now();
                // Bounded: 3,000 requests or 60 s, whichever comes first.
                for _ in 0..3_000 {
                    if halt.load(Ordering::SeqCst) || started.elapsed() > 60 * SECOND {
                        break;
                    }
                    let answer = h2_get(&mut client, "/canary", &[]).await?;
                    if answer != (200, "canary".into()) {
                        return Err(format!("canary answered {answer:?}"));
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(count.load(Ordering::SeqCst))
            })
        });
        Canary {
            served,
            stop,
            thread,
        }
    }

    /// Waits until the canary has been served once more from now.
    fn wait_served(&self, what: &str) {
        let now = self.served.load(Ordering::SeqCst);
        eventually(10 * SECOND, what, || {
            (self.served.load(Ordering::SeqCst) > now).then_some(())
        });
    }

    /// Stops the canary; it must never have failed.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let served = self.thread.join().unwrap();
        served.unwrap_or_else(|e| panic!("the canary client failed: {e}"))
    }
}

async fn serve_app(listener: tokio::net::TcpListener, app: Arc<App>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Above the sidecar's own stream limit, so that limit is what the tests meet.
    builder.http2().max_concurrent_streams(1_000);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (app, builder) = (Arc::clone(&app), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn h2_connect(addr: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

/// `GET uri` on an `h2` client connection: (status, body text).
async fn h2_get(
    client: &mut h2::client::SendRequest<Bytes>,
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut request = http::Request::get(format!("http://orders{uri}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).map_err(|e| e.to_string())?;
    *client = client.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, _) = client
        .send_request(request, true)
        .map_err(|e| e.to_string())?;
    read_response(response).await
}

/// The status and body text of a response, within 10 s.
async fn read_response(response: h2::client::ResponseFuture) -> Result<(u16, String), String> {
    let read = async {
        let response = response.await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    };
    tokio::time::timeout(10 * SECOND, read)
        .await
        .unwrap_or_else(|_| Err("no whole response within 10 s".into()))
}

/// The request header block of `GET path` (END_STREAM), marked with `x-case`.
fn get(case: &str, path: &str) -> Vec<u8> {
    h2raw::request("GET", path, &[("x-case", case)])
}

/// Whether `outcome` is how a malformed request may end (RFC 9113 §8.1.1: a stream
/// error of type PROTOCOL_ERROR, or a connection error; or a 400).
fn refused_as_malformed(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Reset(PROTOCOL_ERROR) | Outcome::Status(400)
    ) || matches!(outcome, Outcome::GoAway { code, .. } if [PROTOCOL_ERROR, COMPRESSION_ERROR].contains(code))
}

/// Case 1, CVE-2023-44487: streams opened and reset at once, thousands per connection,
/// on four connections at a time.
#[test]
fn rapid_reset_is_cut_off_with_enhance_your_calm() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    const CONNECTIONS: u32 = 4;
    const STREAMS: u32 = 10_000;
    let before = mesh.usage();
    let addr = mesh.addr();
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr, &[]);
                let block = get("rapid", "/rapid");
                let frames: Vec<Frame> = (0..STREAMS)
                    .flat_map(|i| {
                        let id = 2 * i + 1;
                        [
                            Frame::headers(id, block.clone(), END_HEADERS | END_STREAM),
                            Frame::rst(id, CANCEL),
                        ]
                    })
                    .collect();
                // The write fails once the sidecar has had enough and closed.
                let _ = conn.send_all(&frames);
                let goaway = conn.goaway(10 * SECOND);
                (goaway, conn)
            })
        })
        .collect();
    let results: Vec<_> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    canary.wait_served("the canary while the attackers are connected");
    let grown = mesh.report("rapid reset", before, CONNECTIONS);
    eprintln!(
        "rapid reset: {:?}; the app saw {} requests",
        results.iter().map(|(g, _)| g).collect::<Vec<_>>(),
        mesh.app.of("rapid").len()
    );
    for (goaway, _) in &results {
        let Some(Outcome::GoAway {
            code, last_stream, ..
        }) = goaway
        else {
            panic!("no GOAWAY for a rapid-reset connection: {goaway:?}");
        };
        assert_eq!(*code, ENHANCE_YOUR_CALM, "{goaway:?}");
        assert!(
            *last_stream < 2 * STREAMS - 1,
            "cut off before the last stream: {goaway:?}"
        );
    }
    // Nothing past a GOAWAY's last stream reaches the app, and whatever did is
    // cancelled there (each was reset), not left hanging.
    let processed: u32 = results
        .iter()
        .map(|(g, _)| match g {
            Some(Outcome::GoAway { last_stream, .. }) => last_stream.div_ceil(2),
            _ => STREAMS,
        })
        .sum();
    let reached = mesh.app.of("rapid");
    assert!(
        reached.len() <= usize::try_from(processed).unwrap(),
        "the app saw {} requests, the GOAWAYs allowed {processed}",
        reached.len()
    );
    eventually(
        5 * SECOND,
        "the rapid requests that reached the app to end",
        || {
            mesh.app
                .of("rapid")
                .iter()
                .all(|s| s.cancelled || s.body != Body::Open(0))
                .then_some(())
        },
    );
    drop(results);
    assert!(grown < MAX_GROWTH_KIB, "memory grew by {grown} KiB");
    mesh.assert_cpu_settles("the rapid reset");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 1, below h2's pending-accept limit: each batch of streams is reset only once
/// the app has the requests, so the sidecar does the whole upstream work for each.
/// Every request must be cancelled at the app, and nothing may pile up.
#[test]
fn rapid_reset_of_accepted_streams_is_cut_off_and_every_upstream_request_cancelled() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let before = mesh.usage();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let max = conn.server_setting(MAX_CONCURRENT_STREAMS).unwrap_or(100);
    let batch = max.min(50);
    const BATCHES: u32 = 40;
    let block = get("accepted-reset", "/hold");
    let mut opened = 0u32;
    let mut goaway = None;
    for b in 0..BATCHES {
        let ids: Vec<u32> = (0..batch).map(|i| 2 * (b * batch + i) + 1).collect();
        let heads: Vec<Frame> = ids
            .iter()
            .map(|id| Frame::headers(*id, block.clone(), END_HEADERS | END_STREAM))
            .collect();
        if conn.send_all(&heads).is_err() {
            break;
        }
        opened += batch;
        let want = usize::try_from(opened).unwrap();
        eventually(
            10 * SECOND,
            "the batch to reach the app (or a GOAWAY)",
            || {
                let _ = conn.next_frame(Duration::from_millis(1));
                (mesh.app.of("accepted-reset").len() == want
                    || conn.is_eof()
                    || conn.seen.iter().any(|f| f.kind == h2raw::GOAWAY))
                .then_some(())
            },
        );
        let resets: Vec<Frame> = ids.iter().map(|id| Frame::rst(*id, CANCEL)).collect();
        if conn.send_all(&resets).is_err() {
            break;
        }
        goaway = conn.seen.iter().find(|f| f.kind == h2raw::GOAWAY).cloned();
        if goaway.is_some() || conn.is_eof() {
            break;
        }
    }
    eprintln!("accepted-then-reset: {opened} streams, GOAWAY {goaway:?}");
    eventually(
        10 * SECOND,
        "every reset request to be cancelled at the app",
        || {
            mesh.app
                .of("accepted-reset")
                .iter()
                .all(|s| s.cancelled)
                .then_some(())
        },
    );
    canary.wait_served("the canary while the resetting connection is open");
    let grown = mesh.report(&format!("accepted-then-reset, {opened} streams"), before, 1);
    // Envoy's rule, ours too: a client that cancels at least half of its requests
    // before their answer is closed once it has sent 500. Not before: a browser
    // navigating away cancels a few.
    let cut_off = conn.closed(10 * SECOND) || goaway.is_some();
    assert!(
        cut_off,
        "{opened} streams opened and cancelled, still connected"
    );
    assert!(
        (500..BATCHES * batch).contains(&opened),
        "cut off after {opened} streams"
    );
    let (_, metrics) = http_get(mesh.sidecar.admin, "/metrics");
    assert!(
        metrics.contains("graylane_connections_reset_abuse_total{listener=\"inbound\"} 1"),
        "{metrics}"
    );
    assert!(grown < MAX_GROWTH_KIB, "memory grew by {grown} KiB");
    drop(conn);
    mesh.assert_cpu_settles("the accepted-then-reset streams");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 2: HEADERS without END_HEADERS, then CONTINUATION frames without end, empty
/// or full of header bytes.
#[test]
fn continuation_flood_ends_in_goaway_and_reaches_nothing() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let before = mesh.usage();
    let mut outcomes = Vec::new();
    for (case, fill) in [("cont-empty", 0), ("cont-full", 16 * 1024 - 16)] {
        let mut conn = Conn::connect(mesh.addr(), &[]);
        let mut block = get(case, "/cont");
        // A field whose value spans the flood: `x-flood: <16 MiB>`.
        block.extend_from_slice(&[0x00, 7]);
        block.extend_from_slice(b"x-flood");
        h2raw::integer(16 << 20, 7, 0x00, &mut block);
        conn.send(&Frame::headers(1, block, END_STREAM)).unwrap();
        let started = Instant::now();
        let continuation = Frame::continuation(1, vec![b'a'; fill], false).encode();
        let mut sent = 0u32;
        // Bounded: 100,000 frames or 10 s; it stops far earlier when the sidecar
        // closes the connection.
        while sent < 100_000 && started.elapsed() < 10 * SECOND {
            if conn.write(&continuation).is_err() {
                break;
            }
            sent += 1;
        }
        let goaway = conn.goaway(5 * SECOND);
        eprintln!("continuation flood {case}: {sent} frames written, then {goaway:?}");
        outcomes.push((case, sent, goaway));
    }
    canary.wait_served("the canary after the CONTINUATION floods");
    let grown = mesh.report("CONTINUATION flood", before, 2);
    for (case, sent, goaway) in &outcomes {
        assert!(
            matches!(goaway, Some(Outcome::GoAway { code, .. }) if [ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR].contains(code)),
            "{case}: {goaway:?}"
        );
        assert!(
            *sent < 100_000,
            "{case}: the sidecar read all {sent} frames"
        );
        assert!(mesh.app.of(case).is_empty(), "{case} reached the app");
    }
    assert!(grown < MAX_GROWTH_KIB, "memory grew by {grown} KiB");
    mesh.assert_cpu_settles("the CONTINUATION floods");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// How a flood from a client that never reads ended.
#[derive(Debug, PartialEq, Eq)]
enum FloodEnd {
    /// The sidecar stopped reading: a write made no progress for a second.
    Backpressure,
    /// The sidecar closed the connection (the write failed).
    Closed,
    /// The cap (bytes or 10 s) was reached: the sidecar kept reading.
    Swallowed,
}

/// Writes `frame` over and over without ever reading, up to `cap` bytes or 10 s:
/// (bytes written, how it ended).
fn flood(conn: &mut Conn, frame: &Frame, cap: usize) -> (usize, FloodEnd) {
    conn.socket().set_write_timeout(Some(SECOND)).unwrap();
    let batch: Vec<u8> = std::iter::repeat_n(frame.encode(), 4096)
        .flatten()
        .collect();
    let started = Instant::now();
    let mut written = 0;
    while written < cap && started.elapsed() < 10 * SECOND {
        match std::io::Write::write(&mut conn.socket(), &batch) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (written, FloodEnd::Backpressure);
            }
            Err(_) => return (written, FloodEnd::Closed),
        }
    }
    (written, FloodEnd::Swallowed)
}

/// One kind of flood from `n` connections at once, each set up by `setup` (which
/// returns the frame to repeat). The connections stay open for the caller.
fn floods(mesh: &Mesh, n: u32, setup: fn(&mut Conn) -> Frame) -> Vec<(Conn, usize, FloodEnd)> {
    let addr = mesh.addr();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr, &[]);
                let frame = setup(&mut conn);
                let (written, end) = flood(&mut conn, &frame, FLOOD_CAP);
                (conn, written, end)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Case 3: SETTINGS, PING and empty-DATA floods, two connections of each, from
/// clients that never read their socket: the sidecar must stop reading (or close)
/// rather than queue its answers.
#[test]
fn floods_from_clients_that_never_read_stay_bounded() {
    // sidecar.md: a connection whose request headers are not complete within the
    // header-read timeout is closed; the SETTINGS and PING flooders never send any.
    let mesh = Mesh::start_with(&["--header-read-timeout", "4s"]);
    let canary = mesh.canary();
    const PER_KIND: u32 = 2;
    let kinds: [(&str, fn(&mut Conn) -> Frame); 3] = [
        ("SETTINGS", |_| Frame::settings(&[])),
        ("PING", |_| Frame::ping(*b"flooding")),
        ("empty DATA", |conn| {
            let block = h2raw::request("POST", "/empty-data", &[("x-case", "empty-data")]);
            conn.send(&Frame::headers(1, block, END_HEADERS)).unwrap();
            Frame::data(1, &[], false)
        }),
    ];
    let mut attackers = Vec::new();
    for (kind, setup) in kinds {
        let before = mesh.usage();
        let mut results = floods(&mesh, PER_KIND, setup);
        let grown = mesh.report(&format!("{kind} flood, never reading"), before, PER_KIND);
        let ends: Vec<_> = results.iter().map(|(_, w, e)| (*w, e)).collect();
        eprintln!("{kind} floods (bytes written, end): {ends:?}");
        assert!(grown < MAX_GROWTH_KIB, "{kind}: memory grew by {grown} KiB");
        for (conn, written, end) in &mut results {
            assert_ne!(
                *end,
                FloodEnd::Swallowed,
                "{kind}: the sidecar read {written} bytes without pushing back"
            );
            if kind == "empty DATA" {
                // Refused outright: h2 allows 100 empty DATA frames per connection.
                let goaway = conn.goaway(5 * SECOND);
                assert!(
                    matches!(
                        goaway,
                        Some(Outcome::GoAway {
                            code: ENHANCE_YOUR_CALM,
                            ..
                        })
                    ) && *end == FloodEnd::Closed,
                    "empty DATA flood: {goaway:?} after {written} bytes, {end:?}"
                );
            }
        }
        attackers.extend(results);
    }
    // Every attacker that was not thrown out yet is still connected, none reading.
    canary.wait_served("the canary while the floods hold their connections");
    mesh.assert_cpu_settles("the floods");
    let seen = mesh.app.of("empty-data");
    assert!(
        seen.iter().all(|s| s.body != Body::Complete(0)),
        "the app must not see a flooded request as complete: {seen:?}"
    );
    for (conn, written, end) in &mut attackers {
        assert!(
            conn.closed(10 * SECOND),
            "a flooder without a request ({written} bytes, {end:?}) is still connected \
             after the header-read timeout"
        );
    }
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 4: more streams than the advertised SETTINGS_MAX_CONCURRENT_STREAMS.
#[test]
fn streams_over_the_advertised_limit_are_refused() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let before = mesh.usage();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let max = conn
        .server_setting(MAX_CONCURRENT_STREAMS)
        .expect("the sidecar advertises SETTINGS_MAX_CONCURRENT_STREAMS");
    assert!(max > 0 && max <= 1_000, "advertised {max}");
    let held = get("limit", "/hold");
    let frames: Vec<Frame> = (0..max)
        .map(|i| Frame::headers(2 * i + 1, held.clone(), END_HEADERS | END_STREAM))
        .collect();
    conn.send_all(&frames).unwrap();
    let count = usize::try_from(max).unwrap();
    eventually(10 * SECOND, "the allowed streams to reach the app", || {
        (mesh.app.of("limit").len() == count).then_some(())
    });
    // One over the limit, then a thousand more.
    let next = 2 * max + 1;
    conn.send(&Frame::headers(
        next,
        held.clone(),
        END_HEADERS | END_STREAM,
    ))
    .unwrap();
    let over = conn.outcome(next, 5 * SECOND);
    assert!(
        matches!(over, Outcome::Reset(REFUSED_STREAM | PROTOCOL_ERROR)),
        "stream {next} over the limit of {max}: {over:?}"
    );
    let excess: Vec<Frame> = (1..=1_000)
        .map(|i| Frame::headers(next + 2 * i, held.clone(), END_HEADERS | END_STREAM))
        .collect();
    let _ = conn.send_all(&excess);
    let last = next + 2_000;
    let excess_end = conn.outcome(last, 5 * SECOND);
    eprintln!("1,000 streams over the limit: the last one got {excess_end:?}");
    assert!(
        matches!(
            excess_end,
            Outcome::Reset(REFUSED_STREAM | PROTOCOL_ERROR)
                | Outcome::GoAway {
                    code: ENHANCE_YOUR_CALM | PROTOCOL_ERROR,
                    ..
                }
        ),
        "{excess_end:?}"
    );
    canary.wait_served("the canary while one client holds every stream it may");
    assert_eq!(
        mesh.app.of("limit").len(),
        count,
        "no stream over the limit reached the app"
    );
    let grown = mesh.report("over-limit streams", before, 1);
    assert!(grown < MAX_GROWTH_KIB, "memory grew by {grown} KiB");
    // Closing the connection cancels every held request at the app.
    drop(conn);
    eventually(10 * SECOND, "the held requests to be cancelled", || {
        mesh.app
            .of("limit")
            .iter()
            .all(|s| s.cancelled)
            .then_some(())
    });
    mesh.assert_cpu_settles("the over-limit streams");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 4, the other half: below the limit a freed slot serves again.
#[test]
fn a_stream_slot_freed_by_reset_serves_the_next_request() {
    let mesh = Mesh::start();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let max = conn.server_setting(MAX_CONCURRENT_STREAMS).unwrap();
    let held = get("slot", "/hold");
    let frames: Vec<Frame> = (0..max)
        .map(|i| Frame::headers(2 * i + 1, held.clone(), END_HEADERS | END_STREAM))
        .collect();
    conn.send_all(&frames).unwrap();
    let count = usize::try_from(max).unwrap();
    eventually(10 * SECOND, "the allowed streams to reach the app", || {
        (mesh.app.of("slot").len() == count).then_some(())
    });
    conn.send(&Frame::rst(1, CANCEL)).unwrap();
    eventually(5 * SECOND, "stream 1 to be cancelled at the app", || {
        mesh.app
            .of("slot")
            .iter()
            .any(|s| s.cancelled)
            .then_some(())
    });
    let next = 2 * max + 1;
    conn.send(&Frame::headers(
        next,
        get("slot-next", "/next"),
        END_HEADERS | END_STREAM,
    ))
    .unwrap();
    assert_eq!(conn.outcome(next, 5 * SECOND), Outcome::Status(200));
}

/// Case 5: malformed requests (RFC 9113 §8.2, §8.3): refused, and nothing reaches
/// the app.
#[test]
fn malformed_requests_are_refused_before_the_app() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let cases: [(&str, Vec<(&str, &str)>); 8] = [
        (
            "missing-path",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "orders"),
            ],
        ),
        (
            "duplicate-method",
            vec![
                (":method", "GET"),
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/malformed"),
                (":authority", "orders"),
            ],
        ),
        (
            "uppercase-name",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/malformed"),
                (":authority", "orders"),
                ("X-Upper", "1"),
            ],
        ),
        (
            "late-pseudo",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                ("x-early", "1"),
                (":path", "/malformed"),
                (":authority", "orders"),
            ],
        ),
        (
            "unknown-pseudo",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/malformed"),
                (":authority", "orders"),
                (":evil", "1"),
            ],
        ),
        ("connection", vec![("connection", "keep-alive")]),
        ("transfer-encoding", vec![("transfer-encoding", "chunked")]),
        ("te-gzip", vec![("te", "gzip")]),
    ];
    for (case, fields) in cases {
        let mut fields = fields;
        if !fields.iter().any(|(n, _)| n.starts_with(':')) {
            let mut request = vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/malformed"),
                (":authority", "orders"),
            ];
            request.extend(fields);
            fields = request;
        }
        fields.push(("x-case", case));
        let mut conn = Conn::connect(mesh.addr(), &[]);
        conn.send(&Frame::headers(
            1,
            h2raw::hpack(&fields),
            END_HEADERS | END_STREAM,
        ))
        .unwrap();
        let outcome = conn.outcome(1, 5 * SECOND);
        eprintln!("malformed {case}: {outcome:?}");
        assert!(refused_as_malformed(&outcome), "{case}: {outcome:?}");
        // On a connection still open, the next request is served.
        if let Outcome::Reset(_) | Outcome::Status(_) = outcome {
            conn.send(&Frame::headers(
                3,
                get("after-malformed", "/ok"),
                END_HEADERS | END_STREAM,
            ))
            .unwrap();
            assert_eq!(conn.outcome(3, 5 * SECOND), Outcome::Status(200), "{case}");
        }
        assert!(mesh.app.of(case).is_empty(), "{case} reached the app");
    }
    assert!(
        mesh.app.of("malformed").is_empty(),
        "{:?}",
        mesh.app.of("malformed")
    );
    canary.wait_served("the canary after the malformed requests");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 6: DATA that contradicts `content-length` (RFC 9113 §8.1.1): the app never
/// sees a complete request of the wrong length.
#[test]
fn content_length_mismatch_never_completes_at_the_app() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let cases: [(&str, &[&[u8]]); 3] = [
        ("cl-short", &[b"hello"]),
        ("cl-long", &[b"0123456789abcdefghij"]),
        ("cl-split", &[b"0123456789", b"abcdefghij"]),
    ];
    for (i, (case, chunks)) in (0u32..).zip(cases) {
        let id = 2 * i + 1;
        let block = h2raw::request(
            "POST",
            &format!("/{case}"),
            &[("x-case", case), ("content-length", "10")],
        );
        conn.send(&Frame::headers(id, block, END_HEADERS)).unwrap();
        for (n, chunk) in chunks.iter().enumerate() {
            conn.send(&Frame::data(id, chunk, n + 1 == chunks.len()))
                .unwrap();
        }
        let outcome = conn.outcome(id, 5 * SECOND);
        eprintln!("{case}: {outcome:?}; the app saw {:?}", mesh.app.of(case));
        assert!(
            matches!(
                outcome,
                Outcome::Reset(PROTOCOL_ERROR) | Outcome::Status(400)
            ),
            "{case}: {outcome:?}"
        );
    }
    for (case, _) in cases {
        // Whatever reached the app ends broken or cancelled, never complete.
        let seen = eventually(
            5 * SECOND,
            "the app to finish with the mismatched bodies",
            || {
                let seen = mesh.app.of(case);
                seen.iter()
                    .all(|s| s.cancelled || !matches!(s.body, Body::Open(_)))
                    .then_some(seen)
            },
        );
        assert!(
            seen.iter().all(|s| !matches!(s.body, Body::Complete(_))),
            "{case}: {seen:?}"
        );
    }
    // The same connection still serves a correct request.
    let block = h2raw::request("POST", "/cl-right", &[("content-length", "10")]);
    conn.send(&Frame::headers(7, block, END_HEADERS)).unwrap();
    conn.send(&Frame::data(7, b"0123456789", true)).unwrap();
    assert_eq!(conn.outcome(7, 5 * SECOND), Outcome::Status(200));
    assert_eq!(
        eventually(5 * SECOND, "the right-length body", || mesh
            .app
            .of("cl-right")
            .first()
            .map(|s| s.body.clone())
            .filter(|b| *b != Body::Open(0))),
        Body::Complete(10)
    );
    canary.finish();
}

/// Case 7a: a header list over 64 KiB gets 431 (sidecar.md).
#[test]
fn header_list_over_64_kib_is_431() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    // Whatever the sidecar advertises (h2 answers 431 itself over it), sidecar.md's
    // limit is 64 KiB; under four times the advertised size h2 does not GOAWAY.
    let advertised = conn.server_setting(h2raw::MAX_HEADER_LIST_SIZE);
    assert!(
        advertised.is_some_and(|a| a >= 32 * 1024),
        "SETTINGS_MAX_HEADER_LIST_SIZE {advertised:?}"
    );
    let value = "v".repeat(1_000);
    let names: Vec<String> = (0..70).map(|i| format!("x-big-{i}")).collect();
    let mut fields: Vec<(&str, &str)> =
        names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    fields.push(("x-case", "big-headers"));
    let mut block = get("big-headers", "/big");
    block.extend(h2raw::hpack(&fields));
    // HEADERS + CONTINUATION frames within the 16 KiB frame size.
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut frames = vec![Frame::headers(1, chunks[0].to_vec(), END_STREAM)];
    for (i, chunk) in chunks.iter().enumerate().skip(1) {
        frames.push(Frame::continuation(
            1,
            chunk.to_vec(),
            i + 1 == chunks.len(),
        ));
    }
    conn.send_all(&frames).unwrap();
    let outcome = conn.outcome(1, 5 * SECOND);
    assert_eq!(
        outcome,
        Outcome::Status(431),
        "{} bytes of headers",
        block.len()
    );
    assert!(mesh.app.of("big-headers").is_empty());
    canary.finish();
}

/// Case 7b: more than 100 header fields (sidecar.md: 431, or the stream refused), from
/// a normal client: h2 itself has no field-count limit, only a list size.
#[test]
fn more_than_100_header_fields_are_refused() {
    let mesh = Mesh::start();
    let names: Vec<String> = (0..101).map(|i| format!("x-h{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    headers.push(("x-case", "many-headers"));
    let addr = mesh.addr();
    let answer = mesh.rt.block_on(async move {
        let mut client = h2_connect(addr).await?;
        h2_get(&mut client, "/many", &headers).await
    });
    let seen = mesh.app.of("many-headers");
    let refused = matches!(&answer, Ok((431, _)))
        || matches!(&answer, Err(e) if e.contains("refused") || e.contains("REFUSED_STREAM"));
    assert!(
        refused && seen.is_empty(),
        "102 header fields: the client got {answer:?}, the app saw {} request(s) with {:?} fields",
        seen.len(),
        seen.iter().map(|s| s.fields).collect::<Vec<_>>()
    );
}

/// Case 8: `:authority` with userinfo is malformed in HTTP/2 (RFC 9113 §8.3.1): a 400
/// (or a PROTOCOL_ERROR reset), and `evil@orders` never reaches the app.
#[test]
fn authority_with_userinfo_is_refused() {
    let mesh = Mesh::start();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let block = h2raw::hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/userinfo"),
        (":authority", "evil@orders"),
        ("x-case", "userinfo"),
    ]);
    conn.send(&Frame::headers(1, block, END_HEADERS | END_STREAM))
        .unwrap();
    let outcome = conn.outcome(1, 5 * SECOND);
    let seen = mesh.app.of("userinfo");
    assert!(
        refused_as_malformed(&outcome) && seen.is_empty(),
        ":authority evil@orders: the client got {outcome:?}, the app saw {seen:?}"
    );
}

/// Case 9, legitimate: one gRPC-like stream of 10,000 DATA frames of 55 bytes, within
/// the flow-control windows, to an app that reads them. The whole body must arrive.
#[test]
fn ten_thousand_small_data_frames_of_one_stream_are_served() {
    let mesh = Mesh::start();
    const FRAMES: usize = 10_000;
    const SIZE: usize = 55;
    let mut conn = Conn::connect(mesh.addr(), &[]);
    let block = h2raw::request(
        "POST",
        "/grpc.Upload/Stream",
        &[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-case", "grpc-small"),
        ],
    );
    conn.send(&Frame::headers(1, block, END_HEADERS)).unwrap();
    let sent = conn.send_data(1, &[b'g'; SIZE], FRAMES, true, 5 * SECOND);
    let outcome = conn.outcome(1, 10 * SECOND);
    let want = FRAMES * SIZE;
    eprintln!("10,000 DATA frames of 55 bytes: {sent:?}, then {outcome:?}");
    let what = format!("the app to be done with the body (the client: {sent:?}, {outcome:?})");
    let seen = eventually(5 * SECOND, &what, || {
        let seen = mesh.app.of("grpc-small");
        seen.iter()
            .all(|s| s.cancelled || !matches!(s.body, Body::Open(_)))
            .then_some(seen)
    });
    assert_eq!(
        (sent, &outcome, seen.first().map(|s| s.body.clone())),
        (
            DataEnd::Sent,
            &Outcome::Status(200),
            Some(Body::Complete(want))
        ),
        "10,000 DATA frames of 55 bytes on one stream (a GOAWAY too_many_data_frames is \
         the sidecar's own h2 refusing the frames; a 502, the app's h2 refusing the \
         sidecar's relayed small frames on the upstream connection)"
    );
}

/// Case 9, the attack: 1-byte DATA frames, within the windows, on streams whose app
/// never reads, from four connections at once. Each must end (GOAWAY
/// ENHANCE_YOUR_CALM, or the windows closing) with memory bounded, and the requests
/// half-forwarded to the app must be cancelled there, not left hanging.
#[test]
fn one_byte_data_flood_to_an_app_that_never_reads_is_bounded() {
    let mesh = Mesh::start();
    let canary = mesh.canary();
    const CONNECTIONS: u32 = 4;
    let before = mesh.usage();
    let addr = mesh.addr();
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr, &[]);
                let block = h2raw::request("POST", "/hold", &[("x-case", "tiny-data")]);
                conn.send(&Frame::headers(1, block, END_HEADERS)).unwrap();
                // Bounded: 4 million frames at most; 2 s without a window update
                // is a stall.
                let end = conn.send_data(1, b"x", 4_000_000, false, 2 * SECOND);
                let goaway = conn.goaway(2 * SECOND);
                (end, goaway, conn)
            })
        })
        .collect();
    let results: Vec<_> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    let ends: Vec<_> = results.iter().map(|(e, g, _)| (e, g)).collect();
    eprintln!("1-byte DATA floods: {ends:?}");
    canary.wait_served("the canary after the 1-byte DATA floods");
    let grown = mesh.report("1-byte DATA flood", before, CONNECTIONS);
    for (end, goaway, _) in &results {
        let bounded = matches!(end, DataEnd::Stalled { .. })
            || matches!(
                goaway,
                Some(Outcome::GoAway {
                    code: ENHANCE_YOUR_CALM,
                    ..
                })
            );
        assert!(bounded, "{end:?}, {goaway:?}");
    }
    assert!(grown < MAX_GROWTH_KIB, "memory grew by {grown} KiB");
    drop(results);
    eventually(
        10 * SECOND,
        "the flooded requests to be cancelled at the app",
        || {
            let seen = mesh.app.of("tiny-data");
            seen.iter().all(|s| s.cancelled).then_some(())
        },
    );
    mesh.assert_cpu_settles("the 1-byte DATA floods");
    canary.finish();
    mesh.assert_new_clients_served();
}

/// Case 9, across clients: 1-byte DATA frames paced so that the sidecar keeps up (a
/// PING round trip every 20 frames), on a stream whose app never reads. The sidecar
/// relays them one by one over its pooled HTTP/2 connection to the app, whose own h2
/// may refuse that connection (its small-DATA budget); another client's request in
/// flight on it must not be lost.
#[test]
fn relayed_tiny_frames_do_not_cost_another_client_its_request() {
    let mesh = Mesh::start();
    let mut victim = Conn::connect(mesh.addr(), &[]);
    let block = h2raw::request(
        "POST",
        "/slow",
        &[
            ("x-case", "victim"),
            ("x-delay-ms", "2000"),
            ("content-length", "5"),
        ],
    );
    victim.send(&Frame::headers(1, block, END_HEADERS)).unwrap();
    victim.send(&Frame::data(1, b"hello", true)).unwrap();
    eventually(
        5 * SECOND,
        "the victim's POST to be in flight at the app",
        || (mesh.app.of("victim").len() == 1).then_some(()),
    );
    let mut attacker = Conn::connect(mesh.addr(), &[]);
    let block = h2raw::request("POST", "/hold", &[("x-case", "tiny-paced")]);
    attacker
        .send(&Frame::headers(1, block, END_HEADERS))
        .unwrap();
    let mut sent = 0u32;
    let mut last = None;
    // Bounded: 200 rounds of 20 frames (twice what the app's h2 tolerates unread).
    for round in 0..200u64 {
        let mut frames: Vec<Frame> = (0..20).map(|_| Frame::data(1, b"x", false)).collect();
        frames.push(Frame::ping(round.to_be_bytes()));
        if attacker.send_all(&frames).is_err() {
            break;
        }
        sent += 20;
        last = attacker.read_until(5 * SECOND, |f| {
            (f.kind == h2raw::PING && f.flags & h2raw::ACK != 0)
                || f.kind == h2raw::GOAWAY
                || (f.stream == 1 && [h2raw::RST_STREAM, h2raw::HEADERS].contains(&f.kind))
        });
        if last.as_ref().is_none_or(|f| f.kind != h2raw::PING) {
            break;
        }
    }
    let outcome = victim.outcome(1, 10 * SECOND);
    let times = mesh.app.of("victim").len();
    let last = last.map(|f| match f.kind {
        h2raw::HEADERS => format!("status {:?}", h2raw::status(&f.payload)),
        kind => format!("frame type {kind}, code {:?}", f.error_code()),
    });
    assert_eq!(
        (&outcome, times),
        (&Outcome::Status(200), 1),
        "another client's POST in flight, after the attacker sent {sent} paced 1-byte \
         frames (what it last got back: {last:?}): the victim got {outcome:?}, the app saw \
         the POST {times} time(s)"
    );
}

/// Case 10: a client's RST_STREAM cancels the request at the app, with or without a
/// body in flight.
#[test]
fn client_reset_cancels_the_upstream_request() {
    let mesh = Mesh::start();
    let mut conn = Conn::connect(mesh.addr(), &[]);
    conn.send(&Frame::headers(
        1,
        get("reset-slow", "/slow"),
        END_HEADERS | END_STREAM,
    ))
    .unwrap();
    conn.send(&Frame::headers(
        3,
        h2raw::request("POST", "/hold", &[("x-case", "reset-body")]),
        END_HEADERS,
    ))
    .unwrap();
    conn.send(&Frame::data(3, b"part of a body", false))
        .unwrap();
    eventually(
        5 * SECOND,
        "both requests to be in flight at the app",
        || {
            (mesh.app.of("reset-slow").len() == 1 && mesh.app.of("reset-body").len() == 1)
                .then_some(())
        },
    );
    let reset = Instant::now();
    conn.send(&Frame::rst(1, CANCEL)).unwrap();
    conn.send(&Frame::rst(3, CANCEL)).unwrap();
    for case in ["reset-slow", "reset-body"] {
        eventually(
            5 * SECOND,
            &format!("{case} to be cancelled at the app"),
            || mesh.app.of(case)[0].cancelled.then_some(()),
        );
    }
    assert!(
        reset.elapsed() < 5 * SECOND,
        "cancelled long before the app's 10 s answer"
    );
    eventually(5 * SECOND, "no request in flight at the sidecar", || {
        let (_, metrics) = http_get(mesh.sidecar.admin, "/metrics");
        metrics
            .contains("graylane_sidecar_requests_in_flight 0")
            .then_some(())
    });
    // The connection itself stays usable.
    conn.send(&Frame::headers(
        5,
        get("after-reset", "/ok"),
        END_HEADERS | END_STREAM,
    ))
    .unwrap();
    assert_eq!(conn.outcome(5, 5 * SECOND), Outcome::Status(200));
}
