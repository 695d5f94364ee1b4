//! Test harness for end-to-end scenarios: the real graylane binaries as child
//! processes on loopback, each with its own temp dir and log file.
//!
//! - every process sits behind a guard that kills it on drop (no leaks);
//! - ports are bound from 0 by the process itself and read back from its log;
//! - readiness comes from `/ready`, waits from the bounded `eventually`, never sleeps;
//! - a failing test prints every process's log.

#![allow(clippy::unwrap_used, clippy::print_stderr, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod docs;
pub mod etcd;
pub mod h2raw;
pub mod netns;
pub mod otlp;
pub mod pods;
pub mod rawhttp;
mod subscriber;
pub mod webdriver;

pub use self::subscriber::Subscriber;

/// Path of a workspace binary, built by `cargo build --workspace` before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some` or `timeout` passes (then panics with `what`).
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // Polling interval of a bounded wait for an external condition, not a sleep
        // standing in for synchronisation: the condition is checked again each time.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) on drop; prints its log if the test is failing.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

/// A started `graylane-demo-app`.
pub struct DemoApp {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl DemoApp {
    /// Starts an instance of `service` at `version`; when `call` is set, it calls that
    /// service through a sidecar whose outbound address `connect` tells it later.
    pub fn start(dir: &Path, service: &str, version: &str, call: Option<&str>) -> DemoApp {
        Self::start_with(dir, service, version, call, &[])
    }

    /// Like `start`, with extra flags (e.g. `--status 503`).
    pub fn start_with(
        dir: &Path,
        service: &str,
        version: &str,
        call: Option<&str>,
        extra: &[&str],
    ) -> DemoApp {
        let mut cmd = Command::new(bin("graylane-demo-app"));
        cmd.args(["--service", service, "--version", version])
            .args(extra);
        if let Some(call) = call {
            cmd.args(["--call", call, "--outbound", "-"]);
        }
        let name = format!("app-{service}-{version}");
        let mut proc = Proc::spawn_with_stdin(&name, cmd, unique(dir, &name, "log"));
        let addr = eventually(
            Duration::from_secs(20),
            "the demo app to log its address",
            || {
                assert!(
                    !proc.has_exited(),
                    "demo app exited early:\n{}",
                    proc.log_text()
                );
                field(&proc.log_text(), "addr=")
            },
        );
        DemoApp { proc, addr }
    }
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        cmd.stdin(Stdio::null());
        Self::spawn_inner(name, cmd, log)
    }

    /// Like `spawn`, with a pipe to the process's standard input (see `write_line`).
    pub fn spawn_with_stdin(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        cmd.stdin(Stdio::piped());
        Self::spawn_inner(name, cmd, log)
    }

    /// Writes one line to the process's standard input.
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("spawned with stdin");
        writeln!(stdin, "{line}").expect("write to stdin");
    }

    fn spawn_inner(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("dup log")).stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to this process (only ever to a child we started).
    pub fn signal(&self, sig: i32) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with the pid of our own live child and a valid signal number.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        eventually(
            timeout,
            &format!("{} to exit after SIGTERM", self.name),
            || self.child.try_wait().ok().flatten(),
        )
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A running `graylane-control`.
pub struct ControlPlane {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data: PathBuf,
}

impl ControlPlane {
    /// Starts on free ports with a file store in `dir/data`; returns once `/ready` is 200.
    pub fn start(dir: &Path, extra: &[&str]) -> ControlPlane {
        Self::start_on(dir, "127.0.0.1:0", extra)
    }

    /// Like `start`, with the gRPC listener on `grpc` (to restart on the same port).
    pub fn start_on(dir: &Path, grpc: &str, extra: &[&str]) -> ControlPlane {
        let store = format!("file:{}", dir.join("data").display());
        Self::spawn(dir, grpc, &store, extra)
    }

    /// A replica on the etcd store at `endpoints` (`host:port`, comma-separated),
    /// keys under `prefix`.
    pub fn start_etcd(dir: &Path, endpoints: &str, prefix: &str, extra: &[&str]) -> ControlPlane {
        let cp = Self::start_etcd_unready(dir, endpoints, prefix, extra);
        cp.wait_ready();
        cp
    }

    /// Like `start_etcd`, returning as soon as it listens (ready or not).
    pub fn start_etcd_unready(
        dir: &Path,
        endpoints: &str,
        prefix: &str,
        extra: &[&str],
    ) -> ControlPlane {
        let store = format!("etcd://{endpoints}");
        let args = [&["--etcd-prefix", prefix][..], extra].concat();
        Self::listening(dir, "127.0.0.1:0", &store, &args)
    }

