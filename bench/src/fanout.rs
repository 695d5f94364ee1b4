//! The push fan-out run against a live control plane: connect N subscribers, read the
//! memory they cost, then time applies until every subscriber holds the new revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use graylane_proto::v1::admin_client::AdminClient;
use graylane_proto::v1::{ApplyRequest, ListSidecarsRequest, SourceFile, WatchRolloutRequest};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::{Channel, Endpoint};

use crate::control::{ControlProcess, memory};
use crate::report::{Churn, Results, report};
use crate::stats::Stats;
use crate::subscriber::{Event, OnEnd, Subs, next_event, subscriber};

/// Bound on any single wait inside the run (an apply reaching everyone, ACKs, ...).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before each memory reading, so in-flight work (ACKs, frees) has finished.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// What one run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Connected subscribers (simulated sidecars); at least one.
    pub subscribers: usize,
    /// Measured applies; at least one.
    pub applies: usize,
    /// Applies before the measured ones, not counted.
    pub warmup: usize,
    /// Subscribers connecting at the same time during setup (0 counts as 1).
    pub connect_concurrency: usize,
    /// Keep the N idle streams this long after the memory reading (to attach a
    /// profiler to the printed pid).
    pub hold_idle: Duration,
    /// How the subscribers are spread over services, and what each one asks for.
    pub mesh: Mesh,
}

/// The mesh the subscribers make up.
#[derive(Clone, Copy, Debug)]
pub struct Mesh {
    /// Services the subscribers are spread over (round robin); at least one.
    pub services: usize,
    /// `Some(k)`: each subscriber is scoped (issue 15) to its own service and the `k`
    /// services after it; `None`: unscoped, every endpoint.
    pub calls: Option<usize>,
}

impl Default for Mesh {
    /// What the bench measured before scoping: 20 services, every endpoint.
    fn default() -> Self {
        Self {
            services: 20,
            calls: None,
        }
    }
}

impl Mesh {
    /// The service of subscriber `idx`: `svc-NN`, zero-padded to the widest index.
    pub(crate) fn service(&self, idx: usize) -> String {
        let services = self.services.max(1);
        let width = (services - 1).to_string().len().max(2);
        format!("svc-{:0width$}", idx % services)
    }

    /// The services subscriber `idx` calls, by index (its own not included).
    pub(crate) fn calls(&self, idx: usize) -> Vec<usize> {
        let services = self.services.max(1);
        let k = self.calls.unwrap_or(0).min(services - 1);
        (1..=k).map(|d| (idx + d) % services).collect()
    }

    /// How many endpoints subscriber `idx` holds once all `n` are registered.
    pub(crate) fn expected(&self, idx: usize, n: usize) -> usize {
        if self.calls.is_none() {
            return n;
        }
        let services = self.services.max(1);
        let count = |s: usize| n / services + usize::from(s < n % services);
        count(idx % services) + self.calls(idx).into_iter().map(count).sum::<usize>()
    }
}

/// The subscribers, all connected and holding every endpoint.
pub(crate) struct Connected {
    pub(crate) subs: Subs,
    /// Every subscriber's snapshots; the subscriber tasks hold the senders.
    events: mpsc::UnboundedReceiver<Event>,
    /// From the first connect until the last subscriber saw all `n` endpoints.
    pub(crate) settled: Duration,
    /// Snapshots received while connecting.
    snapshots: u64,
    /// Of those, the ones that carried endpoints.
    endpoint_sets: u64,
}

/// Latencies of the measured applies, from just before the Apply RPC.
struct Timings {
    /// Until the last subscriber holds the revision.
    fanout: Vec<Duration>,
    /// Until the first subscriber holds it.
    first: Vec<Duration>,
    /// The Apply RPC itself.
    rpc: Vec<Duration>,
}

impl Connected {
    /// Every subscriber's snapshots, as they come.
    pub(crate) fn events(&mut self) -> &mut mpsc::UnboundedReceiver<Event> {
        &mut self.events
    }

