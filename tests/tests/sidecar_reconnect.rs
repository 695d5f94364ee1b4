//! A control plane restarted on its file store knows only the instances whose sidecars
//! have reconnected so far. A caller that reconnects first keeps routing to the others
//! (`--endpoint-grace`): no request fails while they come back, a dead one is retried
//! on a live one, and the grace's end drops what never came back.
//!
//! Which sidecars reconnect first is the test's choice, not a race: the orders
//! sidecars reach the control plane through a `Gate` the test keeps shut until the
//! caller has reconnected.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use graylane_tests::{ControlPlane, DemoApp, Sidecar, bin, eventually, http_get};

/// A TCP forwarder to the control plane that the test can shut: while shut, it
/// accepts and closes at once, as a control plane that is not back yet would.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
}

impl Gate {
    /// Forwards to `to`. Its threads end with the test process.
    fn start(to: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let is_open = Arc::clone(&open);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                if let Ok(upstream) = TcpStream::connect(to) {
                    pipe(client, upstream);
                }
            }
        });
        Gate { addr, open }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

/// Copies both ways; when either side ends, both are shut.
fn pipe(a: TcpStream, b: TcpStream) {
    let pairs = [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)];
    for (mut from, mut to) in pairs {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}

/// `GET /` with `Host: host` through a sidecar's outbound listener.
fn get(outbound: SocketAddr, host: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(outbound) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Requests sent back to back from two threads until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<(u16, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(outbound: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, sent, failures) =
                    (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failures));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let (status, response) = get(outbound, "orders");
                        sent.fetch_add(1, Ordering::SeqCst);
                        if status != 200 {
                            failures.lock().unwrap().push((status, response));
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            threads,
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops; (requests sent, the failed ones).
    fn finish(self) -> (usize, Vec<(u16, String)>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

/// An orders instance (demo app + sidecar) that reaches the control plane at `url`.
fn orders(dir: &Path, url: &str, id: &str) -> (DemoApp, Sidecar) {
    graylane_tests::instance(dir, url, "orders", id)
}

/// A caller of orders (no app behind it), with `extra` flags, ready.
fn caller(dir: &Path, url: &str, id: &str, extra: &[&str]) -> Sidecar {
    let sidecar = frontend(dir, url, id, extra);
    sidecar.wait_ready();
    sidecar
}

/// [`caller`], not waited for.
fn frontend(dir: &Path, url: &str, id: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec![
        "--service",
        "frontend",
        "--instance-id",
        id,
        "--control-plane",
        url,
        "--otlp-endpoint",
        "none",
    ];
    args.extend(extra);
    Sidecar::start(dir, id, &args)
}

/// The ids of `service` in a `/config` map (`endpoints` or `staleEndpoints`).
fn ids(config: &serde_json::Value, key: &str, service: &str) -> Vec<String> {
    config[key][service]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn stale_gauge(sidecar: &Sidecar) -> String {
    let (_, metrics) = http_get(sidecar.admin, "/metrics");
    metrics
        .lines()
        .find(|l| l.starts_with("graylane_stale_endpoints "))
        .unwrap_or_default()
        .to_string()
}

/// Kills `cp` and restarts it on the same data dir and gRPC port, the gate shut
/// meanwhile; then waits until `frontend` has reconnected and keeps `stale` as stale.
fn restart_behind_shut_gate(
    dir: &Path,
    cp: &mut ControlPlane,
    gate: &Gate,
    frontend: &Sidecar,
    stale: &[&str],
    meanwhile: impl FnOnce(),
) -> ControlPlane {
    let grpc = cp.grpc.to_string();
    gate.set_open(false);
    cp.proc.kill();
    meanwhile();
    let restarted = ControlPlane::start_on(dir, &grpc, &[]);
    eventually(
        Duration::from_secs(20),
        "the caller to reconnect and keep orders as stale",
        || (ids(&frontend.config(), "staleEndpoints", "orders") == stale).then_some(()),
    );
    restarted
}

#[test]
fn requests_sent_during_a_control_plane_restart_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut cp = ControlPlane::start(dir, &[]);
    let gate = Gate::start(cp.grpc);
    let _o1 = orders(dir, &gate.url(), "orders-1");
    let _o2 = orders(dir, &gate.url(), "orders-2");
    let frontend = caller(dir, &cp.url(), "frontend-1", &[]);
    // The control case: the behaviour before the grace.
    let bare = caller(dir, &cp.url(), "frontend-bare", &["--endpoint-grace", "0s"]);
    frontend.wait_endpoints("orders", 2);
    bare.wait_endpoints("orders", 2);
    assert_eq!(stale_gauge(&frontend), "graylane_stale_endpoints 0");
    let load = Load::start(frontend.outbound);
    eventually(Duration::from_secs(10), "some requests answered", || {
        (load.sent() >= 20).then_some(())
    });
    let cp = restart_behind_shut_gate(
        dir,
        &mut cp,
        &gate,
        &frontend,
        &["orders-1", "orders-2"],
        || {},
    );
    // The restarted control plane does not list orders: still routed to, as stale.
    let config = frontend.config();
    assert_eq!(
        ids(&config, "endpoints", "orders"),
        ["orders-1", "orders-2"]
    );
    // The first set may lack the callers too (they registered a moment before it
    // was cut); they are announced right after.
    eventually(Duration::from_secs(10), "orders alone stale", || {
        (stale_gauge(&frontend) == "graylane_stale_endpoints 2").then_some(())
    });
    let log = frontend.proc.log_text();
    assert!(
        log.contains("kept as stale") && log.contains("grace=10s"),
        "{log}"
    );
    // Without a grace, the same reconnect forgets orders: the bug this prevents.
    let (status, body) = eventually(
        Duration::from_secs(20),
        "the bare caller to forget orders",
        || {
            let answer = get(bare.outbound, "orders");
            (answer.0 == 502).then_some(answer)
        },
    );
    assert!(body.contains("unknown service orders"), "{status} {body}");
    assert_eq!(bare.config()["staleEndpoints"], serde_json::json!({}));
    assert!(bare.proc.log_text().contains("kept=0 grace=0ns"));
    let during = load.sent();
    eventually(Duration::from_secs(10), "requests while stale", || {
        (load.sent() >= during + 20).then_some(())
    });
    // Orders reconnect: announced again, normal endpoints.
    gate.set_open(true);
    eventually(Duration::from_secs(20), "orders announced again", || {
        let config = frontend.config();
        (ids(&config, "staleEndpoints", "orders").is_empty()
            && ids(&config, "endpoints", "orders") == ["orders-1", "orders-2"])
        .then_some(())
    });
    assert_eq!(stale_gauge(&frontend), "graylane_stale_endpoints 0");
    bare.wait_endpoints("orders", 2);
    let (sent, failures) = load.finish();
    eprintln!(
        "MEASURED restart: {sent} requests, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent}: {failures:#?}",
        failures.len()
    );
    drop(cp);
}

#[test]
fn an_instance_that_died_while_the_control_plane_was_down_is_retried_elsewhere_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut cp = ControlPlane::start(dir, &[]);
    let gate = Gate::start(cp.grpc);
    let _o1 = orders(dir, &gate.url(), "orders-1");
    let (mut app2, mut sidecar2) = orders(dir, &gate.url(), "orders-2");
    // Longer than the default: orders-1's backoff may have grown to 5 s (7.5 s with
    // jitter) while the gate was shut, and it must be back before the grace ends.
    let frontend = caller(dir, &cp.url(), "frontend-1", &["--endpoint-grace", "15s"]);
    frontend.wait_endpoints("orders", 2);
    let load = Load::start(frontend.outbound);
    eventually(Duration::from_secs(10), "some requests answered", || {
        (load.sent() >= 20).then_some(())
    });
    // orders-2 dies with the control plane down: nobody tells the caller.
    let cp = restart_behind_shut_gate(
        dir,
        &mut cp,
        &gate,
        &frontend,
        &["orders-1", "orders-2"],
        || {
            sidecar2.proc.kill();
            app2.proc.kill();
        },
    );
    let during = load.sent();
    eventually(Duration::from_secs(10), "requests while stale", || {
        (load.sent() >= during + 20).then_some(())
    });
    gate.set_open(true);
    eventually(Duration::from_secs(20), "orders-1 announced again", || {
        (ids(&frontend.config(), "staleEndpoints", "orders") == ["orders-2"]).then_some(())
    });
    eventually(Duration::from_secs(10), "orders-2 alone stale", || {
        (stale_gauge(&frontend) == "graylane_stale_endpoints 1").then_some(())
    });
    // The grace (15 s from the caller's reconnect) ends: orders-2 is dropped.
    eventually(Duration::from_secs(25), "the grace to end", || {
        let config = frontend.config();
        (ids(&config, "endpoints", "orders") == ["orders-1"]).then_some(config)
    });
    let config = frontend.config();
    assert_eq!(
        config["staleEndpoints"],
        serde_json::json!({}),
        "{config:#}"
    );
    assert_eq!(stale_gauge(&frontend), "graylane_stale_endpoints 0");
    assert!(
        frontend
            .proc
            .log_text()
            .contains("endpoint grace over: stale instances dropped")
    );
    let (sent, failures) = load.finish();
    eprintln!(
        "MEASURED dead stale instance: {sent} requests, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent}: {failures:#?}",
        failures.len()
    );
    drop(cp);
}

#[test]
fn a_bad_endpoint_grace_is_refused_at_start() {
    for (value, says) in [
        ("10", "is not a duration"),
        ("-1s", "is not a duration"),
        ("1h", "must be 0s to 5m"),
        ("", "is not a duration"),
    ] {
        let out = Command::new(bin("graylane-sidecar"))
            .args(["--service", "web", &format!("--endpoint-grace={value}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value:?}: {stderr}");
        assert!(stderr.contains(says), "{value:?}: {stderr}");
    }
    // The environment is read the same way.
    let out = Command::new(bin("graylane-sidecar"))
        .args(["--service", "web"])
        .env("GRAYLANE_ENDPOINT_GRACE", "6m")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must be 0s to 5m"), "{stderr}");
    // A zero timeout fails every request or connection: refused, naming the flag.
    for flag in [
        "--upstream-timeout",
        "--header-read-timeout",
        "--send-timeout",
        "--detect-timeout",
    ] {
        let out = Command::new(bin("graylane-sidecar"))
            .args(["--service", "web", flag, "0s"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("a timeout of zero"),
            "{flag}: {stderr}"
        );
    }
}

/// A first `--control-plane` URL that speaks HTTP/2 (answers the sidecar's keep-alive
/// PINGs) but never answers its Subscribe: a proxy holding the call, or a replica
/// whose stream is stuck. The sidecar gives it 30 s for a first snapshot, counted from
/// the call's start, then subscribes through the next URL. (A peer that answers
/// nothing at all is left sooner, by the keep-alive's 5 s.)
#[test]
fn a_control_plane_that_holds_the_call_is_left_for_the_next_url() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(dir.path(), &[]);
    let holding = TcpListener::bind("127.0.0.1:0").unwrap();
    holding.set_nonblocking(true).unwrap();
    let holding_url = format!("http://{}", holding.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    // Its thread ends with the test process.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(holding).unwrap();
            while let Ok((socket, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    // Each call is taken and kept, unanswered; polling the connection
                    // answers PINGs.
                    let mut held = Vec::new();
                    while let Some(Ok(call)) = conn.accept().await {
                        counted.fetch_add(1, Ordering::SeqCst);
                        held.push(call);
                    }
                });
            }
        });
    });
    let urls = format!("{holding_url},{}", cp.url());
    let sidecar = frontend(dir.path(), &urls, "frontend-1", &[]);
    let started = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the sidecar's call to the holding URL",
        || (calls.load(Ordering::SeqCst) > 0).then_some(()),
    );
    assert_eq!(http_get(sidecar.admin, "/ready").0, 503);
    eventually(
        Duration::from_secs(45),
        "the sidecar ready through the second URL",
        || (http_get(sidecar.admin, "/ready").0 == 200).then_some(()),
    );
    // Held for the bound, not left earlier for another reason (keep-alive, a refusal).
    assert!(
        started.elapsed() >= Duration::from_secs(25),
        "ready after {:?}",
        started.elapsed()
    );
    let log = sidecar.proc.log_text();
    assert!(log.contains("no snapshot within 30s"), "{log}");
}
