//! The results as a Markdown section, and writing it into `bench/README.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::control::Memory;
use crate::fanout::{Plan, SETTLE};
use crate::stats::Stats;

const SECTION: &str = "## Push fan-out (control plane)";

/// Everything one run measured.
pub(crate) struct Results {
    pub(crate) settled: Duration,
    /// Snapshots the subscribers received while connecting (each with endpoints).
    pub(crate) setup_snapshots: u64,
    pub(crate) before: Memory,
    pub(crate) idle: Memory,
    pub(crate) after: Memory,
    pub(crate) fanout: Stats,
    pub(crate) first: Stats,
    pub(crate) rpc: Stats,
    pub(crate) nofile: u64,
}

/// The README section: heading, method, results table (with targets), machine.
pub(crate) fn report(plan: &Plan, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    method(&mut s, plan);
    table(&mut s, plan.subscribers, r);
    machine(&mut s, r.nofile);
    s
}

/// Replaces (or adds) the results section of `path`, keeping everything else; creates
/// the file (with a short preamble) if it is missing.
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    write_named_section(path, SECTION, section)
}

/// Replaces the section that starts with `heading` in `path` (or appends it).
pub fn write_named_section(path: &Path, heading: &str, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# graylane benchmarks\n\nEach benchmark runs the release-built binaries as \
             processes on one machine; the numbers below are its last run.\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let new = match old.find(heading) {
        Some(start) => {
            let after = start + heading.len();
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

fn method(s: &mut String, plan: &Plan) {
    let n = plan.subscribers;
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
        plan.warmup,
        plan.applies,
        if plan.applies < 100 {
            " (below 100 applies, p99 is the slowest one)"
        } else {
            ""
        }
    );
}

fn table(s: &mut String, n: usize, r: &Results) {
    let rss_per = per_stream(r.before.rss, r.idle.rss, n);
    let p99 = r.fanout.pct(99);
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
}

fn machine(s: &mut String, nofile: u64) {
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

    let _ = writeln!(
        s,
        "\nMachine: {cpus} CPUs ({cpu}), Linux {kernel}; the bench and the control plane share \
         them (RLIMIT_NOFILE {nofile}). Command (after `cargo build --release --workspace --bins`):\n\n\
         ```sh\n{command}\n```"
    );
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
