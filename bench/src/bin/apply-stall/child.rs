//! A release-built graylane process as a child of the bench: its output goes to a log
//! file, its listen addresses are read back from that log, and it is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running child, killed (SIGKILL) and reaped on drop, so every exit path of the
/// bench (error, timeout, panic, Ctrl-C) leaves nothing behind.
pub(crate) struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `bin args` with stdout and stderr in `dir/<name>.log`.
    pub(crate) fn spawn(name: &str, bin: &Path, args: &[&str], dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            // Info level: the sidecar and the control plane log their addresses there.
            .env("GRAYLANE_LOG", "info")
            .env_remove("GRAYLANE_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// The addresses after each of `keys` (`admin_addr=`) in the log, once all are
    /// there; fails if the child exits or 20 s pass first.
    pub(crate) async fn addresses(&mut self, keys: &[&str]) -> anyhow::Result<Vec<SocketAddr>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log_text();
            let found: Option<Vec<_>> = keys.iter().map(|k| field(&text, k)).collect();
            if let Some(found) = found {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.name, self.tail());
            }
            if Instant::now() > deadline {
                bail!("{} did not log {keys:?} within 20 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for error reports.
    pub(crate) fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `SocketAddr` after `key` in a log (e.g. `grpc_addr=127.0.0.1:4321`).
fn field(text: &str, key: &str) -> Option<SocketAddr> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}
