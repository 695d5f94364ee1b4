//! Plaintext upstream connections, pooled by address, on hyper's connection API.
//!
//! HTTP/1.1: an idle list of `SendRequest`s per address; a miss connects; a
//! connection goes back once its response body has ended (`ready()` resolves only
//! then) and is dropped after [`POOL_IDLE_TIMEOUT`] unused. HTTP/2: one connection
//! per address, its `SendRequest` cloned per request (streams multiplex; the
//! server's SETTINGS cap them). Per request this is a lock, a pop and a clone of the
//! handle, where hyper-util's legacy `Client` builds a pool key from a rebuilt URI,
//! a lazy connect future and a checkout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Body, H2_CONNECTION_WINDOW, H2_STREAM_WINDOW, POOL_IDLE_TIMEOUT};

/// Distinct upstream addresses kept; past it the map starts over (idle connections
/// to the dropped ones close, requests in flight keep theirs).
const MAX_ADDRESSES: usize = 4096;
/// Idle HTTP/1.1 connections kept per address: more than any burst the sidecar
/// answers on one core needs, few enough to bound sockets held open.
const MAX_IDLE: usize = 256;

/// The plaintext pool; clones share it.
#[derive(Clone)]
pub(crate) struct Pool {
    by_address: Arc<Mutex<HashMap<Box<str>, Entry>>>,
    connect_timeout: Duration,
}

#[derive(Default)]
struct Entry {
    idle: Vec<(http1::SendRequest<Body>, Instant)>,
    /// The connection, and when a request last took it (idle ones close as HTTP/1.1's).
    h2: Option<(http2::SendRequest<Body>, Instant)>,
}

/// Why a request was not answered; `Connect`: nothing was sent.
pub(crate) enum PoolError {
    Connect(String),
    /// hyper's error from the exchange, classified by the caller.
    Hyper(hyper::Error),
}

/// An HTTP/1.1 connection checked out for one request.
pub(crate) struct Checkout {
    sender: http1::SendRequest<Body>,
    reused: bool,
}

