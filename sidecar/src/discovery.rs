//! The control-plane stream: register this instance, receive snapshots, compile each
//! into `Routes`, swap it in, ACK it (or NACK with the reason and keep the old one).
//!
//! ```text
//!  connect (each --control-plane URL in turn, jittered backoff, the token re-read)
//!    └► Hello ─► parts ─► blocking pool: Received::after ─► RuleSet::from_yaml
//!                                          + RoutingTable::build
//!                                          ├─ trust bundle ─► Identity (any part)
//!                                          ├─ ok:  swap Routes, write cache ─► ACK
//!                                          └─ err: keep Routes ─► NACK(reason)
//!    └► every --traffic-report-interval: Traffic::drain ─► TrafficReport (if any)
//!  no snapshot yet and the control plane is unreachable ─► Routes from --cache-dir
//!                                          (once; a file failing its check is counted)
//! ```
//!
//! Compiling and the cache's fsyncs run on tokio's blocking pool (see `apply`): on a
//! one-thread runtime they would stall every request in flight.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Hello, SidecarMessage};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::identity::Identity;
use crate::routes::Shared;
use crate::traffic::Traffic;

mod apply;
mod cache;
mod received;

use self::apply::Applier;
use self::received::{Parts, Received};

/// Backoff between connection attempts: doubles from the first to the last, each
/// wait jittered (see `Backoff`) so a fleet does not reconnect in lockstep.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long registration waits for the first certificate request to be over (it
/// usually takes milliseconds; a control plane that cannot issue does not hold the
/// instance back longer than this).
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(3);

/// Who this sidecar is and where it gets its rules.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: String,
    pub instance_id: String,
    pub labels: BTreeMap<String, String>,
    /// `--namespace` and `--service-account`: reported in Hello, not yet used to route.
    pub namespace: String,
    pub service_account: String,
    /// host:port of this sidecar's inbound listener, as other sidecars reach it.
    pub advertise: String,
    /// Control-plane URLs, tried in turn.
    pub control_planes: Vec<String>,
    /// The file holding the bearer token for the control plane; read again at every
    /// (re)connect, because Kubernetes rotates projected tokens in place.
    pub token_file: Option<PathBuf>,
    /// Where the last good snapshot is kept.
    pub cache_dir: Option<PathBuf>,
    /// CA certificates (PEM) an `https://` control plane must chain to.
    pub ca_bundle: Option<Vec<u8>>,
    /// How often a `TrafficReport` goes out (when there was traffic).
    pub traffic_interval: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub connects: AtomicU64,
    /// `--cache-dir` files ignored at start: unreadable, failing their integrity
    /// check, of an older format, or with rules this sidecar rejects.
    pub cache_rejected: AtomicU64,
}

/// The discovery client. `run` until shutdown.
pub struct Discovery {
    config: Config,
    counters: Arc<Counters>,
    applier: Arc<Applier>,
    /// Drained into a report on the stream every `traffic_interval`.
    traffic: Arc<Traffic>,
}

impl Discovery {
    /// Snapshots' trust bundles go to `identity`.
    pub(crate) fn new(
        config: Config,
        routes: Shared,
        counters: Arc<Counters>,
        identity: Arc<Identity>,
        traffic: Arc<Traffic>,
    ) -> Self {
        let applier = Applier::new(
            routes,
            Arc::clone(&counters),
            config.cache_dir.clone(),
            identity,
        );
        Self {
            config,
            counters,
            applier: Arc::new(applier),
            traffic,
        }
    }

    /// Keeps a stream to some control plane open until `shutdown` turns true. Never
    /// returns an error: every failure is logged and retried after a backoff.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let mut received = Received::default();
        let mut cache_tried = false;
        tokio::select! {
            () = self.applier.identity.first_attempt(FIRST_CERTIFICATE_WAIT) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        for url in self.config.control_planes.iter().cycle() {
            let result = tokio::select! {
                r = self.session(url, &mut received) => r,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            match result {
                // A session that delivered a snapshot was healthy: start over fast.
                Ok(true) => backoff.reset(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(control_plane = %url, error = %e, "control plane stream failed")
                }
            }
            if !cache_tried && self.applier.routes.load().is_none() {
                cache_tried = true;
                self.applier.load_cache().await;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_wait()) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
        }
    }

    /// One stream; `Ok(true)` when at least one snapshot arrived before it ended.
    async fn session(&self, url: &str, received: &mut Received) -> Result<bool, String> {
        let channel = crate::grpc::endpoint(url, self.config.ca_bundle.as_deref())?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(4);
        let hello = Hello {
            service: self.config.service.clone(),
            instance_id: self.config.instance_id.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            address: self.config.advertise.clone(),
            namespace: self.config.namespace.clone(),
            service_account: self.config.service_account.clone(),
        };
        let _ = tx
            .send(SidecarMessage {
                message: Some(Message::Hello(hello)),
            })
            .await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(bearer) = crate::grpc::bearer(self.config.token_file.as_deref()).await? {
            request.metadata_mut().insert("authorization", bearer);
        }
        let mut inbound = DiscoveryClient::new(channel)
            .subscribe(request)
            .await
            .map_err(|s| format!("subscribe: {}", s.message()))?
            .into_inner();
        tracing::info!(control_plane = %url, "subscribed");
        let mut parts = Parts::default();
        let mut any = false;
        let mut report = tokio::time::interval(self.config.traffic_interval);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        report.reset();
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                _ = report.tick() => {
                    // Counts drained here and lost with a broken stream are a few
                    // seconds' worth; the next stream's reports carry on.
                    if let Some(traffic) = self.traffic.drain() {
                        let message = SidecarMessage {
                            message: Some(Message::Traffic(traffic)),
                        };
                        if tx.send(message).await.is_err() {
                            return Ok(any);
                        }
                    }
                    continue;
                }
            };
            let part = match message {
                Ok(Some(part)) => part,
                Ok(None) => return Ok(any),
                Err(status) => {
                    return if any {
                        Ok(true)
                    } else {
                        Err(status.message().to_string())
                    };
                }
            };
            let Some(snapshot) = parts.add(part)? else {
                continue;
            };
            any = true;
            // Taken, not cloned: the blocking task reads deltas against it and hands
            // back the state after. Lost only with the session, and a new stream
            // starts with a full snapshot.
            let (next, answer) = self
                .applier
                .apply(std::mem::take(received), snapshot)
                .await?;
            *received = next;
            if tx.send(answer).await.is_err() {
                return Ok(any);
            }
        }
    }
}
