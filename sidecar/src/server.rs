//! The server side shared by the inbound and outbound listeners: accept, sort the
//! connection out, serve it with hyper, drain it.
//!
//! ```text
//! accept (limit, backoff, drain: graylane_serve::serve; counted here by `accept`)
//!   ─► sniff (`Sniff`): outbound, redirected and not HTTP ─► TCP tunnel to where
//!      the app dialled; inbound: by the PeerPolicy mode (`mtls`), mesh mTLS ─►
//!      HTTP over TLS with the peer's identity; an app's own TLS ─► TCP tunnel to the
//!      app; plaintext ─► HTTP, or refused in strict mode
//!   ─► HTTP/1.1 or HTTP/2 (prior knowledge; `h2`), told apart by the preface;
//!      HTTP/1.1 requests without a body served by `h1`, the others by hyper
//!        first request head within --header-read-timeout of accept, else closed
//!        writes stalled for --send-timeout: closed (stall)
//!        most requests cancelled by the client: closed (rapid reset)
//!        HTTP/1.1 idle 5 ms between requests: parked, the buffers freed, the
//!        socket kept (`idle`, driven by `drive`)
//!   ─► every request (`Serve`): checks (400 / 431) ─► Handler (the `pipeline`) ─► response
//! ```
//!
//! The limits are set here once. hyper enforces its HTTP/1 header timer only with a
//! timer set, and starts it only after protocol detection, so a connection that sends
//! nothing, or dribbles the HTTP/2 preface, is timed from accept here instead.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::metrics::Connections;
use crate::proxy::{Body, ProxyError};
use crate::transparent::{AppAddr, Transparent};

mod accept;
mod checks;
mod connection;
mod drive;
mod h1;
mod h2;
mod idle;
mod mtls;
mod stall;

use self::checks::Refusal;
pub(crate) use self::checks::{MAX_HEADER_BYTES, MAX_HEADERS, MESH_BYTES, MESH_FIELDS};
use self::connection::{Connection, Protocols};
pub(crate) use self::h1::RequestBody;
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

/// An HTTP/1.1 request head's bound: room for a 64 KiB header block plus the request
/// line (a larger head is a 431 from hyper, one just over 64 KiB a 431 from `checks`).
const MAX_HEAD: usize = MAX_HEADER_BYTES + 8 * 1024;

/// The fields an HTTP/1.1 head may have: `checks` holds clients to MAX_HEADERS, the
/// rest is room for what the mesh adds.
const MAX_FIELDS: usize = MAX_HEADERS + MESH_FIELDS;

/// HTTP/2: streams a client may open at once (gRPC-Go's and nginx's order of
/// magnitude); more are refused with REFUSED_STREAM, which clients retry.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// A request handler: (peer, request) → response. Errors are already responses (see
/// [`ProxyError::into_response`]).
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: Peer,
        request: Request<Body>,
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
    /// tunnel of another sidecar) go to the app as they are.
    Inbound(Arc<Transparent>, Arc<AppAddr>, Arc<MeshInbound>),
}

/// Serves `handler` on `listener` until `shutdown`; then stops accepting and lets the
/// connections finish their requests, and tunnels their bytes, for at most the drain
/// timeout. HTTP/1 connections close after their current request; HTTP/2 clients get
/// a GOAWAY. The accept loop, its limit and backoff and the drain are
/// [`graylane_serve::serve`]'s, the one of every graylane listener.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    sniff: Sniff,
    counters: Arc<Connections>,
    shutdown: watch::Receiver<bool>,
) {
    let builder = builder(&limits);
    let observe: Arc<dyn graylane_serve::Observe> = Arc::clone(&counters) as _;
    let stop = shutdown.clone();
    graylane_serve::serve(listener, &limits.serve(), observe, stop, |stream, peer| {
        let connection = Connection {
            handler: Arc::clone(&handler),
            builder: builder.clone(),
            limits,
            sniff: sniff.clone(),
            counters: Arc::clone(&counters),
            shutdown: shutdown.clone(),
        };
        connection.run(stream, peer)
    })
    .await;
}

impl Limits {
    /// The shared server's view of these limits: HTTP/2 offered, and a read buffer with
    /// room for a 64 KiB header block plus the request line (a larger head is a 431
    /// from hyper, one just over 64 KiB a 431 from `checks`).
    fn serve(&self) -> graylane_serve::Limits {
        graylane_serve::Limits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            drain_timeout: self.drain_timeout,
            max_header_bytes: MAX_HEAD,
            http2: true,
            ..graylane_serve::Limits::default()
        }
    }

    /// The admin listener's limits: the shared defaults for an admin listener (256
    /// connections, HTTP/1.1 only), with this sidecar's `--header-read-timeout`.
    pub(crate) fn admin(&self) -> graylane_serve::Limits {
        graylane_serve::Limits {
            header_read_timeout: self.header_read_timeout,
            ..graylane_serve::Limits::default()
        }
    }
}

/// HTTP/1.1 and HTTP/2 on one port, with every limit of this module.
fn builder(limits: &Limits) -> Arc<Protocols> {
    // The shared settings: hyper's header timer, the read buffer.
    let mut h1 = graylane_serve::http1_builder(&limits.serve());
    // Room for what the mesh adds; `checks` holds clients to MAX_HEADERS.
    h1.max_headers(MAX_FIELDS);
    Arc::new(Protocols {
        h1,
        h2: h2::builder(),
    })
}

/// The HTTP/2 header list a message may carry, requests in and responses from an
/// upstream alike: 64 KiB of fields and what the mesh adds. h2 counts 32 bytes a field
/// on top; `checks` holds clients to 64 KiB exactly.
#[allow(clippy::cast_possible_truncation)] // ~69 KiB, a const
pub(crate) const H2_MAX_HEADER_LIST: u32 =
    (MAX_HEADER_BYTES + MESH_BYTES + 32 * (MAX_HEADERS + MESH_FIELDS)) as u32;

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

/// `Date` for a response without one (RFC 9110 §6.6.1), as hyper's servers add it:
/// formatted once a second per thread.
pub(super) fn date() -> HeaderValue {
    thread_local! {
        static NOW: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let time = SystemTime::now();
    let second = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    NOW.with_borrow_mut(|(at, value)| {
        if *at != second {
            *value = HeaderValue::from_str(&httpdate::fmt_http_date(time))
                .expect("an HTTP date is ASCII");
            *at = second;
        }
        value.clone()
    })
}