impl Pool {
    /// A pool whose connects are bounded by `connect_timeout`; inside a runtime, a
    /// sweeper closes connections idle past [`POOL_IDLE_TIMEOUT`].
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let pool = Self {
            by_address: Arc::default(),
            connect_timeout,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&pool.by_address)));
        }
        pool
    }

    /// Sends an HTTP/1.1 `request` (origin-form) to `address`. A pooled connection
    /// that turns out closed before the request was written is replaced by a fresh
    /// one, once: the request had not left.
    pub(crate) async fn send_http1(
        &self,
        address: &str,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Checkout), PoolError> {
        loop {
            let mut checkout = match self.idle_http1(address) {
                Some(sender) => Checkout {
                    sender,
                    reused: true,
                },
                None => Checkout {
                    sender: self.connect_http1(address).await?,
                    reused: false,
                },
            };
            match checkout.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, checkout)),
                Err(mut e) => match e.take_message() {
                    Some(back) if checkout.reused => request = back,
                    _ => return Err(PoolError::Hyper(e.into_error())),
                },
            }
        }
    }

    /// Puts `checkout` back once its response body has ended (a connection that
    /// closes instead is dropped).
    pub(crate) fn give_back(&self, address: &str, checkout: Checkout) {
        let pool = Arc::downgrade(&self.by_address);
        let address: Box<str> = address.into();
        let mut sender = checkout.sender;
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut map = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_ADDRESSES && !map.contains_key(&address) {
                map.clear();
            }
            let idle = &mut map.entry(address).or_default().idle;
            if idle.len() < MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        });
    }

    /// Sends an HTTP/2 `request` (absolute-form) on `address`'s one connection.
    pub(crate) async fn send_http2(
        &self,
        address: &str,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, PoolError> {
        // A pooled connection that closed before the request went out (a GOAWAY, an
        // idle close) is replaced by a fresh one, once: the request had not left.
        if let Some(mut sender) = self.live_http2(address) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(response),
                    Err(mut e) => match e.take_message() {
                        Some(back) => request = back,
                        None => return Err(PoolError::Hyper(e.into_error())),
                    },
                }
            }
            self.poison_http2(address);
        }
        let mut sender = self.connect_http2(address).await?;
        sender.ready().await.map_err(PoolError::Hyper)?;
        sender.send_request(request).await.map_err(PoolError::Hyper)
    }

    /// Takes `address`'s HTTP/2 connection out of the pool (it answered malformed).
    pub(crate) fn poison_http2(&self, address: &str) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(address) {
            entry.h2 = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry>> {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn idle_http1(&self, address: &str) -> Option<http1::SendRequest<Body>> {
        let mut map = self.lock();
        let idle = &mut map.get_mut(address)?.idle;
        // Most recently used first: the likeliest to be still open, and the older
        // ones age out.
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < POOL_IDLE_TIMEOUT && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn live_http2(&self, address: &str) -> Option<http2::SendRequest<Body>> {
        let mut map = self.lock();
        let (sender, used) = map.get_mut(address)?.h2.as_mut()?;
        *used = Instant::now();
        (!sender.is_closed()).then(|| sender.clone())
    }

    async fn connect_http1(&self, address: &str) -> Result<http1::SendRequest<Body>, PoolError> {
        let io = self.connect(address).await?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| PoolError::Connect(format!("handshake with {address}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_http2(&self, address: &str) -> Result<http2::SendRequest<Body>, PoolError> {
        let io = self.connect(address).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .handshake(io)
            .await
            .map_err(|e| PoolError::Connect(format!("h2 handshake with {address}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(address) {
            map.clear();
        }
        let entry = map.entry(address.into()).or_default();
        // Requests that missed together each connected: the first one kept serves
        // the next ones; the others finish their request and close.
        match &entry.h2 {
            Some((kept, _)) if !kept.is_closed() => {}
            _ => entry.h2 = Some((sender.clone(), Instant::now())),
        }
        Ok(sender)
    }

    async fn connect(&self, address: &str) -> Result<TokioIo<TcpStream>, PoolError> {
        let connect = async {
            // An address without a port is port 80, as in `http://{address}`.
            match address.rsplit_once(':') {
                Some((_, port)) if !port.contains(']') => TcpStream::connect(address).await,
                _ => TcpStream::connect((address.trim_matches(['[', ']']), 80)).await,
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(PoolError::Connect(format!(
                    "tcp connect error: {address}: timed out after {:?}",
                    self.connect_timeout
                )));
            }
            Ok(Err(e)) => {
                return Err(PoolError::Connect(format!(
                    "tcp connect error: {address}: {e}"
                )));
            }
            Ok(Ok(stream)) => stream,
        };
        // Small requests and answers go out at once (Nagle would hold them for the
        // peer's delayed ACK).
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }
}

/// Closes connections idle past [`POOL_IDLE_TIMEOUT`] and forgets closed ones, so a
/// server's idle close never meets a request and no socket lingers; ends with the pool.
async fn sweep(pool: Weak<Mutex<HashMap<Box<str>, Entry>>>) {
    let mut tick = tokio::time::interval(POOL_IDLE_TIMEOUT / 4);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut map = pool.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, entry| {
            entry.idle.retain(|(sender, since)| {
                since.elapsed() < POOL_IDLE_TIMEOUT && !sender.is_closed()
            });
            // Dropping the pool's handle closes the connection once the requests
            // still holding clones of it end.
            if entry.h2.as_ref().is_some_and(|(sender, used)| {
                sender.is_closed() || used.elapsed() >= POOL_IDLE_TIMEOUT
            }) {
                entry.h2 = None;
            }
            !entry.idle.is_empty() || entry.h2.is_some()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::net::TcpListener;

    use super::*;

    /// A server on port 0 answering `ok`; counts the connections it accepted, then
    /// those it closed. With `close_after_one`, it drops each connection soon after
    /// its first answer without saying so (no `Connection: close`), like a server
    /// whose idle timeout fired.
    async fn server(close_after_one: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (count, gone) = (Arc::clone(&accepted), Arc::clone(&closed));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let gone = Arc::clone(&gone);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if close_after_one {
                        let mut connection = std::pin::pin!(connection);
                        // Serve until the first answer is flushed, then drop the socket.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(20), connection.as_mut())
                                .await;
                    } else {
                        let _ = connection.await;
                    }
                    gone.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (address, accepted, closed)
    }

    fn get() -> Request<Body> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "upstream")
            .body(super::super::empty())
            .unwrap()
    }

    async fn round_trip(pool: &Pool, address: &str) -> Bytes {
        let (response, checkout) = pool.send_http1(address, get()).await.ok().unwrap();
        pool.give_back(address, checkout);
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_serves_request_after_request() {
        let (address, accepted, _) = server(false).await;
        let pool = Pool::new(Duration::from_secs(1));
        for _ in 0..5 {
            assert_eq!(round_trip(&pool, &address).await, "ok");
            // The connection goes back from a task once the body has ended.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_body_is_unread_is_not_lent_again() {
        let (address, accepted, _) = server(false).await;
        let pool = Pool::new(Duration::from_secs(1));
        let (first, checkout) = pool.send_http1(&address, get()).await.ok().unwrap();
        pool.give_back(&address, checkout);
        assert_eq!(round_trip(&pool, &address).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the first one is busy");
        assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[tokio::test]
    async fn a_connection_the_server_dropped_is_replaced_without_an_error() {
        let (address, accepted, closed) = server(true).await;
        let pool = Pool::new(Duration::from_secs(1));
        for round in 1..=3 {
            assert_eq!(round_trip(&pool, &address).await, "ok");
            // The pool still holds the connection the server has just dropped.
            while closed.load(Ordering::SeqCst) < round {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connect_says_nothing_was_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pool = Pool::new(Duration::from_secs(1));
        match pool.send_http1(&address, get()).await {
            Err(PoolError::Connect(text)) => assert!(text.contains(&address), "{text}"),
            _ => panic!("expected a connect error"),
        }
    }
}
