//! Mesh mTLS while the rules change: PeerPolicy switches under steady load fail no
//! request, `CONNECT` tunnels by mode (security.md "mTLS between sidecars"), and the
//! resend over mTLS of a plaintext request closed unanswered is for idempotent ones.

#![allow(clippy::unwrap_used)]

#[path = "mtls/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use graylane_tests::{ControlPlane, Sidecar, raw, read_head};
use serde_json::Value;

use self::support::*;

#[test]
fn live_switches_under_steady_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    let rules = |mode: &str| {
        format!(
            "{}---\n{}",
            peer_policy("edge", "off", Some("a")),
            peer_policy("b", mode, Some("b"))
        )
    };
    apply(
        &cp,
        dir.path(),
        &rules("permissive"),
        &[&a.sidecar, &b.sidecar],
    );

    let load = Load::start(a.sidecar.inbound);
    load.served_more(20);
    for mode in ["strict", "off", "strict"] {
        apply(&cp, dir.path(), &rules(mode), &[&a.sidecar, &b.sidecar]);
        load.served_more(50);
    }
    load.finish("the switches");
    // Strict at the end: a's calls to b are mTLS, plaintext straight at b is refused.
    let (status, head, _) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
    assert_eq!(status, 200);
    assert!(head.contains("peer=spiffe://"), "{head}");
    assert_eq!(get(b.sidecar.inbound, "b", &[]).0, 0);
}

/// `CONNECT` to a mesh service: in permissive mode the app's own TLS goes through the
/// tunnel to the app as before; in strict mode the instance would refuse it (not the
/// mesh's TLS), so the caller's sidecar answers 502 saying why instead of a tunnel that
/// dies.
#[test]
fn connect_tunnels_pass_in_permissive_mode_and_are_refused_in_strict_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let a = node(dir.path(), &cp, "a", "v1", None, &[]);
    let echo = graylane_tests::echo_server().to_string();
    let b = Sidecar::start(
        dir.path(),
        "b-1",
        &[
            "--service",
            "b",
            "--instance-id",
            "b-1",
            "--app-addr",
            &echo,
            "--control-plane",
            &cp.url(),
        ],
    );
    b.wait_ready();
    identity(&b);
    a.sidecar.wait_endpoints("b", 1);
    let connect = || {
        let mut tunnel = TcpStream::connect(a.sidecar.outbound).unwrap();
        tunnel
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tunnel
            .write_all(b"CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tunnel.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        (tunnel, String::from_utf8_lossy(&head).into_owned())
    };
    // An app's own TLS (a ClientHello to a name outside the mesh): passed to the app,
    // which echoes it.
    let hello = graylane_tests::tls_client_hello("shop.example");
    let hello = hello.as_slice();
    let (mut tunnel, head) = connect();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel.write_all(hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(back, hello);
    drop(tunnel);

    let policy = peer_policy("b", "strict", Some("b"));
    apply(&cp, dir.path(), &policy, &[&a.sidecar, &b]);
    let (mut tunnel, head) = connect();
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let length = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-length: ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tunnel.read_exact(&mut body).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("instance b-1"), "{body}");
    assert!(body.contains("CONNECT tunnel"), "{body}");
}

