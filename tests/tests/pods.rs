//! Transparent interception for real, as in a cluster: every pod a network namespace
//! on one bridge, with its app and its sidecar (UID 1337) and the NAT rules of
//! `graylane-sidecar init-iptables`. The apps call plain `http://orders:8080/` with no
//! proxy settings (names from each pod's own hosts file). Ports are the pods' usual
//! fixed ones: each namespace is private to this test.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use graylane_tests::pods::{PodNet, exec, exec_as};
use graylane_tests::{Proc, bin, cli, eventually, http_get, write_file};
use serde_json::Value;

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
  # The test client calls the edge from outside the mesh: no mesh identity, so with
  # mTLS on (the default, permissive) its tag is kept only because this policy says so.
  incoming: keep
";

const HOSTS: &str = "127.0.0.1 localhost
10.88.0.11 frontend
10.88.0.12 orders
10.88.0.14 payments
";

fn ip(n: u8) -> String {
    format!("{}.{n}", PodNet::SUBNET)
}

/// Listens on `addr` in the pod `ns` and writes `answer` to every connection (after
/// reading its request when `read_first`); returns once listening. The thread ends
/// with the test process.
fn serve_in(ns: &str, addr: &'static str, answer: &'static [u8], read_first: bool) {
    let (listening, listened) = std::sync::mpsc::channel();
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        graylane_tests::netns::enter(&ns);
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listening.send(()).unwrap();
        for mut conn in listener.incoming().map_while(Result::ok) {
            if read_first {
                let _ = conn.read(&mut [0u8; 4096]);
            }
            let _ = conn.write_all(answer);
        }
    });
    listened.recv().unwrap();
}

