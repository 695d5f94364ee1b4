//! HTTP on an accepted connection: an optional TLS handshake bounded by its timeout,
//! then hyper with the listener's limits, until the client is done, a limit closes it,
//! or shutdown closes it gracefully.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::{Deadline, Limits, Observe, RequestBody};

/// HTTP/2 keep-alive: a peer that answers no PING within the timeout is gone, so an
/// HTTP/2 connection to a vanished client does not stay open forever.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type BoxError = Box<dyn StdError + Send + Sync>;

/// hyper's settings for a listener with `limits`: HTTP/1.1 with its header-read timer
/// (hyper enforces `header_read_timeout` only when a timer is set) and read buffer,
/// HTTP/2 with keep-alive PINGs, HTTP/2 offered only if `limits.http2`. Callers add
/// their own settings on top (the sidecar: header counts, stream limits, windows).
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf_size(limits));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    if limits.http2 {
        builder
    } else {
        // Straight to HTTP/1.1: no preface sniffing, so hyper's header timer starts at
        // once too.
        builder.http1_only()
    }
}

/// The HTTP/1.1 half of [`builder`], for a caller that tells the protocols apart and
/// drives hyper's HTTP/1 connections itself (the sidecar's data path, which releases
/// an idle connection's buffers between requests).
pub fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf_size(limits));
    builder
}

/// hyper's floor is 8 KiB + 1; below it, hyper would panic.
fn max_buf_size(limits: &Limits) -> usize {
    limits.max_header_bytes.max(8 * 1024 + 1)
}

/// Serves HTTP on `listener` until `shutdown` turns true, through [`serve`](crate::serve)
/// (connection limit, accept backoff, drain): each connection gets `service(peer)`,
/// after a TLS handshake when `tls` is given, and each request's body is bounded by
/// `limits.body_read_timeout` ([`Deadline`]). At shutdown, HTTP/1 connections close
/// after their current request and HTTP/2 clients get a GOAWAY.
pub async fn serve_http<M, S, B>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    observe: Arc<dyn Observe>,
    shutdown: watch::Receiver<bool>,
    service: M,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = builder(&limits);
    let accepting = Arc::clone(&observe);
    let stop = shutdown.clone();
    crate::serve(listener, &limits, accepting, stop, move |stream, peer| {
        let served = Served {
            builder: builder.clone(),
            limits,
            observe: Arc::clone(&observe),
            shutdown: shutdown.clone(),
            peer,
        };
        served.run(stream, tls.clone(), service(peer))
    })
    .await;
}

