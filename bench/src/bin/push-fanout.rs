//! `push-fanout`: how fast one apply reaches N connected sidecars, and what an idle
//! sidecar stream costs the control plane in memory.
//!
//! ```text
//!  push-fanout ── starts ──► target/release/graylane-control --store memory: (port 0)
//!     │  N subscribers, each on its own HTTP/2 connection: Hello, ACK every snapshot
//!     │  RSS with 0 streams, then with N idle streams (all endpoints seen and ACKed)
//!     └─ per apply: t0 → Apply(one Lane, new tag) → last subscriber holds the revision
//! ```
//!
//! Prints a Markdown table and writes it into `bench/README.md`. Everything is bounded
//! by `--timeout-secs`; the child is killed on every exit path.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use clap::Parser;
use graylane_bench::{ControlProcess, Mesh, Plan, measure, raise_nofile, write_section};

/// Push fan-out latency and per-stream memory of graylane-control.
#[derive(Parser, Debug)]
struct Args {
    /// Connected subscribers (simulated sidecars).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Measured applies.
    #[arg(long, default_value_t = 50)]
    applies: usize,
    /// Applies before the measured ones, not counted.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Subscribers connecting at the same time during setup.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// The whole run's bound: after it the child is killed and the bench fails.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// The graylane-control binary [default: next to this binary, i.e. target/release].
    #[arg(long)]
    control_bin: Option<PathBuf>,
    /// Extra environment for graylane-control, KEY=VALUE (e.g. allocator experiments;
    /// such runs are not written to the README).
    #[arg(long, value_parser = env_pair)]
    child_env: Vec<(String, String)>,
    /// Keep the N idle streams this long after the memory reading (to attach a
    /// profiler to the printed pid).
    #[arg(long, default_value_t = 0)]
    hold_idle_secs: u64,
    /// Then kill graylane-control and restart it on the same port: time until every
    /// subscriber (reconnecting like a sidecar) holds a snapshot and every endpoint.
    #[arg(long)]
    storm: bool,
    /// Services the subscribers are spread over (round robin).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    services: u64,
    /// Scope each subscriber (issue 15) to its own service and this many others; absent:
    /// unscoped, every subscriber receives every endpoint.
    #[arg(long)]
    calls: Option<usize>,
    /// Where the results section is written ("-": nowhere) [default: bench/README.md].
    #[arg(long)]
    readme: Option<PathBuf>,
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
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
    // The run future owns the child's guard: whichever branch wins, dropping the
    // others kills graylane-control.
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
    let n = args.subscribers;
    ensure!(n > 0 && args.applies > 0, "need subscribers and applies");
    let nofile = raise_nofile(u64::try_from(n)? + 1024)?;
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

    let plan = Plan {
        subscribers: n,
        applies: args.applies,
        warmup: args.warmup,
        connect_concurrency: args.connect_concurrency,
        hold_idle: Duration::from_secs(args.hold_idle_secs),
        mesh: Mesh {
            services: usize::try_from(args.services)?,
            calls: args.calls,
        },
    };

    let mut control = ControlProcess::start(&bin, &["memory:"], &args.child_env, deadline).await?;
    let result = measure(&plan, &mut control, nofile, args.storm).await;
    if result.is_err() {
        eprintln!(
            "----- last lines of graylane-control's log -----\n{}",
            control.tail()
        );
    }
    drop(control);
    let report = result?;
    println!("{report}");
    let readme = match &args.readme {
        Some(path) if path.as_os_str() == "-" => None,
        _ if !args.child_env.is_empty() => None,
        Some(path) => Some(path.clone()),
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")),
    };
    if let Some(path) = readme {
        write_section(&path, n, &report)?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}