/// Off → strict, with the caller's sidecar held on the old rules (its control-plane
/// stream gated): it still dials plaintext, the instance refuses it, and the request
/// goes again over mTLS — served, never failed.
#[test]
fn a_caller_that_has_not_seen_strict_yet_is_retried_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let gate = Gate::start(cp.grpc);
    let via_gate = format!("http://{}", gate.addr);
    let a = node_via(dir.path(), &via_gate, "a", "v1", Some("b"), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    a.sidecar.wait_endpoints("b", 1);
    let rules = |mode: &str| {
        format!(
            "{}---\n{}",
            peer_policy("edge", "off", Some("a")),
            peer_policy("b", mode, Some("b"))
        )
    };
    apply(&cp, dir.path(), &rules("off"), &[&a.sidecar, &b.sidecar]);
    let (status, head, _) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
    assert_eq!(status, 200);
    assert!(!head.contains("peer="), "off: plaintext: {head}");

    gate.hold(true);
    let lagging = a.sidecar.config()["revision"].as_u64();
    apply(&cp, dir.path(), &rules("strict"), &[&b.sidecar]);
    for _ in 0..5 {
        let (status, head, body) = get(a.sidecar.inbound, "a", &[("graylane-debug", "1")]);
        assert_eq!(status, 200, "{head}\n{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["downstream"]["service"], "b", "{body}");
        assert!(
            head.contains("peer=spiffe://"),
            "sent again over mTLS: {head}"
        );
    }
    assert_eq!(
        a.sidecar.config()["revision"].as_u64(),
        lagging,
        "a saw the new rules: the scenario did not happen"
    );
    assert!(
        metric(&b.sidecar, &format!("{REFUSED}{{reason=\"plaintext\"}}")) >= 1,
        "a's plaintext attempts were refused first"
    );
    gate.hold(false);
}

/// An app whose first request of all (`heads` counts them, shared by the instances)
/// is held unanswered, its instance's number sent on `held`; later ones answered 200.
fn holding_app(n: usize, heads: &Arc<AtomicUsize>, held: &mpsc::Sender<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, held) = (Arc::clone(heads), held.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (heads, held) = (Arc::clone(&heads), held.clone());
            std::thread::spawn(move || {
                while read_head(&mut stream).is_some() {
                    if heads.fetch_add(1, Ordering::SeqCst) == 0 {
                        let _ = held.send(n);
                        // Held: until the test ends.
                        let _ = stream.read(&mut [0u8; 1]);
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Mode off: a caller's plaintext connection closing unanswered is taken for an
/// instance that turned strict, and the request goes again over mTLS. But a sidecar
/// dying with the request at its app closes the same way: a POST must then fail, not
/// reach the other instance's app too (explore19 F2); a GET goes again.
#[test]
fn a_post_whose_instance_died_holding_it_is_not_sent_again_over_mtls() {
    for (method, sent) in [("POST", 1), ("GET", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(dir.path(), &[]);
        let (heads, (held_tx, held)) = (Arc::new(AtomicUsize::new(0)), mpsc::channel());
        let mut orders: Vec<Sidecar> = (0..2)
            .map(|n| {
                let app = holding_app(n, &heads, &held_tx).to_string();
                let id = format!("orders-{n}");
                let args = [
                    "--service",
                    "orders",
                    "--instance-id",
                    &id,
                    "--app-addr",
                    &app,
                ];
                let s = Sidecar::start(
                    dir.path(),
                    &id,
                    &[&args[..], &["--control-plane", &cp.url()]].concat(),
                );
                s.wait_ready();
                identity(&s);
                s
            })
            .collect();
        let front = Sidecar::start(
            dir.path(),
            "front",
            &[
                "--service",
                "front",
                "--app-addr",
                "127.0.0.1:9",
                "--control-plane",
                &cp.url(),
            ],
        );
        front.wait_ready();
        identity(&front);
        front.wait_endpoints("orders", 2);
        let all: Vec<&Sidecar> = orders.iter().chain([&front]).collect();
        apply(
            &cp,
            dir.path(),
            &peer_policy("orders", "off", Some("orders")),
            &all,
        );

        let outbound = front.outbound;
        let request = format!(
            "{method} /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let client = std::thread::spawn(move || raw(outbound, &request));
        let n = held.recv_timeout(Duration::from_secs(10)).unwrap();
        orders[n].proc.kill();
        let (status, response) = client.join().unwrap();
        assert_eq!(heads.load(Ordering::SeqCst), sent, "{method}: {response}");
        let expected = if sent == 1 { 502 } else { 200 };
        assert_eq!(status, expected, "{method}: {response}");
    }
}

/// A listener turning strict closes the plaintext connections it accepted before: an
/// idle one at once, a busy one after its request, answered (`Connection: close`).
#[test]
fn plaintext_connections_open_when_strict_begins_finish_their_request_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    let permissive = peer_policy("b", "permissive", Some("b"));
    apply(&cp, dir.path(), &permissive, &[&b.sidecar]);
    let open = || {
        let s = TcpStream::connect(b.sidecar.inbound).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Idle: one request answered, kept alive.
    let mut idle = open();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 4096];
    let n = idle.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    // Busy: half of its body sent.
    let mut busy = open();
    busy.write_all(b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();

    let strict = peer_policy("b", "strict", Some("b"));
    apply(&cp, dir.path(), &strict, &[&b.sidecar]);
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "the idle one is closed"
    );
    busy.write_all(b"world").unwrap();
    let mut response = Vec::new();
    busy.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).to_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert!(
        response.contains(r#"{"received":10}"#),
        "the whole body reached the app: {response}"
    );
    // And a new plaintext connection is refused.
    assert_eq!(get(b.sidecar.inbound, "b", &[]).0, 0);
}

/// HTTP/2 in the clear, open when the listener turns strict: a GOAWAY ends it once
/// its streams are done, and the client sees the connection close cleanly.
#[test]
fn a_plaintext_http2_connection_gets_a_goaway_when_strict_begins() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let b = node(dir.path(), &cp, "b", "v1", None, &[]);
    let permissive = peer_policy("b", "permissive", Some("b"));
    apply(&cp, dir.path(), &permissive, &[&b.sidecar]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inbound = b.sidecar.inbound;
    let (mut sender, mut connection) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        (sender, tokio::spawn(connection))
    });
    let get = |sender: &mut hyper::client::conn::http2::SendRequest<
        http_body_util::Empty<bytes::Bytes>,
    >| {
        let request = http::Request::get(format!("http://{inbound}/"))
            .header("host", "b")
            .body(http_body_util::Empty::new())
            .unwrap();
        runtime.block_on(sender.send_request(request))
    };
    assert_eq!(get(&mut sender).unwrap().status(), 200);

    let strict = peer_policy("b", "strict", Some("b"));
    apply(&cp, dir.path(), &strict, &[&b.sidecar]);
    let ended = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), &mut connection).await });
    let ended = ended
        .expect("the connection ends after the GOAWAY")
        .unwrap();
    assert!(ended.is_ok(), "a graceful end, not an error: {ended:?}");
    assert!(get(&mut sender).is_err(), "no new stream after the GOAWAY");
}
