//! Broken upstreams, exhausted resources and impatient operators, with real processes:
//!
//! - a malformed upstream answer is a 502 naming the service, and that upstream
//!   connection is never reused;
//! - an app that closes its keep-alive connections right after answering costs no
//!   client a single error; a GET whose connection closed unanswered goes again, a
//!   POST never;
//! - at its open-file limit the sidecar backs off instead of spinning, keeps serving
//!   open connections, and recovers;
//! - a second SIGTERM during the drain exits at once; tunnels are part of the drain.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use graylane_tests::{
    ControlPlane, DemoApp, Sidecar, echo_server, eventually, http_get, raw, read_head,
    tls_client_hello,
};

fn get(addr: SocketAddr) -> (u16, String) {
    raw(
        addr,
        "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
    )
}

/// An app that answers every request on a connection with `answer`, then (when
/// `close_after`) closes the connection without saying so. Counts connections.
fn scripted_app(answer: &'static [u8], close_after: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if stream.write_all(answer).is_err() || close_after {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

fn orders_sidecar(
    dir: &std::path::Path,
    cp: &ControlPlane,
    app: SocketAddr,
    extra: &[&str],
) -> Sidecar {
    let (app, url) = (app.to_string(), cp.url());
    let args = [
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-1",
            "--app-addr",
            &app,
            "--control-plane",
            &url,
        ][..],
        extra,
    ]
    .concat();
    let s = Sidecar::start(dir, "orders-1", &args);
    s.wait_ready();
    s
}

#[test]
fn a_malformed_upstream_answer_is_a_502_and_its_connection_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // Content-Length together with Transfer-Encoding: two readers could frame it two
    // ways (RFC 9112 §6.3). The app keeps the connection open after answering.
    let (app, connections) = scripted_app(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
    );
    let orders = orders_sidecar(dir.path(), &cp, app, &[]);
    for round in 1..=3 {
        let (status, body) = get(orders.inbound);
        assert_eq!(status, 502, "{body}");
        assert!(
            body.contains(
                "upstream orders: malformed response: Content-Length with Transfer-Encoding"
            ),
            "{body}"
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            round,
            "each request on a new upstream connection: the bad one is never reused"
        );
    }
}

/// An app whose first connection reads one request head, writes `first` (nothing, or
/// part of an answer's head) and closes, as an app restarting does; later connections
/// answer 200. Counts the heads read.
fn drops_first_request(first: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&heads);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                if read_head(&mut stream).is_none() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    let _ = stream.write_all(first);
                } else {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            });
        }
    });
    (addr, heads)
}

#[test]
fn a_get_whose_app_connection_closed_unanswered_goes_again_and_a_post_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // Nothing of an answer, or part of its head (explore19 F1): the GET goes again.
    for first in [&b""[..], b"HTTP/1.1 200", b"\r\n"] {
        let (app, heads) = drops_first_request(first);
        let orders = orders_sidecar(dir.path(), &cp, app, &[]);
        let (status, body) = get(orders.inbound);
        assert_eq!(status, 200, "after {first:?}: {body}");
        assert_eq!(heads.load(Ordering::SeqCst), 2, "the GET went twice");
    }

    // A POST, even one without a body, may have been acted on: never sent twice.
    let (app, heads) = drops_first_request(b"");
    let orders = orders_sidecar(dir.path(), &cp, app, &[]);
    let (status, body) = raw(
        orders.inbound,
        "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream orders"), "{body}");
    assert_eq!(heads.load(Ordering::SeqCst), 1, "the POST went once");
}

#[test]
fn an_app_closing_keep_alive_connections_costs_no_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // Answers as if the connection stayed open, then closes it: every pooled
    // connection is stale by the time the next request is written into it.
    let (app, connections) = scripted_app(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true);
    let orders = orders_sidecar(dir.path(), &cp, app, &[]);
    let mut stream = TcpStream::connect(orders.inbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One keep-alive client connection, 200 requests in a row.
    for i in 0..200 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
            .unwrap();
        let head = read_response(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
    }
    assert!(connections.load(Ordering::SeqCst) >= 200);
}

