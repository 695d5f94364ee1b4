//! Transparent mode for real: in a network namespace of the test's own, iptables
//! redirects the frontend app's connections to its sidecar, as `init-iptables` does in
//! a pod. The app dials a plain address with no proxy settings; the sidecar runs as UID
//! 1337, whose own connections are exempt, so nothing is captured twice. Needs root and
//! iptables (the test command installs it).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::netns::NetNs;
use graylane_tests::{ControlPlane, DemoApp, Sidecar, http_get, write_file};
use serde_json::Value;

const SIDECAR_UID: u32 = 1337;

const RULES: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector: {version: v2}
  fallback: [base]
---
apiVersion: graylane.io/v1
kind: TagPolicy
metadata:
  name: edge
spec:
  services: [frontend]
  # The test client calls the edge in plaintext: no mesh identity, so with mTLS on
  # (the default, permissive) its tag is kept only because this policy says so.
  incoming: keep
";

fn sidecar(dir: &Path, url: &str, app: &DemoApp, service: &str, version: &str) -> Sidecar {
    let id = format!("{service}-{version}");
    let sidecar = Sidecar::start(
        dir,
        &id,
        &[
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &format!("version={version}"),
            "--app-addr",
            &app.addr.to_string(),
            "--control-plane",
            url,
        ],
    );
    sidecar.wait_ready();
    sidecar
}

