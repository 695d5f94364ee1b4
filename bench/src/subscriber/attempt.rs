//! Every connection attempt of the reconnecting subscribers, timed, for the storm's
//! timeline (`storm::timeline`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How one connection attempt of a subscriber ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// TCP connect refused: nothing listening (the control plane is down).
    Refused,
    /// The connect (TCP + HTTP/2 handshake) did not finish within `CONNECT_TIMEOUT`.
    TimedOut,
    /// Connected, but the connect or Subscribe failed otherwise (reset, status).
    Failed,
    /// The stream was open and ended; `true` if it delivered a snapshot first.
    Ended(bool),
    /// Not an end: Subscribe answered (the response headers came) at `ended`.
    Opened,
}

/// One connection attempt, for the storm's timeline (`ATTEMPTS`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt {
    pub(crate) idx: usize,
    pub(crate) started: Instant,
    /// When the TCP + HTTP/2 connect finished, if it did.
    pub(crate) connected: Option<Instant>,
    pub(crate) ended: Instant,
    pub(crate) outcome: Outcome,
    /// The backoff wait chosen after it.
    pub(crate) wait: Duration,
}

/// Every subscriber's connection attempts (reconnecting subscribers only), in the
/// order they ended: what `storm` reads its timeline from. A few per subscriber.
pub(crate) static ATTEMPTS: Mutex<Vec<Attempt>> = Mutex::new(Vec::new());
/// Failures printed so far (`outcome`).
static FAILURES_SHOWN: AtomicUsize = AtomicUsize::new(0);

/// Adds one attempt to `ATTEMPTS`.
pub(super) fn record(attempt: Attempt) {
    ATTEMPTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(attempt);
}

/// How attempt `conn` of subscriber `idx` ended; the first few failures after the
/// first connection are printed, to tell what they were.
pub(super) fn outcome(
    idx: usize,
    conn: u32,
    result: &anyhow::Result<bool>,
    connected: Option<Instant>,
) -> Outcome {
    let outcome = match (result, connected) {
        (Ok(delivered), _) => Outcome::Ended(*delivered),
        (Err(e), None) => connect_outcome(e),
        (Err(_), Some(_)) => Outcome::Failed,
    };
    if let (Err(e), Outcome::Failed, true) = (result, outcome, conn > 1)
        && FAILURES_SHOWN.fetch_add(1, Ordering::Relaxed) < 5
    {
        eprintln!("subscriber {idx}, connection {conn}: {e:#}");
    }
    outcome
}

/// Refused or timed out, told apart by the io error under tonic's.
fn connect_outcome(e: &anyhow::Error) -> Outcome {
    for cause in e.chain() {
        if cause.is::<tokio::time::error::Elapsed>() {
            return Outcome::TimedOut;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
                std::io::ErrorKind::TimedOut => return Outcome::TimedOut,
                _ => {}
            }
        }
    }
    let text = format!("{e:#}");
    if text.contains("timed out") {
        Outcome::TimedOut
    } else if text.contains("refused") {
        Outcome::Refused
    } else {
        Outcome::Failed
    }
}
