//! The results as one row of a Markdown table, kept beside the rows of earlier runs
//! under other labels (so "before" and "after" a change sit in one table).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::load::Sample;

/// The heading of this benchmark's section in bench/README.md.
pub(crate) const SECTION: &str = "## Snapshot apply stall (sidecar, --concurrency 1)";

const HEADER: &str = "| run | requests without / during applies | without applies: p50 / p99 / p99.9 / max | during applies: p50 / p99 / p99.9 / max | slowest request of each apply, median / max | apply → sidecar holds it, p50 / max | apply → ACK, p50 / max | Apply RPC, p50 |\n|---|---|---|---|---|---|---|---|";

/// Everything one run measured.
pub(crate) struct Results {
    pub(crate) label: String,
    pub(crate) documents: usize,
    pub(crate) rules_bytes: usize,
    pub(crate) connections: usize,
    /// Latencies of requests started in the quiet window and in an apply window.
    pub(crate) without: Vec<Duration>,
    pub(crate) during: Vec<Duration>,
    /// The slowest request started in each apply's window.
    pub(crate) worst: Vec<Duration>,
    pub(crate) holds: Vec<Duration>,
    pub(crate) acked: Vec<Duration>,
    pub(crate) rpc: Vec<Duration>,
    pub(crate) baseline: Duration,
}

/// Splits samples by start time: in `quiet` (from, to) or in one of `windows`.
pub(crate) fn split(
    samples: &[Sample],
    quiet: (Duration, Duration),
    windows: &[(Duration, Duration)],
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut without, mut during) = (Vec::new(), Vec::new());
    for s in samples {
        if s.start >= quiet.0 && s.start < quiet.1 {
            without.push(s.latency);
        } else if windows.iter().any(|w| s.start >= w.0 && s.start < w.1) {
            during.push(s.latency);
        }
    }
    (without, during)
}

/// Nearest rank: the smallest value with at least `per_mille`‰ of the sample at or below.
fn quantile(sorted: &[Duration], per_mille: usize) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    sorted[(per_mille * n).div_ceil(1000).clamp(1, n) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// "p50 / p99 / p99.9 / max" of a latency sample, in ms.
fn latencies(sample: &mut [Duration]) -> String {
    sample.sort();
    let max = sample.last().copied().unwrap_or_default();
    format!(
        "{} / {} / {} / {} ms",
        ms(quantile(sample, 500)),
        ms(quantile(sample, 990)),
        ms(quantile(sample, 999)),
        ms(max)
    )
}

fn median_max(sample: &mut [Duration]) -> String {
    sample.sort();
    let max = sample.last().copied().unwrap_or_default();
    format!("{} / {} ms", ms(quantile(sample, 500)), ms(max))
}

/// This run's table row.
pub(crate) fn row(r: &mut Results) -> String {
    format!(
        "| {} | {} / {} | {} | {} | {} | {} | {} | {} ms |",
        r.label,
        r.without.len(),
        r.during.len(),
        latencies(&mut r.without),
        latencies(&mut r.during),
        median_max(&mut r.worst),
        median_max(&mut r.holds),
        median_max(&mut r.acked),
        ms({
            r.rpc.sort();
            quantile(&r.rpc, 500)
        }),
    )
}

/// The whole section: method, the rows of earlier runs under other labels in
/// `readme` (if any), this run's row, the command.
pub(crate) fn section(
    r: &Results,
    this_row: &str,
    readme: Option<&Path>,
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    let _ = writeln!(
        s,
        "Method: `apply-stall` starts the release-built `graylane-control --store memory:`, a \
         `graylane-demo-app` and a `graylane-sidecar --concurrency 1 --cache-dir DIR \
         --otlp-endpoint none` in front of it, all on loopback. It applies a rule set of {} \
         documents ({} KiB of YAML: one Lane whose tag changes with every apply, 9 fixed Lanes, \
         RoutePolicies like `deploy/rules/gray-release.yaml`'s) and waits until the sidecar \
         holds it. Then {} keep-alive HTTP/1.1 connections send GETs through the sidecar's \
         inbound listener in a closed loop. After 1 s of warm-up, requests started during {} s \
         without applies are the baseline; then each apply of the whole set (Admin gRPC Apply) \
         opens a window from just before the RPC until the control plane has the sidecar's ACK \
         (WatchRollout), and requests started inside a window count as \"during applies\"; the slowest of \
         those is also taken per apply, so one hiccup of the shared machine cannot pass for \
         a stall that every apply causes. \
         \"Holds it\" is when the sidecar's `/ready` (which names the revision; `/config` would \
         itself serialise the whole rule set on the serving thread) first shows the revision; \
         the ACK follows the cache write. Percentiles are nearest-rank; latencies in ms.\n",
        r.documents,
        r.rules_bytes / 1024,
        r.connections,
        r.baseline.as_secs(),
    );
    let _ = writeln!(s, "{HEADER}");
    let label_cell = format!("| {} |", r.label);
    if let Some(path) = readme {
        for old in earlier_rows(path)? {
            if !old.starts_with(&label_cell) {
                let _ = writeln!(s, "{old}");
            }
        }
    }
    let _ = writeln!(s, "{this_row}");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        s,
        "\n{cpus} CPUs shared by the bench, the sidecar, the app and the control plane (no \
         pinning). Command (after `cargo build --release --workspace --bins`):\n\n```sh\n\
         target/release/apply-stall {}\n```",
        args.join(" ")
    );
    Ok(s)
}

/// The data rows of this section in `path`, if it has one.
fn earlier_rows(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let Some(start) = text.find(SECTION) else {
        return Ok(Vec::new());
    };
    let body = &text[start + SECTION.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    Ok(body
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| run |"))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let sample: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(quantile(&sample, 999), Duration::from_millis(999));
        assert_eq!(quantile(&sample, 500), Duration::from_millis(500));
        assert_eq!(quantile(&sample[..10], 999), Duration::from_millis(10));
    }
}
