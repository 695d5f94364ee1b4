//! Where an app's call goes at the edges of the mesh, with real processes in a network
//! namespace of the test's own (its hosts file maps `payments.stripe.com` to this
//! machine, so "external" hosts are reached without leaving it):
//!
//! - a host outside the mesh forms is never a mesh service, whatever its first label;
//! - `CONNECT` is tunnelled, to the host or to a mesh instance (through its inbound
//!   listener to the app);
//! - a service calling itself is served, not a 508;
//! - a request aimed at the sidecar's own listeners, or bouncing between sidecars, is
//!   a 508 at once.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graylane_tests::netns::NetNs;
use graylane_tests::{
    ControlPlane, DemoApp, Sidecar, echo_server, eventually, http_get, raw, tls_client_hello,
};

/// An HTTP server outside the mesh: answers `external` to everything and keeps the
/// request heads it got.
struct External {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl External {
    fn start() -> External {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    // One request per connection: read its head, answer, close.
                    let Some(buf) = graylane_tests::read_head(&mut stream) else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nexternal",
                    );
                });
            }
        });
        External { addr, heads }
    }
}

fn requests_served(app: &DemoApp) -> usize {
    app.proc.log_text().matches("request GET").count()
}

#[test]
fn external_hosts_connect_self_calls_and_loops() {
    let ns = NetNs::create();
    ns.write_hosts("127.0.0.1 localhost payments.stripe.com\n");
    ns.enter();

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let sidecar = |name: &str, service: &str, app: &str, extra: &[&str]| {
        let args = [
            &[
                "--service",
                service,
                "--instance-id",
                name,
                "--app-addr",
                app,
                "--control-plane",
                &url,
            ][..],
            extra,
        ]
        .concat();
        let s = Sidecar::start_in(dir.path(), name, &ns.name, &args);
        s.wait_ready();
        s
    };
    let payments_app = DemoApp::start(dir.path(), "payments", "v1", None);
    let _payments = sidecar(
        "payments-1",
        "payments",
        &payments_app.addr.to_string(),
        &[],
    );
    let echo = echo_server();
    let _tls = sidecar("tls-1", "tls", &echo.to_string(), &[]);
    let frontend_app = DemoApp::start(dir.path(), "frontend", "v1", None);
    let frontend = sidecar(
        "frontend-1",
        "frontend",
        &frontend_app.addr.to_string(),
        &[],
    );
    frontend.wait_endpoints("payments", 1);
    frontend.wait_endpoints("tls", 1);
    frontend.wait_endpoints("frontend", 1);
    let external = External::start();
    let port = external.addr.port();

    // The mesh's own payments, by a mesh name.
    let (status, body) = raw(
        frontend.outbound,
        "GET http://payments/ HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(requests_served(&payments_app), 1);

    // payments.stripe.com is not the mesh's payments: absolute form and Host alike go
    // to the host itself.
    let (status, body) = raw(
        frontend.outbound,
        &format!(
            "GET http://payments.stripe.com:{port}/v1/charges HTTP/1.1\r\nHost: payments.stripe.com:{port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("external"), "{body}");
    let (status, body) = raw(
        frontend.outbound,
        &format!(
            "GET /v1/refunds HTTP/1.1\r\nHost: payments.stripe.com:{port}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
    {
        let heads = external.heads.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(
            heads[0].starts_with("GET /v1/charges HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: payments.stripe.com:{port}")),
            "{}",
            heads[0]
        );
        assert!(heads[1].starts_with("GET /v1/refunds "), "{}", heads[1]);
    }
    assert_eq!(
        requests_served(&payments_app),
        1,
        "no external call reached the mesh's payments"
    );

    // A name that does not resolve: 502 naming it, nothing reaches the mesh.
    let (status, body) = raw(
        frontend.outbound,
        "GET http://payments.example.invalid/ HTTP/1.1\r\nHost: payments.example.invalid\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("payments.example.invalid"), "{body}");
    assert_eq!(requests_served(&payments_app), 1);

    // CONNECT to an external host: 200, then the bytes go through as they are.
    let mut tunnel = TcpStream::connect(frontend.outbound).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tunnel
        .write_all(format!("CONNECT payments.stripe.com:{port} HTTP/1.1\r\nHost: payments.stripe.com:{port}\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut tunnel);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel
        .write_all(b"GET /through-the-tunnel HTTP/1.1\r\nHost: payments.stripe.com\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tunnel.read_to_string(&mut answer);
    assert!(answer.ends_with("external"), "{answer}");
    assert!(external.heads.lock().unwrap()[2].starts_with("GET /through-the-tunnel "));

    // CONNECT to a mesh service: tunnelled to an instance, whose inbound listener
    // hands the app's own TLS (not HTTP) to the app unchanged.
    let mut tunnel = TcpStream::connect(frontend.outbound).unwrap();
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tunnel
        .write_all(b"CONNECT tls:443 HTTP/1.1\r\nHost: tls:443\r\n\r\n")
        .unwrap();
    let head = read_head(&mut tunnel);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let hello = &tls_client_hello("tls.example")[..];
    tunnel.write_all(hello).unwrap();
    let mut back = vec![0u8; hello.len()];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(back, hello);
    drop(tunnel);
    // The same over HTTP/2 (an app whose client speaks it to the proxy): the stream
    // is the tunnel.
    let (status, back) = h2_tunnel(frontend.outbound, "tls:443", hello);
    assert_eq!(status, 200);
    assert_eq!(back, hello);
    // CONNECT to a name that does not resolve: 502, no tunnel.
    let head = connect_head(frontend.outbound, "nowhere.invalid:443");
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(
        h2_tunnel(frontend.outbound, "nowhere.invalid:443", hello).0,
        502
    );

    // frontend calling frontend: its only instance is this very sidecar, and the call
    // goes through its inbound side to its app (every time, not 1 in N).
    let served = requests_served(&frontend_app);
    for _ in 0..5 {
        let (status, body) = raw(
            frontend.outbound,
            "GET / HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "a self-call is served: {body}");
    }
    assert_eq!(requests_served(&frontend_app), served + 5);

    // Aimed at the sidecar's own outbound or admin listener: 508 at once.
    let own = frontend.outbound.port();
    let admin = frontend.admin.port();
    for request in [
        format!(
            "GET http://127.0.0.1:{own}/ HTTP/1.1\r\nHost: 127.0.0.1:{own}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET / HTTP/1.1\r\nHost: localhost:{admin}\r\nConnection: close\r\n\r\n"),
    ] {
        let (status, body) = raw(frontend.outbound, &request);
        assert_eq!(status, 508, "{request}: {body}");
    }
    let head = connect_head(frontend.outbound, &format!("127.0.0.1:{own}"));
    assert!(head.starts_with("HTTP/1.1 508"), "{head}");
}

/// `CONNECT authority` over HTTP/2 (prior knowledge): the status, and on a 200 what
/// comes back through the tunnel for `sent`, once as many bytes have.
fn h2_tunnel(proxy: SocketAddr, authority: &str, sent: &[u8]) -> (u16, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wait = Duration::from_secs(10);
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut send = send.ready().await.unwrap();
        let request = http::Request::connect(authority).body(()).unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        let response = tokio::time::timeout(wait, response).await.unwrap().unwrap();
        let (head, mut recv) = response.into_parts();
        if head.status != 200 {
            return (head.status.as_u16(), Vec::new());
        }
        stream
            .send_data(bytes::Bytes::copy_from_slice(sent), false)
            .unwrap();
        let mut back = Vec::new();
        while back.len() < sent.len() {
            let data = tokio::time::timeout(wait, recv.data()).await.unwrap();
            let data = data.expect("the tunnel ended early").unwrap();
            let _ = recv.flow_control().release_capacity(data.len());
            back.extend_from_slice(&data);
        }
        (200, back)
    })
}

/// Sends `CONNECT authority` and returns the response head.
fn connect_head(proxy: SocketAddr, authority: &str) -> String {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    read_head(&mut stream)
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An instance that advertises another sidecar's outbound listener: requests for it
/// bounce between outbound listeners. The hop count ends it with a 508 after a few
/// hops, instead of hundreds of hops until the timeout or the file descriptors run out.
#[test]
fn a_multi_hop_loop_is_a_508_within_the_hop_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    // In plaintext the hop count is what stops it (over mTLS, below, the first
    // bounce fails its handshake).
    let off = "apiVersion: graylane.io/v1\nkind: PeerPolicy\nmetadata: {name: loopy}\nspec:\n  mtls: \"off\"\n  services: [loopy, loopadmin]\n";
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &graylane_tests::write_file(dir.path(), "rules.yaml", off),
    ])
    .assert_ok();
    let url = cp.url();
    let app = DemoApp::start(dir.path(), "frontend", "v1", None);
    let frontend = Sidecar::start(
        dir.path(),
        "frontend-1",
        &[
            "--service",
            "frontend",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &url,
        ],
    );
    frontend.wait_ready();
    let bouncing = frontend.outbound.to_string();
    let loopy = Sidecar::start(
        dir.path(),
        "loopy-1",
        &[
            "--service",
            "loopy",
            "--app-addr",
            "127.0.0.1:9",
            "--advertise-addr",
            &bouncing,
            "--control-plane",
            &url,
        ],
    );
    loopy.wait_ready();
    frontend.wait_endpoints("loopy", 1);
    let (status, body) = raw(
        frontend.outbound,
        "GET / HTTP/1.1\r\nHost: loopy\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 508, "{body}");
    assert!(body.contains("passed through 8 sidecars"), "{body}");
    let outbound_requests = || {
        let (_, metrics) = http_get(frontend.admin, "/metrics");
        metrics
            .lines()
            .filter(|l| l.starts_with("graylane_sidecar_requests_total{direction=\"outbound\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .sum::<usize>()
    };
    let counted = eventually(Duration::from_secs(5), "the hops to be counted", || {
        let n = outbound_requests();
        (n >= 9).then_some(n)
    });
    assert_eq!(
        counted, 9,
        "8 forwards (the hop limit), then the 9th arrival answered 508"
    );

    // An instance at the caller's admin listener: a loop too, not its /config.
    let admin = frontend.admin.to_string();
    let loopadmin = Sidecar::start(
        dir.path(),
        "loopadmin-1",
        &[
            "--service",
            "loopadmin",
            "--app-addr",
            "127.0.0.1:9",
            "--advertise-addr",
            &admin,
            "--control-plane",
            &url,
        ],
    );
    loopadmin.wait_ready();
    frontend.wait_endpoints("loopadmin", 1);
    let (status, body) = raw(
        frontend.outbound,
        "GET /config HTTP/1.1\r\nHost: loopadmin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 508, "{body}");
    assert!(body.contains("reached the admin listener"), "{body}");

    // Over mesh mTLS (the PeerPolicy gone: permissive) the first bounce fails its
    // handshake at the outbound listener; that is the same loop, and said as one.
    cp.cli(&["rules", "delete", "PeerPolicy/loopy"]).assert_ok();
    eventually(
        Duration::from_secs(5),
        "the rules without the policy",
        || (frontend.config()["revision"].as_u64() == Some(2)).then_some(()),
    );
    let (status, body) = raw(
        frontend.outbound,
        "GET / HTTP/1.1\r\nHost: loopy\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 508, "{body}");
    assert!(body.contains("this sidecar's own listener"), "{body}");
}

/// An instance whose address swallows connection attempts (SYNs dropped, as for a
/// node that vanished): the connect times out (2 s) and the next instance serves; the
/// black hole is then ejected, so only the first request pays the wait.
#[test]
fn a_black_holed_instance_times_out_on_connect_and_the_next_serves() {
    let ns = NetNs::create();
    ns.enter();
    let hole = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    ns.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &hole.port().to_string(),
        "-j",
        "DROP",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let url = cp.url();
    let app = DemoApp::start(dir.path(), "orders", "v1", None);
    let live = Sidecar::start(
        dir.path(),
        "orders-live",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-live",
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            &url,
        ],
    );
    live.wait_ready();
    let _hole = Sidecar::start(
        dir.path(),
        "orders-hole",
        &[
            "--service",
            "orders",
            "--instance-id",
            "orders-hole",
            "--advertise-addr",
            &hole.to_string(),
            "--control-plane",
            &url,
        ],
    );
    let client = Sidecar::start(
        dir.path(),
        "client",
        &["--service", "client", "--control-plane", &url],
    );
    client.wait_ready();
    client.wait_endpoints("orders", 2);
    for i in 0..20 {
        let (status, body) = raw(
            client.outbound,
            "GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 200, "GET {i}: {body}");
    }
    assert_eq!(requests_served(&app), 20);
}

/// An operator's typo in the flags that decide which hosts are mesh services is refused
/// at start, naming the flag, instead of quietly matching no host.
#[test]
fn a_bad_namespace_or_cluster_domain_is_refused_at_start() {
    for (flag, value) in [
        ("--namespace", "Shop"),
        ("--namespace", "shop.prod"),
        ("--cluster-domain", "corp..local"),
        ("--cluster-domain", "Cluster Local"),
    ] {
        let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
            .args(["--service", "orders", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
