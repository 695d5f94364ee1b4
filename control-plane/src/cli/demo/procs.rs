//! The demo's child processes: started from the binaries next to `graylane`, each
//! with a log file, killed when the demo ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::CliError;

/// The sidecar image's allocator setting (`deploy/docker/sidecar.Dockerfile`): the
/// demo's processes run as the image runs them.
pub(super) const GLIBC_TUNABLES: &str = "glibc.malloc.tcache_count=256";

/// A child process, killed on drop.
pub(super) struct Proc {
    pub(super) name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `binary` (a sibling of the running `graylane`) with `args`, output to
    /// `dir/<name>.log`.
    pub(super) fn start(
        dir: &Path,
        name: &str,
        binary: &str,
        args: &[&str],
        stdin: bool,
    ) -> Result<Proc, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::unavailable(format!("cannot find graylane itself: {e}")))?;
        let path = exe.with_file_name(binary);
        if !path.exists() {
            return Err(CliError::unavailable(format!(
                "{} not found next to graylane: build the workspace (cargo build --release --bins)",
                path.display()
            )));
        }
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .map_err(|e| CliError::unavailable(format!("{}: {e}", log.display())))?;
        let out = file
            .try_clone()
            .map_err(|e| CliError::unavailable(e.to_string()))?;
        let mut command = Command::new(&path);
        die_with_parent(&mut command);
        let child = command
            .args(args)
            .env("GRAYLANE_LOG", "info")
            .env("GLIBC_TUNABLES", GLIBC_TUNABLES)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(out)
            .stderr(file)
            .spawn()
            .map_err(|e| CliError::unavailable(format!("start {name}: {e}")))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits (up to 20 s) for `key=ADDR` in the log and returns ADDR.
    pub(super) fn address(&mut self, key: &str) -> Result<SocketAddr, CliError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(CliError::unavailable(format!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                )));
            }
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
            {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                return Err(CliError::unavailable(format!(
                    "{} did not start; see {}",
                    self.name,
                    self.log.display()
                )));
            }
            // Polling a log file the child writes: nothing to wait on but the file.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child and waits for it (a new build of it may then take its port).
    pub(super) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Writes a line to the child's standard input.
    pub(super) fn tell(&mut self, line: &str) -> Result<(), CliError> {
        use std::io::Write;
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| CliError::unavailable("no stdin"))?;
        writeln!(stdin, "{line}").map_err(|e| CliError::unavailable(format!("{}: {e}", self.name)))
    }
}

/// The child gets SIGTERM when the demo dies, even by SIGKILL (Linux's parent-death
/// signal), so no mesh outlives it. The signal follows the thread that forked: the
/// CLI runs on one thread (tokio's current-thread runtime), which lives as long as
/// the process.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (prctl, getppid, _exit) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The demo died before prctl took effect: go at once.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(0);
            }
            Ok(())
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.1 GET of `path` (Connection: close): (status, head, body).
pub(super) fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String), CliError> {
    use std::io::{Read, Write};
    let fail = |e: std::io::Error| CliError::unavailable(format!("request to {addr}: {e}"));
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: frontend\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_runs_its_processes_with_the_images_allocator_setting() {
        let dockerfile = include_str!("../../../../deploy/docker/sidecar.Dockerfile");
        let line = format!("ENV GLIBC_TUNABLES={}", super::GLIBC_TUNABLES);
        assert!(
            dockerfile.lines().any(|l| l == line),
            "deploy/docker/sidecar.Dockerfile lacks `{line}`"
        );
    }
}
