//! Users sending requests through the entry: a few threads that cycle over `user-0`
//! .. `user-N` (each a distinct `x-user-id`), with `Graylane-Debug: 1`, and record
//! which revision the entry routed each request by and which version served each
//! hop. Bounded in time and count; stopped (and joined) on drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use graylane_tests::raw;

/// A driver never runs longer than this, whatever the test does.
const MAX_RUN: Duration = Duration::from_secs(150);
/// Nor sends more than this per thread.
const MAX_REQUESTS: usize = 200_000;

/// One answered request, as the hop trail tells it.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// `None` for a request without `x-user-id`.
    pub(crate) user: Option<usize>,
    pub(crate) status: u16,
    /// The rule revision the entry hop was routed by; 0 when there is no trail.
    pub(crate) revision: u64,
    /// The tag the entry gave the request.
    pub(crate) tag: Option<String>,
    /// The version (`v1`, `v2`) that served orders and payments; `None` when the trail
    /// has no such hop.
    pub(crate) orders: Option<String>,
    pub(crate) payments: Option<String>,
    /// What a failed downstream call answered, as the app that made it relays it.
    pub(crate) failure: Option<String>,
}

impl Sample {
    /// Served by the lane on both hops.
    pub(crate) fn in_lane(&self) -> bool {
        self.tag.as_deref() == Some("gray")
    }

    /// Lane users are v2 on both hops, others v1 on both: never mixed.
    pub(crate) fn consistent(&self) -> bool {
        let want = if self.in_lane() { "v2" } else { "v1" };
        self.orders.as_deref() == Some(want) && self.payments.as_deref() == Some(want)
    }
}

/// Sends one request to the entry `entry` with `headers` (`Name: value` lines).
pub(crate) fn ask(entry: SocketAddr, user: Option<usize>, headers: &str) -> Sample {
    let id = user.map_or(String::new(), |u| format!("x-user-id: user-{u}\r\n"));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: frontend\r\nGraylane-Debug: 1\r\n{id}{headers}Connection: close\r\n\r\n"
    );
    let (status, response) = raw(entry, &request);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let trail = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("graylane-route")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let hops: Vec<BTreeMap<&str, &str>> = trail
        .split(", ")
        .map(|entry| {
            entry
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .collect()
        })
        .collect();
    let version = |service: &str| {
        let hop = hops.iter().find(|h| h.get("service") == Some(&service))?;
        let instance = hop.get("instance")?;
        Some(instance.strip_prefix(&format!("{service}-"))?.to_owned())
    };
    let entry_hop = hops.first();
    Sample {
        at: Instant::now(),
        user,
        status,
        revision: entry_hop
            .and_then(|h| h.get("revision")?.parse().ok())
            .unwrap_or(0),
        tag: entry_hop
            .and_then(|h| h.get("tag"))
            .filter(|t| **t != "-")
            .map(|t| (*t).to_owned()),
        orders: version("orders"),
        payments: version("payments"),
        failure: failure(body),
    }
}

/// The first `{"status": .., "error": ..}` down the demo apps' answer, if any.
fn failure(body: &str) -> Option<String> {
    let mut hop: serde_json::Value = serde_json::from_str(body).ok()?;
    loop {
        let down = hop.get("downstream")?.clone();
        if down.get("error").is_some() {
            return Some(down.to_string());
        }
        hop = down;
    }
}

/// Threads sending requests until dropped.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// `threads` threads share `users` users (thread k sends for users k, k+threads,
    /// ...), one request after another, waiting `pace` between two of a thread.
    pub(crate) fn start(
        entry: SocketAddr,
        users: usize,
        threads: usize,
        pace: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|k| {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mine = (k..users).step_by(threads).cycle().take(MAX_REQUESTS);
                    for user in mine {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_RUN {
                            return;
                        }
                        let sample = ask(entry, Some(user), "");
                        samples.lock().unwrap().push(sample);
                        if !pace.is_zero() {
                            // Pacing the load (test 4 sends little on purpose), not
                            // waiting for anything.
                            std::thread::sleep(pace);
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            samples,
            threads,
        }
    }

    /// Every sample so far, oldest first (per thread).
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops the threads and returns every sample.
    pub(crate) fn stop(mut self) -> Vec<Sample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}