    /// Waits until every subscriber holds `revision` (of apply `i`, applied at `t0`);
    /// returns how long after `t0` the first and the last one had it.
    pub(crate) async fn reach_all(
        &mut self,
        i: usize,
        revision: u64,
        t0: Instant,
    ) -> anyhow::Result<(Duration, Duration)> {
        let subs = &mut self.subs;
        let mut pending = subs.revision.iter().filter(|r| **r < revision).count();
        let (mut earliest, mut latest) = (None::<Instant>, t0);
        while pending > 0 {
            let seen = next_event(&mut self.events, STEP_TIMEOUT)
                .await
                .with_context(|| {
                    format!("apply {i} (revision {revision}): {pending} subscribers still waiting")
                })?;
            if seen.revision >= revision && subs.revision[seen.idx] < revision {
                pending -= 1;
                latest = latest.max(seen.at);
                earliest = Some(earliest.map_or(seen.at, |e| e.min(seen.at)));
            }
            subs.record(&seen);
        }
        let last = latest - t0;
        let first_one = earliest.map_or(Duration::ZERO, |e| e - t0);
        Ok((first_one, last))
    }
}

/// Everything measured against a running control plane; returns the report section.
/// Progress goes to stderr. `plan` must have at least one subscriber and one apply;
/// `nofile` (the descriptor limit in force) is only reported.
/// With `storm`, the control plane is then killed and restarted under the subscribers
/// ([`crate::storm`]).
pub async fn measure(
    plan: &Plan,
    control: &mut ControlProcess,
    nofile: u64,
    storm: bool,
) -> anyhow::Result<String> {
    let n = plan.subscribers;
    let url = format!("http://{}", control.grpc);
    let mut admin = AdminClient::new(Endpoint::from_shared(url.clone())?.connect().await?);

    tokio::time::sleep(SETTLE).await;
    let before = memory(control.pid)?;
    eprintln!("0 streams: {before}");

    let on_end = if storm { OnEnd::Reconnect } else { OnEnd::Fail };
    let mut connected = connect_with(plan, std::slice::from_ref(&url), on_end).await?;
    // The last endpoint batch may still be on its way to some (or, with reconnects, a
    // later one): wait until the control plane records everyone as holding the same
    // version. A scoped subscriber is not sent a batch that has nothing in its scope;
    // its ACK of the snapshot before counts for it.
    let newest = connected.subs.version.iter().max().copied().unwrap_or(0);
    wait_acked(&mut admin, n, |v| v >= newest).await?;
    let Connected {
        settled,
        snapshots: setup_snapshots,
        endpoint_sets: setup_endpoint_sets,
        ..
    } = connected;
    eprintln!(
        "{n} subscribers connected, all endpoints seen and ACKed in {settled:.2?} \
         ({setup_snapshots} snapshots received, {setup_endpoint_sets} with endpoints)"
    );
    tokio::time::sleep(SETTLE).await;
    let idle = memory(control.pid)?;
    eprintln!("{n} idle streams: {idle}");
    if !plan.hold_idle.is_zero() {
        eprintln!(
            "holding the idle streams {}s: graylane-control is pid {}",
            plan.hold_idle.as_secs(),
            control.pid
        );
        tokio::time::sleep(plan.hold_idle).await;
        eprintln!("after holding: {}", memory(control.pid)?);
    }

    let timings = applies(plan, &mut admin, &mut connected).await?;
    let url = format!("http://{}", control.grpc);
    let churn = churn(plan, &mut admin, &mut connected, &url).await?;
    tokio::time::sleep(SETTLE).await;
    let after = memory(control.pid)?;
    let storm = match storm {
        true => Some(crate::storm::storm(control, &mut connected).await?),
        false => None,
    };
    // Last: one more instance changes every subscriber's endpoint count.
    let snapshot_bytes = full_snapshot_bytes(n, plan.mesh, &url).await?;
    // Scoped: what the same sidecar would receive unscoped, for before/after.
    let unscoped_bytes = match plan.mesh.calls {
        Some(_) => {
            let all = Mesh {
                calls: None,
                ..plan.mesh
            };
            Some(full_snapshot_bytes(n, all, &url).await?)
        }
        None => None,
    };

    Ok(report(
        plan,
        &Results {
            settled,
            setup_snapshots,
            before,
            idle,
            after,
            fanout: Stats::of(timings.fanout),
            first: Stats::of(timings.first),
            rpc: Stats::of(timings.rpc),
            nofile,
            storm,
            snapshot_bytes,
            unscoped_bytes,
            churn,
        },
    ))
}

