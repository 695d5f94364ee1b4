//! Upstream connections, pooled by destination: plaintext to an address, or mesh mTLS
//! to an address whose server proves a given identity.
//!
//! HTTP/1.1 (our own client, `http1`): an idle list per destination; a miss connects;
//! a connection rides in its response's body and goes back to the list when the body
//! has been read to its end; it is dropped after [`POOL_IDLE_TIMEOUT`] unused.
//! HTTP/2 (graylane-http2's client end, `http2`): one connection per destination,
//! its `Sender` cloned per request (streams multiplex; the server's SETTINGS cap
//! them); a burst that finds
//! none waits for one request's connect instead of each making its own (a TLS
//! handshake each, over mTLS). Per request this is a lock, a pop and a clone of a
//! handle, where hyper-util's legacy `Client` builds a pool key from a rebuilt URI, a
//! lazy connect future and a checkout.
//!
//! A destination is the address AND, for mTLS, the identity the request expects: a
//! connection is lent only to requests expecting the identity its server proved, so
//! an address taken over by another instance (another identity) never receives a
//! request over a connection verified for the old one.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;

use self::connect::Connector;
use self::http1::{Conn, Idle};
use super::{Body, BoxError, POOL_IDLE_TIMEOUT};
use crate::identity::Identity;
use crate::metrics::Upstream;

mod connect;
pub(crate) mod http1;
pub(super) mod http2;

pub(crate) use self::http1::{ResponseBody, take_switched};

/// Distinct upstream addresses kept; past it the map starts over (idle connections
/// to the dropped ones close, requests in flight keep theirs).
const MAX_ADDRESSES: usize = 4096;
/// Destinations kept per address (plaintext, and one per identity expected there:
/// more than one only while an address changes hands); past it the oldest goes.
const MAX_PER_ADDRESS: usize = 8;
/// Idle HTTP/1.1 connections kept per destination: more than any burst the sidecar
/// answers on one core needs, few enough to bound sockets held open.
const MAX_IDLE: usize = 256;

/// Where a request goes; a pooled connection serves only its own destination.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dest<'a> {
    /// `host:port` (no port: 80).
    pub(crate) address: &'a str,
    /// Mesh mTLS, the server proving this identity (`spiffe://…`); `None`: plaintext.
    pub(crate) peer: Option<&'a str>,
}

/// The pool; clones share it.
#[derive(Clone)]
pub(crate) struct Pool {
    by_address: Arc<Mutex<Map>>,
    connector: Connector,
}

/// The destinations of each address (almost always one). hashbrown's for `entry_ref`:
/// one hash of the address per lookup, where std's map needs two to insert a key it
/// borrows (twice a request: checkout and give-back). SipHash all the same: an app
/// chooses the addresses it calls.
type Map = hashbrown::HashMap<String, Vec<Entry>, std::hash::RandomState>;

struct Entry {
    peer: Option<Box<str>>,
    /// Shared with the response bodies that give their connections back to it.
    idle: Idle,
    /// The connection, and when a request last took it (idle ones close as HTTP/1.1's).
    h2: Option<(http2::Sender, Instant)>,
    /// Taken to make the HTTP/2 connection, so that a burst of requests finding none
    /// makes one (one TLS handshake), not one each; holds the last failure and when
    /// it happened, for those who waited on it.
    h2_connect: Arc<tokio::sync::Mutex<Option<(Instant, String)>>>,
}

/// A request that got no answer: why, and the request itself when it came back
/// whole (see `SendError::request`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: PoolError,
    pub(crate) request: Option<Box<Request<Body>>>,
}

/// Why a request was not answered; `Connect`: nothing was sent.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// TCP connect, TLS handshake (the peer's identity included) or HTTP handshake.
    Connect(String),
    /// The exchange's error (a stream reset or a connection ended, over HTTP/2; an
    /// I/O or parse error of our HTTP/1.1 client's), classified by the caller.
    Exchange(BoxError),
    /// The request's own body failed as it went out: its client's doing, not the
    /// upstream's.
    RequestBody(BoxError),
    /// The request, as the sidecar built it, cannot be written: nothing was sent.
    Unsendable(BoxError),
}

