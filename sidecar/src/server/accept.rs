//! The one accept loop of the sidecar's listeners: a connection limit, and a backoff
//! when accepting fails, so a process at its open-file limit neither spins nor floods
//! its log.
//!
//! `accept(2)` fails for reasons that last (EMFILE/ENFILE: no file descriptor left;
//! ENOBUFS/ENOMEM) and for ones that do not (ECONNABORTED: the client left first).
//! Retrying a lasting failure at once burns a core, as every accept wakes at once
//! again; so each failure in a row doubles a pause (1 ms up to 1 s, as Go's net/http
//! and linkerd2-proxy do), connections already open go on being served meanwhile,
//! and the log says so once a second, with the count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Connections;

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Accepts connections on one listener within its connection limit.
pub(crate) struct Acceptor {
    listener: TcpListener,
    /// One permit per open connection: `--max-connections`.
    permits: Arc<Semaphore>,
    counters: Arc<Connections>,
    pause: Duration,
    failures_unlogged: u64,
    last_log: Option<Instant>,
}

/// An accepted connection, with the permit it holds until dropped.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, max: usize, counters: Arc<Connections>) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max)),
            counters,
            pause: Duration::ZERO,
            failures_unlogged: 0,
            last_log: None,
        }
    }

    /// The next connection within the limit. Connections over the limit are closed at
    /// once (Envoy's overload behaviour: a client told "no" at once can retry
    /// elsewhere, one left in the backlog only times out) and counted. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Accepted {
        loop {
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.pause = Duration::ZERO;
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    };
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    return Accepted {
                        stream,
                        peer,
                        permit,
                    };
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
        self.failures_unlogged += 1;
        self.pause = (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE);
        let now = Instant::now();
        if self.last_log.is_none_or(|at| now - at >= LOG_EVERY) {
            tracing::warn!(
                error = %e,
                failures = self.failures_unlogged,
                pause = ?self.pause,
                "accept failed; backing off (open connections are still served)"
            );
            self.failures_unlogged = 0;
            self.last_log = Some(now);
        }
    }
}
