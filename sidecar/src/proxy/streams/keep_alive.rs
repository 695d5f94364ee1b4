//! A connection's keep-alive PINGs: one every 30 s; a peer whose PONG takes longer
//! than the timeout is gone (without a FIN), and its connection is closed, its
//! streams failing instead of waiting forever.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use graylane_http2::{Connection, Role};
use tokio::time::{Instant, Sleep};

use crate::proxy::BoxError;
/// How often an HTTP/2 connection is checked with a PING, and how long its PONG may
/// take: hyper's settings, as the sidecar always used them.
pub(crate) const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What this end's keep-alive PINGs carry.
const PING: [u8; 8] = *b"graylane";

/// The connection's keep-alive PINGs.
pub(crate) struct KeepAlive {
    /// The next PING's time, or the PONG's deadline while one is awaited.
    timer: Pin<Box<Sleep>>,
    awaiting: bool,
}

impl KeepAlive {
    pub(crate) fn new() -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(KEEP_ALIVE_INTERVAL)),
            awaiting: false,
        }
    }

    /// `Ready(error)` once the PONG is overdue; sends the PINGs as they are due.
    pub(crate) fn poll<R: Role>(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut Connection<R>,
    ) -> Poll<BoxError> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            if self.awaiting {
                return Poll::Ready(format!("no PONG within {KEEP_ALIVE_TIMEOUT:?}").into());
            }
            conn.ping(PING);
            self.awaiting = true;
            self.timer
                .as_mut()
                .reset(Instant::now() + KEEP_ALIVE_TIMEOUT);
        }
    }

    pub(crate) fn ponged(&mut self) {
        self.awaiting = false;
        self.timer
            .as_mut()
            .reset(Instant::now() + KEEP_ALIVE_INTERVAL);
    }
}
