//! The graylane-control child process: start, readiness, log tail, kill; and its memory.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// A running graylane-control, killed (SIGKILL) and reaped on drop.
pub struct ControlProcess {
    child: Arc<Mutex<Child>>,
    pub(crate) pid: u32,
    pub(crate) grpc: SocketAddr,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// How it was started, for [`ControlProcess::restart`].
    launch: Launch,
}

/// The command line of the child.
struct Launch {
    bin: PathBuf,
    store: Vec<String>,
    env: Vec<(String, String)>,
}

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    /// Proportional set size (shared pages divided among their users); `None` when
    /// smaps_rollup is unavailable.
    pub(crate) pss: Option<u64>,
}

impl ControlProcess {
    /// Starts it on free loopback ports; returns once `/ready` answers 200. A watchdog
    /// thread kills it (and exits) should the bench overrun `deadline` by 15 s.
    pub async fn start(
        bin: &Path,
        store: &[&str],
        env: &[(String, String)],
        deadline: Instant,
    ) -> anyhow::Result<ControlProcess> {
        let launch = Launch {
            bin: bin.to_path_buf(),
            store: store.iter().map(|s| s.to_string()).collect(),
            env: env.to_vec(),
        };
        let child = launch.spawn(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        // From here on the guard kills the child on every exit path.
        let mut control = ControlProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            tail: Arc::new(Mutex::new(VecDeque::new())),
            launch,
        };
        let watched = Arc::clone(&control.child);
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(Duration::from_secs(15));
            eprintln!("error: watchdog: the bench overran its timeout");
            kill(&watched);
            std::process::exit(124);
        });
        control.await_ready().await?;
        Ok(control)
    }

    /// Kills it (SIGKILL: no goodbye to its streams) and starts it again on the same
    /// gRPC port, with an empty memory store; returns once `/ready` answers 200.
    pub(crate) async fn restart(&mut self) -> anyhow::Result<()> {
        kill(&self.child);
        let child = self.launch.spawn(self.grpc)?;
        self.pid = child.id();
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = child;
        self.await_ready().await
    }

    /// Drains the current child's log and waits until it listens and is ready.
    async fn await_ready(&mut self) -> anyhow::Result<()> {
        let stderr = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stderr
            .take()
            .context("child stderr")?;
        let (addrs_tx, addrs_rx) = oneshot::channel();
        let log_tail = Arc::clone(&self.tail);
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
        let (grpc, http) = tokio::time::timeout(Duration::from_secs(20), addrs_rx)
            .await
            .map_err(|_| anyhow!("graylane-control did not log its addresses within 20s"))?
            .map_err(|_| anyhow!("graylane-control exited early:\n{}", self.tail()))?;
        self.grpc = grpc;
        let ready_by = Instant::now() + Duration::from_secs(20);
        while !ready(http).await {
            ensure!(
                Instant::now() < ready_by,
                "graylane-control not ready within 20s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The last (up to 40) lines of its log, each ending in a newline.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().map(|l| format!("{l}\n")).collect()
    }
}

impl Launch {
    fn spawn(&self, grpc: SocketAddr) -> anyhow::Result<Child> {
        Command::new(&self.bin)
            .arg("--store")
            .args(&self.store)
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .args(["--http-addr", "127.0.0.1:0"])
            .env_remove("GRAYLANE_LOG")
            .env_remove("GRAYLANE_TOKEN_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        kill(&self.child);
    }
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

/// The memory of process `pid`: RSS and PSS from `/proc/PID/smaps_rollup`, else RSS
/// alone from `/proc/PID/status`.
pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
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

/// CPU time (user + system) of `pid` so far.
pub fn cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime is the 12th.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Ok(Duration::from_millis(
        fields.iter().sum::<u64>() * 1000 / ticks.max(1),
    ))
}