/// A pod: its app on :8080, its sidecar, the init container's rules.
fn pod(
    net: &mut PodNet,
    dir: &Path,
    n: u8,
    service: &str,
    version: &str,
    call: Option<&str>,
) -> (String, Vec<Proc>) {
    let ns = net.pod(n, HOSTS);
    let init = exec(&ns, &bin("graylane-sidecar"), &["init-iptables"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let mut app_args = vec![
        "--service",
        service,
        "--version",
        version,
        "--listen",
        "0.0.0.0:8080",
    ];
    let outbound = call.map(|c| format!("{c}:8080"));
    if let (Some(c), Some(o)) = (call, &outbound) {
        app_args.extend(["--call", c, "--outbound", o]);
    }
    let id = format!("{service}-{version}");
    let app = Proc::spawn(
        &format!("app {id}"),
        exec(&ns, &bin("graylane-demo-app"), &app_args),
        dir.join(format!("app-{id}.log")),
    );
    let labels = format!("version={version}");
    let advertise = format!("{}:15006", ip(n));
    let cp = format!("http://{}:15010", ip(10));
    let sidecar = Proc::spawn(
        &format!("sidecar {id}"),
        exec_as(
            &ns,
            1337,
            &bin("graylane-sidecar"),
            &[
                "--service",
                service,
                "--instance-id",
                &id,
                "--labels",
                &labels,
                "--app-addr",
                "127.0.0.1:8080",
                "--control-plane",
                &cp,
                "--advertise-addr",
                &advertise,
                "--inbound-addr",
                "0.0.0.0:15006",
                "--outbound-addr",
                "127.0.0.1:15001",
                "--admin-addr",
                "0.0.0.0:15000",
            ],
        ),
        dir.join(format!("sidecar-{id}.log")),
    );
    let admin: SocketAddr = format!("{}:15000", ip(n)).parse().unwrap();
    eventually(Duration::from_secs(20), &format!("{id} ready"), || {
        (http_get(admin, "/ready").0 == 200).then_some(())
    });
    (ns, vec![app, sidecar])
}

/// GET http://frontend:8080/ from outside the pods: (the hops served, as the apps
/// saw them: service, version, tag).
fn call_frontend(headers: &[(&str, &str)]) -> Vec<(String, String, Option<String>)> {
    let mut stream = TcpStream::connect(format!("{}:8080", ip(11))).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        String::from("GET / HTTP/1.1\r\nHost: frontend:8080\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut hops = Vec::new();
    while v.get("service").is_some() {
        hops.push((
            v["service"].as_str().unwrap().to_string(),
            v["version"].as_str().unwrap().to_string(),
            v["tag"].as_str().map(String::from),
        ));
        v = v["downstream"].clone();
    }
    hops
}

fn hop(service: &str, version: &str, tag: Option<&str>) -> (String, String, Option<String>) {
    (service.into(), version.into(), tag.map(Into::into))
}

/// The frontend sidecar's outbound requests to orders, from its /metrics.
fn frontend_calls_to_orders() -> u64 {
    let admin: SocketAddr = format!("{}:15000", ip(11)).parse().unwrap();
    let (_, text) = http_get(admin, "/metrics");
    text.lines()
        .filter(|l| {
            l.starts_with(
                "graylane_sidecar_requests_total{direction=\"outbound\",service=\"orders\"",
            )
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// graylane-control in its own pod (`ip(10)`), ready.
fn control_plane(net: &mut PodNet, dir: &Path) -> Proc {
    let cp_ns = net.pod(10, HOSTS);
    let cp_grpc = format!("{}:15010", ip(10));
    let cp_http = format!("{}:15014", ip(10));
    let cp = Proc::spawn(
        "graylane-control",
        exec(
            &cp_ns,
            &bin("graylane-control"),
            &[
                "--grpc-addr",
                &cp_grpc,
                "--http-addr",
                &cp_http,
                "--store",
                "memory:",
                "--allow-unauthenticated",
                "--allow-plaintext",
            ],
        ),
        dir.join("control.log"),
    );
    eventually(Duration::from_secs(20), "the control plane ready", || {
        (http_get(cp_http.parse().unwrap(), "/ready").0 == 200).then_some(())
    });
    cp
}

#[test]
fn pods_with_init_iptables_keep_the_lane_without_any_proxy_setting() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = PodNet::create();
    net.net.enter();
    let _cp = control_plane(&mut net, dir.path());
    let url = format!("http://{}:15010", ip(10));
    cli(&[
        "--server",
        &url,
        "rules",
        "apply",
        "-f",
        &write_file(dir.path(), "rules.yaml", RULES),
    ])
    .assert_ok();

    let mut procs = Vec::new();
    let mut frontend_ns = String::new();
    for (n, service, version, call) in [
        (11, "frontend", "v1", Some("orders")),
        (12, "orders", "v1", Some("payments")),
        (13, "orders", "v2", Some("payments")),
        (14, "payments", "v1", None),
    ] {
        let (ns, p) = pod(&mut net, dir.path(), n, service, version, call);
        if service == "frontend" {
            frontend_ns = ns;
        }
        procs.extend(p);
    }
    let front_admin: SocketAddr = format!("{}:15000", ip(11)).parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "the frontend sidecar to see every instance",
        || {
            let (_, body) = http_get(front_admin, "/config");
            let c: Value = serde_json::from_str(&body).ok()?;
            (c["endpoints"]["orders"].as_array()?.len() == 2
                && c["endpoints"]["payments"].as_array()?.len() == 1)
                .then_some(())
        },
    );

    let gray = [
        hop("frontend", "v1", Some("gray")),
        hop("orders", "v2", Some("gray")),
        hop("payments", "v1", Some("gray")),
    ];
    for (n, mode) in ["header", "traceparent", "baggage"].into_iter().enumerate() {
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e47{n:02x}-00f067aa0ba902b7-01");
        let hops = call_frontend(&[
            ("Gray-Publish", "gray"),
            ("traceparent", &tp),
            ("x-demo-forward", mode),
        ]);
        assert_eq!(
            hops, gray,
            "mode {mode}: the lane holds through interception"
        );
    }
    // An app that forwards nothing drops the lane, as in explicit mode.
    let hops = call_frontend(&[("Gray-Publish", "gray"), ("x-demo-forward", "none")]);
    assert_eq!(hops[1], hop("orders", "v1", None));
    let hops = call_frontend(&[]);
    assert_eq!(
        hops,
        [
            hop("frontend", "v1", None),
            hop("orders", "v1", None),
            hop("payments", "v1", None)
        ]
    );
    // Each call went through the frontend sidecar once: its own connection to the
    // orders pod was not captured again.
    assert_eq!(frontend_calls_to_orders(), 5);

    // --cleanup in the frontend pod: its app reaches orders directly (the pod the name
    // resolves to, v1), no lane routing there any more; and, a caller outside the mesh
    // now, its tag is not trusted by orders' sidecar (mTLS on, no TagPolicy): stripped.
    let cleanup = exec(
        &frontend_ns,
        &bin("graylane-sidecar"),
        &["init-iptables", "--cleanup"],
    )
    .output()
    .unwrap();
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let hops = call_frontend(&[("Gray-Publish", "gray"), ("x-demo-forward", "header")]);
    assert_eq!(
        hops[1],
        hop("orders", "v1", None),
        "direct, not routed, tag untrusted: {hops:?}"
    );
    assert_eq!(
        frontend_calls_to_orders(),
        5,
        "the sidecar saw nothing of it"
    );
    drop(procs);
}

/// A pod's app may listen on more ports than its main one: its metrics, a
/// server-first protocol. A client outside the pod dialling one of them reaches what
/// listens there, through the sidecar's interception (HTTP, and the tunnel of an
/// opaque port), as with Istio: it used to reach the app's main port. The sidecar's own
/// outbound port, dialled from outside, still leads to the app, never into the mesh.
#[test]
fn a_pod_s_other_ports_reach_what_listens_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = PodNet::create();
    net.net.enter();
    let _cp = control_plane(&mut net, dir.path());
    let (ns, mut procs) = pod(&mut net, dir.path(), 12, "orders", "v1", None);
    procs.push(Proc::spawn(
        "app metrics",
        exec(
            &ns,
            &bin("graylane-demo-app"),
            &[
                "--service",
                "metrics",
                "--version",
                "v9",
                "--listen",
                "0.0.0.0:9090",
            ],
        ),
        dir.path().join("app-metrics.log"),
    ));
    // Redis's port (opaque by default): the server speaks first.
    serve_in(&ns, "0.0.0.0:6379", b"+READY\r\n", false);
    // An app on `[::]` (Go's, Java's and Node's default), in a pod that has IPv6 too:
    // interception is IPv4, so over IPv6 it would be reached past the sidecar (and
    // past strict mTLS). New inbound IPv6 connections are refused instead.
    net.net
        .ip(&["addr", "add", "fd00:99::fe/64", "dev", "br0", "nodad"]);
    let added = std::process::Command::new("ip")
        .args(["-n", &ns, "addr", "add", "fd00:99::12/64", "dev", "eth0"])
        .arg("nodad")
        .status()
        .unwrap();
    assert!(added.success());
    serve_in(
        &ns,
        "[::]:7070",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nDUAL",
        true,
    );
    // A debug server bound to loopback only: private to the pod, with or without the
    // sidecar (Istio 1.10's change), however a client outside dials it.
    serve_in(
        &ns,
        "127.0.0.1:6060",
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSECRET\n",
        true,
    );
    let get = |port: u16| -> Option<Value> {
        let mut stream = TcpStream::connect(format!("{}:{port}", ip(12))).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}:{port}\r\nConnection: close\r\n\r\n",
            ip(12)
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
    };
    let metrics = eventually(Duration::from_secs(20), "the app's metrics port", || {
        get(9090)
    });
    assert_eq!(metrics["service"], "metrics", "{metrics}");
    assert_eq!(get(8080).unwrap()["service"], "orders");
    let outbound = get(15001).expect("an answer on 15001");
    assert_eq!(outbound["service"], "orders", "{outbound}");
    // A neighbour routing another network through the pod (10.77.0.0/24, which only
    // the pod reaches) must not find the sidecar dialling it on its behalf: only what
    // is addressed to the pod itself is intercepted. Before, the sidecar dialled the
    // original destination as UID 1337, a relay.
    let backend = graylane_tests::netns::NetNs::create();
    let ip_in = |ns: &str, args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "ip -n {ns} {args:?}");
    };
    ip_in(
        &ns,
        &[
            "link",
            "add",
            "ex0",
            "type",
            "veth",
            "peer",
            "name",
            "ex1",
            "netns",
            &backend.name,
        ],
    );
    ip_in(&ns, &["addr", "add", "10.77.0.1/24", "dev", "ex0"]);
    ip_in(&ns, &["link", "set", "ex0", "up"]);
    backend.ip(&["addr", "add", "10.77.0.5/24", "dev", "ex1"]);
    backend.ip(&["link", "set", "ex1", "up"]);
    serve_in(
        &backend.name,
        "10.77.0.5:80",
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINTERNAL",
        true,
    );
    net.net
        .ip(&["route", "add", "10.77.0.0/24", "via", &ip(12)]);
    let relayed =
        TcpStream::connect_timeout(&"10.77.0.5:80".parse().unwrap(), Duration::from_secs(2))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: internal\r\nConnection: close\r\n\r\n")?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            });
    assert!(
        !relayed.as_ref().is_ok_and(|a| a.contains("INTERNAL")),
        "the pod relayed a neighbour's connection to a network only it reaches: {relayed:?}"
    );
    let dual = |addr: String| -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: dual\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let over_v4 = dual(format!("{}:7070", ip(12))).expect("IPv4, through the sidecar");
    assert!(over_v4.ends_with("DUAL"), "{over_v4:?}");
    let over_v6 = dual("[fd00:99::12]:7070".into());
    assert_eq!(
        over_v6.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "IPv6 past the sidecar: {over_v6:?}"
    );
    let mut private = TcpStream::connect(format!("{}:6060", ip(12))).unwrap();
    private
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}:6060\r\nConnection: close\r\n\r\n",
        ip(12)
    );
    private.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = private.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 502") && !answer.contains("SECRET"),
        "a port the app binds to 127.0.0.1 only was reached from outside the pod: {answer:?}"
    );

    let mut redis = TcpStream::connect(format!("{}:6379", ip(12))).unwrap();
    redis
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 8];
    redis.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"+READY\r\n");
    drop(procs);
}
