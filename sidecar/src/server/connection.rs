//! One accepted connection: sorted out by the listener's `Sniff` (tunnel, plaintext
//! HTTP, mesh mTLS, refused), then served by hyper until the client is done, a limit
//! closes it, or a graceful close begins (shutdown; a listener turned `strict` for a
//! plaintext connection).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use graylane_routing::MtlsMode;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::mtls::{self, MeshInbound, PlaintextAfterStrict, Sorted};
use super::stall::SendTimeout;
use super::{Answering, Handler, Limits, Peer, Resets, Sniff, checks, refuse};
use crate::metrics::Connections;
use crate::transparent::{OriginalDst, Transparent};

/// One accepted connection and what serving it needs.
pub(super) struct Connection<H> {
    pub(super) handler: Arc<H>,
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) limits: Limits,
    pub(super) sniff: Sniff,
    pub(super) counters: Arc<Connections>,
    /// Starts the connection's graceful close (see [`serve`](super::serve)).
    pub(super) shutdown: watch::Receiver<bool>,
}

impl<H: Handler> Connection<H> {
    /// Sorts the connection out (`Sniff`), then tunnels it or serves it as HTTP.
    pub(super) async fn run(self, stream: TcpStream, addr: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let first_head_by = tokio::time::Instant::now() + self.limits.header_read_timeout;
        let original = match &self.sniff {
            Sniff::Off => None,
            _ => Transparent::original_dst(&stream),
        };
        let clear = Peer {
            addr,
            identity: None,
        };
        let never = std::future::pending::<()>;
        match &self.sniff {
            Sniff::Off => {
                self.http(stream, clear, None, first_head_by, never(), None)
                    .await;
            }
            Sniff::Outbound(t) => match original {
                Some(to) if t.is_opaque(&stream, to.port(), true).await => {
                    t.tunnel(stream, &to.to_string()).await;
                }
                _ => {
                    self.http(stream, clear, original, first_head_by, never(), None)
                        .await;
                }
            },
            Sniff::Inbound(t, app, mesh) => {
                let port = original.map_or(0, |o| o.port());
                if t.opaque_ports.contains(&port) {
                    return t.tunnel(stream, app).await;
                }
                let mode = mesh.mode();
                // Silence on the inbound side is a client yet to speak: the header timer
                // handles it, not a tunnel. In strict mode nothing but TLS is served, so
                // the whole header-read time goes to waiting for its first byte.
                let wait = match mode {
                    MtlsMode::Strict => self.limits.header_read_timeout,
                    _ => self.limits.header_read_timeout.min(t.detect_timeout),
                };
                let first = mtls::peek_first(&stream, wait).await;
                match mesh.sort(stream, first, mode, first_head_by).await {
                    Sorted::Plain(stream) => {
                        let (until_strict, gate) = (mesh.until_strict(), Some(Arc::clone(mesh)));
                        self.http(stream, clear, original, first_head_by, until_strict, gate)
                            .await;
                    }
                    Sorted::Mesh(tls, identity) => {
                        let peer = Peer {
                            addr,
                            identity: Some(identity),
                        };
                        self.http(*tls, peer, original, first_head_by, never(), None)
                            .await;
                    }
                    Sorted::Tunnel(stream) => t.tunnel(stream, app).await,
                    Sorted::Closed => {}
                }
            }
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on `io` until the client is done, the limits close
    /// it, or a graceful close begins: at shutdown, or once `close_when` completes.
    /// `strict_gate`: a plaintext inbound connection, whose requests are refused once
    /// the listener is strict (see [`MeshInbound::refuses_plaintext`]).
    async fn http<IO>(
        &self,
        io: IO,
        peer: Peer,
        original: Option<SocketAddr>,
        first_head_by: tokio::time::Instant,
        close_when: impl Future<Output = ()>,
        strict_gate: Option<Arc<MeshInbound>>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let seen = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(Resets::default());
        let service = {
            let (seen, resets) = (Arc::clone(&seen), Arc::clone(&resets));
            let (handler, peer) = (Arc::clone(&self.handler), peer.clone());
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                let (handler, peer) = (Arc::clone(&handler), peer.clone());
                let refused = strict_gate.as_ref().is_some_and(|m| m.refuses_plaintext());
                if let Some(to) = original {
                    request.extensions_mut().insert(OriginalDst(to));
                }
                let mut answering = Answering::new(Arc::clone(&resets));
                async move {
                    if refused {
                        answering.done();
                        return Err(PlaintextAfterStrict);
                    }
                    let response = match checks::check(&request) {
                        Ok(()) => handler.handle(peer, request).await,
                        Err(refusal) => refuse(&refusal),
                    };
                    answering.done();
                    Ok(response)
                }
            })
        };
        let io = TokioIo::new(SendTimeout::new(io, self.limits.send_timeout));
        let mut connection = pin!(
            self.builder
                .serve_connection_with_upgrades(io, service)
                .into_owned()
        );
        let mut no_first_head = pin!(async {
            tokio::time::sleep_until(first_head_by).await;
            if seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        });
        let mut close_when = pin!(close_when);
        let mut shutdown = self.shutdown.clone();
        let mut closing = false;
        let addr = peer.addr;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = &mut no_first_head => {
                    self.counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %addr, "no request head within the header-read timeout; closed");
                    return;
                }
                () = resets.abusive.notified() => {
                    self.counters.reset_abuse.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %addr, "closed: the client cancels most of its requests (rapid reset)");
                    return;
                }
                // Requests in flight finish; HTTP/1 answers its current one with
                // `Connection: close`, HTTP/2 sends GOAWAY.
                _ = shutdown.wait_for(|down| *down), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = &mut close_when, if !closing => {
                    closing = true;
                    tracing::debug!(peer = %addr, "closing gracefully: the listener's mode changed");
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
