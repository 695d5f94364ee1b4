//! The cost of traffic reports: on the sidecar, draining and encoding one report of N
//! series (CPU, bytes); on the control plane, the memory and CPU of M simulated
//! sidecars each sending a report every interval on its discovery stream.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{Ack, Hello, SidecarMessage, TrafficReport};
use graylane_sidecar::traffic::{Destination, Traffic};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::control::{ControlProcess, cpu, memory};

/// Requests recorded per series before each drain (their count changes only varint
/// widths).
const REQUESTS_PER_SERIES: u64 = 20;

/// Sidecar side: (record ns/request, drain+encode µs/report, encoded bytes) at
/// `series` series, over `rounds` reports.
pub fn sidecar_cost(series: usize, rounds: usize) -> anyhow::Result<(f64, f64, usize)> {
    ensure!(series > 0 && rounds > 0, "need series and rounds");
    let traffic = Traffic::default();
    let names: Vec<(String, String)> = (0..series)
        .map(|i| (format!("svc-{:03}", i / 4), format!("v{}", i % 4)))
        .collect();
    let (mut record, mut drain, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..REQUESTS_PER_SERIES {
            for (i, (service, subset)) in names.iter().enumerate() {
                let to = Destination {
                    namespace: "default",
                    service,
                    lane: if i % 2 == 0 { "-" } else { "gray" },
                    subset,
                };
                let status = if i % 10 == 0 { 503 } else { 200 };
                traffic.record(&to, status, Duration::from_micros(300 + 7 * i as u64));
            }
        }
        let t1 = Instant::now();
        let report = traffic.drain().context("a report")?;
        let encoded = report.encode_to_vec();
        drain += t1.elapsed();
        record += t1 - t0;
        bytes = encoded.len();
        ensure!(report.series.len() == series, "every series reported");
    }
    let requests = (rounds as u64 * REQUESTS_PER_SERIES * series as u64) as f64;
    Ok((
        record.as_nanos() as f64 / requests,
        drain.as_micros() as f64 / rounds as f64,
        bytes,
    ))
}

/// One simulated sidecar's report: `per_sidecar` series out of a mesh of `mesh`.
fn report_of(idx: usize, per_sidecar: usize, mesh: usize) -> TrafficReport {
    let traffic = Traffic::default();
    for k in 0..per_sidecar {
        let s = (idx * per_sidecar + k) % mesh;
        let (service, subset) = (format!("svc-{:03}", s / 4), format!("v{}", s % 4));
        let to = Destination {
            namespace: "default",
            service: &service,
            lane: "-",
            subset: &subset,
        };
        for r in 0..REQUESTS_PER_SERIES {
            traffic.record(
                &to,
                if r == 0 { 500 } else { 200 },
                Duration::from_millis(r),
            );
        }
    }
    traffic.drain().unwrap_or_default()
}

/// A sidecar that says Hello, ACKs snapshots and sends `report` every `every`.
async fn reporter(
    idx: usize,
    url: String,
    gate: Arc<Semaphore>,
    report: TrafficReport,
    every: Duration,
    start: tokio::time::Instant,
) -> anyhow::Result<()> {
    let service = format!("svc-{:03}", idx % 250);
    let hello = Hello {
        instance_id: format!("{service}-{idx:05}"),
        service,
        labels: HashMap::from([("version".to_string(), "v1".to_string())]),
        address: format!("127.0.0.1:{}", 10_000 + idx % 50_000),
        ..Hello::default()
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    let (_client, mut inbound) = {
        let _permit = gate.acquire().await?;
        let channel = Endpoint::from_shared(url)?.connect().await?;
        let mut client = DiscoveryClient::new(channel);
        let inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        (client, inbound)
    };
    // Spread the fleet's reports over the interval, as real sidecars' start times do.
    let mut ticker = tokio::time::interval_at(start + every.mul_f64(fastrand::f64()), every);
    loop {
        tokio::select! {
            snapshot = inbound.message() => {
                let Some(snapshot) = snapshot? else { return Ok(()) };
                let ack = Message::Ack(Ack { version: snapshot.version });
                tx.send(SidecarMessage { message: Some(ack) }).await?;
            }
            _ = ticker.tick() => {
                let message = Message::Traffic(report.clone());
                tx.send(SidecarMessage { message: Some(message) }).await?;
            }
        }
    }
}

/// Control-plane side: memory with `sidecars` idle streams, then while each sends a
/// report of `per_sidecar` series (of `mesh` in all) every `every` for `rounds`
/// intervals; CPU per report. A Markdown table.
pub async fn control_cost(
    control: &ControlProcess,
    sidecars: usize,
    per_sidecar: usize,
    mesh: usize,
    every: Duration,
    rounds: u32,
) -> anyhow::Result<String> {
    let url = format!("http://{}", control.grpc);
    let before = memory(control.pid)?;
    let gate = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    let report = report_of(0, per_sidecar, mesh);
    let bytes = report.encoded_len();
    // Reports start once everyone had time to connect, so the idle streams' memory
    // is read apart from the reports'.
    let connect = Duration::from_secs(10);
    let start = tokio::time::Instant::now() + connect;
    for idx in 0..sidecars {
        let report = report_of(idx, per_sidecar, mesh);
        let (url, gate) = (url.clone(), Arc::clone(&gate));
        tasks.push(tokio::spawn(reporter(idx, url, gate, report, every, start)));
    }
    tokio::time::sleep_until(start - Duration::from_secs(1)).await;
    let idle = memory(control.pid)?;
    // Everyone reporting for `rounds` intervals.
    tokio::time::sleep_until(start + every * 2).await;
    let cpu0 = cpu(control.pid)?;
    tokio::time::sleep(every * rounds).await;
    let cpu1 = cpu(control.pid)?;
    let after = memory(control.pid)?;
    for task in &tasks {
        ensure!(!task.is_finished(), "a reporter ended early");
    }
    for task in tasks {
        task.abort();
    }
    let reports = sidecars as f64 * f64::from(rounds);
    let mut out = String::new();
    writeln!(
        out,
        "| control plane, {sidecars} sidecars × {per_sidecar} series ({mesh} in the mesh), a report each every {every:?} | |"
    )?;
    writeln!(out, "|---|---|")?;
    writeln!(out, "| memory before the sidecars | {before} |")?;
    writeln!(out, "| memory with {sidecars} idle streams | {idle} |")?;
    writeln!(
        out,
        "| memory after {rounds} intervals of reports | {after} |"
    )?;
    writeln!(
        out,
        "| report size ({per_sidecar} series) | {bytes} bytes |"
    )?;
    writeln!(
        out,
        "| control-plane CPU per report | {:.1} µs |",
        (cpu1 - cpu0).as_micros() as f64 / reports
    )?;
    Ok(out)
}
