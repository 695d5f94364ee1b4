//! One accepted connection: sorted out by the listener's `Sniff` (tunnel, plaintext
//! HTTP, mesh mTLS, refused), then served (HTTP/1.1 by `h1`, handing to hyper what it
//! does not serve; HTTP/2 by `h2`) until the client is done, a limit closes it, or a
//! graceful close begins (shutdown; a listener turned `strict` for a plaintext
//! connection).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use graylane_routing::MtlsMode;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1::{self, UpgradeableConnection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::drive::{Driven, Watch};
use super::idle::{H2_PREFACE, Lent, Park, ParkTimer, Readable};
use super::mtls::{self, MeshInbound, PlaintextAfterStrict, Sorted};
use super::stall::SendTimeout;
use super::{Answering, Handler, Limits, Peer, Resets, Sniff, checks, h1, h2, refuse};
use crate::metrics::Connections;
use crate::proxy::{self, Body};
use crate::transparent::{OriginalDst, Transparent};

/// The HTTP/1.1 (hyper) and HTTP/2 (h2) settings of a listener, shared by its
/// connections.
pub(super) struct Protocols {
    pub(super) h1: http1::Builder,
    pub(super) h2: graylane_http2::server::Config,
}

/// A connection's tunnel or HTTP serving, on the heap (see [`Connection::run`]).
type Serving<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One accepted connection and what serving it needs.
pub(super) struct Connection<H> {
    pub(super) handler: Arc<H>,
    pub(super) builder: Arc<Protocols>,
    pub(super) limits: Limits,
    pub(super) sniff: Sniff,
    pub(super) counters: Arc<Connections>,
    /// Starts the connection's graceful close (see [`serve`](super::serve)).
    pub(super) shutdown: watch::Receiver<bool>,
}

