//! The control-plane stream: register this instance, receive snapshots, compile each
//! into `Routes`, swap it in, ACK it (or NACK with the reason and keep the old one).
//!
//! ```text
//!  connect (each --control-plane URL in turn, jittered backoff, the token re-read)
//!    └► Hello ─► parts ─► blocking pool: Held::after ─► RuleSet::from_yaml (only
//!                                          when the rules text changed) +
//!                                          RoutingTable::build (with_instances,
//!                                          sharing, when only endpoints changed)
//!                                          ├─ trust bundle ─► Identity (any part)
//!                                          ├─ ok:  swap Routes, write cache ─► ACK
//!                                          └─ err: keep Routes ─► NACK(reason)
//!    └► every min(--traffic-report-interval, the snapshot's traffic_report_interval_ms):
//!         Traffic::drain ─► TrafficReport (if any)
//!    └► --endpoint-scope scoped: Hello names own service + --calls + learned; a first
//!         call to a mesh service not held ─► interest on the stream (`interest`)
//!  no snapshot yet and the control plane is unreachable ─► Routes from --cache-dir
//!                                          (once; a file failing its check is counted)
//!  a reconnect's first full endpoint set ─► what it lacks kept stale for
//!                                          --endpoint-grace (`stale`), then a timer
//!                                          (in the stream loop and between attempts)
//!                                          rebuilds the routes without it
//! ```
//!
//! Compiling and the cache's fsyncs run on tokio's blocking pool (see `apply`): on a
//! one-thread runtime they would stall every request in flight.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Hello, SidecarMessage, Snapshot};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::identity::Identity;
use crate::routes::Shared;
use crate::traffic::Traffic;
use graylane_exposition::backoff::Backoff;

mod apply;
mod cache;
mod interest;
mod period;
mod received;
mod stale;
mod status;

pub use self::cache::claim;
pub use self::interest::{EndpointScope, endpoint_scope, parse_call};
pub(crate) use self::interest::{Interest, ensure};
pub use self::status::DiscoveryStatus;

use self::apply::Applier;
use self::period::{millis, report_period, ticker};
use self::received::PartialSnapshot;
use self::stale::Held;

/// Backoff between connection attempts: doubles from the first to the last, each
/// wait jittered (see `Backoff`) so a fleet does not reconnect in lockstep.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long registration waits for the first certificate request to be over (it
/// usually takes milliseconds; a control plane that cannot issue does not hold the
/// instance back longer than this).
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(3);
/// A replica that hangs (stopped, its connections open) is left within interval +
/// timeout = 5 s, and this instance registers again through another replica. That
/// must come before the hung replica's lease lets the instance vanish from the mesh:
/// with the default `--lease-ttl 10s`, renewed every third of it, at the earliest 6.7 s
/// after the hang. (10 s + 5 s, before, let healthy instances go missing for ~2.5 s.)
/// 10,000 sidecars ping a replica ~3,300 times a second: a few ms of its CPU.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(3);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new stream may go without its first snapshot. A healthy replica sends
/// it at once; this leaves room for one busy with a whole fleet reconnecting.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

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
    /// How often a `TrafficReport` goes out (when there was traffic), at most: a
    /// control plane running a rollout may ask for a shorter period.
    pub traffic_interval: Duration,
    /// How long a reconnect keeps, as stale, the instances its first full endpoint set
    /// lacks (a restarted control plane that has not heard from them yet); zero: none.
    pub endpoint_grace: Duration,
    /// `--endpoint-scope` and `--calls`: every endpoint, or only those of the services
    /// this sidecar calls.
    pub endpoint_scope: EndpointScope,
}

/// The discovery client. `run` until shutdown.
pub struct Discovery {
    config: Config,
    counters: Arc<DiscoveryStatus>,
    applier: Arc<Applier>,
    /// Drained into a report on the stream every `traffic_interval`.
    traffic: Arc<Traffic>,
}