    /// On `--store store` (e.g. `etcd+https://...`), returning as soon as it listens
    /// (ready or not).
    pub fn start_store_unready(dir: &Path, store: &str, extra: &[&str]) -> ControlPlane {
        Self::listening(dir, "127.0.0.1:0", store, extra)
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "graylane-control /ready", || {
            (http_get(self.http, "/ready").0 == 200).then_some(())
        });
    }

    fn spawn(dir: &Path, grpc: &str, store: &str, extra: &[&str]) -> ControlPlane {
        let cp = Self::listening(dir, grpc, store, extra);
        cp.wait_ready();
        cp
    }

    fn listening(dir: &Path, grpc: &str, store: &str, extra: &[&str]) -> ControlPlane {
        let data = dir.join("data");
        let mut cmd = Command::new(bin("graylane-control"));
        cmd.args(["--grpc-addr", grpc, "--http-addr", "127.0.0.1:0"])
            .args(["--store", store])
            .args(extra)
            .env("GRAYLANE_LOG", "info");
        let log = unique(dir, "control", "log");
        let mut proc = Proc::spawn("graylane-control", cmd, log);
        let (grpc, http) = eventually(
            Duration::from_secs(20),
            "graylane-control to log its addresses",
            || {
                assert!(
                    !proc.has_exited(),
                    "graylane-control exited early:\n{}",
                    proc.log_text()
                );
                let text = proc.log_text();
                Some((field(&text, "grpc_addr=")?, field(&text, "http_addr=")?))
            },
        );
        ControlPlane {
            proc,
            grpc,
            http,
            data,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Runs the `graylane` CLI against this control plane.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        cli(&[&["--server", &self.url()], args].concat())
    }
}

/// A running `graylane-sidecar`.
pub struct Sidecar {
    pub proc: Proc,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
}

impl Sidecar {
    /// Starts with its listeners on free ports; `args` are the rest of its flags.
    /// Returns once it logged its addresses (not necessarily ready: see `wait_ready`).
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Sidecar {
        Self::start_cmd(dir, name, Command::new(bin("graylane-sidecar")), args)
    }

    /// Like `start`, as user and group `uid` (the sidecar's own traffic is exempt from
    /// interception by its UID, as in a pod).
    pub fn start_as(dir: &Path, name: &str, uid: u32, args: &[&str]) -> Sidecar {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin("graylane-sidecar"));
        cmd.uid(uid).gid(uid);
        Self::start_cmd(dir, name, cmd, args)
    }

    /// Like `start`, inside network namespace `ns` with its `/etc/netns/<ns>/hosts`
    /// (`ip netns exec`).
    pub fn start_in(dir: &Path, name: &str, ns: &str, args: &[&str]) -> Sidecar {
        Self::start_cmd(
            dir,
            name,
            pods::exec(ns, &bin("graylane-sidecar"), &[]),
            args,
        )
    }

    /// Like `start`, with at most `nofile` open files (`prlimit`, soft and hard).
    pub fn start_limited(dir: &Path, name: &str, nofile: u32, args: &[&str]) -> Sidecar {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(bin("graylane-sidecar"));
        Self::start_cmd(dir, name, cmd, args)
    }

    fn start_cmd(dir: &Path, name: &str, mut cmd: Command, args: &[&str]) -> Sidecar {
        cmd.args([
            "--admin-addr",
            "127.0.0.1:0",
            "--outbound-addr",
            "127.0.0.1:0",
        ])
        .args(["--inbound-addr", "127.0.0.1:0"])
        .args(args)
        .env("GRAYLANE_LOG", "info");
        let mut proc = Proc::spawn(&format!("sidecar {name}"), cmd, unique(dir, name, "log"));
        let (admin, outbound, inbound) = eventually(
            Duration::from_secs(20),
            "graylane-sidecar to log its addresses",
            || {
                assert!(
                    !proc.has_exited(),
                    "graylane-sidecar exited early:\n{}",
                    proc.log_text()
                );
                let text = proc.log_text();
                Some((
                    field(&text, "admin_addr=")?,
                    field(&text, "outbound_addr=")?,
                    field(&text, "inbound_addr=")?,
                ))
            },
        );
        Sidecar {
            proc,
            admin,
            outbound,
            inbound,
        }
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&self) {
        eventually(Duration::from_secs(20), "the sidecar to be ready", || {
            (http_get(self.admin, "/ready").0 == 200).then_some(())
        });
    }

    /// Waits until this sidecar routes by `count` instances of `service` (endpoint
    /// changes reach sidecars batched, a moment after the instances register).
    pub fn wait_endpoints(&self, service: &str, count: usize) {
        eventually(
            Duration::from_secs(10),
            &format!("{count} {service} instances at this sidecar"),
            || (self.config()["endpoints"][service].as_array()?.len() == count).then_some(()),
        );
    }

    /// The health listener's address (`--health-addr`), as logged; `None` without one.
    pub fn health(&self) -> Option<SocketAddr> {
        field(&self.proc.log_text(), "health_addr=")
    }

    /// A counter without labels from `/metrics`; 0 while it is absent (not yet counted).
    pub fn counter(&self, name: &str) -> u64 {
        let (_, metrics) = http_get(self.admin, "/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The services `/config` holds endpoints for.
    pub fn held_services(&self) -> Vec<String> {
        let config = self.config();
        let map = config["endpoints"].as_object().cloned().unwrap_or_default();
        map.keys().cloned().collect()
    }

    /// `/config` as JSON.
    pub fn config(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin, "/config");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config is not JSON ({e}): {body}"))
    }
}

