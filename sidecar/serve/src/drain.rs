//! The accept loop and the drain: every connection runs in a task of its own, counted,
//! so that shutdown can stop accepting and then wait for the open ones — for at most
//! the drain timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};

use crate::{Acceptor, Limits, Observe};

/// Accepts on `listener` within `limits.max_connections` and runs `connection(stream,
/// peer)` for each in a task of its own, until `shutdown` turns true; then stops
/// accepting and waits for the open connections, at most `limits.drain_timeout`,
/// before returning (the ones still open are then left to end with the runtime).
///
/// `connection` is expected to watch the same `shutdown` and close gracefully when
/// it turns (see [`serve_http`](crate::serve_http)); its connection permit is held
/// until its future completes.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limits: &Limits,
    observe: Arc<dyn Observe>,
    mut shutdown: watch::Receiver<bool>,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Every open connection: the drain waits for them.
    let open = Arc::new(Tracker::default());
    let mut acceptor = Acceptor::new(listener, limits.max_connections, observe);
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.next() => accepted,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        tokio::spawn(Open {
            serving: connection(accepted.stream, accepted.peer),
            _permit: accepted.permit,
            _tracked: Tracker::enter(&open),
        });
    }
    if tokio::time::timeout(limits.drain_timeout, open.idle())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.drain_timeout, "drain timed out; closing remaining connections");
    }
}

pin_project_lite::pin_project! {
    /// One connection's task: its future, polled in place, and what it holds until the
    /// future ends (its permit, the drain's count). Not an `async move` block awaiting
    /// the future: that holds the future twice, captured and moved into the await
    /// (rust-lang/rust#62958), about 900 bytes more per idle sidecar connection.
    struct Open<F> {
        #[pin]
        serving: F,
        _permit: OwnedSemaphorePermit,
        _tracked: Tracked,
    }
}

impl<F: Future<Output = ()>> Future for Open<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().serving.poll(cx)
    }
}

/// Counts the connection tasks the drain waits for.
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    idle: Notify,
}

struct Tracked(Arc<Tracker>);

impl Tracker {
    fn enter(this: &Arc<Self>) -> Tracked {
        this.open.fetch_add(1, Ordering::AcqRel);
        Tracked(Arc::clone(this))
    }

    /// Completes once no task is tracked.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a task ending in between still wakes us.
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_waits_for_open_tasks_only_up_to_its_timeout() {
        let tracker = Arc::new(Tracker::default());
        let held = Arc::clone(&tracker);
        let task = tokio::spawn(async move {
            let _tracked = Tracker::enter(&held);
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), tracker.idle())
                .await
                .is_err(),
            "one task is still open"
        );
        tracker.idle().await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns_once_connections_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let limits = Limits::default();
        let on_close = stopped.clone();
        let server = tokio::spawn(async move {
            serve(
                listener,
                &limits,
                Arc::new(()),
                stopped,
                move |stream, _| {
                    let mut on_close = on_close.clone();
                    async move {
                        let _ = on_close.wait_for(|down| *down).await;
                        drop(stream);
                    }
                },
            )
            .await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Accepted and held until shutdown: the client reads nothing yet.
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut client, &mut byte),
        )
        .await;
        assert!(early.is_err(), "open until shutdown");
        stop.send(true).unwrap();
        server.await.unwrap();
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut client, &mut byte)
                .await
                .unwrap(),
            0,
            "closed by the drain"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }
}
