//! The results as a Markdown section, and writing it into `bench/README.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::control::Memory;
use crate::fanout::{Plan, SETTLE};
use crate::stats::Stats;
use crate::storm::Storm;

const SECTION: &str = "## Push fan-out (control plane)";
/// Runs above this many subscribers have their own section, and the 1 s target of
/// issue 15 instead of 100 ms.
const LARGE: usize = 1000;

/// The heading of a run with `n` subscribers.
pub(crate) fn section(n: usize) -> String {
    if n > LARGE {
        // Digits grouped as the README writes them ("10,000"), so a run replaces the
        // section it measured.
        let digits = n.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("## Push fan-out at {grouped} sidecars (control plane)")
    } else {
        SECTION.to_string()
    }
}

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
    pub(crate) storm: Option<Storm>,
    /// A new sidecar's first snapshot, encoded.
    pub(crate) snapshot_bytes: usize,
    /// Scoped runs: the same sidecar's first snapshot unscoped (every endpoint).
    pub(crate) unscoped_bytes: Option<usize>,
    pub(crate) churn: Churn,
}

/// One instance joining a settled mesh (`fanout::churn`).
pub(crate) struct Churn {
    /// Subscribers sent a snapshot for it.
    pub(crate) sent: usize,
    /// From its Hello until every sidecar was recorded as holding it.
    pub(crate) took: Duration,
}

/// The README section: heading, method, results table (with targets), machine.
pub(crate) fn report(plan: &Plan, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", section(plan.subscribers));
    method(&mut s, plan, r.storm.is_some());
    table(&mut s, plan, r);
    if let Some(storm) = &r.storm {
        storm_rows(&mut s, plan.subscribers, storm);
    }
    machine(&mut s, r.nofile);
    s
}

