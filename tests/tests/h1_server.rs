//! The sidecar serves most HTTP/1.1 requests itself (sidecar `server/h1.rs`) and
//! hands the others (HTTP/1.0, upgrades, `Expect`, odd framing) to hyper. What a client and an app must see
//! of it: answers framed for the request that asked (no body after `HEAD`, 204 or
//! 304, chunked when the app's answer runs to its close), a keep-alive connection
//! that goes on after each, the same connection moving between the two servers, and
//! a request whose client left cancelled at the app.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use graylane_tests::rawhttp::{Head, Wire};
use graylane_tests::{ControlPlane, Sidecar};

/// An app answering by path, keep-alive; `/eof` answers without a length and closes.
/// Every request it read is sent on `seen` (method, target and body).
fn framing_app() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, heads) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut wire = Wire::new(conn);
                loop {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let Ok(head) = wire.read_head(deadline) else {
                        return;
                    };
                    let body = match head.get("content-length") {
                        Some(len) => wire.read_exact(len.parse().unwrap(), deadline),
                        None if head.has("transfer-encoding") => wire.read_chunked(deadline),
                        None => Ok(Vec::new()),
                    };
                    let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                    let target = head.target().to_string();
                    let _ = seen.send(
                        format!("{} {target} {body}", head.method())
                            .trim()
                            .to_string(),
                    );
                    let answer: &[u8] = match target.as_str() {
                        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                        "/none" => b"HTTP/1.1 204 No Content\r\n\r\n",
                        "/same" => b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n",
                        "/eof" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end",
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
                    };
                    if wire.stream().write_all(answer).is_err() || target == "/eof" {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

fn sidecar(dir: &std::path::Path, cp: &ControlPlane, app: SocketAddr) -> Sidecar {
    let app = app.to_string();
    let flags = [
        "--service",
        "orders",
        "--app-addr",
        &app,
        "--control-plane",
        &cp.url(),
    ];
    let sidecar = Sidecar::start(dir, "orders", &flags);
    sidecar.wait_ready();
    sidecar
}

fn head(wire: &mut Wire) -> Head {
    wire.read_head(Instant::now() + Duration::from_secs(10))
        .unwrap()
}

#[test]
fn answers_carry_the_framing_their_request_allows_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, _) = framing_app();
    let orders = sidecar(dir.path(), &cp, app);
    let mut wire = Wire::new(std::net::TcpStream::connect(orders.inbound).unwrap());
    let deadline = || Instant::now() + Duration::from_secs(10);
    let ask = |wire: &mut Wire, request: &str| {
        wire.stream()
            .write_all(format!("{request} HTTP/1.1\r\nHost: orders\r\n\r\n").as_bytes())
            .unwrap();
        head(wire)
    };

    // A HEAD's answer keeps the length a GET would get, and no body follows it.
    let answer = ask(&mut wire, "HEAD /head");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.get("content-length"), Some("5"));
    assert!(answer.has("date"));
    for (request, status) in [("GET /none", 204), ("GET /same", 304)] {
        let answer = ask(&mut wire, request);
        assert_eq!(answer.status(), status, "{request}");
        assert!(
            !answer.has("content-length") && !answer.has("transfer-encoding"),
            "{request}: {answer:?}"
        );
    }
    // An answer running to the app's close goes on chunked; the client's connection stays.
    let answer = ask(&mut wire, "GET /eof");
    assert_eq!(
        answer.get("transfer-encoding"),
        Some("chunked"),
        "{answer:?}"
    );
    assert_eq!(wire.read_chunked(deadline()).unwrap(), b"to the end");
    // Nothing stray was sent after any of them: the next answer is whole and next.
    let answer = ask(&mut wire, "GET /last");
    assert_eq!(answer.status(), 200);
    assert_eq!(wire.read_exact(4, deadline()).unwrap(), b"last");
}

#[test]
fn a_connection_moves_between_bodies_and_plain_requests_and_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, heads) = framing_app();
    let orders = sidecar(dir.path(), &cp, app);
    let mut wire = Wire::new(std::net::TcpStream::connect(orders.inbound).unwrap());
    let deadline = || Instant::now() + Duration::from_secs(10);
    // Plain, a body, HTTP/1.0 (hyper's), plain again (still hyper's until the
    // connection is idle), a chunked body, an empty POST; one at a time, each
    // answered before the next.
    let requests = [
        "GET /a HTTP/1.1\r\nHost: orders\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: orders\r\nContent-Length: 3\r\n\r\nabc",
        "GET /c HTTP/1.0\r\nHost: orders\r\nConnection: keep-alive\r\n\r\n",
        "GET /d HTTP/1.1\r\nHost: orders\r\n\r\n",
        "PUT /e HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        "POST /f HTTP/1.1\r\nHost: orders\r\nContent-Length: 0\r\n\r\n",
    ];
    for request in requests {
        wire.stream().write_all(request.as_bytes()).unwrap();
        let answer = head(&mut wire);
        assert_eq!(answer.status(), 200, "{request}");
        assert_eq!(wire.read_exact(4, deadline()).unwrap(), b"last");
    }
    let seen: Vec<String> = heads.try_iter().collect();
    assert_eq!(
        seen,
        [
            "GET /a",
            "POST /b abc",
            "GET /c",
            "GET /d",
            "PUT /e ab",
            "POST /f"
        ]
    );
}

#[test]
fn a_client_that_leaves_mid_request_cancels_it_at_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // An app that answers nothing and reports when its connection ends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let (took, taken) = mpsc::channel();
    let (ended, end) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let _ = took.send(String::from_utf8_lossy(&head).into_owned());
        // Well short of the sidecar's 30 s upstream timeout.
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = ended.send(conn.read(&mut byte).map(|n| n == 0));
    });
    let orders = sidecar(dir.path(), &cp, app);
    let mut client = std::net::TcpStream::connect(orders.inbound).unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: orders\r\n\r\n")
        .unwrap();
    let head = taken.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(head.starts_with("GET /slow "), "{head}");
    drop(client);
    let ended = end.recv_timeout(Duration::from_secs(15)).unwrap();
    assert!(
        matches!(ended, Ok(true))
            || matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the app's connection was closed when the client left: {ended:?}"
    );
}
