//! HTTP/1.1 upgrades through two sidecars: the 101 comes back, then bytes flow both
//! ways on the upgraded connection (client → frontend outbound → orders inbound → app).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use graylane_tests::{ControlPlane, Sidecar};

/// An app that answers every upgrade request with 101 and then echoes bytes.
fn echo_app() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let mut upgrade = false;
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    upgrade |= line.to_ascii_lowercase().starts_with("upgrade: echo");
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut stream = stream;
                if !upgrade {
                    let _ =
                        stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
                    return;
                }
                stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
                let mut buf = [0u8; 1024];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn upgraded_connections_pass_through_two_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let app = echo_app();
    let orders = Sidecar::start(
        dir.path(),
        "orders",
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
    let frontend = Sidecar::start(
        dir.path(),
        "frontend",
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-1",
            "--control-plane",
            &url,
        ],
    );
    orders.wait_ready();
    frontend.wait_ready();
    frontend.wait_endpoints("orders", 1);

    let mut stream = TcpStream::connect(frontend.outbound).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: orders\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    for message in ["hello", "through two sidecars"] {
        stream.write_all(message.as_bytes()).unwrap();
        let mut echoed = vec![0u8; message.len()];
        reader.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
}