/// Reads one response with a Content-Length body; returns head and body.
fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed: {data:?}"
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// User and system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn metric(admin: SocketAddr, line_start: &str) -> u64 {
    let (_, metrics) = http_get(admin, "/metrics");
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn at_the_open_file_limit_the_sidecar_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let args = [
        "--service",
        "orders",
        "--instance-id",
        "orders-1",
        "--app-addr",
        &app.addr.to_string(),
        "--control-plane",
        &cp.url(),
        "--header-read-timeout",
        "60s",
    ];
    let orders = Sidecar::start_limited(dir.path(), "orders-1", 64, &args);
    orders.wait_ready();
    // A keep-alive client that was served before the limit is hit.
    let mut early = TcpStream::connect(orders.inbound).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut early).starts_with("HTTP/1.1 200"));
    // Idle connections until accepting fails for want of file descriptors (the admin
    // listener cannot accept either then: the log tells).
    let mut held = Vec::new();
    eventually(
        Duration::from_secs(10),
        "accept to fail with EMFILE",
        || {
            for _ in 0..8 {
                held.push(TcpStream::connect(orders.inbound).unwrap());
            }
            orders
                .proc
                .log_text()
                .contains("accept failed")
                .then_some(())
        },
    );
    // Over two seconds at the limit: a backing-off sidecar uses next to no CPU and
    // logs a line a second; a spinning one burns a core and writes megabytes.
    let cpu_before = cpu_ticks(orders.proc.pid());
    let log_before = std::fs::metadata(&orders.proc.log).unwrap().len();
    let window = Instant::now();
    // The measurement window of a rate, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(2));
    let elapsed = window.elapsed();
    let cpu = cpu_ticks(orders.proc.pid()) - cpu_before;
    let logged = std::fs::metadata(&orders.proc.log).unwrap().len() - log_before;
    assert!(cpu <= 20, "{cpu} ticks of CPU in {elapsed:?}: spinning");
    assert!(logged < 2048, "{logged} bytes of log in {elapsed:?}");
    // Connections already open are still served.
    early
        .write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut early).starts_with("HTTP/1.1 200"));
    // Free the descriptors: new clients are served again, and the failures counted.
    drop(held);
    eventually(Duration::from_secs(10), "a new client to be served", || {
        (get(orders.inbound).0 == 200).then_some(())
    });
    assert!(
        metric(
            orders.admin,
            "graylane_accept_errors_total{listener=\"inbound\"}"
        ) > 0
    );
}

#[test]
fn a_second_sigterm_exits_at_once_and_tunnels_are_drained() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // The app speaks something that is not HTTP: the inbound listener tunnels it.
    let echo_addr = echo_server();
    let mut orders = orders_sidecar(dir.path(), &cp, echo_addr, &["--drain-timeout", "60s"]);
    let mut tunnel = TcpStream::connect(orders.inbound).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let echoed = |tunnel: &mut TcpStream, text: &[u8]| {
        tunnel.write_all(text).unwrap();
        let mut back = vec![0u8; text.len()];
        tunnel.read_exact(&mut back).unwrap();
        assert_eq!(back, text);
    };
    // An app's own TLS: its ClientHello first (only that is tunnelled), then anything.
    echoed(&mut tunnel, &tls_client_hello("orders.example"));
    orders.proc.signal(libc::SIGTERM);
    eventually(Duration::from_secs(10), "the drain to start", || {
        orders
            .proc
            .log_text()
            .contains("shutting down: draining")
            .then_some(())
    });
    // Draining: no new connections, but the open tunnel goes on.
    echoed(&mut tunnel, b"\x16\x03\x01 still there");
    assert!(!orders.proc.has_exited(), "the tunnel holds the drain open");
    // A second SIGTERM: out now, not after the 60 s drain.
    let started = Instant::now();
    let status = orders.proc.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        orders
            .proc
            .log_text()
            .contains("second signal during the drain")
    );
}

