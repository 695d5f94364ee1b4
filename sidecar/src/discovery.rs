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
//!    └► every min(--traffic-report-interval, the snapshot's traffic_report_interval_ms):
//!         Traffic::drain ─► TrafficReport (if any)
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

use crate::identity::Identity;
use crate::routes::Shared;
use crate::traffic::Traffic;
use graylane_exposition::backoff::Backoff;

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
/// The report periods a control plane may ask for: a buggy or hostile one can neither
/// make every sidecar report in a busy loop nor silence the reports for long.
const MIN_ASKED_PERIOD: Duration = Duration::from_secs(1);
const MAX_ASKED_PERIOD: Duration = Duration::from_secs(60);

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
    /// The traffic report period in force, in ms (`/config`'s
    /// `trafficReportInterval`); 0 until discovery starts.
    pub traffic_report_interval_ms: AtomicU64,
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
        counters
            .traffic_report_interval_ms
            .store(millis(config.traffic_interval), Ordering::Relaxed);
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
        // The period of the previous stream until this one's first snapshot says.
        let mut period = self.period();
        let mut report = ticker(period);
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
            // Before applying: the period is the control plane's to set even when
            // the rules of the same snapshot are refused.
            let asked = snapshot.traffic_report_interval_ms;
            let next = report_period(self.config.traffic_interval, period, asked, !any);
            any = true;
            if next != period {
                tracing::info!(?next, asked_ms = ?asked, "traffic report period changed");
                // Counts since the last report stay in `Traffic` and go out with the
                // first report of the new period.
                period = next;
                report = ticker(period);
                self.counters
                    .traffic_report_interval_ms
                    .store(millis(period), Ordering::Relaxed);
            }
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

/// The report period after a snapshot asking for `asked` (ms), `current` before it,
/// `flag` the flag's: the shorter of the flag's and the asked one, read inside
/// `MIN_ASKED_PERIOD..=MAX_ASKED_PERIOD`. Absent means unchanged, except in the first
/// snapshot of a stream (which carries it whenever the control plane knows of it):
/// there it means a control plane that never asks, so the flag's.
fn report_period(flag: Duration, current: Duration, asked: Option<u32>, first: bool) -> Duration {
    match asked {
        Some(ms) => {
            let asked = Duration::from_millis(u64::from(ms));
            flag.min(asked.clamp(MIN_ASKED_PERIOD, MAX_ASKED_PERIOD))
        }
        None if first => flag,
        None => current,
    }
}

/// A report ticker whose first tick is one `period` from now; a late tick delays the
/// next ones rather than bursting.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut report = tokio::time::interval(period);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report.reset();
    report
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);
    const ONE: Duration = Duration::from_secs(1);

    /// The period after one later snapshot of a stream, from `current`.
    fn asked(flag: Duration, ms: u32) -> Duration {
        report_period(flag, Duration::from_secs(3), Some(ms), false)
    }

    #[test]
    fn the_shorter_of_the_flag_and_the_asked_period_wins() {
        assert_eq!(asked(FIVE, 1_000), ONE);
        assert_eq!(asked(FIVE, 2_500), Duration::from_millis(2_500));
        assert_eq!(asked(FIVE, 5_000), FIVE);
        // What a control plane without rollouts asks for: the flag's.
        assert_eq!(asked(FIVE, 30_000), FIVE);
        // A test's 100 ms flag stays below what a control plane may ask.
        let fast = Duration::from_millis(100);
        assert_eq!(asked(fast, 1_000), fast);
    }

    #[test]
    fn hostile_asked_periods_are_clamped() {
        // 0 or 1 ms would make every sidecar report in a busy loop (and 0 would make
        // the ticker panic).
        assert_eq!(asked(FIVE, 0), MIN_ASKED_PERIOD);
        assert_eq!(asked(FIVE, 1), MIN_ASKED_PERIOD);
        // A huge one cannot stretch the flag's period; with a long flag, 60 s at most.
        assert_eq!(asked(FIVE, u32::MAX), FIVE);
        let hour = Duration::from_secs(3_600);
        assert_eq!(asked(hour, u32::MAX), MAX_ASKED_PERIOD);
    }

    #[test]
    fn an_absent_period_is_unchanged_except_from_a_control_plane_that_never_sends_one() {
        // A later snapshot without it (endpoints only): unchanged.
        assert_eq!(report_period(FIVE, ONE, None, false), ONE);
        // A stream's first snapshot without it: a control plane that does not know
        // of periods (older, mid-upgrade); the one of the previous stream is stale.
        assert_eq!(report_period(FIVE, ONE, None, true), FIVE);
        assert_eq!(report_period(FIVE, FIVE, Some(1_000), true), ONE);
    }
}
