//! graylane-serve: the one accept-and-serve loop of every graylane listener — the
//! sidecar's inbound and outbound listeners and its admin listener, graylane-control's
//! HTTP API and its admission webhook.
//!
//! ```text
//! accept (connection limit; EMFILE/ENFILE backoff)            accept::Acceptor
//!   ─► spawn, tracked for the drain                           serve()
//!        ─► [TLS handshake within --tls-handshake-timeout]    serve_http()
//!        ─► hyper: HTTP/1.1 [and HTTP/2 if offered]
//!             first request head within --header-read-timeout of the handshake,
//!             the next one on a keep-alive connection too (hyper's timer)
//!        ─► shutdown: stop accepting, graceful close, drain within the drain timeout
//! ```
//!
//! A crate of its own rather than a module of `graylane-sidecar` (which the control
//! plane does not depend on) or of `graylane-exposition` (which serves no sockets and
//! builds no hyper): its dependency set is the HTTP server's (tokio, hyper,
//! hyper-util, tokio-rustls), and it has two consumers.
//!
//! Owns: accepting, the limits below, TLS handshakes, hyper's connection settings and
//! the drain. Does not own: what a request is answered with (the caller's service), the
//! sidecar's protocol sniffing and mesh mTLS (its data path plugs its own connection
//! handler into [`serve`]), certificates (the caller brings a `TlsAcceptor`), metrics
//! (the caller counts through [`Observe`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod accept;
mod bind;
mod deadline;
mod drain;
mod http;

use std::time::Duration;

pub use self::accept::{Accepted, Acceptor};
pub use self::bind::{BACKLOG, bind};
pub use self::deadline::{Deadline, RequestBody};
pub use self::drain::serve;
pub use self::http::{builder, http1_builder, serve_http};

/// One listener's limits. [`Default`] is what an Envoy or Linkerd user expects of an
/// admin, API or webhook listener; the sidecar's data path sets its own from flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at once; more are closed as soon as they are accepted. Why:
    /// each connection holds a file descriptor and a task, and a client told "no" at
    /// once can retry elsewhere while one left in the backlog only times out.
    pub max_connections: usize,
    /// From the end of the TLS handshake (accept, in the clear) to the first complete
    /// request head, and between requests on an HTTP/1.1 keep-alive connection. Why: a
    /// client that sends nothing, or one header byte a minute (slowloris), would
    /// otherwise hold its connection forever. This is also the idle keep-alive limit
    /// of HTTP/1.1: hyper's header timer runs while it waits for the next head.
    pub header_read_timeout: Duration,
    /// From accept to a completed TLS handshake (listeners with TLS only). Why: a
    /// client that sends half a ClientHello and stalls holds a connection that no
    /// HTTP timer sees, since HTTP has not begun.
    pub tls_handshake_timeout: Duration,
    /// After shutdown begins: how long open connections may finish their requests
    /// before they are dropped. Why: a rolling update should not cut answers mid-way,
    /// nor wait forever on a client that never lets go.
    pub drain_timeout: Duration,
    /// The read buffer, which bounds a request head; a larger head is a 431. Why: the
    /// head is buffered whole before any handler sees it.
    pub max_header_bytes: usize,
    /// Offer HTTP/2 (prior knowledge in the clear, detected per connection) besides
    /// HTTP/1.1. Off for admin, API and webhook listeners: their clients speak
    /// HTTP/1.1, and every protocol offered is one more to harden.
    pub http2: bool,
    /// From a request's head to the end of its body ([`serve_http`] only; see
    /// [`Deadline`]). Why: the header-read timeout ends at the head, and a client
    /// sending its body a byte at a time would hold a connection of the cap forever.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Probes, scrapes, API calls: a few at a time is all these listeners need;
            // 256 leaves room for `?watch=1` streams, which hold one each.
            max_connections: 256,
            // Envoy's and Linkerd's order of magnitude for admin and API listeners.
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            http2: false,
            // nginx's `client_body_timeout` order of magnitude; an 8 MiB apply needs
            // ~1.1 Mbit/s to make it.
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

/// What a listener counts: the caller's metrics, without this crate knowing them. Every
/// method defaults to nothing; `()` counts nothing. Called on the accept path and per
/// connection: keep them to an atomic increment.
pub trait Observe: Send + Sync + 'static {
    /// A connection was accepted within the limit.
    fn accepted(&self) {}
    /// A connection was closed at once: over [`Limits::max_connections`].
    fn refused(&self) {}
    /// `accept(2)` failed (EMFILE/ENFILE, ENOBUFS, ECONNABORTED, …).
    fn accept_failed(&self) {}
    /// A connection was closed for no complete request head in time.
    fn header_timeout(&self) {}
    /// A TLS handshake failed or did not finish within its timeout.
    fn handshake_failed(&self) {}
}

impl Observe for () {}