/// A raw HTTP/1.1 GET to `addr` with `Host: host`; (status, response head, body).
fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {response:?}"));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of a counter without labels in `/metrics`.
fn counter(sidecar: &Sidecar, name: &str) -> u64 {
    let (_, text) = http_get(sidecar.admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// A server on `listener` that answers one connection: with `greeting` first, then
/// echoing whatever arrives until the client closes.
fn serve_one(listener: TcpListener, greeting: &'static [u8]) {
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(greeting).unwrap();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

#[test]
fn redirected_connections_are_routed_passed_through_or_tunnelled() {
    let ns = NetNs::create();
    ns.enter();
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    cp.cli(&[
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "rules.yaml", RULES),
    ])
    .assert_ok();
    let url = cp.url();
    // Destinations outside the mesh, on the namespace's own non-loopback address.
    let external = DemoApp::start_with(
        dir.path(),
        "external",
        "v1",
        None,
        &["--listen", &format!("{}:0", NetNs::ADDRESS)],
    );
    let echo = TcpListener::bind((NetNs::ADDRESS, 0)).unwrap();
    let greeter = TcpListener::bind((NetNs::ADDRESS, 0)).unwrap();
    let (echo_addr, greeter_addr) = (echo.local_addr().unwrap(), greeter.local_addr().unwrap());
    serve_one(echo, b"");
    serve_one(greeter, b"220 greeter ready\r\n");

    let orders_v1 = DemoApp::start(dir.path(), "orders", "v1", None);
    let orders_v2 = DemoApp::start(dir.path(), "orders", "v2", None);
    let _orders = [
        sidecar(dir.path(), &url, &orders_v1, "orders", "v1"),
        sidecar(dir.path(), &url, &orders_v2, "orders", "v2"),
    ];
    // The frontend app dials orders at a plain address (port 80, where nothing
    // listens): only the redirect can get its call anywhere.
    let service_ip = format!("{}:80", NetNs::ADDRESS);
    let frontend_app = DemoApp::start_with(
        dir.path(),
        "frontend",
        "v1",
        None,
        &["--call", "orders", "--outbound", &service_ip],
    );
    let frontend = Sidecar::start_as(
        dir.path(),
        "frontend-v1",
        SIDECAR_UID,
        &[
            "--service",
            "frontend",
            "--instance-id",
            "frontend-v1",
            "--labels",
            "version=v1",
            "--app-addr",
            &frontend_app.addr.to_string(),
            "--control-plane",
            &url,
            "--opaque-ports",
            &greeter_addr.port().to_string(),
        ],
    );
    frontend.wait_ready();
    frontend.wait_endpoints("orders", 2);
    // The init container's job, run twice: the second run changes nothing.
    let port = frontend.outbound.port().to_string();
    let uid = SIDECAR_UID.to_string();
    let init = |extra: &[&str]| {
        let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
            .args([
                "init-iptables",
                "--outbound-port",
                &port,
                "--proxy-uid",
                &uid,
            ])
            .args(["--inbound", "false"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    init(&[]);
    let rules = ns.iptables_save();
    init(&[]);
    assert_eq!(ns.iptables_save(), rules, "init-iptables twice is harmless");
    // Flags that would break every connection are a usage error, and change nothing.
    for bad in [
        &["--inbound", "true", "--inbound-port", &port][..],
        &["--proxy-uid", "0"],
        &["--exclude-outbound-ports", "0"],
    ] {
        let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
            .args(["init-iptables", "--outbound-port", &port])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert_eq!(ns.iptables_save(), rules, "{bad:?} changed the rules");
    }
    assert!(
        rules.contains("-A OUTPUT -p tcp -j GRAYLANE_OUTBOUND"),
        "{rules}"
    );

    // Mesh calls: routed by lane in every propagation mode, the trace table included.
    for (n, mode) in ["header", "traceparent", "baggage"].into_iter().enumerate() {
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e47{n:02x}-00f067aa0ba902b7-01");
        let (status, head, body) = get(
            frontend.inbound,
            "frontend",
            &[
                ("Gray-Publish", "gray"),
                ("traceparent", &tp),
                ("x-demo-forward", mode),
                ("Graylane-Debug", "1"),
            ],
        );
        assert_eq!(status, 200, "{mode}: {head}\n{body}");
        let downstream = &json(&body)["downstream"];
        assert_eq!(downstream["service"], "orders", "{mode}: {body}");
        assert_eq!(downstream["version"], "v2", "{mode}: {body}");
        assert_eq!(downstream["tag"], "gray", "{mode}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("service=orders;instance=orders-v2;subset=-;tag=gray"),
            "{mode}: the frontend's sidecar decided the hop: {head}"
        );
    }
    let (status, _, body) = get(frontend.inbound, "frontend", &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["downstream"]["version"], "v1", "{body}");

    // Not a mesh service: passed through to the address dialled, tag kept.
    for host in ["api.example.com", &external.addr.to_string()] {
        let (status, head, body) = get(external.addr, host, &[("Gray-Publish", "gray")]);
        assert_eq!(status, 200, "{host}: {head}\n{body}");
        assert_eq!(json(&body)["service"], "external", "{body}");
        assert_eq!(json(&body)["tag"], "gray", "{body}");
    }
    let (_, metrics) = http_get(frontend.admin, "/metrics");
    assert!(
        metrics.contains(r#"direction="outbound",service="passthrough""#),
        "passthrough requests went through the sidecar:\n{metrics}"
    );

    // Not HTTP: tunnelled as TCP, a server-first protocol on its opaque port at once
    // (the read would wait out --detect-timeout, 10 s, if the sidecar waited).
    let mut stream = TcpStream::connect(echo_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 14];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"*1\r\n$4\r\nPING\r\n");
    let mut stream = TcpStream::connect(greeter_addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 19];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"220 greeter ready\r\n");
    assert_eq!(counter(&frontend, "graylane_tcp_tunnels_total"), 2);

    // Explicit mode on the same listener is unchanged (loopback is exempt).
    let (status, _, body) = get(frontend.outbound, "orders", &[("Gray-Publish", "gray")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["version"], "v2", "{body}");

    // --cleanup: traffic goes directly again (port 80 has no listener: refused; the
    // external app answers without the sidecar counting a passthrough).
    init(&["--cleanup"]);
    assert!(
        !ns.iptables_save().contains("GRAYLANE"),
        "{}",
        ns.iptables_save()
    );
    assert!(
        TcpStream::connect(&service_ip).is_err(),
        "no redirect after --cleanup"
    );
    let before = passthroughs(&frontend);
    let (status, _, _) = get(external.addr, "api.example.com", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        passthroughs(&frontend),
        before,
        "not through the sidecar any more"
    );
}

/// Requests the sidecar passed through (transparent mode, not a mesh service).
fn passthroughs(sidecar: &Sidecar) -> u64 {
    let (_, text) = http_get(sidecar.admin, "/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("graylane_sidecar_requests_total{")
                && l.contains(r#"service="passthrough""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `--cleanup` removes the IPv6 rules too when IPv6 was turned off since: left, they
/// would come back into force when it is turned on again.
#[test]
fn cleanup_removes_the_ipv6_rules_even_with_ipv6_turned_off() {
    let ns = NetNs::create();
    ns.enter();
    let init = |args: &[&str]| {
        let out = std::process::Command::new(graylane_tests::bin("graylane-sidecar"))
            .arg("init-iptables")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let v6 = || {
        let out = std::process::Command::new("ip6tables")
            .arg("-S")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    init(&[]);
    assert!(
        v6().contains("-A INPUT -p tcp -j GRAYLANE_INBOUND6"),
        "{}",
        v6()
    );
    let off = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ])
        .status()
        .unwrap();
    assert!(off.success());
    init(&["--cleanup"]);
    assert!(!v6().contains("GRAYLANE"), "{}", v6());
    assert!(!ns.iptables_save().contains("GRAYLANE"));
}
