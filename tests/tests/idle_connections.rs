//! Idle HTTP/1.1 keep-alive connections are parked (their buffers dropped, the socket
//! kept) once they have waited 5 ms for their next request, and served again when it
//! comes (sidecar `server/idle.rs`). A client must see
//! none of it: the next request, a head split across a park, bytes pipelined before
//! one, are all answered in order and forwarded once; the header-read timeout still
//! counts from the start of the wait (`hardening_h1` dribbles a head across parks).
//!
//! Idle HTTP/2 connections, the client's and the sidecar's own to the app, let go of
//! their buffers after the same grace (`proxy/streams/let_go.rs`): the client must see
//! none of that either. Its HPACK table, half a frame sent before the pause and the
//! upstream connection all survive.
//!
//! The pauses below are longer than the park grace, so that the connection is parked
//! between the writes: time passing is what is tested, nothing is waited for.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use graylane_tests::h2raw::{self, END_HEADERS, END_STREAM, Frame, Outcome};
use graylane_tests::rawhttp::{Client, Response, Upstream};
use graylane_tests::{ControlPlane, Sidecar};

/// Longer than the sidecar's park grace (5 ms), with room for a loaded machine.
const PAST_THE_GRACE: Duration = Duration::from_millis(150);

#[test]
fn parked_keep_alive_connections_serve_split_and_pipelined_requests_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let upstream = Upstream::start();
    let app = upstream.addr.to_string();
    let flags = [
        "--service",
        "orders",
        "--app-addr",
        &app,
        "--control-plane",
        &cp.url(),
    ];
    let orders = Sidecar::start(dir.path(), "orders", &flags);
    orders.wait_ready();
    let mut client = Client::connect(orders.inbound);
    client
        .send(b"GET /k1 HTTP/1.1\r\nHost: orders\r\n\r\n")
        .unwrap();
    let first = client.response(Duration::from_secs(5)).unwrap();
    assert_eq!(first.body_text(), "ok /k1");
    std::thread::sleep(PAST_THE_GRACE);
    // Parked. A head in two parts, parked again in between.
    client.send(b"GET /k2 HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(PAST_THE_GRACE);
    // The rest, with a whole request and half of the next behind it.
    client
        .send(b"st: orders\r\n\r\nGET /k3 HTTP/1.1\r\nHost: orders\r\n\r\nGET /k4 HTTP/1.1\r\nHost: ord")
        .unwrap();
    std::thread::sleep(PAST_THE_GRACE);
    client.send(b"ers\r\nConnection: close\r\n\r\n").unwrap();
    let (responses, rest, stop) = client.responses_until_close(Duration::from_secs(10));
    let bodies: Vec<String> = responses.iter().map(Response::body_text).collect();
    assert_eq!(bodies, ["ok /k2", "ok /k3", "ok /k4"], "{responses:?}");
    assert!(
        stop.closed() && rest.is_empty(),
        "closed after the request that asked for it ({stop:?}, {rest:?})"
    );
    let forwarded = upstream.requests_to("/k");
    let targets: Vec<&str> = forwarded.iter().map(|r| r.head.target()).collect();
    assert_eq!(
        targets,
        ["/k1", "/k2", "/k3", "/k4"],
        "each forwarded once, in order"
    );
}

/// A connection kept busy (requests back to back, never idle long enough to park)
/// outlives the header-read timeout: that timeout bounds each wait for a head, not the
/// connection. (The parking timer once bounded every wait by the first one's deadline,
/// so every busy keep-alive connection was cut when it expired.)
#[test]
fn a_busy_keep_alive_connection_outlives_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let upstream = Upstream::start();
    let app = upstream.addr.to_string();
    let flags = [
        "--service",
        "orders",
        "--app-addr",
        &app,
        "--control-plane",
        &cp.url(),
        "--header-read-timeout",
        "1s",
    ];
    let orders = Sidecar::start(dir.path(), "orders", &flags);
    orders.wait_ready();
    let mut client = Client::connect(orders.inbound);
    let started = std::time::Instant::now();
    let mut answered = 0;
    // Three header-read timeouts' worth of back-to-back requests on one connection.
    while started.elapsed() < Duration::from_secs(3) {
        client
            .send(b"GET /busy HTTP/1.1\r\nHost: orders\r\n\r\n")
            .unwrap();
        let response = client.response(Duration::from_secs(5)).unwrap_or_else(|e| {
            panic!(
                "request {answered} on the busy connection, at {:?}: {e:?}",
                started.elapsed()
            )
        });
        assert_eq!(response.body_text(), "ok /busy");
        answered += 1;
    }
    assert!(answered > 10, "{answered} requests in 3 s");
}

/// An HTTP/2 app on port 0 that answers 200 to a request carrying `x-case: kept`, 400
/// to any other; counts the connections it accepted.
fn h2_app() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = conn.accept().await {
                        let kept = request.headers().get("x-case").is_some_and(|v| v == "kept");
                        let status = if kept { 200 } else { 400 };
                        let response = http::Response::builder().status(status).body(()).unwrap();
                        let _ = respond.send_response(response, true);
                    }
                });
            }
        });
    });
    (addr, accepted)
}

#[test]
fn an_idle_http2_connection_keeps_its_table_half_a_frame_and_its_upstream_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, accepted) = h2_app();
    let app = app.to_string();
    let flags = [
        "--service",
        "orders",
        "--app-addr",
        &app,
        "--control-plane",
        &cp.url(),
    ];
    let orders = Sidecar::start(dir.path(), "orders", &flags);
    orders.wait_ready();
    let mut conn = h2raw::Conn::connect(orders.inbound, &[]);
    let within = Duration::from_secs(5);
    // `x-case: kept` into the sidecar's HPACK table (literal with incremental
    // indexing, new name): index 62 from now on.
    let mut block = h2raw::request("GET", "/one", &[]);
    block.extend([0x40, 6]);
    block.extend(b"x-case");
    block.push(4);
    block.extend(b"kept");
    conn.send(&Frame::headers(1, block, END_HEADERS | END_STREAM))
        .unwrap();
    assert_eq!(conn.outcome(1, within), Outcome::Status(200));
    std::thread::sleep(PAST_THE_GRACE);
    // The field by its index, after the connection let go of its buffers.
    let mut by_index = h2raw::request("GET", "/two", &[]);
    by_index.push(0x80 | 62);
    let second = Frame::headers(3, by_index.clone(), END_HEADERS | END_STREAM).encode();
    conn.write(&second).unwrap();
    assert_eq!(conn.outcome(3, within), Outcome::Status(200));
    std::thread::sleep(PAST_THE_GRACE);
    // Half a frame, a pause past the grace, then the rest.
    let third = Frame::headers(5, by_index, END_HEADERS | END_STREAM).encode();
    conn.write(&third[..5]).unwrap();
    std::thread::sleep(PAST_THE_GRACE);
    conn.write(&third[5..]).unwrap();
    assert_eq!(conn.outcome(5, within), Outcome::Status(200));
    std::thread::sleep(PAST_THE_GRACE);
    conn.send(&Frame::ping(*b"idle-ok!")).unwrap();
    let ack = conn.read_until(within, |f| {
        f.kind == h2raw::PING && f.flags & h2raw::ACK != 0
    });
    assert_eq!(ack.map(|f| f.payload), Some(b"idle-ok!".to_vec()));
    // The sidecar's connection to the app let go of its buffers between the calls
    // too, and served them all.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
}