impl<H: Handler> Connection<H> {
    /// Sorts the connection out (`Sniff`), then tunnels it or serves it as HTTP. The
    /// sorting and serving futures are boxed, each in a statement of its own: the task
    /// keeps the size of its largest state for as long as it lives, and a temporary of
    /// the statement that awaits stays in that state until the await ends, boxed or not
    /// (`Box::pin(f).await` kept `f` in the task too: 1.6 KB more per idle connection).
    /// An `async` block, not an `async fn`: the latter keeps its arguments twice, as
    /// passed and as moved into locals (208 bytes in every task).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice (see above)"
    )]
    pub(super) fn run(
        self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> impl Future<Output = ()> + Send + use<H> {
        async move {
            let _ = stream.set_nodelay(true);
            let first_head_by = Instant::now() + self.limits.header_read_timeout;
            let original = match &self.sniff {
                Sniff::Off => None,
                _ => Transparent::original_dst(&stream),
            };
            let clear = Peer {
                addr,
                identity: None,
            };
            let never = std::future::pending::<()>;
            let serving: Serving<'_> = match &self.sniff {
                Sniff::Off => Box::pin(self.http(stream, clear, None, first_head_by, never, None)),
                Sniff::Outbound(t) => {
                    let opaque = match original {
                        Some(to) => {
                            let check = Box::pin(t.is_opaque(&stream, to.port(), true));
                            check.await.then_some(to)
                        }
                        None => None,
                    };
                    match opaque {
                        Some(to) => Box::pin(t.tunnel(stream, Arc::from(to.to_string()))),
                        None => {
                            Box::pin(self.http(stream, clear, original, first_head_by, never, None))
                        }
                    }
                }
                Sniff::Inbound(t, app, mesh) => {
                    let port = original.map_or(0, |o| o.port());
                    if t.opaque_ports.contains(&port) {
                        let tunnel = Box::pin(t.tunnel(stream, app.for_connection(original)));
                        return tunnel.await;
                    }
                    let mode = mesh.mode();
                    // Silence on the inbound side is a client yet to speak: the header timer
                    // handles it, not a tunnel. In strict mode nothing but TLS is served, so
                    // the whole header-read time goes to waiting for its first byte.
                    let wait = match mode {
                        MtlsMode::Strict => self.limits.header_read_timeout,
                        _ => self.limits.header_read_timeout.min(t.detect_timeout),
                    };
                    // Boxed: inline, its timer would stay in the task (376 bytes).
                    let peek = Box::pin(mtls::peek_first(&stream, wait));
                    let first = peek.await;
                    let sorting = Box::pin(mesh.sort(stream, first, mode, first_head_by));
                    let sorted = sorting.await;
                    match sorted {
                        Sorted::Plain(stream) => {
                            let until_strict = || mesh.until_strict();
                            let gate = Some(Arc::clone(mesh));
                            Box::pin(self.http(
                                stream,
                                clear,
                                original,
                                first_head_by,
                                until_strict,
                                gate,
                            ))
                        }
                        Sorted::Mesh(tls, identity) => {
                            let peer = Peer {
                                addr,
                                identity: Some(identity),
                            };
                            Box::pin(self.http(tls, peer, original, first_head_by, never, None))
                        }
                        Sorted::Tunnel(stream) => {
                            Box::pin(t.tunnel(stream, app.for_connection(original)))
                        }
                        Sorted::Closed => return,
                    }
                }
            };
            serving.await;
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on `io` until the client is done, the limits close
    /// it, or a graceful close begins: at shutdown, or once `close_when()` completes
    /// (made in place: passed made, it would be in this future twice).
    /// `strict_gate`: a plaintext inbound connection, whose requests are refused once
    /// the listener is strict (see [`MeshInbound::refuses_plaintext`]). An idle
    /// HTTP/1.1 connection is parked between requests (see [`idle`](super::idle)).
    /// An `async` block, not an `async fn`, as `run` is (its arguments once, not twice).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice (see `run`)"
    )]
    fn http<IO, C: Future<Output = ()>>(
        &self,
        io: IO,
        peer: Peer,
        original: Option<SocketAddr>,
        first_head_by: Instant,
        close_when: impl FnOnce() -> C,
        strict_gate: Option<Arc<MeshInbound>>,
    ) -> impl Future<Output = ()>
    where
        IO: AsyncRead + AsyncWrite + Readable + Unpin + Send + 'static,
    {
        async move {
            let resets = Arc::new(Resets::default());
            let park = Arc::new(Park::default());
            let addr = peer.addr;
            let serve = Serve {
                handler: Arc::clone(&self.handler),
                peer,
                original,
                strict_gate,
                seen: Arc::new(AtomicBool::new(false)),
                resets: Arc::clone(&resets),
            };
            let seen = Arc::clone(&serve.seen);
            let mut io = Lent::new(
                SendTimeout::new(io, self.limits.send_timeout),
                Arc::clone(&park),
            );
            let mut watch = Watch {
                no_first_head: pin!(async {
                    tokio::time::sleep_until(first_head_by).await;
                    if seen.load(Ordering::Relaxed) {
                        std::future::pending::<()>().await;
                    }
                }),
                close_when: pin!(close_when()),
                shutdown: self.shutdown.clone(),
                closing: false,
                counters: &self.counters,
                resets: &resets,
                addr,
                woken: Arc::default(),
            };
            let Ok(read) = watch.next_bytes(&mut io, true, first_head_by).await else {
                return;
            };
            if read.starts_with(H2_PREFACE) {
                io.replay(read);
                let serving = h2::Serving::new(&self.builder.h2, io, move |r| serve.call(r));
                let mut serving = Box::pin(serving);
                watch
                    .drive(
                        serving.as_mut(),
                        |c| c.get_mut().graceful_shutdown(),
                        |_| false,
                        None,
                    )
                    .await;
                return;
            }
            let serve = Arc::new(serve);
            let mut own = h1::Own::default();
            own.append(&read);
            let mut head_by = first_head_by;
            loop {
                let closing = AtomicBool::new(false);
                let driven = {
                    let timer = ParkTimer::new(Arc::clone(&park), head_by);
                    let timeout = self.limits.header_read_timeout;
                    // Boxed and dropped at a park: the handler's future is in it.
                    let mut serving = Box::pin(h1::serve(
                        &mut io, &mut own, &serve, &timer, &closing, timeout,
                    ));
                    let graceful = |_: Pin<&mut _>| closing.store(true, Ordering::Relaxed);
                    watch
                        .drive(
                            serving.as_mut(),
                            graceful,
                            h1::Ended::is_head_late,
                            Some(&park),
                        )
                        .await
                };
                match driven {
                    Driven::Parked(deadline) => head_by = deadline,
                    Driven::HeadLate => {
                        if head_begun(own.read()) {
                            request_timeout(io).await;
                        }
                        return;
                    }
                    Driven::Closed if own.take_hand_off() => {
                        io.replay(own.take_read());
                        // The head handed over is whole (or over the bound, refused at once):
                        // the deadline is the next wait's.
                        let next_by = Instant::now() + self.limits.header_read_timeout;
                        // On the heap, as its own statement: inline, hyper's serving would
                        // be in every connection's task (HTTP/2's too), handed over or not.
                        let hyper = Box::pin(self.hyper(io, &serve, &mut watch, &park, next_by));
                        let Some((back, deadline, leftover)) = hyper.await else {
                            return;
                        };
                        (io, head_by) = (back, deadline);
                        own.append(&leftover);
                    }
                    Driven::Closed => return,
                }
                // A connection whose head is begun but not whole is parked as well as an
                // idle one: the bytes of its head are kept.
                own.park();
                let read = match watch.next_bytes(&mut io, false, head_by).await {
                    Ok(read) => read,
                    Err(Driven::HeadLate) if head_begun(own.read()) => {
                        watch.head_left_unfinished();
                        request_timeout(io).await;
                        return;
                    }
                    Err(_) => return,
                };
                own.append(&read);
            }
        }
    }

    /// Serves `io` with hyper, from the head replayed to it, until hyper's connection
    /// is parked: then `io` back, the next head's deadline, and what hyper read past
    /// its last message. `None`: the connection is done.
    async fn hyper<IO, N, C>(
        &self,
        io: Lent<IO>,
        serve: &Arc<Serve<H>>,
        watch: &mut Watch<'_, N, C>,
        park: &Arc<Park>,
        head_by: Instant,
    ) -> Option<(Lent<IO>, Instant, Bytes)>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        N: Future<Output = ()>,
        C: Future<Output = ()>,
    {
        let serve = Arc::clone(serve);
        let service =
            hyper::service::service_fn(move |r: Request<Incoming>| serve.call(r.map(proxy::boxed)));
        // The builder in a block of its own: it would stay in this future otherwise.
        let mut h1 = {
            let mut h1 = self.builder.h1.clone();
            h1.timer(ParkTimer::new(Arc::clone(park), head_by));
            Box::new(
                h1.serve_connection(TokioIo::new(io), service)
                    .with_upgrades(),
            )
        };
        let graceful = |c: Pin<&mut UpgradeableConnection<_, _>>| c.graceful_shutdown();
        let driven = watch
            .drive(
                Pin::new(&mut *h1),
                graceful,
                hyper::Error::is_timeout,
                Some(park),
            )
            .await;
        // Parked: hyper's buffers go with its connection; the socket and the bytes
        // hyper read past the last message (if any) stay. The box in a block of its
        // own: moved out of, it would keep its allocation (808 bytes) until the caller's
        // park ends.
        let parts = {
            let h1 = h1;
            h1.into_parts()
        };
        match (driven, parts) {
            // A copy: the rest of hyper's read buffer would keep all of it alive.
            (Driven::Parked(deadline), Some(parts)) => Some((
                parts.io.into_inner(),
                deadline,
                Bytes::copy_from_slice(&parts.read_buf),
            )),
            // Bytes of a head were read, none answered: the client is told why
            // it is closed, as Envoy does (nginx closes in silence).
            (Driven::HeadLate, Some(parts)) if head_begun(&parts.read_buf) => {
                request_timeout(parts.io.into_inner()).await;
                None
            }
            _ => None,
        }
    }
}