/// One connection and what serving it needs.
struct Served {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    observe: Arc<dyn Observe>,
    shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Served {
    async fn run<S, B>(mut self, stream: TcpStream, tls: Option<TlsAcceptor>, service: S)
    where
        S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // Small answers must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls else {
            return self.http(stream, service).await;
        };
        let timeout = self.limits.tls_handshake_timeout;
        let handshake = tokio::select! {
            shaken = tokio::time::timeout(timeout, tls.accept(stream)) => shaken,
            _ = self.shutdown.wait_for(|down| *down) => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.http(stream, service).await,
            Ok(Err(e)) => {
                self.observe.handshake_failed();
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.observe.handshake_failed();
                tracing::debug!(peer = %self.peer, ?timeout, "no TLS handshake within the timeout; closed");
            }
        }
    }

    /// Serves HTTP on `io` until the client is done, the limits close it, or shutdown
    /// closes it gracefully.
    async fn http<IO, S, B>(&self, io: IO, service: S)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<RequestBody>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // hyper times a head only once it knows the protocol (and HTTP/2 not at all):
        // the first head is timed from here too, so a client that sends nothing, or
        // dribbles an HTTP/2 preface, is closed all the same.
        let first_head_by = Instant::now() + self.limits.header_read_timeout;
        let seen = Arc::new(AtomicBool::new(false));
        let body_within = self.limits.body_read_timeout;
        let service = {
            let seen = Arc::clone(&seen);
            hyper::service::service_fn(move |request: Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                service.call(request.map(|body| Deadline::new(body, body_within)))
            })
        };
        let mut connection = pin!(self.builder.serve_connection(TokioIo::new(io), service));
        let mut no_first_head = pin!(async {
            tokio::time::sleep_until(first_head_by).await;
            if seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        });
        let mut shutdown = self.shutdown.clone();
        let mut closing = false;
        let peer = self.peer;
        loop {
            tokio::select! {
                ended = connection.as_mut() => return self.ended(ended),
                () = &mut no_first_head => {
                    self.observe.header_timeout();
                    tracing::debug!(%peer, "no request head within the header-read timeout; closed");
                    return;
                }
                // Requests in flight finish; HTTP/1 answers its current one with
                // `Connection: close`, HTTP/2 sends GOAWAY.
                _ = shutdown.wait_for(|down| *down), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// How a connection ended: hyper's own header timer (HTTP/1 keep-alive, or a head
    /// begun but not finished) counts as a header timeout.
    fn ended(&self, ended: Result<(), BoxError>) {
        let Err(e) = ended else { return };
        let timed_out = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out {
            self.observe.header_timeout();
        }
        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicU64;

    use http_body_util::Full;
    use hyper::body::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    use super::*;

    #[derive(Default)]
    struct Count {
        header_timeouts: AtomicU64,
        handshakes_failed: AtomicU64,
    }

    impl Observe for Count {
        fn header_timeout(&self) {
            self.header_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        fn handshake_failed(&self) {
            self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A server answering "ok" on port 0, with its address, counters and stop switch.
    async fn start(
        limits: Limits,
        tls: Option<TlsAcceptor>,
    ) -> (
        SocketAddr,
        Arc<Count>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(Count::default());
        let (stop, stopped) = watch::channel(false);
        let observe = Arc::clone(&count) as Arc<dyn Observe>;
        let server = tokio::spawn(serve_http(listener, limits, tls, observe, stopped, |_| {
            hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            })
        }));
        (addr, count, stop, server)
    }

    fn tls_acceptor() -> TlsAcceptor {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// Reads until the server closes; what it sent.
    async fn until_closed(client: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let _ = client.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn http2_is_offered_only_when_asked() {
        assert!(!builder(&Limits::default()).is_http2_available());
        let h2 = Limits {
            http2: true,
            ..Limits::default()
        };
        assert!(builder(&h2).is_http2_available());
        assert!(builder(&h2).is_http1_available());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_head_is_closed_at_the_header_read_timeout() {
        let (addr, count, _stop, _server) = start(Limits::default(), None).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = until_closed(&mut client).await;
        assert!(
            !answer.contains("200"),
            "no answer to half a head: {answer}"
        );
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert_eq!(count.header_timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_at_the_header_read_timeout() {
        let (addr, count, _stop, _server) = start(Limits::default(), None).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let answered = Instant::now();
        // Kept alive, then silent: hyper's header timer runs while it waits.
        assert_eq!(until_closed(&mut client).await, "");
        assert!(answered.elapsed() >= Duration::from_secs(10));
        assert_eq!(count.header_timeouts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_client_hello_is_closed_at_the_handshake_timeout() {
        let (addr, count, _stop, _server) = start(Limits::default(), Some(tls_acceptor())).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        // A TLS record header announcing a 512-byte handshake, and 3 bytes of it.
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
            .await
            .unwrap();
        let started = Instant::now();
        until_closed(&mut client).await;
        assert!(started.elapsed() >= Duration::from_secs(10));
        assert_eq!(count.handshakes_failed.load(Ordering::Relaxed), 1);
        assert_eq!(count.header_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn requests_are_answered_and_shutdown_closes_an_idle_keep_alive_connection() {
        let (addr, _count, stop, server) = start(Limits::default(), None).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = client.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        stop.send(true).unwrap();
        // The drain returns as soon as the idle connection is closed, not at its timeout.
        tokio::time::timeout(Duration::from_secs(4), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(until_closed(&mut client).await, "");
    }

    #[tokio::test]
    async fn a_head_far_over_the_buffer_is_refused_with_431() {
        let (addr, _count, _stop, _server) = start(Limits::default(), None).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(256 * 1024)
        );
        // hyper's bound is loose (it reads into the buffer's spare capacity, so a head
        // somewhat over the limit can pass), but never by 4 times. The server may close
        // before reading it all: the write may fail.
        let _ = client.write_all(big.as_bytes()).await;
        let answer = until_closed(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
}
