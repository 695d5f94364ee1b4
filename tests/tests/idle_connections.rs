//! Idle HTTP/1.1 keep-alive connections are parked (their buffers dropped, the socket
//! kept) once they have waited 5 ms for their next request, and served again when it
//! comes (sidecar `server/idle.rs`). A client must see
//! none of it: the next request, a head split across a park, bytes pipelined before
//! one, are all answered in order and forwarded once; the header-read timeout still
//! counts from the start of the wait (`hardening_h1` dribbles a head across parks).
//!
//! The pauses below are longer than the park grace, so that the connection is parked
//! between the writes: time passing is what is tested, nothing is waited for.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

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
