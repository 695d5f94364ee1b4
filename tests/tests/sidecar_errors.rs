//! The sidecar's error table and hardening, over real sockets: unknown service (502),
//! upstream timeout (504), too many headers (431), ambiguous framing (400),
//! and the header-read timeout.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use graylane_tests::{ControlPlane, DemoApp, Sidecar, raw};

fn get(addr: SocketAddr, host: &str, extra: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"),
    )
}

#[test]
fn the_error_table() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let orders = Sidecar::start(
        dir.path(),
        "orders-v1",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-v1",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &url,
            "--upstream-timeout",
            "300ms",
            "--header-read-timeout",
            "500ms",
        ],
    );
    orders.wait_ready();
    orders.wait_endpoints("orders", 1);

    let (status, body) = get(orders.outbound, "nosuch", "");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("unknown service nosuch"), "{body}");
    // A service a RoutePolicy declares is known while it has no instance (scaled to
    // zero, all gone): 503 naming it and the lane, as a mesh's "no healthy upstream".
    let declared = graylane_tests::write_file(
        dir.path(),
        "payments.yaml",
        "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {name: gray}\nspec: {tag: gray, selector: {version: v2}, fallback: [base]}\n---\n\
         apiVersion: graylane.io/v1\nkind: RoutePolicy\nmetadata: {name: payments}\nspec: {service: payments}\n",
    );
    cp.cli(&["rules", "apply", "-f", &declared]).assert_ok();
    graylane_tests::eventually(Duration::from_secs(10), "revision 1 at the sidecar", || {
        (orders.config()["revision"] == 1).then_some(())
    });
    let (status, body) = get(orders.outbound, "payments", "Gray-Publish: gray\r\n");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("payments") && body.contains("lane gray"),
        "{body}"
    );

    // The only orders instance is this sidecar itself: not a loop, the call goes
    // through its inbound side to its app (loops: sidecar_edges.rs).
    let (status, body) = get(orders.outbound, "orders", "");
    assert_eq!(status, 200, "{body}");

    // Through the inbound side to the app, late: 504 naming the service.
    let (status, body) = get(orders.inbound, "orders", "x-demo-delay-ms: 2000\r\n");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("orders"), "{body}");
    let (status, _) = get(orders.inbound, "orders", "");
    assert_eq!(status, 200, "the same path answers when the app is on time");

    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, _) = get(orders.inbound, "orders", &many);
    assert_eq!(status, 431);

    // Content-Length with Transfer-Encoding: read as chunked, answered once, and the
    // connection closed, so the request hidden behind it is never served.
    let (_, response) = raw(
        orders.inbound,
        "POST / HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: orders\r\n\r\n",
    );
    assert_eq!(
        response.matches("HTTP/1.1 ").count(),
        1,
        "one response, no smuggled second one: {response}"
    );
    let (status, _) = raw(
        orders.inbound,
        "POST / HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400, "repeated Transfer-Encoding is refused");
    let (status, _) = raw(
        orders.inbound,
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "HTTP/1.1 without Host is refused");
    let (status, _) = raw(
        orders.inbound,
        "POST / HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    );
    assert_eq!(status, 400, "differing Content-Lengths are refused");

    // Headers that never complete: the connection is closed after the header-read
    // timeout (500 ms here), not held open.
    let mut slow = TcpStream::connect(orders.inbound).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = String::new();
    let _ = slow.read_to_string(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed by the header-read timeout, got {rest:?}"
    );
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
}

/// A failing upstream is in the log at info, as linkerd2-proxy's "Request failed":
/// the operator asking "why the 502s?" reads the cause there. A storm of them is one
/// line a second, each saying how many were not logged; a client's own bad request is
/// not an operator's news and stays out.
#[test]
fn failures_are_logged_at_most_once_a_second_with_the_count_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // An app that is not there: its port refuses connections.
    let gone = graylane_tests::Refusing::bind();
    let app = gone.addr;
    let orders = Sidecar::start(
        dir.path(),
        "orders-down",
        &[
            "--service",
            "orders",
            "--app-addr",
            &app.to_string(),
            "--control-plane",
            &cp.url(),
        ],
    );
    orders.wait_ready();
    let (status, _) = get(
        orders.inbound,
        "orders",
        "Content-Length: 1\r\nContent-Length: 2\r\n",
    );
    assert_eq!(status, 400);
    let started = Instant::now();
    let sent = 300;
    for _ in 0..sent {
        let (status, body) = get(orders.inbound, "orders", "");
        assert_eq!(status, 502, "{body}");
    }
    let elapsed = started.elapsed();
    let log = orders.proc.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request failed"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("cause=\"upstream\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&app.to_string()),
        "names the address: {}",
        lines[0]
    );
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 1,
        "{} lines in {elapsed:?}",
        lines.len()
    );
    let counted: u64 = lines
        .iter()
        .map(|l| {
            let n = l.split("not_logged=").nth(1).unwrap();
            n.split_whitespace().next().unwrap().parse::<u64>().unwrap() + 1
        })
        .sum();
    assert!(counted <= sent, "{counted} counted of {sent}");
    assert!(
        !log.contains("Content-Length"),
        "a client's bad request is not logged: {log}"
    );
}

