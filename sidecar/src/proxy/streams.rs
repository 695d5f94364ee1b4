//! HTTP/2 on graylane-http2, what the pool's client end (`pool::http2`, to
//! upstreams) and the inbound listeners' server end (`server::h2`, from clients)
//! share, each driving its connections in one task: a body received with its
//! window given back as it is read ([`Incoming`]), a body sent within the peer's
//! windows ([`Sending`]), and keep-alive PINGs ([`KeepAlive`]). A request body
//! coming in and a response body coming back are the same thing to a connection,
//! so each is written once.

/// Bytes waiting to be written past which a connection stops reading and pumping
/// bodies until its peer takes them: hyper's server kept 400 KiB per stream past the
/// window; one bound for the connection is enough.
pub(crate) const HIGH_WATER: usize = 256 * 1024;
/// Read from a connection's socket at a time.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

mod incoming;
mod keep_alive;
mod let_go;
mod pump;

pub(crate) use self::incoming::{Incoming, Reset, Shared};
pub(crate) use self::keep_alive::KeepAlive;
#[cfg(test)]
pub(crate) use self::keep_alive::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};
#[cfg(test)]
pub(crate) use self::let_go::LET_GO_AFTER;
pub(crate) use self::let_go::{LetGo, poll_read};
pub(crate) use self::pump::{Pumped, Sending, flush};
