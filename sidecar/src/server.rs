//! The server side shared by the inbound and outbound listeners: accept, sort the
//! connection out, serve it with hyper, drain it.
//!
//! ```text
//! accept (limit, backoff: accept)
//!   ─► sniff (`Sniff`): outbound, redirected and not HTTP ─► TCP tunnel to where
//!      the app dialled; inbound: by the PeerPolicy mode (`mtls`), mesh mTLS ─►
//!      HTTP over TLS with the peer's identity; an app's own TLS ─► TCP tunnel to the
//!      app; plaintext ─► HTTP, or refused in strict mode
//!   ─► hyper: HTTP/1.1 or HTTP/2 (prior knowledge), detected per connection
//!        first request head within --header-read-timeout of accept, else closed
//!        writes stalled for --send-timeout: closed (stall)
//!        most requests cancelled by the client: closed (rapid reset)
//!   ─► every request: checks (400 / 431) ─► Handler ─► response
//! ```
//!
//! The limits are set here once. hyper enforces its HTTP/1 header timer only with a
//! timer set, and starts it only after protocol detection, so a connection that sends
//! nothing, or dribbles the HTTP/2 preface, is timed from accept here instead.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::metrics::Connections;
use crate::proxy::{Body, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, ProxyError};
use crate::transparent::Transparent;

mod accept;
mod checks;
mod connection;
mod mtls;
mod stall;

pub(crate) use self::accept::Acceptor;
use self::checks::Refusal;
pub(crate) use self::checks::{MAX_HEADER_BYTES, MAX_HEADERS, MESH_BYTES, MESH_FIELDS};
use self::connection::Connection;
pub use self::mtls::MeshInbound;

/// Connection limits of a listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From accept to the first complete request head, and between requests on an
    /// HTTP/1.1 keep-alive connection (hyper's timer runs while it waits for a head).
    pub header_read_timeout: Duration,
    /// Drain: how long in-flight requests (and tunnels) may take after shutdown begins.
    pub drain_timeout: Duration,
    /// A connection whose client has taken no bytes for this long is closed.
    pub send_timeout: Duration,
    /// Open connections per listener; more are closed at once.
    pub max_connections: usize,
}

/// HTTP/2: streams a client may open at once (gRPC-Go's and nginx's order of
/// magnitude); more are refused with REFUSED_STREAM, which clients retry.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2 keep-alive: a peer that answers no PING within the timeout is gone.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A request handler: (peer, request) → response. Errors are already responses (see
/// [`ProxyError::into_response`]).
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The mesh identity (`spiffe://…`) the peer proved over mTLS; `None` in the
    /// clear. Only a verified handshake sets it.
    pub identity: Option<Arc<str>>,
}

/// Which connections are tunnelled as TCP instead of served as HTTP.
#[derive(Clone)]
pub enum Sniff {
    /// Serve everything as HTTP (the admin listener's case).
    Off,
    /// The outbound listener: connections iptables redirected here are sorted out by
    /// [`Transparent`]; non-HTTP ones go to their original destination.
    Outbound(Arc<Transparent>),
    /// The inbound listener: mesh mTLS by the PeerPolicy mode ([`MeshInbound`]);
    /// other TLS connections (TLS an app speaks end to end, through a `CONNECT`
    /// tunnel of another sidecar) go to the app (the address) as they are.
    Inbound(Arc<Transparent>, String, Arc<MeshInbound>),
}

/// Serves `handler` on `listener` until `shutdown`; then stops accepting and lets the
/// connections finish their requests, and tunnels their bytes, for at most the drain
/// timeout. HTTP/1 connections close after their current request; HTTP/2 clients get
/// a GOAWAY.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    sniff: Sniff,
    counters: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = builder(&limits);
    // Every connection and tunnel: the drain waits for them.
    let open = Arc::new(Tracker::default());
    let mut acceptor = Acceptor::new(listener, limits.max_connections, Arc::clone(&counters));
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.next() => accepted,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let connection = Connection {
            handler: Arc::clone(&handler),
            builder: builder.clone(),
            limits,
            sniff: sniff.clone(),
            counters: Arc::clone(&counters),
            shutdown: shutdown.clone(),
        };
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let _permit = accepted.permit;
            let _tracked = open.enter();
            connection.run(accepted.stream, accepted.peer).await;
        });
    }
    if tokio::time::timeout(limits.drain_timeout, open.idle())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.drain_timeout, "drain timed out; closing remaining connections");
    }
}

/// HTTP/1.1 and HTTP/2 on one port, with every limit of this module.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for what the mesh adds; `checks` holds clients to MAX_HEADERS.
        .max_headers(MAX_HEADERS + MESH_FIELDS)
        // Room for a 64 KiB header block plus the request line: a larger head is a 431
        // from hyper, one just over 64 KiB a 431 from `checks`.
        .max_buf_size(MAX_HEADER_BYTES + 8 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        // h2 counts 32 bytes a field on top; `checks` holds clients to 64 KiB exactly.
        .max_header_list_size(
            u32::try_from(MAX_HEADER_BYTES + MESH_BYTES + 32 * (MAX_HEADERS + MESH_FIELDS))
                .unwrap_or(u32::MAX),
        );
    builder
}

/// 400 or 431 with the reason; the connection closes after it (see
/// [`ProxyError::into_response`]).
fn refuse(refusal: &Refusal) -> Response<Body> {
    let error = match refusal {
        Refusal::Malformed(reason) => {
            ProxyError::BadRequest(format!("malformed request: {reason}"))
        }
        Refusal::HeadersTooLarge => ProxyError::HeadersTooLarge,
    };
    debug_assert_eq!(error.status(), refusal.status());
    error.into_response()
}

/// Rapid reset of accepted streams (CVE-2023-44487): h2 limits resets of streams not
/// yet handed over, but a client can let each request reach the app and cancel it
/// then, costing a request's work each time. As Envoy does (its
/// `premature_reset_total_stream_count`), a connection whose client has cancelled at
/// least half of its requests before their answer, once it has sent
/// `PREMATURE_RESET_MIN`, is closed.
const PREMATURE_RESET_MIN: u64 = 500;

#[derive(Default)]
struct Resets {
    requests: AtomicU64,
    premature: AtomicU64,
    abusive: Notify,
}

/// One request until its answer; dropped unanswered, it was cancelled by the client.
struct Answering {
    resets: Arc<Resets>,
    answered: bool,
}

impl Answering {
    fn new(resets: Arc<Resets>) -> Self {
        resets.requests.fetch_add(1, Ordering::Relaxed);
        Self {
            resets,
            answered: false,
        }
    }
}

impl Answering {
    /// The answer is ready: not a cancellation. (A method, so the async block that
    /// calls it owns the whole guard, not only its field.)
    fn done(&mut self) {
        self.answered = true;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let premature = self.resets.premature.fetch_add(1, Ordering::Relaxed) + 1;
        let requests = self.resets.requests.load(Ordering::Relaxed);
        if requests >= PREMATURE_RESET_MIN && premature * 2 >= requests {
            self.resets.abusive.notify_one();
        }
    }
}

/// Counts the connection tasks (HTTP and tunnels) the drain waits for.
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    idle: Notify,
}

struct Tracked<'a>(&'a Tracker);

impl Tracker {
    fn enter(&self) -> Tracked<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Tracked(self)
    }

    /// Completes once no task is tracked.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