/// What every request of a connection goes through before the handler: the first
/// head marked seen, plaintext refused after a switch to strict, the checks, and
/// cancellations counted.
pub(super) struct Serve<H> {
    handler: Arc<H>,
    peer: Peer,
    /// Where iptables had the connection go (transparent interception).
    original: Option<SocketAddr>,
    /// A plaintext inbound connection: its requests are refused once the listener is
    /// strict (see [`MeshInbound::refuses_plaintext`]).
    strict_gate: Option<Arc<MeshInbound>>,
    seen: Arc<AtomicBool>,
    resets: Arc<Resets>,
}

impl<H: Handler> Serve<H> {
    pub(super) fn call(
        &self,
        mut request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, PlaintextAfterStrict>> + Send + use<H> {
        self.seen.store(true, Ordering::Relaxed);
        let (handler, peer) = (Arc::clone(&self.handler), self.peer.clone());
        let refused = self
            .strict_gate
            .as_ref()
            .is_some_and(|m| m.refuses_plaintext());
        // A sidecar's request: a proven mesh identity, or plaintext inbound with mTLS
        // off (then the mesh trusts every caller, security.md).
        let from_sidecar = || {
            peer.identity.is_some()
                || self
                    .strict_gate
                    .as_ref()
                    .is_some_and(|m| m.mode() == MtlsMode::Off)
        };
        if let Some(to) = self.original {
            request.extensions_mut().insert(OriginalDst(to));
        }
        let checked = checks::check(&request, from_sidecar);
        let mut answering = Answering::new(Arc::clone(&self.resets));
        async move {
            if refused {
                answering.done();
                return Err(PlaintextAfterStrict);
            }
            let response = match checked {
                Ok(()) => handler.handle(peer, request).await,
                Err(refusal) => refuse(&refusal),
            };
            answering.done();
            Ok(response)
        }
    }
}

impl<H> Serve<H> {
    /// Whether this plaintext connection's listener is strict now: its answer then
    /// closes it. Read when the answer is written, not left to the graceful close
    /// the switch begins, which reaches the connection's task later (the answer may
    /// be ready before the task sees the switch, on another thread).
    pub(super) fn turned_strict(&self) -> bool {
        self.strict_gate
            .as_ref()
            .is_some_and(|m| m.mode() == MtlsMode::Strict)
    }
}

/// Whether `read` holds the start of a request head: not only the empty lines a
/// server ignores before one (RFC 9112 §2.2; a client's stray CRLF after a body).
pub(super) fn head_begun(read: &[u8]) -> bool {
    read.iter().any(|b| !matches!(b, b'\r' | b'\n'))
}

/// Answers a request head that did not come whole in time with 408, and closes. The
/// write is bounded by the connection's send timeout.
async fn request_timeout(mut io: impl AsyncWrite + Unpin) {
    const BODY: &str = "request head not complete within the header-read timeout\n";
    let answer = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    if io.write_all(answer.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
}