impl Discovery {
    /// Snapshots' trust bundles go to `identity`.
    pub(crate) fn new(
        config: Config,
        routes: Shared,
        counters: Arc<DiscoveryStatus>,
        identity: Arc<Identity>,
        traffic: Arc<Traffic>,
    ) -> Self {
        counters
            .traffic_report_interval_ms
            .store(millis(config.traffic_interval), Ordering::Relaxed);
        let _ = counters.endpoint_scope.set(config.endpoint_scope.clone());
        let applier = Applier::new(
            routes,
            Arc::clone(&counters),
            config.cache_dir.clone(),
            identity,
            config.endpoint_grace,
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
        let mut held = Held::default();
        let mut cache_tried = false;
        tokio::select! {
            () = self.applier.identity.first_attempt(FIRST_CERTIFICATE_WAIT) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        for url in self.config.control_planes.iter().cycle() {
            let result = tokio::select! {
                r = self.session(url, &mut held) => r,
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
            // A grace may end while the control plane is away again: its timer runs
            // during the wait too.
            let wait = tokio::time::sleep(backoff.next_wait());
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    () = grace_end(held.next_expiry()) => {
                        if self.expire(&mut held).await.is_err() {
                            return;
                        }
                    }
                    // Through `stopped`: the `Ref` it waits with is not `Send`, and
                    // the select's output is held across the `expire` above.
                    () = stopped(&mut shutdown) => return,
                }
            }
        }
    }

    /// One stream; `Ok(true)` when at least one snapshot arrived before it ended.
    async fn session(&self, url: &str, held: &mut Held) -> Result<bool, String> {
        // A replica that takes the stream but sends nothing (hung, a proxy holding the
        // call, or one that cannot read its store and predates refusing such streams)
        // must not hold this sidecar: after a bound from the call's start, the next
        // --control-plane URL.
        let first = tokio::time::sleep(FIRST_SNAPSHOT_WAIT);
        tokio::pin!(first);
        let no_snapshot = || format!("no snapshot within {}s", FIRST_SNAPSHOT_WAIT.as_secs());
        let opening = self.open(url);
        tokio::pin!(opening);
        let (tx, mut inbound) = loop {
            tokio::select! {
                opened = &mut opening => break opened?,
                () = grace_end(held.next_expiry()) => self.expire(held).await?,
                () = &mut first => return Err(no_snapshot()),
            }
        };
        let mut parts = PartialSnapshot::default();
        let mut any = false;
        // Until this stream's first full endpoint set: what that set lacks is kept stale.
        let mut reconnect = held.streamed;
        // The period of the previous stream until this one's first snapshot says.
        let mut period = self.period();
        let mut report = ticker(period);
        loop {
            let message = tokio::select! {
                m = inbound.message() => m,
                () = &mut first, if !any => return Err(no_snapshot()),
                _ = report.tick() => {
                    if !self.report(&tx).await {
                        return Ok(any);
                    }
                    continue;
                }
                () = grace_end(held.next_expiry()) => {
                    self.expire(held).await?;
                    continue;
                }
                () = self.applier.routes.interest.asked() => {
                    if !self.send_interest(&tx, held).await {
                        return Ok(any);
                    }
                    continue;
                }
            };
            let part = match message {
                Ok(Some(part)) => part,
                Ok(None) => return Ok(any),
                Err(status) => {
                    return if any {
                        // The control plane ended a healthy stream (it is shutting
                        // down, or lost its lease in etcd): reconnecting, next URL first.
                        tracing::info!(control_plane = %url, reason = %status.message(), "control plane stream ended");
                        Ok(true)
                    } else {
                        Err(status.message().to_string())
                    };
                }
            };
            let Some(snapshot) = parts.add(part)? else {
                continue;
            };
            // Before applying: the period is the control plane's to set even when
            // the rules of the same snapshot are refused.
            let asked = snapshot.traffic_report_interval_ms;
            self.follow_period(asked, !any, &mut period, &mut report);
            any = true;
            let full = snapshot.endpoints.is_some();
            // Taken, not cloned: the blocking task reads deltas against it and hands
            // back the state after. Lost only with the session, and a new stream
            // starts with a full snapshot.
            let (next, answer) = self
                .applier
                .apply(std::mem::take(held), snapshot, reconnect)
                .await?;
            *held = next;
            reconnect &= !full;
            if tx.send(answer).await.is_err() || !self.send_interest(&tx, held).await {
                return Ok(any);
            }
        }
    }

    /// Takes the report period a snapshot asks for (`first`: of its stream).
    fn follow_period(
        &self,
        asked: Option<u32>,
        first: bool,
        period: &mut Duration,
        report: &mut tokio::time::Interval,
    ) {
        let next = report_period(self.config.traffic_interval, *period, asked, first);
        if next != *period {
            tracing::info!(?next, asked_ms = ?asked, "traffic report period changed");
            // Counts since the last report stay in `Traffic` and go out with the
            // first report of the new period.
            *period = next;
            *report = ticker(next);
            self.counters
                .traffic_report_interval_ms
                .store(millis(next), Ordering::Relaxed);
        }
    }

    /// Connects, sends the Hello and subscribes: the way to send answers, and the
    /// stream of snapshot parts.
    async fn open(
        &self,
        url: &str,
    ) -> Result<(mpsc::Sender<SidecarMessage>, tonic::Streaming<Snapshot>), String> {
        let channel = crate::grpc::endpoint(url, self.config.ca_bundle.as_deref())?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
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
            scope: interest::declared(&self.config.endpoint_scope)
                .map(|calls| self.applier.routes.interest.hello_scope(calls)),
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
        let inbound = DiscoveryClient::new(channel)
            .subscribe(request)
            .await
            .map_err(|s| format!("subscribe: {}", s.message()))?
            .into_inner();
        tracing::info!(control_plane = %url, "subscribed");
        Ok((tx, inbound))
    }

    /// Sends the traffic counted since the last report, if any; false once the stream
    /// is gone.
    async fn report(&self, tx: &mpsc::Sender<SidecarMessage>) -> bool {
        // Counts drained here and lost with a broken stream are a few seconds' worth;
        // the next stream's reports carry on.
        let Some(traffic) = self.traffic.drain() else {
            return true;
        };
        let message = SidecarMessage {
            message: Some(Message::Traffic(traffic)),
        };
        tx.send(message).await.is_ok()
    }

    /// Sends the services learned since the Hello (or the last interest); false once
    /// the stream is gone. Only to a control plane that scopes this stream (its
    /// snapshots carry a directory): an older one would end the stream on a message
    /// it does not know, and sends every endpoint anyway.
    /// Until this stream's first snapshot says so, what was learned waits (the next
    /// applied snapshot sends it).
    async fn send_interest(&self, tx: &mpsc::Sender<SidecarMessage>, held: &Held) -> bool {
        if held.received.directory.is_none() {
            return true;
        }
        let Some(services) = self.applier.routes.interest.take_unsent() else {
            return true;
        };
        let message = SidecarMessage {
            message: Some(Message::Interest(services)),
        };
        tx.send(message).await.is_ok()
    }

    /// Drops the stale instances whose grace ended, rebuilding the routes. Errs only
    /// when the runtime is shutting down.
    async fn expire(&self, held: &mut Held) -> Result<(), String> {
        *held = self.applier.refresh(std::mem::take(held)).await?;
        Ok(())
    }

    /// The report period in force (the flag's until a control plane asks otherwise).
    fn period(&self) -> Duration {
        match self
            .counters
            .traffic_report_interval_ms
            .load(Ordering::Relaxed)
        {
            0 => self.config.traffic_interval,
            ms => Duration::from_millis(ms),
        }
    }
}

/// Once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// Fires when the next grace ends; never without stale instances. A timer, not a
/// poll: nothing runs until then.
async fn grace_end(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