/// A log file name unique within `dir` (restarted processes get a new one).
pub(crate) fn unique(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    (0..)
        .map(|i| dir.join(format!("{stem}-{i}.{ext}")))
        .find(|p| !p.exists())
        .expect("a free name")
}

/// The `SocketAddr` after `key` in a log (e.g. `grpc_addr=127.0.0.1:4321`).
fn field(text: &str, key: &str) -> Option<SocketAddr> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What a CLI run left behind.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Parses stdout as JSON (for `-o json` runs), panicking with the output otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }
}

/// Runs `graylane ARGS` and collects its output (bounded by the CLI's own timeouts).
pub fn cli(args: &[&str]) -> CliOutput {
    let out = Command::new(bin("graylane"))
        .args(args)
        .env_remove("GRAYLANE_SERVER")
        .env_remove("GRAYLANE_TOKEN_FILE")
        .env_remove("GRAYLANE_CONTEXT")
        // Never the developer's own ~/.config/graylane/config.yaml.
        .env("GRAYLANE_CONFIG", "/nonexistent/graylane-tests/config.yaml")
        .stdin(Stdio::null())
        .output()
        .expect("run graylane");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A minimal HTTP/1.1 GET: (status, body). Status 0 when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// A minimal HTTP/1.1 POST of a JSON body: (status, body). Status 0 when nothing answers.
pub fn http_post(addr: SocketAddr, path: &str, json: &str) -> (u16, String) {
    http_request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    )
}

fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
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
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends raw bytes on a new connection and reads until it closes (10 s at most):
/// (status, whole response). Status 0 when nothing answered.
pub fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
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

/// Reads one request head from an app's connection (10 s at most): its bytes, up to
/// and with the blank line; `None` when the connection ended first. What a scripted
/// app reads before it answers.
pub fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf)
}

/// The first flight of a TLS client connecting to `name`: its ClientHello record, what
/// an app's own TLS sends first (the inbound listener tunnels a connection to the app
/// only when it starts with a readable one).
pub fn tls_client_hello(name: &str) -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a DNS name");
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("a client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("the ClientHello");
    hello
}

/// A TCP echo server on loopback (an app speaking something that is not HTTP, such
/// as TLS end to end). Its threads end with the test process.
pub fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A loopback address that refuses every connection for as long as it lives: a
/// socket bound there but not listening. A port bound from 0 and let go is not
/// that: another test can take it, or a connect can pick it as its own source port
/// and connect to itself (TCP simultaneous open), and a "closed" app then answers
/// nothing at all.
pub struct Refusing {
    _socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl Refusing {
    pub fn bind() -> Refusing {
        // No SO_REUSEADDR: no other socket can bind this port while it is held.
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        Refusing {
            _socket: socket,
            addr,
        }
    }
}

/// Writes `content` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write file");
    path.to_string_lossy().into_owned()
}

/// An instance of `service`: a demo app (v1) behind a sidecar of the control plane at
/// `url`, holding every endpoint (the default); ready when this returns.
pub fn instance(dir: &Path, url: &str, service: &str, id: &str) -> (DemoApp, Sidecar) {
    let app = DemoApp::start(dir, service, "v1", None);
    let addr = app.addr.to_string();
    let args = [
        "--service",
        service,
        "--instance-id",
        id,
        "--app-addr",
        &addr,
        "--control-plane",
        url,
        "--otlp-endpoint",
        "none",
    ];
    let sidecar = Sidecar::start(dir, id, &args);
    sidecar.wait_ready();
    (app, sidecar)
}
