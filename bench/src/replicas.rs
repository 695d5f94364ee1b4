//! Push over two replicas sharing one etcd: subscribers spread over replicas A and B,
//! applies through A, timed until every subscriber holds the revision and until A has
//! every ACK (B's sidecars' answers reach A through etcd). Then what the instance
//! registry costs etcd per 1,000 instances.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use etcd_client::GetOptions;
use graylane_proto::v1::ListSidecarsRequest;
use graylane_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::control::ControlProcess;
use crate::fanout::{Plan, STEP_TIMEOUT, connect, lane, wait_rollout};
use crate::stats::Stats;

/// The heading of this benchmark's section in bench/README.md.
pub const REPLICAS_SECTION: &str = "## Push over two replicas on etcd";

/// Runs the measurement against replicas `a` and `b` on the etcd at `etcd` with keys
/// under `prefix`; returns the report section.
pub async fn measure_replicas(
    plan: &Plan,
    a: &ControlProcess,
    b: &ControlProcess,
    etcd: &str,
    prefix: &str,
) -> anyhow::Result<String> {
    let n = plan.subscribers;
    let urls = [format!("http://{}", a.grpc), format!("http://{}", b.grpc)];
    let mut admin = AdminClient::new(Endpoint::from_shared(urls[0].clone())?.connect().await?);
    let mut connected = connect(plan, &urls).await?;
    let settled = connected.settled;
    eprintln!("{n} subscribers on two replicas, all endpoints seen in {settled:.2?}");
    let revision = connected.subs.revision[0];
    wait_acked(&mut admin, n, revision).await?;

    let (mut fanout, mut acked) = (Vec::new(), Vec::new());
    for i in 0..plan.warmup + plan.applies {
        let t0 = Instant::now();
        let response = admin.apply(lane(i)).await?.into_inner();
        ensure!(response.committed, "apply {i} committed nothing");
        let revision = response.revision;
        let (_, last) = connected.reach_all(i, revision, t0).await?;
        wait_rollout(&mut admin, revision, n).await?;
        let all_acked = t0.elapsed();
        if i >= plan.warmup {
            fanout.push(last);
            acked.push(all_acked);
        }
        eprintln!(
            "apply {i:>3}{}: revision {revision}: all {n} hold it {last:.2?}, A has every ACK {all_acked:.2?}",
            if i < plan.warmup { " (warm-up)" } else { "" }
        );
    }
    let (keys, bytes) = registry_size(etcd, prefix).await?;
    Ok(report(
        plan,
        settled,
        &Stats::of(fanout),
        &Stats::of(acked),
        keys,
        bytes,
    ))
}

/// ListSidecars on A until all `n` sidecars (A's and B's) acked `revision`.
async fn wait_acked(
    admin: &mut AdminClient<Channel>,
    n: usize,
    revision: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let list = admin
            .list_sidecars(ListSidecarsRequest {})
            .await?
            .into_inner();
        let done = list
            .sidecars
            .iter()
            .filter(|s| s.acked_revision >= revision)
            .count();
        if list.sidecars.len() == n && done == n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "replica A saw {done} of {n} sidecars ack revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys and bytes (keys + values) of the instance registry in etcd.
async fn registry_size(etcd: &str, prefix: &str) -> anyhow::Result<(usize, usize)> {
    let mut client = etcd_client::Client::connect([etcd], None)
        .await
        .context("connect to etcd")?;
    let response = client
        .get(
            format!("{prefix}/instances/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    let bytes = response
        .kvs()
        .iter()
        .map(|kv| kv.key().len() + kv.value().len())
        .sum();
    Ok((response.kvs().len(), bytes))
}

fn report(
    plan: &Plan,
    settled: Duration,
    fanout: &Stats,
    acked: &Stats,
    keys: usize,
    bytes: usize,
) -> String {
    let n = plan.subscribers;
    let mut s = String::new();
    let _ = writeln!(s, "{REPLICAS_SECTION}\n");
    let _ = writeln!(
        s,
        "Method: `push-replicas` starts a one-member etcd (Debian's `etcd-server`) and two \
         release-built `graylane-control --store etcd://...` replicas on loopback, and \
         connects {n} subscribers (simulated sidecars, as in `push-fanout`), every other one \
         to replica B. Each apply goes through replica A; it is timed from just before the \
         Apply RPC until every subscriber holds the new revision, and until replica A's \
         WatchRollout reports all {n} ACKs (B's sidecars' ACKs reach A through etcd). The \
         first {} applies are warm-up; {} are measured. Then the instance registry's keys \
         under `P/instances/` are counted and sized (key + value bytes).\n",
        plan.warmup, plan.applies
    );
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let _ = writeln!(s, "| metric | result |\n|---|---|");
    let _ = writeln!(
        s,
        "| apply on A → all {n} subscribers hold it, p50 / p99 / max | {} / {} / {} |",
        ms(fanout.pct(50)),
        ms(fanout.pct(99)),
        ms(fanout.max())
    );
    let _ = writeln!(
        s,
        "| apply on A → A has all {n} ACKs, p50 / p99 / max | {} / {} / {} |",
        ms(acked.pct(50)),
        ms(acked.pct(99)),
        ms(acked.max())
    );
    let _ = writeln!(
        s,
        "| connect {n} subscribers until all saw {n} endpoints | {:.1} s |",
        settled.as_secs_f64()
    );
    let per_1000 = |x: usize| x * 1000 / n.max(1);
    let _ = writeln!(
        s,
        "| etcd keys / bytes per 1,000 instances | {} / {:.0} KiB ({} bytes per instance) |",
        per_1000(keys),
        per_1000(bytes) as f64 / 1024.0,
        bytes / keys.max(1)
    );
    let _ = writeln!(
        s,
        "\nCommand (after `cargo build --release --workspace --bins`):\n\n```sh\ntarget/release/push-replicas --subscribers {n} --applies {}\n```",
        plan.applies
    );
    s
}