/// Starts every subscriber (spread over `urls` in turn) and waits until each holds
/// all `n` endpoints. A stream's end fails the run.
pub(crate) async fn connect(plan: &Plan, urls: &[String]) -> anyhow::Result<Connected> {
    connect_with(plan, urls, OnEnd::Fail).await
}

/// [`connect`], with subscribers that do `on_end` when their stream ends.
pub(crate) async fn connect_with(
    plan: &Plan,
    urls: &[String],
    on_end: OnEnd,
) -> anyhow::Result<Connected> {
    let n = plan.subscribers;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let started = Instant::now();
    for idx in 0..n {
        tokio::spawn(subscriber(
            idx,
            n,
            plan.mesh,
            urls[idx % urls.len()].clone(),
            Arc::clone(&gate),
            events_tx.clone(),
            on_end,
        ));
    }
    drop(events_tx);
    let mut subs = Subs::new(n, plan.mesh);
    let (mut setup_snapshots, mut setup_endpoint_sets) = (0_u64, 0_u64);
    while subs.full_endpoints < n {
        let seen = next_event(&mut events, Duration::from_secs(60)).await?;
        setup_snapshots += 1;
        setup_endpoint_sets += u64::from(seen.endpoints.is_some());
        subs.record(&seen);
    }
    Ok(Connected {
        subs,
        events,
        settled: started.elapsed(),
        snapshots: setup_snapshots,
        endpoint_sets: setup_endpoint_sets,
    })
}

/// The encoded size of the first snapshot a new sidecar receives (rules and every
/// endpoint it is scoped to, with the directory when scoped): what each of them holds.
async fn full_snapshot_bytes(n: usize, mesh: Mesh, url: &str) -> anyhow::Result<usize> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(1));
    let probe = subscriber(n, n, mesh, url.to_string(), gate, tx, OnEnd::Fail);
    let probe = tokio::spawn(probe);
    let seen = next_event(&mut events, STEP_TIMEOUT).await;
    probe.abort();
    Ok(seen.context("the probe subscriber's first snapshot")?.bytes)
}

/// One more instance of an existing service joins, as a pod starting does, then
/// leaves: how many of the `n` subscribers were sent a snapshot for the join, and how
/// long from its Hello until the control plane recorded every sidecar (it included)
/// as holding the new version.
async fn churn(
    plan: &Plan,
    admin: &mut AdminClient<Channel>,
    connected: &mut Connected,
    url: &str,
) -> anyhow::Result<Churn> {
    let n = plan.subscribers;
    let before = wait_acked(admin, n, |_| true).await?;
    drain(connected);
    let (tx, mut events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(1));
    let started = Instant::now();
    let joiner = tokio::spawn(subscriber(
        n,
        n,
        plan.mesh,
        url.to_string(),
        gate,
        tx,
        OnEnd::Fail,
    ));
    next_event(&mut events, STEP_TIMEOUT).await?;
    let joined = wait_acked(admin, n + 1, |v| v > before).await?;
    let took = started.elapsed();
    // A subscriber reports a snapshot before it ACKs it: all are in the channel.
    let sent = (drain(connected).into_iter())
        .filter(|v| *v > before && *v <= joined)
        .count();
    joiner.abort();
    let left = wait_acked(admin, n, |v| v > joined).await?;
    drain(connected);
    eprintln!(
        "one instance joined: {sent} of {n} subscribers sent a snapshot, all held version {joined} after {took:.2?}; it left: version {left}"
    );
    Ok(Churn { sent, took })
}