/// Replaces (or adds) the results section of `path`, keeping everything else; creates
/// the file (with a short preamble) if it is missing.
pub fn write_section(path: &Path, subscribers: usize, text: &str) -> anyhow::Result<()> {
    write_named_section(path, &section(subscribers), text)
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

fn method(s: &mut String, plan: &Plan, storm: bool) {
    let n = plan.subscribers;
    let _ = writeln!(
        s,
        "Method: `push-fanout` starts the release-built `graylane-control --store memory:` as \
         a child process and connects {n} subscribers from its own (tokio) process on the same \
         machine, each on its own HTTP/2 connection with a distinct instance id ({}); \
         each says Hello and ACKs every snapshot, like a sidecar. Once every subscriber holds \
         a snapshot listing {} and the control plane has recorded every ACK \
         (ListSidecars), the control plane's memory is read from `/proc/PID/smaps_rollup` and \
         compared with the reading taken before any stream connected (both after a {SETTLE:?} \
         pause). Then each apply (one `Lane` document whose tag changes) is timed from just \
         before the Apply RPC to the moment the last subscriber has decoded a snapshot carrying \
         the new revision; WatchRollout then waits for all {n} ACKs before the next apply. The \
         first {} applies are warm-up and not counted; percentiles are nearest-rank over the {} \
         measured applies{}.\n",
        mesh_text(plan),
        match plan.mesh.calls {
            None => format!("all {n} endpoints"),
            Some(_) => "every endpoint of its scope".to_string(),
        },
        plan.warmup,
        plan.applies,
        if plan.applies < 100 {
            " (below 100 applies, p99 is the slowest one)"
        } else {
            ""
        }
    );
    if storm {
        let _ = writeln!(
            s,
            "Connection storm (`--storm`): the subscribers reconnect when their stream ends, \
             after the sidecar's own jittered backoff (100 ms doubling to 5 s, ±50 %), with a \
             new Hello and no connect gate. After the applies, graylane-control is killed \
             (SIGKILL) and started again on the same gRPC port with an empty memory store; the \
             clock starts at the kill. \"Holds a snapshot of the new process\" is a subscriber's \
             first complete snapshot on a stream opened after the kill; \"converged\" is when \
             every subscriber's endpoint set lists all {n} instances again.\n"
        );
    }
}

fn table(s: &mut String, plan: &Plan, r: &Results) {
    let n = plan.subscribers;
    let rss_per = per_stream(r.before.rss, r.idle.rss, n);
    let p99 = r.fanout.pct(99);
    let target = if n > LARGE {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(100)
    };
    let _ = writeln!(s, "| metric | result | target |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| apply → all {n} subscribers hold the revision, p50 / p99 / max | {} / {} / {} | p99 ≤ {target:?}: {} |",
        ms(r.fanout.pct(50)),
        ms(p99),
        ms(r.fanout.max()),
        verdict(p99 <= target)
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
        "| connect {n} subscribers until all saw every endpoint of their scope | {:.1} s ({} snapshots received) | |",
        r.settled.as_secs_f64(),
        r.setup_snapshots
    );
    let _ = writeln!(
        s,
        "| a new sidecar's first snapshot ({}), encoded | {:.1} KiB ({} bytes per mesh endpoint) | |",
        match plan.mesh.calls {
            None => format!("rules + {n} endpoints"),
            Some(k) => format!("scoped to {} services + the directory", k + 1),
        },
        r.snapshot_bytes as f64 / 1024.0,
        r.snapshot_bytes / n.max(1)
    );
    let _ = writeln!(
        s,
        "| one more instance of a service joins: subscribers sent a snapshot / until all hold it | {} of {n} / {} | |",
        r.churn.sent,
        ms(r.churn.took)
    );
    if let Some(all) = r.unscoped_bytes {
        let _ = writeln!(
            s,
            "| the same sidecar's first snapshot unscoped (rules + {n} endpoints), encoded | {:.1} KiB (scoped: {:.1}× smaller) | |",
            all as f64 / 1024.0,
            all as f64 / r.snapshot_bytes.max(1) as f64
        );
    }
}

/// The mesh shape as the method text says it.
fn mesh_text(plan: &Plan) -> String {
    let services = plan.mesh.services;
    match plan.mesh.calls {
        None => format!("{services} services; unscoped: every subscriber gets every endpoint"),
        Some(k) => format!(
            "{services} services; scoped (`Hello.scope`, issue 15): each subscriber asks for its own service's endpoints and those of the {k} services after it, plus the directory"
        ),
    }
}

fn storm_rows(s: &mut String, n: usize, storm: &Storm) {
    let _ = writeln!(
        s,
        "| streams that ended and reconnected before the kill / streams that came back and dropped again | {} / {} | |",
        storm.dropped_before, storm.dropped_during
    );
    let _ = writeln!(
        s,
        "| connection storm: kill -9, restart on the same port → `/ready` | {:.2} s | |",
        storm.ready.as_secs_f64()
    );
    let all_back = storm.back == n;
    let _ = writeln!(
        s,
        "| connection storm: kill → each subscriber holds a snapshot of the new process, p50 / p99 / max ({} of {n} back) | {:.2} s / {:.2} s / {:.2} s | all ≤ 10 s: {} |",
        storm.back,
        storm.snapshot.pct(50).as_secs_f64(),
        storm.snapshot.pct(99).as_secs_f64(),
        storm.snapshot.max().as_secs_f64(),
        verdict(all_back && storm.snapshot.max() <= Duration::from_secs(10))
    );
    let converged = match storm.converged {
        Some(t) => format!("{:.2} s", t.as_secs_f64()),
        None => format!("not within the bench's bound ({} of {n} did)", storm.full),
    };
    let _ = writeln!(
        s,
        "| connection storm: kill → all {n} list every endpoint (of their scope) again | {converged} ({} snapshots received) | ≤ 10 s: {} |",
        storm.snapshots,
        verdict(
            storm
                .converged
                .is_some_and(|t| t <= Duration::from_secs(10))
        )
    );
    let _ = writeln!(
        s,
        "| control-plane RSS after the storm, {n} streams | {} | |",
        mib(storm.memory.rss)
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

#[cfg(test)]
mod tests {
    use super::section;

    #[test]
    fn large_runs_have_their_own_section_named_as_the_readme_writes_it() {
        assert_eq!(section(1000), "## Push fan-out (control plane)");
        assert_eq!(
            section(10_000),
            "## Push fan-out at 10,000 sidecars (control plane)"
        );
        assert_eq!(
            section(3000),
            "## Push fan-out at 3,000 sidecars (control plane)"
        );
        assert_eq!(
            section(123_456),
            "## Push fan-out at 123,456 sidecars (control plane)"
        );
    }
}
