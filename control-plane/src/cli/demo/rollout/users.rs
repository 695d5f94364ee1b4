//! The demo's users during act two: 200 distinct `x-user-id`s asking the frontend,
//! each about every 2 s, from a few threads; and what each of them saw last (in the
//! lane or not, orders v1 or v2).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::procs::get;

/// Distinct users (`x-user-id: user-0` .. `user-199`).
pub(super) const USERS: usize = 200;
/// Threads asking, each one request at a time: enough that the rate holds when a
/// loaded machine makes answers slow.
const WORKERS: usize = 8;
/// A worker's pace: 8 workers × 12.5 requests/s = 100 requests/s, each user every 2 s,
/// so at 10% the lane gets ~20 requests a second (two hops report each request).
const PACE: Duration = Duration::from_millis(80);

/// One user's latest answer.
#[derive(Clone, Copy, Debug)]
struct Answer {
    /// When the request was sent.
    at: Instant,
    /// The frontend got the request tagged `gray`.
    lane: bool,
    /// orders v2 answered (whatever its status).
    v2: bool,
}

/// What the users saw over a span of time: each user counted once, by their latest
/// answer.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Share {
    pub(super) users: usize,
    pub(super) in_lane: usize,
    pub(super) on_v2: usize,
}

impl Share {
    /// `21 of 200 users (10.5%)`.
    pub(super) fn lane_text(&self) -> String {
        #[allow(clippy::cast_precision_loss)] // at most 200 users
        let pct = 100.0 * self.in_lane as f64 / self.users.max(1) as f64;
        format!("{} of {} users ({pct:.1}%)", self.in_lane, self.users)
    }
}

/// The users, asking until dropped.
pub(super) struct Users {
    stop: Arc<AtomicBool>,
    latest: Arc<Mutex<Vec<Option<Answer>>>>,
    /// When the newest request that orders v2 answered was sent.
    last_v2: Arc<Mutex<Option<Instant>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Users {
    /// Starts asking `entry` (the frontend's sidecar).
    pub(super) fn start(entry: SocketAddr) -> Users {
        let stop = Arc::new(AtomicBool::new(false));
        let latest = Arc::new(Mutex::new(vec![None; USERS]));
        let last_v2 = Arc::new(Mutex::new(None));
        let threads = (0..WORKERS)
            .map(|worker| {
                let (stop, latest, last_v2) =
                    (Arc::clone(&stop), Arc::clone(&latest), Arc::clone(&last_v2));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        for user in (worker..USERS).step_by(WORKERS) {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let at = Instant::now();
                            if let Some(answer) = ask(entry, user, at) {
                                if answer.v2 {
                                    *lock(&last_v2) = Some(at);
                                }
                                lock(&latest)[user] = Some(answer);
                            }
                            // Pacing, not synchronisation: a steady rate of requests.
                            std::thread::sleep(PACE.saturating_sub(at.elapsed()));
                        }
                    }
                })
            })
            .collect();
        Users {
            stop,
            latest,
            last_v2,
            threads,
        }
    }

    /// The users whose latest request was sent after `since`.
    pub(super) fn since(&self, since: Instant) -> Share {
        let latest = lock(&self.latest);
        let mut share = Share::default();
        for answer in latest.iter().flatten().filter(|a| a.at >= since) {
            share.users += 1;
            share.in_lane += usize::from(answer.lane);
            share.on_v2 += usize::from(answer.v2);
        }
        share
    }

    /// When the newest request orders v2 answered was sent.
    pub(super) fn last_v2(&self) -> Option<Instant> {
        *lock(&self.last_v2)
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A poisoned lock still holds plain data worth reading.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One user's request, and who answered it; `None` if the frontend did not answer.
fn ask(entry: SocketAddr, user: usize, at: Instant) -> Option<Answer> {
    let id = format!("user-{user}");
    let (status, _, body) = get(entry, "/", &[("x-user-id", &id)]).ok()?;
    if status != 200 {
        return None;
    }
    let frontend: Value = serde_json::from_str(&body).ok()?;
    Some(Answer {
        at,
        lane: frontend["tag"].as_str() == Some("gray"),
        v2: orders_version(&frontend["downstream"]).as_deref() == Some("v2"),
    })
}

/// The version of orders that answered: from its body, or, when it answered with an
/// error status, from the body the frontend relays as `error`.
pub(super) fn orders_version(orders: &Value) -> Option<String> {
    if let Some(v) = orders["version"].as_str() {
        return Some(v.to_string());
    }
    let relayed: Value = serde_json::from_str(orders["error"].as_str()?).ok()?;
    relayed["version"].as_str().map(str::to_string)
}
