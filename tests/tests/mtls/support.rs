//! What the mesh mTLS scenarios share: nodes (a demo app behind its sidecar), rule
//! changes awaited at every sidecar, metrics, raw requests, and `openssl` for
//! certificates of another CA and for looking at the wire.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, eventually, http_get, write_file};
use serde_json::Value;

pub(crate) const LANE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata: {name: gray}
spec:
  tag: gray
  selector: {version: v2}
  fallback: [base]
";

/// A demo app behind its sidecar.
pub(crate) struct Node {
    pub(crate) app: DemoApp,
    pub(crate) sidecar: Sidecar,
}

/// Starts `service`-`version` (calling `call`), with `extra` sidecar flags, and waits
/// until it is ready and holds a certificate.
pub(crate) fn node(
    dir: &Path,
    cp: &ControlPlane,
    service: &str,
    version: &str,
    call: Option<&str>,
    extra: &[&str],
) -> Node {
    node_via(dir, &cp.url(), service, version, call, extra)
}

/// Like `node`, reaching the control plane at `url`.
pub(crate) fn node_via(
    dir: &Path,
    url: &str,
    service: &str,
    version: &str,
    call: Option<&str>,
    extra: &[&str],
) -> Node {
    let mut app = DemoApp::start(dir, service, version, call);
    let id = format!("{service}-{version}");
    let (labels, app_addr) = (format!("version={version}"), app.addr.to_string());
    let args = [
        &[
            "--service",
            service,
            "--instance-id",
            &id,
            "--labels",
            &labels,
            "--app-addr",
            &app_addr,
            "--control-plane",
            url,
        ][..],
        extra,
    ]
    .concat();
    let sidecar = Sidecar::start(dir, &id, &args);
    if call.is_some() {
        app.proc.write_line(&sidecar.outbound.to_string());
    }
    sidecar.wait_ready();
    identity(&sidecar);
    Node { app, sidecar }
}

/// The sidecar's certificate identity, once it has one.
pub(crate) fn identity(sidecar: &Sidecar) -> String {
    eventually(Duration::from_secs(20), "a workload certificate", || {
        sidecar.config()["identity"]["id"]
            .as_str()
            .map(String::from)
    })
}

/// The SNI that reaches `identity` (`spiffe://td/ns/NS/sa/SA`).
pub(crate) fn mesh_sni(identity: &str) -> String {
    let path = identity.split_once("/ns/").unwrap().1;
    let (ns, sa) = path.split_once("/sa/").unwrap();
    format!("{sa}.{ns}.identity.graylane.internal")
}

/// Applies `yaml` and waits until every sidecar runs a newer revision than before.
pub(crate) fn apply(cp: &ControlPlane, dir: &Path, yaml: &str, sidecars: &[&Sidecar]) {
    let before: Vec<u64> = sidecars
        .iter()
        .map(|s| s.config()["revision"].as_u64().unwrap_or(0))
        .collect();
    let file = write_file(dir, "rules.yaml", yaml);
    cp.cli(&["rules", "apply", "-f", &file]).assert_ok();
    for (s, before) in sidecars.iter().zip(before) {
        eventually(
            Duration::from_secs(10),
            "the new rules at a sidecar",
            || (s.config()["revision"].as_u64().unwrap_or(0) > before).then_some(()),
        );
    }
}

pub(crate) fn peer_policy(name: &str, mode: &str, services: Option<&str>) -> String {
    let services = services.map_or(String::new(), |s| format!("\n  services: [{s}]"));
    format!(
        "apiVersion: graylane.io/v1\nkind: PeerPolicy\nmetadata: {{name: {name}}}\nspec:\n  mtls: \"{mode}\"{services}\n"
    )
}

