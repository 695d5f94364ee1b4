//! `push-replicas`: apply through one of two graylane-control replicas on etcd and time
//! until every simulated sidecar (spread over both) holds it and replica A has every
//! ACK. Results go to the "Push over two replicas on etcd" section of bench/README.md.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use clap::Parser;
use graylane_bench::{
    ControlProcess, Plan, REPLICAS_SECTION, measure_replicas, raise_nofile, write_named_section,
};
use graylane_tests::etcd::Etcd;

#[derive(Parser, Debug)]
struct Args {
    /// Simulated sidecars, spread over the two replicas.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Measured applies.
    #[arg(long, default_value_t = 30)]
    applies: usize,
    /// Applies before the measured ones, not counted.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The whole run's bound.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Where the results section is written ("-": nowhere) [default: bench/README.md].
    #[arg(long)]
    readme: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = run(&args);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.subscribers;
    ensure!(n > 0 && args.applies > 0, "need subscribers and applies");
    let nofile = raise_nofile(u64::try_from(n)? + 1024)?;
    eprintln!("descriptor limit {nofile}");
    let bin = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .join("graylane-control");
    ensure!(
        bin.exists(),
        "{} is missing: build the workspace first",
        bin.display()
    );
    let dir = tempfile::tempdir()?;
    // Its guard stops etcd when this function returns, on every path.
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd://{}", etcd.endpoint());
    let prefix = "/bench";
    let env = [("GRAYLANE_ETCD_PREFIX".to_string(), prefix.to_string())];
    let timeout = Duration::from_secs(args.timeout_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let deadline = Instant::now() + timeout;
        let a = ControlProcess::start(&bin, &[&store], &env, deadline).await?;
        let b = ControlProcess::start(&bin, &[&store], &env, deadline).await?;
        let plan = Plan {
            subscribers: n,
            applies: args.applies,
            warmup: args.warmup,
            connect_concurrency: 32,
            hold_idle: Duration::ZERO,
            mesh: graylane_bench::Mesh::default(),
        };
        let endpoint = format!("http://{}", etcd.endpoint());
        tokio::select! {
            r = measure_replicas(&plan, &a, &b, &endpoint, prefix) => r,
            () = tokio::time::sleep(timeout) => Err(anyhow!("timed out after {timeout:?}")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = report?;
    println!("{report}");
    let readme = match &args.readme {
        Some(path) if path.as_os_str() == "-" => None,
        Some(path) => Some(path.clone()),
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")),
    };
    if let Some(path) = readme {
        write_named_section(&path, REPLICAS_SECTION, &report)?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}