/// A failure before anything of `request` left: it comes back whole, body included.
fn unsent(error: PoolError, request: Box<Request<Body>>) -> Failure {
    Failure {
        error,
        request: Some(request),
    }
}

impl Dest<'_> {
    fn matches(&self, entry: &Entry) -> bool {
        entry.peer.as_deref() == self.peer
    }
}

impl Pool {
    /// A pool whose connects (and TLS handshakes) are each bounded by
    /// `connect_timeout`, making mTLS connections with `identity`; inside a runtime,
    /// a sweeper closes connections idle past [`POOL_IDLE_TIMEOUT`].
    pub(crate) fn new(
        connect_timeout: Duration,
        identity: Option<Arc<Identity>>,
        counted: Arc<Upstream>,
    ) -> Self {
        let pool = Self {
            by_address: Arc::default(),
            connector: Connector {
                timeout: connect_timeout,
                identity,
                counted,
            },
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool.by_address)));
        }
        pool
    }

    /// Sends an HTTP/1.1 `request` (origin-form) to `dest`. A pooled connection that
    /// turns out closed before anything of the request was written is replaced by a
    /// fresh one, once: the request had not left.
    pub(crate) async fn send_http1(
        &self,
        dest: Dest<'_>,
        mut request: Box<Request<Body>>,
    ) -> Result<Response<Body>, Failure> {
        loop {
            let (conn, idle) = self.idle_http1(dest);
            let (conn, reused) = match conn {
                Some(conn) => (conn, true),
                // Boxed: a connect (TCP, maybe TLS) is rare and its future large;
                // inline, every request's future would carry it.
                None => match Box::pin(self.connector.http1(dest)).await {
                    Ok(conn) => (conn, false),
                    Err(error) => return Err(unsent(error, request)),
                },
            };
            match http1::send(conn, request, &idle).await {
                Ok(response) => return Ok(response),
                Err(failed) => match failed.request {
                    Some(back) if reused && !failed.written => request = back,
                    back => {
                        return Err(Failure {
                            error: failed.error,
                            request: back,
                        });
                    }
                },
            }
        }
    }

    /// Sends an HTTP/2 `request` (absolute-form) on `dest`'s one connection.
    pub(crate) async fn send_http2(
        &self,
        dest: Dest<'_>,
        request: Box<Request<Body>>,
        hand_back: bool,
    ) -> Result<Response<Body>, Failure> {
        // A pooled connection that closed before the request went out (a GOAWAY, an
        // idle close) is replaced by a fresh one, once: the request had not left.
        if let Some(mut sender) = self.live_http2(dest) {
            if sender.ready().await.is_ok() {
                return sender.send(request, hand_back).await;
            }
            self.poison_http2(dest);
        }
        let mut sender = match Box::pin(self.connect_http2(dest)).await {
            Ok(sender) => sender,
            Err(error) => return Err(unsent(error, request)),
        };
        if let Err(error) = sender.ready().await {
            return Err(unsent(error, request));
        }
        sender.send(request, hand_back).await
    }

    /// Takes `dest`'s HTTP/2 connection out of the pool (it answered malformed).
    pub(crate) fn poison_http2(&self, dest: Dest<'_>) {
        let mut map = self.lock();
        if let Some(entry) = existing(&mut map, dest) {
            entry.h2 = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection to `dest`, if one is open, and the list it goes back to.
    fn idle_http1(&self, dest: Dest<'_>) -> (Option<Box<Conn>>, Idle) {
        let idle = Arc::clone(&entry(&mut self.lock(), dest).idle);
        let mut list = idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Most recently used first: the likeliest to be still open, and the older
        // ones age out.
        let now = Instant::now();
        while let Some((mut conn, since)) = list.pop() {
            if now.duration_since(since) < POOL_IDLE_TIMEOUT && conn.is_open() {
                drop(list);
                return (Some(conn), idle);
            }
        }
        drop(list);
        (None, idle)
    }

    fn live_http2(&self, dest: Dest<'_>) -> Option<http2::Sender> {
        let mut map = self.lock();
        let (sender, used) = existing(&mut map, dest)?.h2.as_mut()?;
        *used = Instant::now();
        (!sender.is_closed()).then(|| sender.clone())
    }

    /// `dest`'s HTTP/2 connection, made unless another request made it while this
    /// one waited its turn. The turns are FIFO: those queued behind a connect that
    /// failed get its error at once instead of trying (and timing out) one by one.
    async fn connect_http2(&self, dest: Dest<'_>) -> Result<http2::Sender, PoolError> {
        let gate = Arc::clone(&entry(&mut self.lock(), dest).h2_connect);
        let asked = Instant::now();
        let mut failed = gate.lock().await;
        if let Some(sender) = self.live_http2(dest) {
            return Ok(sender);
        }
        if let Some((at, why)) = &*failed
            && *at >= asked
        {
            return Err(PoolError::Connect(why.clone()));
        }
        let sender = match self.connector.http2(dest).await {
            Ok(sender) => sender,
            Err(PoolError::Connect(why)) => {
                *failed = Some((Instant::now(), why.clone()));
                return Err(PoolError::Connect(why));
            }
            Err(e) => return Err(e),
        };
        *failed = None;
        entry(&mut self.lock(), dest).h2 = Some((sender.clone(), Instant::now()));
        Ok(sender)
    }
}

/// `dest`'s entry, if there is one.
fn existing<'m>(map: &'m mut Map, dest: Dest<'_>) -> Option<&'m mut Entry> {
    map.get_mut(dest.address)?
        .iter_mut()
        .find(|entry| dest.matches(entry))
}

/// `dest`'s entry, made if missing (within the bounds above).
fn entry<'m>(map: &'m mut Map, dest: Dest<'_>) -> &'m mut Entry {
    if map.len() >= MAX_ADDRESSES && !map.contains_key(dest.address) {
        map.clear();
    }
    let entries = map.entry_ref(dest.address).or_default();
    let at = match entries.iter().position(|entry| dest.matches(entry)) {
        Some(at) => at,
        None => {
            if entries.len() >= MAX_PER_ADDRESS {
                entries.remove(0);
            }
            entries.push(Entry {
                peer: dest.peer.map(Into::into),
                idle: Idle::default(),
                h2: None,
                h2_connect: Arc::default(),
            });
            entries.len() - 1
        }
    };
    &mut entries[at]
}

/// Closes connections idle past [`POOL_IDLE_TIMEOUT`] and forgets closed ones, so a
/// server's idle close never meets a request and no socket lingers; ends with the pool.
async fn sweep(pool: Weak<Mutex<Map>>) {
    let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT / 4);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut map = pool.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, entries| {
            entries.retain_mut(|entry| {
                let mut idle = entry.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.retain_mut(|(conn, since)| {
                    since.elapsed() < POOL_IDLE_TIMEOUT && conn.is_open()
                });
                // Connections out on requests come back to this list.
                let in_use = !idle.is_empty() || Arc::strong_count(&entry.idle) > 1;
                drop(idle);
                // Dropping the pool's handle closes the connection once the requests
                // still holding clones of it end.
                if entry.h2.as_ref().is_some_and(|(sender, used)| {
                    sender.is_closed() || used.elapsed() >= POOL_IDLE_TIMEOUT
                }) {
                    entry.h2 = None;
                }
                // A connect under way keeps the entry (and its gate).
                in_use || entry.h2.is_some() || Arc::strong_count(&entry.h2_connect) > 1
            });
            !entries.is_empty()
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;
