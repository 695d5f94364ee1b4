//! `--endpoint-changes N`: what an instance joining or leaving elsewhere in the mesh
//! costs the sidecar once it holds the large rule set (no load running): its CPU per
//! change, and the time from the change until it routes by the snapshot that carries
//! it (its log line), then waits for its ACK. The rules do not change, so none of
//! that should be parsing them again.
//!
//! Why the log and not the control plane's list: that list is every sidecar's status,
//! and polled every few ms at 5,000 instances it kept the control plane busy enough
//! to double the time measured (change → ACK p50 ~230 ms against ~106 ms at none).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{EndpointScope, Hello, ListSidecarsRequest, SidecarMessage, Snapshot};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::mesh::Mesh;

/// The sidecar under test, as it registers.
const MEASURED: &str = "demo-1";

pub(crate) struct Churn {
    /// CPU (user + system) the sidecar used over all the changes.
    pub(crate) cpu: Duration,
    /// Per change: from it (a stream opened or dropped) until the sidecar routes by it.
    pub(crate) took: Vec<Duration>,
}

/// An instance of service `churn`, registered while this is held.
struct Instance {
    _hello: mpsc::Sender<SidecarMessage>,
    _snapshots: tonic::Streaming<Snapshot>,
}

/// `changes` changes in turn: an instance joins, then leaves, and so on; first
/// `others` more instances (of 100 services) join and stay, for a mesh of that size.
pub(crate) async fn churn(mesh: &mut Mesh, changes: usize, others: usize) -> anyhow::Result<Churn> {
    let pid = mesh.sidecar.pid();
    let mut kept = Vec::with_capacity(others);
    for i in 0..others {
        let service = format!("other-{}", i % 100);
        kept.push(join(&mesh.url, &service, &format!("other-{i}")).await?);
    }
    let mut acked = settled(mesh, others + 1).await?;
    let mut log = LogTail::at_end(mesh.sidecar.log_path())?;
    let before = graylane_bench::cpu(pid)?;
    let mut took = Vec::with_capacity(changes);
    let mut instance = None;
    for i in 0..changes {
        let started = Instant::now();
        instance = match instance {
            None => Some(join(&mesh.url, "churn", &format!("churn-{i}")).await?),
            Some(_) => None, // dropped: its stream ends and it is deregistered
        };
        let routed = log.routed_after(acked).await?;
        let routing = started.elapsed();
        took.push(routing);
        acked = acked_version(mesh, routed.max(acked)).await?;
        eprintln!(
            "change {i}: routing by version {routed} after {routing:.1?}, ACK of {acked} seen after {:.1?}",
            started.elapsed()
        );
    }
    let cpu = graylane_bench::cpu(pid)?.saturating_sub(before);
    drop(kept);
    Ok(Churn { cpu, took })
}

/// Once `listed` sidecars are registered, the version the measured one ACKed when it
/// has not ACKed a newer one for 2 s (past the control plane's 1 s debounce cap).
async fn settled(mesh: &mut Mesh, listed: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let list = mesh.admin.list_sidecars(ListSidecarsRequest {}).await?;
        let list = list.into_inner().sidecars;
        let version = (list.iter())
            .find(|s| s.instance_id == MEASURED)
            .map_or(0, |s| s.acked_version);
        if version != last || list.len() < listed {
            (last, since) = (version, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(2) {
            return Ok(version);
        }
        ensure!(
            Instant::now() < deadline,
            "the mesh did not settle within 120 s: {} of {listed} listed, {MEASURED} at version {version}",
            list.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers `instance` of `service`, scoped to its own service: it reads nothing,
/// and the whole mesh sent to thousands of them would load the control plane, not
/// the sidecar measured.
async fn join(url: &str, service: &str, instance: &str) -> anyhow::Result<Instance> {
    let (tx, rx) = mpsc::channel(1);
    let hello = Hello {
        service: service.into(),
        instance_id: instance.into(),
        address: "127.0.0.1:9".into(),
        scope: Some(EndpointScope::default()),
        ..Hello::default()
    };
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    let snapshots = DiscoveryClient::connect(url.to_string())
        .await?
        .subscribe(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Instance {
        _hello: tx,
        _snapshots: snapshots,
    })
}

/// The measured sidecar's log, read from where the last read stopped.
struct LogTail {
    file: std::fs::File,
    partial: String,
}

impl LogTail {
    fn at_end(path: &std::path::Path) -> anyhow::Result<Self> {
        use std::io::Seek;
        let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        file.seek(std::io::SeekFrom::End(0))?;
        Ok(Self {
            file,
            partial: String::new(),
        })
    }

    /// The version of the first snapshot past `after` the sidecar logs it routes by.
    async fn routed_after(&mut self, after: u64) -> anyhow::Result<u64> {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.file.read_to_string(&mut self.partial)?;
            while let Some(end) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=end).collect();
                let version = line
                    .contains("routing by new snapshot")
                    .then(|| line.split(" version=").nth(1))
                    .flatten()
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
                if let Some(version) = version.filter(|v| *v > after) {
                    return Ok(version);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "{MEASURED} did not route by a version past {after} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The snapshot version the measured sidecar has ACKed, once it is `at` or past it
/// (polled at a pace that does not load the control plane: see the module doc).
async fn acked_version(mesh: &mut Mesh, at: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = mesh.admin.list_sidecars(ListSidecarsRequest {}).await?;
        let version = (list.into_inner().sidecars.iter())
            .find(|s| s.instance_id == MEASURED)
            .map(|s| s.acked_version)
            .context("the measured sidecar is not listed")?;
        if version >= at {
            return Ok(version);
        }
        ensure!(
            Instant::now() < deadline,
            "{MEASURED} did not ACK version {at} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
