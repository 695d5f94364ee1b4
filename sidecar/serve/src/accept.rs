//! Accepting within a connection limit, with a backoff when accepting fails, so a
//! process at its open-file limit neither spins nor floods its log.
//!
//! `accept(2)` fails for reasons that last (EMFILE/ENFILE: no file descriptor left;
//! ENOBUFS/ENOMEM) and for ones that do not (ECONNABORTED: the client left first).
//! Retrying a lasting failure at once burns a core, as every accept wakes at once
//! again; so each failure in a row doubles a pause (about 1 ms up to 1 s, as Go's
//! net/http and linkerd2-proxy do), connections already open go on being served
//! meanwhile, and the log says so once a second, with the count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use graylane_exposition::Sampled;
use graylane_exposition::backoff::Backoff;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Observe;

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Accepts connections on one listener within its connection limit.
pub struct Acceptor {
    listener: TcpListener,
    /// One permit per open connection; a connection returns its permit when dropped.
    permits: Arc<Semaphore>,
    observe: Arc<dyn Observe>,
    backoff: Backoff,
    /// The pause before the next accept: zero after a success.
    pause: Duration,
    log: Sampled,
}

/// An accepted connection, with the permit it holds until dropped.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Keep it as long as the connection is open: dropping it frees a place.
    pub permit: OwnedSemaphorePermit,
}

impl Acceptor {
    /// At most `max` connections open at once (at least one).
    pub fn new(listener: TcpListener, max: usize, observe: Arc<dyn Observe>) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            observe,
            backoff: Backoff::new(FIRST_PAUSE, MAX_PAUSE),
            pause: Duration::ZERO,
            log: Sampled::new(LOG_EVERY),
        }
    }

    /// The next connection within the limit. Connections over the limit are closed at
    /// once (Envoy's overload behaviour) and counted. Cancel-safe: a connection is
    /// never accepted and then lost.
    pub async fn next(&mut self) -> Accepted {
        loop {
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.pause = Duration::ZERO;
                    self.backoff.reset();
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                        self.observe.refused();
                        drop(stream);
                        continue;
                    };
                    self.observe.accepted();
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
        self.observe.accept_failed();
        self.pause = self.backoff.next_wait();
        if let Some(not_logged) = self.log.sample() {
            tracing::warn!(
                error = %e,
                failures = not_logged + 1,
                pause = ?self.pause,
                "accept failed; backing off (open connections are still served)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[derive(Default)]
    struct Count {
        accepted: AtomicU64,
        refused: AtomicU64,
    }

    impl Observe for Count {
        fn accepted(&self) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        fn refused(&self) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn over_the_limit_is_closed_and_a_dropped_permit_frees_a_place() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(Count::default());
        let mut acceptor = Acceptor::new(listener, 1, Arc::clone(&count) as Arc<dyn Observe>);
        let _first = TcpStream::connect(addr).await.unwrap();
        let held = acceptor.next().await;
        // The second waits in the backlog until accepted and refused; the third is
        // then accepted once the first's permit is back.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move { (acceptor.next().await, acceptor) });
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut second, &mut byte).await;
        assert!(matches!(read, Ok(0) | Err(_)), "refused: closed at once");
        assert_eq!(count.refused.load(Ordering::Relaxed), 1);
        drop(held);
        let _third = TcpStream::connect(addr).await.unwrap();
        let (third, _acceptor) = next.await.unwrap();
        assert_eq!(third.peer, _third.local_addr().unwrap());
        assert_eq!(count.accepted.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_limit_of_zero_still_serves_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, 0, Arc::new(()));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = acceptor.next().await;
        assert_eq!(accepted.peer, _client.local_addr().unwrap());
    }
}
