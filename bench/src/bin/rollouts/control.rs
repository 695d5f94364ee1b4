//! The bench's processes and wires: graylane-control (started, killed on drop, its
//! CPU and log), its HTTP API, and the simulated sidecars' discovery streams.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Hello, SidecarMessage};
use graylane_sidecar::traffic::{Destination, Traffic};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// graylane-control, killed on drop; logging to a file (counted for verdicts).
pub(crate) struct Control {
    pub(crate) child: Child,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) log: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` (default: graylane-control next to this binary) on a fresh file store.
pub(crate) fn start_control(bin: Option<&Path>) -> anyhow::Result<Control> {
    let bin = match bin {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("graylane-control"),
    };
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        bin.display()
    );
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("control.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(&bin)
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--store",
        ])
        .arg(format!("file:{}", dir.path().join("data").display()))
        .env("GRAYLANE_LOG", "info")
        .env_remove("GRAYLANE_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    let mut control = Control {
        child,
        grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        log,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&control.log)?;
        let field = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
        };
        if let (Some(grpc), Some(http)) = (field("grpc_addr="), field("http_addr=")) {
            (control.grpc, control.http) = (grpc, http);
            return Ok(control);
        }
        if let Some(status) = control.child.try_wait()? {
            bail!("graylane-control exited ({status}):\n{text}");
        }
        ensure!(
            Instant::now() < deadline,
            "graylane-control did not log its addresses:\n{text}"
        );
        // Polling the log file the child writes: nothing else to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A simulated sidecar of `svc-I` (label `version: v-I`, so in lane `lane-I`): says
/// Hello, ACKs snapshots, and every second reports its lane and base requests.
pub(crate) async fn sidecar(i: usize, url: String, lane: u32, base: u32) -> anyhow::Result<()> {
    let service = format!("svc-{i}");
    let hello = Hello {
        service: service.clone(),
        instance_id: format!("{service}-0"),
        labels: HashMap::from([("version".to_string(), format!("v-{i}"))]),
        address: format!("127.0.0.1:{}", 20_000 + i),
        ..Hello::default()
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    let channel = Endpoint::from_shared(url)?.connect().await?;
    let mut inbound = DiscoveryClient::new(channel)
        .subscribe(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (lane_name, subset) = (format!("lane-{i}"), format!("v-{i}"));
    // Spread over the second, as real sidecars' start times are.
    let start = tokio::time::Instant::now() + Duration::from_millis(fastrand::u64(0..1000));
    let mut ticker = tokio::time::interval_at(start, Duration::from_secs(1));
    loop {
        tokio::select! {
            snapshot = inbound.message() => {
                let Some(snapshot) = snapshot? else { return Ok(()) };
                tx.send(SidecarMessage { message: Some(Message::Ack(Ack { version: snapshot.version })) }).await?;
            }
            _ = ticker.tick() => {
                let traffic = Traffic::default();
                for (lane, subset, count) in [(lane_name.as_str(), subset.as_str(), lane), ("-", "base", base)] {
                    let to = Destination { namespace: "default", service: &service, lane, subset };
                    for r in 0..count {
                        traffic.record(&to, 200, Duration::from_micros(800 + 37 * u64::from(r % 50)));
                    }
                }
                if let Some(report) = traffic.drain() {
                    tx.send(SidecarMessage { message: Some(Message::Traffic(report)) }).await?;
                }
            }
        }
    }
}

/// "rollout verdict" lines in the control plane's log so far.
pub(crate) fn verdicts_logged(log: &Path) -> anyhow::Result<usize> {
    let file = std::fs::File::open(log)?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("rollout verdict"))
        .count())
}

/// `POST /api/v1/rules` with a YAML body; an answer other than 200 is an error.
pub(crate) fn post_yaml(http: SocketAddr, yaml: &str) -> anyhow::Result<()> {
    let (status, body) = request(http, "POST", "/api/v1/rules", Some(yaml))?;
    ensure!(status == 200, "apply: HTTP {status}: {body}");
    Ok(())
}

pub(crate) fn get_json(http: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = request(http, "GET", path, None)?;
    ensure!(status == 200, "GET {path}: HTTP {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {path}"))
}

/// A minimal HTTP/1.1 exchange (Connection: close): (status, body).
fn request(
    http: SocketAddr,
    method: &str,
    path: &str,
    yaml: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&http, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = yaml.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}