/// Records the snapshots the subscribers reported so far; their versions.
fn drain(connected: &mut Connected) -> Vec<u64> {
    let mut versions = Vec::new();
    while let Ok(event) = connected.events.try_recv() {
        if let Event::Seen(seen) = event {
            connected.subs.record(&seen);
            versions.push(seen.version);
        }
    }
    versions
}

/// ListSidecars until all `n` sidecars acked the same version, one `wanted` accepts;
/// returns it.
async fn wait_acked(
    admin: &mut AdminClient<Channel>,
    n: usize,
    wanted: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let acked_by = Instant::now() + STEP_TIMEOUT;
    loop {
        let list = admin
            .list_sidecars(ListSidecarsRequest {})
            .await?
            .into_inner();
        let versions: std::collections::BTreeSet<u64> =
            list.sidecars.iter().map(|s| s.acked_version).collect();
        if list.sidecars.len() == n
            && let [version] = versions.iter().copied().collect::<Vec<_>>()[..]
            && wanted(version)
        {
            return Ok(version);
        }
        ensure!(
            Instant::now() < acked_by,
            "the control plane did not record {n} sidecars holding one version: {} listed, \
             versions {versions:?}",
            list.sidecars.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The warm-up and measured applies, one at a time; returns the measured latencies.
async fn applies(
    plan: &Plan,
    admin: &mut AdminClient<Channel>,
    connected: &mut Connected,
) -> anyhow::Result<Timings> {
    let n = plan.subscribers;
    let mut timings = Timings {
        fanout: Vec::with_capacity(plan.applies),
        first: Vec::with_capacity(plan.applies),
        rpc: Vec::with_capacity(plan.applies),
    };
    for i in 0..plan.warmup + plan.applies {
        let request = lane(i);
        let t0 = Instant::now();
        let response = admin.apply(request).await?.into_inner();
        let apply_rpc = t0.elapsed();
        ensure!(response.committed, "apply {i} committed nothing");
        let revision = response.revision;

        let (first_one, last) = connected.reach_all(i, revision, t0).await?;
        // Quiesce before the next apply: every ACK recorded by the control plane.
        wait_rollout(admin, revision, n).await?;
        if i >= plan.warmup {
            timings.fanout.push(last);
            timings.first.push(first_one);
            timings.rpc.push(apply_rpc);
        }
        eprintln!(
            "apply {i:>3}{}: revision {revision}, rpc {apply_rpc:.2?}, first {first_one:.2?}, all {n} {last:.2?}",
            if i < plan.warmup { " (warm-up)" } else { "" }
        );
    }
    Ok(timings)
}

/// Apply number `i`: one Lane whose tag changes every time.
pub(crate) fn lane(i: usize) -> ApplyRequest {
    ApplyRequest {
        files: vec![SourceFile {
            name: "bench.yaml".into(),
            content: format!(
                "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: bench\nspec:\n  tag: t{i}\n  selector:\n    version: v2\n"
            ),
        }],
        prune: false,
        dry_run: false,
        expect_revision: None,
        prune_namespace: None,
    }
}

/// WatchRollout until every connected sidecar acked `revision`.
pub(crate) async fn wait_rollout(
    admin: &mut AdminClient<Channel>,
    revision: u64,
    n: usize,
) -> anyhow::Result<()> {
    let wait = async {
        let mut progress = admin
            .watch_rollout(WatchRolloutRequest { revision })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(p) = progress.message().await? {
            last = Some(p);
        }
        let last = last.context("WatchRollout sent nothing")?;
        ensure!(
            usize::try_from(last.acked)? == n && usize::try_from(last.total)? == n,
            "revision {revision}: {} of {} sidecars acked, expected {n}",
            last.acked,
            last.total
        );
        anyhow::Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| anyhow!("revision {revision}: not every ACK within {STEP_TIMEOUT:?}"))?
}
