//! A connection's keep-alive PINGs: one every 30 s; a client whose PONG takes longer
//! than the timeout is gone (without a FIN), and its connection is closed, its
//! streams failing instead of waiting forever.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use graylane_http2::server::Connection;
use tokio::time::{Instant, Sleep};

use crate::proxy::BoxError;
use crate::proxy::streams::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};

/// What this end's keep-alive PINGs carry.
const PING: [u8; 8] = *b"graylane";

/// The connection's keep-alive PINGs.
pub(super) struct KeepAlive {
    /// The next PING's time, or the PONG's deadline while one is awaited.
    timer: Pin<Box<Sleep>>,
    awaiting: bool,
}

impl KeepAlive {
    pub(super) fn new() -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(KEEP_ALIVE_INTERVAL)),
            awaiting: false,
        }
    }

    /// `Ready(error)` once the PONG is overdue; sends the PINGs as they are due.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, conn: &mut Connection) -> Poll<BoxError> {
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

    pub(super) fn ponged(&mut self) {
        self.awaiting = false;
        self.timer
            .as_mut()
            .reset(Instant::now() + KEEP_ALIVE_INTERVAL);
    }
}
