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

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use clap::Parser;
use graylane_proto::v1::admin_client::AdminClient;
use graylane_proto::v1::discovery_client::DiscoveryClient;
use graylane_proto::v1::sidecar_message::Message;
use graylane_proto::v1::{
    Ack, ApplyRequest, Hello, ListSidecarsRequest, SidecarMessage, SourceFile, WatchRolloutRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const SECTION: &str = "## Push fan-out (control plane)";
/// Bound on any single wait inside the run (an apply reaching everyone, ACKs, ...).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before each memory reading, so in-flight work (ACKs, frees) has finished.
const SETTLE: Duration = Duration::from_secs(1);

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

    let control = ControlProcess::start(&bin, &args.child_env, deadline).await?;
    let result = measure(args, &control, nofile).await;
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
        write_section(&path, &report)?;
        eprintln!("written to {}", path.display());
    }
    Ok(())
}

/// Everything measured against a running control plane; returns the report section.
async fn measure(args: &Args, control: &ControlProcess, nofile: u64) -> anyhow::Result<String> {
    let n = args.subscribers;
    let url = format!("http://{}", control.grpc);
    let mut admin = AdminClient::new(Endpoint::from_shared(url.clone())?.connect().await?);

    tokio::time::sleep(SETTLE).await;
    let before = memory(control.pid)?;
    eprintln!("0 streams: {before}");

    // ---------------------------------------------------------------- connect N
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let started = Instant::now();
    for idx in 0..n {
        tokio::spawn(subscriber(
            idx,
            url.clone(),
            Arc::clone(&gate),
            events_tx.clone(),
        ));
    }
    drop(events_tx);
    let mut subs = Subs::new(n);
    let (mut setup_snapshots, mut setup_endpoint_sets) = (0_u64, 0_u64);
    while subs.full_endpoints < n {
        let seen = next_event(&mut events, Duration::from_secs(60)).await?;
        setup_snapshots += 1;
        setup_endpoint_sets += u64::from(seen.endpoints.is_some());
        subs.record(&seen);
    }
    let settled = started.elapsed();
    let version = subs.version[0];
    ensure!(
        subs.version.iter().all(|v| *v == version),
        "subscribers disagree on the final snapshot version"
    );
    // Every subscriber has ACKed the final snapshot: the control plane recorded it.
    let acked_by = Instant::now() + STEP_TIMEOUT;
    loop {
        let list = admin
            .list_sidecars(ListSidecarsRequest {})
            .await?
            .into_inner();
        if list.sidecars.len() == n && list.sidecars.iter().all(|s| s.acked_version == version) {
            break;
        }
        ensure!(
            Instant::now() < acked_by,
            "the control plane did not record {n} ACKs of version {version}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{n} subscribers connected, all endpoints seen and ACKed in {settled:.2?} \
         ({setup_snapshots} snapshots received, {setup_endpoint_sets} with endpoints)"
    );
    tokio::time::sleep(SETTLE).await;
    let idle = memory(control.pid)?;
    eprintln!("{n} idle streams: {idle}");
    if args.hold_idle_secs > 0 {
        eprintln!(
            "holding the idle streams {}s: graylane-control is pid {}",
            args.hold_idle_secs, control.pid
        );
        tokio::time::sleep(Duration::from_secs(args.hold_idle_secs)).await;
        eprintln!("after holding: {}", memory(control.pid)?);
    }

    // ---------------------------------------------------------------- applies
    let mut fanout = Vec::with_capacity(args.applies);
    let mut first = Vec::with_capacity(args.applies);
    let mut rpc = Vec::with_capacity(args.applies);
    for i in 0..args.warmup + args.applies {
        let request = ApplyRequest {
            files: vec![SourceFile {
                name: "bench.yaml".into(),
                content: format!(
                    "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: bench\nspec:\n  tag: t{i}\n  selector:\n    version: v2\n"
                ),
            }],
            prune: false,
            dry_run: false,
            expect_revision: None,
        };
        let t0 = Instant::now();
        let response = admin.apply(request).await?.into_inner();
        let apply_rpc = t0.elapsed();
        ensure!(response.committed, "apply {i} committed nothing");
        let revision = response.revision;

        let mut pending = subs.revision.iter().filter(|r| **r < revision).count();
        let (mut earliest, mut latest) = (None::<Instant>, t0);
        while pending > 0 {
            let seen = next_event(&mut events, STEP_TIMEOUT)
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
        // Quiesce before the next apply: every ACK recorded by the control plane.
        wait_rollout(&mut admin, revision, n).await?;
        if i >= args.warmup {
            fanout.push(last);
            first.push(first_one);
            rpc.push(apply_rpc);
        }
        eprintln!(
            "apply {i:>3}{}: revision {revision}, rpc {apply_rpc:.2?}, first {first_one:.2?}, all {n} {last:.2?}",
            if i < args.warmup { " (warm-up)" } else { "" }
        );
    }
    tokio::time::sleep(SETTLE).await;
    let after = memory(control.pid)?;

    Ok(report(
        args,
        &Results {
            settled,
            setup_snapshots,
            before,
            idle,
            after,
            fanout: Stats::of(fanout),
            first: Stats::of(first),
            rpc: Stats::of(rpc),
            nofile,
        },
    ))
}

/// WatchRollout until every connected sidecar acked `revision`.
async fn wait_rollout(
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

// -------------------------------------------------------------------- subscribers

/// One snapshot as a subscriber received it.
struct Seen {
    idx: usize,
    version: u64,
    revision: u64,
    /// Set when the snapshot carried the endpoint set.
    endpoints: Option<usize>,
    /// When the decoded snapshot was in the subscriber's hands.
    at: Instant,
}

enum Event {
    Seen(Seen),
    Failed(usize, anyhow::Error),
}

/// What the collector knows of every subscriber.
struct Subs {
    n: usize,
    version: Vec<u64>,
    revision: Vec<u64>,
    endpoints: Vec<usize>,
    /// Subscribers whose latest endpoint set has all `n` instances.
    full_endpoints: usize,
}

impl Subs {
    fn new(n: usize) -> Self {
        Self {
            n,
            version: vec![0; n],
            revision: vec![0; n],
            endpoints: vec![0; n],
            full_endpoints: 0,
        }
    }

    fn record(&mut self, seen: &Seen) {
        self.version[seen.idx] = seen.version;
        self.revision[seen.idx] = seen.revision;
        if let Some(count) = seen.endpoints {
            let was = self.endpoints[seen.idx] == self.n;
            self.endpoints[seen.idx] = count;
            match (was, count == self.n) {
                (false, true) => self.full_endpoints += 1,
                (true, false) => self.full_endpoints -= 1,
                _ => {}
            }
        }
    }
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    timeout: Duration,
) -> anyhow::Result<Seen> {
    match tokio::time::timeout(timeout, events.recv()).await {
        Err(_) => bail!("no snapshot within {timeout:?}"),
        Ok(None) => bail!("every subscriber ended"),
        Ok(Some(Event::Failed(idx, e))) => Err(e.context(format!("subscriber {idx}"))),
        Ok(Some(Event::Seen(seen))) => Ok(seen),
    }
}

async fn subscriber(
    idx: usize,
    url: String,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Err(e) = subscribe(idx, url, gate, &events).await {
        let _ = events.send(Event::Failed(idx, e));
    }
}

/// A sidecar's side of the stream: its own connection, Hello, then ACK every snapshot.
async fn subscribe(
    idx: usize,
    url: String,
    gate: Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let service = format!("svc-{:02}", idx % 20);
    let hello = Hello {
        instance_id: format!("{service}-{idx:05}"),
        service,
        labels: HashMap::from([("version".to_string(), format!("v{}", 1 + idx % 2))]),
        address: format!("127.0.0.1:{}", 10_000 + idx % 50_000),
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(SidecarMessage {
        message: Some(Message::Hello(hello)),
    })
    .await?;
    // The client (and with it the connection) lives as long as this task.
    let (_client, mut inbound) = {
        let _permit = gate.acquire().await?;
        let channel = Endpoint::from_shared(url)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let mut client = DiscoveryClient::new(channel);
        let inbound = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        (client, inbound)
    };
    // The endpoint set as a sidecar holds it: a full set replaces it, a delta
    // removes then upserts; a snapshot may come in parts (see the proto).
    let mut endpoints: HashSet<String> = HashSet::new();
    let mut replacing: Option<HashSet<String>> = None;
    let mut touched = false;
    loop {
        let Some(snapshot) = inbound.message().await? else {
            bail!("stream ended");
        };
        let at = Instant::now();
        if let Some(set) = &snapshot.endpoints {
            replacing
                .get_or_insert_default()
                .extend(set.endpoints.iter().map(|e| e.instance_id.clone()));
        }
        if let Some(delta) = &snapshot.endpoint_changes {
            for id in &delta.removed {
                endpoints.remove(id);
            }
            endpoints.extend(delta.upserted.iter().map(|e| e.instance_id.clone()));
        }
        touched |= snapshot.endpoints.is_some() || snapshot.endpoint_changes.is_some();
        if snapshot.more {
            continue;
        }
        if let Some(set) = replacing.take() {
            endpoints = set;
        }
        let seen = Seen {
            idx,
            version: snapshot.version,
            revision: snapshot.revision,
            endpoints: std::mem::take(&mut touched).then_some(endpoints.len()),
            at,
        };
        if events.send(Event::Seen(seen)).is_err() {
            return Ok(()); // the bench is done
        }
        tx.send(SidecarMessage {
            message: Some(Message::Ack(Ack {
                version: snapshot.version,
            })),
        })
        .await?;
    }
}

// -------------------------------------------------------------------- the child

/// A running graylane-control, killed (SIGKILL) and reaped on drop.
struct ControlProcess {
    child: Arc<Mutex<Child>>,
    pid: u32,
    grpc: SocketAddr,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ControlProcess {
    /// Starts it on free loopback ports; returns once `/ready` answers 200. A watchdog
    /// thread kills it (and exits) should the bench overrun `deadline` by 15 s.
    async fn start(
        bin: &Path,
        env: &[(String, String)],
        deadline: Instant,
    ) -> anyhow::Result<ControlProcess> {
        let child = Command::new(bin)
            .args(["--store", "memory:"])
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .env_remove("GRAYLANE_LOG")
            .env_remove("GRAYLANE_TOKEN_FILE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        // From here on the guard kills the child on every exit path.
        let mut control = ControlProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            tail: Arc::new(Mutex::new(VecDeque::new())),
        };
        let stderr = control
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stderr
            .take()
            .context("child stderr")?;

        let (addrs_tx, addrs_rx) = oneshot::channel();
        let log_tail = Arc::clone(&control.tail);
        // Drains the log until the child exits (a full pipe would block it), keeping
        // the last lines for error reports.
        std::thread::spawn(move || {
            let mut addrs_tx = Some(addrs_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let (Some(grpc), Some(http)) =
                    (field(&line, "grpc_addr="), field(&line, "http_addr="))
                    && let Some(tx) = addrs_tx.take()
                {
                    let _ = tx.send((grpc, http));
                }
                let mut tail = log_tail.lock().unwrap_or_else(|e| e.into_inner());
                tail.push_back(line);
                if tail.len() > 40 {
                    tail.pop_front();
                }
            }
        });
        let watched = Arc::clone(&control.child);
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(Duration::from_secs(15));
            eprintln!("error: watchdog: the bench overran its timeout");
            kill(&watched);
            std::process::exit(124);
        });

        let (grpc, http) = tokio::time::timeout(Duration::from_secs(20), addrs_rx)
            .await
            .map_err(|_| anyhow!("graylane-control did not log its addresses within 20s"))?
            .map_err(|_| anyhow!("graylane-control exited early:\n{}", control.tail()))?;
        control.grpc = grpc;
        let ready_by = Instant::now() + Duration::from_secs(20);
        while !ready(http).await {
            ensure!(
                Instant::now() < ready_by,
                "graylane-control not ready within 20s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(control)
    }

    fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().map(|l| format!("{l}\n")).collect()
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        kill(&self.child);
    }
}

/// SIGKILL and reap (a no-op once reaped: std never signals a reaped pid).
fn kill(child: &Mutex<Child>) {
    let mut child = child.lock().unwrap_or_else(|e| e.into_inner());
    let _ = child.kill();
    let _ = child.wait();
}

/// The `SocketAddr` after `key` in a log line (e.g. `grpc_addr=127.0.0.1:4321`).
fn field(text: &str, key: &str) -> Option<SocketAddr> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `GET /ready` answered 200.
async fn ready(http: SocketAddr) -> bool {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(http).await?;
        stream
            .write_all(
                format!("GET /ready HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), get).await,
        Ok(Ok(true))
    )
}

/// Raises the soft RLIMIT_NOFILE (inherited by the child) to at least `needed`, as far
/// as the hard limit allows; returns the soft limit in force.
fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit(2) writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    ensure!(rc == 0, "getrlimit: {}", std::io::Error::last_os_error());
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    ensure!(
        limit.rlim_max >= needed,
        "RLIMIT_NOFILE hard limit {} is below the {needed} descriptors needed",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    #[allow(unsafe_code)]
    // SAFETY: setrlimit(2) reads the struct; the new soft limit is within the hard one.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    ensure!(rc == 0, "setrlimit: {}", std::io::Error::last_os_error());
    Ok(needed)
}

// -------------------------------------------------------------------- results

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss: u64,
    /// Proportional set size (shared pages divided among their users); `None` when
    /// smaps_rollup is unavailable.
    pss: Option<u64>,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSS {} KiB", self.rss)?;
        if let Some(pss) = self.pss {
            write!(f, ", PSS {pss} KiB")?;
        }
        Ok(())
    }
}

fn memory(pid: u32) -> anyhow::Result<Memory> {
    let kib = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        && let (Some(rss), Some(pss)) = (kib(&text, "Rss:"), kib(&text, "Pss:"))
    {
        return Ok(Memory {
            rss,
            pss: Some(pss),
        });
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let rss = kib(&status, "VmRSS:").context("VmRSS in /proc/PID/status")?;
    Ok(Memory { rss, pss: None })
}

/// Nearest-rank percentiles of a sample.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn of(mut sample: Vec<Duration>) -> Self {
        sample.sort();
        Self { sorted: sample }
    }

    /// Nearest rank: the smallest value with at least `p`% of the sample at or below.
    fn pct(&self, p: usize) -> Duration {
        let n = self.sorted.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (p * n).div_ceil(100).clamp(1, n);
        self.sorted[rank - 1]
    }

    fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

struct Results {
    settled: Duration,
    /// Snapshots the subscribers received while connecting (each with endpoints).
    setup_snapshots: u64,
    before: Memory,
    idle: Memory,
    after: Memory,
    fanout: Stats,
    first: Stats,
    rpc: Stats,
    nofile: u64,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn per_stream(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn report(args: &Args, r: &Results) -> String {
    let n = args.subscribers;
    let rss_per = per_stream(r.before.rss, r.idle.rss, n);
    let p99 = r.fanout.pct(99);
    let command =
        std::iter::once("cargo run --release -p graylane-bench --bin push-fanout --".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());

    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    let _ = writeln!(
        s,
        "Method: `push-fanout` starts the release-built `graylane-control --store memory:` as \
         a child process and connects {n} subscribers from its own (tokio) process on the same \
         machine, each on its own HTTP/2 connection with a distinct instance id (20 services); \
         each says Hello and ACKs every snapshot, like a sidecar. Once every subscriber holds \
         a snapshot listing all {n} endpoints and the control plane has recorded every ACK \
         (ListSidecars), the control plane's memory is read from `/proc/PID/smaps_rollup` and \
         compared with the reading taken before any stream connected (both after a {SETTLE:?} \
         pause). Then each apply (one `Lane` document whose tag changes) is timed from just \
         before the Apply RPC to the moment the last subscriber has decoded a snapshot carrying \
         the new revision; WatchRollout then waits for all {n} ACKs before the next apply. The \
         first {} applies are warm-up and not counted; percentiles are nearest-rank over the {} \
         measured applies{}.\n",
        args.warmup,
        args.applies,
        if args.applies < 100 {
            " (below 100 applies, p99 is the slowest one)"
        } else {
            ""
        }
    );
    let _ = writeln!(s, "| metric | result | target |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| apply → all {n} subscribers hold the revision, p50 / p99 / max | {} / {} / {} | p99 ≤ 100 ms: {} |",
        ms(r.fanout.pct(50)),
        ms(p99),
        ms(r.fanout.max()),
        verdict(p99 <= Duration::from_millis(100))
    );
    let _ = writeln!(
        s,
        "| apply → first subscriber holds it, p50 / p99 | {} / {} | |",
        ms(r.first.pct(50)),
        ms(r.first.pct(99))
    );
    let _ = writeln!(
        s,
        "| Apply RPC round trip, p50 / p99 | {} / {} | |",
        ms(r.rpc.pct(50)),
        ms(r.rpc.pct(99))
    );
    let _ = writeln!(
        s,
        "| control-plane RSS, 0 streams → {n} idle streams | {} → {} | |",
        mib(r.before.rss),
        mib(r.idle.rss)
    );
    if let (Some(before), Some(idle)) = (r.before.pss, r.idle.pss) {
        let _ = writeln!(
            s,
            "| control-plane PSS, 0 streams → {n} idle streams | {} → {} | |",
            mib(before),
            mib(idle)
        );
        let _ = writeln!(
            s,
            "| memory per idle stream, RSS / PSS | {rss_per:.1} KiB / {:.1} KiB | ≤ 50 KiB: {} |",
            per_stream(before, idle, n),
            verdict(rss_per <= 50.0)
        );
    } else {
        let _ = writeln!(
            s,
            "| memory per idle stream (RSS) | {rss_per:.1} KiB | ≤ 50 KiB: {} |",
            verdict(rss_per <= 50.0)
        );
    }
    let _ = writeln!(
        s,
        "| control-plane RSS after the applies | {} | |",
        mib(r.after.rss)
    );
    let _ = writeln!(
        s,
        "| connect {n} subscribers until all saw {n} endpoints | {:.1} s ({} snapshots received) | |",
        r.settled.as_secs_f64(),
        r.setup_snapshots
    );
    let _ = writeln!(
        s,
        "\nMachine: {cpus} CPUs ({cpu}), Linux {kernel}; the bench and the control plane share \
         them (RLIMIT_NOFILE {}). Command (after `cargo build --release --workspace --bins`):\n\n\
         ```sh\n{command}\n```",
        r.nofile
    );
    s
}

/// Replaces (or adds) the results section of `path`, keeping everything else.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# graylane benchmarks\n\nEach benchmark runs the release-built binaries as \
             processes on one machine; the numbers below are its last run.\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let new = match old.find(SECTION) {
        Some(start) => {
            let after = start + SECTION.len();
            let end = old[after..]
                .find("\n## ")
                .map_or(old.len(), |i| after + i + 1);
            let rest = &old[end..];
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &old[..start])
        }
        None => format!("{}\n\n{section}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}
