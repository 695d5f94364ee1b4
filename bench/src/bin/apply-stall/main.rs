//! `apply-stall`: how much applying a large rule set stalls the requests a
//! `--concurrency 1` sidecar is proxying at that moment.
//!
//! ```text
//!  apply-stall ─ starts ─► graylane-control --store memory:   (port 0)
//!     │                    graylane-demo-app ◄─ graylane-sidecar --concurrency 1
//!     │  N keep-alive connections, closed loop ──────────┘ (inbound listener)
//!     ├─ quiet window: baseline latencies
//!     ├─ per apply: Apply(whole set) → sidecar /ready shows it → ACK (WatchRollout)
//!     └─ --endpoint-changes N: an instance elsewhere joins, leaves, ... → the
//!        sidecar's CPU per change and time until it routes by it (`churn`)
//! ```
//!
//! Prints one Markdown table row and writes the section of `bench/README.md`, keeping
//! the rows of earlier runs under other `--label`s. Bounded by `--timeout-secs`; every
//! child is killed on every exit path.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use clap::Parser;

use self::load::Load;
use self::mesh::{Mesh, acked, holds};
use self::report::{Results, row, section, split};

mod child;
mod churn;
mod load;
mod mesh;
mod report;
mod rules;

/// Request latency through a --concurrency 1 sidecar while it applies large rule sets.
#[derive(Parser, Debug)]
struct Args {
    /// Documents in the applied rule set.
    #[arg(long, default_value_t = 3000)]
    documents: usize,
    /// Applies of the whole set while the load runs.
    #[arg(long, default_value_t = 10)]
    applies: usize,
    /// Keep-alive connections of the closed-loop load.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Length of the quiet window (no applies) measured as the baseline.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
    /// The row's name in the README table; a row with the same name is replaced.
    #[arg(long, default_value = "last run")]
    label: String,
    /// The whole run's bound: after it the children are killed and the bench fails.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Where the section is written ("-": nowhere) [default: bench/README.md].
    #[arg(long)]
    readme: Option<PathBuf>,
    /// The graylane-sidecar binary [default: next to this one], to compare builds
    /// with everything else equal.
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
    /// After the applies: this many endpoint changes elsewhere in the mesh (an
    /// instance joining, then leaving, ...), with the sidecar's CPU per change and the
    /// time until it routes by it printed (`churn`).
    #[arg(long, default_value_t = 0)]
    endpoint_changes: usize,
    /// With --endpoint-changes: this many more instances registered first (and kept),
    /// so the sidecar holds a mesh of that size.
    #[arg(long, default_value_t = 0)]
    mesh_instances: usize,
}

const WARMUP: Duration = Duration::from_secs(1);
/// Quiet time after each ACK, so one apply's aftermath (frees, the control plane's
/// bookkeeping) does not run into the next apply's window.
const GAP: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread for the load, like the sidecar it measures: on this 2-CPU machine it
    // leaves the other CPU to the sidecar's blocking pool, the app and the control plane.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
    // The run future owns the children's guards: whichever branch wins, dropping the
    // others kills them.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&args) => result,
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

async fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.documents >= 10, "--documents: at least 10");
    ensure!(
        args.applies > 0 && args.connections > 0,
        "need applies and connections"
    );
    // One connection per --mesh-instances instance, here and in the control plane
    // (which inherits the limit).
    graylane_bench::raise_nofile(u64::try_from(args.mesh_instances)? + 1024)?;
    let dir = tempfile::tempdir()?;
    let mut mesh = Mesh::start(args, dir.path()).await?;
    let result = measure(args, &mut mesh).await;
    if result.is_err() {
        eprintln!("----- sidecar log (tail) -----\n{}", mesh.sidecar.tail());
        eprintln!(
            "----- control-plane log (tail) -----\n{}",
            mesh.control.tail()
        );
    }
    drop(mesh);
    let mut results = result?;
    let this_row = row(&mut results);
    let readme = match &args.readme {
        Some(path) if path.as_os_str() == "-" => None,
        Some(path) => Some(path.clone()),
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")),
    };
    let text = section(&results, &this_row, readme.as_deref())?;
    println!("{text}");
    if let Some(path) = readme {
        graylane_bench::write_named_section(&path, report::SECTION, &text)?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}

/// The load, a quiet window, then the applies; the latencies split by window.
async fn measure(args: &Args, mesh: &mut Mesh) -> anyhow::Result<Results> {
    let epoch = Instant::now();
    let load = Load::start(mesh.inbound, args.connections, epoch).await?;
    tokio::time::sleep(WARMUP).await;
    let quiet_from = epoch.elapsed();
    tokio::time::sleep(Duration::from_secs(args.baseline_secs)).await;
    let quiet = (quiet_from, epoch.elapsed());

    let (mut windows, mut holds_at, mut acked_at, mut rpc) = (vec![], vec![], vec![], vec![]);
    let mut rules_bytes = 0;
    for i in 1..=args.applies {
        let request = rules::apply_request(args.documents, i);
        rules_bytes = request.files.iter().map(|f| f.content.len()).sum();
        let t0 = Instant::now();
        let response = mesh.admin.apply(request).await?.into_inner();
        rpc.push(t0.elapsed());
        ensure!(response.committed, "apply {i} committed nothing");
        let revision = response.revision;
        let mut watcher = mesh.admin.clone();
        let (held, ack) = tokio::try_join!(holds(mesh.sidecar_admin, revision), async {
            acked(&mut watcher, revision).await?;
            anyhow::Ok(Instant::now())
        })?;
        holds_at.push(held - t0);
        acked_at.push(ack - t0);
        // The window closes at the later of the two: the sidecar is done with the apply.
        windows.push((t0 - epoch, held.max(ack) - epoch));
        eprintln!(
            "apply {i}: revision {revision}, rpc {:.1?}, sidecar holds it {:.1?}, ACK {:.1?}",
            rpc[i - 1],
            held - t0,
            ack - t0
        );
        tokio::time::sleep(GAP).await;
    }
    let samples = load.stop().await?;
    if args.endpoint_changes > 0 {
        let churn = churn::churn(mesh, args.endpoint_changes, args.mesh_instances).await?;
        let mut took = churn.took.clone();
        took.sort();
        println!(
            "endpoint changes: {}, sidecar CPU {:.1?} per change, change → routing by it p50 {:.1?} / max {:.1?}",
            took.len(),
            churn.cpu / u32::try_from(took.len()).unwrap_or(u32::MAX),
            took[took.len() / 2],
            took[took.len() - 1]
        );
    }
    // The slowest request of each apply: robust to the odd hiccup of a shared
    // machine, which lands in one apply's window, not in all of them.
    let mut worst = Vec::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate() {
        let slowest = samples
            .iter()
            .filter(|s| s.start >= window.0 && s.start < window.1)
            .max_by_key(|s| s.latency);
        if let Some(slowest) = slowest {
            eprintln!(
                "apply {}: slowest request {:.1?}, started {:.1?} after the Apply RPC",
                i + 1,
                slowest.latency,
                slowest.start - window.0
            );
            worst.push(slowest.latency);
        }
    }
    let (without, during) = split(&samples, quiet, &windows);
    Ok(Results {
        label: args.label.clone(),
        documents: args.documents,
        rules_bytes,
        connections: args.connections,
        without,
        during,
        worst,
        holds: holds_at,
        acked: acked_at,
        rpc,
        baseline: Duration::from_secs(args.baseline_secs),
    })
}