#[test]
fn a_drain_ends_when_the_last_tunnel_closes() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let echo_addr = echo_server();
    let mut orders = orders_sidecar(dir.path(), &cp, echo_addr, &["--drain-timeout", "60s"]);
    let mut tunnel = TcpStream::connect(orders.inbound).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let hello = tls_client_hello("orders.example");
    tunnel.write_all(&hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    tunnel.read_exact(&mut back).unwrap();
    orders.proc.signal(libc::SIGTERM);
    eventually(Duration::from_secs(10), "the drain to start", || {
        orders
            .proc
            .log_text()
            .contains("shutting down: draining")
            .then_some(())
    });
    assert!(!orders.proc.has_exited());
    drop(tunnel);
    let started = Instant::now();
    eventually(
        Duration::from_secs(10),
        "exit once the tunnel closed",
        || orders.proc.has_exited().then_some(()),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_post_whose_connection_never_came_up_goes_to_another_instance() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let _live = orders_sidecar(dir.path(), &cp, app.addr, &[]);
    // A registered instance whose address refuses connections (its pod just died).
    let refusing = graylane_tests::Refusing::bind();
    let dead = refusing.addr.to_string();
    let _dead = Sidecar::start(
        dir.path(),
        "orders-dead",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-dead",
            "--advertise-addr",
            &dead,
            "--control-plane",
            &cp.url(),
        ],
    );
    let client = Sidecar::start(
        dir.path(),
        "frontend",
        &["--service", "frontend", "--control-plane", &cp.url()],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 2);
    // Each POST picks one of the two at random until the dead one is ejected: with 20
    // of them, the dead one is all but certainly tried (1 - 2^-20). Its body never
    // left, so it goes to the live instance, whole.
    for i in 0..20 {
        let body = format!("order number {i}");
        let (status, response) = raw(
            client.outbound,
            &format!(
                "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(status, 200, "POST {i}: {response}");
        assert!(
            response.contains(&format!("\"received\":{}", body.len())),
            "{response}"
        );
    }
}

#[test]
fn a_slow_upstream_gets_504_and_its_request_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // An app that reads a request and never answers; it notes when the sidecar
    // gives up on the connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&closed);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let orders = orders_sidecar(dir.path(), &cp, app, &["--upstream-timeout", "500ms"]);
    let (status, body) = get(orders.inbound);
    assert_eq!(status, 504, "{body}");
    eventually(
        Duration::from_secs(5),
        "the upstream connection to be closed",
        || (closed.load(Ordering::SeqCst) == 1).then_some(()),
    );
}

/// An app that answers with `head` and `partial` bytes of its body, then dies.
fn dying_app(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    addr
}

#[test]
fn an_upstream_dying_mid_body_is_never_a_complete_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    for (framing, answer) in [
        (
            "content-length",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly the first bytes"[..],
        ),
        (
            "chunked",
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nonly the first bytes\r\n"
                [..],
        ),
    ] {
        let app = dying_app(answer);
        let mut orders = orders_sidecar(dir.path(), &cp, app, &[]);
        let (status, response) = raw(orders.inbound, "GET / HTTP/1.1\r\nHost: orders\r\n\r\n");
        assert_eq!(status, 200, "{framing}: the head had gone out: {response}");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        if head.contains("content-length: 1000") {
            assert!(body.len() < 1000, "{framing}: {response:?}");
        } else {
            assert!(
                head.contains("transfer-encoding: chunked"),
                "{framing}: {head}"
            );
            assert!(
                !body.ends_with("0\r\n\r\n"),
                "{framing}: a truncated body must not end like a complete one: {body:?}"
            );
        }
        orders.proc.kill();
    }
}

/// SIGTERM with an HTTP/2 client connected: its request in flight is answered, and the
/// connection gets a GOAWAY, so the client opens no new stream on it.
#[test]
fn a_drain_answers_http2_in_flight_and_sends_goaway() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let mut orders = orders_sidecar(dir.path(), &cp, app.addr, &["--drain-timeout", "10s"]);
    let inbound = orders.inbound;
    // A worker thread drives the connection between the test's steps.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (client, in_flight) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::builder()
            .uri("http://orders/slow")
            .header("x-demo-delay-ms", "1500")
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        (client, response)
    });
    eventually(
        Duration::from_secs(10),
        "the request to be in flight",
        || {
            app.proc
                .log_text()
                .contains("request GET /slow")
                .then_some(())
        },
    );
    orders.proc.signal(libc::SIGTERM);
    runtime.block_on(async {
        let response = in_flight.await.unwrap();
        assert_eq!(response.status(), 200, "the in-flight stream is answered");
        // After the GOAWAY the connection takes no new stream.
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            match client.ready().await {
                Err(e) => Some(e),
                Ok(mut ready) => {
                    let request = http::Request::builder()
                        .uri("http://orders/late")
                        .body(())
                        .unwrap();
                    match ready.send_request(request, true) {
                        Err(e) => Some(e),
                        Ok((response, _)) => response.await.err(),
                    }
                }
            }
        })
        .await
        .unwrap();
        let error = refused.expect("a new stream after the drain began must not be served");
        assert!(
            error.is_go_away() || error.is_io() || error.reason().is_some(),
            "{error:?}"
        );
    });
    assert!(orders.proc.terminate(Duration::from_secs(15)).success());
    assert!(!app.proc.log_text().contains("/late"));
}
