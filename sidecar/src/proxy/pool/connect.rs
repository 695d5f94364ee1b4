//! Making one upstream connection: TCP; for mesh mTLS, the TLS handshake with this
//! sidecar's certificate as it is at that moment; then, for HTTP/2, the connection
//! (see `http2`) driven by a task of its own until it closes, its preface the first
//! bytes it writes. An
//! HTTP/1.1 connection has no handshake and no task (see `http1`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::super::mtls;
use super::http1::{Conn, Io};
use super::{Dest, PoolError, http2};
use crate::identity::{Alpn, Identity};
use crate::metrics::{Protocol, Upstream};

/// How the pool connects.
#[derive(Clone)]
pub(super) struct Connector {
    /// Bounds the TCP connect, and separately the TLS handshake after it.
    pub(super) timeout: Duration,
    /// This sidecar's certificate and trust bundle, read per connection (a renewed
    /// certificate serves every connection made after it); `None`: mTLS fails.
    pub(super) identity: Option<Arc<Identity>>,
    /// Connections opened and connects failed.
    pub(super) counted: Arc<Upstream>,
}

impl Connector {
    /// A new HTTP/1.1 connection to `dest` (ALPN `http/1.1` over mTLS).
    pub(super) async fn http1(&self, dest: Dest<'_>) -> Result<Box<Conn>, PoolError> {
        let io = match dest.peer {
            None => Io::Plain(self.tcp(dest.address).await?.into_inner()),
            Some(peer) => {
                let tls = self.tls(dest.address, peer, Alpn::Http1).await?;
                Io::Tls(Box::new(tls.into_inner()))
            }
        };
        self.counted.opened(Protocol::Http1, dest.peer.is_some());
        Ok(Conn::new(io))
    }

    /// A new HTTP/2 connection to `dest` (prior knowledge in the clear, ALPN `h2` over
    /// mTLS).
    pub(super) async fn http2(&self, dest: Dest<'_>) -> Result<http2::Sender, PoolError> {
        let sender = match dest.peer {
            None => {
                let tcp = self.tcp(dest.address).await?.into_inner();
                http2::handshake(tcp)
            }
            Some(peer) => {
                let tls = self.tls(dest.address, peer, Alpn::H2).await?.into_inner();
                http2::handshake(tls)
            }
        };
        self.counted.opened(Protocol::Http2, dest.peer.is_some());
        Ok(sender)
    }

    /// Mesh TLS to `address`, its server proving `peer`, with this sidecar's
    /// certificate as it is now.
    async fn tls(
        &self,
        address: &str,
        peer: &str,
        alpn: Alpn,
    ) -> Result<TokioIo<mtls::TlsStream<TcpStream>>, PoolError> {
        let Some(identity) = &self.identity else {
            return Err(PoolError::Connect(format!(
                "mTLS to {peer}: this sidecar has no identity"
            )));
        };
        // Checked before connecting: without a certificate or a name for the peer
        // there is nothing to try.
        let client = mtls::MeshTls::new(identity, peer, alpn).map_err(PoolError::Connect)?;
        let tcp = self.tcp(address).await?.into_inner();
        let tls = client.handshake(tcp, self.timeout).await.map_err(|e| {
            self.counted.connect_failed();
            PoolError::Connect(e)
        })?;
        Ok(TokioIo::new(tls))
    }

    async fn tcp(&self, address: &str) -> Result<TokioIo<TcpStream>, PoolError> {
        let connect = async {
            // An address without a port is port 80, as in `http://{address}`.
            match address.rsplit_once(':') {
                Some((_, port)) if !port.contains(']') => TcpStream::connect(address).await,
                _ => TcpStream::connect((address.trim_matches(['[', ']']), 80)).await,
            }
        };
        let connected = tokio::time::timeout(self.timeout, connect).await;
        if !matches!(connected, Ok(Ok(_))) {
            self.counted.connect_failed();
        }
        let stream = match connected {
            Err(_) => {
                return Err(PoolError::Connect(format!(
                    "tcp connect error: {address}: timed out after {:?}",
                    self.timeout
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
