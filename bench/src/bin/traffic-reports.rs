//! `traffic-reports`: what traffic reports cost. The sidecar's side in process (record
//! per request, drain + encode per report, bytes at `--series` series); the control
//! plane's by running the release graylane-control with `--sidecars` simulated
//! sidecars, each sending a report every `--every-secs`.
//!
//! Prints Markdown tables. Everything is bounded by `--timeout-secs`; the child is
//! killed on every exit path.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use clap::Parser;
use graylane_bench::{ControlProcess, control_cost, raise_nofile, sidecar_cost};

/// The cost of traffic reports, sidecar and control plane.
#[derive(Parser, Debug)]
struct Args {
    /// Series in the sidecar's report (destination × lane × subset).
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Reports drained and encoded to average over.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Simulated sidecars reporting to one control plane.
    #[arg(long, default_value_t = 1000)]
    sidecars: usize,
    /// Series per simulated sidecar's report, and in the whole mesh.
    #[arg(long, default_value_t = 20)]
    per_sidecar: usize,
    #[arg(long, default_value_t = 1000)]
    mesh_series: usize,
    /// Report interval of the simulated sidecars (the sidecar's default is 5 s).
    #[arg(long, default_value_t = 5)]
    every_secs: u64,
    /// Intervals measured.
    #[arg(long, default_value_t = 6)]
    intervals: u32,
    #[arg(long, default_value_t = 300)]
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
            result = run(&args, Instant::now() + timeout) => result,
            () = tokio::time::sleep(timeout) => Err(anyhow!("timed out after {timeout:?}")),
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, deadline: Instant) -> anyhow::Result<()> {
    let (record_ns, drain_us, bytes) = sidecar_cost(args.series, args.rounds)?;
    println!("| sidecar, {} series | |", args.series);
    println!("|---|---|");
    println!("| record, per request | {record_ns:.0} ns |");
    println!("| drain + encode, per report | {drain_us:.0} µs |");
    println!("| report on the wire | {bytes} bytes (+5 gRPC, +9 HTTP/2 frame) |");
    println!();
    raise_nofile(u64::try_from(args.sidecars)? + 1024)?;
    let bin = match &args.control_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("graylane-control"),
    };
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release --workspace --bins` first",
        bin.display()
    );
    let control = ControlProcess::start(&bin, &["memory:"], &[], deadline).await?;
    let every = Duration::from_secs(args.every_secs);
    let table = control_cost(
        &control,
        args.sidecars,
        args.per_sidecar,
        args.mesh_series,
        every,
        args.intervals,
    )
    .await;
    if table.is_err() {
        eprintln!("----- graylane-control's log -----\n{}", control.tail());
    }
    println!("{}", table?);
    Ok(())
}