/// The value of the series `series` (name and labels, exactly) on a sidecar's
/// `/metrics`; 0 when absent.
pub(crate) fn metric(sidecar: &Sidecar, series: &str) -> u64 {
    let (_, body) = http_get(sidecar.admin, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A raw HTTP/1.1 GET: (status, head, body); status 0 when the connection closed
/// without an answer.
pub(crate) fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new(), String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return (0, response, String::new());
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// (service, version, tag) of every hop of a demo response.
pub(crate) fn hops(body: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    while v.is_object() && v.get("service").is_some() {
        out.push((
            v["service"].as_str().unwrap().into(),
            v["version"].as_str().unwrap().into(),
            v["tag"].as_str().map(Into::into),
        ));
        v = v["downstream"].clone();
    }
    out
}

pub(crate) fn hop(
    service: &str,
    version: &str,
    tag: Option<&str>,
) -> (String, String, Option<String>) {
    (service.into(), version.into(), tag.map(Into::into))
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of its own (not the mesh's) and a client certificate it signed that claims
/// the mesh identity `claims`: `other-client.pem`, `other-client.key`.
pub(crate) fn foreign_client_certificate(dir: &Path, claims: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "1",
        ],
        &["-subj", "/CN=not the mesh CA"],
    ]
    .concat();
    openssl(dir, &ca);
    write_file(dir, "client.ext", &format!("subjectAltName=URI:{claims}\n"));
    let csr = [
        &["req"][..],
        &ec,
        &["-keyout", "other-client.key", "-out", "other-client.csr"],
        &["-subj", "/CN=impostor"],
    ]
    .concat();
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "other-client.csr",
            "-CA",
            "other-ca.pem",
            "-CAkey",
            "other-ca.key",
            "-CAcreateserial",
            "-out",
            "other-client.pem",
            "-days",
            "1",
            "-extfile",
            "client.ext",
        ],
    );
}

/// `openssl s_client` to `addr` with `args`, sending a GET once connected: everything
/// it printed (stdout and stderr). Bounded by `timeout 10`.
pub(crate) fn s_client(dir: &Path, addr: SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string()])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) const REFUSED: &str = "graylane_inbound_refused_total";

/// A TCP forwarder to `to` whose traffic can be held: a sidecar reaching its control
/// plane through it keeps its stream open but sees no new rules while held.
pub(crate) struct Gate {
    pub(crate) addr: SocketAddr,
    held: Arc<AtomicBool>,
}

impl Gate {
    pub(crate) fn start(to: SocketAddr) -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(AtomicBool::new(false));
        let gate = Arc::clone(&held);
        // Its threads end with the test process.
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(to) else {
                    return;
                };
                for (from, into) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let gate = Arc::clone(&gate);
                    std::thread::spawn(move || forward(from, into, &gate));
                }
            }
        });
        Gate { addr, held }
    }

    pub(crate) fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}

fn forward(mut from: TcpStream, mut into: TcpStream, held: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        // A gate, not a synchronisation: bytes wait here while the test holds them.
        while held.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if n == 0 || into.write_all(&buf[..n]).is_err() {
            let _ = into.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Steady requests through `entry` (a's inbound; a's app calls b) on a thread of its
/// own, each checked to have been served by b, until `finish`. Bounded in count.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Load {
    pub(crate) fn start(entry: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                // Bounded: a few minutes of requests at most, whatever happens.
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, head, body) = get(entry, "a", &[]);
                    let served = status == 200
                        && serde_json::from_str::<Value>(&body)
                            .is_ok_and(|v| v["downstream"]["service"] == "b");
                    if served {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{status} {head} {body}"));
                    }
                }
                failures
            })
        };
        Load { stop, ok, thread }
    }

    /// Waits until `n` more requests were served.
    pub(crate) fn served_more(&self, n: u64) {
        let from = self.ok.load(Ordering::Relaxed);
        eventually(Duration::from_secs(20), "requests served", || {
            (self.ok.load(Ordering::Relaxed) >= from + n).then_some(())
        });
    }

    /// Stops the load; asserts that not one request failed (`across`: during what).
    pub(crate) fn finish(self, across: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().unwrap();
        let served = self.ok.load(Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} of {} requests failed across {across}; first: {:?}",
            failures.len(),
            failures.len() as u64 + served,
            failures.first()
        );
    }
}
