//! Where a storm's time went, from every subscriber's connection attempts
//! (`subscriber::ATTEMPTS`): printed to stderr, not part of the report.
//!
//! ```text
//!  kill ─► stream ends (seen by the subscriber) ─► backoff ─► attempt: refused / reset
//!       ─► ... ─► attempt: TCP connected ─► Subscribe answered ─► first snapshot (back)
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::subscriber::{Attempt, Outcome};

/// Prints connection attempts per second by outcome, how many failed attempts each
/// subscriber had, how its time after the restart split between backoff and the
/// server, and the whole timeline of the slowest subscriber.
pub(super) fn timeline(
    t0: Instant,
    ready: Duration,
    attempts: &[Attempt],
    first: &[Option<Duration>],
    full_at: &[Option<Duration>],
) {
    per_second(t0, ready, attempts, first);
    let mut per_sub: Vec<Vec<&Attempt>> = vec![Vec::new(); first.len()];
    for a in attempts.iter().filter(|a| a.idx < first.len()) {
        per_sub[a.idx].push(a);
    }
    split(t0, ready, &per_sub, first);
    let slowest = (0..first.len()).max_by_key(|i| full_at[*i].max(first[*i]));
    if let Some(idx) = slowest {
        eprintln!(
            "storm: slowest subscriber {idx}: back {:?}, full {:?}; its attempts:",
            first[idx].map(|d| d.as_secs_f64()),
            full_at[idx].map(|d| d.as_secs_f64())
        );
        let at = |i: Instant| i.saturating_duration_since(t0).as_secs_f64();
        for a in &per_sub[idx] {
            eprintln!(
                "  {:.3} s → {:?} at {:.3} s (TCP connected {:?}), then waits {:.3} s",
                at(a.started),
                a.outcome,
                at(a.ended),
                a.connected.map(at),
                a.wait.as_secs_f64()
            );
        }
    }
}

/// The whole second of `d` (a storm is bounded to minutes).
fn second(d: Duration) -> usize {
    usize::try_from(d.as_secs()).unwrap_or(usize::MAX)
}

/// Per second from the kill: attempts ended by outcome, TCP connects of the attempts
/// that came back, Subscribe answers, subscribers back.
fn per_second(t0: Instant, ready: Duration, attempts: &[Attempt], first: &[Option<Duration>]) {
    let since = |at: Instant| at.saturating_duration_since(t0);
    let slots = (attempts.iter().map(|a| second(since(a.ended))))
        .chain(first.iter().flatten().map(|d| second(*d)))
        .max()
        .map_or(0, |s| s.saturating_add(1))
        .min(3_600);
    let mut rows = vec![[0_u32; 8]; slots];
    let mut count = |at: Duration, column: usize| {
        if let Some(row) = rows.get_mut(second(at)) {
            row[column] += 1;
        }
    };
    for a in attempts {
        let column = match a.outcome {
            Outcome::Refused => 0,
            Outcome::TimedOut => 1,
            Outcome::Failed => 2,
            Outcome::Ended(true) => 3,
            Outcome::Ended(false) => 4,
            Outcome::Opened => 6,
        };
        count(since(a.ended), column);
        if let (Outcome::Opened, Some(at)) = (a.outcome, a.connected) {
            count(since(at), 5);
        }
    }
    for d in first.iter().flatten() {
        count(*d, 7);
    }
    eprintln!(
        "storm timeline (ready after {:.2} s), per second from the kill \
         (failed: the old stream's end, or a reset; ended+/-: a new stream ended after / before \
         its first snapshot):",
        ready.as_secs_f64()
    );
    eprintln!("   s  refused timedout failed ended+ ended- tcp-conn opened back");
    for (s, r) in rows.iter().enumerate() {
        eprintln!(
            "{s:>4} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8} {:>6} {:>4}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
        );
    }
}

/// Each subscriber's failed attempts before it was back, and its time after the
/// restart split: waiting in backoff after the server was ready; attempt start → TCP
/// connected → Subscribe answered (the server's accept queue, HTTP/2, Hello) → first
/// snapshot.
fn split(t0: Instant, ready: Duration, per_sub: &[Vec<&Attempt>], first: &[Option<Duration>]) {
    let since = |at: Instant| at.saturating_duration_since(t0);
    let mut failures = BTreeMap::<usize, usize>::new();
    let mut lists: [(&str, Vec<Duration>); 5] = [
        ("after ready, waiting in backoff", Vec::new()),
        ("last attempt start → back", Vec::new()),
        ("attempt start → TCP connected", Vec::new()),
        ("TCP connected → Subscribe answered", Vec::new()),
        ("Subscribe answered → first snapshot", Vec::new()),
    ];
    for (attempts, back) in per_sub.iter().zip(first) {
        let Some(back) = *back else { continue };
        let done = |a: &&&Attempt| since(a.ended) <= back;
        let failed: Vec<&&Attempt> = (attempts.iter().filter(done))
            .filter(|a| !matches!(a.outcome, Outcome::Ended(true) | Outcome::Opened))
            .collect();
        *failures.entry(failed.len()).or_default() += 1;
        if let Some(last) = failed.last() {
            let retry = since(last.ended) + last.wait;
            lists[0]
                .1
                .push(retry.saturating_sub(ready.max(since(last.ended))));
            lists[1].1.push(back.saturating_sub(retry));
        }
        let opened = (attempts.iter().filter(done)).rfind(|a| a.outcome == Outcome::Opened);
        if let Some(o) = opened
            && let Some(c) = o.connected
        {
            lists[2].1.push(c.saturating_duration_since(o.started));
            lists[3].1.push(o.ended.saturating_duration_since(c));
            lists[4].1.push(back.saturating_sub(since(o.ended)));
        }
    }
    eprintln!("storm: failed attempts before back → subscribers: {failures:?}");
    for (what, mut v) in lists {
        v.sort();
        let pct = |p: usize| {
            v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
                .map_or(0.0, Duration::as_secs_f64)
        };
        eprintln!(
            "storm: {what}, p50/p90/p99/max {:.3}/{:.3}/{:.3}/{:.3} s",
            pct(50),
            pct(90),
            pct(99),
            pct(100)
        );
    }
}