/// An app on port 0 that reads each request head and answers `answer` (`None`: never
/// answers, holding the connection); says on `took` when it has a request. Its
/// thread ends with the test process.
fn raw_app(answer: Option<&'static [u8]>) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let (took, taken) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = took.send(());
            match answer {
                Some(answer) => drop(conn.write_all(answer)),
                None => held.push(conn),
            }
        }
    });
    (app, taken)
}

/// `orders` (its sidecar's inbound to `app`) and `frontend` (whose outbound the test
/// calls), mesh mTLS between them, `frontend` ready to route to `orders`.
fn orders_behind_a_peer(
    dir: &std::path::Path,
    cp: &ControlPlane,
    app: SocketAddr,
) -> (Sidecar, Sidecar) {
    let url = cp.url();
    let app = app.to_string();
    let flags = |service: &'static str, id: &'static str| {
        vec![
            "--service",
            service,
            "--instance-id",
            id,
            "--control-plane",
            &url,
        ]
    };
    let mut orders_flags = flags("orders", "orders-1");
    orders_flags.extend(["--app-addr", &app]);
    let orders = Sidecar::start(dir, "orders-1", &orders_flags);
    let front = Sidecar::start(dir, "front-1", &flags("frontend", "front-1"));
    front.wait_ready();
    front.wait_endpoints("orders", 1);
    (orders, front)
}

/// An app whose answer breaks in its body's first chunk (a bad chunk-size line), sent
/// with its head: the inbound sidecar finds it before passing the head on, and the
/// caller gets that sidecar's 502 naming the fault, not a 200 and then a cut
/// connection (nginx and Envoy pass the head on first).
#[test]
fn an_answer_broken_in_its_first_chunk_is_a_502_naming_the_fault() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n";
    let (app, _) = raw_app(Some(answer));
    let (_orders, front) = orders_behind_a_peer(dir.path(), &cp, app);
    let (status, response) = get(front.outbound, "orders", "");
    assert_eq!(status, 502, "{response}");
    let head = response.to_ascii_lowercase();
    assert!(head.contains("\r\ngraylane-error: 1\r\n"), "{response}");
    assert!(
        response.contains("upstream orders: malformed chunked body: chunk size"),
        "{response}"
    );
}

/// A peer sidecar that dies while a request is in it: the caller's sidecar answers
/// 502 saying the connection closed mid-message, in its own words: not rustls'
/// "close_notify" and its docs link, which read as a TLS fault of the mesh. A POST,
/// which no sidecar sends twice.
#[test]
fn a_peer_sidecar_dying_mid_exchange_is_a_502_saying_the_connection_closed_mid_message() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let (app, taken) = raw_app(None);
    let (mut orders, front) = orders_behind_a_peer(dir.path(), &cp, app);
    let mut client = TcpStream::connect(front.outbound).unwrap();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: orders\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .unwrap();
    taken
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reached the app");
    orders.proc.kill();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    let _ = client.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 502 "), "{response}");
    assert!(
        response.contains("closed the connection mid-message"),
        "{response}"
    );
    assert!(
        !response.contains("docs.rs") && !response.contains("close_notify"),
        "{response}"
    );
}
