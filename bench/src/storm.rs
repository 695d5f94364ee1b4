//! The connection storm: kill graylane-control (SIGKILL) under N connected
//! subscribers, start it again on the same port with an empty registry, and time how
//! long until every subscriber holds a snapshot from the new process, and until each
//! one's endpoint set lists all N instances again.
//!
//! ```text
//!  t0 kill ─► restart, /ready ─► N subscribers reconnect (jittered backoff, like
//!  sidecars) ─► each gets a full snapshot on its new stream ─► endpoint deltas until
//!  every subscriber lists all N
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::control::{ControlProcess, Memory, memory};
use crate::fanout::{Connected, SETTLE};
use crate::stats::Stats;
use crate::subscriber::{ATTEMPTS, Outcome, next_event};

mod timeline;

use self::timeline::timeline;

/// The whole storm's bound.
const STORM_TIMEOUT: Duration = Duration::from_secs(180);

/// What the storm measured, from the kill.
pub(crate) struct Storm {
    /// Until the new process answered `/ready`.
    pub(crate) ready: Duration,
    /// Per subscriber back: until its first complete snapshot on the new stream.
    pub(crate) snapshot: Stats,
    /// Until every subscriber lists all N endpoints again; `None`: not within
    /// `STORM_TIMEOUT`.
    pub(crate) converged: Option<Duration>,
    /// Subscribers back (a snapshot of the new process) and listing every endpoint,
    /// when the storm ended.
    pub(crate) back: usize,
    pub(crate) full: usize,
    /// Snapshots received from the kill until converged.
    pub(crate) snapshots: u64,
    /// Streams that ended before the kill (each one a reconnect: a keepalive drop, a
    /// reset), and streams that came back after it and ended again, until converged.
    pub(crate) dropped_before: u64,
    pub(crate) dropped_during: u64,
    /// The new process's memory with every stream back, after a pause.
    pub(crate) memory: Memory,
}

/// Kills and restarts `control` under the `connected` subscribers (which must have
/// been started with `OnEnd::Reconnect`) and waits until they have all converged, or
/// `STORM_TIMEOUT` (then reported as not converged, with how far it got).
pub(crate) async fn storm(
    control: &mut ControlProcess,
    connected: &mut Connected,
) -> anyhow::Result<Storm> {
    let n = connected.subs.revision.len();
    let t0 = Instant::now();
    let deadline = t0 + STORM_TIMEOUT;
    // A reconnect before the kill would be counted as one after it.
    let conn_before = connected.subs.conn.clone();
    ATTEMPTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    control
        .restart()
        .await
        .context("restarting graylane-control")?;
    let ready = t0.elapsed();
    eprintln!("storm: restarted, ready after {ready:.2?}");
    let mut first: Vec<Option<Duration>> = vec![None; n];
    // When each subscriber last went from lacking endpoints to holding them all.
    let mut full_at: Vec<Option<Duration>> = vec![None; n];
    let (mut back, mut snapshots) = (0_usize, 0_u64);
    while back < n || connected.subs.full_endpoints < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = match next_event(connected.events(), left).await {
            Ok(seen) => seen,
            Err(e) if Instant::now() >= deadline => {
                eprintln!("storm: not converged: {e:#}");
                break;
            }
            Err(e) => return Err(e.context(format!("storm: {back} of {n} subscribers back"))),
        };
        snapshots += 1;
        if seen.conn > conn_before[seen.idx] && first[seen.idx].is_none() {
            first[seen.idx] = Some(seen.at - t0);
            back += 1;
            if back.is_multiple_of(1000) {
                eprintln!("storm: {back} of {n} back after {:.2?}", seen.at - t0);
            }
        }
        let was_full = connected.subs.is_full(seen.idx);
        connected.subs.record(&seen);
        if !was_full && connected.subs.is_full(seen.idx) {
            full_at[seen.idx] = Some(seen.at - t0);
        }
    }
    let full = connected.subs.full_endpoints;
    let attempts = std::mem::take(&mut *ATTEMPTS.lock().unwrap_or_else(|e| e.into_inner()));
    timeline(t0, ready, &attempts, &first, &full_at);
    let dropped_before: u64 = conn_before
        .iter()
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum();
    let attempts_during: u64 = (connected.subs.conn.iter().zip(&conn_before))
        .map(|(now, before)| u64::from(now.saturating_sub(*before).saturating_sub(1)))
        .sum();
    // A drop after coming back: a stream opened after the kill that had delivered its
    // snapshot, then ended. (Counting connection attempts instead would count the
    // refused ones while the control plane was down.)
    let dropped_during = (attempts.iter())
        .filter(|a| a.started >= t0 && a.outcome == Outcome::Ended(true))
        .count();
    let dropped_during = u64::try_from(dropped_during)?;
    eprintln!(
        "storm: streams dropped before the kill {dropped_before}; after the kill, \
         connection attempts beyond one per subscriber {attempts_during}, streams that \
         came back and dropped again {dropped_during}"
    );
    let converged = (back == n && full == n).then(|| t0.elapsed());
    eprintln!("storm: converged {converged:.2?}");
    tokio::time::sleep(SETTLE).await;
    Ok(Storm {
        ready,
        snapshot: Stats::of(first.into_iter().flatten().collect()),
        converged,
        back,
        full,
        snapshots,
        dropped_before,
        dropped_during,
        memory: memory(control.pid)?,
    })
}
