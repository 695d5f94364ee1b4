//! `rollouts`: the control plane's CPU for driving many LaneRollouts at once.
//!
//! One release-built `graylane-control --store file:DIR`; `--rollouts` simulated
//! sidecars (one service each, in its own lane) on their own discovery streams, each
//! reporting lane and base traffic every second like a sidecar a rollout asked for
//! `analysis.interval: 1s`. First `--seconds` with the rules but no rollout (the cost
//! of the streams and reports alone), then `--rollouts` LaneRollouts (interval 1 s,
//! hour-long holds: every interval gives a verdict, none ends a step), `--settle-secs`
//! for every rollout to hold its 12 kept verdicts, and `--seconds`
//! again. CPU from /proc/PID/stat (utime + stime); verdicts counted from the control
//! plane's own "rollout verdict" log lines. Prints a Markdown table.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use clap::Parser;

mod control;

use self::control::{Control, get_json, post_yaml, sidecar, start_control, verdicts_logged};
use graylane_bench::cpu;

/// The control plane's CPU for driving many rollouts at once.
#[derive(Parser, Debug)]
struct Args {
    /// LaneRollouts (each with its Lane, entry TagPolicy and reporting sidecar).
    #[arg(long, default_value_t = 100)]
    rollouts: usize,
    /// Length of each measured phase (without, then with rollouts).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Lane and base requests in each sidecar's report (one a second).
    #[arg(long, default_value_t = 50)]
    lane_requests: u32,
    #[arg(long, default_value_t = 200)]
    base_requests: u32,
    /// Wait after every rollout has a verdict, before measuring: a rollout keeps its
    /// last 12 verdicts, so by then its stored progress has its steady size.
    #[arg(long, default_value_t = 35)]
    settle_secs: u64,
    #[arg(long, default_value_t = 400)]
    timeout_secs: u64,
    /// The graylane-control binary [default: next to this binary, i.e. target/release].
    #[arg(long)]
    control_bin: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&args) => result,
            () = tokio::time::sleep(timeout) => Err(anyhow!("timed out after {timeout:?}")),
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<String> {
    let n = args.rollouts;
    let control = start_control(args.control_bin.as_deref())?;
    post_yaml(control.http, &base_rules(n))?;
    let url = format!("http://{}", control.grpc);
    let mut sidecars = Vec::new();
    for i in 0..n {
        sidecars.push(tokio::spawn(sidecar(
            i,
            url.clone(),
            args.lane_requests,
            args.base_requests,
        )));
    }
    let phase = Duration::from_secs(args.seconds);
    // Streams connected and reporting before the first reading.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = measure(&control, phase).await?;
    post_yaml(control.http, &rollouts(n))?;
    // Every rollout started (one revision each) and judging before the second reading.
    let started = Instant::now();
    wait_judged(&control, n).await?;
    let warm = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let driving = measure(&control, phase).await?;
    for s in &sidecars {
        ensure!(!s.is_finished(), "a simulated sidecar ended early");
    }
    let views = get_json(control.http, "/api/v1/rollouts")?;
    let states: Vec<&str> = views
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|v| v["state"].as_str())
        .collect();
    ensure!(
        states.iter().all(|s| *s == "Progressing"),
        "every rollout still progressing: {states:?}"
    );
    // One file per record: their total is every rollout's stored progress.
    let records: u64 = std::fs::read_dir(control.dir.path().join("data").join("records"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    Ok(table(args, idle, driving, warm, records))
}

/// Waits (≤ 60 s) until each of the `n` rollouts has a passing verdict.
async fn wait_judged(control: &Control, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let views = get_json(control.http, "/api/v1/rollouts")?;
        let passed = |v: &&serde_json::Value| {
            let verdicts = v["verdicts"].as_array();
            verdicts.is_some_and(|l| l.iter().any(|x| x["verdict"] == "pass"))
        };
        let judged = views
            .as_array()
            .context("rollouts list")?
            .iter()
            .filter(passed)
            .count();
        if judged == n {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {judged} of {n} rollouts have a passing verdict after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One phase: CPU time and verdicts logged over `phase`.
struct Reading {
    cpu: Duration,
    wall: Duration,
    verdicts: usize,
}

async fn measure(control: &Control, phase: Duration) -> anyhow::Result<Reading> {
    let (cpu0, log0, t0) = (
        cpu(control.child.id())?,
        verdicts_logged(&control.log)?,
        Instant::now(),
    );
    tokio::time::sleep(phase).await;
    let (cpu1, log1) = (cpu(control.child.id())?, verdicts_logged(&control.log)?);
    Ok(Reading {
        cpu: cpu1.saturating_sub(cpu0),
        wall: t0.elapsed(),
        verdicts: log1.saturating_sub(log0),
    })
}

fn table(args: &Args, idle: Reading, driving: Reading, warm: Duration, records: u64) -> String {
    let n = args.rollouts;
    let share = |r: &Reading| r.cpu.as_secs_f64() / r.wall.as_secs_f64();
    let extra = share(&driving) - share(&idle);
    let secs = |r: &Reading| r.wall.as_secs_f64();
    let rows = [
        (
            format!("CPU without rollouts ({:.0} s)", secs(&idle)),
            format!("{:.1}% of a core", 100.0 * share(&idle)),
        ),
        (
            format!(
                "CPU driving {n} rollouts, interval 1 s ({:.0} s)",
                secs(&driving)
            ),
            format!("{:.1}% of a core", 100.0 * share(&driving)),
        ),
        (
            "verdicts".into(),
            format!(
                "{} ({:.1}/s; {n} rollouts at 1 s would be {n}/s)",
                driving.verdicts,
                driving.verdicts as f64 / secs(&driving)
            ),
        ),
        (
            "CPU per verdict ((driving − without) ÷ verdicts)".into(),
            format!(
                "{:.0} µs",
                extra * secs(&driving) * 1e6 / driving.verdicts.max(1) as f64
            ),
        ),
        (
            "CPU per rollout".into(),
            format!("{:.2}% of a core", 100.0 * extra / n as f64),
        ),
        (
            "apply → every rollout has a passing verdict".into(),
            format!("{:.1} s", warm.as_secs_f64()),
        ),
        (
            "record files (every rollout's progress, one file each)".into(),
            format!("{} KiB", records / 1024),
        ),
    ];
    let mut out = format!(
        "| graylane-control, file store, {n} simulated sidecars reporting every 1 s | |\n|---|---|"
    );
    for (what, value) in rows {
        let _ = write!(out, "\n| {what} | {value} |");
    }
    out
}

/// 100 Lanes, their entry TagPolicies (no rule of their own).
fn base_rules(n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        let _ = write!(
            yaml,
            "apiVersion: graylane.io/v1\nkind: Lane\nmetadata: {{name: lane-{i}}}\n\
             spec: {{tag: lane-{i}, selector: {{version: v-{i}}}, fallback: [base]}}\n---\n\
             apiVersion: graylane.io/v1\nkind: TagPolicy\nmetadata: {{name: edge-{i}}}\n\
             spec: {{services: [entry-{i}]}}\n---\n"
        );
    }
    yaml
}

/// One LaneRollout per lane: verdicts every second, holds no run reaches.
fn rollouts(n: usize) -> String {
    let mut yaml = String::new();
    for i in 0..n {
        let _ = write!(
            yaml,
            "apiVersion: graylane.io/v1\nkind: LaneRollout\nmetadata: {{name: ro-{i}}}\n\
             spec:\n  lane: lane-{i}\n  entry: edge-{i}\n  hashBy: {{header: x-user-id}}\n\
             \x20 steps: [{{percent: 10, hold: 1h}}, {{percent: 50, hold: 1h}}]\n\
             \x20 analysis: {{interval: 1s, minRequests: 10, maxErrorRate: 1%, maxP99Ratio: 3, failAfter: 2}}\n\
             \x20 onSuccess: hold\n---\n"
        );
    }
    yaml
}
