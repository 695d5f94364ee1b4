//! The control-plane stream: register this instance, receive snapshots, compile each
//! into `Routes`, swap it in, ACK it (or NACK with the reason and keep the old one).
//!
//! ```text
//!  connect (each --control-plane URL in turn, jittered backoff)
//!    └► Hello ─► parts ─► Received::after ─► RuleSet::from_yaml + RoutingTable::build
//!                                              ├─ ok:  swap Routes, write cache, ACK
//!                                              └─ err: keep Routes, NACK(reason)
//!  no snapshot yet and the control plane is unreachable ─► Routes from --cache-dir
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Hello, Nack, SidecarMessage, Snapshot};
use graylane_routing::{RoutingTable, RuleSet};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::routes::{Routes, Shared, Source};

mod cache;
mod received;

use self::received::{Parts, Received};

/// Backoff between connection attempts: doubles from the first to the last, each
/// wait jittered ±50% so a fleet does not reconnect in lockstep after a restart.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Who this sidecar is and where it gets its rules.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: String,
    pub instance_id: String,
    pub labels: BTreeMap<String, String>,
    /// host:port of this sidecar's inbound listener, as other sidecars reach it.
    pub advertise: String,
    /// Control-plane URLs, tried in turn.
    pub control_planes: Vec<String>,
    /// Bearer token for the control plane.
    pub token: Option<String>,
    /// Where the last good snapshot is kept.
    pub cache_dir: Option<PathBuf>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub connects: AtomicU64,
}

/// The discovery client. `run` until shutdown.
pub struct Discovery {
    config: Config,
    routes: Shared,
    counters: Arc<Counters>,
}

impl Discovery {
    pub fn new(config: Config, routes: Shared, counters: Arc<Counters>) -> Self {
        Self {
            config,
            routes,
            counters,
        }
    }

    /// Keeps a stream to some control plane open until `shutdown` turns true. Never
    /// returns an error: every failure is logged and retried after a backoff.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_FIRST;
        let mut received = Received::default();
        for url in self.config.control_planes.iter().cycle() {
            let result = tokio::select! {
                r = self.session(url, &mut received) => r,
                _ = shutdown.wait_for(|down| *down) => return,
            };
            match result {
                // A session that delivered a snapshot was healthy: start over fast.
                Ok(true) => backoff = BACKOFF_FIRST,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(control_plane = %url, error = %e, "control plane stream failed")
                }
            }
            if self.routes.load().is_none() {
                self.load_cache();
            }
            let wait = backoff.mul_f64(0.5 + fastrand::f64());
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|down| *down) => return,
            }
        }
    }

    /// One stream; `Ok(true)` when at least one snapshot arrived before it ended.
    async fn session(&self, url: &str, received: &mut Received) -> Result<bool, String> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad URL: {e}"))?
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
        };
        let _ = tx
            .send(SidecarMessage {
                message: Some(Message::Hello(hello)),
            })
            .await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.config.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| "token is not a valid header value")?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut inbound = DiscoveryClient::new(channel)
            .subscribe(request)
            .await
            .map_err(|s| format!("subscribe: {}", s.message()))?
            .into_inner();
        tracing::info!(control_plane = %url, "subscribed");
        let mut parts = Parts::default();
        let mut any = false;
        loop {
            let part = match inbound.message().await {
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
            let answer = self.apply(&snapshot, received);
            if tx.send(answer).await.is_err() {
                return Ok(any);
            }
        }
    }

    /// Applies a whole snapshot; returns the ACK or NACK to send.
    fn apply(&self, snapshot: &Snapshot, received: &mut Received) -> SidecarMessage {
        *received = received.after(snapshot);
        let version = snapshot.version;
        let message = match compile(received, version, Source::ControlPlane) {
            Ok(routes) => {
                tracing::info!(
                    revision = routes.revision,
                    version,
                    "routing by new snapshot"
                );
                self.routes.publish(routes);
                self.counters.applied.fetch_add(1, Ordering::Relaxed);
                if let Some(dir) = &self.config.cache_dir
                    && let Err(e) = cache::write(dir, received)
                {
                    tracing::warn!(error = %e, "cannot write the snapshot cache");
                }
                Message::Ack(Ack { version })
            }
            Err(reason) => {
                tracing::warn!(version, %reason, "rejected snapshot; keeping the previous one");
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Message::Nack(Nack { version, reason })
            }
        };
        SidecarMessage {
            message: Some(message),
        }
    }

    /// Routes from the cache, when there is one and nothing better yet.
    fn load_cache(&self) {
        let Some(dir) = &self.config.cache_dir else {
            return;
        };
        match cache::read(dir) {
            Ok(Some(cached)) => match compile(&cached, 0, Source::Cache) {
                Ok(routes) => {
                    tracing::warn!(
                        revision = routes.revision,
                        "control plane unreachable: routing by the cached snapshot"
                    );
                    self.routes.publish(routes);
                }
                Err(e) => tracing::warn!(error = %e, "the cached snapshot is unusable"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the snapshot cache"),
        }
    }
}

/// Validates and compiles a received state with the routing crate.
fn compile(received: &Received, version: u64, source: Source) -> Result<Routes, String> {
    let rules = RuleSet::from_yaml("(snapshot)", &received.rules).map_err(|errors| {
        let lines: Vec<String> = errors.iter().take(10).map(ToString::to_string).collect();
        lines.join("; ")
    })?;
    let instances = received.instances();
    let mut endpoints: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in &instances {
        endpoints
            .entry(i.service.clone())
            .or_default()
            .push(i.id.clone());
    }
    let addresses = instances.iter().map(|i| i.address.clone()).collect();
    let table = RoutingTable::build(&rules, instances);
    Ok(Routes {
        version,
        revision: received.revision,
        rules,
        table,
        endpoints,
        addresses,
        source,
    })
}
