//! The processes under test — graylane-control, a demo app and a `--concurrency 1`
//! sidecar in front of it — and the probes that tell when the sidecar holds a
//! revision and when the control plane has its ACK.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use graylane_proto::v1::WatchRolloutRequest;
use graylane_proto::v1::admin_client::AdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::Args;
use crate::child::Child;
use crate::rules;

/// Bound on any single wait of the run (readiness, one apply reaching the sidecar).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const LOOPBACK_0: &str = "127.0.0.1:0";

/// Everything started, the sidecar ready at the first revision. Dropping it kills
/// the children.
pub(crate) struct Mesh {
    pub(crate) control: Child,
    pub(crate) sidecar: Child,
    /// Held so the app lives as long as the mesh.
    _app: Child,
    pub(crate) admin: AdminClient<Channel>,
    pub(crate) sidecar_admin: SocketAddr,
    /// The sidecar's inbound listener, where the load goes.
    pub(crate) inbound: SocketAddr,
    /// The control plane's gRPC URL.
    pub(crate) url: String,
}

impl Mesh {
    /// Starts the control plane, applies the rule set once, starts the app and the
    /// sidecar (its cache in `dir`), and waits until the sidecar has ACKed the set.
    pub(crate) async fn start(args: &Args, dir: &Path) -> anyhow::Result<Mesh> {
        let bins = std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .to_path_buf();
        let bin = |name: &str| -> anyhow::Result<PathBuf> {
            let path = bins.join(name);
            ensure!(
                path.exists(),
                "{} is missing: run `cargo build --release --workspace --bins` first",
                path.display()
            );
            Ok(path)
        };
        let mut control = Child::spawn(
            "control",
            &bin("graylane-control")?,
            &[
                "--store",
                "memory:",
                "--grpc-addr",
                LOOPBACK_0,
                "--http-addr",
                LOOPBACK_0,
            ],
            dir,
        )?;
        let [grpc, http] = control.addresses(&["grpc_addr=", "http_addr="]).await?[..] else {
            bail!("two addresses expected");
        };
        wait_for(http, "/ready", |r| r.starts_with("HTTP/1.1 200")).await?;
        let url = format!("http://{grpc}");
        let mut admin = AdminClient::new(Channel::from_shared(url.clone())?.connect().await?);
        let first = admin.apply(rules::apply_request(args.documents, 0)).await?;
        let first_revision = first.into_inner().revision;

        let mut app = Child::spawn(
            "demo-app",
            &bin("graylane-demo-app")?,
            &["--service", "demo", "--version", "v1"],
            dir,
        )?;
        let app_addr = app.addresses(&["addr="]).await?[0].to_string();
        let cache = dir.join("cache").to_string_lossy().into_owned();
        let sidecar_bin = match &args.sidecar_bin {
            Some(path) => path.clone(),
            None => bin("graylane-sidecar")?,
        };
        #[rustfmt::skip]
        let flags = [
            "--service", "demo", "--instance-id", "demo-1", "--labels", "version=v1",
            "--app-addr", &app_addr, "--control-plane", &url, "--concurrency", "1",
            "--otlp-endpoint", "none", "--cache-dir", &cache, "--admin-addr", LOOPBACK_0,
            "--outbound-addr", LOOPBACK_0, "--inbound-addr", LOOPBACK_0,
        ];
        let mut sidecar = Child::spawn("sidecar", &sidecar_bin, &flags, dir)?;
        let [sidecar_admin, inbound] =
            sidecar.addresses(&["admin_addr=", "inbound_addr="]).await?[..]
        else {
            bail!("two addresses expected");
        };
        holds(sidecar_admin, first_revision).await?;
        acked(&mut admin, first_revision).await?;
        eprintln!(
            "control plane pid {}, demo app pid {}, sidecar pid {}: ready at revision {first_revision}",
            control.pid(),
            app.pid(),
            sidecar.pid()
        );
        Ok(Mesh {
            control,
            sidecar,
            _app: app,
            admin,
            sidecar_admin,
            inbound,
            url,
        })
    }
}

/// When the sidecar's `/ready` first names `revision` (polled every 2 ms).
pub(crate) async fn holds(admin: SocketAddr, revision: u64) -> anyhow::Result<Instant> {
    let want = format!("ready (revision {revision})");
    wait_for(admin, "/ready", |response| response.contains(&want)).await
}

/// WatchRollout until every connected sidecar (the one) acked `revision`.
pub(crate) async fn acked(admin: &mut AdminClient<Channel>, revision: u64) -> anyhow::Result<()> {
    let wait = async {
        let mut progress = admin
            .watch_rollout(WatchRolloutRequest { revision })
            .await?
            .into_inner();
        while let Some(p) = progress.message().await? {
            ensure!(
                p.nacked.is_empty(),
                "revision {revision} NACKed: {:?}",
                p.nacked
            );
            if p.total > 0 && p.acked == p.total {
                return Ok(());
            }
        }
        bail!("WatchRollout of revision {revision} ended before the ACK")
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| anyhow!("revision {revision}: no ACK within {STEP_TIMEOUT:?}"))?
}

/// Polls `GET path` every 2 ms until `done(response)`; when it first was. Fails after
/// `STEP_TIMEOUT`.
async fn wait_for(
    addr: SocketAddr,
    path: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(Ok(response)) = tokio::time::timeout(STEP_TIMEOUT, get(addr, path)).await
            && done(&response)
        {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < deadline,
            "{addr}{path}: not there within {STEP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The whole response to `GET path` on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
